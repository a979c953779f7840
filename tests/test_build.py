"""The student notebooks are built from the single source by nbgrader, deterministically, with nothing left over;
the committed chapters/ equal a fresh build; the command line reports bad input clearly.

Built into temporary copies of the fixture chapter (tests/fixtures/solutions/99_fixture), except the sync test,
which checks the repository's own chapters/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from mechinterp_course import cli, notebooks
from mechinterp_course.notebooks import CourseError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CHAPTER = "99_fixture"


@pytest.fixture
def course(tmp_path) -> Path:
    root = tmp_path / "course"
    shutil.copytree(FIXTURES / "solutions", root / "solutions")
    return root


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_build_writes_the_student_notebook_and_nothing_else(course):
    written = notebooks.build(course_dir=course)
    assert written == [course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"]
    assert _files(course) == [f"chapters/{CHAPTER}/{CHAPTER}.ipynb", f"solutions/{CHAPTER}/{CHAPTER}.ipynb"]

    nb = nbformat.read(written[0], as_version=4)
    text = written[0].read_text()
    assert "BEGIN SOLUTION" not in text and "return a + b" not in text and "YOUR CODE HERE" in text
    assert "HIDDEN" not in text and "MARK SCHEME" not in text and "YOUR ANSWER HERE" in text
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tests = [c for c in nb.cells if c.metadata["nbgrader"].get("grade") and c.cell_type == "code"]
    assert len(tests) == 3 and all(c.metadata["nbgrader"]["locked"] for c in tests)
    source = nbformat.read(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    assert [c.id for c in nb.cells] == [c.id for c in source.cells]  # ids survive: the grader matches on them


def test_build_is_deterministic_and_ignores_outputs_in_the_source(course):
    first = notebooks.build(course_dir=course)[0].read_bytes()
    assert notebooks.build([CHAPTER], course_dir=course)[0].read_bytes() == first

    path = course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for count, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        cell.execution_count = count + 1
        cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    nbformat.write(nb, path)
    assert notebooks.build(["fixture"], course_dir=course)[0].read_bytes() == first


def test_check_built_finds_a_stale_chapter(course):
    assert notebooks.check_built(course) == [CHAPTER]  # never built
    built = notebooks.build(course_dir=course)[0]
    assert notebooks.check_built(course) == []
    built.write_text(built.read_text().replace("Squares", "Cubes"))
    assert notebooks.check_built(course) == [CHAPTER]
    notebooks.build(course_dir=course)
    (built.parent / "stray.txt").write_text("left over")
    assert notebooks.check_built(course) == [CHAPTER]


def test_committed_chapters_match_a_fresh_build():
    stale = notebooks.check_built(ROOT)
    assert not stale, f"chapters/ is out of date for {stale}: run `.venv/bin/mechinterp-course build` and commit"


def test_resolve_chapter_and_course_dir(course, monkeypatch):
    for name in ("99_fixture", "fixture", "FIXTURE", "99", f"solutions/{CHAPTER}/"):
        assert notebooks.resolve_chapter(name, course) == CHAPTER
    with pytest.raises(CourseError, match=r"Unknown chapter 'grokking'\. Chapters: 99_fixture \(fixture\)"):
        notebooks.resolve_chapter("grokking", course)
    assert notebooks.list_chapters(course) == [CHAPTER]

    (course / "solutions" / CHAPTER / "deeper").mkdir()
    monkeypatch.chdir(course / "solutions" / CHAPTER / "deeper")
    assert notebooks.find_course_dir() == course
    with pytest.raises(CourseError, match="no solutions/ folder"):
        notebooks.find_course_dir(course / "solutions")


def test_build_missing_never_overwrites_a_students_work(course, capsys):
    student = course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"
    notebooks.build(course_dir=course)
    student.write_text(student.read_text() + " ", encoding="utf-8")  # the student's edits
    edited = student.read_bytes()
    assert cli.main(["--course-dir", str(course), "build", "--missing"]) == 0
    assert student.read_bytes() == edited
    shutil.rmtree(student.parent)
    assert cli.main(["--course-dir", str(course), "build", "--missing"]) == 0
    assert student.is_file() and notebooks.check_built(course) == []


def test_cli_build_and_bad_input(course, capsys):
    assert cli.main(["--course-dir", str(course), "build", "fixture"]) == 0
    assert f"chapters/{CHAPTER}/{CHAPTER}.ipynb" in capsys.readouterr().out
    assert cli.main(["build", "nope", "--course-dir", str(course)]) == cli.EXIT_BAD_INPUT
    assert "Unknown chapter 'nope'" in capsys.readouterr().err
    assert cli.main(["--course-dir", str(course / "missing"), "build"]) == cli.EXIT_BAD_INPUT
    assert "no solutions/ folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors use the same status
        cli.main(["grade"])
    assert exit_info.value.code == cli.EXIT_BAD_INPUT


def test_cli_zoo_and_train_bad_name(capsys):
    from mechinterp_course import models, recipes

    assert cli.main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in models.list_zoo()) and "parameters" in out and "metrics" in out
    assert cli.main(["train", "no-such-model"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Unknown recipe 'no-such-model'" in err and all(name in err for name in recipes.RECIPES)


def test_a_broken_source_notebook_gets_nbgraders_reason(course):
    path = course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
    path.write_text(path.read_text().replace("### END SOLUTION", "", 1))
    with pytest.raises(CourseError, match=f"could not generate chapter {CHAPTER}: .*no end solution statement"):
        notebooks.build(course_dir=course)
    assert not (course / "chapters").exists()
