"""Static checks on the committed notebooks: no outputs, and every exercise has a check with points.

The notebooks are *executed* in tests/test_chapter_grading.py: each solution is graded by the autograder, which
runs it in a real kernel, so one execution checks both that it runs and that it earns full marks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS + sorted((ROOT / "chapters").glob("*/*.ipynb")),
                         ids=lambda p: f"{p.parents[1].name}/{p.parent.name}")
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
        assert before.cell_type == "markdown" and before_meta.get("locked") and not before_meta.get("solution"), \
            f"answer cell {meta['grade_id']} of {path.name} must follow a read-only markdown cell holding its question"
        assert len(before.source.strip()) > 40, f"the cell before {meta['grade_id']} should state the question"
        assert "YOUR ANSWER HERE" not in cell.source and "**Question" not in cell.source, \
            f"answer cell {meta['grade_id']} of {path.name} carries question text that students will not see"
        released = nbformat.read(ROOT / "chapters" / path.parent.name / path.name, as_version=4)
        index = next(j for j, c in enumerate(released.cells) if c.id == cell.id)
        assert released.cells[index].source.strip() == "YOUR ANSWER HERE"
        assert released.cells[index - 1].source == before.source
