"""The autograde round trip on every real chapter: the graded solution earns full marks, the released blank
notebook earns zero on every autograded exercise, and a plausible wrong answer earns partial marks with the
grader's message in its feedback.

This is also where every solution notebook is *executed* end to end, offline, in a real Jupyter kernel (the
autograder's stage 1, see ``mechinterp_course.autograde``): a solution that crashes, or a check that does not print
its success line, fails here. Robustness to broken submissions (infinite loops, dead kernels, deleted test cells,
invalid JSON, hostile code) is tested on a tiny fixture chapter in tests/test_autograde.py, where it is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from mechinterp_course import autograde

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(path.parent.name for path in (ROOT / "solutions").glob("*/*.ipynb"))
#: Per-cell limit: far above what any cell of a chapter needs on 2 cores, low enough to stop a hung cell.
CELL_TIMEOUT_S = 300

#: For each chapter, a plausible mistake: (solution cell, wrong source, the test cell it fails, words of the message).
#: Each is chosen so that no other check depends on it: the rest of the notebook keeps its full marks.
WRONG_ANSWERS = {
    "00_history": (
        "ex-top",
        "def top_activating_examples(activation_fn, images, k):\n"
        "    activations = activation_fn(images)\n"
        "    order = torch.sort(activations).indices[-k:]  # the k largest, but smallest first\n"
        "    return activations[order], order\n",
        "test-top", "top_activating_examples"),
    "01_circuits": (
        "ex-composition",
        "def composition_score(W_A, W_B):\n"
        "    return (W_A @ W_B).norm(dim=(-2, -1)) / W_A.norm(dim=(-2, -1))  # forgot to divide by ||W_B||\n",
        "test-composition", "composition_score"),
    "02_grokking": (
        "ex-ssw",
        "def sum_of_squared_weights(model):\n"
        "    return sum(p.detach().pow(2).sum() for n, p in model.named_parameters() if 'weight' in n)  # forgot biases\n",
        "test-ssw", "sum_of_squared_weights"),
}

pytestmark = pytest.mark.slow


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _autograded(nb) -> dict[str, float]:
    """grade_id -> points of every autograded (code) test cell."""
    return {_meta(c)["grade_id"]: _meta(c)["points"] for c in nb.cells
            if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")}


@pytest.fixture(scope="module", params=CHAPTERS)
def graded(request, tmp_path_factory):
    chapter = request.param
    assert chapter in WRONG_ANSWERS, f"add a plausible wrong answer for {chapter} to WRONG_ANSWERS"
    source = nbformat.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb", as_version=4)
    release = nbformat.read(ROOT / "chapters" / chapter / f"{chapter}.ipynb", as_version=4)
    wrong = nbformat.from_dict(json.loads(json.dumps(source)))
    grade_id, wrong_source, _, _ = WRONG_ANSWERS[chapter]
    [cell] = [c for c in wrong.cells if _meta(c).get("grade_id") == grade_id]
    cell.source = wrong_source

    tmp = tmp_path_factory.mktemp(chapter)
    downloads = tmp / "downloads"
    downloads.mkdir()
    for student, nb in {"solution": source, "blank": release, "wrong": wrong}.items():
        nbformat.write(nb, downloads / f"{student}_{chapter}.ipynb")
    report = autograde.grade(chapter, [downloads], tmp / "grading", timeout=CELL_TIMEOUT_S, course_dir=ROOT)
    return chapter, source, report


def test_solution_runs_end_to_end_and_earns_full_marks(graded):
    chapter, source, report = graded
    result = report["solution"]
    assert not result.problems, result.problems
    expected = _autograded(source)
    assert {k: result.cell_scores[k][0] for k in expected} == expected
    assert result.auto_score == result.max_auto_score == sum(expected.values())

    executed = nbformat.read(report.out_dir / "submitted" / "solution" / chapter / f"{chapter}.ipynb", as_version=4)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(executed.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    for cell in executed.cells:
        if cell.cell_type == "code" and _meta(cell).get("grade_id") in expected:
            printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            assert "\u2705" in printed, f"{_meta(cell)['grade_id']} printed no success line: {printed!r}"


def test_blank_release_scores_zero_on_every_autograded_exercise(graded):
    chapter, source, report = graded
    result = report["blank"]
    scores = {k: result.cell_scores[k][0] for k in _autograded(source)}
    assert scores == dict.fromkeys(scores, 0)
    assert result.auto_score == 0 and result.max_auto_score > 0


def test_wrong_answer_gets_partial_marks_and_the_graders_message(graded):
    chapter, source, report = graded
    _, _, test_id, words = WRONG_ANSWERS[chapter]
    result = report["wrong"]
    expected = _autograded(source)
    scores = {k: result.cell_scores[k][0] for k in expected}
    assert scores == dict(expected, **{test_id: 0})
    feedback = result.feedback.read_text(encoding="utf-8")
    assert "CheckFailed" in feedback and words in feedback
    assert "most recent call last" not in feedback  # short tracebacks: the message, never the test code
