"""The grader against every way a submission can break or cheat, on a small fixture chapter.

The fixture (tests/fixtures/solutions/01_circuits) is four of chapter 01's exercises, graded by chapter 01's real
checks, plus a written answer: cheap to run, and every cheat below has the same path to the points as in a real
chapter. One batch holds every submission and is graded once per test session, in parallel (``jobs=2``); each test
then reads one student's result and asserts the exact score. The real chapters' round trip, with the bypasses that
need a real chapter, is tests/test_chapter_grading.py.

When the tests run as root (CI does), the sandbox is complete and the tests assert it; elsewhere the protections that
need root are reported missing and the tests that need them are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import hidden_test_leaks  # noqa: E402 - the suite's shared helpers

from mechinterp_course.instructor import build, cli, grade, sandbox
from mechinterp_course.instructor.build import CourseError

FIXTURES = Path(__file__).parent / "fixtures"
CHAPTER = "01_circuits"
#: Per-cell limit for the tests: far above what a fixture cell needs, small enough that the infinite loops are cheap.
TIMEOUT_S = 15
AUTOGRADED = ("test-composition", "test-normalised", "test-studies-quiz", "test-my-scores")
FULL = dict.fromkeys(AUTOGRADED, 1)
AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="the sandbox's separate user and namespaces need root")

pytestmark = pytest.mark.slow

RIGHT = {
    "ex-composition": (
        "@exercise\ndef composition_score(W_A, W_B):\n"
        "    return (W_A @ W_B).norm(dim=(-2, -1)) / (W_A.norm(dim=(-2, -1)) * W_B.norm(dim=(-2, -1)))"
    ),
    "ex-normalised": "@exercise\ndef normalised_metric(value, clean, corrupted):\n"
    "    return (value - corrupted) / (clean - corrupted)",
    "ex-studies-quiz": (
        'study_findings = {"A": "backup", "B": "hydra", "C": "head-specialisation", "D": "ioi", '
        '"E": "orion", "F": "induction-heads", "G": "smallest-induction"}'
    ),
    "ex-my-scores": 'my_scores = {"low_hanging_fruit": 3, "excitement": 4, "difficulty": 5}',
    "answer-hidden": "Because hidden inputs cannot be special-cased.",
}
#: Stubs as released (what a student who does nothing hands in), for the cells a cheat replaces.
BLANK = {
    "ex-composition": "@exercise\ndef composition_score(W_A, W_B):\n    raise NotImplementedError()",
    "ex-normalised": "@exercise\ndef normalised_metric(value, clean, corrupted):\n    raise NotImplementedError()",
}


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _copy(nb):
    return nbformat.from_dict(json.loads(json.dumps(nb)))


def _solve(release, **answers):
    """The released notebook with its solution cells replaced (default: the right answers)."""
    nb = _copy(release)
    for grade_id, source in dict(RIGHT, **answers).items():
        _cell(nb, grade_id).source = source
    return nb


def _add_cell(nb, source, after="code-setup"):
    """Insert a code cell of the student's own after the cell ``after``."""
    index = nb.cells.index(_cell(nb, after)) + 1
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def _course(tmp: Path) -> Path:
    course = tmp / "course"
    shutil.copytree(FIXTURES / "solutions", course / "solutions")
    build.build(course_dir=course)
    return course


# --------------------------------------------------------------------------------------------------------------
# The batch: every submission, graded once
# --------------------------------------------------------------------------------------------------------------

SILENCE = "get_ipython().showtraceback = lambda *args, **kwargs: None"
CUSTOM_EXC = "get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)"
REBIND = """import mechinterp_course.circuits.checks as checks_module
passed = lambda *args, **kwargs: print("\\u2705 correct")
for name in list(vars(checks_module)):
    if not name.startswith("_"):
        setattr(checks_module, name, passed)
for name in ["composition_score", "normalised_metric", "circuit_studies", "my_scores"]:
    setattr(check, name, passed)"""
REFERENCE_IMPORT = "from mechinterp_course.circuits.reference import composition_score, normalised_metric"
FALLBACK = """from mechinterp_course.checking import reference_of
composition_score = reference_of("composition_score")
normalised_metric = reference_of("normalised_metric")"""
READ_SOLUTIONS = """import glob, json, os
from pathlib import Path
import mechinterp_course
found = []
candidates = [Path(mechinterp_course.__file__).parents[1] / "solutions", Path.cwd() / "solutions",
              Path.cwd().parent / "solutions"]
candidates += [Path(p) for p in glob.glob("/*/*/solutions") + glob.glob("/*/solutions") + glob.glob("/*/.*/solutions")
               + glob.glob("/home/*/*/solutions") + glob.glob("/tmp/**/solutions", recursive=True)]
for folder in candidates:
    for path in glob.glob(str(folder / "*" / "*.ipynb")):
        for cell in json.load(open(path))["cells"]:
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution") and cell["cell_type"] == "code":
                found.append("".join(cell["source"]))
for source in found:
    try:
        exec(source)
    except Exception:
        pass
print("found", len(found), "solution cells")"""
BRUTE_FORCE = """from mechinterp_course.checking import answer_digest
from mechinterp_course.circuits import reference, CIRCUIT_STUDIES
key = reference.ANSWER_KEYS["study_findings"]
study_findings = {letter: next(s.key for s in CIRCUIT_STUDIES
                               if answer_digest("study_findings", letter, s.key) == digest)
                  for letter, digest in key.items()}"""
LOUD = "\n".join(["import sys", "print('x' * 300_000)", "print('y' * 300_000, file=sys.stderr)"])
LOUD_COMPOSITION = (
    "@exercise\ndef composition_score(W_A, W_B):\n    print('debugging ' * 50_000)\n"
    "    return (W_A @ W_B).norm(dim=(-2, -1)) / (W_A.norm(dim=(-2, -1)) * W_B.norm(dim=(-2, -1)))"
)
SURVIVOR = """import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(4)
        for path in {paths!r}:
            try:
                open(path, "wb").write(b"overwritten by a survivor")
            except Exception:
                pass
        os._exit(0)
    os._exit(0)
print("a survivor is waiting")"""
FORK_BOMB = """import subprocess, sys
bomb = "import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass"
subprocess.Popen([sys.executable, "-c", bomb])
print("bomb started")"""
MEMORY_BOMB = "hog = bytearray(64 * 2**30)"
MEMORY_COMPOSITION = "@exercise\ndef composition_score(W_A, W_B):\n    hog = bytearray(64 * 2**30)\n    return W_A"
DISK_FILLER = """chunk = b"0" * 2**20
with open("filler.bin", "wb") as f:
    for _ in range(2048):
        f.write(chunk)"""
KILL_PARENT = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"
KILL_GROUP = "import os, signal\nos.killpg(0, signal.SIGKILL)"
RECORD_INPUTS = (
    "SEEN = []\n@exercise\ndef composition_score(W_A, W_B):\n    SEEN.append(round(float(W_A.sum()), 4))\n"
    "    return (W_A @ W_B).norm(dim=(-2, -1)) / (W_A.norm(dim=(-2, -1)) * W_B.norm(dim=(-2, -1)))"
)


@pytest.fixture(scope="module")
def listener():
    """A TCP server on this machine that a submission tries to reach: it must receive nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
                connections.append(connection)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    server.close()


def _submissions(course: Path, folder: Path, out: Path, port: int) -> None:
    source = nbformat.read(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    blank_but = lambda **answers: _solve(release, **{**BLANK, **answers})  # noqa: E731
    network = (
        f"import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n"
        f"    print('connected')\nexcept OSError as error:\n    print('refused:', error)"
    )
    subs = {
        "solution": _copy(source),
        "blank": release,
        "wrong": _solve(
            release,
            **{
                "ex-composition": "@exercise\ndef composition_score(W_A, W_B):\n"
                "    return (W_A @ W_B).norm(dim=(-2, -1)) / "
                "W_A.norm(dim=(-2, -1))"
            },
        ),
        "warning": _solve(
            release,
            **{
                "ex-normalised": (
                    "import sys, warnings\n@exercise\ndef normalised_metric(value, clean, corrupted):\n"
                    "    print('debugging', file=sys.stderr)\n    warnings.warn('a harmless warning')\n"
                    "    return (value - corrupted) / (clean - corrupted)"
                )
            },
        ),
        "loop": _solve(release, **{"ex-my-scores": "while True:\n    pass"}),
        "loopfn": _solve(
            release, **{"ex-composition": "@exercise\ndef composition_score(W_A, W_B):\n    while True:\n        pass"}
        ),
        "crash": _solve(release, **{"ex-normalised": "import os\nos._exit(1)"}),
        "crashfn": _solve(
            release, **{"ex-composition": "import os\n@exercise\ndef composition_score(W_A, W_B):\n    os._exit(1)"}
        ),
        "reference": blank_but(**{"ex-composition": REFERENCE_IMPORT}),
        "fallback": blank_but(**{"ex-composition": FALLBACK}),
        "silenced": _add_cell(_copy(release), SILENCE),
        "customexc": _add_cell(_copy(release), CUSTOM_EXC),
        "rebind": _add_cell(_copy(release), REBIND),
        "readsolutions": _add_cell(_copy(release), READ_SOLUTIONS),
        "bruteforce": _solve(release, **{**BLANK, "ex-studies-quiz": BRUTE_FORCE}),
        "loud": _add_cell(_solve(release, **{"ex-composition": LOUD_COMPOSITION}), LOUD),
        "loudblank": _add_cell(_copy(release), LOUD),
        "killparent": _add_cell(_solve(release), KILL_PARENT),
        "killgroup": _add_cell(_solve(release), KILL_GROUP),
        "survivor": _add_cell(
            _solve(release), SURVIVOR.format(paths=[str(out / "gradebook.db"), str(out / "problems.csv")])
        ),
        "forkbomb": _add_cell(_solve(release), FORK_BOMB, after="test-my-scores"),
        "memory": _add_cell(_solve(release), MEMORY_BOMB),
        "memoryfn": _solve(release, **{"ex-composition": MEMORY_COMPOSITION}),
        "disk": _add_cell(_solve(release), DISK_FILLER),
        "network": _add_cell(_solve(release), network),
        "hiddenseeds": _add_cell(
            _solve(release, **{"ex-composition": RECORD_INPUTS}), "print('SEEN', SEEN)", after="test-composition"
        ),
    }
    deleted = _solve(release)
    deleted.cells.remove(_cell(deleted, "test-normalised"))
    subs["deleted"] = deleted
    edited = _solve(release, **{"ex-composition": "@exercise\ndef composition_score(W_A, W_B):\n    return W_A"})
    _cell(edited, "test-composition").source = "print('\\u2705 composition_score: correct')"
    subs["edited"] = edited
    colab = _solve(release)
    for k, cell in enumerate(colab.cells):  # Colab re-created every cell: no nbgrader metadata, fresh ids
        cell.metadata = {}
        cell.id = f"colab{k:04d}"
    subs["colab"] = colab
    folder.mkdir(parents=True)
    for name, nb in subs.items():
        nbformat.write(nb, folder / f"{name}_{CHAPTER}.ipynb")
    (folder / f"badjson_{CHAPTER}.ipynb").write_text('{"cells": [ this is not JSON')


STUDENTS = [
    "badjson",
    "blank",
    "bruteforce",
    "colab",
    "crash",
    "crashfn",
    "customexc",
    "deleted",
    "disk",
    "edited",
    "fallback",
    "forkbomb",
    "hiddenseeds",
    "killgroup",
    "killparent",
    "loop",
    "loopfn",
    "loud",
    "loudblank",
    "memory",
    "memoryfn",
    "network",
    "readsolutions",
    "rebind",
    "reference",
    "silenced",
    "solution",
    "survivor",
    "warning",
    "wrong",
]


@pytest.fixture(scope="module")
def decoy():
    """Another copy of the course's solutions, in the grading user's home folder (where an instructor's own checkout
    might be): the box must hide it too, not only the course being graded."""
    folder = Path.home() / f".mechinterp-decoy-{os.getpid()}"
    target = folder / "solutions" / CHAPTER
    target.mkdir(parents=True)
    shutil.copy(FIXTURES / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", target)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, listener, decoy):
    tmp = tmp_path_factory.mktemp("grade")
    course = _course(tmp)
    out = tmp / "out"
    port, _ = listener
    _submissions(course, tmp / "downloads", out, port)
    lines: list[str] = []
    report = grade.grade(
        "circuits", [tmp / "downloads"], out, timeout=TIMEOUT_S, course_dir=course, jobs=2, progress=lines.append
    )
    report.progress_lines = lines
    return report


def _auto(result):
    return {k: result.cell_scores[k][0] for k in AUTOGRADED}


def _feedback(result) -> str:
    return result.feedback.read_text(encoding="utf-8")


def _executed(batch, student):
    return nbformat.read(batch.out_dir / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# --------------------------------------------------------------------------------------------------------------
# The round trip
# --------------------------------------------------------------------------------------------------------------


def test_every_submission_is_graded_with_feedback_csvs_and_progress(batch):
    assert [r.student_id for r in batch.students] == STUDENTS
    assert all(r.feedback and r.feedback.is_file() for r in batch.students), [r.problems for r in batch.students]
    rows = batch.grades_csv.read_text().splitlines()
    assert rows[0].startswith("assignment,duedate,timestamp,student_id")
    assert [row.split(",")[3] for row in rows[1:]] == STUDENTS
    assert batch.problems_csv.read_text().splitlines()[0] == ",".join(grade.PROBLEM_COLUMNS)
    assert (batch.out_dir / "nbgrader_config.py").is_file()
    assert oct(batch.out_dir.stat().st_mode & 0o777) == "0o700"
    counted = [line for line in batch.progress_lines if line.startswith("[")]
    assert len(counted) == len(STUDENTS) and counted[-1].startswith(f"[{len(STUDENTS)}/{len(STUDENTS)}]")
    assert all("left" in line for line in counted)


def test_solution_full_marks_blank_zero_wrong_partial(batch):
    assert _auto(batch["solution"]) == FULL and batch["solution"].needs_manual_grade
    assert _auto(batch["blank"]) == dict.fromkeys(AUTOGRADED, 0)
    assert batch["blank"].cell_scores["answer-hidden"][0] == 0 and not batch["blank"].needs_manual_grade
    assert _auto(batch["wrong"]) == dict(FULL, **{"test-composition": 0})
    html = _feedback(batch["wrong"])
    assert "CheckFailed" in html and "rescaling a matrix must not change the score" in html


def test_hidden_tests_use_other_inputs_and_never_show(batch):
    seen = _printed(_executed(batch, "hiddenseeds")).split("SEEN", 1)[1]
    values = json.loads(seen.strip().splitlines()[0])
    # The visible check's 3 shapes x 2 calls, then the hidden part's: every input differs.
    assert len(values) == 12 and len(set(values[:6]) & set(values[6:])) == 0
    assert _auto(batch["hiddenseeds"]) == FULL
    for result in batch.students:
        html = _feedback(result)
        assert hidden_test_leaks(html, FIXTURES / "solutions" / CHAPTER / f"{CHAPTER}.ipynb") == [], result.student_id


def test_output_on_stderr_and_warnings_cost_nothing(batch):
    assert _auto(batch["warning"]) == FULL


def test_infinite_loops_are_stopped_and_cost_only_their_exercise(batch):
    assert _auto(batch["loop"]) == dict(FULL, **{"test-my-scores": 0})
    assert any("was stopped" in p for p in batch["loop"].problems)
    assert _auto(batch["loopfn"]) == dict(FULL, **{"test-composition": 0})
    assert "ran for more than" in _feedback(batch["loopfn"])


def test_a_dead_kernel_costs_only_what_depends_on_it(batch):
    assert _auto(batch["crash"]) == dict(FULL, **{"test-normalised": 0})
    assert any("kernel died" in p for p in batch["crash"].problems)
    assert _auto(batch["crashfn"]) == dict(FULL, **{"test-composition": 0})
    assert "the kernel died while the check ran your function" in _feedback(batch["crashfn"])


def test_deleted_and_edited_test_cells(batch):
    assert _auto(batch["deleted"]) == dict(FULL, **{"test-normalised": 0})
    assert any("test-normalised was deleted" in p for p in batch["deleted"].problems)
    assert _auto(batch["edited"]) == dict(FULL, **{"test-composition": 0})  # restored, then it ran the real check
    assert any("test-composition had been edited" in p for p in batch["edited"].problems)


def test_invalid_json_scores_zero_with_a_reason(batch):
    result = batch["badjson"]
    assert _auto(result) == dict.fromkeys(AUTOGRADED, 0)
    assert any("could not be read" in p and "JSON" in p for p in result.problems)
    assert "could not be read" in _feedback(result)


def test_cells_that_lost_their_metadata_in_colab_are_repaired(batch):
    assert _auto(batch["colab"]) == FULL
    assert any("lost their nbgrader metadata" in p for p in batch["colab"].problems)


# --------------------------------------------------------------------------------------------------------------
# Cheats: each scores what an honest grader gives, and is flagged
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "student, expected, flag",
    [
        ("reference", dict(FULL, **{"test-composition": 0, "test-normalised": 0}), "reference answers"),
        ("fallback", dict(FULL, **{"test-composition": 0, "test-normalised": 0}), None),
        ("silenced", dict.fromkeys(AUTOGRADED, 0), "silencing errors"),
        ("customexc", dict.fromkeys(AUTOGRADED, 0), "silencing errors"),
        ("rebind", dict.fromkeys(AUTOGRADED, 0), "rebinding or importing the course's checks"),
        ("readsolutions", dict.fromkeys(AUTOGRADED, 0), "reading the course's files"),
        (
            "bruteforce",
            dict(FULL, **{"test-composition": 0, "test-normalised": 0, "test-studies-quiz": 0}),
            "reference answers",
        ),
    ],
)
def test_bypasses_score_zero_on_what_they_bypass(batch, student, expected, flag):
    result = batch[student]
    assert _auto(result) == expected, result.problems
    if flag:
        assert any(flag in p for p in result.problems), result.problems
        assert "flagged for the instructor" in _feedback(result)


def test_no_answer_was_readable_from_the_box(batch):
    printed = _printed(_executed(batch, "readsolutions"))
    assert "found 0 solution cells" in printed


def test_a_lot_of_output_keeps_a_right_answer_right_and_a_wrong_one_wrong(batch):
    assert _auto(batch["loud"]) == FULL
    assert _auto(batch["loudblank"]) == dict.fromkeys(AUTOGRADED, 0)
    assert "output cut at" in _printed(_executed(batch, "loud"))


@needs_root
@pytest.mark.parametrize(
    "student, expected",
    [
        ("killparent", FULL),
        ("killgroup", FULL),
        ("survivor", FULL),
        ("forkbomb", FULL),
        ("memory", FULL),
        ("memoryfn", dict(FULL, **{"test-composition": 0})),
        ("disk", FULL),
        ("network", FULL),
    ],
)
def test_attacks_on_the_machine_cost_only_that_student(batch, student, expected):
    assert _auto(batch[student]) == expected, batch[student].problems


@needs_root
def test_the_box_holds(batch, listener):
    _, connections = listener
    assert connections == []  # the network attempt reached nothing
    printed = _printed(_executed(batch, "network"))
    assert "refused:" in printed and "connected" not in printed
    memory = _executed(batch, "memory")
    assert "MemoryError" in json.dumps([c.get("outputs") for c in memory.cells])
    disk = json.dumps([c.get("outputs") for c in _executed(batch, "disk").cells])
    assert "File too large" in disk or "No space left" in disk
    assert "Operation not permitted" in json.dumps([c.get("outputs") for c in _executed(batch, "killparent").cells])
    # The survivor and the fork bomb are gone, and the gradebook holds every student.
    # (Only this batch's users: the suite's other worker may be grading another batch, as its own users.)
    assert os.geteuid() != 0 or batch.uids
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) in batch.uids]
    assert leftovers == []
    with sqlite3.connect(batch.gradebook) as db:
        assert {row[0] for row in db.execute("select id from student")} == set(STUDENTS)
    assert "overwritten" not in batch.problems_csv.read_text()
    assert len(batch.protections) == 5 and not batch.missing_protections
    assert any("network namespace" in line for line in batch.protections)


def test_two_grading_processes_never_share_a_user_id():
    """Two batches graded at once (two instructors' commands, or the suite's two workers) run student code as
    different users: one's fork bomb exhausts only its own user's process limit."""
    if os.geteuid() != 0:
        pytest.skip("student code runs as other users only when the grader runs as root")
    hold = "from mechinterp_course.instructor import sandbox; import time; print(sandbox.slot_uid(0), flush=True)"
    first = subprocess.Popen([sys.executable, "-c", hold + "; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        held = int(first.stdout.readline())
        second = subprocess.run([sys.executable, "-c", hold], capture_output=True, text=True, check=True)
        assert held >= sandbox.UID_BASE and int(second.stdout) != held
    finally:
        first.kill()
        first.wait()
    again = subprocess.run([sys.executable, "-c", hold], capture_output=True, text=True, check=True)
    assert int(again.stdout) <= held  # released when the process that held it ended


def _uid(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# --------------------------------------------------------------------------------------------------------------
# nbgrader's own commands in the grading folder, resuming, regrading
# --------------------------------------------------------------------------------------------------------------


def test_nbgrader_autograde_in_the_folder_grades_sealed_notebooks_and_refuses_the_rest(batch):
    from nbgrader.converters import Autograde

    config = grade.stage2_config(batch.out_dir)
    assert grade.run_converter(Autograde, config, CHAPTER, "solution") == ""
    release = nbformat.read(batch.out_dir / "release" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    folder = batch.out_dir / "submitted" / "late_one" / CHAPTER
    folder.mkdir(parents=True)
    nbformat.write(release, folder / f"{CHAPTER}.ipynb")  # never executed: would score full marks on nothing
    failure = grade.run_converter(Autograde, config, CHAPTER, "late_one")
    assert "not executed by `mechinterp-course grade`" in failure
    shutil.rmtree(folder.parent)


#: nbgrader 0.9.6's grading page loads MathJax 2 from a CDN (its template hard-codes the address); offline the
#: request is refused and formgrade.js then fails on ``MathJax``. Maths in answers is not typeset; nothing else is
#: lost (the scores below are entered on that page). Any other outside request or console error fails the test.
FORMGRADER_MATHJAX = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/"
FORMGRADER_MATHJAX_ERRORS = (
    "Failed to load resource: net::ERR_FAILED",
    "uncaught MathJax is not defined",
)


def _round_like_nbgrader(value: float) -> float:
    """The formgrader shows scores rounded to 2 decimals (its roundToPrecision)."""
    return round(value * 100) / 100


def test_the_formgrader_lists_the_batch_and_takes_a_manual_grade(batch, tmp_path):
    """``jupyter lab`` in (a copy of) the grading folder, Nbgrader > Formgrader in the browser: every submission is
    listed with the score the grader gave it, and a score typed into the field of a written answer lands in the
    gradebook and in the listed total."""
    import browser
    from nbgrader.api import Gradebook
    from playwright.sync_api import sync_playwright

    executable = browser.chromium()
    folder = tmp_path / "grading"
    shutil.copytree(batch.out_dir, folder, ignore=shutil.ignore_patterns(grade.STATE_DIR))
    artifacts = browser.artifacts_dir("formgrader")
    server = browser.instructor_lab(folder, tmp_path / "home")
    guard = browser.Guard()
    student, manual = "solution", 1.5
    expected = {
        r.student_id: (_round_like_nbgrader(r.score), _round_like_nbgrader(r.max_score)) for r in batch.students
    }
    try:
        with sync_playwright() as playwright:
            chromium = browser.launch(playwright, executable)
            context = chromium.new_context(viewport=browser.VIEWPORT)
            guard.attach(context)
            page = context.new_page()
            guard.watch(page, "formgrader")
            page.goto(f"{server.url}/lab")
            browser.menu(page, "Nbgrader", "Formgrader")
            frame = page.frame_locator("iframe[src*='formgrader']")
            frame.locator("td.num-submissions a").wait_for(timeout=60_000)
            listed_count = frame.locator("td.num-submissions a").text_content().strip()
            frame.locator("td.num-submissions a").click()

            def listed(scope) -> dict[str, tuple[float, float]]:
                """Student id -> (score, max score) as the submissions page lists them."""
                scope.locator("#main-table tr td.score").first.wait_for(timeout=60_000)
                rows = scope.locator("#main-table tr")
                scores = {}
                for i in range(rows.count()):
                    score, max_score = rows.nth(i).locator("td.score").text_content().split("/")
                    scores[rows.nth(i).locator("td.student-id").text_content().strip()] = (
                        float(score),
                        float(max_score),
                    )
                return scores

            before = listed(frame)
            page.screenshot(path=str(artifacts / "submissions.png"))
            frame.locator("a", has_text="Manual Grading").click()
            frame.locator("#main-table a", has_text=CHAPTER).first.click()  # the chapter
            frame.locator("#main-table a", has_text=CHAPTER).first.click()  # its notebook
            frame.locator(f"#main-table tr:has(a.name-shown:text-is('{student}')) a.name-hidden").click()
            field = frame.locator("input#answer-hidden")
            page.wait_for_load_state("networkidle")
            saved = None
            # The formgrader fills each score field from its API once the page has loaded; a score typed before
            # that is overwritten (the empty field of a failed run's screenshot), so type it again until it is
            # saved, as a grader would.
            for _attempt in range(3):
                field.fill(str(manual))
                field.press("Tab")  # the formgrader saves a score when its field loses focus
                for _ in range(50):
                    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gb:
                        saved = gb.find_grade("answer-hidden", CHAPTER, CHAPTER, student).manual_score
                    if saved is not None:
                        break
                    page.wait_for_timeout(100)
                if saved is not None:
                    break
            page.screenshot(path=str(artifacts / "manual-grade.png"))
            page.goto(f"{server.url}/formgrader/manage_submissions/{CHAPTER}")  # the same page, on its own
            after = listed(page)
            page.screenshot(path=str(artifacts / "submissions-after.png"))
            chromium.close()
    finally:
        server.stop()
    # Every graded student is listed with the grader's score. The one other row the gradebook may hold is the
    # unexecuted "late_one" that the autograde test above submits (nbgrader records a student it refuses too).
    assert {student: before.get(student) for student in expected} == expected
    assert set(before) - set(expected) <= {"late_one"}
    assert int(listed_count) == len(set(before) - {"late_one"})  # nbgrader counts only notebooks it graded
    assert saved == manual
    assert after == dict(before, **{student: (before[student][0] + manual, before[student][1])})
    assert all(url.startswith(FORMGRADER_MATHJAX) for url in guard.refused), guard.refused
    assert all(e.split(": ", 1)[1] in FORMGRADER_MATHJAX_ERRORS for e in guard.console_errors), guard.console_errors


def _grade_rows(gradebook: Path) -> list[tuple]:
    query = (
        "select sa.student_id, c.name, g.auto_score, g.manual_score, g.needs_manual_grade from grade g "
        "join base_cell c on g.cell_id = c.id join submitted_notebook sn on g.notebook_id = sn.id "
        "join submitted_assignment sa on sn.assignment_id = sa.id order by sa.student_id, c.name"
    )
    with sqlite3.connect(gradebook) as db:
        return db.execute(query).fetchall()


def test_submitted_tree_resume_and_idempotent_regrade(tmp_path, capsys):
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    tree = tmp_path / "class" / "submitted"
    for student, name, nb in [
        ("ann", "foo.ipynb", _solve(release)),
        ("ben", f"{CHAPTER}.ipynb", release),
        ("cy", "a.ipynb", release),
        ("cy", "b.ipynb", release),
    ]:
        (tree / student / CHAPTER).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, tree / student / CHAPTER / name)
    out = tmp_path / "out"

    first = grade.grade(CHAPTER, [tmp_path / "class"], out, timeout=TIMEOUT_S, course_dir=course, jobs=1)
    assert _auto(first["ann"]) == FULL
    assert any("named foo.ipynb" in p for p in first["ann"].problems)
    assert first["ben"].auto_score == 0 and first["cy"].auto_score == 0
    assert any("could not tell which to grade" in p for p in first["cy"].problems)
    csv_first, problems_first = first.grades_csv.read_text(), first.problems_csv.read_text()
    grades_first = _grade_rows(first.gradebook)

    # The same batch again, from the command line: nothing is run again, and the gradebook is the same.
    lines: list[str] = []
    argv = [
        "--course-dir",
        str(course),
        "grade",
        CHAPTER,
        str(tmp_path / "class"),
        "--out",
        str(out),
        "--timeout",
        str(TIMEOUT_S),
        "--jobs",
        "2",
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "Reusing 3 notebook(s)" in captured.err and "[1/" not in captured.err
    assert "ann" in captured.out and "4/4" in captured.out and "grades.csv" in captured.out
    assert first.grades_csv.read_text() == csv_first and first.problems_csv.read_text() == problems_first
    assert _grade_rows(first.gradebook) == grades_first

    # An interrupted batch resumes: a lost executed notebook is the only one run again.
    (out / grade.STATE_DIR / "executed" / "ann.ipynb").unlink()
    again = grade.grade(
        CHAPTER, [tmp_path / "class"], out, timeout=TIMEOUT_S, course_dir=course, jobs=1, progress=lines.append
    )
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[1/1"]
    assert _grade_rows(again.gradebook) == grades_first

    with Gradebook(f"sqlite:///{first.gradebook}") as gb:  # a grader marks ann's written answer in the formgrader
        gb.find_grade("answer-hidden", CHAPTER, CHAPTER, "ann").manual_score = 2
        gb.db.commit()
    third = grade.grade(CHAPTER, [tree / "ann"], out, timeout=TIMEOUT_S, course_dir=course)
    assert third["ann"].cell_scores["answer-hidden"][0] == 2  # a regrade keeps manual grades
    assert third["ann"].score == 6


# --------------------------------------------------------------------------------------------------------------
# Input handling (no kernels)
# --------------------------------------------------------------------------------------------------------------


def test_repair_restores_metadata_by_source_and_position(tmp_path):
    course = _course(tmp_path)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    nb = _solve(release)
    for k, cell in enumerate(nb.cells):
        cell.metadata, cell.id = {}, f"new{k}"
    nb.cells.insert(4, nbformat.v4.new_code_cell("print('my own scratch cell')"))
    notes = grade.repair_notebook(nb, release)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    assert ids == [c.metadata["nbgrader"]["grade_id"] for c in release.cells[:4]] + [None] + [
        c.metadata["nbgrader"]["grade_id"] for c in release.cells[4:]
    ]
    assert _cell(nb, "ex-normalised").source == RIGHT["ex-normalised"]  # the student's answer is kept
    assert notes and "lost their nbgrader metadata" in notes[0]


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    course = _course(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match=r"Unknown chapter 'nope'.*01_circuits \(circuits\)"):
        grade.grade("nope", [tmp_path], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="no such file or folder"):
        grade.grade(CHAPTER, [tmp_path / "missing"], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="no notebooks found"):
        grade.grade(CHAPTER, [tmp_path / "empty"], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="--jobs"):
        grade.grade(CHAPTER, [tmp_path / "empty"], tmp_path / "out", course_dir=course, jobs=0)
    assert not (tmp_path / "out").exists()

    for argv, message in [
        (["grade", "nope", str(tmp_path / "empty")], "Unknown chapter"),
        (["grade", CHAPTER, str(tmp_path / "missing")], "no such file or folder"),
        (["grade", CHAPTER, str(tmp_path / "empty")], "no notebooks found"),
    ]:
        assert cli.main(["--course-dir", str(course), *argv]) == cli.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
