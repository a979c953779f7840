"""Everything generated from the single source: the student notebooks (nbgrader, deterministic, nothing left over)
and each chapter's reference module (exported from the solution notebook); the committed ones equal a fresh build;
the command line reports bad input clearly.

Built into temporary copies of the fixture chapter (tests/fixtures/solutions/01_circuits), except the sync test,
which checks the repository's own chapters/ and reference modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from mechinterp_course.instructor import build as notebooks
from mechinterp_course.instructor import cli, colab, export
from mechinterp_course.instructor.build import CourseError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CHAPTER = "01_circuits"


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
    assert "BEGIN SOLUTION" not in text and "W_A @ W_B" not in text and "YOUR CODE HERE" in text
    assert "HIDDEN" not in text and "hidden=" not in text and "MARK SCHEME" not in text and "YOUR ANSWER HERE" in text
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tests = [c for c in nb.cells if c.metadata["nbgrader"].get("grade") and c.cell_type == "code"]
    assert len(tests) == 4 and all(c.metadata["nbgrader"]["locked"] for c in tests)
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
    assert notebooks.build(["circuits"], course_dir=course)[0].read_bytes() == first


def test_check_built_finds_a_stale_chapter(course):
    assert notebooks.check_built(course) == [CHAPTER]  # never built
    built = notebooks.build(course_dir=course)[0]
    assert notebooks.check_built(course) == []
    built.write_text(built.read_text().replace("Composition", "Decomposition"))
    assert notebooks.check_built(course) == [CHAPTER]
    notebooks.build(course_dir=course)
    (built.parent / "stray.txt").write_text("left over")
    assert notebooks.check_built(course) == [CHAPTER]


def test_committed_chapters_match_a_fresh_build():
    stale = notebooks.check_built(ROOT)
    assert not stale, (
        f"chapters/ or a reference module is out of date for {stale}: run "
        f"`.venv/bin/mechinterp-course build` and commit"
    )


# --------------------------------------------------------------------------------------------------------------
# Where the course lives: one setting, written into every first cell and the README's Colab links
# --------------------------------------------------------------------------------------------------------------


def _with_setting(course: Path, github: str) -> Path:
    """Give the temporary course the setting, a README with a block for the links, and a first cell with an install
    line and a chapter heading, as the real chapters have."""
    (course / "pyproject.toml").write_text(f'[tool.mechinterp-course]\ngithub = "{github}"\n')
    (course / "README.md").write_text(f"# A course\n\n{colab.LINKS_START}\n{colab.LINKS_END}\nThe end.\n")
    path = course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = "# Chapter 1 · Circuits, in small: a fixture\n\n" + nb.cells[0].source
    first = colab.first_code_cell(nb)
    first.source = 'COURSE = "mechinterp-course @ git+https://example.invalid/old"\n' + first.source
    nbformat.write(nb, path)
    return path


def test_the_install_line_and_the_colab_links_come_from_the_one_setting(course):
    solution = _with_setting(course, "someone/fork@dev")
    assert notebooks.check_built(course) == [CHAPTER, "README.md"]
    notebooks.build(course_dir=course)
    requirement = "mechinterp-course @ git+https://github.com/someone/fork@dev"
    for path in (solution, course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"):
        assert colab.install_source(nbformat.read(path, as_version=4)) == requirement
    link = f"https://colab.research.google.com/github/someone/fork/blob/dev/chapters/{CHAPTER}/{CHAPTER}.ipynb"
    readme = (course / "README.md").read_text()
    assert f"[Chapter 01 · Circuits, in small]({link})." in readme and readme.endswith("The end.\n")
    assert notebooks.check_built(course) == []

    # Change the setting: everything that comes from it is stale, and one build brings it back.
    (course / "pyproject.toml").write_text('[tool.mechinterp-course]\ngithub = "someone/fork@main"\n')
    assert notebooks.check_built(course) == [CHAPTER, "README.md"]
    notebooks.build(course_dir=course)
    assert colab.install_source(nbformat.read(solution, as_version=4)).endswith("someone/fork@main")
    assert "/blob/main/" in (course / "README.md").read_text() and notebooks.check_built(course) == []


def test_a_bad_setting_or_a_missing_install_line_is_a_clear_error(course):
    solution = _with_setting(course, "not a repository")
    with pytest.raises(CourseError, match=r"should be OWNER/NAME@BRANCH .*got 'not a repository'"):
        notebooks.build(course_dir=course)
    (course / "pyproject.toml").write_text('[tool.mechinterp-course]\ngithub = "a/b@main"\n')
    nb = nbformat.read(solution, as_version=4)
    first = colab.first_code_cell(nb)
    first.source = first.source.split("\n", 1)[1]  # the install line removed
    nbformat.write(nb, solution)
    with pytest.raises(CourseError, match=r'no line COURSE = "..."'):
        notebooks.build(course_dir=course)


def test_the_repository_readme_links_every_chapter_from_the_setting():
    github = colab.read_github(ROOT)
    readme = (ROOT / "README.md").read_text()
    for chapter in notebooks.list_chapters(ROOT):
        assert f"({colab.colab_url(github, chapter)})" in readme
    assert readme.count("https://colab.research.google.com/") == len(notebooks.list_chapters(ROOT))


def test_resolve_chapter_and_course_dir(course, monkeypatch):
    for name in ("01_circuits", "circuits", "CIRCUITS", "01", "1", f"solutions/{CHAPTER}/"):
        assert notebooks.resolve_chapter(name, course) == CHAPTER
    with pytest.raises(CourseError, match=r"Unknown chapter 'grokking'\. Chapters: 01_circuits \(circuits\)"):
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
    assert cli.main(["--course-dir", str(course), "build", "circuits"]) == 0
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


# --------------------------------------------------------------------------------------------------------------
# The reference modules, exported from the solution notebooks
# --------------------------------------------------------------------------------------------------------------


def _package(course: Path) -> Path:
    """Give the temporary course a package for its chapter, so that the build exports a reference module."""
    package = course / "mechinterp_course" / "circuits"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return package / "reference.py"


def test_build_exports_the_reference_from_the_solution_notebook(course):
    reference = _package(course)
    written = notebooks.build(course_dir=course)
    assert reference in written
    text = reference.read_text()
    assert text.startswith('"""Chapter 01 (circuits)\'s reference answers') and "GENERATED" in text
    namespace: dict = {}
    exec(compile(text, str(reference), "exec"), namespace)
    assert namespace["__all__"] == ["composition_score", "normalised_metric"]
    assert namespace["normalised_metric"](3.0, 5.0, 1.0) == 0.5
    assert "Defined in solutions/01_circuits/01_circuits.ipynb, exercise 7.2." in namespace["composition_score"].__doc__
    assert namespace["EXERCISES"] == {
        "composition_score": "7.2",
        "normalised_metric": "5.1",
        "circuit_studies": "8.1",
        "my_scores": "10.1",
    }
    # The quiz's answers are exported as digests only.
    from mechinterp_course.checking import answer_key

    assert namespace["ANSWER_KEYS"]["study_findings"]["A"] == answer_key({"A": "backup"}, "study_findings")["A"]
    assert "backup" not in text and "@exercise" not in text and "BEGIN SOLUTION" not in text
    assert notebooks.check_built(course) == []
    reference.write_text(text.replace("(clean - corrupted)", "(corrupted - clean)"))
    assert notebooks.check_built(course) == [CHAPTER]


def test_an_exported_function_may_not_use_notebook_globals(course):
    _package(course)
    path = course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == "ex-normalised")
    cell.source = cell.source.replace("return (value - corrupted)", "return SCALE * (value - corrupted)")
    nbformat.write(nb, path)
    with pytest.raises(CourseError, match="normalised_metric .* uses the notebook global `SCALE`"):
        notebooks.build(course_dir=course)


@pytest.mark.parametrize(
    "source, message",
    [
        ("assert add(2, 3) == 5", "may only call check"),
        ("check.gini(gini(values))", "names or constants"),
        ("import os\ncheck.gini(gini)", "may only call check"),
    ],
)
def test_test_cells_must_be_plain_check_calls(source, message):
    with pytest.raises(export.ExportError, match=message):
        export.test_cell_calls(source)
    calls = export.test_cell_calls('check.gini(gini)\ncheck.gini(gini, hidden="ab12")')
    assert [c.func.attr for c in calls] == ["gini", "gini"]
