"""Instant-feedback checks for the "Grokking" chapter (``from mechinterp_course import grokking_graders``).

The same contract as :mod:`mechinterp_course.graders`: each ``check_*`` runs the student's function and the
reference (:mod:`mechinterp_course.grokking`) on several fresh inputs of several shapes, checks properties any correct
answer has, and either prints a success line or raises :class:`~mechinterp_course.graders.CheckFailed` with a message
that says what is wrong without giving the answer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import grokking, tasks
from .graders import CheckFailed, _call, _fail, _passed, _require_own_function, _seed, compare  # noqa: F401

__all__ = ["CheckFailed"]


def _generator(exercise: str, trial: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(exercise, trial))


def _random_keys(p: int, n: int, generator: torch.Generator) -> list[int]:
    order = torch.randperm((p - 1) // 2, generator=generator)[:n] + 1
    return sorted(order.tolist())


# --------------------------------------------------------------------------------------------------------------
# 1 · The task
# --------------------------------------------------------------------------------------------------------------


def check_all_pairs(fn: Callable) -> None:
    """``fn(p) -> (tokens [p * p, 3], labels [p * p])`` in the order ``a * p + b``, ``=`` being token ``p``."""
    exercise = "all_pairs"
    _require_own_function(exercise, fn, grokking.all_pairs)
    for p in (5, 13, 59):
        result = _call(exercise, fn, p)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (tokens, labels).")
        tokens, labels = result
        expected_tokens, expected_labels = grokking.all_pairs(p)
        for what, actual, expected in [("tokens", tokens, expected_tokens), ("labels", labels, expected_labels)]:
            if not isinstance(actual, Tensor):
                _fail(exercise, f"{what} should be a torch.Tensor, got {type(actual).__name__}.")
            if actual.is_floating_point():
                _fail(exercise, f"{what} has dtype {actual.dtype}; token ids and labels are integers (torch.long).")
            compare(exercise, actual, expected, what, atol=0, rtol=0, context=f"(p = {p})")
    _passed(exercise, "p = 5, 13 and 59: every pair once, in order, with its answer")


def check_split_indices(fn: Callable) -> None:
    """``fn(n, train_fraction, seed) -> (train [n_train], test [n - n_train])`` as ``tasks.split_indices`` documents."""
    exercise = "split_indices"
    _require_own_function(exercise, fn, tasks.split_indices)
    cases = [(25, 0.5, _seed(exercise, 0)), (169, 0.3, _seed(exercise, 1)), (3481, 0.5, _seed(exercise, 2)),
             (49, 0.9, _seed(exercise, 3))]
    for n, fraction, seed in cases:
        result = _call(exercise, fn, n, fraction, seed)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (train_indices, test_indices).")
        train, test = result
        context = f"(n = {n}, train_fraction = {fraction})"
        for what, actual in (("train", train), ("test", test)):
            if not isinstance(actual, Tensor) or actual.is_floating_point() or actual.ndim != 1:
                _fail(exercise, f"the {what} indices should be a 1-D integer tensor {context}.")
        n_train = int(round(fraction * n))
        if len(train) != n_train or len(test) != n - n_train:
            _fail(exercise, f"{len(train)} train and {len(test)} test indices {context}; expected round(fraction * n) "
                            f"= {n_train} and the other {n - n_train}.")
        every = torch.cat([train, test]).sort().values
        if not torch.equal(every, torch.arange(n)):
            _fail(exercise, f"train and test together must hold every index 0 .. {n - 1} exactly once {context}.")
        if torch.equal(train, torch.arange(n_train)):
            _fail(exercise, f"the training set is the first {n_train} indices in order {context}: shuffle first.")
        expected_train, expected_test = tasks.split_indices(n, fraction, seed)
        compare(exercise, train, expected_train, "the train indices", atol=0, rtol=0,
                context=f"{context}: use torch.randperm(n, generator=torch.Generator().manual_seed(seed))")
        compare(exercise, test, expected_test, "the test indices", atol=0, rtol=0, context=context)
    _passed(exercise, f"{len(cases)} sizes, fractions and seeds: a shuffled split of the right sizes")


def check_loss_at_equals(fn: Callable) -> None:
    """``fn(logits [batch, pos, n_out], labels [batch]) -> scalar`` in float64, using only the last position."""
    exercise = "loss_at_equals"
    _require_own_function(exercise, fn, grokking.loss_at_equals)
    for trial, (batch, pos, n_out, scale) in enumerate([(8, 3, 7, 1.0), (33, 3, 59, 5.0), (5, 4, 113, 40.0)]):
        generator = _generator(exercise, trial)
        logits = torch.randn(batch, pos, n_out, generator=generator) * scale
        labels = torch.randint(0, n_out, (batch,), generator=generator)
        if scale > 10:  # confident and right: float32 rounding would give exactly 0
            logits[torch.arange(batch), -1, labels] += 200.0
        expected = grokking.loss_at_equals(logits, labels)
        actual = _call(exercise, fn, logits.clone(), labels.clone())
        if isinstance(actual, Tensor) and actual.dtype != torch.float64:
            _fail(exercise, f"the loss has dtype {actual.dtype}; compute it in float64 (convert the logits first).")
        compare(exercise, actual, expected, "the loss", atol=1e-9, rtol=1e-6,
                context=f"(logits of shape {tuple(logits.shape)}, scale {scale})")
        # Property: positions before "=" do not matter.
        changed = logits.clone()
        changed[:, :-1] = torch.randn(batch, pos - 1, n_out, generator=generator) * 10
        compare(exercise, _call(exercise, fn, changed, labels.clone()), expected, "the loss", atol=1e-9, rtol=1e-6,
                context="(after changing the logits at positions before '=', which must not matter)")
    _passed(exercise, "3 random shapes, float64, only the '=' position counts")


def _random_history(generator: torch.Generator, n: int, every: int) -> list[dict]:
    rows = []
    train_at, test_at = [int(x) for x in torch.randint(0, n + n // 3, (2,), generator=generator)]
    for i in range(n):
        train = 1.0 if i >= train_at else float(torch.rand(1, generator=generator)) * 0.98
        test = 0.995 if i >= test_at else float(torch.rand(1, generator=generator)) * 0.98
        rows.append({"step": i * every, "train_loss": 1.0, "test_loss": 1.0, "train_accuracy": train,
                     "test_accuracy": test})
    return rows


def check_grok_steps(fn: Callable) -> None:
    """``fn(history) -> (train_step, test_step)``: first logged steps with accuracy >= 0.99, ``None`` where never."""
    exercise = "grok_steps"
    _require_own_function(exercise, fn, grokking.grok_steps)
    histories = [_random_history(_generator(exercise, trial), n, every)
                 for trial, (n, every) in enumerate([(40, 10), (25, 7), (60, 3), (12, 50), (30, 10)])]
    # Edge cases: exactly at the threshold counts; a dip after reaching it does not move the first step.
    edge = [{"step": s, "train_loss": 0.0, "test_loss": 0.0, "train_accuracy": a, "test_accuracy": b}
            for s, a, b in [(0, 0.5, 0.1), (10, 0.99, 0.2), (20, 0.97, 0.99), (30, 1.0, 0.5)]]
    histories.append(edge)
    wrong = 0
    for history in histories:
        expected = grokking.grok_steps(history)
        actual = _call(exercise, fn, [dict(row) for row in history])
        if not (isinstance(actual, tuple) and len(actual) == 2):
            _fail(exercise, "return a pair (train_step, test_step).")
        if tuple(None if x is None else int(x) for x in actual) != expected:
            wrong += 1
    if wrong:
        _fail(exercise, f"{wrong} of {len(histories)} training histories give a wrong pair (check the threshold 0.99 "
                        f"inclusive, that you return the logged step and not the row index, and None for never).")
    _passed(exercise, f"{len(histories)} histories, including never-solved ones and a value exactly at 0.99")


# --------------------------------------------------------------------------------------------------------------
# 2 · Fourier
# --------------------------------------------------------------------------------------------------------------


def check_fourier_basis(fn: Callable) -> None:
    """``fn(p) -> [p, p]``: rows const, cos 1, sin 1, cos 2, ... each of unit norm."""
    exercise = "fourier_basis"
    _require_own_function(exercise, fn, grokking.fourier_basis)
    for p in (5, 11, 23):
        actual = _call(exercise, fn, p)
        if isinstance(actual, tuple):
            actual = actual[0]
        expected, labels = grokking.fourier_basis(p)
        if isinstance(actual, Tensor) and tuple(actual.shape) == (p, p):
            gram = actual.double() @ actual.double().T
            if not torch.allclose(gram, torch.eye(p, dtype=torch.float64), atol=1e-4):
                off = (gram - torch.eye(p, dtype=torch.float64)).abs().max()
                _fail(exercise, f"the rows are not orthonormal for p = {p} (basis @ basis.T differs from the identity "
                                f"by up to {float(off):.3g}); normalise each row.")
        for row, label in enumerate(labels):
            compare(exercise, actual[row] if isinstance(actual, Tensor) and actual.ndim == 2 and actual.shape[0] > row
                    else actual, expected[row], f"row {row}", context=f"(p = {p}; it should be '{label}')")
    _passed(exercise, "p = 5, 11 and 23; orthonormal rows in the documented order")


def check_frequency_norms(fn: Callable) -> None:
    """``fn(W [p, d], p) -> [(p - 1) / 2 + 1]``."""
    exercise = "frequency_norms"
    _require_own_function(exercise, fn, grokking.frequency_norms)
    for trial, (p, d) in enumerate([(7, 3), (13, 16), (23, 5)]):
        W = torch.randn(p, d, generator=_generator(exercise, trial))
        compare(exercise, _call(exercise, fn, W.clone(), p), grokking.frequency_norms(W, p), "the norms",
                context=f"(W of shape {(p, d)})")
    # Property: a pure cosine of frequency k (any phase, any column mix) has a single nonzero component.
    p, k = 17, 5
    x = torch.arange(p, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * k * x / p + 0.7)
    W = torch.outer(wave, torch.tensor([1.0, -2.0, 0.5]))
    expected = torch.zeros((p - 1) // 2 + 1)
    expected[k] = W.norm()
    compare(exercise, _call(exercise, fn, W, p), expected, "the norms", context="(for a pure wave of one frequency)")
    _passed(exercise, "3 random shapes; a pure wave has one nonzero frequency")


def check_neuron_frequency_fractions(fn: Callable) -> None:
    """``fn(acts [p, p, n], p) -> (fraction [n], frequency [n])``."""
    exercise = "neuron_frequency_fractions"
    _require_own_function(exercise, fn, grokking.neuron_frequency_fractions)
    for trial, (p, n) in enumerate([(7, 4), (13, 9), (17, 6)]):
        generator = _generator(exercise, trial)
        a = torch.arange(p, dtype=torch.float32)[:, None, None]
        b = torch.arange(p, dtype=torch.float32)[None, :, None]
        freqs = torch.randint(1, (p - 1) // 2 + 1, (n,), generator=generator).float()
        phase = torch.rand(2, n, generator=generator) * 6
        # Neurons built from one frequency plus noise of a random size: fractions spread between 0 and 1.
        acts = torch.relu(torch.cos(2 * math.pi * freqs * a / p + phase[0]) + torch.cos(2 * math.pi * freqs * b / p + phase[1]))
        acts = acts + torch.randn(p, p, n, generator=generator) * torch.rand(n, generator=generator) * 0.8
        expected_fraction, expected_freq = grokking.neuron_frequency_fractions(acts, p)
        result = _call(exercise, fn, acts.clone(), p)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (fraction, frequency).")
        compare(exercise, result[0], expected_fraction, "the fractions", atol=1e-3, context=f"(acts of shape {(p, p, n)})")
        # Frequencies are compared where one clearly dominates (energy blocks are disjoint, so above half the
        # variance the best is unique); elsewhere rounding could legitimately pick another near-tie.
        clear = expected_fraction > 0.55
        frequencies = torch.as_tensor(result[1])
        if tuple(frequencies.shape) != tuple(expected_freq.shape):
            _fail(exercise, f"the frequencies have shape {tuple(frequencies.shape)}, expected {tuple(expected_freq.shape)}.")
        compare(exercise, frequencies.long()[clear], expected_freq[clear], "the best frequencies (where one dominates)",
                atol=0, rtol=0, context=f"(acts of shape {(p, p, n)})")
    _passed(exercise, "3 random sets of noisy single-frequency neurons")


def check_key_frequency_fraction(fn: Callable) -> None:
    """``fn(x [p, ...], p, key_freqs) -> scalar``."""
    exercise = "key_frequency_fraction"
    _require_own_function(exercise, fn, grokking.key_frequency_fraction)
    for trial, (p, shape, n_keys) in enumerate([(11, (4,), 2), (17, (3, 5), 3), (23, (), 4)]):
        generator = _generator(exercise, trial)
        keys = _random_keys(p, n_keys, generator)
        x = torch.randn(p, *shape, generator=generator)
        x = x + 3 * grokking.fourier_basis(p)[0][2 * keys[0]].reshape(p, *([1] * len(shape)))  # a key frequency dominates
        compare(exercise, _call(exercise, fn, x.clone(), p, list(keys)), grokking.key_frequency_fraction(x, p, keys),
                "the fraction", context=f"(x of shape {tuple(x.shape)}, key frequencies {keys})")
        shifted = x + 5.0  # the constant term is not variance
        compare(exercise, _call(exercise, fn, shifted, p, list(keys)), grokking.key_frequency_fraction(x, p, keys),
                "the fraction", context="(after adding a constant, which must not change it)")
    _passed(exercise, "3 random shapes and key sets; a constant shift changes nothing")


def check_fit_logits(fn: Callable) -> None:
    """``fn(logits [p, p, p], key_freqs) -> (alpha [n_key], variance_explained)``."""
    exercise = "fit_logits"
    _require_own_function(exercise, fn, grokking.fit_logits)
    for trial, (p, n_keys, noise) in enumerate([(7, 1, 1.0), (13, 3, 0.3), (17, 2, 0.0)]):
        generator = _generator(exercise, trial)
        keys = _random_keys(p, n_keys, generator)
        alpha = torch.rand(n_keys, generator=generator, dtype=torch.float64) * 5 + 1
        logits = (grokking.logit_features(p, keys) * alpha).sum(-1)
        logits = logits + noise * torch.randn(p, p, p, generator=generator, dtype=torch.float64)
        logits = logits + torch.randn(p, p, 1, generator=generator, dtype=torch.float64) * 3  # per-(a, b) offsets
        logits = logits.float()
        expected_alpha, expected_r2 = grokking.fit_logits(logits, keys)
        result = _call(exercise, fn, logits.clone(), list(keys))
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (alpha, variance_explained).")
        context = f"(p = {p}, key frequencies {keys}, noise {noise})"
        compare(exercise, result[0], expected_alpha, "alpha", atol=1e-3, context=context)
        compare(exercise, torch.as_tensor(result[1]).double(), expected_r2, "the variance explained", atol=1e-3,
                context=context)
    _passed(exercise, "3 random logit tables, with and without noise; per-(a, b) offsets ignored")


# --------------------------------------------------------------------------------------------------------------
# 3 · Progress measures
# --------------------------------------------------------------------------------------------------------------


def _random_logit_problem(exercise: str, trial: int, p: int, n_keys: int):
    generator = _generator(exercise, trial)
    keys = _random_keys(p, n_keys, generator)
    logits = (grokking.logit_features(p, keys) * 4).sum(-1) + torch.randn(p, p, p, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, p, (p, p), generator=generator)
    logits[torch.arange(p)[:, None], torch.arange(p)[None, :], labels] += 3  # a memorised part
    mask = torch.rand(p, p, generator=generator) < 0.4
    return logits.float(), labels, keys, mask


def check_restricted_loss(fn: Callable) -> None:
    """``fn(logits [p, p, p], labels [p, p], key_freqs) -> scalar``."""
    exercise = "restricted_loss"
    _require_own_function(exercise, fn, grokking.restricted_loss)
    for trial, (p, n_keys) in enumerate([(11, 2), (17, 3), (23, 1)]):
        logits, labels, keys, _ = _random_logit_problem(exercise, trial, p, n_keys)
        compare(exercise, _call(exercise, fn, logits.clone(), labels.clone(), list(keys)),
                grokking.restricted_loss(logits, labels, keys), "the restricted loss", atol=1e-4,
                context=f"(p = {p}, key frequencies {keys})")
    _passed(exercise, "3 random logit tables mixing a Fourier part and a memorised part")


def check_excluded_loss(fn: Callable) -> None:
    """``fn(logits [p, p, p], labels [p, p], key_freqs, train_mask [p, p]) -> scalar``."""
    exercise = "excluded_loss"
    _require_own_function(exercise, fn, grokking.excluded_loss)
    for trial, (p, n_keys) in enumerate([(11, 2), (17, 3), (23, 1)]):
        logits, labels, keys, mask = _random_logit_problem(exercise, trial, p, n_keys)
        compare(exercise, _call(exercise, fn, logits.clone(), labels.clone(), list(keys), mask.clone()),
                grokking.excluded_loss(logits, labels, keys, mask), "the excluded loss", atol=1e-4,
                context=f"(p = {p}, key frequencies {keys}, {int(mask.sum())} training pairs)")
    _passed(exercise, "3 random logit tables and training masks")


def check_sum_of_squared_weights(fn: Callable) -> None:
    """``fn(model) -> scalar``: the sum of every parameter's squared entries."""
    exercise = "sum_of_squared_weights"
    _require_own_function(exercise, fn, grokking.sum_of_squared_weights)
    for trial, sizes in enumerate([(3, 4), (5, 2, 7), (8, 8, 8, 1)]):
        with torch.random.fork_rng():  # seeded models, without touching the notebook's own random state
            torch.manual_seed(_seed(exercise, trial))
            layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        model = torch.nn.Sequential(*layers)
        compare(exercise, _call(exercise, fn, model), grokking.sum_of_squared_weights(model).detach(),
                "the sum", atol=1e-4, context=f"(a random MLP with layer sizes {sizes})")
    _passed(exercise, "3 random models, weights and biases")


def check_gini(fn: Callable) -> None:
    """``fn(values [n]) -> scalar``: the Gini coefficient, 0 for equal values, ``1 - 1/n`` for a single nonzero one."""
    exercise = "gini"
    _require_own_function(exercise, fn, grokking.gini)
    for trial, (n, skew) in enumerate([(8, 1.0), (57, 4.0), (29, 0.3)]):
        generator = _generator(exercise, trial)
        values = torch.rand(n, generator=generator, dtype=torch.float64).pow(skew)  # unsorted, of random sparsity
        expected = grokking.gini(values)
        compare(exercise, torch.as_tensor(_call(exercise, fn, values.clone())).double(), expected, "the coefficient",
                atol=1e-6, context=f"({n} random values)")
        # Properties: it does not depend on the order or the scale of the values.
        shuffled = values[torch.randperm(n, generator=generator)] * 7.5
        compare(exercise, torch.as_tensor(_call(exercise, fn, shuffled)).double(), expected, "the coefficient",
                atol=1e-6, context="(after shuffling and scaling the same values, which must change nothing)")
    for n in (10, 57):
        one_hot = torch.zeros(n, dtype=torch.float64)
        one_hot[n // 3] = 2.0
        compare(exercise, torch.as_tensor(_call(exercise, fn, one_hot)).double(), torch.tensor(1 - 1 / n, dtype=torch.float64),
                "the coefficient", atol=1e-6, context=f"(one nonzero value out of {n})")
        compare(exercise, torch.as_tensor(_call(exercise, fn, torch.full((n,), 0.3, dtype=torch.float64))).double(),
                torch.tensor(0.0, dtype=torch.float64), "the coefficient", atol=1e-6, context=f"({n} equal values)")
    _passed(exercise, "3 random spectra (order and scale ignored), one-hot and flat extremes")


def check_find_phases(fn: Callable) -> None:
    """``fn(steps, excluded, test_loss, squared_weights) -> (memorisation_end, cleanup_start, cleanup_end)``."""
    exercise = "find_phases"
    _require_own_function(exercise, fn, grokking.find_phases)
    wrong, problems = 0, grokking.synthetic_trajectories(_seed(exercise, 0), n=6)
    for curves in problems:
        expected = grokking.find_phases(*curves)
        result = _call(exercise, fn, *[list(c) for c in curves])
        if not (isinstance(result, tuple) and len(result) == 3):
            _fail(exercise, "return three steps (memorisation_end, cleanup_start, cleanup_end).")
        if tuple(int(x) for x in result) != tuple(expected):
            wrong += 1
    if wrong:
        _fail(exercise, f"{wrong} of {len(problems)} synthetic trajectories give wrong boundaries; re-read the three "
                        f"rules (which curve, which threshold, and 'the first step after the previous boundary').")
    _passed(exercise, f"{len(problems)} synthetic trajectories with phases at random steps")


# --------------------------------------------------------------------------------------------------------------
# 4 · Research: a claim about another training setup, re-run by the grader
# --------------------------------------------------------------------------------------------------------------


def check_claim(claim: Any, progress: bool = False) -> None:
    """``claim = {"config": GrokConfig(...), "change": kind, "prediction": "groks" | "does not grok"}``: validated,
    then re-run from scratch (capped to about 30 s on one core) and the outcome compared with the prediction."""
    exercise = "your grokking claim"
    try:
        config, change, prediction = grokking.validate_claim(claim)
    except (ValueError, TypeError) as error:
        _fail(exercise, str(error))
    verdict, run = grokking.run_claim(config, progress=progress)
    summary = grokking.describe_outcome(run)
    if verdict != prediction:
        _fail(exercise, f"you predicted '{prediction}', but the re-run {summary}, which counts as '{verdict}'.")
    _passed(exercise, f"re-run with your change of {change}: it {summary}; you predicted '{prediction}'")
