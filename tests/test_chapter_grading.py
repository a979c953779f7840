"""The grader's round trip on every real chapter: the solution earns full marks, a plausible wrong answer partial
marks with the check's message in its feedback, and the released notebook with every bypass that a real chapter makes
possible (its exercises importing the reference answers, its checks rebound to pass, its errors silenced) earns
nothing, each bypass flagged.

This is also where every solution notebook is executed end to end, offline, in a real sandboxed kernel, once per
test run: one batch per chapter holds the three submissions (graded two at a time), and every test reads that batch.
A solution that crashes, prints a traceback, or has a check that does not print its success line fails here. That
each released stub fails its check is seen where the student sees it, in tests/test_browser.py (the student notebook
run in JupyterLab fails at every exercise); robustness to broken and hostile submissions in general is tested on a
small fixture chapter in tests/test_grading.py, where it is cheap.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import hidden_test_leaks  # noqa: E402 - the suite's shared helpers

from mechinterp_course.instructor import grade

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(path.parent.name for path in (ROOT / "solutions").glob("*/*.ipynb"))
#: Per-cell limit: far above what any cell of a chapter needs on 2 cores, low enough to stop a hung cell.
CELL_TIMEOUT_S = 300

#: For each chapter, a plausible mistake: (solution cell, wrong source, the test cell it fails, words of the message).
#: Each is chosen so that no other check depends on it: the rest of the notebook keeps its full marks.
WRONG_ANSWERS = {
    "00_history": (
        "ex-top",
        "@exercise\ndef top_activating_examples(activation_fn, images, k):\n"
        "    activations = activation_fn(images)\n"
        "    order = torch.sort(activations).indices[-k:]  # the k largest, but smallest first\n"
        "    return activations[order], order\n",
        "test-top",
        "top_activating_examples",
    ),
    "01_circuits": (
        "ex-composition",
        "@exercise\ndef composition_score(W_A, W_B):\n"
        "    return (W_A @ W_B).norm(dim=(-2, -1)) / W_A.norm(dim=(-2, -1))  # forgot to divide by ||W_B||\n",
        "test-composition",
        "composition_score",
    ),
    "02_grokking": (
        "ex-ssw",
        "@exercise\ndef sum_of_squared_weights(model):\n"
        "    return sum(p.detach().pow(2).sum() for n, p in model.named_parameters() if 'weight' in n)  # no biases\n",
        "test-ssw",
        "sum_of_squared_weights",
    ),
    "03_backup": (
        "ex-shift",
        "@exercise\ndef direct_effect_shift(model, tokens, io, s, layer, head, kind, replacement=None):\n"
        "    _, clean_z = backup.run_ablated(model, tokens)\n"
        "    _, ablated_z = backup.run_ablated(model, tokens, [(layer, head)], kind, replacement)\n"
        "    return (direct_effects(model, clean_z, io, s) - direct_effects(model, ablated_z, io, s)).mean(0)"
        "  # clean minus ablated: the wrong sign\n",
        "test-shift",
        "direct_effect_shift",
    ),
    "04_saes": (
        "ex-logits",
        "@exercise\ndef latent_logit_effects(model, directions, layer):\n"
        "    return (directions @ model.W_out[layer] + model.b_out[layer]) @ model.W_U  # b_out is no latent's\n",
        "test-logits",
        "a zero direction writes nothing",
    ),
    "05_attention_superposition": (
        "ex-share",
        "@exercise\ndef head_share(W_dec, n_heads):\n"
        "    per_head = einops.rearrange(W_dec, 'l (h e) -> l h e', h=n_heads).abs().sum(-1)  # not squared\n"
        "    return per_head / per_head.sum(-1, keepdim=True).clamp_min(1e-12)\n",
        "test-share",
        "values of the shares",
    ),
    "06_understanding": (
        "ex-induction",
        "@exercise\ndef induction_weights(d_vocab, d_model, n_ctx):\n"
        "    with torch.enable_grad():  # tunes a scale with Adam first: training, which grading refuses\n"
        "        scale = torch.ones(1, requires_grad=True)\n"
        "        torch.optim.Adam([scale], lr=0.1).step()\n"
        "    v, n, h = d_vocab, n_ctx, max(d_vocab, n_ctx)\n"
        "    w = {'W_E': torch.zeros(v, d_model), 'W_pos': torch.zeros(n, d_model), 'W_U': torch.zeros(d_model, v)}\n"
        "    for name in ('W_Q', 'W_K', 'W_V'):\n"
        "        w[name] = torch.zeros(2, 1, d_model, h)\n"
        "    w['W_O'] = torch.zeros(2, 1, h, d_model)\n"
        "    t, p, s = torch.arange(v), torch.arange(n), 30 * h**0.5\n"
        "    w['W_E'][t, t] = 1\n"
        "    w['W_pos'][p, v + p] = 1\n"
        "    w['W_Q'][0, 0, v + p, p] = s\n"
        "    w['W_K'][0, 0, v + p[:-1], p[1:]] = 1\n"
        "    w['W_V'][0, 0, t, t] = 1\n"
        "    w['W_O'][0, 0, t, v + n + t] = 1\n"
        "    w['W_Q'][1, 0, t, t] = s\n"
        "    w['W_K'][1, 0, v + n + t, t] = 1\n"
        "    w['W_V'][1, 0, t, t] = 1\n"
        "    w['W_O'][1, 0, t, 2 * v + n + t] = 1\n"
        "    w['W_U'][2 * v + n + t, t] = 30\n"
        "    return w\n",
        "test-induction",
        "is not available here",
    ),
}
#: Code that silences every error in the kernel, and code that replaces every check with one that passes.
SILENCE = "get_ipython().showtraceback = lambda *args, **kwargs: None"
REBIND = (
    "import importlib\n"
    "checks_module = importlib.import_module('mechinterp_course.{package}.checks')\n"
    "passed = lambda *args, **kwargs: print('\\u2705 correct')\n"
    "for name in list(vars(checks_module)):\n"
    "    setattr(checks_module, name, passed)\n"
    "for name in dir(check):\n"
    "    if not name.startswith('_'):\n"
    "        setattr(check, name, passed)"
)

pytestmark = pytest.mark.slow


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _autograded(nb) -> dict[str, float]:
    """grade_id -> points of every autograded (code) test cell."""
    return {
        _meta(c)["grade_id"]: _meta(c)["points"]
        for c in nb.cells
        if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")
    }


def _copy(nb):
    return nbformat.from_dict(json.loads(json.dumps(nb)))


def _with_cell(nb, source: str, after=lambda cell: True):
    """The notebook with a code cell of the student's own right after the first code cell for which ``after`` is
    true (by default the setup cell, the first code cell)."""
    nb = _copy(nb)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and after(c))
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(source))
    return nb


def _reference_everywhere(source_nb, release_nb, package: str):
    """The released notebook with every exercise cell replaced by an import of the chapter's reference answers."""
    nb = _copy(release_nb)
    solutions = {_meta(c)["grade_id"]: c for c in source_nb.cells if c.cell_type == "code" and _meta(c).get("solution")}
    for cell in nb.cells:
        grade_id = _meta(cell).get("grade_id")
        if grade_id in solutions:
            names = [n.name for n in ast.parse(solutions[grade_id].source).body if isinstance(n, ast.FunctionDef)]
            if names:
                cell.source = f"from mechinterp_course.{package}.reference import {', '.join(names)}"
    return nb


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines at top level, names it reads that it never binds itself: its free names). Magics and
    shell lines are skipped."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            targets += [item.optional_vars for item in getattr(node, "items", [])]
            defined |= {t.id for target in targets if target for t in ast.walk(target) if isinstance(t, ast.Name)}
    bound = {t.id for t in ast.walk(tree) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    bound |= {a.arg for t in ast.walk(tree) if isinstance(t, ast.arguments) for a in t.args + t.kwonlyargs}
    read = {t.id for t in ast.walk(tree) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Load)}
    return defined, read - bound - defined


def _without_demos(nb):
    """The notebook with only what grading needs: the setup cell, the exercises, the checks, and the cells that
    define a name an exercise reads (a table of findings to match, a constant). Every other code cell (the
    demonstrations, the figures, the trainings) is deleted, as a student may delete cells; the markdown stays."""
    nb = _copy(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    kept = {id(code[0])} | {id(c) for c in code if _meta(c).get("solution") or _meta(c).get("grade") or not _meta(c)}
    needed = set().union(*(_names(c.source)[1] for c in code if id(c) in kept))
    changed = True
    while changed:  # the cells defining what the kept cells read, and what those read in turn
        changed = False
        for cell in code:
            assigned, read = _names(cell.source)
            if id(cell) not in kept and assigned & needed:
                kept.add(id(cell))
                needed |= read
                changed = True
    nb.cells = [c for c in nb.cells if c.cell_type != "code" or id(c) in kept]
    return nb


@pytest.fixture(scope="module", params=CHAPTERS)
def graded(request, tmp_path_factory):
    chapter = request.param
    package = chapter.split("_", 1)[1]
    assert chapter in WRONG_ANSWERS, f"add a plausible wrong answer for {chapter} to WRONG_ANSWERS"
    source = nbformat.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb", as_version=4)
    release = nbformat.read(ROOT / "chapters" / chapter / f"{chapter}.ipynb", as_version=4)
    wrong = _copy(source)
    grade_id, wrong_source, _, _ = WRONG_ANSWERS[chapter]
    [cell] = [c for c in wrong.cells if _meta(c).get("grade_id") == grade_id]
    cell.source = wrong_source

    tmp = tmp_path_factory.mktemp(chapter)
    downloads = tmp / "downloads"
    downloads.mkdir()
    # One full execution per chapter, the solution's; the other two submissions keep only the setup cell, the
    # exercises and the checks (a student may delete the rest), so they cost seconds and run beside it:
    # - the wrong answer: every other exercise keeps its marks, with no demonstration cell between them;
    # - the bypasses, in one run: each exercise of the release imports the reference answer, and the checks are
    #   rebound to pass and errors silenced on top. Every score must still be zero (the grader scores in its own
    #   process, and the reference is not importable while grading) and every bypass flagged. Errors are silenced
    #   after the first import of a reference answer, so that its refusal shows its message.
    reference = _with_cell(_reference_everywhere(source, release, package), REBIND.format(package=package))
    submissions = {
        "solution": source,
        "wrong": _without_demos(wrong),
        "bypass": _without_demos(_with_cell(reference, SILENCE, after=lambda cell: ".reference import" in cell.source)),
    }
    for student, nb in submissions.items():
        nbformat.write(nb, downloads / f"{student}_{chapter}.ipynb")
    report = grade.grade(chapter, [downloads], tmp / "grading", timeout=CELL_TIMEOUT_S, course_dir=ROOT, jobs=2)
    return chapter, source, report


def test_solution_runs_end_to_end_and_earns_full_marks(graded):
    chapter, source, report = graded
    result = report["solution"]
    assert not [p for p in result.problems if "flagged" not in p], result.problems
    expected = _autograded(source)
    assert {k: result.cell_scores[k][0] for k in expected} == expected
    assert result.auto_score == result.max_auto_score == sum(expected.values())

    executed = nbformat.read(report.out_dir / "submitted" / "solution" / chapter / f"{chapter}.ipynb", as_version=4)
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(executed.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    tracebacks = [
        i
        for i, c in enumerate(executed.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr" and "Traceback" in o.get("text", "")
    ]
    assert not tracebacks, f"cells {tracebacks} printed a traceback"
    for cell in executed.cells:
        if cell.cell_type == "code" and _meta(cell).get("grade_id") in expected:
            printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            # The visible check and the hidden one both passed.
            assert printed.count("\u2705") >= 2, f"{_meta(cell)['grade_id']} printed: {printed!r}"


def test_every_bypass_together_scores_zero_and_each_is_flagged(graded):
    chapter, source, report = graded
    result = report["bypass"]
    scores = {k: result.cell_scores[k][0] for k in _autograded(source)}
    assert scores == dict.fromkeys(scores, 0), scores
    assert result.auto_score == 0 and result.max_auto_score > 0
    flags = " ".join(result.problems)
    assert "silencing errors" in flags and "rebinding or importing the course's checks" in flags, result.problems
    assert "using the course's reference answers" in flags, result.problems


def test_wrong_answer_gets_partial_marks_and_the_checks_message(graded):
    chapter, source, report = graded
    _, _, test_id, words = WRONG_ANSWERS[chapter]
    result = report["wrong"]
    expected = _autograded(source)
    scores = {k: result.cell_scores[k][0] for k in expected}
    assert scores == dict(expected, **{test_id: 0})
    feedback = result.feedback.read_text(encoding="utf-8")
    assert "CheckFailed" in feedback and words in feedback
    assert "most recent call last" not in feedback  # short tracebacks: the message, never the test code
    assert hidden_test_leaks(feedback, ROOT / "solutions" / chapter / f"{chapter}.ipynb") == []


def test_the_reference_is_never_in_a_graded_notebook(graded):
    chapter, source, report = graded
    executed = nbformat.read(report.out_dir / "submitted" / "bypass" / chapter / f"{chapter}.ipynb", as_version=4)
    outputs = json.dumps([c.get("outputs") for c in executed.cells if c.cell_type == "code"])
    assert re.search(r"not available while your notebook is graded", outputs)
