"""Chapter 01's checks: what the notebook's test cells call (``check.get_attention_pattern(get_attention_pattern)``).

Each check runs its known answers and properties first (a perfect head scores 1, the terms of a decomposition sum to
the logit difference, an impossible path raises), because those say *what* is wrong; then it compares with the
reference (:mod:`.reference`, generated from the solution notebook) on fresh inputs, naming heads as ``L1H2``.
The machinery is :mod:`mechinterp_course.checking`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import models, research, tasks
from ..checking import (call, check, compare, fail, is_hidden, layer_head_index, raises, tokens_only,
                        trials, unchanged, wrong_answers)
from . import (COUNTEREXAMPLE_BATCH, COUNTEREXAMPLE_MAX_FAITHFULNESS, COUNTEREXAMPLE_MIN_ACCURACY,
               COUNTEREXAMPLE_MIN_BASELINE_GAP, COUNTEREXAMPLE_MIN_PREDICTIONS, INDUCTION_THRESHOLD, LogitDiff,
               all_head_scores, circuit_faithfulness, induction_reference_tokens, reference)
from .studies import CIRCUIT_STUDIES

MODEL = "induction-2l"


def _causal_pattern(batch: int, n_heads: int, seq: int, generator: torch.Generator) -> Tensor:
    """A random but valid attention pattern ``[batch, n_heads, q, k]``: causal, rows summing to one."""
    scores = torch.randn(batch, n_heads, seq, seq, generator=generator) * 3
    mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, -torch.inf).softmax(-1)


# --------------------------------------------------------------------------------------------------------------
# Section 1-2: patterns and head scores
# --------------------------------------------------------------------------------------------------------------


@check("get_attention_pattern")
def get_attention_pattern(fn: Callable) -> str:
    """``fn(model, tokens, layer) -> [batch, n_heads, q, k]``: read a pattern out of ``run_with_cache``."""
    model = models.fresh(MODEL)
    n_layers = model.cfg.n_layers
    for trial in trials(3):
        batch, half_len, layer = 1 + trial.index, trial.randint(6, 20), trial.index % n_layers
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=trial.seed)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        expected = cache[f"blocks.{layer}.attn.hook_pattern"]
        actual = call(fn, model, tokens.clone(), layer)
        compare(actual, expected, "the pattern", context=f"(layer {layer}, {batch} x {tokens.shape[1]} tokens)",
                index=["batch ", ["H" + str(h) for h in range(model.cfg.n_heads)], "query ", "key "])
    return "3 inputs, both layers"


def _perfect_and_useless(offset: int, seq: int) -> Tensor:
    """``[1, 2, seq, seq]``: head 0 always attends ``offset`` back (where it can; else to itself), head 1 never does
    (it attends to BOS, or to itself where BOS is the right key)."""
    pattern = torch.zeros(1, 2, seq, seq)
    for q in range(seq):
        k = q - offset
        pattern[0, 0, q, k if k >= 0 else q] = 1.0
        pattern[0, 1, q, 0 if k != 0 else q] = 1.0
    return pattern


def _check_score(fn: Callable, reference_fn: Callable, job: str, offset_of: Callable[[int], int],
                 needs_half_len: bool) -> str:
    # Known answers first: they say what is wrong (an off-by-one offset, a sum instead of a mean).
    half_len = 6
    perfect = _perfect_and_useless(offset_of(half_len), 1 + 2 * half_len)
    extra = (half_len,) if needs_half_len else ()
    scores = call(fn, perfect, *extra)
    compare(scores, torch.tensor([1.0, 0.0]), "the scores", context=f"of a head that always attends {job} "
            f"(expected 1) and one that never does (expected 0), on BOS + 6 tokens repeated",
            index=lambda i: ["the perfect head", "the useless head"][i[0]])
    for trial in trials(3):
        batch, n_heads, half_len = trial.randint(1, 3), trial.randint(2, 8), trial.randint(5, 17)
        pattern = _causal_pattern(batch, n_heads, 1 + 2 * half_len, trial.generator)
        extra = (half_len,) if needs_half_len else ()
        before = pattern.clone()
        actual = call(fn, pattern, *extra)
        unchanged(before, pattern, "pattern")
        compare(actual, reference_fn(pattern, *extra), "the scores", context=f"(pattern of shape "
                f"{tuple(pattern.shape)})", index=["H"])
    return "a perfect and a useless head, then 3 random patterns of different shapes"


@check("previous_token_scores")
def previous_token_scores(fn: Callable) -> str:
    """``fn(pattern [batch, n_heads, q, k]) -> [n_heads]``."""
    return _check_score(fn, reference.previous_token_scores, "to the previous token", lambda half_len: 1, False)


@check("duplicate_token_scores")
def duplicate_token_scores(fn: Callable) -> str:
    """``fn(pattern, half_len) -> [n_heads]``."""
    return _check_score(fn, reference.duplicate_token_scores, "to the earlier copy of its token",
                        lambda half_len: half_len, True)


@check("induction_scores")
def induction_scores(fn: Callable) -> str:
    """``fn(pattern, half_len) -> [n_heads]``."""
    return _check_score(fn, reference.induction_scores, "to the token after the earlier copy of its token",
                        lambda half_len: half_len - 1, True)


def induction_circuit(model) -> list[tuple[int, int]]:
    """The chapter's induction circuit: heads above the threshold for induction or previous-token scores."""
    half_len = 30
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=2024)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    induction = all_head_scores(cache, n_layers, reference.induction_scores, half_len=half_len)
    previous = all_head_scores(cache, n_layers, reference.previous_token_scores)
    selected = (induction > INDUCTION_THRESHOLD) | (previous > INDUCTION_THRESHOLD)
    return [tuple(lh) for lh in torch.nonzero(selected).tolist()]


@check("circuit_heads", functions=0, depends_on=("previous_token_scores", "induction_scores"))
def circuit_heads(previous_token_heads: Any, induction_heads: Any) -> str:
    """The heads the student identified, as lists of ``(layer, head)``, against the thresholded scores."""
    model = models.fresh(MODEL)
    half_len = 30
    [trial] = trials(1)
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=trial.seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    expected = {
        "previous_token_heads": all_head_scores(cache, n_layers, reference.previous_token_scores),
        "induction_heads": all_head_scores(cache, n_layers, reference.induction_scores, half_len=half_len),
    }
    for name, given in [("previous_token_heads", previous_token_heads), ("induction_heads", induction_heads)]:
        try:
            given_set = {(int(layer), int(head)) for layer, head in given}
        except (TypeError, ValueError):
            fail(f"{name} should be a list of (layer, head) pairs such as [(0, 3)], got {given!r}.")
        truth = {tuple(lh) for lh in torch.nonzero(expected[name] > INDUCTION_THRESHOLD).tolist()}
        missing, extra = truth - given_set, given_set - truth
        if missing or extra:
            fail(f"{name}: {len(missing)} head(s) above the {INDUCTION_THRESHOLD} threshold are missing and "
                 f"{len(extra)} listed head(s) are below it.")
    return "both lists match the heads whose scores exceed the threshold"


# --------------------------------------------------------------------------------------------------------------
# Section 3: direct logit attribution
# --------------------------------------------------------------------------------------------------------------


@check("head_direct_logit_attribution")
def head_direct_logit_attribution(fn: Callable) -> str:
    """``fn(z [batch, n_heads, d_head], W_O [n_heads, d_head, d_model], direction [batch, d_model]) ->
    [batch, n_heads]``."""
    for trial in trials(3):
        batch, n_heads = trial.randint(1, 5), trial.randint(2, 6)
        d_head, d_model = trial.randint(3, 16), trial.randint(8, 64)
        z = torch.randn(batch, n_heads, d_head, generator=trial.generator)
        W_O = torch.randn(n_heads, d_head, d_model, generator=trial.generator)
        direction = torch.randn(batch, d_model, generator=trial.generator)
        actual = call(fn, z.clone(), W_O.clone(), direction.clone())
        context = f"(z of shape {tuple(z.shape)})"
        # The property first: the heads' terms add up to the whole layer's output along the direction.
        total = (torch.einsum("bhd,hdm->bm", z, W_O) * direction).sum(-1)
        if tuple(getattr(actual, "shape", ())) == (batch, n_heads):
            compare(actual.sum(-1), total, "the sum over heads of your attributions", atol=1e-3,
                    context=f"{context}: it must equal the layer's summed output dotted with the direction",
                    index=["example "])
        compare(actual, reference.head_direct_logit_attribution(z, W_O, direction), "the attributions",
                context=context, atol=1e-3, index=["example ", "H"])
    return "3 random shapes; the heads' attributions add up to the layer's output"


@check("decompose_logit_diff", depends_on=("head_direct_logit_attribution",))
def decompose_logit_diff(fn: Callable) -> str:
    """``fn(model, cache, answer, wrong) -> (terms [n_components], labels)``, summing to the true logit difference."""
    model = models.fresh(MODEL)
    for trial in trials(2):
        pair = tasks.patching_pair(trial.randint(6, 16), trial.randint(8, 15), model.cfg.d_vocab, seed=trial.seed)
        with torch.no_grad():
            logits, cache = model.run_with_cache(pair.clean)
            expected, labels = reference.decompose_logit_diff(model, cache, pair.answer, pair.wrong)
        result = call(fn, model, cache, pair.answer, pair.wrong)
        if not (isinstance(result, tuple) and len(result) == 2):
            fail("return a pair (terms, labels).")
        terms, given_labels = result
        if list(given_labels) != labels:
            fail(f"the labels should be {labels}, in that order; got {list(given_labels)}.")
        terms = torch.as_tensor(terms).detach()
        true_diff = float(LogitDiff(pair.answer, pair.wrong)(logits))
        if terms.shape == expected.shape and abs(float(terms.sum()) - true_diff) > 1e-3 * max(1.0, abs(true_diff)):
            fail(f"your terms sum to {float(terms.sum()):.4g}, but the model's logit difference is {true_diff:.4g} "
                 f"(on a fresh batch): the decomposition is exact, so some term is missing or wrong.")
        compare(terms, expected.detach(), "the terms", atol=1e-3, index=lambda i: labels[i[0]])
    return "2 fresh prompt batches; the terms sum to the true logit difference"


# --------------------------------------------------------------------------------------------------------------
# Section 4: ablations
# --------------------------------------------------------------------------------------------------------------

#: Method names ``ablate_head`` must refuse: a misspelling, a capitalised name, a method the exercise doesn't have.
UNKNOWN_ABLATION_METHODS = ("resampel", "Zero", "median")


@check("ablate_head")
def ablate_head(fn: Callable) -> str:
    """``fn(z, head, method, reference=None, resample_index=None) -> z'`` for zero, mean and resample ablation."""
    for trial in trials(2):
        batch, pos, n_heads, d_head = trial.randint(2, 5), trial.randint(4, 9), trial.randint(2, 5), 8
        z = torch.randn(batch, pos, n_heads, d_head, generator=trial.generator)
        ref = torch.randn(6, pos + 2, n_heads, d_head, generator=trial.generator)
        index = torch.randint(0, 6, (batch,), generator=trial.generator)
        head = (trial.index + 1) % n_heads
        for method in UNKNOWN_ABLATION_METHODS:
            if not raises(ValueError, fn, z.clone(), head, method, ref.clone(), index.clone()):
                fail(f"method={method!r} returned a value; an unknown method should raise a ValueError (so that a "
                     f"typo cannot silently run the wrong ablation).")
        for method in ("zero", "mean", "resample"):
            before = z.clone()
            actual = call(fn, z, head, method, ref.clone(), index.clone())
            unchanged(before, z, "z")
            expected = reference.ablate_head(z, head, method, ref, index)
            others = [h for h in range(n_heads) if h != head]
            compare(actual[:, :, others] if isinstance(actual, Tensor) and actual.shape == z.shape else actual,
                    z[:, :, others], "the heads you did not ablate", context=f"({method} ablation of H{head}: "
                    f"the other heads must be left as they were)")
            compare(actual, expected, "the ablated z", context=f"({method} ablation of H{head})",
                    index=["example ", "pos ", "H", "d_head "])
    return ("unknown methods refused; zero, mean and resample ablation on 2 random shapes; other heads and your "
            "input left untouched")


# --------------------------------------------------------------------------------------------------------------
# Section 5-6: activation and attribution patching
# --------------------------------------------------------------------------------------------------------------

#: (shape of ``value``, how clean and corrupted are given, whether clean < corrupted) per trial.
_NORMALISED_METRIC_TRIALS = [((10,), "float", False), ((3, 4), "0-d tensor", True), ((), "float", True),
                             ((6,), "per-example tensor", False)]


@check("normalised_metric")
def normalised_metric(fn: Callable) -> str:
    """``fn(value, clean, corrupted)``: 1 at the clean run's metric, 0 at the corrupted run's, linear in between."""
    cases = []
    for trial, (shape, kind, clean_below) in zip(trials(len(_NORMALISED_METRIC_TRIALS)), _NORMALISED_METRIC_TRIALS):
        values = torch.randn(shape, generator=trial.generator) * 4
        ends_shape = shape if kind == "per-example tensor" else ()
        low = torch.randn(ends_shape, generator=trial.generator) * 3 - 2
        high = low + 1 + 4 * torch.rand(ends_shape, generator=trial.generator)  # at least 1 apart
        clean, corrupted = (low, high) if clean_below else (high, low)
        if kind == "float":
            clean, corrupted = float(clean), float(corrupted)
        context = (f"(value of shape {tuple(shape)}, clean and corrupted as {kind}s, clean "
                   f"{'below' if clean_below else 'above'} corrupted)")
        cases.append((values, clean, corrupted, context))
    # The anchors first: the clean run itself maps to 1, the corrupted run to 0.
    for values, clean, corrupted, context in cases:
        for end, target, label in [(clean, 1.0, "clean"), (corrupted, 0.0, "corrupted")]:
            run_value = torch.as_tensor(end).float().clone()
            compare(call(fn, run_value, clean, corrupted), torch.full(run_value.shape, target),
                    f"the metric of the {label} run itself (it must be {target:g})", context=context)
    for values, clean, corrupted, context in cases:
        expected = torch.as_tensor(reference.normalised_metric(values, clean, corrupted)).float()
        compare(call(fn, values.clone(), clean, corrupted), expected, "the normalised values", context=context)
    return (f"the clean run maps to 1 and the corrupted run to 0; {len(cases)} random trials (floats and tensors, "
            f"either sign)")


def _patching_trials(model, corruption: str = "value"):
    for trial in trials(2):
        pair = tasks.patching_pair(trial.randint(5, 8), trial.randint(6, 10), model.cfg.d_vocab,
                                   corruption=corruption, seed=trial.seed)
        yield pair, LogitDiff(pair.answer, pair.wrong)


def _check_patching(fn: Callable, reference_fn: Callable, what: str, index) -> None:
    model = models.fresh(MODEL)
    for pair, metric in _patching_trials(model):
        expected = reference_fn(model, pair.clean, pair.corrupted, metric).detach()
        actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), metric)
        model.reset_hooks()
        compare(actual, expected, what, atol=1e-3, context=f"(a fresh clean/corrupted batch of shape "
                f"{tuple(pair.clean.shape)}; metric = the raw logit difference)", index=index)


@check("patch_residual_by_layer_pos")
def patch_residual_by_layer_pos(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, pos]``."""
    _check_patching(fn, reference.patch_residual_by_layer_pos, "the patching map", ["L", "pos "])
    return "2 fresh clean/corrupted batches of different lengths"


@check("patch_heads")
def patch_heads(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]``."""
    _check_patching(fn, reference.patch_heads, "the per-head results", layer_head_index)
    return "2 fresh clean/corrupted batches"


@check("attribution_patch_heads")
def attribution_patch_heads(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]`` (the gradient estimate)."""
    model = models.fresh(MODEL)
    for pair, metric in _patching_trials(model):
        expected = reference.attribution_patch_heads(model, pair.clean, pair.corrupted, metric).detach()
        actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), metric)
        model.reset_hooks()
        if isinstance(actual, Tensor) and actual.shape == expected.shape:
            with torch.no_grad():
                at_corrupted = float(metric(model(pair.corrupted)))
            offset = (actual.detach().double() - expected.double())
            if abs(at_corrupted) > 1e-2 and torch.allclose(offset, torch.full_like(offset, -at_corrupted), atol=1e-3):
                fail(f"every estimate is off by exactly -{at_corrupted:.4g}, the metric of the corrupted run: the "
                     f"first-order estimate is metric(corrupted) + gradient . (z_clean - z_corrupted); add the "
                     f"starting value (a normalised metric hides this, because it is 0 on the corrupted run).")
        compare(actual, expected, "the estimates", atol=1e-3, index=layer_head_index,
                context=f"(a fresh clean/corrupted batch of shape {tuple(pair.clean.shape)}; metric = the raw logit "
                        f"difference)")
    return "2 fresh clean/corrupted batches, with the raw logit difference as the metric"


# --------------------------------------------------------------------------------------------------------------
# Section 7: path patching and composition
# --------------------------------------------------------------------------------------------------------------

#: Sender/receiver pairs that are no path (same layer, or the sender after the receiver): they must raise ValueError.
IMPOSSIBLE_PATHS = [((1, 0), (1, 1)), ((0, 2), (0, 1)), ((1, 2), (0, 3))]


@check("path_patch_key")
def path_patch_key(fn: Callable) -> str:
    """``fn(model, clean, corrupted, sender, receiver, metric) -> scalar``."""
    model = models.fresh(MODEL)
    [anchor] = trials(1)
    pair = tasks.patching_pair(4, 6, model.cfg.d_vocab, corruption="key", seed=anchor.seed + 1)
    metric = LogitDiff(pair.answer, pair.wrong)
    # Known answers first. An impossible path is refused...
    for sender, receiver in IMPOSSIBLE_PATHS:
        if not raises(ValueError, fn, model, pair.clean.clone(), pair.corrupted.clone(), sender, receiver, metric):
            fail(f"sender L{sender[0]}H{sender[1]} -> receiver L{receiver[0]}H{receiver[1]} returned a value; a sender "
                 f"that is not in an earlier layer than the receiver is no path at all and should raise a ValueError.")
        model.reset_hooks()
    # ... and with identical clean and corrupted inputs there is nothing to restore: the corrupted run's metric.
    with torch.no_grad():
        unchanged_metric = metric(model(pair.corrupted))
    actual = call(fn, model, pair.corrupted.clone(), pair.corrupted.clone(), (0, 3), (1, 2), metric)
    model.reset_hooks()
    compare(actual, unchanged_metric, "the result", atol=1e-3,
            context="with clean = corrupted (patching any path then changes nothing: expected the corrupted run's "
                    "metric)")
    paths = [((0, 3), (1, 1)), ((0, 1), (1, 0)), ((0, 0), (1, 2))]
    for sender, receiver in paths:
        for pair, metric in _patching_trials(model, corruption="key"):
            expected = reference.path_patch_key(model, pair.clean, pair.corrupted, sender, receiver, metric)
            actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), sender, receiver, metric)
            model.reset_hooks()
            compare(actual, expected.detach(), "the result", atol=1e-3,
                    context=f"(path L{sender[0]}H{sender[1]} -> L{receiver[0]}H{receiver[1]}'s key, a fresh batch of "
                            f"shape {tuple(pair.clean.shape)})")
    return "impossible paths refused; clean = corrupted changes nothing; 3 sender/receiver pairs on 2 fresh batches"


@check("composition_score")
def composition_score(fn: Callable) -> str:
    """``fn(W_A [..., n, m], W_B [..., m, k]) -> [...]``."""
    shapes = [((8, 8), (8, 8)), ((3, 6, 5), (3, 5, 7)), ((2, 1, 4, 4), (1, 3, 4, 4))]
    for trial, (shape_a, shape_b) in zip(trials(len(shapes)), shapes):
        W_A = torch.randn(*shape_a, generator=trial.generator)
        W_B = torch.randn(*shape_b, generator=trial.generator)
        context = f"(W_A {tuple(W_A.shape)}, W_B {tuple(W_B.shape)})"
        # The property first: the score measures directions, not sizes.
        plain = call(fn, W_A.clone(), W_B.clone())
        rescaled = call(fn, 3.0 * W_A, 0.5 * W_B)
        if isinstance(plain, Tensor) and isinstance(rescaled, Tensor) and plain.shape == rescaled.shape:
            compare(rescaled, plain.detach(), "the score of 3 W_A and 0.5 W_B", context=f"{context}: rescaling a "
                    f"matrix must not change the score (divide by both norms)")
        compare(plain, reference.composition_score(W_A, W_B), "the scores", context=context)
    return "invariant to rescaling; 3 shapes, batched"


# --------------------------------------------------------------------------------------------------------------
# Section 8: what circuit studies found
# --------------------------------------------------------------------------------------------------------------


@check("circuit_studies", functions=0)
def circuit_studies(answers: Any) -> str:
    """``answers``: scenario letter -> the key of the study whose finding it shows; every match must be right."""
    key = reference.ANSWER_KEYS["study_findings"]
    options = [study.key for study in CIRCUIT_STUDIES]
    if not isinstance(answers, dict):
        fail(f"give a dict scenario letter -> study key, got {type(answers).__name__}.")
    missing = [s for s in key if s not in answers]
    extra = [k for k in answers if k not in key]
    if missing or extra:
        fail(f"use exactly the {len(key)} scenario letters {', '.join(key)} as keys ({len(missing)} missing, "
             f"{len(extra)} unexpected: {extra}).")
    invalid = {letter: given for letter, given in answers.items() if given not in options}
    if invalid:
        fail(f"{len(invalid)} answer(s) are not one of the study keys {options}: {invalid}.")
    wrong = wrong_answers("study_findings", answers, key)
    if wrong:
        fail(f"{len(wrong)} of {len(key)} scenarios are matched to the wrong study. Re-read section 8's table: "
             f"which finding does each observation show?")
    return f"all {len(key)} observations matched to the study whose finding they show"


# --------------------------------------------------------------------------------------------------------------
# Section 9: the comparison table's numbers
# --------------------------------------------------------------------------------------------------------------

#: ``half_len`` values the measurement check uses: position ICL_LATE_POS + 1 must exist (half_len >= 26) and the
#: sequence must fit the model's 64-token context (half_len <= 31); a function that assumes the notebook's 30 fails.
MEASUREMENT_HALF_LENS = (30, 26, 31)


@check("measure")
def measure(fn: Callable) -> str:
    """``fn(model, tokens, half_len) -> dict`` with the three numbers of the comparison table."""
    model = models.fresh(MODEL)
    for trial, (batch, half_len) in zip(trials(3), zip([32, 48, 24], MEASUREMENT_HALF_LENS)):
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=trial.seed)
        with torch.no_grad():
            expected = reference.measure(model, tokens, half_len)
        measured = call(fn, model, tokens.clone(), half_len)
        if not isinstance(measured, dict):
            fail(f"return a dict, got {type(measured).__name__}.")
        for key, value in expected.items():
            if key not in measured or measured[key] is None:
                fail(f"missing the measurement {key!r}.")
            compare(torch.tensor(float(measured[key])), torch.tensor(float(value)), repr(key), atol=1e-3,
                    context=f"(on a fresh batch of {batch} sequences with half_len {half_len})")
    return (f"all three numbers match on {len(MEASUREMENT_HALF_LENS)} fresh batches with half_len "
            f"{', '.join(map(str, MEASUREMENT_HALF_LENS))}")


my_scores = research.scores_check("circuits")


# --------------------------------------------------------------------------------------------------------------
# Section 10: the counterexample hunt
# --------------------------------------------------------------------------------------------------------------

def measure_counterexample(make_batch: Callable, which_predictions: Callable, seed: int,
                           batch: int = COUNTEREXAMPLE_BATCH) -> dict[str, float]:
    """Draw ``make_batch(batch, seed)``, let ``which_predictions(tokens)`` say which predictions count (both see
    their arguments only), and measure the full model and the circuit there."""
    model = models.fresh(MODEL)
    make = tokens_only(make_batch, "make_batch")
    tokens = call(make, batch, seed)
    if isinstance(tokens, tuple):
        fail("make_batch(batch, seed) returns the tokens alone; which predictions count is decided by "
             "which_predictions(tokens).")
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.ndim != 2:
        fail("tokens must be an integer tensor of shape [batch, pos].")
    if tokens.shape[0] != batch or not 2 <= tokens.shape[1] <= model.cfg.n_ctx:
        fail(f"tokens has shape {tuple(tokens.shape)}; expected [{batch}, pos] with 2 <= pos <= {model.cfg.n_ctx}.")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        fail(f"tokens must lie in [0, {model.cfg.d_vocab - 1}].")
    tokens = tokens.long()
    mask = call(tokens_only(which_predictions, "which_predictions"), tokens.clone())
    expected_shape = (batch, tokens.shape[1] - 1)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != expected_shape:
        got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        fail(f"which_predictions must return a boolean tensor of shape [{batch}, {tokens.shape[1] - 1}] (one per "
             f"prediction), got a {got}.")
    n_counted = int(mask.sum())
    if n_counted < COUNTEREXAMPLE_MIN_PREDICTIONS:
        fail(f"the mask counts only {n_counted} predictions; count at least {COUNTEREXAMPLE_MIN_PREDICTIONS} so the "
             f"measurement is meaningful.")
    outcome = circuit_faithfulness(model, tokens, mask, induction_circuit(model), reference.ablate_head,
                                   induction_reference_tokens(model.cfg.d_vocab))
    return dict(outcome, n_predictions=n_counted)


@check("counterexample", functions=2)
def counterexample(make_batch: Callable, which_predictions: Callable) -> str:
    """``make_batch(batch, seed) -> tokens [batch, pos]`` and ``which_predictions(tokens) -> mask [batch, pos - 1]``:
    a distribution on which the induction circuit explains little of what the full model does well."""
    seeds = [trial.seed for trial in trials(2)]
    outcomes = [measure_counterexample(make_batch, which_predictions, seed) for seed in seeds]
    # A generator that ignores its seed is a fixed data set, not a distribution.
    make = tokens_only(make_batch, "make_batch")
    if torch.equal(torch.as_tensor(call(make, 8, seeds[0])), torch.as_tensor(call(make, 8, seeds[1]))):
        fail("make_batch returns the same tokens for different seeds; draw them from the seed.")
    for seed, outcome in zip(seeds, outcomes):
        summary = (f"full-model accuracy {outcome['full_accuracy']:.2f}, circuit faithfulness "
                   f"{outcome['faithfulness']:.2f}, all-heads-ablated loss {outcome['baseline_gap']:.2f} nats above "
                   f"the full model's (seed {seed})")
        if outcome["full_accuracy"] < COUNTEREXAMPLE_MIN_ACCURACY:
            fail(f"the full model does not do well here: {summary}; it must reach {COUNTEREXAMPLE_MIN_ACCURACY} "
                 f"accuracy on the counted predictions.")
        if outcome["baseline_gap"] < COUNTEREXAMPLE_MIN_BASELINE_GAP:
            fail(f"the heads hardly matter for the counted predictions: {summary}. Faithfulness divides by that gap, "
                 f"so it must be at least {COUNTEREXAMPLE_MIN_BASELINE_GAP} nats for the ratio to mean anything.")
        if outcome["faithfulness"] > COUNTEREXAMPLE_MAX_FAITHFULNESS:
            fail(f"the circuit still explains this distribution: {summary}; bring faithfulness to "
                 f"{COUNTEREXAMPLE_MAX_FAITHFULNESS} or below.")
    hidden = " (hidden seeds)" if is_hidden() else ""
    return "; ".join(f"accuracy {o['full_accuracy']:.2f}, faithfulness {o['faithfulness']:.2f}"
                     for o in outcomes) + f" on 2 fresh samples{hidden}"


