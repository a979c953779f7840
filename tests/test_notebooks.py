"""Static checks on the committed notebooks: no outputs, and every exercise has a check with points.

The notebooks are *executed* in tests/test_chapter_grading.py: each solution is graded by the autograder, which
runs it in a real kernel, so one execution checks both that it runs and that it earns full marks.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))


@pytest.mark.parametrize(
    "path",
    SOLUTIONS + sorted((ROOT / "chapters").glob("*/*.ipynb")),
    ids=lambda p: f"{p.parents[1].name}/{p.parent.name}",
)
def test_committed_notebooks_carry_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"cells {with_outputs} of {path.name} were committed with outputs"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.parent.name)
def test_every_exercise_has_a_check_and_every_check_has_points(path):
    nb = nbformat.read(path, as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    solutions = [m for m, c in zip(meta, nb.cells) if m.get("solution") and c.cell_type == "code"]
    tests = [m for m, c in zip(meta, nb.cells) if m.get("grade") and c.cell_type == "code"]
    assert len(tests) >= len(solutions) > 0
    assert all(m.get("locked") and m.get("points", 0) > 0 for m in tests)
    assert len({m["grade_id"] for m in meta if m}) == len([m for m in meta if m]), "grade_ids must be unique"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.parent.name)
def test_every_written_question_stays_visible_to_students(path):
    """nbgrader replaces the whole of a manually graded answer cell with "YOUR ANSWER HERE" in the student
    version, so the question must sit in the read-only markdown cell just before it, and the answer cell must not
    carry question text (which students would never see)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if not (cell.cell_type == "markdown" and meta.get("solution") and meta.get("grade")):
            continue
        before = nb.cells[i - 1]
        before_meta = before.metadata.get("nbgrader", {})
        assert before.cell_type == "markdown" and before_meta.get("locked") and not before_meta.get("solution"), (
            f"answer cell {meta['grade_id']} of {path.name} must follow a read-only markdown cell holding its question"
        )
        assert len(before.source.strip()) > 40, f"the cell before {meta['grade_id']} should state the question"
        assert "YOUR ANSWER HERE" not in cell.source and "**Question" not in cell.source, (
            f"answer cell {meta['grade_id']} of {path.name} carries question text that students will not see"
        )
        released = nbformat.read(ROOT / "chapters" / path.parent.name / path.name, as_version=4)
        index = next(j for j, c in enumerate(released.cells) if c.id == cell.id)
        assert released.cells[index].source.strip() == "YOUR ANSWER HERE"
        assert released.cells[index - 1].source == before.source


def _code_cells(nb, **flags):
    return [
        c
        for c in nb.cells
        if c.cell_type == "code" and all(bool(c.metadata.get("nbgrader", {}).get(k)) == v for k, v in flags.items())
    ]


def test_every_test_cell_is_plain_check_calls_with_a_hidden_part_of_its_own():
    """The grader runs test cells by reading them (mechinterp_course.instructor.judge): only check calls. Every
    autograded cell hides a second call on inputs the student never sees, with a salt no other cell shares."""
    from mechinterp_course.instructor.export import test_cell_calls

    salts = []
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for cell in _code_cells(nb, grade=True, solution=False):
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            calls = test_cell_calls(cell.source)
            visible = [c for c in calls if not any(k.arg == "hidden" for k in c.keywords)]
            hidden = [c for c in calls if any(k.arg == "hidden" for k in c.keywords)]
            assert visible and hidden, f"{path.name} {grade_id}: needs a visible check and a hidden one"
            assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source, grade_id
            assert [c.func.attr for c in visible] == [c.func.attr for c in hidden], grade_id
            salts += [k.value.value for c in hidden for k in c.keywords if k.arg == "hidden"]
    assert len(salts) == len(set(salts)), "every hidden test needs a salt of its own"


def test_exercise_functions_are_declared_and_demo_cells_never_reach_for_answers():
    """Every function a student writes is under @exercise (so that the cells after it fall back to the reference
    until it passes); no cell but a test cell calls a check, and no cell imports a reference module."""
    import ast

    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for cell in _code_cells(nb, solution=True):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef):
                    decorators = [ast.unparse(d) for d in node.decorator_list]
                    assert any(d.startswith("exercise") for d in decorators), f"{path.name}: {node.name}"
        for cell in _code_cells(nb, grade=False):
            assert not re.search(r"\.reference\b|import\s+reference\b|\breference\.", cell.source), (
                f"{path.name}: a cell uses the reference: {cell.source[:80]!r}"
            )
            assert not any(line.lstrip().startswith("check.") for line in cell.source.splitlines()), (
                f"{path.name}: a cell that is not a test cell calls a check"
            )
