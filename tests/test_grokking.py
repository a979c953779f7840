"""The "Grokking" chapter's reference implementations and graders.

Every grader must pass the reference (called through a student-style wrapper, since the library's own function is
refused) and fail plausible wrong answers: hard-coded outputs, functions that ignore their inputs, common slips.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mechinterp_course import grokking, grokking_graders as gg, tasks
from mechinterp_course.graders import CheckFailed


def student(fn):
    """The reference, wrapped so that it looks like a student's own function (defined in this module)."""

    def own(*args, **kwargs):
        return fn(*args, **kwargs)

    own.__module__ = "__main__"
    return own


def fails(check, fn, match=None):
    with pytest.raises(CheckFailed, match=match):
        check(fn)


# --------------------------------------------------------------------------------------------------------------
# Reference functions on known cases
# --------------------------------------------------------------------------------------------------------------


def test_fourier_basis_is_orthonormal_and_ordered():
    basis, labels = grokking.fourier_basis(13)
    assert torch.allclose(basis @ basis.T, torch.eye(13), atol=1e-5)
    assert labels[:3] == ["const", "cos 1", "sin 1"] and len(labels) == 13
    x = torch.arange(13.0)
    assert torch.allclose(basis[3] * basis[3].norm().reciprocal(), torch.cos(2 * math.pi * 2 * x / 13) /
                          torch.cos(2 * math.pi * 2 * x / 13).norm(), atol=1e-5)


def test_pure_cosine_has_a_single_fourier_component():
    p, k = 23, 7
    wave = torch.cos(2 * math.pi * k * torch.arange(p) / p + 1.1)[:, None].repeat(1, 4)
    norms = grokking.frequency_norms(wave, p)
    assert int(norms.argmax()) == k
    assert float(norms.pow(2).sum() - norms[k].pow(2)) < 1e-8
    assert grokking.key_frequencies(wave, p) == [k]
    assert float(grokking.key_frequency_fraction(wave, p, [k])) == pytest.approx(1.0, abs=1e-5)


def test_gini_extremes():
    assert float(grokking.gini(torch.ones(10))) == pytest.approx(0.0, abs=1e-9)
    one_hot = torch.zeros(10)
    one_hot[3] = 1
    assert float(grokking.gini(one_hot)) == pytest.approx(0.9)


def test_single_frequency_neuron_is_fully_explained():
    p, k = 17, 4
    a = torch.arange(p, dtype=torch.float32)[:, None, None]
    b = torch.arange(p, dtype=torch.float32)[None, :, None]
    acts = torch.cos(2 * math.pi * k * a / p) * torch.sin(2 * math.pi * k * b / p) + torch.cos(2 * math.pi * k * (a + b) / p)
    fraction, freq = grokking.neuron_frequency_fractions(acts, p)
    assert float(fraction[0]) == pytest.approx(1.0, abs=1e-4) and int(freq[0]) == k


def test_all_pairs_and_loss():
    tokens, labels = grokking.all_pairs(7)
    assert tokens.shape == (49, 3) and tokens[8].tolist() == [1, 1, 7] and int(labels[8]) == 2
    logits = torch.zeros(4, 3, 5)
    assert float(grokking.loss_at_equals(logits, torch.zeros(4, dtype=torch.long))) == pytest.approx(math.log(5))
    assert grokking.loss_at_equals(logits, torch.zeros(4, dtype=torch.long)).dtype == torch.float64


def test_fit_logits_recovers_an_exact_cosine_sum():
    p, keys, alpha = 13, [2, 5], torch.tensor([3.0, 1.5], dtype=torch.float64)
    logits = (grokking.logit_features(p, keys) * alpha).sum(-1) + torch.randn(p, p, 1, dtype=torch.float64)
    fitted, explained = grokking.fit_logits(logits, keys)
    assert torch.allclose(fitted, alpha, atol=1e-8) and float(explained) == pytest.approx(1.0)


def test_restricted_and_excluded_split_is_exact():
    p, keys = 11, [3]
    logits = (grokking.logit_features(p, keys) * 5).sum(-1).float()
    kept, rest = grokking.split_sum_terms(logits, keys)
    assert torch.allclose(kept + rest, logits.double(), atol=1e-6)
    labels = (torch.arange(p)[:, None] + torch.arange(p)[None, :]) % p
    mask = torch.ones(p, p, dtype=torch.bool)
    # A pure cosine-sum model: restricting changes nothing; excluding leaves a constant (chance loss).
    full = torch.nn.functional.cross_entropy(logits.double().reshape(-1, p), labels.flatten())
    assert float(grokking.restricted_loss(logits, labels, keys)) == pytest.approx(float(full), abs=1e-6)
    assert float(grokking.excluded_loss(logits, labels, keys, mask)) == pytest.approx(math.log(p), abs=1e-6)


def test_find_phases_on_a_hand_made_trajectory():
    steps = list(range(0, 100, 10))
    excluded = [5, 3, 1, 2, 4, 6, 6, 6, 6, 6]
    test_loss = [4, 8, 10, 9, 9, 3, 1, 0.1, 0.01, 0.01]
    weights = [10, 12, 12, 11, 10, 8, 5, 3.2, 3.05, 3.0]
    # memorisation ends at the min of excluded (step 20); test loss < 5 first at step 50; weights <= 3 + 0.1 * 5 at 70.
    assert grokking.find_phases(steps, excluded, test_loss, weights) == (20, 50, 70)


def test_claim_validation_messages():
    base = grokking.CHAPTER_CONFIG
    ok = {"config": dataclasses.replace(base, train_fraction=0.9, steps=100), "change": "train_fraction",
          "prediction": "does not grok"}
    assert grokking.validate_claim(ok)[1] == "train_fraction"
    with pytest.raises(ValueError, match="exactly the kind"):
        grokking.validate_claim(dict(ok, change="operation"))
    with pytest.raises(ValueError, match="exactly the kind"):
        grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], d_mlp=128)))
    with pytest.raises(ValueError, match="it differs in: nothing"):
        grokking.validate_claim(dict(ok, config=base))
    with pytest.raises(ValueError, match="keep lr"):
        grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], lr=1e-2)))
    # steps is the student's to explore with; the grader always judges the whole budget.
    config, _, _ = grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], steps=100_000)))
    assert config.steps == grokking.claim_step_budget(config) < 100_000
    assert grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], steps=1)))[0].steps == config.steps
    # A change too small to be another setup is refused; one at the threshold is accepted.
    for small, kind in [(dict(train_fraction=0.55), "train_fraction"), (dict(strength=2.5), "regulariser"),
                        (dict(d_model=60, d_mlp=240), "architecture")]:
        with pytest.raises(ValueError, match="same setup"):
            grokking.validate_claim(dict(ok, config=dataclasses.replace(base, **small), change=kind))
    for enough, kind in [(dict(train_fraction=0.6), "train_fraction"), (dict(strength=0.0, regulariser="none"), "regulariser"),
                         (dict(d_mlp=192), "architecture"), (dict(act_fn="gelu"), "architecture")]:
        assert grokking.validate_claim(dict(ok, config=dataclasses.replace(base, **enough), change=kind))[1] == kind
    with pytest.raises(ValueError, match="too costly"):
        grokking.validate_claim(dict(ok, config=dataclasses.replace(base, d_model=128, d_mlp=512), change="architecture"))
    with pytest.raises(ValueError, match="prediction"):
        grokking.validate_claim(dict(ok, prediction="maybe"))
    with pytest.raises(ValueError, match="keys"):
        grokking.validate_claim({"config": base})
    big = dataclasses.replace(base, d_model=128, d_mlp=512, n_layers=2)
    assert grokking.claim_step_budget(big) < grokking.CLAIM_MAX_STEPS


def test_claim_verdict_rule():
    row = lambda step, tr, te: {"step": step, "train_accuracy": tr, "test_accuracy": te}  # noqa: E731
    assert grokking.claim_verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2), row(200, 1.0, 1.0)]) == "groks"
    assert grokking.claim_verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2), row(100, 1.0, 1.0)]) == "does not grok"
    assert grokking.claim_verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2)]) == "does not grok"


# --------------------------------------------------------------------------------------------------------------
# Graders accept the reference and refuse wrong answers
# --------------------------------------------------------------------------------------------------------------


CASES = {
    gg.check_all_pairs: grokking.all_pairs,
    gg.check_split_indices: tasks.split_indices,
    gg.check_gini: grokking.gini,
    gg.check_loss_at_equals: grokking.loss_at_equals,
    gg.check_grok_steps: grokking.grok_steps,
    gg.check_fourier_basis: lambda p: grokking.fourier_basis(p)[0],
    gg.check_frequency_norms: grokking.frequency_norms,
    gg.check_neuron_frequency_fractions: grokking.neuron_frequency_fractions,
    gg.check_key_frequency_fraction: grokking.key_frequency_fraction,
    gg.check_fit_logits: grokking.fit_logits,
    gg.check_restricted_loss: grokking.restricted_loss,
    gg.check_excluded_loss: grokking.excluded_loss,
    gg.check_sum_of_squared_weights: grokking.sum_of_squared_weights,
    gg.check_find_phases: grokking.find_phases,
}


@pytest.mark.parametrize("check", list(CASES), ids=lambda c: c.__name__)
def test_grader_passes_the_reference(check, capsys):
    check(student(CASES[check]))
    assert "\u2705" in capsys.readouterr().out


@pytest.mark.parametrize("check", list(CASES), ids=lambda c: c.__name__)
def test_grader_refuses_the_library_function_and_unfinished_stubs(check):
    library_function = grokking.fourier_basis if check is gg.check_fourier_basis else CASES[check]
    fails(check, library_function, match="reference implementation")

    def stub(*args, **kwargs):
        raise NotImplementedError

    stub.__module__ = "__main__"
    fails(check, stub, match="not implemented")


@pytest.mark.parametrize("check", list(CASES), ids=lambda c: c.__name__)
def test_grader_fails_a_hard_coded_answer(check):
    """Record the reference's answer on the first input the grader uses, and return it whatever the input."""
    reference, recorded = CASES[check], []

    def hard_coded(*args, **kwargs):
        if not recorded:
            recorded.append(reference(*args, **kwargs))
        return recorded[0]

    hard_coded.__module__ = "__main__"
    fails(check, hard_coded)


def test_wrong_answers_fail_with_useful_messages():
    fails(gg.check_loss_at_equals, student(lambda logits, labels: torch.nn.functional.cross_entropy(logits[:, -1], labels)),
          match="float64")
    fails(gg.check_loss_at_equals, student(lambda logits, labels: torch.nn.functional.cross_entropy(
        logits.mean(1).double(), labels)))  # uses every position
    fails(gg.check_all_pairs, student(lambda p: (grokking.all_pairs(p)[0].float(), grokking.all_pairs(p)[1])), match="dtype")
    fails(gg.check_all_pairs, student(lambda p: (grokking.all_pairs(p)[0][:, [1, 0, 2]], grokking.all_pairs(p)[1])),
          match="tokens")
    unnormalised = lambda p: grokking.fourier_basis(p)[0] * 2  # noqa: E731
    fails(gg.check_fourier_basis, student(unnormalised), match="orthonormal")
    fails(gg.check_frequency_norms, student(lambda W, p: (grokking.fourier_basis(p)[0] @ W).norm(dim=1)[: (p + 1) // 2]),
          match="shape|wrong")
    fails(gg.check_grok_steps, student(lambda h, threshold=0.99: grokking.grok_steps(h, 0.995)))
    fails(gg.check_grok_steps, student(lambda h, threshold=0.99: tuple(
        next((i for i, r in enumerate(h) if r[f"{s}_accuracy"] >= threshold), None) for s in ("train", "test"))))
    # Ignoring the key frequencies, the mask or the input.
    fails(gg.check_restricted_loss, student(lambda logits, labels, keys: grokking.restricted_loss(logits, labels, [1])))
    fails(gg.check_excluded_loss, student(lambda logits, labels, keys, mask: grokking.excluded_loss(
        logits, labels, keys, torch.ones_like(mask))))
    fails(gg.check_key_frequency_fraction, student(lambda x, p, keys: (grokking.fourier_basis(p)[0] @ x.reshape(p, -1))[
        [r for k in keys for r in (2 * k - 1, 2 * k)]].pow(2).sum() / x.reshape(p, -1).pow(2).sum()))  # keeps the constant
    def uncentred_fit(logits, keys):  # forgets to remove each (a, b)'s mean over c
        X = grokking.logit_features(logits.shape[0], keys).reshape(-1, len(keys))
        y = logits.double().reshape(-1, 1)
        alpha = torch.linalg.lstsq(X, y).solution
        return alpha[:, 0], 1 - (y - X @ alpha).pow(2).sum() / y.pow(2).sum()

    fails(gg.check_fit_logits, student(uncentred_fit))
    fails(gg.check_sum_of_squared_weights, student(lambda m: sum(p.pow(2).sum() for n, p in m.named_parameters()
                                                                if "weight" in n)))
    fails(gg.check_neuron_frequency_fractions, student(lambda acts, p: (grokking.neuron_frequency_fractions(acts, p)[0],
                                                                        grokking.neuron_frequency_fractions(acts, p)[1] - 1)))
    fails(gg.check_find_phases, student(lambda s, e, t, w: (s[int(torch.tensor(e).argmin())], s[-1], s[-1])))
    # The phase rules read too loosely: the test-loss peak or the weights' minimum taken over the whole run.
    for whole_run_peak, whole_run_min in [(True, False), (False, True)]:
        fails(gg.check_find_phases, student(lambda s, e, t, w, a=whole_run_peak, b=whole_run_min:
                                            _loose_phases(s, e, t, w, a, b)))
    # Split: unshuffled, floored instead of rounded, or ignoring the seed.
    fails(gg.check_split_indices, student(lambda n, f, seed: (torch.arange(round(f * n)), torch.arange(round(f * n), n))),
          match="shuffle")
    fails(gg.check_split_indices, student(lambda n, f, seed: tasks.split_indices(n, int(f * n) / n + 1e-12, seed)),
          match="round")
    fails(gg.check_split_indices, student(lambda n, f, seed: tasks.split_indices(n, f, 0)), match="train indices")
    # Gini: unsorted values, or the textbook slip of dividing by n - 1.
    fails(gg.check_gini, student(lambda v: (((2 * torch.arange(1, len(v) + 1) - len(v) - 1) * v.double()).sum()
                                            / (len(v) * v.double().sum()))))
    fails(gg.check_gini, student(lambda v: grokking.gini(v) * len(v) / (len(v) - 1)))


def _loose_phases(steps, excluded, test_loss, weights, whole_run_peak, whole_run_min):
    """find_phases with one rule read too loosely (the kind of slip the grader's trap trajectories catch)."""
    i_mem = min(range(len(steps)), key=lambda i: (excluded[i], i))
    peak = max(test_loss) if whole_run_peak else max(test_loss[i_mem:])
    later = [i for i in range(i_mem + 1, len(steps)) if test_loss[i] < grokking.CLEANUP_START_FRACTION * peak]
    i_start = later[0] if later else len(steps) - 1
    w_min = min(weights) if whole_run_min else min(weights[i_start:])
    bound = w_min + (1 - grokking.CLEANUP_END_FRACTION) * (weights[i_start] - w_min)
    i_end = next((i for i in range(i_start, len(steps)) if weights[i] <= bound), len(steps) - 1)
    return steps[i_mem], steps[i_start], steps[i_end]


def test_sum_of_squared_weights_grader_leaves_the_random_state_alone():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    gg.check_sum_of_squared_weights(student(grokking.sum_of_squared_weights))
    assert torch.equal(torch.rand(3), expected)


def test_margins():
    logits = torch.tensor([[[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]]])  # [1, 2, 3]
    labels = torch.tensor([[1, 0]])
    assert grokking.margins(logits, labels).tolist() == [[3.0, -3.0]]


def test_claim_grader_rejects_invalid_claims():
    with pytest.raises(CheckFailed, match="exactly the kind"):
        gg.check_claim({"config": grokking.CHAPTER_CONFIG, "change": "operation", "prediction": "groks"})
    with pytest.raises(CheckFailed, match="dict"):
        gg.check_claim("it groks")


@pytest.mark.slow
def test_claim_grader_reruns_and_checks_the_prediction(capsys):
    claim = {"config": dataclasses.replace(grokking.CHAPTER_CONFIG, train_fraction=0.9, steps=300),
             "change": "train_fraction", "prediction": "does not grok"}
    gg.check_claim(claim)
    assert "\u2705" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="you predicted 'groks'"):
        gg.check_claim(dict(claim, prediction="groks"))


@pytest.mark.slow
def test_a_claim_cannot_be_won_by_cutting_the_run_short():
    """'Does not grok', with steps = 1, on a setup that groks within the budget (d_mlp 192: 99% train accuracy at
    step 110, test at 250, measured): the grader runs the whole budget, so the claim fails."""
    claim = {"config": dataclasses.replace(grokking.CHAPTER_CONFIG, d_mlp=192, steps=1), "change": "architecture",
             "prediction": "does not grok"}
    with pytest.raises(CheckFailed, match="counts as 'groks'"):
        gg.check_claim(claim)
