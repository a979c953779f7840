"""Chapter 06 (what counts as mechanistic understanding): its tools, its reference answers and its checks.

Every check must pass the reference (as a student's own function), refuse the library's own function and unfinished
stubs, fail hard-coded answers, and give the typical wrong answers and the typical ways around an exercise (training
instead of writing weights, a model inside the program, a table instead of a program, a proof that is brute force or
a guess) a message that says what is wrong.
"""

from __future__ import annotations

import math
import re
import time

import pytest
import torch
from conftest import fails as fails_with  # noqa: E402 - the suite's shared helpers
from conftest import own as student  # noqa: E402

from mechinterp_course import models, understanding
from mechinterp_course.checking import CheckFailed, training_lock
from mechinterp_course.understanding import checks, reference

RIGHT_RUNGS = {
    "A": "Find correlations",
    "B": "Find causations and dependencies",
    "C": "Causal understanding",
    "D": "Sufficient conditions: Finding a circuit",
    "E": "Necessary conditions: Could it have been anything else?",
    "F": "Find correlations",
}


@pytest.fixture(autouse=True)
def no_grad():
    """The notebook runs with gradients off, and so does the grader when it calls the checks."""
    with torch.no_grad():
        yield


def fails(check, *answers, match: str, hidden: str | None = None) -> str:
    """The check fails, with a message that says ``match`` (a plain phrase, not a regular expression)."""
    return fails_with(check, *answers, match=re.escape(match), hidden=hidden)


def passes(check, *answers, capsys, hidden: str | None = None):
    check(*answers, hidden=hidden)
    assert "\u2705" in capsys.readouterr().out


def hard_coded(reference_fn):
    """Record the reference's answer on the first input and return it whatever the input."""
    recorded = []

    def answer(*args, **kwargs):
        if not recorded:
            recorded.append(reference_fn(*args, **kwargs))
        return recorded[0]

    return answer


def modadd_program() -> dict:
    W_E, grid = checks.program_model_grid()
    return reference.read_program(W_E, grid)


# --------------------------------------------------------------------------------------------------------------
# Every function check: the reference passes; the library's own function, stubs and hard-coded answers do not
# --------------------------------------------------------------------------------------------------------------

CHECKED = {
    checks.induction_weights: reference.induction_weights,
    checks.fourier_weights: reference.fourier_weights,
    checks.read_program: reference.read_program,
    checks.run_program: reference.run_program,
    checks.brute_force_correct: reference.brute_force_correct,
    checks.certify: reference.certify,
}
IDS = [check.exercise for check in CHECKED]


@pytest.mark.parametrize("check", list(CHECKED), ids=IDS)
@pytest.mark.parametrize("hidden", [None, "5eed0001"])
def test_the_reference_passes(check, hidden, capsys):
    passes(check, student(CHECKED[check]), capsys=capsys, hidden=hidden)


@pytest.mark.parametrize("check", list(CHECKED), ids=IDS)
def test_the_library_reference_and_unfinished_stubs_are_refused(check):
    fails(check, CHECKED[check], match="reference implementation")

    def stub(*args, **kwargs):
        raise NotImplementedError

    fails(check, stub, match="not implemented yet")


@pytest.mark.parametrize("check", list(CHECKED), ids=IDS)
def test_a_hard_coded_answer_fails(check):
    with pytest.raises(CheckFailed):
        check(hard_coded(CHECKED[check]))


def test_the_data_checks_pass_right_answers(capsys):
    passes(checks.ladder_rungs, dict(RIGHT_RUNGS), capsys=capsys)
    passes(checks.synthesis, student(reference.run_program), modadd_program(), capsys=capsys, hidden="5eed0002")
    claim = {
        "star": checks.STARS[1],
        "landing": "a 2-layer induction model by hand",
        "claim": "loss < 0.1 at 200 tokens",
    }
    passes(checks.north_star, dict(claim, measured=0.05), capsys=capsys)


# --------------------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------------------


def test_model_from_weights_round_trips_every_weight_and_says_what_is_wrong():
    weights = reference.fourier_weights(13, [2, 5])
    model = understanding.model_from_weights(weights)
    for name, value in weights.items():
        assert torch.equal(getattr(model, name).detach().reshape(value.shape), value), name
    with pytest.raises(ValueError, match="W_V's d_model is 3"):
        understanding.model_from_weights(dict(weights, W_V=torch.zeros(1, 1, 3, weights["W_V"].shape[-1])))
    with pytest.raises(ValueError, match="missing weight"):
        understanding.model_from_weights({"W_E": weights["W_E"]})
    with pytest.raises(ValueError, match="unknown weight"):
        understanding.model_from_weights(dict(weights, W_X=torch.zeros(1)))


def test_cell_sizes_count_every_input_once():
    for d_vocab, k in ((5, 2), (6, 3), (4, 4)):
        inputs = understanding.all_inputs(d_vocab, k, 0, d_vocab**k)
        largest = inputs.max(-1).values
        below = inputs.masked_fill(inputs == largest[:, None], -1).max(-1).values
        below = torch.where(below < 0, largest, below)
        counted = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.float64)
        counted.index_put_(
            (largest, inputs[:, -1], below), torch.ones(len(inputs), dtype=torch.float64), accumulate=True
        )
        assert torch.equal(counted, understanding.cell_sizes(d_vocab, k))
    assert understanding.bound_from_certificate(torch.ones(4, 4, 4, dtype=torch.bool), 3) == 1.0


def test_the_noiseless_test_model_is_right_everywhere_and_the_noisy_ones_are_not():
    perfect = checks.max_of_k_test_model(6, 3, torch.Generator().manual_seed(0), noise=0.0, sharpness=4.0)
    sizes = understanding.cell_sizes(6, 3)
    assert torch.equal(reference.brute_force_correct(perfect), sizes)
    wrong = []
    for seed in range(3):
        noisy = checks.max_of_k_test_model(8, 3, torch.Generator().manual_seed(seed), noise=0.25, sharpness=1.0)
        wrong.append(float(understanding.cell_sizes(8, 3).sum() - reference.brute_force_correct(noisy).sum()))
    assert any(count > 0 for count in wrong), "the checks' noisy models must get some inputs wrong"


def test_training_lock_refuses_optimisers_and_autograd_and_undoes_itself():
    unlock = training_lock.lock()
    try:
        with pytest.raises(training_lock.TrainingRefused):
            torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        with torch.enable_grad():
            x = torch.zeros(1, requires_grad=True)
            with pytest.raises(training_lock.TrainingRefused):
                (x * 2).sum().backward()
            with pytest.raises(training_lock.TrainingRefused):
                torch.autograd.grad((x * 2).sum(), x)
        with pytest.raises(training_lock.TrainingRefused):
            torch.func.grad(lambda t: t.sum())(torch.zeros(2))
    finally:
        unlock()
    with torch.enable_grad():
        x = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.SGD([x], lr=1.0)
        (x - 1).pow(2).sum().backward()
        optimiser.step()
    assert float(x) == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------------------------
# 1.1 the ladder
# --------------------------------------------------------------------------------------------------------------


def test_ladder_feedback():
    fails(checks.ladder_rungs, dict(RIGHT_RUNGS, A="Causal understanding"), match="1 of 6 measurements is on the wrong")
    fails(checks.ladder_rungs, dict(RIGHT_RUNGS, B="ablation"), match="is not one of the rungs")
    fails(checks.ladder_rungs, {"A": "Find correlations"}, match="with the letters A, B, C, D, E, F")
    # Case and spacing do not matter.
    checks.ladder_rungs({k: "  " + v.upper() for k, v in RIGHT_RUNGS.items()})


# --------------------------------------------------------------------------------------------------------------
# 2.1 induction weights by hand
# --------------------------------------------------------------------------------------------------------------


def _induction_with(change):
    write = reference.induction_weights  # in a closure: a tokens-only copy hides the library's modules, not this

    def weights(d_vocab, d_model, n_ctx):
        written = write(d_vocab, d_model, n_ctx)
        change(written, d_vocab, n_ctx)
        return written

    return weights


def test_induction_feedback_names_the_head_that_fails():
    no_previous = _induction_with(lambda w, v, n: w["W_Q"][0].zero_())
    fails(checks.induction_weights, no_previous, match="layer 0 has no previous-token head")

    def keys_on_tokens(w, v, n):  # layer 1 keys read the token block, not the previous-token block
        w["W_K"][1] = w["W_Q"][1] / w["W_Q"][1].abs().max()

    fails(checks.induction_weights, _induction_with(keys_on_tokens), match="no layer-1 head attends to the token after")

    def unembed_tokens(w, v, n):  # the unembedding reads the current token instead of the copied one
        w["W_U"] = torch.zeros_like(w["W_U"])
        w["W_U"][torch.arange(v), torch.arange(v)] = 30.0

    fails(checks.induction_weights, _induction_with(unembed_tokens), match="both heads attend where they should")


def test_induction_refuses_wrong_shapes_and_an_mlp():
    write = reference.induction_weights

    def one_layer(d_vocab, d_model, n_ctx):
        weights = write(d_vocab, d_model, n_ctx)
        return {name: value[1:] if value.ndim == 4 else value for name, value in weights.items()}

    fails(checks.induction_weights, one_layer, match="n_layers is 1 (expected 2)")

    def with_mlp(d_vocab, d_model, n_ctx):
        weights = write(d_vocab, d_model, n_ctx)
        return dict(weights, W_in=torch.zeros(2, d_model, 4), W_out=torch.zeros(2, 4, d_model))

    fails(checks.induction_weights, with_mlp, match="include an MLP")
    fails(checks.induction_weights, lambda d_vocab, d_model, n_ctx: [1, 2], match="should return a dict of tensors")


def test_a_head_that_copies_from_a_fixed_offset_fails():
    """A layer-1 head that attends by position to i - (n_ctx - 1) // 2 + 1 (the repeat length of the notebook's
    configuration) is not induction: the shorter repeats catch it."""
    write = reference.induction_weights

    def by_position(d_vocab, d_model, n_ctx):
        weights = write(d_vocab, d_model, n_ctx)
        offset, position = (n_ctx - 1) // 2 - 1, d_vocab
        d_head = weights["W_Q"].shape[-1]
        positions = torch.arange(offset, n_ctx)
        weights["W_Q"][1] = 0.0
        weights["W_K"][1] = 0.0
        weights["W_Q"][1, 0, position + positions, positions - offset] = 30.0 * math.sqrt(d_head)
        weights["W_K"][1, 0, position + positions - offset, positions - offset] = 1.0
        return weights

    fails(checks.induction_weights, by_position, match="with 5 repeated tokens")


def test_training_instead_of_writing_is_refused():
    write = reference.induction_weights

    def with_adam(d_vocab, d_model, n_ctx):
        weights = write(d_vocab, d_model, n_ctx)
        with torch.enable_grad():
            scale = torch.ones(1, requires_grad=True)
            optimiser = torch.optim.Adam([scale], lr=0.1)
            optimiser.step()
        return weights

    fails(checks.induction_weights, with_adam, match="torch.optim.Adam is not available here")
    adam = torch.optim.Adam  # an optimiser class captured before the check runs (a notebook's import)

    def with_captured_adam(d_vocab, d_model, n_ctx):
        with torch.enable_grad():
            adam([torch.ones(1, requires_grad=True)])
        return write(d_vocab, d_model, n_ctx)

    fails(checks.induction_weights, with_captured_adam, match="an optimiser (torch.optim) is not available here")

    def with_backward(d_vocab, d_model, n_ctx):
        with torch.enable_grad():
            scale = torch.ones(1, requires_grad=True)
            (scale * 2).sum().backward()
        return write(d_vocab, d_model, n_ctx)

    fails(checks.induction_weights, with_backward, match="backward() is not available here")


def test_weights_that_load_a_model_are_refused():
    def from_the_zoo(d_vocab, d_model, n_ctx):
        model, _ = models.load("induction-2l")
        return {"W_E": model.W_E}

    fails(checks.induction_weights, from_the_zoo, match="uses `models`, a module of the course library")


def test_weights_that_take_too_long_are_stopped(monkeypatch):
    monkeypatch.setattr(checks, "WEIGHTS_SECONDS", 0.5)

    def slow(d_vocab, d_model, n_ctx):
        time.sleep(3)
        return {}

    message = fails(checks.induction_weights, slow, match="it ran for more than 0.5 s and was stopped")
    assert "training is not allowed" in message


# --------------------------------------------------------------------------------------------------------------
# 2.2 Fourier weights by hand
# --------------------------------------------------------------------------------------------------------------


def test_fourier_feedback():
    write = reference.fourier_weights
    ignores_keys = lambda p, keys: write(p, [1, 2])  # noqa: E731
    fails(checks.fourier_weights, ignores_keys, match="of its variance on those frequencies")

    def first_harmonic(p, keys):  # W_out weighted by cos(theta), not cos(2 theta): the wrong harmonic
        weights = write(p, keys)
        n_keys, n_phases = len(keys), weights["W_out"].shape[1] // len(keys)
        theta = 2 * math.pi * torch.arange(n_phases) / n_phases
        for i in range(n_keys):
            rows = slice(i * n_phases, (i + 1) * n_phases)
            weights["W_out"][0, rows, 4 * n_keys + 2 * i] = torch.cos(theta)
            weights["W_out"][0, rows, 4 * n_keys + 2 * i + 1] = torch.sin(theta)
        return weights

    fails(checks.fourier_weights, first_harmonic, match="the model is right on")

    def attention_only(p, keys):
        weights = write(p, keys)
        return {name: value for name, value in weights.items() if name not in ("W_in", "W_out")}

    fails(checks.fourier_weights, attention_only, match="have no MLP")


# --------------------------------------------------------------------------------------------------------------
# 3.1-3.3 the program
# --------------------------------------------------------------------------------------------------------------


def test_read_program_feedback():
    read = reference.read_program

    def sign_flipped(W_E, logits):
        program = read(W_E, logits)
        return dict(program, phases=[-phase for phase in program["phases"]])

    fails(checks.read_program, sign_flipped, match="phi = atan2(-beta, alpha)")

    def unnormalised(W_E, logits):
        program = read(W_E, logits)
        return dict(program, amplitudes=[2 * a for a in program["amplitudes"]])

    fails(checks.read_program, unnormalised, match="each divided by its own squared norm")

    def top_five(W_E, logits):
        p = logits.shape[0]
        program = read(W_E, logits)
        return dict(program, freqs=list(range(1, 6)), amplitudes=[1.0] * 5, phases=[0.0] * 5, p=p)

    fails(checks.read_program, top_five, match="the embedding is built on")
    fails(checks.read_program, lambda W_E, logits: [1, 2, 3], match="should be a dict with exactly the keys")


def test_run_program_feedback():
    run = reference.run_program
    in_float32 = lambda a, b, program: run(a, b, program).float()  # noqa: E731
    fails(checks.run_program, in_float32, match="compute them in float64")

    def minus_c_plus(a, b, program):  # cos(w(a + b + c)): the sign of c
        return run(a, b, program).flip(-1).roll(1, -1)

    fails(checks.run_program, minus_c_plus, match="one frequency (k = 1, p = 7), amplitude 1 and phase 0")


def test_a_program_with_a_model_inside_is_refused():
    model = models.fresh(checks.PROGRAM_MODEL)
    tokens_of = understanding.modadd_tokens

    def runs_the_model(a, b, program):
        tokens = torch.stack([a, b, torch.full_like(a, program["p"])], dim=1)
        return model(tokens)[:, -1].double()

    fails(checks.synthesis, runs_the_model, modadd_program(), match="holds a model in its closure variable `model`")
    assert tokens_of  # the helper exists; the program may not use it either


def test_synthesis_feedback():
    program = modadd_program()
    one_term = {key: value[:1] if isinstance(value, list) else value for key, value in program.items()}
    fails(checks.synthesis, student(reference.run_program), one_term, match="of the variance of modadd-113's logits")
    flat = dict(program, amplitudes=[1.0] * len(program["freqs"]))
    fails(checks.synthesis, student(reference.run_program), flat, match="terms' sizes or phases are not the model's")
    many = {"p": 113, "freqs": list(range(1, 31)), "amplitudes": [1.0] * 30, "phases": [0.0] * 30}
    fails(checks.synthesis, student(reference.run_program), many, match="holds 91 numbers")
    other_p = {"p": 59, "freqs": [1], "amplitudes": [1.0], "phases": [0.0]}
    fails(checks.synthesis, student(reference.run_program), other_p, match="computes modulo 113")

    def answer_table(a, b, program):  # the right answers, as a one-hot table: agrees everywhere, explains little
        return torch.nn.functional.one_hot((a + b) % program["p"], program["p"]).double() * 20

    fails(checks.synthesis, answer_table, program, match="of the variance of modadd-113's logits")

    cached, run, grids = {}, reference.run_program, understanding.pair_grids(113)

    def cached_in_order(a, b, program):  # a table in the order of the pairs, ignoring a and b
        if "logits" not in cached:
            cached["logits"] = run(*grids, program)
        return cached["logits"][: len(a)]

    fails(checks.synthesis, cached_in_order, program, match="makes modadd-113's prediction on")


# --------------------------------------------------------------------------------------------------------------
# 4.1-4.2 proofs about max-of-K
# --------------------------------------------------------------------------------------------------------------


def test_brute_force_feedback():
    def last_token_as_largest(model):  # "right" judged against the last token instead of the largest
        d_vocab, k = model.cfg.d_vocab, model.cfg.n_ctx
        inputs = understanding.all_inputs(d_vocab, k, 0, d_vocab**k)
        largest = inputs.max(-1).values
        below = inputs.masked_fill(inputs == largest[:, None], -1).max(-1).values
        below = torch.where(below < 0, largest, below)
        right = (model(inputs)[:, -1].argmax(-1) == inputs[:, -1]).double()
        counts = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.float64)
        counts.index_put_((largest, inputs[:, -1], below), right, accumulate=True)
        return counts

    fails(checks.brute_force_correct, last_token_as_largest, match="so each count is its cell's size) are wrong")
    count, sizes_of = reference.brute_force_correct, understanding.cell_sizes

    def over_counted(model):  # where some inputs are wrong, one more than the cell holds
        counts, sizes = count(model), sizes_of(model.cfg.d_vocab, model.cfg.n_ctx)
        return torch.where(counts < sizes, sizes + 1, counts)

    fails(checks.brute_force_correct, over_counted, match="each input belongs to exactly one cell")


def _certify_with_alpha_one(model):
    """The proof with all attention on m (alpha = 1): ignores that other tokens take attention. Unsound."""
    d_vocab = model.cfg.d_vocab
    embed = model.W_E.double()
    ov = embed @ model.W_V[0, 0].double() @ model.W_O[0, 0].double() @ model.W_U.double()
    direct = embed @ model.W_U.double()
    certified = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.bool)
    for m in range(d_vocab):
        for q in range(m + 1):
            bound = direct[q, m] - direct[q] + ov[m, m] - ov[m]
            bound[m] = math.inf
            certified[m, q, :] = bool((bound > 0).all())
    return certified


def test_certify_feedback():
    fails(checks.certify, _certify_with_alpha_one, match="your proof is unsound")
    nothing = lambda model: torch.zeros((model.cfg.d_vocab,) * 3, dtype=torch.bool)  # noqa: E731
    fails(checks.certify, nothing, match="proves only 0.0000")

    def without_s(model):  # sound, and complete on the sharp model, but s always taken as m - 1: looser
        d_vocab, k = model.cfg.d_vocab, model.cfg.n_ctx
        embed = model.W_E.double()
        scores = (embed @ model.W_Q[0, 0].double()) @ (embed @ model.W_K[0, 0].double()).T
        scores = scores / math.sqrt(model.W_Q.shape[-1])
        ov = embed @ model.W_V[0, 0].double() @ model.W_O[0, 0].double() @ model.W_U.double()
        direct = embed @ model.W_U.double()
        certified = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.bool)
        certified[0, 0, 0] = True  # every token 0: always right in these models
        for m in range(1, d_vocab):
            x, y = ov[m, m] - ov[m], (ov[:m, m : m + 1] - ov[:m]).min(dim=0).values
            for q in range(m + 1):
                top = scores[q, :m].max()
                rest = (k - 1) * torch.exp(top - scores[q, m]) if q == m else torch.exp(scores[q, q] - scores[q, m])
                rest = rest if q == m else rest + (k - 2) * torch.exp(top - scores[q, m])
                alpha = 1 / (1 + rest)
                bound = direct[q, m] - direct[q] + torch.minimum(alpha * x + (1 - alpha) * y, x)
                bound[m] = math.inf
                certified[m, q, : m + 1] = bool((bound > understanding.CERTIFY_MARGIN).all())
        return certified

    fails(checks.certify, without_s, match="the chapter's proof reaches")
    fails(checks.certify, lambda model: reference.certify(model).int(), match="should be a boolean tensor")


def test_a_proof_that_enumerates_inputs_is_stopped(monkeypatch):
    monkeypatch.setattr(checks, "CERTIFY_SECONDS", 1.0)

    def by_brute_force(model):
        sizes = understanding.cell_sizes(model.cfg.d_vocab, model.cfg.n_ctx)
        return reference.brute_force_correct(model) == sizes

    fails(checks.certify, by_brute_force, match="a compact proof must not enumerate")


def test_a_proof_by_sampling_is_caught():
    """Certifying the cells where a few random inputs are right is a guess, not a proof: the check finds cells where
    it is wrong (cell by cell on small models, or with the worst input it builds on the big one)."""

    def by_sampling(model):
        d_vocab, k = model.cfg.d_vocab, model.cfg.n_ctx
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randint(0, d_vocab, (2000, k), generator=generator)
        largest = inputs.max(-1).values
        below = inputs.masked_fill(inputs == largest[:, None], -1).max(-1).values
        below = torch.where(below < 0, largest, below)
        right = model(inputs)[:, -1].argmax(-1) == largest
        wrong = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.bool)
        seen = torch.zeros(d_vocab, d_vocab, d_vocab, dtype=torch.bool)
        seen[largest, inputs[:, -1], below] = True
        wrong[largest[~right], inputs[~right, -1], below[~right]] = True
        return seen & ~wrong

    fails(checks.certify, by_sampling, match="your proof is unsound")


# --------------------------------------------------------------------------------------------------------------
# 7.1 the north star
# --------------------------------------------------------------------------------------------------------------


def test_north_star_feedback():
    good = {"star": checks.STARS[0], "landing": "one two three four five", "claim": "one two three four five six"}
    fails(checks.north_star, dict(good, star="Understand everything", measured=1.0), match="slide 83's north stars")
    fails(checks.north_star, dict(good, landing="short", measured=1.0), match="'landing' should be a sentence")
    fails(checks.north_star, dict(good, measured="high"), match="'measured' should be the number")
    fails(checks.north_star, dict(good), match="exactly the keys")


# --------------------------------------------------------------------------------------------------------------
# The solution cells work as graded: from their own source, with no library and (weights) no training
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "grade_id", "no_training"),
    [
        ("induction_weights", "test-induction", True),
        ("fourier_weights", "test-fourier", True),
        ("run_program", "test-run", False),
    ],
)
def test_the_solution_cells_run_in_a_box_of_their_own(name, grade_id, no_training, capsys):
    """Graded, these functions run from their cell's source with torch, einops, math, numpy and functools only
    (instructor.judge.defining_source and its runner), the weights with the training lock in place first."""
    import functools
    import pathlib

    import einops
    import nbformat
    import numpy

    from mechinterp_course.instructor import judge

    path = pathlib.Path(__file__).resolve().parents[1] / "solutions" / "06_understanding" / "06_understanding.ipynb"
    nb = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    source = judge.defining_source(nb, index, name)
    assert "@exercise" not in source and "mechinterp_course" not in source and "understanding" not in source
    box = {"__name__": "__student__", "torch": torch, "einops": einops, "math": math, "np": numpy}
    box.update(numpy=numpy, functools=functools)
    unlock = training_lock.lock() if no_training else (lambda: None)
    try:
        exec(compile(source, "<the cell>", "exec"), box)
        function = box[name]
    finally:
        unlock()
    passes(getattr(checks, name), function, capsys=capsys)


def test_a_table_of_answers_is_not_the_fourier_algorithm():
    """fourier_weights must give the algorithm's logits, not only its answers: a one-hot table of the right answers
    puts 2 * n_keys / (p - 1) of its variance on the key terms, the chapter's recipe 8 / pi^2."""
    p, keys = 31, [2, 9]
    x = torch.arange(p)
    table = torch.nn.functional.one_hot((x[:, None] + x[None, :]) % p, p).double()
    assert checks.logit_key_share(table, keys) == pytest.approx(2 * len(keys) / (p - 1))
    assert checks.logit_key_share(table, keys) < understanding.KEY_LOGIT_SHARE
    model = understanding.model_from_weights(reference.fourier_weights(p, keys))
    recipe = checks.logit_key_share(understanding.logit_grid(model, p), keys)
    assert recipe == pytest.approx(8 / math.pi**2, abs=0.01) and recipe > understanding.KEY_LOGIT_SHARE
