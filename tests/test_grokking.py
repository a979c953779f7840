"""Chapter 02 (grokking): its tools, its reference answers and its checks.

Every check must pass the reference and right answers written differently (float64, einops, another algorithm),
fail hard-coded answers and answers that ignore their input, and give a *typical* wrong answer the message that
teaches (not only a failure). Checks are called as a notebook's test cells call them, with a fresh record of what
passed, so that a failure built on an earlier exercise names it.
"""

from __future__ import annotations

import dataclasses
import math
import re

import einops
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import fails as fails_with  # noqa: E402 - the suite's shared helpers
from conftest import own as student  # noqa: E402

from mechinterp_course import grokking, models, recipes, tasks
from mechinterp_course.checking import CheckFailed, exercise
from mechinterp_course.grokking import checks, reference


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


# --------------------------------------------------------------------------------------------------------------
# Right answers pass (the reference, in the instant check and in a hidden test)
# --------------------------------------------------------------------------------------------------------------

CHECKED = {
    checks.all_pairs: reference.all_pairs,
    checks.split_indices: reference.split_indices,
    checks.loss_at_equals: reference.loss_at_equals,
    checks.grok_steps: reference.grok_steps,
    checks.fourier_basis: reference.fourier_basis,
    checks.frequency_norms: reference.frequency_norms,
    checks.neuron_frequency_fractions: reference.neuron_frequency_fractions,
    checks.fit_logits: reference.fit_logits,
    checks.key_frequency_fraction: reference.key_frequency_fraction,
    checks.key_projection: reference.key_projection,
    checks.restricted_loss: reference.restricted_loss,
    checks.excluded_loss: reference.excluded_loss,
    checks.frequency_ablation_losses: reference.frequency_ablation_losses,
    checks.sum_of_squared_weights: reference.sum_of_squared_weights,
    checks.gini: reference.gini,
    checks.find_phases: reference.find_phases,
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


# --------------------------------------------------------------------------------------------------------------
# 1.1 all_pairs
# --------------------------------------------------------------------------------------------------------------


def meshgrid_pairs(p):
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    return tokens, (tokens[:, 0] + tokens[:, 1]) % p


def test_all_pairs_feedback(capsys):
    passes(checks.all_pairs, meshgrid_pairs, capsys=capsys)
    fails(
        checks.all_pairs,
        lambda p: (reference.all_pairs(p)[0].float(), reference.all_pairs(p)[1]),
        match="tokens has dtype torch.float32",
    )
    swapped = lambda p: (reference.all_pairs(p)[0][:, [1, 0, 2]], reference.all_pairs(p)[1])  # noqa: E731
    fails(checks.all_pairs, swapped, match="(which should hold a = 0, b = 2, in the order a * p + b), column a")
    fails(checks.all_pairs, lambda p: reference.all_pairs(p + 1) if p > 3 else reference.all_pairs(p), match="shape")
    no_equals = lambda p: (
        torch.cat([reference.all_pairs(p)[0][:, :2], torch.zeros(p * p, 1, dtype=torch.long)], 1),
        reference.all_pairs(p)[1],
    )  # noqa: E731
    fails(checks.all_pairs, no_equals, match="the third token of every row must be '='")
    minus = lambda p: (
        reference.all_pairs(p)[0],
        (reference.all_pairs(p)[0][:, 0] - reference.all_pairs(p)[0][:, 1]) % p,
    )  # noqa: E731
    fails(checks.all_pairs, minus, match="labels do not match your own tokens")


# --------------------------------------------------------------------------------------------------------------
# 1.2 split_indices
# --------------------------------------------------------------------------------------------------------------


def test_split_feedback(capsys):
    def chunks(n, fraction, seed):  # right, written differently
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return tuple(order.split([round(fraction * n), n - round(fraction * n)]))

    passes(checks.split_indices, chunks, capsys=capsys)
    fails(
        checks.split_indices,
        lambda n, f, seed: (torch.arange(round(f * n)), torch.arange(round(f * n), n)),
        match="shuffle first",
    )
    floored = lambda n, f, seed: reference.split_indices(n, int(f * n) / n + 1e-12, seed)  # noqa: E731
    fails(checks.split_indices, floored, match="expected round(train_fraction * n) = 63")
    fails(checks.split_indices, lambda n, f, seed: reference.split_indices(n, f, 0), match="must depend on `seed`")

    def global_generator(n, fraction, seed):
        order = torch.randperm(n)
        return order[: round(fraction * n)], order[round(fraction * n) :]

    fails(checks.split_indices, global_generator, match="two calls with the same seed gave different splits")

    def argsort(n, fraction, seed):  # a random split, but not the documented permutation
        order = torch.rand(n, generator=torch.Generator().manual_seed(seed)).argsort()
        return order[: round(fraction * n)], order[round(fraction * n) :]

    fails(checks.split_indices, argsort, match="torch.randperm(n, generator=torch.Generator().manual_seed(seed))")


def test_the_split_keeps_the_shipped_models_split():
    """tasks.modular_addition's default split is the reference answer: the same 3,831 pairs modadd-113 trained on."""
    data = tasks.modular_addition(recipes.MODADD_P, 0.3, 598)
    assert len(data.train_labels) == models.card("modadd-113")["training"]["n_train"]
    own = tasks.modular_addition(recipes.MODADD_P, 0.3, 598, split=student(reference.split_indices))
    assert torch.equal(own.train_tokens, data.train_tokens)
    assert not hasattr(tasks, "split_indices")


# --------------------------------------------------------------------------------------------------------------
# 1.3 loss_at_equals
# --------------------------------------------------------------------------------------------------------------


def test_loss_feedback(capsys):
    passes(
        checks.loss_at_equals,
        lambda logits, labels: -logits[:, -1].double().log_softmax(-1).gather(-1, labels[:, None]).mean(),
        capsys=capsys,
    )
    passes(
        checks.loss_at_equals,
        lambda logits, labels: (
            torch.logsumexp(logits[:, -1].double(), -1) - logits[:, -1].double()[torch.arange(len(labels)), labels]
        ).mean(),
        capsys=capsys,
    )
    # The case: computed in float32, converted afterwards. Its dtype is float64; its values are not.
    late = lambda logits, labels: F.cross_entropy(logits[:, -1], labels).double()  # noqa: E731
    fails(checks.loss_at_equals, late, match="that is what float32 gives")
    fails(checks.loss_at_equals, late, match="converting its result is too late")
    fails(
        checks.loss_at_equals,
        lambda logits, labels: F.cross_entropy(logits[:, -1], labels),
        match="the loss has dtype torch.float32",
    )
    every_position = lambda logits, labels: F.cross_entropy(logits.mean(1).double(), labels)  # noqa: E731
    fails(checks.loss_at_equals, every_position, match="positions 0 and 1 must not matter")
    fails(
        checks.loss_at_equals,
        lambda logits, labels: torch.tensor(1.0, dtype=torch.float64),
        match="of uniform logits over 7 answers (expected ln 7)",
    )


def test_the_confident_trial_separates_float32_from_float64():
    """The precision trial's margins give float64 losses of about 1e-7 to 1e-11 and float32 losses of 0 or
    multiples of 1.19e-7: they differ by far more than the check's tolerance, whatever the seed."""
    for seed in range(20):
        logits, labels = checks.confident_logits(16, torch.Generator().manual_seed(seed))
        exact = float(reference.loss_at_equals(logits, labels))
        rounded = float(F.cross_entropy(logits[:, -1], labels))
        assert 1e-12 < exact < 1e-6
        assert abs(rounded - exact) > 0.05 * exact


# --------------------------------------------------------------------------------------------------------------
# 2.1 grok_steps
# --------------------------------------------------------------------------------------------------------------


def test_grok_steps_feedback(capsys):
    def loop(history, threshold=0.99):
        train = test = None
        for row in history:
            if train is None and row["train_accuracy"] >= threshold:
                train = row["step"]
            if test is None and row["test_accuracy"] >= threshold:
                test = row["step"]
        return train, test

    passes(checks.grok_steps, loop, capsys=capsys)
    strict = lambda h, threshold=0.99: tuple(
        next((r["step"] for r in h if r[k] > threshold), None)  # noqa: E731
        for k in ("train_accuracy", "test_accuracy")
    )
    fails(
        checks.grok_steps, strict, match="train_step and test_step are wrong: the first row whose accuracy is at least"
    )
    positions = lambda h, threshold=0.99: tuple(
        next((i for i, r in enumerate(h) if r[k] >= threshold), None)  # noqa
        for k in ("train_accuracy", "test_accuracy")
    )
    fails(checks.grok_steps, positions, match="you returned the rows' positions")
    fixed_threshold = lambda h, threshold=0.99: reference.grok_steps(h, 0.99)  # noqa: E731
    fails(checks.grok_steps, fixed_threshold, match="threshold 0.9")
    minus_one = lambda h, threshold=0.99: tuple(
        -1 if s is None else s  # noqa: E731
        for s in reference.grok_steps(h, threshold)
    )
    fails(checks.grok_steps, minus_one, match="return None for those")


# --------------------------------------------------------------------------------------------------------------
# 4.1 fourier_basis, 4.2 frequency_norms
# --------------------------------------------------------------------------------------------------------------


def complex_basis(p):  # right, written differently: real and imaginary parts of exp(2 pi i k x / p), in float32
    x = torch.arange(p)
    rows = [torch.ones(p)]
    for k in range(1, (p - 1) // 2 + 1):
        wave = torch.exp(2j * math.pi * k * x / p)
        rows += [wave.real.float(), wave.imag.float()]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def test_fourier_basis_feedback(capsys):
    passes(checks.fourier_basis, complex_basis, capsys=capsys)
    fails(checks.fourier_basis, lambda p: reference.fourier_basis(p) * 2, match="has norm 2 for p = 5")
    sin_first = lambda p: reference.fourier_basis(p)[
        [0]
        + [
            r + (1 if r % 2 else -1)  # noqa: E731
            for r in range(1, p)
        ]
    ]
    fails(checks.fourier_basis, sin_first, match="k=1 (cos)")
    repeated = lambda p: torch.cat([reference.fourier_basis(p)[:2], reference.fourier_basis(p)[1:-1]])  # noqa
    fails(checks.fourier_basis, repeated, match="are not orthogonal")
    fails(checks.fourier_basis, lambda p: torch.eye(p), match="row 0 (const) is not constant")


def test_frequency_norms_feedback(capsys):
    def norms_einops(W, p):  # right, written differently
        coefficients = einops.einsum(complex_basis(p).double(), W.double(), "f x, x d -> f d")
        per_frequency = einops.reduce(coefficients[1:].pow(2), "(k two) d -> k", "sum", two=2).sqrt()
        return torch.cat([coefficients[0].norm()[None], per_frequency])

    passes(checks.frequency_norms, norms_einops, capsys=capsys)
    rows_not_pairs = lambda W, p: (reference.fourier_basis(p) @ W.double()).norm(dim=1)[: (p + 1) // 2]  # noqa
    fails(checks.frequency_norms, rows_not_pairs, match="the squares of your norms add up to")
    squared = lambda W, p: reference.frequency_norms(W, p) ** 2  # noqa: E731
    fails(checks.frequency_norms, squared, match="but ||W||² is")


def test_a_later_exercise_names_the_earlier_one_it_builds_on():
    """frequency_norms built on the student's own (unnormalised) fourier_basis: the message says to fix 4.1."""

    @exercise
    def fourier_basis(p):
        return reference.fourier_basis(p) * 2

    def frequency_norms(W, p):
        coefficients = fourier_basis(p) @ W.double()
        pairs = einops.rearrange(coefficients[1:], "(k two) d -> k (two d)", two=2)
        return torch.cat([coefficients[0].norm()[None], pairs.norm(dim=1)])

    fails(checks.frequency_norms, frequency_norms, match="builds on fourier_basis (exercise 4.1)")


# --------------------------------------------------------------------------------------------------------------
# 5.1 neuron_frequency_fractions, 6.1 fit_logits, 7.1 key_frequency_fraction
# --------------------------------------------------------------------------------------------------------------


def test_neuron_fractions_feedback(capsys):
    def looped(acts, p):  # right, written differently: one neuron and one frequency at a time, in numpy
        basis = reference.fourier_basis(p).numpy()
        fractions, frequencies = [], []
        for n in range(acts.shape[-1]):
            coefficients = basis @ acts[:, :, n].double().numpy() @ basis.T
            coefficients[0, 0] = 0.0
            energy = [
                (coefficients[np.ix_([0, 2 * k - 1, 2 * k], [0, 2 * k - 1, 2 * k])] ** 2).sum()
                for k in range(1, (p - 1) // 2 + 1)
            ]
            fractions.append(max(energy) / (coefficients**2).sum())
            frequencies.append(int(np.argmax(energy)) + 1)
        return torch.tensor(fractions), torch.tensor(frequencies)

    passes(checks.neuron_frequency_fractions, looped, capsys=capsys)
    off_by_one = lambda acts, p: (
        reference.neuron_frequency_fractions(acts, p)[0],  # noqa: E731
        reference.neuron_frequency_fractions(acts, p)[1] - 1,
    )
    fails(checks.neuron_frequency_fractions, off_by_one, match="frequencies count from 1")

    def keeps_the_mean(acts, p):
        basis = reference.fourier_basis(p)
        coefficients = einops.einsum(
            basis, einops.einsum(basis, acts.double(), "i a, a b n -> i b n"), "j b, i b n -> i j n"
        )
        energy = torch.stack(
            [
                coefficients[[0, 2 * k - 1, 2 * k]][:, [0, 2 * k - 1, 2 * k]].pow(2).sum((0, 1))
                for k in range(1, (p - 1) // 2 + 1)
            ]
        )
        best, index = energy.max(0)
        return best / coefficients.pow(2).sum((0, 1)), index + 1

    fails(checks.neuron_frequency_fractions, keeps_the_mean, match="built from frequency")


def test_fit_logits_feedback(capsys):
    def normal_equations(logits, key_freqs):  # right, written differently
        p = logits.shape[0]
        target = logits.double() - logits.double().mean(-1, keepdim=True)
        features = torch.stack([checks.cosine_sum_table(p, [k], [1.0]) for k in key_freqs], -1).flatten(0, 2)
        alpha = torch.linalg.solve(features.T @ features, features.T @ target.flatten())
        residual = target.flatten() - features @ alpha
        return alpha, 1 - residual.pow(2).sum() / target.pow(2).sum()

    passes(checks.fit_logits, normal_equations, capsys=capsys)

    def uncentred(logits, key_freqs):
        p = logits.shape[0]
        X = torch.stack([checks.cosine_sum_table(p, [k], [1.0]) for k in key_freqs], -1).flatten(0, 2)
        y = logits.double().flatten()[:, None]
        alpha = torch.linalg.lstsq(X, y).solution
        return alpha[:, 0], 1 - (y - X @ alpha).pow(2).sum() / y.pow(2).sum()

    fails(checks.fit_logits, uncentred, match="Centre each (a, b)'s logits over c before fitting")


def test_key_frequency_fraction_feedback(capsys):
    def flattened(x, p, keys):  # right, written differently
        coefficients = complex_basis(p).double() @ x.double().reshape(p, -1)
        rows = torch.tensor([r for k in keys for r in (2 * k - 1, 2 * k)])
        return coefficients[rows].pow(2).sum() / coefficients[1:].pow(2).sum()

    passes(checks.key_frequency_fraction, flattened, capsys=capsys)
    with_constant = lambda x, p, keys: (  # noqa: E731
        (reference.fourier_basis(p) @ x.double().reshape(p, -1))[[r for k in keys for r in (2 * k - 1, 2 * k)]]
        .pow(2)
        .sum()
        / (reference.fourier_basis(p) @ x.double().reshape(p, -1)).pow(2).sum()
    )
    fails(checks.key_frequency_fraction, with_constant, match="the constant row is not variance")


# --------------------------------------------------------------------------------------------------------------
# 8.1-8.4 the split of the logits, restricted and excluded losses, ablations
# --------------------------------------------------------------------------------------------------------------


def projection_by_loops(logits, key_freqs):  # right, written differently: one grid and one answer at a time
    x = logits.double()
    mean = x.mean(dim=(0, 1), keepdim=True)
    projection = torch.zeros_like(x)
    for direction in grokking.sum_directions(x.shape[0], key_freqs):
        for c in range(x.shape[-1]):
            projection[:, :, c] += direction * ((x[:, :, c] - mean[0, 0, c]) * direction).sum()
    return mean, projection


def test_key_projection_feedback(capsys):
    passes(checks.key_projection, projection_by_loops, capsys=capsys)

    def unnormalised(logits, key_freqs):
        p = logits.shape[0]
        grid = torch.arange(p, dtype=torch.float64)[:, None] + torch.arange(p, dtype=torch.float64)[None, :]
        directions = torch.stack([f(2 * math.pi * k * grid / p) for k in key_freqs for f in (torch.cos, torch.sin)])
        x = logits.double()
        mean = x.mean(dim=(0, 1), keepdim=True)
        coefficients = einops.einsum(directions, x - mean, "d a b, a b c -> d c")
        return mean, einops.einsum(directions, coefficients, "d a b, d c -> a b c")

    fails(checks.key_projection, unnormalised, match="such a table lies in the span")

    def in_place(logits, key_freqs):  # right, but it leaves the caller's logits changed
        result = reference.key_projection(logits.clone(), key_freqs)
        logits.zero_()
        return result

    fails(checks.key_projection, in_place, match="modified its input `logits` in place")


def test_restricted_and_excluded_feedback(capsys):
    passes(
        checks.restricted_loss,
        lambda logits, labels, keys: F.cross_entropy(
            sum(projection_by_loops(logits, keys)).flatten(0, 1), labels.flatten()
        ),
        capsys=capsys,
    )
    no_mean = lambda logits, labels, keys: F.cross_entropy(  # noqa: E731
        reference.key_projection(logits, keys)[1].flatten(0, 1), labels.flatten()
    )
    fails(checks.restricted_loss, no_mean, match="a random table with a memorised part")
    every_pair = lambda logits, labels, keys, mask: reference.excluded_loss(  # noqa: E731
        logits, labels, keys, torch.ones_like(mask)
    )
    fails(checks.excluded_loss, every_pair, match="training pairs of")
    kept_instead = lambda logits, labels, keys, mask: reference.restricted_loss(logits, labels, keys)  # noqa: E731
    fails(checks.excluded_loss, kept_instead, match="nothing is left to tell the answers apart")


def test_a_loss_built_on_a_wrong_projection_names_it():
    @exercise
    def key_projection(logits, key_freqs):
        mean, projection = reference.key_projection(logits, key_freqs)
        return mean, 2 * projection

    def restricted_loss(logits, labels, key_freqs):
        mean, projection = key_projection(logits, key_freqs)
        return F.cross_entropy((mean + projection).flatten(0, 1), labels.flatten())

    fails(checks.restricted_loss, restricted_loss, match="builds on key_projection (exercise 8.1)")


def test_frequency_ablation_feedback(capsys):
    def one_by_one(logits, labels, freqs):  # right, written differently
        return torch.stack(
            [
                F.cross_entropy((logits.double() - projection_by_loops(logits, [k])[1]).flatten(0, 1), labels.flatten())
                for k in freqs
            ]
        )

    passes(checks.frequency_ablation_losses, one_by_one, capsys=capsys)
    all_at_once = lambda logits, labels, freqs: F.cross_entropy(  # noqa: E731
        (logits.double() - reference.key_projection(logits, freqs)[1]).flatten(0, 1), labels.flatten()
    ).expand(len(freqs))
    fails(checks.frequency_ablation_losses, all_at_once, match="each should be the loss of the sum without that term")
    keeps_only = lambda logits, labels, freqs: torch.stack(
        [
            reference.restricted_loss(logits, labels, [k])  # noqa
            for k in freqs
        ]
    )
    fails(checks.frequency_ablation_losses, keeps_only, match="each should be the unablated loss")


# --------------------------------------------------------------------------------------------------------------
# 9.1-9.3 sum of squared weights, Gini, phases
# --------------------------------------------------------------------------------------------------------------


def test_sum_of_squared_weights_feedback(capsys):
    passes(
        checks.sum_of_squared_weights,
        lambda model: sum(v.pow(2).sum() for v in model.state_dict().values()),
        capsys=capsys,
    )
    weights_only = lambda model: sum(
        p.detach().pow(2).sum()
        for n, p in model.named_parameters()  # noqa: E731
        if "weight" in n
    )
    fails(checks.sum_of_squared_weights, weights_only, match="biases are parameters too")
    norms = lambda model: sum(p.detach().norm() for p in model.parameters())  # noqa: E731
    fails(checks.sum_of_squared_weights, norms, match="parameters are all 1")


def test_gini_feedback(capsys):
    def mean_difference(values):  # right, written differently: mean absolute difference over twice the mean
        x = values.double()
        return (x[:, None] - x[None, :]).abs().mean() / (2 * x.mean())

    passes(checks.gini, mean_difference, capsys=capsys)
    fails(checks.gini, lambda v: reference.gini(v) * len(v) / (len(v) - 1), match="divide by n")
    unsorted = lambda v: (
        ((2 * torch.arange(1, len(v) + 1) - len(v) - 1) * v.double()).sum()
        / (  # noqa: E731
            len(v) * v.double().sum()
        )
    )
    fails(
        checks.gini,
        unsorted,
        match="in the middle (expected 1 - 1/n again: the values come in any order, so sort them ascending first)",
    )


def loose_phases(steps, excluded, test_loss, weights, whole_run_peak=False, whole_run_min=False):
    """find_phases with one rule read too loosely (the slips the synthetic trajectories' traps catch)."""
    i_mem = min(range(len(steps)), key=lambda i: (excluded[i], i))
    peak = max(test_loss) if whole_run_peak else max(test_loss[i_mem:])
    later = [i for i in range(i_mem + 1, len(steps)) if test_loss[i] < grokking.CLEANUP_START_FRACTION * peak]
    i_start = later[0] if later else len(steps) - 1
    w_min = min(weights) if whole_run_min else min(weights[i_start:])
    bound = w_min + (1 - grokking.CLEANUP_END_FRACTION) * (weights[i_start] - w_min)
    i_end = next((i for i in range(i_start, len(steps)) if weights[i] <= bound), len(steps) - 1)
    return steps[i_mem], steps[i_start], steps[i_end]


def test_find_phases_feedback(capsys):
    def in_numpy(steps, excluded, test_loss, weights):  # right, written differently
        excluded, test_loss, weights = map(np.asarray, (excluded, test_loss, weights))
        i_mem = int(np.argmin(excluded))
        below = np.nonzero(test_loss[i_mem + 1 :] < grokking.CLEANUP_START_FRACTION * test_loss[i_mem:].max())[0]
        i_start = i_mem + 1 + int(below[0]) if len(below) else len(steps) - 1
        w_min = weights[i_start:].min()
        bound = w_min + (1 - grokking.CLEANUP_END_FRACTION) * (weights[i_start] - w_min)
        i_end = i_start + int(np.nonzero(weights[i_start:] <= bound)[0][0])
        return steps[i_mem], steps[i_start], steps[i_end]

    passes(checks.find_phases, in_numpy, capsys=capsys)
    fails(
        checks.find_phases,
        lambda s, e, t, w: loose_phases(s, e, t, w, whole_run_peak=True),
        match="cleanup_start is wrong in 3 of 6 trajectories",
    )
    fails(
        checks.find_phases,
        lambda s, e, t, w: loose_phases(s, e, t, w, whole_run_peak=True),
        match="It goes wrong only on the trajectories with a spike during memorisation",
    )
    fails(
        checks.find_phases,
        lambda s, e, t, w: loose_phases(s, e, t, w, whole_run_min=True),
        match="Start with cleanup_end",
    )
    by_test_loss = lambda s, e, t, w: reference.find_phases(s, t, t, w)  # noqa: E731
    fails(checks.find_phases, by_test_loss, match="your memorisation_end is step")
    fails(checks.find_phases, lambda s, e, t, w: (s[0], s[-1], s[-1]), match="re-read rule 1")


def test_every_message_names_things_and_never_an_empty_index():
    """Scalars are reported by value ("is 0.5, which is off by ..."), never "at index []"."""
    with pytest.raises(CheckFailed) as failure:
        checks.gini(lambda v: torch.tensor(0.5, dtype=torch.float64))
    assert "at index []" not in str(failure.value) and "at []" not in str(failure.value)


# --------------------------------------------------------------------------------------------------------------
# 12.2 the claim
# --------------------------------------------------------------------------------------------------------------


def test_claim_validation():
    base = grokking.CHAPTER_CONFIG
    ok = {
        "config": dataclasses.replace(base, train_fraction=0.9, steps=100),
        "change": "train_fraction",
        "prediction": "does not grok",
    }
    assert grokking.validate_claim(ok)[1] == "train_fraction"
    # A config arrives as a dict when a notebook is graded.
    assert grokking.validate_claim(dict(ok, config=dataclasses.asdict(ok["config"])))[0].train_fraction == 0.9
    with pytest.raises(ValueError, match="has no field"):
        grokking.validate_claim(dict(ok, config={"train_fraction": 0.9, "temperature": 2}))
    with pytest.raises(ValueError, match="exactly the kind"):
        grokking.validate_claim(dict(ok, change="operation"))
    with pytest.raises(ValueError, match="it differs in: nothing"):
        grokking.validate_claim(dict(ok, config=base))
    with pytest.raises(ValueError, match="keep lr"):
        grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], lr=1e-2)))
    config, _, _ = grokking.validate_claim(dict(ok, config=dataclasses.replace(ok["config"], steps=100_000)))
    assert config.steps == grokking.claim_step_budget(config) < 100_000
    for small, kind in [
        (dict(train_fraction=0.55), "train_fraction"),
        (dict(strength=2.5), "regulariser"),
        (dict(d_model=60, d_mlp=240), "architecture"),
    ]:
        with pytest.raises(ValueError, match="same setup"):
            grokking.validate_claim(dict(ok, config=dataclasses.replace(base, **small), change=kind))
    for enough, kind in [
        (dict(train_fraction=0.6), "train_fraction"),
        (dict(strength=0.0, regulariser="none"), "regulariser"),
        (dict(d_mlp=192), "architecture"),
        (dict(act_fn="gelu"), "architecture"),
    ]:
        assert grokking.validate_claim(dict(ok, config=dataclasses.replace(base, **enough), change=kind))[1] == kind
    with pytest.raises(ValueError, match="too costly"):
        grokking.validate_claim(
            dict(ok, config=dataclasses.replace(base, d_model=128, d_mlp=512), change="architecture")
        )
    with pytest.raises(ValueError, match="prediction"):
        grokking.validate_claim(dict(ok, prediction="maybe"))
    with pytest.raises(ValueError, match="keys"):
        grokking.validate_claim({"config": base})


def test_claim_check_refuses_invalid_claims_before_training():
    fails(
        checks.my_claim,
        {"config": grokking.CHAPTER_CONFIG, "change": "operation", "prediction": "groks"},
        match="exactly the kind",
    )
    fails(checks.my_claim, "it groks", match="dict")
    fails(checks.my_claim, {"config": grokking.CHAPTER_CONFIG, "change": None, "prediction": None}, match="prediction")


def test_claim_verdict_and_stopping_rule():
    row = lambda step, tr, te: {"step": step, "train_accuracy": tr, "test_accuracy": te}  # noqa: E731
    verdict = lambda history: grokking.claim_verdict(history, reference.grok_steps)  # noqa: E731
    assert verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2), row(200, 1.0, 1.0)]) == "groks"
    assert verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2), row(100, 1.0, 1.0)]) == "does not grok"
    assert verdict([row(0, 0.1, 0.0), row(50, 1.0, 0.2)]) == "does not grok"
    stop = grokking.StopWhenDecided(last_step=599)
    assert not stop(400, row(400, 0.5, 0.1))  # train could still reach 99% by step 499
    assert stop(510, row(510, 0.5, 0.1))  # it cannot any more: the verdict is 'does not grok'
    stop = grokking.StopWhenDecided(last_step=599)
    assert not stop(100, row(100, 1.0, 0.1)) and not stop(550, row(550, 1.0, 0.5))  # memorised: wait for test
    assert stop(560, row(560, 1.0, 0.995))


@pytest.mark.slow
def test_claim_check_reruns_on_the_graders_seeds(capsys):
    """The solution's claim, on the grader's seeds whatever seed it states: the instant check trains the first; the
    hidden test reuses that verdict and trains until a majority of three is reached; the opposite prediction fails
    with the outcomes (all remembered: nothing is trained again)."""
    claim = {
        "config": dataclasses.replace(grokking.CHAPTER_CONFIG, train_fraction=0.7, seed=12345, steps=5),
        "change": "train_fraction",
        "prediction": "does not grok",
    }
    checks.my_claim(claim)
    out = capsys.readouterr().out
    assert "the first of the seeds" in out and "\u2705" in out and "12345" not in out
    checks.my_claim(claim, hidden="c396c2a6")
    out = capsys.readouterr().out
    assert "already run by the check above" in out and "a majority" in out
    fails(checks.my_claim, dict(claim, prediction="groks"), match="you predicted 'groks'")
    # A config arrives as a dict when the notebook is graded.
    checks.my_claim(dict(claim, config=dataclasses.asdict(claim["config"])))


# --------------------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------------------


def test_no_tool_is_a_twin_of_an_exercise():
    exercises = set(reference.__all__)
    assert not exercises & set(dir(grokking)), exercises & set(dir(grokking))
    assert not hasattr(tasks, "split_indices")


def test_grid_logits_equal_the_models_forward_pass():
    model, _ = models.load("modadd-113")
    p = recipes.MODADD_P
    tokens, _ = reference.all_pairs(p)
    expected = einops.rearrange(model(tokens)[:, -1].detach(), "(a b) c -> a b c", a=p)
    assert torch.allclose(grokking.grid_logits(model, p), expected, atol=1e-4, rtol=1e-5)
    config = dataclasses.replace(grokking.CHAPTER_CONFIG, act_fn="gelu").model_config()
    small = models.make_model(config, seed=3)
    with torch.no_grad():
        for param in small.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # nonzero biases too
    tokens, _ = reference.all_pairs(config.d_vocab_out)
    expected = einops.rearrange(small(tokens)[:, -1].detach(), "(a b) c -> a b c", a=config.d_vocab_out)
    assert torch.allclose(grokking.grid_logits(small, config.d_vocab_out), expected, atol=1e-5)


def test_training_logs_after_each_update_on_the_same_weights():
    """The one logging rule: each row measures train and test with the (student's) loss on the weights after the
    step's update, so the last row is the returned model's; stopping early ends on the stopping step."""
    config = dataclasses.replace(grokking.CHAPTER_CONFIG, steps=25)
    run = grokking.train_grokking(
        config, student(reference.loss_at_equals), student(reference.split_indices), progress=False
    )
    assert [row["step"] for row in run.history] == [0, 10, 20, 24]
    data = grokking.make_data(config, reference.split_indices)
    with torch.no_grad():
        for split in ("train", "test"):
            tokens, labels = getattr(data, f"{split}_tokens"), getattr(data, f"{split}_labels")
            logits = run.model(tokens)
            assert run.history[-1][f"{split}_loss"] == pytest.approx(float(reference.loss_at_equals(logits, labels)))
    stopped = grokking.train_grokking(
        config, reference.loss_at_equals, reference.split_indices, progress=False, stop=lambda step, row: step >= 10
    )
    assert stopped.stopped_at == 10 and stopped.history[-1]["step"] == 10


def test_key_frequencies_margins_and_reference_facts():
    p, k = 23, 7
    wave = torch.cos(2 * math.pi * k * torch.arange(p) / p + 1.1)[:, None].repeat(1, 4)
    norms = reference.frequency_norms(wave, p)
    assert grokking.key_frequencies(norms) == [k]
    assert float(reference.key_frequency_fraction(wave, p, [k])) == pytest.approx(1.0, abs=1e-9)
    assert float(reference.gini(torch.ones(10))) == pytest.approx(0.0, abs=1e-12)
    logits = torch.tensor([[[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]]])
    assert grokking.margins(logits, torch.tensor([[1, 0]])).tolist() == [[3.0, -3.0]]
    assert grokking.basis_labels(5) == ["const", "k=1 (cos)", "k=1 (sin)", "k=2 (cos)", "k=2 (sin)"]
    steps, excluded, test_loss, weights, expected = checks.PHASES_BY_HAND
    assert reference.find_phases(steps, excluded, test_loss, weights) == expected


def test_restricted_and_excluded_split_is_exact():
    p, keys = 11, [3]
    logits = checks.cosine_sum_table(p, keys, [5.0]).float()
    mean, projection = reference.key_projection(logits, keys)
    assert torch.allclose(mean + projection, logits.double(), atol=1e-6)
    labels = (torch.arange(p)[:, None] + torch.arange(p)[None, :]) % p
    full = F.cross_entropy(logits.double().flatten(0, 1), labels.flatten())
    assert float(reference.restricted_loss(logits, labels, keys)) == pytest.approx(float(full), abs=1e-6)
    everything = torch.ones(p, p, dtype=torch.bool)
    assert float(reference.excluded_loss(logits, labels, keys, everything)) == pytest.approx(math.log(p), abs=1e-6)
    assert float(reference.frequency_ablation_losses(logits, labels, [3])[0]) == pytest.approx(math.log(p), abs=1e-6)
