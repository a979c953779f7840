"""Round trip of the grader on a tiny fixture chapter (tests/fixtures/solutions/99_fixture), and its robustness.

One batch holds every kind of submission (right, blank, wrong, and each way of breaking a notebook) and is graded
once per test session: each test then checks one student. Kernels run this interpreter (see
``autograde._kernel_classes``), so the tests need no kernelspec set-up. A per-cell timeout of a few seconds keeps the
infinite loop cheap; the fixture's cells take milliseconds.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import nbformat
import pytest

from mechinterp_course import autograde, cli, notebooks
from mechinterp_course.notebooks import CourseError

FIXTURES = Path(__file__).parent / "fixtures"
CHAPTER = "99_fixture"
#: Per-cell limit for the tests: far above what a fixture cell needs, small enough that the infinite loop is cheap.
TIMEOUT_S = 8

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------------------------
# Submissions, made from the fixture's source and release notebooks
# --------------------------------------------------------------------------------------------------------------


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _solve(release, **answers):
    """The released notebook with its solution cells replaced (default: the right answers)."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    right = {
        "ex-add": "def add(a, b):\n    return a + b",
        "ex-squares": "def squares(n):\n    return [i * i for i in range(n)]",
        "ex-mean": "mean_value = sum(VALUES) / len(VALUES)",
        "answer-hidden": "Because hidden inputs cannot be special-cased.",
    }
    right.update(answers)
    for grade_id, source in right.items():
        _cell(nb, grade_id).source = source
    return nb


def _submissions(course: Path, folder: Path, out_dir: Path) -> None:
    source = nbformat.read(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    subs = {}

    solution = nbformat.from_dict(json.loads(json.dumps(source)))
    solution.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL', sys.executable)"))
    subs["solution"] = solution
    subs["blank"] = release
    subs["wrong"] = _solve(release, **{"ex-add": "def add(a, b):\n    return a - b"})
    subs["hiddenfail"] = _solve(release, **{"ex-add": "def add(a, b):\n    return abs(a) + abs(b)"})
    subs["warning"] = _solve(release, **{"ex-add": (
        "import sys, warnings\n\ndef add(a, b):\n    print('debugging add', file=sys.stderr)\n"
        "    warnings.warn('a harmless warning')\n    return a + b")})
    subs["loop"] = _solve(release, **{"ex-squares": "while True:\n    pass"})
    subs["crash"] = _solve(release, **{"ex-squares": "import os\nos._exit(1)"})

    deleted = _solve(release)
    deleted.cells.remove(_cell(deleted, "test-squares"))
    subs["deleted"] = deleted

    edited = _solve(release, **{"ex-add": "def add(a, b):\n    return a - b"})
    _cell(edited, "test-add").source = "pass  # tests? what tests?"
    subs["edited"] = edited

    colab = _solve(release)
    for k, cell in enumerate(colab.cells):  # Colab re-created every cell: no nbgrader metadata, fresh ids
        cell.metadata = {}
        cell.id = f"colab{k:04d}"
    subs["colab"] = colab

    gradebook = out_dir / "gradebook.db"
    subs["hostile"] = _solve(release, **{"ex-add": (
        "import glob, os, shutil\n"
        "def attempt(action, *args):\n"
        "    try:\n"
        "        action(*args)\n"
        "    except Exception as error:\n"
        "        print('failed:', error)\n"
        "def overwrite(path):\n"
        "    open(path, 'wb').write(b'garbage')\n"
        f"for path in ['gradebook.db', '../gradebook.db', {str(gradebook)!r}] + glob.glob('../*'):\n"
        "    attempt(overwrite, path)\n"
        f"attempt(os.remove, {str(gradebook)!r})\n"
        "for path in glob.glob('../*') + glob.glob('*'):\n"
        "    attempt(shutil.rmtree if os.path.isdir(path) else os.remove, path)\n"
        "def add(a, b):\n    return a + b")})

    folder.mkdir(parents=True)
    for name, nb in subs.items():
        nbformat.write(nb, folder / f"{name}_{CHAPTER}.ipynb")
    (folder / f"badjson_{CHAPTER}.ipynb").write_text('{"cells": [ this is not JSON')


def _course(tmp: Path) -> Path:
    course = tmp / "course"
    shutil.copytree(FIXTURES / "solutions", course / "solutions")
    notebooks.build(course_dir=course)
    return course


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grade")
    course = _course(tmp)
    out = tmp / "out"
    _submissions(course, tmp / "downloads", out)
    report = autograde.grade("fixture", [tmp / "downloads"], out, timeout=TIMEOUT_S, course_dir=course)
    return report


AUTOGRADED = ("test-add", "test-squares", "test-mean")


def _auto(result):
    return {k: result.cell_scores[k][0] for k in AUTOGRADED}


def _feedback(result) -> str:
    return result.feedback.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# The round trip
# --------------------------------------------------------------------------------------------------------------


def test_every_submission_is_graded_with_feedback_and_csvs(batch):
    ids = [r.student_id for r in batch.students]
    assert ids == sorted(["solution", "blank", "wrong", "hiddenfail", "warning", "loop", "crash", "deleted",
                          "edited", "colab", "hostile", "badjson"])
    assert all(r.feedback and r.feedback.is_file() for r in batch.students), [r.problems for r in batch.students]
    assert all(r.feedback == batch.out_dir / "feedback" / r.student_id / CHAPTER / f"{CHAPTER}.html"
               for r in batch.students)
    rows = batch.grades_csv.read_text().splitlines()
    assert rows[0].startswith("assignment,duedate,timestamp,student_id")
    assert [row.split(",")[3] for row in rows[1:]] == ids
    problems = batch.problems_csv.read_text()
    assert "student_id,file,auto_score" in problems.splitlines()[0]
    assert (batch.out_dir / "nbgrader_config.py").is_file()


def test_solution_gets_full_marks_in_a_kernel_running_this_interpreter(batch):
    result = batch["solution"]
    assert _auto(result) == {"test-add": 1, "test-squares": 2, "test-mean": 1}
    assert (result.auto_score, result.max_auto_score) == (4, 4)
    assert result.needs_manual_grade  # the written answer waits for the formgrader
    executed = nbformat.read(batch.out_dir / "submitted" / "solution" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"KERNEL {sys.executable}" in printed


def test_blank_release_scores_zero_on_every_autograded_cell(batch):
    result = batch["blank"]
    assert _auto(result) == {"test-add": 0, "test-squares": 0, "test-mean": 0}
    assert result.cell_scores["answer-hidden"][0] == 0  # unchanged answer cell: "No response"
    assert not result.needs_manual_grade


def test_wrong_answer_gets_partial_marks_and_sees_the_assertion(batch):
    result = batch["wrong"]
    assert _auto(result) == {"test-add": 0, "test-squares": 2, "test-mean": 1}
    assert "add(2, 3) should be 5, got -1" in _feedback(result)


def test_hidden_tests_count_but_never_show_in_feedback(batch):
    result = batch["hiddenfail"]
    assert _auto(result)["test-add"] == 0
    html = _feedback(result)
    assert "AssertionError: add is wrong on a hidden case" in html
    for r in batch.students:
        html = _feedback(r)
        assert "HIDDEN_CASES" not in html and "HIDDEN TESTS" not in html, r.student_id


def test_a_warning_on_stderr_in_a_test_cell_costs_nothing(batch):
    assert _auto(batch["warning"]) == {"test-add": 1, "test-squares": 2, "test-mean": 1}


def test_infinite_loop_is_stopped_and_the_rest_still_graded(batch):
    result = batch["loop"]
    assert _auto(result) == {"test-add": 1, "test-squares": 0, "test-mean": 1}
    assert any("was stopped" in p for p in result.problems)
    assert "was stopped" in _feedback(result)


def test_a_cell_that_kills_the_kernel_costs_only_what_depends_on_it(batch):
    result = batch["crash"]
    # test-mean comes after the crash and needs VALUES from the setup cell: the restarted kernel replayed it.
    assert _auto(result) == {"test-add": 1, "test-squares": 0, "test-mean": 1}
    assert any("kernel died" in p for p in result.problems)
    assert "kernel died" in _feedback(result)


def test_deleted_test_cell_scores_zero_with_a_reason(batch):
    result = batch["deleted"]
    assert _auto(result) == {"test-add": 1, "test-squares": 0, "test-mean": 1}
    assert any("test-squares was deleted" in p for p in result.problems)
    assert "test-squares was deleted" in _feedback(result)


def test_edited_test_cell_is_restored_before_it_runs(batch):
    result = batch["edited"]
    assert _auto(result) == {"test-add": 0, "test-squares": 2, "test-mean": 1}
    assert any("test-add had been edited" in p for p in result.problems)


def test_invalid_json_scores_zero_with_a_reason(batch):
    result = batch["badjson"]
    assert _auto(result) == {"test-add": 0, "test-squares": 0, "test-mean": 0}
    assert any("could not be read" in p and "JSON" in p for p in result.problems)
    assert "could not be read" in _feedback(result)
    assert "badjson" in batch.problems_csv.read_text()


def test_cells_that_lost_their_metadata_in_colab_are_repaired(batch):
    result = batch["colab"]
    assert _auto(result) == {"test-add": 1, "test-squares": 2, "test-mean": 1}
    assert any("lost their nbgrader metadata" in p for p in result.problems)


def test_hostile_code_cannot_touch_the_gradebook_or_other_students(batch):
    assert _auto(batch["hostile"]) == {"test-add": 1, "test-squares": 2, "test-mean": 1}
    assert any("hostile" in w for w in batch.warnings)
    with sqlite3.connect(batch.gradebook) as db:  # a real gradebook, with every student in it
        students = {row[0] for row in db.execute("select id from student")}
    assert students == {r.student_id for r in batch.students}
    assert _auto(batch["solution"]) == {"test-add": 1, "test-squares": 2, "test-mean": 1}


# --------------------------------------------------------------------------------------------------------------
# An nbgrader submitted/ tree, graded twice
# --------------------------------------------------------------------------------------------------------------


def _grade_rows(gradebook: Path) -> list[tuple]:
    """Every grade in the gradebook, with its student: the same rows after a regrade means idempotent."""
    query = ("select sa.student_id, c.name, g.auto_score, g.manual_score, g.needs_manual_grade from grade g "
             "join base_cell c on g.cell_id = c.id join submitted_notebook sn on g.notebook_id = sn.id "
             "join submitted_assignment sa on sn.assignment_id = sa.id order by sa.student_id, c.name")
    with sqlite3.connect(gradebook) as db:
        return db.execute(query).fetchall()


def test_submitted_tree_wrong_file_name_and_regrading_is_idempotent(tmp_path, capsys):
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    tree = tmp_path / "class" / "submitted"
    for student, name, nb in [("ann", "foo.ipynb", _solve(release)), ("ben", f"{CHAPTER}.ipynb", release),
                              ("cy", "a.ipynb", release), ("cy", "b.ipynb", release)]:
        (tree / student / CHAPTER).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, tree / student / CHAPTER / name)
    out = tmp_path / "out"

    first = autograde.grade(CHAPTER, [tmp_path / "class"], out, timeout=TIMEOUT_S, course_dir=course)
    assert _auto(first["ann"]) == {"test-add": 1, "test-squares": 2, "test-mean": 1}
    assert any("named foo.ipynb" in p for p in first["ann"].problems)
    assert first["ben"].auto_score == 0 and first["cy"].auto_score == 0
    assert any("could not tell which to grade" in p for p in first["cy"].problems)
    csv_first, problems_first = first.grades_csv.read_text(), first.problems_csv.read_text()
    grades_first = _grade_rows(first.gradebook)

    # The same batch again, from the command line (a fractional timeout is rounded up to whole seconds).
    argv = ["--course-dir", str(course), "grade", CHAPTER, str(tmp_path / "class"), "--out", str(out),
            "--timeout", f"{TIMEOUT_S - 0.5}"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ann" in printed and "4/4" in printed and "grades.csv" in printed
    assert first.grades_csv.read_text() == csv_first and first.problems_csv.read_text() == problems_first
    assert _grade_rows(first.gradebook) == grades_first
    with sqlite3.connect(first.gradebook) as db:
        assert sorted(row[0] for row in db.execute("select id from student")) == ["ann", "ben", "cy"]
        assert db.execute("select count(*) from submitted_assignment").fetchone()[0] == 3

    with Gradebook(f"sqlite:///{first.gradebook}") as gb:  # a grader marks ann's written answer in the formgrader
        gb.find_grade("answer-hidden", CHAPTER, CHAPTER, "ann").manual_score = 2
        gb.db.commit()
    third = autograde.grade(CHAPTER, [tree / "ann"], out, timeout=TIMEOUT_S, course_dir=course)
    assert third["ann"].cell_scores["answer-hidden"][0] == 2  # a regrade keeps manual grades
    assert third["ann"].score == 6


# --------------------------------------------------------------------------------------------------------------
# Input handling (no kernels)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename, expected", [
    ("smith_john_12345_67890_01_circuits.ipynb", "smith_john_12345_67890"),
    ("smithjohn_late_12345_67890_circuits.ipynb", "smithjohn_late_12345_67890"),
    ("Jane Doe - 01_circuits (1).ipynb", "Jane_Doe_1"),
    ("01_circuits.ipynb", "01_circuits"),
    ("circuitsfan_42.ipynb", "circuitsfan_42"),
    ("***.ipynb", "student"),
])
def test_student_id_from_filename(filename, expected):
    assert autograde.student_id_from_filename(filename, "01_circuits") == expected


def test_repair_restores_metadata_by_source_and_position(tmp_path):
    course = _course(tmp_path)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    nb = _solve(release)
    for k, cell in enumerate(nb.cells):
        cell.metadata, cell.id = {}, f"new{k}"
    nb.cells.insert(4, nbformat.v4.new_code_cell("print('my own scratch cell')"))
    notes = autograde.repair_notebook(nb, release)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    assert ids == [c.metadata["nbgrader"]["grade_id"] for c in release.cells[:4]] + [None] + [
        c.metadata["nbgrader"]["grade_id"] for c in release.cells[4:]]
    assert _cell(nb, "ex-add").source == "def add(a, b):\n    return a + b"  # the student's answer is kept
    assert notes and "lost their nbgrader metadata" in notes[0]


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    course = _course(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match=r"Unknown chapter 'nope'.*99_fixture \(fixture\)"):
        autograde.grade("nope", [tmp_path], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="no such file or folder"):
        autograde.grade(CHAPTER, [tmp_path / "missing"], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="no notebooks found"):
        autograde.grade(CHAPTER, [tmp_path / "empty"], tmp_path / "out", course_dir=course)
    assert not (tmp_path / "out").exists()

    for argv, message in [(["grade", "nope", str(tmp_path / "empty")], "Unknown chapter"),
                          (["grade", CHAPTER, str(tmp_path / "missing")], "no such file or folder"),
                          (["grade", CHAPTER, str(tmp_path / "empty")], "no notebooks found")]:
        assert cli.main(["--course-dir", str(course), *argv]) == cli.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
