"""Grade a batch of submitted notebooks: sandboxed, in parallel, resumable, and with verdicts no student code
can touch.

    report = grade("circuits", ["downloads/"], "grading/", jobs=2)

Input. ``paths`` are notebooks, folders, zips, or several: a plain folder of ``<student>.ipynb``, an LMS download
(Canvas's or Moodle's, zipped or extracted), or an nbgrader tree ``submitted/<student>/<chapter>/``. How files become
one submission per student (Canvas and Moodle names, a roster, re-downloads, files that are not notebooks, another
chapter's notebook, submission times) is :mod:`.lms`. ``roster`` resolves ids against the class list; ``due``,
the roster's extensions and ``late_penalty`` make nbgrader's late-submission plugin apply the penalty chosen.

Output (``out_dir`` is an ordinary nbgrader course directory, so ``jupyter lab`` there opens the formgrader)::

    gradebook.db                              nbgrader's SQLite gradebook (manual grades survive a regrade)
    grades.csv                                ``nbgrader export`` of this chapter, one row per student (with names,
                                              e-mails, due date, submission time and late penalty)
    problems.csv                              per student: the file graded, scores, lateness and every problem
                                              found; files no student could be given; kept across runs
    scores_by_question.csv, lms/, rubric/     per-question scores, the LMS upload files, the mark schemes
                                              (:mod:`.outputs`)
    feedback/<student>/<chapter>/<chapter>.html  nbgrader generate_feedback, one file per student
    submitted/, autograded/, source/, release/   nbgrader's own folders; submitted/ holds the executed notebooks
    nbgrader_config.py                        the configuration below, for the formgrader and nbgrader's commands
    .grading/                                 the grader's own state: executed notebooks (for resuming), the key
                                              that seals them, the sandboxes' sockets

The folder is made private to the grading user (mode 700): it holds every student's work.

How a notebook is graded (:mod:`.execute`, :mod:`.judge`, :mod:`.sandbox`):

1. It is read, repaired against the released notebook (:func:`repair_notebook`: cells that lost their nbgrader
   metadata, deleted test cells) and sanitised by nbgrader's own preprocessors (``OverwriteCells`` restores edited
   test cells, hidden tests included, from the gradebook). No student code runs yet.
2. Its code cells run in a fresh kernel in a box: its own processes and user, no network, a filesystem where the
   solutions, the reference answers, the checks, the gradebook and the other submissions do not exist, and limits
   on memory, processes, file size and CPU time. Its test cells never run there: the grader runs each check in its
   own process, calls the student's functions in the kernel, and writes the cell's output itself.
3. The executed notebook is sealed (an HMAC with a key in ``.grading/``) and saved at once, so that an interrupted
   batch resumes where it stopped: ``grade`` again on the same batch runs only what is missing or changed.
4. ``nbgrader autograde`` scores the recorded outputs (nbgrader's ``Execute`` is disabled and ``ClearOutput`` left
   out); a preprocessor refuses any notebook without a valid seal, so nbgrader's own commands in ``out_dir`` (the
   formgrader's Autograde button, ``nbgrader autograde``) grade correctly or refuse with a message that points
   here, never score a notebook that did not run. Then ``nbgrader generate_feedback`` and ``nbgrader export``.

``jobs`` notebooks are graded at once (default: the machine's cores), each kernel with ``cores / jobs`` threads.

Hidden tests in feedback. nbgrader 0.9.6's ``GenerateFeedback`` shows test cells as the autograder ran them,
hidden tests included, and error outputs with full tracebacks. The feedback here runs :class:`HideHiddenTests` and
:class:`ShortTracebacks` first: test cells lose their hidden region and their tracebacks shrink to
``ExceptionName: message``.

Every problem found (a timeout, a dead kernel, a deleted or edited test cell, unreadable JSON, repaired metadata,
a wrong file name, code that looks like an attempt to get around the grader) is listed in ``problems.csv`` and in a
markdown cell the grader adds at the top of the student's notebook, so it shows in the feedback.
"""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import hashlib
import hmac
import io
import json
import math
import multiprocessing
import os
import re
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import execute, lms, outputs, sandbox
from .build import (
    CourseError,
    captured_nbgrader_log,
    find_course_dir,
    generate_release,
    last_error,
    nbgrader_environment,
    nbgrader_logger,
    resolve_chapter,
    short_name,
)
from .execute import DEFAULT_TIMEOUT_S, DELETED_MARK, error_output, is_test
from .lms import Submission

#: The grader's own state in ``out_dir``: executed notebooks, the seal key, the sandboxes' folders.
STATE_DIR = ".grading"
SEAL_KEY = "seal.key"
SEAL_METADATA = "mechinterp_grading"

GRADEBOOK = "gradebook.db"
GRADES_CSV = "grades.csv"
PROBLEMS_CSV = "problems.csv"
#: A hidden-test region (nbgrader's markers); a test cell that still has one (e.g. a copy of the solution notebook)
#: is not "edited".
HIDDEN_TESTS = re.compile(r"^[^\n]*BEGIN HIDDEN TESTS.*?END HIDDEN TESTS[^\n]*\n?", re.DOTALL | re.MULTILINE)

#: Stage 2 and the formgrader's configuration; also written to ``out_dir/nbgrader_config.py``.
NBGRADER_SETTINGS = {
    # nbgrader's default sanitize list minus ClearOutput: the outputs are the stage-1 results being graded.
    "Autograde": {
        "sanitize_preprocessors": [
            "mechinterp_course.instructor.grade.RequireGraded",
            "nbgrader.preprocessors.DeduplicateIds",
            "nbgrader.preprocessors.OverwriteKernelspec",
            "nbgrader.preprocessors.OverwriteCells",
            "nbgrader.preprocessors.CheckCellMetadata",
        ]
    },
    # Student code ran in a sandbox; it must never run in the course directory.
    "Execute": {"enabled": False},
    # The formgrader's view and the feedback files: plotly figures drawn, mark schemes for graders (formgrader only).
    "HTMLExporter": {
        "preprocessors": [
            "mechinterp_course.instructor.outputs.PlotlyFigures",
            "mechinterp_course.instructor.outputs.MarkSchemes",
        ]
    },
    "GenerateFeedback": {
        "preprocessors": [
            "mechinterp_course.instructor.grade.HideHiddenTests",
            "mechinterp_course.instructor.grade.ShortTracebacks",
            "nbgrader.preprocessors.GetGrades",
            "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
        ]
    },
}


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StudentResult:
    """One student's grade. ``auto_*`` are the autograded (code) points; ``score`` adds any manual grades and
    takes off the late penalty (``late_penalty``)."""

    student_id: str
    source: Path | None  # the file graded (None if the student handed in no notebook)
    auto_score: float = 0.0
    max_auto_score: float = 0.0
    score: float = 0.0
    max_score: float = 0.0
    needs_manual_grade: bool = False
    late_penalty: float = 0.0
    cell_scores: dict[str, tuple[float | None, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    problems: list[str] = field(default_factory=list)
    feedback: Path | None = None


@dataclass
class GradeReport:
    chapter: str
    out_dir: Path
    gradebook: Path
    grades_csv: Path
    problems_csv: Path
    students: list[StudentResult]
    warnings: list[str] = field(default_factory=list)  # problems with the batch rather than one student
    protections: list[str] = field(default_factory=list)  # what the sandbox enforced (once per batch)
    missing_protections: list[str] = field(default_factory=list)  # what it could not
    uids: list[int] = field(default_factory=list)  # the user ids student code ran as (when grading as root)

    def __getitem__(self, student_id: str) -> StudentResult:
        for result in self.students:
            if result.student_id == student_id:
                return result
        raise KeyError(student_id)

    def table(self) -> str:
        """A plain-text summary, one line per student."""
        rows = [("student", "auto", "total", "written", "problems")]
        for r in self.students:
            rows.append(
                (
                    r.student_id,
                    f"{r.auto_score:g}/{r.max_auto_score:g}",
                    f"{r.score:g}/{r.max_score:g}" + (f" (-{r.late_penalty:g} late)" if r.late_penalty else ""),
                    "to grade" if r.needs_manual_grade else "-",
                    "; ".join(r.problems) or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
        return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------------------------------------------
# Stage 1a: read, repair and sanitise (no student code runs here)
# --------------------------------------------------------------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def _set_cell_type(cell: NotebookNode, cell_type: str) -> None:
    if cell.cell_type == cell_type:
        return
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def read_submission(path: Path) -> NotebookNode:
    """Read a notebook, converting old formats; raises ``ValueError`` with a readable reason when it cannot."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat's NotJSONError, a JSONDecodeError, an unknown nbformat version ...
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(f"invalid notebook JSON: {message}") from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook (no list of cells)")
    cells = []
    for cell in nb.cells:  # keep what a kernel can run; repair what hand-edited JSON often breaks
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        source = cell.get("source", "")
        cell["source"] = "".join(source) if isinstance(source, list) else str(source)
        cell.setdefault("metadata", {})
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb.cells = cells
    nb.setdefault("metadata", {})
    return nb


def repair_notebook(nb: NotebookNode, release: NotebookNode) -> list[str]:
    """Match the submitted cells to the released ones and restore what nbgrader needs; returns notes.

    Why: nbgrader finds graded cells by their metadata. Colab drops cell metadata when a cell is re-created (cut
    and pasted, or retyped), and nbgrader then silently scores the exercise zero. Matching, in this order:
    the nbgrader ``grade_id`` (untouched cells), the cell id (Colab keeps it for cells it did not re-create),
    an identical source (locked cells, unanswered stubs) when unique on both sides, and finally position: an
    unmatched cell takes the first unmatched released cell of its type between its matched neighbours. A matched
    cell gets the release's nbgrader metadata; solution cells keep the student's source, locked cells (tests,
    read-only text and code) get the release's (nbgrader's ``OverwriteCells`` then restores hidden tests).
    A released graded cell with no match was deleted: it is put back in place; a test cell is marked so that it
    is not run and scores zero, a written answer comes back empty.
    """
    rel = release.cells
    notes: list[str] = []
    match: list[int | None] = [None] * len(nb.cells)
    claimed: set[int] = set()

    def claim(i: int, j: int) -> None:
        match[i] = j
        claimed.add(j)

    by_grade_id = {_nbgrader(c)["grade_id"]: j for j, c in enumerate(rel) if _nbgrader(c).get("grade_id")}
    for i, cell in enumerate(nb.cells):
        j = by_grade_id.get(_nbgrader(cell).get("grade_id"))
        if j is not None and j not in claimed:
            claim(i, j)
    by_cell_id = {c.get("id"): j for j, c in enumerate(rel) if c.get("id")}
    for i, cell in enumerate(nb.cells):
        j = by_cell_id.get(cell.get("id"))
        if match[i] is None and j is not None and j not in claimed and rel[j].cell_type == cell.cell_type:
            claim(i, j)

    def key(cell):
        return (cell.cell_type, HIDDEN_TESTS.sub("", cell.source).strip())

    rel_keys = [key(c) for c in rel]
    open_keys = [key(c) for i, c in enumerate(nb.cells) if match[i] is None]
    for i, cell in enumerate(nb.cells):
        k = key(cell)
        if match[i] is None and k[1] and open_keys.count(k) == 1 and rel_keys.count(k) == 1:
            j = rel_keys.index(k)
            if j not in claimed:
                claim(i, j)
    for i, cell in enumerate(nb.cells):
        if match[i] is not None:
            continue
        lo = max((m for m in match[:i] if m is not None), default=-1)
        hi = min((m for m in match[i + 1 :] if m is not None), default=len(rel))
        for j in range(lo + 1, hi):
            if j not in claimed and rel[j].cell_type == cell.cell_type and _nbgrader(rel[j]):
                claim(i, j)
                break

    restored, edited = [], []
    for i, cell in enumerate(nb.cells):
        j = match[i]
        if j is None:
            cell.metadata.pop("nbgrader", None)  # a copy of a graded cell, or metadata from elsewhere: not graded
            continue
        ref = rel[j]
        ref_meta = copy.deepcopy(_nbgrader(ref))
        if _nbgrader(cell).get("grade_id") != ref_meta.get("grade_id"):
            restored.append(ref_meta["grade_id"])
        if ref_meta.get("locked"):
            if key(cell) != key(ref):
                edited.append(ref_meta["grade_id"])
            _set_cell_type(cell, ref.cell_type)
            cell.source = ref.source
        if ref_meta:
            cell.metadata["nbgrader"] = ref_meta
    if restored:
        graded = [
            g
            for g in restored
            if _nbgrader(rel[by_grade_id[g]]).get("grade") or _nbgrader(rel[by_grade_id[g]]).get("solution")
        ]
        notes.append(
            f"{len(restored)} cell(s) had lost their nbgrader metadata (as Colab does when cells are "
            f"re-created) and were matched to the released notebook"
            + (f", among them {', '.join(graded)}" if graded else "")
        )
    for grade_id in edited:
        kind = "test cell" if is_test(rel[by_grade_id[grade_id]]) else "read-only cell"
        notes.append(f"{kind} {grade_id} had been edited; it was restored to the course's version")

    positions = list(match)
    for j, ref in enumerate(rel):
        if j in claimed or not _nbgrader(ref).get("grade"):
            continue
        before = [p for p, m in enumerate(positions) if m is not None and m < j]
        at = before[-1] + 1 if before else 0
        cell = copy.deepcopy(ref)
        grade_id = _nbgrader(ref)["grade_id"]
        if is_test(ref):
            cell.metadata[DELETED_MARK] = True
            notes.append(f"test cell {grade_id} was deleted from the notebook: it was not run and scores zero")
        else:
            notes.append(f"answer cell {grade_id} was deleted from the notebook: put back empty")
        nb.cells.insert(at, cell)
        positions.insert(at, j)
    return notes


def sanitise(nb: NotebookNode, chapter: str, db_url: str) -> NotebookNode:
    """nbgrader's own autograde sanitising, in process: clear outputs, de-duplicate grade ids, set the kernelspec,
    restore locked cells (with hidden tests) and check metadata, against the gradebook at ``db_url``."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        OverwriteCells,
        OverwriteKernelspec,
    )

    resources = {"nbgrader": {"notebook": chapter, "assignment": chapter, "db_url": db_url, "student": "-"}}
    with nbgrader_environment():
        for preprocessor in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata):
            nb, resources = preprocessor(log=nbgrader_logger())(nb, resources)
    return nb


def _empty_submission(release: NotebookNode, reason: str) -> NotebookNode:
    """What an unreadable or missing submission is graded as: the released notebook, with every test failed."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if is_test(cell):
            cell.metadata[DELETED_MARK] = True
    nb.metadata["mechinterp_empty_reason"] = reason
    return nb


def drop_stderr_from_tests(nb: NotebookNode) -> None:
    """Remove stderr streams from test cells: nbgrader scores any stderr output as a failure, and a warning a check
    prints is not one (a failed check always leaves an error output)."""
    for cell in nb.cells:
        if is_test(cell):
            cell.outputs = [
                o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]


def _finish(nb: NotebookNode, notes: list[str]) -> None:
    """Give deleted test cells their zero-scoring error and put the notes in a cell at the top (for the feedback)."""
    for cell in nb.cells:
        if cell.metadata.pop(DELETED_MARK, None):
            reason = nb.metadata.get("mechinterp_empty_reason") or "this test cell was deleted from the submission"
            cell.outputs = [error_output("NotGraded", f"{reason}, so it scores zero")]
    nb.metadata.pop("mechinterp_empty_reason", None)
    if notes:
        text = "**Notes from the autograder**\n\n" + "\n".join(f"- {note}" for note in notes)
        ids = {c.get("id") for c in nb.cells}
        cell_id = next(
            f"grading-notes-{k}" if k else "grading-notes"
            for k in range(len(ids) + 1)
            if (f"grading-notes-{k}" if k else "grading-notes") not in ids
        )
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(text, id=cell_id))


# --------------------------------------------------------------------------------------------------------------
# Code that looks like an attempt to get around the grader (flagged for the instructor; the box already stops it)
# --------------------------------------------------------------------------------------------------------------

#: (pattern, what it suggests) searched in the student's own code cells.
SUSPICIOUS = [
    (re.compile(r"showtraceback|set_custom_exc|InteractiveShell\.|sys\.excepthook"), "silencing errors"),
    (re.compile(r"\.reference\b|import\s+reference|yours_or_reference"), "using the course's reference answers"),
    (
        re.compile(r"\bchecks?\.\w+\s*=(?!=)|setattr\(\s*checks?\b|import\s+[\w.]*checks\b"),
        "rebinding or importing the course's checks",
    ),
    (
        re.compile(r"solutions/|['\"]solutions['\"]|__file__\)?\.parents?|gradebook"),
        "reading the course's files (solutions, gradebook)",
    ),
    (re.compile(r"getppid|os\.kill|killpg|setsid|os\.fork|daemon"), "signalling or escaping the grader's processes"),
    (re.compile(r"\bsocket\b|urllib|requests\.|http\.client"), "using the network"),
]


def suspicious_code(nb: NotebookNode) -> list[str]:
    """Notes for the instructor: lines of the student's cells that look like an attempt to get around grading."""
    found: dict[str, list[str]] = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader") or {}
        if cell.cell_type != "code" or meta.get("locked"):
            continue
        for number, line in enumerate(cell.source.splitlines(), 1):
            for pattern, what in SUSPICIOUS:
                if pattern.search(line):
                    found.setdefault(what, []).append(f"{execute.label(cell, index)} line {number}")
    return [
        f"flagged for the instructor: code that looks like {what} ({', '.join(places[:3])}"
        f"{' ...' if len(places) > 3 else ''})"
        for what, places in found.items()
    ]


#: Messages the box's stand-ins give when student code reaches for what it hides (see :mod:`.sandbox`).
HIDDEN_MESSAGES = ("is not available while your notebook is graded", "checks run in the grader")


def reached_for_hidden(nb: NotebookNode) -> list[str]:
    cells = [
        execute.label(c, i)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        and not is_test(c)
        and any(m in json.dumps(o) for o in c.get("outputs", []) for m in HIDDEN_MESSAGES)
    ]
    return (
        [
            f"flagged for the instructor: the code reached for the hidden reference answers or checks "
            f"({', '.join(cells[:3])})"
        ]
        if cells
        else []
    )


# --------------------------------------------------------------------------------------------------------------
# Sealing executed notebooks
# --------------------------------------------------------------------------------------------------------------


def _seal_key(out: Path) -> bytes:
    path = out / STATE_DIR / SEAL_KEY
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def _sealed_content(nb: NotebookNode) -> bytes:
    cells = [
        {
            "type": c.cell_type,
            "source": c.source,
            "outputs": c.get("outputs", []),
            "grade_id": (c.get("metadata", {}).get("nbgrader") or {}).get("grade_id"),
        }
        for c in nb.cells
    ]
    return json.dumps(cells, sort_keys=True).encode()


def seal(nb: NotebookNode, key: bytes) -> None:
    nb.metadata[SEAL_METADATA] = {"seal": hmac.new(key, _sealed_content(nb), hashlib.sha256).hexdigest()}


def is_sealed(nb: NotebookNode, key: bytes) -> bool:
    stored = (nb.metadata.get(SEAL_METADATA) or {}).get("seal", "")
    expected = hmac.new(key, _sealed_content(nb), hashlib.sha256).hexdigest()
    return isinstance(stored, str) and hmac.compare_digest(stored, expected)


# --------------------------------------------------------------------------------------------------------------
# Stage 1: one notebook in a grading slot (runs in a worker process)
# --------------------------------------------------------------------------------------------------------------

_worker_slot: execute.Slot | None = None


def _init_worker(slots, plan: sandbox.Plan, state: str, threads: int, extra_env: dict) -> None:
    global _worker_slot
    import torch

    torch.set_num_threads(threads)  # the judge's share of the cores, like its kernel's
    index = slots.get()
    root = Path(state) / "slots" / str(index)
    root.mkdir(parents=True, exist_ok=True)
    _worker_slot = execute.Slot(index, root, plan, threads, extra_env)


def _run_one(task: dict) -> dict:
    """Execute one prepared notebook and save it, sealed (stage 1). Returns notes and what the box achieved."""
    from .judge import Judge

    start = time.perf_counter()
    nb = nbformat.reads(task["notebook"], as_version=4)
    notes = list(task["notes"])
    status: dict = {}
    if task["run"]:
        judge = Judge(task["package"], timeout=task["timeout"], slot=_worker_slot)
        kernel = execute.Kernel(_worker_slot, task["files"])
        try:
            judge.prepare(nb)
            notes += execute.run_notebook(nb, kernel, judge, timeout=task["timeout"])
        finally:
            kernel.close()
            judge.close()
        status = kernel.status
        notes += [f"grading problem: {p}" for p in judge.problems]
        notes += suspicious_code(nb) + reached_for_hidden(nb)
    drop_stderr_from_tests(nb)
    _finish(nb, notes)
    nb.metadata.setdefault(SEAL_METADATA, {})
    seal(nb, bytes.fromhex(task["key"]))
    nb.metadata[SEAL_METADATA]["input"] = task["input"]
    nb.metadata[SEAL_METADATA]["notes"] = notes
    target = Path(task["target"])
    temporary = target.with_suffix(".partial")
    nbformat.write(nb, temporary)
    os.replace(temporary, target)
    return {"student": task["student"], "notes": notes, "box": status, "seconds": time.perf_counter() - start}


def _input_digest(nb: NotebookNode, release: bytes, settings: dict) -> str:
    """What a saved executed notebook was made from: the prepared notebook, the release, the course's checks and
    answers, and the grading settings. A saved notebook is reused only if this is unchanged."""
    digest = hashlib.sha256()
    digest.update(nbformat.writes(nb).encode())
    digest.update(release)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    package = Path(settings["package_dir"]) / settings["package"]
    for name in ("checks.py", "reference.py"):
        path = package / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Stage 2: nbgrader in the course directory
# --------------------------------------------------------------------------------------------------------------


def folder_settings(out_dir: Path, policy: dict | None = None) -> dict[str, dict]:
    """:data:`NBGRADER_SETTINGS` plus what belongs to this grading folder: the seal key, the rubric, the late
    penalty and the exchange (``policy``, as saved by :func:`grade`)."""
    policy = policy or {}
    settings = copy.deepcopy(NBGRADER_SETTINGS)
    settings["RequireGraded"] = {"key_file": str(out_dir / STATE_DIR / SEAL_KEY)}
    settings["MarkSchemes"] = {"rubric_dir": str(out_dir / "rubric")}
    penalty = policy.get("late_penalty") or "none"
    if penalty in ("none", "zero"):
        settings["AssignLatePenalties"] = {"plugin_class": "nbgrader.plugins.LateSubmissionPlugin"}
        settings["LateSubmissionPlugin"] = {"penalty_method": penalty}
    else:
        settings["AssignLatePenalties"] = {"plugin_class": "mechinterp_course.instructor.lms.PercentPerDay"}
        settings["PercentPerDay"] = {"percent": lms.percent_per_day(penalty)}
    if policy.get("exchange"):
        settings["Exchange"] = {"root": policy["exchange"]}
        settings["CourseDirectory"] = {"course_id": policy.get("course_id") or "course"}
    return settings


def stage2_config(out_dir: Path, policy: dict | None = None):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(out_dir)
    for section, values in folder_settings(out_dir, policy).items():
        for name, value in values.items():
            setattr(getattr(config, section), name, copy.deepcopy(value))
    return config


def _write_nbgrader_config(out_dir: Path, policy: dict | None = None) -> None:
    lines = [
        '"""nbgrader configuration written by `mechinterp-course grade` (mechinterp_course.instructor.grade).',
        "",
        "The notebooks in submitted/ were executed and their checks judged by `mechinterp-course grade`, in a",
        "sandbox; autograde scores their recorded outputs and never runs student code here. A notebook that",
        "`mechinterp-course grade` did not execute (no valid seal) is refused, with a message saying what to",
        "run. Feedback hides hidden tests and shortens tracebacks; the formgrader and the feedback draw plotly",
        "figures, and the formgrader shows each written answer's mark scheme (rubric/). Late penalties and the",
        "exchange are the ones the last `grade` run was given.",
        '"""',
        "",
        "c = get_config()  # noqa: F821",
        "",
    ]
    for section, values in folder_settings(out_dir, policy).items():
        for name, value in values.items():
            lines.append(f"c.{section}.{name} = {value!r}")
    (out_dir / "nbgrader_config.py").write_text("\n".join(lines) + "\n")


def run_converter(converter_class, config, chapter: str, student_id: str) -> str:
    """Run one nbgrader converter for one student; returns "" or the reason it failed."""
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = chapter
    coursedir.student_id = student_id
    converter = converter_class(coursedir=coursedir, config=config, log=nbgrader_logger())
    converter.force = True
    with captured_nbgrader_log() as lines, nbgrader_environment(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy "not in session" warnings
        try:
            converter.start()
        except Exception as error:  # noqa: BLE001 - reported per student; the batch goes on
            return last_error(lines) or f"{type(error).__name__}: {error}"
    return ""


def _read_scores(result: StudentResult, db_url: str, chapter: str) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        try:
            submission = gradebook.find_submission(chapter, result.student_id)
        except MissingEntry:
            return
        result.auto_score, result.max_auto_score = submission.code_score, submission.max_code_score
        result.late_penalty = sum(nb.late_submission_penalty or 0 for nb in submission.notebooks)
        result.score, result.max_score = submission.score - result.late_penalty, submission.max_score
        result.needs_manual_grade = bool(submission.needs_manual_grade)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                result.cell_scores[grade.name] = (grade.score, grade.max_score)


def _export_csv(db_url: str, chapter: str, path: Path) -> None:
    """``nbgrader export`` (its CSV plugin) for this chapter, rows sorted by student id so reruns are identical."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins import CsvExportPlugin

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        CsvExportPlugin(to=str(path), assignment=[chapter], log=nbgrader_logger()).export(gradebook)
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *sorted(rows, key=lambda r: r.split(",")[3])]) + "\n")


PROBLEM_COLUMNS = [
    "student_id",
    "name",
    "file",
    "submitted",
    "hours_late",
    "late_penalty",
    "auto_score",
    "max_auto_score",
    "score",
    "max_score",
    "needs_manual_grade",
    "problems",
]


def _write_problems_csv(report: GradeReport, db_url: str, unmatched, known: dict[str, dict]) -> None:
    """problems.csv: every student graded into this folder (this run's rows replace their earlier ones; scores
    read afresh from the gradebook, so manual grades show), then every file no student could be given."""
    from nbgrader.api import Gradebook, MissingEntry

    earlier: dict[str, dict] = {}
    if report.problems_csv.is_file():
        for row in csv.DictReader(report.problems_csv.read_text().splitlines()):
            earlier[row.get("student_id") or f"file:{row.get('file')}"] = row
    for r in report.students:
        earlier[r.student_id] = {
            "student_id": r.student_id,
            "file": known.get(r.student_id, {}).get("file", ""),
            "problems": " | ".join(r.problems),
        }
    for file, reason in unmatched:
        earlier[f"file:{file}"] = {"student_id": "", "file": file, "problems": reason}
    rows = []
    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        for _, row in sorted(earlier.items(), key=lambda item: (item[0].startswith("file:"), item[0])):
            out = dict.fromkeys(PROBLEM_COLUMNS, "")
            out.update({k: v for k, v in row.items() if k in ("student_id", "file", "problems")})
            if row.get("student_id"):
                try:
                    sub = gradebook.find_submission(report.chapter, row["student_id"])
                except MissingEntry:
                    continue
                penalty = sum(nb.late_submission_penalty or 0 for nb in sub.notebooks)
                student = sub.student
                out.update(
                    name=" ".join(n for n in (student.first_name, student.last_name) if n),
                    submitted=f"{sub.timestamp:%Y-%m-%d %H:%M:%S} UTC" if sub.timestamp else "",
                    hours_late=f"{sub.total_seconds_late / 3600:.2f}" if sub.total_seconds_late else "",
                    late_penalty=f"{penalty:g}" if penalty else "",
                    auto_score=f"{sub.code_score:g}",
                    max_auto_score=f"{sub.max_code_score:g}",
                    score=f"{sub.score - penalty:g}",
                    max_score=f"{sub.max_score:g}",
                    needs_manual_grade="yes" if sub.needs_manual_grade else "no",
                )
            rows.append([out[c] for c in PROBLEM_COLUMNS])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROBLEM_COLUMNS)
    writer.writerows(rows)
    report.problems_csv.write_text(buffer.getvalue())


STUDENTS_FILE = "students.json"


def _known_students(out: Path) -> dict[str, dict]:
    path = out / STATE_DIR / STUDENTS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _remember_students(out: Path, submissions) -> dict[str, dict]:
    """What each run learnt about its students (the file graded, their names in Canvas's and Moodle's downloads),
    merged with earlier runs into ``.grading/students.json``: the LMS files cover the whole class, not one run."""
    path = out / STATE_DIR / STUDENTS_FILE
    known = _known_students(out)
    for sub in submissions:
        entry = known.setdefault(sub.student_id, {})
        entry["file"] = str(sub.origin) if sub.path is not None else ""
        if sub.canvas:
            entry["canvas"] = list(sub.canvas)
        if sub.moodle:
            entry["moodle"] = list(sub.moodle)
    path.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return known


def _write_outputs(report: GradeReport, db_url: str, known: dict[str, dict]) -> None:
    """scores_by_question.csv and the LMS files (:mod:`.outputs`), for every student in the gradebook."""
    from nbgrader.api import Gradebook

    roster = {s.student_id: s for s in (_saved_roster(report.out_dir) or [])}
    records = [
        Submission(
            sid,
            None,
            entry.get("file", ""),
            student=roster.get(sid),
            canvas=tuple(entry["canvas"]) if entry.get("canvas") else None,
            moodle=tuple(entry["moodle"]) if entry.get("moodle") else None,
        )
        for sid, entry in known.items()
    ]
    rubric_path = report.out_dir / "rubric" / f"{report.chapter}.json"
    rubric_ids = {item["grade_id"] for item in json.loads(rubric_path.read_text())} if rubric_path.is_file() else set()

    def feedback_for(student_id: str) -> Path | None:
        path = report.out_dir / "feedback" / student_id / report.chapter / f"{report.chapter}.html"
        return path if path.is_file() else None

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        outputs.scores_by_question(gradebook, report.chapter, report.out_dir / "scores_by_question.csv", rubric_ids)
        report.warnings += outputs.lms_uploads(gradebook, report.chapter, report.out_dir, records, feedback_for)


# --------------------------------------------------------------------------------------------------------------
# The whole batch
# --------------------------------------------------------------------------------------------------------------


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def grade(
    chapter: str,
    paths: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    timeout: float = DEFAULT_TIMEOUT_S,
    course_dir: str | os.PathLike | None = None,
    progress=None,
    jobs: int | None = None,
    limits: sandbox.Limits | None = None,
    roster: str | os.PathLike | None = None,
    due: str | None = None,
    late_penalty: str | None = None,
    timestamps: str | os.PathLike | None = None,
    timezone: str | None = None,
    exchange: str | os.PathLike | None = None,
    course_id: str | None = None,
) -> GradeReport:
    """Grade every submission under ``paths`` for ``chapter`` into ``out_dir`` (module docstring). ``jobs``
    notebooks run at once (default: the number of cores); ``limits`` bound student code (:class:`Limits`).
    ``progress`` is an optional callable given one line of text per step. Raises :class:`CourseError` for bad
    input; never for a bad submission. Grading the same batch into the same ``out_dir`` again re-runs only what is
    missing or changed and gives the same gradebook (manual grades are kept).

    Class options (:mod:`.lms`): ``roster`` (a CSV), ``due`` (a date and time, read in ``timezone``, default the
    machine's), ``late_penalty`` (``none``, ``zero`` or ``N%/day``), ``timestamps`` (a CSV of submission times),
    ``exchange`` and ``course_id`` (nbgrader's exchange, for ``nbgrader release_feedback``). Options not given are
    the ones the last run into ``out_dir`` was given, so grading one late file later changes nothing else."""
    say = progress or (lambda text: None)
    if not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise CourseError(f"The timeout must be a positive number of seconds, not {timeout!r}.")
    cores = os.cpu_count() or 1
    jobs = cores if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise CourseError(f"--jobs must be a whole number of at least 1, not {jobs!r}.")
    root = find_course_dir(course_dir)
    chapter = resolve_chapter(chapter, root)
    package = short_name(chapter)
    if not (_package_dir() / package / "checks.py").is_file():
        raise CourseError(
            f"Chapter {chapter} has no checks (mechinterp_course/{package}/checks.py): it cannot be graded."
        )
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out_dir}: exists and is not a folder.")
    if out == root or root.is_relative_to(out):
        raise CourseError(f"{out_dir} is the course directory or above it: choose a folder for the grading files.")
    lms.check_paths(paths, chapter)
    for raw in paths:
        if Path(raw).resolve().is_relative_to(out / "submitted"):
            raise CourseError(f"{raw} is inside {out_dir}/submitted, which grading rewrites: grade from a copy.")
    policy = _policy(out, roster, due, late_penalty, timezone, exchange, course_id)
    zone = lms.timezone(policy.get("timezone"))
    due_utc = lms.parse_time(policy["due"], zone) if policy.get("due") else None
    class_list = lms.read_roster(roster, due_utc, zone) if roster else _saved_roster(out)
    times = lms.read_timestamps(timestamps, zone) if timestamps else None
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # every student's work is in here
    state = out / STATE_DIR
    (state / "executed").mkdir(parents=True, exist_ok=True)

    say(f"Preparing {chapter} in {out}")
    release_dir = generate_release(root, chapter, out)
    release_bytes = (release_dir / f"{chapter}.ipynb").read_bytes()
    release = nbformat.reads(release_bytes.decode(), as_version=4)
    releases = {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "chapters").glob("*/*.ipynb"))}
    releases[chapter] = json.loads(release_bytes.decode())
    collected = lms.collect(paths, chapter, state / "downloads", releases, class_list, times, zone)
    # A roster student missing from this download but graded in an earlier run keeps that grade and its notes:
    # grading one late file must not turn the rest of the class into "no submission".
    earlier = _known_students(out)
    submissions = [
        sub
        for sub in collected.submissions
        if not (sub.path is None and sub.problems == ["no submission"] and sub.student_id in earlier)
    ]
    for sub in submissions:
        sub.problems += lms.lateness_notes(sub, due_utc, policy.get("late_penalty") or "none")
    db_url = f"sqlite:///{out / GRADEBOOK}"
    key = _seal_key(out)
    (state / "policy.json").write_text(json.dumps(policy, indent=1, sort_keys=True) + "\n")
    _write_nbgrader_config(out, policy)
    outputs.write_rubric(nbformat.read(out / "source" / chapter / f"{chapter}.ipynb", as_version=4), chapter, out)
    _register_students(db_url, chapter, submissions, due_utc, class_list)
    _save_roster(out, class_list)
    warnings_: list[str] = []
    committed = root / "chapters" / chapter / f"{chapter}.ipynb"
    if committed.is_file() and committed.read_bytes() != release_bytes:
        warnings_.append(
            f"{committed} differs from a fresh build of solutions/{chapter}: students may have a "
            f"different notebook from the one graded against (run `mechinterp-course build`)"
        )

    # Stage 1a: read, repair, sanitise (no student code runs here).
    files = {p.name: str(p) for p in release_dir.iterdir() if p.is_file() and p.suffix != ".ipynb"}
    limits = limits or sandbox.Limits()
    settings = {
        "timeout": float(timeout),
        "limits": limits.__dict__,
        "package": package,
        "package_dir": str(_package_dir()),
    }
    tasks, reused = [], []
    for sub in submissions:
        notes = list(sub.problems)
        run = True
        if sub.path is None:
            nb, run = _empty_submission(release, f"no notebook of {chapter} was submitted"), False
        else:
            try:
                nb = read_submission(sub.path)
            except (ValueError, OSError) as error:
                notes.append(f"{sub.path.name} could not be read ({error}); graded as an empty notebook")
                nb, run = _empty_submission(release, "the submitted file could not be read"), False
            else:
                notes += repair_notebook(nb, release)
                try:
                    nb = sanitise(nb, chapter, db_url)
                except Exception as error:  # noqa: BLE001 - a broken notebook is graded as empty, with the reason
                    notes.append(
                        f"nbgrader could not check the notebook's cells ({error}); graded as an empty notebook"
                    )
                    nb, run = _empty_submission(release, "the notebook's nbgrader metadata could not be checked"), False
        digest = _input_digest(nb, release_bytes, dict(settings, notes=notes, run=run))
        target = state / "executed" / f"{sub.student_id}.ipynb"
        if target.is_file():
            try:
                saved = nbformat.read(target, as_version=4)
                if (saved.metadata.get(SEAL_METADATA) or {}).get("input") == digest and is_sealed(saved, key):
                    reused.append(sub.student_id)
                    continue
            except Exception:  # noqa: BLE001 - an unreadable saved notebook is simply run again
                pass
        tasks.append(
            {
                "student": sub.student_id,
                "notebook": nbformat.writes(nb),
                "notes": notes,
                "run": run,
                "input": digest,
                "target": str(target),
                "key": key.hex(),
                "timeout": timeout,
                "package": package,
                "files": files,
            }
        )

    # Stage 1b, run student code, jobs at a time, each notebook saved (sealed) as soon as it is done; and stage 2,
    # nbgrader autograde (scores the recorded outputs) and feedback, for each student as soon as their notebook is
    # saved (while the other notebooks run). Without the sandbox's own user (not root) student code could reach the
    # gradebook: stage 2 then waits for the batch, and a gradebook changed meanwhile is restored.
    config = stage2_config(out, policy)
    by_student: dict[str, StudentResult] = {}
    submission_of = {sub.student_id: sub for sub in submissions}
    interleave = os.geteuid() == 0

    def stage2(student: str) -> None:
        by_student[student] = _stage2_one(submission_of[student], out, chapter, config, db_url)

    boxes: list[dict] = []
    if reused:
        say(f"Reusing {len(reused)} notebook(s) already executed with the same inputs")
        for student in reused:
            stage2(student)
    finished: list[str] = []
    if tasks:
        plan = sandbox.Plan(
            course_root=str(root),
            package_dir=str(_package_dir()),
            hide=[str(out), *{str(Path(p).resolve()) for p in paths}],
            stub_dir=str(state / "stubs"),
            limits=limits,
        )
        threads = max(1, cores // min(jobs, len(tasks)))
        gradebook_path = out / GRADEBOOK
        snapshot = gradebook_path.read_bytes()
        context = multiprocessing.get_context("spawn")
        slots = context.Queue()
        workers = min(jobs, len(tasks))
        for index in range(workers):
            slots.put(index)
        started = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(slots, plan, str(state), threads, _passthrough_env()),
        ) as pool:
            futures = {pool.submit(_run_one, task): task for task in tasks}
            for future in concurrent.futures.as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                    boxes.append(result["box"])
                    what = f"{result['seconds']:.0f} s"
                except Exception as error:  # noqa: BLE001 - a worker that crashed: the student is graded empty
                    message = f"{type(error).__name__}: {error}".splitlines()[0]
                    nb = _empty_submission(release, "grading this notebook failed")
                    notes = [*task["notes"], f"grading problem, not the student's: {message}; regrade this student"]
                    _finish(nb, notes)
                    seal(nb, key)
                    nb.metadata[SEAL_METADATA]["notes"] = notes
                    nbformat.write(nb, task["target"])
                    what = "failed"
                finished.append(task["student"])
                if interleave:
                    stage2(task["student"])
                done = len(finished)
                left = (len(tasks) - done) * (time.perf_counter() - started) / done
                say(f"[{done}/{len(tasks)}] {task['student']} ({what}); about {left:.0f} s left")
        if not gradebook_path.is_file() or (not interleave and gradebook_path.read_bytes() != snapshot):
            gradebook_path.write_bytes(snapshot)
            warnings_.append(f"{gradebook_path} was changed while student code ran; it was restored")
    for student in finished:
        if student not in by_student:
            stage2(student)

    protections, missing = _box_summary(boxes)
    if boxes and missing:
        warnings_.append("student code ran with protections missing: " + "; ".join(missing))
    results = [by_student[sub.student_id] for sub in submissions]

    report = GradeReport(
        chapter,
        out,
        out / GRADEBOOK,
        out / GRADES_CSV,
        out / PROBLEMS_CSV,
        results,
        warnings_,
        protections=protections,
        missing_protections=missing,
        uids=sorted({box["uid"] for box in boxes if isinstance(box, dict) and box.get("uid") is not None}),
    )
    _export_csv(db_url, chapter, report.grades_csv)
    known = _remember_students(out, submissions)
    _write_problems_csv(report, db_url, collected.unmatched, known)
    _write_outputs(report, db_url, known)
    return report


def _stage2_one(sub: Submission, out: Path, chapter: str, config, db_url: str) -> StudentResult:
    """nbgrader autograde and feedback for one student whose executed notebook is saved; their result.

    The submission time goes in ``timestamp.txt`` (nbgrader reads it there) and an extension on the gradebook's
    submission, before autograde, so nbgrader's late-submission plugin sees both. Written answers that a grader
    already graded and whose text did not change stay graded: nbgrader's autograde marks every manually scored cell
    "needs manual grading" again, which would send the grader back through the whole class after any regrade."""
    from nbgrader.converters import Autograde, GenerateFeedback

    executed = nbformat.read(out / STATE_DIR / "executed" / f"{sub.student_id}.ipynb", as_version=4)
    notes = list((executed.metadata.get(SEAL_METADATA) or {}).get("notes") or [])
    result = StudentResult(sub.student_id, sub.path, problems=notes)
    folder = out / "submitted" / sub.student_id / chapter
    graded_before = _manual_state(db_url, chapter, sub.student_id, folder / f"{chapter}.ipynb")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    nbformat.write(executed, folder / f"{chapter}.ipynb")
    for name, path in sub.extra.items():  # an nbgrader tree's submission_secret.txt (for release_feedback)
        if name != "timestamp.txt":
            shutil.copyfile(path, folder / name)
    if sub.timestamp is not None:
        (folder / "timestamp.txt").write_text(f"{sub.timestamp.isoformat(sep=' ')} UTC\n")
    _set_extension(db_url, chapter, sub)
    failure = run_converter(Autograde, config, chapter, sub.student_id)
    if failure:
        result.problems.append(f"grading problem: nbgrader autograde failed ({failure})")
    else:
        result.problems += _restore_manual_state(db_url, chapter, sub.student_id, executed, graded_before)
        failure = run_converter(GenerateFeedback, config, chapter, sub.student_id)
        feedback = out / "feedback" / sub.student_id / chapter / f"{chapter}.html"
        if feedback.is_file() and not failure:
            result.feedback = feedback
        else:
            result.problems.append(f"grading problem: no feedback ({failure or 'nbgrader wrote none'})")
    _read_scores(result, db_url, chapter)
    return result


def _answer_digests(nb: NotebookNode) -> dict[str, str]:
    """grade id -> digest of the student's text, for every manually graded answer cell."""
    digests = {}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("grade") and meta.get("solution") or meta.get("task"):
            digests[meta["grade_id"]] = hashlib.sha256(cell.source.strip().encode()).hexdigest()
    return digests


def _manual_state(db_url: str, chapter: str, student_id: str, previous: Path) -> dict[str, str]:
    """The answers a grader has finished grading (manual score given, nothing pending): grade id -> the digest of
    the text that was graded (from the notebook of the previous run)."""
    from nbgrader.api import Gradebook, MissingEntry

    if not previous.is_file():
        return {}
    try:
        digests = _answer_digests(nbformat.read(previous, as_version=4))
    except Exception:  # noqa: BLE001 - no readable previous notebook: nothing to keep
        return {}
    graded = {}
    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        try:
            notebook = gradebook.find_submission_notebook(chapter, chapter, student_id)
        except MissingEntry:
            return {}
        for grade_ in notebook.grades:
            if grade_.name in digests and grade_.manual_score is not None and not grade_.needs_manual_grade:
                graded[grade_.name] = digests[grade_.name]
    return graded


def _restore_manual_state(db_url: str, chapter: str, student_id: str, nb: NotebookNode, graded: dict) -> list[str]:
    from nbgrader.api import Gradebook

    if not graded:
        return []
    now = _answer_digests(nb)
    changed = []
    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        notebook = gradebook.find_submission_notebook(chapter, chapter, student_id)
        for grade_ in notebook.grades:
            if grade_.name not in graded:
                continue
            if now.get(grade_.name) == graded[grade_.name]:
                grade_.needs_manual_grade = False
            else:
                changed.append(grade_.name)
        gradebook.db.commit()
    return [
        f"written answer {name} changed since it was graded: it needs grading again (its old score is kept until then)"
        for name in changed
    ]


def _set_extension(db_url: str, chapter: str, sub: Submission) -> None:
    """The roster's extension on this student's submission (nbgrader adds it to the due date)."""
    from nbgrader.api import Gradebook

    extension = sub.student.extension if sub.student else None
    with nbgrader_environment(), Gradebook(db_url) as gradebook, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy "not in session" warnings
        if sub.timestamp is not None:
            gradebook.update_or_create_submission(chapter, sub.student_id, timestamp=sub.timestamp)
        else:
            gradebook.update_or_create_submission(chapter, sub.student_id)
        record = gradebook.find_submission(chapter, sub.student_id)
        record.extension = extension
        if sub.timestamp is None:
            record.timestamp = None
        gradebook.db.commit()


def _register_students(db_url: str, chapter: str, submissions, due, roster) -> None:
    """Names, e-mails and LMS ids in the gradebook (nbgrader's export and the formgrader show them); the due date."""
    from nbgrader.api import Gradebook

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        for sub in submissions:
            student = sub.student
            if student is None:
                gradebook.update_or_create_student(sub.student_id)
                continue
            gradebook.update_or_create_student(
                sub.student_id,
                first_name=student.first_name or None,
                last_name=student.last_name or None,
                email=student.email or None,
                lms_user_id=student.lms_id or None,
            )
        assignment = gradebook.find_assignment(chapter)
        if due is not None or roster is not None:
            assignment.duedate = due
        gradebook.db.commit()


def _policy(out: Path, roster, due, late_penalty, zone, exchange, course_id) -> dict:
    """The class options of this run, falling back to those of the last run into ``out``."""
    saved = {}
    path = out / STATE_DIR / "policy.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = {}
    given = {
        "due": due,
        "late_penalty": lms.check_penalty(late_penalty) if late_penalty else None,
        "timezone": zone,
        "exchange": str(Path(exchange).resolve()) if exchange else None,
        "course_id": course_id,
    }
    if given["timezone"]:
        lms.timezone(given["timezone"])  # fails early on an unknown zone
    policy = {k: v if v is not None else saved.get(k) for k, v in given.items()}
    if policy["exchange"] and not Path(policy["exchange"]).is_dir():
        raise CourseError(f"--exchange {policy['exchange']}: no such folder (nbgrader's exchange must exist).")
    return policy


ROSTER_FILE = "roster.json"


def _save_roster(out: Path, roster) -> None:
    if roster is None:
        return
    rows = [dict(vars(s), extension=s.extension.total_seconds() if s.extension else None) for s in roster]
    for row in rows:
        row["due"] = row["due"].isoformat() if row.get("due") else None
    (out / STATE_DIR / ROSTER_FILE).write_text(json.dumps(rows, indent=1) + "\n")


def _saved_roster(out: Path):
    """The roster of an earlier run into ``out`` (so a late file graded alone is matched the same way)."""
    import datetime as dt

    path = out / STATE_DIR / ROSTER_FILE
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())
    for row in rows:
        row["extension"] = dt.timedelta(seconds=row["extension"]) if row.get("extension") is not None else None
        row["due"] = dt.datetime.fromisoformat(row["due"]) if row.get("due") else None
    return [lms.RosterStudent(**row) for row in rows]


def _passthrough_env() -> dict[str, str]:
    """Variables the kernels inherit from the grader's environment (the test suite's network guard)."""
    return {key: os.environ[key] for key in ("PYTHONPATH", "COURSE_NETWORK_LOG") if os.environ.get(key)}


def _box_summary(boxes: list[dict]) -> tuple[list[str], list[str]]:
    """The protections every box of the batch had, and what any box lacked (said once per batch)."""
    boxes = [b for b in boxes if b]
    if not boxes:
        return [], []
    weakest = min(boxes, key=lambda b: len(sandbox.report(b)))
    missing = sorted({line for b in boxes for line in sandbox.missing(b)})
    return sandbox.report(weakest), missing


# --------------------------------------------------------------------------------------------------------------
# nbgrader preprocessors (named in NBGRADER_SETTINGS)
# --------------------------------------------------------------------------------------------------------------

REFUSAL = (
    "this notebook was not executed by `mechinterp-course grade`: this folder is graded with "
    "`mechinterp-course grade CHAPTER SUBMISSIONS --out {out}`, which runs each notebook in a sandbox and "
    "judges its checks; nbgrader autograde here only scores notebooks that command executed (it never runs "
    "student code in the course folder)"
)


def _nbgrader_preprocessors():
    from nbgrader import utils
    from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
    from traitlets import List, Unicode

    def priority():
        """``display_data_priority``, configurable as in nbgrader's GetGrades: the feedback's HTMLExporter configures
        it for every preprocessor, and traitlets warns about a class (like nbgrader's base) where it is not."""
        return List(NbGraderPreprocessor.class_traits()["display_data_priority"].default(), config=True)

    class HideHiddenTests(ClearHiddenTests):
        """Remove ``### BEGIN/END HIDDEN TESTS`` regions from graded code cells before feedback is rendered.

        nbgrader 0.9.6's feedback shows the test cells as autograded, hidden tests included. Only graded cells are
        touched (they were restored from the course's source, so their markers are well formed); a student's own
        cell that happens to contain the marker text is left alone instead of failing the feedback.
        """

        display_data_priority = priority()

        def preprocess_cell(self, cell, resources, cell_index):
            if cell.cell_type == "code" and utils.is_grade(cell):
                try:
                    self._remove_hidden_test_region(cell)
                except RuntimeError:
                    cell.source = "# (test code hidden)"
            return cell, resources

    class ShortTracebacks(NbGraderPreprocessor):
        """Shrink error outputs of graded cells to ``ExceptionName: message``.

        An IPython traceback quotes the code around each frame, which for a test cell includes its hidden tests;
        the message is what the student needs (the course's checks put the whole diagnosis in it).
        """

        display_data_priority = priority()

        def preprocess_cell(self, cell, resources, cell_index):
            if cell.cell_type == "code" and utils.is_grade(cell):
                for output in cell.get("outputs", []):
                    if output.get("output_type") == "error":
                        output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
            return cell, resources

    class RequireGraded(NbGraderPreprocessor):
        """Refuse to autograde a notebook that ``mechinterp-course grade`` did not execute and seal.

        Execution is disabled in a grading folder (student code never runs there), so without this nbgrader's own
        ``autograde`` (or the formgrader's button) would score whatever outputs a notebook carries, or none.
        """

        key_file = Unicode("", config=True, help="the grading folder's seal key")
        display_data_priority = priority()

        def preprocess(self, nb, resources):
            out = Path(self.key_file).parents[1] if self.key_file else Path("GRADING_FOLDER")
            try:
                key = Path(self.key_file).read_bytes()
            except OSError:
                key = b""
            if not key or not is_sealed(nb, key):
                raise RuntimeError(REFUSAL.format(out=out))
            return nb, resources

    return HideHiddenTests, ShortTracebacks, RequireGraded


_PREPROCESSORS = ("HideHiddenTests", "ShortTracebacks", "RequireGraded")


def __getattr__(name: str):
    """The preprocessors are built on first use, so importing this module stays cheap (nbgrader's preprocessors
    pull in nbconvert); nbgrader finds them by these dotted names."""
    if name in _PREPROCESSORS:
        classes = dict(zip(_PREPROCESSORS, _nbgrader_preprocessors()))
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
