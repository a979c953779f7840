"""Every solution notebook runs end to end, offline, and every one of its checks passes.

Notebooks are executed in a real Jupyter kernel (as a student would run them), in a temporary copy so that files
they write never land in the repository. The network guard reaches the kernel through PYTHONPATH (conftest.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))
#: Per-cell limit: far above what any cell needs on 2 cores, low enough to stop a hung cell.
CELL_TIMEOUT_S = 600


def _test_cells(nb):
    return [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.parent.name)
def test_solution_notebook_runs_and_passes_its_checks(path, tmp_path):
    work = tmp_path / path.parent.name
    shutil.copytree(path.parent, work)
    nb = nbformat.read(work / path.name, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    for cell in _test_cells(nb):
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        assert "\u2705" in text, f"check cell {cell.metadata['nbgrader']['grade_id']} printed no success line: {text!r}"


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
