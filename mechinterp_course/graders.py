"""Instant-feedback checks, used both in a student's notebook and in nbgrader's autograded test cells.

Every ``check_*`` function runs the student's code and the reference implementation (``mechinterp_course.circuits``
and friends) on several *fresh* inputs of several shapes, checks properties that any correct answer has, and either
prints a short success line or raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader marks the test cell
failed) with a message that says what is wrong -- shape, dtype, which values are off and by how much -- without
printing the expected answer.

Why these inputs: a hard-coded output fails because shapes and values change from one input to the next; a function
that ignores its input fails because the reference's output changes with it; the reference itself is refused, so
that importing it from the library is not an answer. Inputs come from seeds fixed per check (not the seeds the
notebook shows), so grading a notebook twice gives the same result.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import circuits, models, tasks

#: Default tolerances: float32 arithmetic in a different order differs by ~1e-6 relative.
ATOL = 1e-4
RTOL = 1e-4
#: Seeds per check; several inputs make a lucky pass vanishingly unlikely.
N_TRIALS = 3


class CheckFailed(AssertionError):
    """Raised when a student's answer is wrong; the message is the feedback the student sees."""


# --------------------------------------------------------------------------------------------------------------
# The machinery every check shares
# --------------------------------------------------------------------------------------------------------------


def _seed(check_name: str, trial: int) -> int:
    """A seed fixed per check and trial (stable across runs, different from any seed the notebook uses)."""
    digest = hashlib.sha256(f"{check_name}/{trial}".encode()).hexdigest()
    return int(digest[:8], 16)


def _fail(exercise: str, message: str) -> None:
    raise CheckFailed(f"{exercise}: {message}")


def _passed(exercise: str, what: str) -> None:
    print(f"\u2705 {exercise}: correct ({what}).")


def _require_own_function(exercise: str, fn: Any, reference: Callable | None = None) -> None:
    if not callable(fn):
        _fail(exercise, f"expected a function, got {type(fn).__name__}. Pass the function itself, without calling it.")
    module = getattr(fn, "__module__", "") or ""
    if (reference is not None and fn is reference) or module.startswith("mechinterp_course"):
        _fail(exercise, "this is the course library's reference implementation; write your own function.")


def _call(exercise: str, fn: Callable, *args, **kwargs) -> Any:
    """Call the student's function; turn ``NotImplementedError`` and crashes into readable feedback."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        _fail(exercise, "not implemented yet (the function still raises NotImplementedError).")
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug: report it, as the notebook would
        _fail(exercise, f"your function raised {type(error).__name__}: {error}")


def _describe_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def compare(exercise: str, actual: Any, expected: Tensor, what: str = "output",
            atol: float = ATOL, rtol: float = RTOL, context: str = "") -> None:
    """Compare a student's tensor with the reference; on a mismatch, say how without giving the answer."""
    where = f" {context}" if context else ""
    if isinstance(actual, (int, float)) and expected.ndim == 0:
        actual = torch.tensor(float(actual))
    if not isinstance(actual, Tensor):
        _fail(exercise, f"{what}{where} should be a torch.Tensor, got {type(actual).__name__}.")
    if actual.requires_grad:
        actual = actual.detach()
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(exercise, f"{what}{where} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.")
    if expected.is_floating_point() and not actual.is_floating_point():
        _fail(exercise, f"{what}{where} has dtype {actual.dtype}; a floating-point tensor is expected.")
    actual_f, expected_f = actual.double().cpu(), expected.double().cpu()
    if torch.isnan(actual_f).any() and not torch.isnan(expected_f).any():
        _fail(exercise, f"{what}{where} contains {int(torch.isnan(actual_f).sum())} NaN value(s).")
    close = torch.isclose(actual_f, expected_f, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        error = (actual_f - expected_f).abs().nan_to_num(nan=math.inf)
        worst = torch.nonzero(error == error.max())[0].tolist()
        n_bad, n = int((~close).sum()), close.numel()
        _fail(exercise, f"{n_bad} of {n} values of {what}{where} are wrong; the largest error is "
                        f"{float(error.max()):.3g} at index {_describe_index(worst)}.")


def _unchanged(exercise: str, before: Tensor, after: Tensor, name: str) -> None:
    if not torch.equal(before, after):
        _fail(exercise, f"your function modified its input `{name}` in place; work on a copy (e.g. `.clone()`).")


def _causal_pattern(batch: int, n_heads: int, seq: int, generator: torch.Generator) -> Tensor:
    """A random but valid attention pattern ``[batch, n_heads, q, k]``: causal, rows summing to one."""
    scores = torch.randn(batch, n_heads, seq, seq, generator=generator) * 3
    mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, -math.inf).softmax(-1)


@functools.lru_cache(maxsize=4)
def _zoo_state(name: str) -> tuple[dict, dict]:
    model, card = models.load(name)
    return {k: v.clone() for k, v in model.state_dict().items()}, card


def fresh_model(name: str = "induction-2l"):
    """A pristine copy of a zoo model, so that a student's hooks or weight edits can't change what is graded."""
    state, card = _zoo_state(name)
    model = models.make_model(card["config"], seed=card["seed"])
    model.load_state_dict(state)
    model.reset_hooks()
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# Chapter 1, "Circuits"
# --------------------------------------------------------------------------------------------------------------


def check_get_attention_pattern(fn: Callable) -> None:
    """``fn(model, tokens, layer) -> [batch, n_heads, q, k]``: read a pattern out of ``run_with_cache``."""
    exercise = "get_attention_pattern"
    _require_own_function(exercise, fn)
    model = fresh_model()
    for trial, (batch, half_len, layer) in enumerate([(3, 7, 0), (2, 12, 1), (1, 20, 1)]):
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=_seed(exercise, trial))
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        expected = cache[f"blocks.{layer}.attn.hook_pattern"]
        actual = _call(exercise, fn, model, tokens.clone(), layer)
        compare(exercise, actual, expected, "the pattern", context=f"(layer {layer}, {batch} x {tokens.shape[1]} tokens)")
    _passed(exercise, "3 inputs, both layers")


def _check_score(exercise: str, fn: Callable, reference: Callable, needs_half_len: bool, offset_of: Callable) -> None:
    _require_own_function(exercise, fn, reference)
    shapes = [(2, 4, 11), (3, 2, 17), (1, 8, 9)]
    for trial, (batch, n_heads, half_len) in enumerate(shapes):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        seq = 1 + 2 * half_len
        pattern = _causal_pattern(batch, n_heads, seq, generator)
        args = (half_len,) if needs_half_len else ()
        expected = reference(pattern, *args)
        before = pattern.clone()
        actual = _call(exercise, fn, pattern, *args)
        _unchanged(exercise, before, pattern, "pattern")
        compare(exercise, actual, expected, "the scores", context=f"(pattern of shape {tuple(pattern.shape)})")
    # Property: a head that does exactly this job scores 1, one that never does scores 0.
    half_len, seq = 6, 13
    offset = offset_of(half_len)
    perfect = torch.zeros(1, 2, seq, seq)
    for q in range(seq):
        k = q - offset if q - offset >= 0 else q
        perfect[0, 0, q, k] = 1.0
        perfect[0, 1, q, 0] = 1.0 if q - offset != 0 else 0.0
        if q - offset == 0:
            perfect[0, 1, q, q] = 1.0
    actual = _call(exercise, fn, perfect, *((half_len,) if needs_half_len else ()))
    compare(exercise, actual, torch.tensor([1.0, 0.0]), "the scores",
            context="(on a head that always attends to the right token, and one that never does)")
    _passed(exercise, "3 random patterns of different shapes, plus a perfect and a useless head")


def check_previous_token_scores(fn: Callable) -> None:
    """``fn(pattern [batch, n_heads, q, k]) -> [n_heads]``."""
    _check_score("previous_token_scores", fn, circuits.previous_token_scores, False, lambda half_len: 1)


def check_duplicate_token_scores(fn: Callable) -> None:
    """``fn(pattern, half_len) -> [n_heads]``."""
    _check_score("duplicate_token_scores", fn, circuits.duplicate_token_scores, True, lambda half_len: half_len)


def check_induction_scores(fn: Callable) -> None:
    """``fn(pattern, half_len) -> [n_heads]``."""
    _check_score("induction_scores", fn, circuits.induction_scores, True, lambda half_len: half_len - 1)


def check_circuit_heads(previous_token_heads: Any, induction_heads: Any) -> None:
    """The heads the student identified, as lists of ``(layer, head)``, against the thresholded scores."""
    exercise = "identify the induction circuit"
    model = fresh_model()
    half_len = 30
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=_seed(exercise, 0))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    expected = {
        "previous_token_heads": circuits.all_head_scores(cache, n_layers, circuits.previous_token_scores),
        "induction_heads": circuits.all_head_scores(cache, n_layers, circuits.induction_scores, half_len=half_len),
    }
    for name, given in [("previous_token_heads", previous_token_heads), ("induction_heads", induction_heads)]:
        try:
            given_set = {(int(layer), int(head)) for layer, head in given}
        except (TypeError, ValueError):
            _fail(exercise, f"{name} should be a list of (layer, head) pairs, got {given!r}.")
        truth = {tuple(map(int, lh)) for lh in torch.nonzero(expected[name] > circuits.INDUCTION_THRESHOLD).tolist()}
        missing, extra = truth - given_set, given_set - truth
        if missing or extra:
            _fail(exercise, f"{name}: {len(missing)} head(s) above the {circuits.INDUCTION_THRESHOLD} threshold are "
                            f"missing and {len(extra)} listed head(s) are below it.")
    _passed(exercise, "both lists match the heads whose scores exceed the threshold")


def check_head_dla(fn: Callable) -> None:
    """``fn(z [batch, n_heads, d_head], W_O [n_heads, d_head, d_model], direction [batch, d_model]) -> [batch, n_heads]``."""
    exercise = "head_direct_logit_attribution"
    _require_own_function(exercise, fn, circuits.head_direct_logit_attribution)
    for trial, (batch, n_heads, d_head, d_model) in enumerate([(2, 4, 16, 64), (5, 3, 8, 24), (1, 6, 4, 10)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        z = torch.randn(batch, n_heads, d_head, generator=generator)
        W_O = torch.randn(n_heads, d_head, d_model, generator=generator)
        direction = torch.randn(batch, d_model, generator=generator)
        expected = circuits.head_direct_logit_attribution(z, W_O, direction)
        actual = _call(exercise, fn, z.clone(), W_O.clone(), direction.clone())
        compare(exercise, actual, expected, "the attributions", context=f"(z of shape {tuple(z.shape)})", atol=1e-3)
        # Property: the heads' attributions add up to the attention layer's total output along the direction.
        total = ((torch.einsum("bhd,hdm->bm", z, W_O)) * direction).sum(-1)
        compare(exercise, actual.detach().sum(-1), total, "the sum over heads", atol=1e-3)
    _passed(exercise, "3 random shapes; the heads' attributions add up to the layer's output")


def check_logit_diff_decomposition(fn: Callable) -> None:
    """``fn(model, cache, answer, wrong) -> (terms [n_components], labels)``, summing to the true logit difference."""
    exercise = "decompose the logit difference"
    _require_own_function(exercise, fn, circuits.logit_diff_decomposition)
    model = fresh_model()
    for trial, (batch, half_len) in enumerate([(16, 10), (8, 15)]):
        pair = tasks.patching_pair(batch, half_len, model.cfg.d_vocab, seed=_seed(exercise, trial))
        with torch.no_grad():
            logits, cache = model.run_with_cache(pair.clean)
        expected, labels = circuits.logit_diff_decomposition(model, cache, pair.answer, pair.wrong)
        result = _call(exercise, fn, model, cache, pair.answer, pair.wrong)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (terms, labels).")
        terms, given_labels = result
        if list(given_labels) != labels:
            _fail(exercise, f"the labels should be {labels}, in that order; got {list(given_labels)}.")
        compare(exercise, terms, expected.detach(), "the terms", atol=1e-3)
        true_diff = circuits.logit_diff(logits, pair.answer, pair.wrong)
        compare(exercise, torch.as_tensor(terms).detach().sum(), true_diff.detach(), "the sum of the terms",
                context="(it must equal the model's logit difference)", atol=1e-3)
    _passed(exercise, "2 fresh prompt batches; the terms sum to the true logit difference")


def check_ablate_head(fn: Callable) -> None:
    """``fn(z, head, method, reference=None, resample_index=None) -> z'`` for zero, mean and resample ablation."""
    exercise = "ablate_head"
    _require_own_function(exercise, fn, circuits.ablate_head)
    for trial, (batch, pos, n_heads, d_head) in enumerate([(4, 7, 4, 16), (3, 5, 2, 8)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        z = torch.randn(batch, pos, n_heads, d_head, generator=generator)
        reference = torch.randn(6, pos + 2, n_heads, d_head, generator=generator)
        index = torch.randint(0, 6, (batch,), generator=generator)
        head = (trial + 1) % n_heads
        for method in ("zero", "mean", "resample"):
            before = z.clone()
            expected = circuits.ablate_head(z, head, method, reference, index)
            actual = _call(exercise, fn, z, head, method, reference.clone(), index.clone())
            _unchanged(exercise, before, z, "z")
            compare(exercise, actual, expected, "the ablated z", context=f"({method} ablation of head {head})")
    _passed(exercise, "zero, mean and resample ablation on 2 random shapes; inputs left untouched")


def check_normalised_metric(fn: Callable) -> None:
    exercise = "normalised_metric"
    _require_own_function(exercise, fn, circuits.normalised_metric)
    generator = torch.Generator().manual_seed(_seed(exercise, 0))
    values, clean, corrupted = torch.randn(10, generator=generator), 2.5, -1.25
    compare(exercise, _call(exercise, fn, values, clean, corrupted), circuits.normalised_metric(values, clean, corrupted),
            "the normalised values")
    compare(exercise, torch.as_tensor(_call(exercise, fn, torch.tensor(clean), clean, corrupted)).float(),
            torch.tensor(1.0), "the metric of the clean run itself")
    compare(exercise, torch.as_tensor(_call(exercise, fn, torch.tensor(corrupted), clean, corrupted)).float(),
            torch.tensor(0.0), "the metric of the corrupted run itself")
    _passed(exercise, "random values; the clean run maps to 1 and the corrupted run to 0")


def _patching_trials(exercise: str, model, corruption: str = "value"):
    for trial, (batch, half_len) in enumerate([(8, 6), (6, 9)]):
        pair = tasks.patching_pair(batch, half_len, model.cfg.d_vocab, corruption=corruption,
                                   seed=_seed(exercise, trial))
        metric = functools.partial(_logit_diff_metric, answer=pair.answer, wrong=pair.wrong)
        yield pair, metric


def _logit_diff_metric(logits: Tensor, answer: Tensor, wrong: Tensor) -> Tensor:
    return circuits.logit_diff(logits, answer, wrong)


def _check_model_function(exercise: str, fn: Callable, reference: Callable, corruption: str = "value",
                          atol: float = 1e-3, extra_args: Sequence = ()) -> None:
    _require_own_function(exercise, fn, reference)
    model = fresh_model()
    for pair, metric in _patching_trials(exercise, model, corruption):
        expected = reference(model, pair.clean, pair.corrupted, *extra_args, metric)
        actual = _call(exercise, fn, model, pair.clean.clone(), pair.corrupted.clone(), *extra_args, metric)
        model.reset_hooks()
        compare(exercise, actual, expected.detach(), "the result", atol=atol,
                context=f"(a fresh clean/corrupted batch of shape {tuple(pair.clean.shape)})")


def check_patch_residual(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, pos]``."""
    _check_model_function("patch_residual_by_layer_pos", fn, circuits.patch_residual_by_layer_pos)
    _passed("patch_residual_by_layer_pos", "2 fresh clean/corrupted batches of different lengths")


def check_patch_heads(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]``."""
    _check_model_function("patch_heads", fn, circuits.patch_heads)
    _passed("patch_heads", "2 fresh clean/corrupted batches")


def check_attribution_patch_heads(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]`` (the gradient estimate)."""
    _check_model_function("attribution_patch_heads", fn, circuits.attribution_patch_heads)
    _passed("attribution_patch_heads", "2 fresh clean/corrupted batches")


def check_path_patch_key(fn: Callable) -> None:
    """``fn(model, clean, corrupted, sender, receiver, metric) -> scalar``."""
    exercise = "path_patch_key"
    model = fresh_model()
    for sender, receiver in [((0, 3), (1, 1)), ((0, 1), (1, 0)), ((0, 0), (1, 2))]:
        _check_model_function(exercise, fn, circuits.path_patch_key, corruption="key", extra_args=(sender, receiver))
    # Property: a sender in the same layer as the receiver is no path at all.
    pair = tasks.patching_pair(4, 6, model.cfg.d_vocab, corruption="key", seed=_seed(exercise, 9))
    try:
        fn(model, pair.clean, pair.corrupted, (1, 0), (1, 1), lambda logits: logits.sum())
    except (ValueError, AssertionError):
        pass
    else:
        _fail(exercise, "a sender in the same layer as the receiver should raise a ValueError: there is no such path.")
    _passed(exercise, "3 sender/receiver pairs on 2 fresh batches each; an impossible path is refused")


def check_composition_score(fn: Callable) -> None:
    """``fn(W_A [..., n, m], W_B [..., m, k]) -> [...]``."""
    exercise = "composition_score"
    _require_own_function(exercise, fn, circuits.composition_score)
    for trial, shape in enumerate([((8, 8), (8, 8)), ((3, 6, 5), (3, 5, 7)), ((2, 1, 4, 4), (1, 3, 4, 4))]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        W_A, W_B = torch.randn(*shape[0], generator=generator), torch.randn(*shape[1], generator=generator)
        expected = circuits.composition_score(W_A, W_B)
        compare(exercise, _call(exercise, fn, W_A.clone(), W_B.clone()), expected, "the scores",
                context=f"(W_A {tuple(W_A.shape)}, W_B {tuple(W_B.shape)})")
        compare(exercise, _call(exercise, fn, 3.0 * W_A, 0.5 * W_B), expected, "the scores of rescaled matrices",
                context="(the score must not depend on the matrices' scale)")
    _passed(exercise, "3 shapes, batched; invariant to rescaling")


# Counterexample hunt ------------------------------------------------------------------------------------------

#: The circuit must lose most of its faithfulness: at most this, against about 0.96 on the standard probe (so more
#: than half of what the circuit explained there is gone). A distribution built from the architecture reaches ~0.3.
COUNTEREXAMPLE_MAX_FAITHFULNESS = 0.5
#: ... while the full model still does well: at least this fraction of the counted predictions right (the reference
#: distribution gives ~0.89, the model's own training distribution ~0.99 on the repeated half).
COUNTEREXAMPLE_MIN_ACCURACY = 0.7
#: Enough counted predictions that the measurement is not noise.
COUNTEREXAMPLE_MIN_PREDICTIONS = 500


def induction_circuit(model) -> list[tuple[int, int]]:
    """The chapter's induction circuit: heads above the threshold for induction or previous-token scores."""
    half_len = 30
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=2024)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    induction = circuits.all_head_scores(cache, n_layers, circuits.induction_scores, half_len=half_len)
    previous = circuits.all_head_scores(cache, n_layers, circuits.previous_token_scores)
    selected = (induction > circuits.INDUCTION_THRESHOLD) | (previous > circuits.INDUCTION_THRESHOLD)
    return [tuple(lh) for lh in torch.nonzero(selected).tolist()]


def measure_counterexample(make_batch: Callable, seed: int, batch: int = 128) -> dict[str, float]:
    """Run the student's generator on a fresh seed and measure the full model and the circuit on it."""
    exercise = "counterexample hunt"
    model = fresh_model()
    result = _call(exercise, make_batch, batch, seed)
    if not (isinstance(result, tuple) and len(result) == 2):
        _fail(exercise, "make_batch(batch, seed) must return a pair (tokens, mask).")
    tokens, mask = result
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.ndim != 2:
        _fail(exercise, "tokens must be an integer tensor of shape [batch, pos].")
    if tokens.shape[0] != batch or not 2 <= tokens.shape[1] <= model.cfg.n_ctx:
        _fail(exercise, f"tokens has shape {tuple(tokens.shape)}; expected [{batch}, pos] with 2 <= pos <= {model.cfg.n_ctx}.")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        _fail(exercise, f"tokens must lie in [0, {model.cfg.d_vocab - 1}].")
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, tokens.shape[1] - 1):
        _fail(exercise, f"mask must be a boolean tensor of shape [{batch}, {tokens.shape[1] - 1}] (one per prediction).")
    if int(mask.bool().sum()) < COUNTEREXAMPLE_MIN_PREDICTIONS:
        _fail(exercise, f"the mask counts only {int(mask.bool().sum())} predictions; count at least "
                        f"{COUNTEREXAMPLE_MIN_PREDICTIONS} so the measurement is meaningful.")
    reference = circuits.induction_reference_tokens(model.cfg.d_vocab)
    return circuits.circuit_faithfulness(model, tokens.long(), mask.bool(), induction_circuit(model), reference)


def check_counterexample(make_batch: Callable) -> None:
    """``make_batch(batch, seed) -> (tokens [batch, pos], mask [batch, pos - 1])``: a distribution on which the
    induction circuit explains little of what the full model does well."""
    exercise = "counterexample hunt"
    if not callable(make_batch):
        _fail(exercise, "pass your function make_batch itself.")
    seeds = [_seed(exercise, 0), _seed(exercise, 1)]
    outcomes = [measure_counterexample(make_batch, seed) for seed in seeds]
    # A generator that ignores its seed is a fixed data set, not a distribution.
    first = make_batch(8, seeds[0])[0]
    if torch.equal(first, make_batch(8, seeds[1])[0]):
        _fail(exercise, "make_batch returns the same tokens for different seeds; draw them from the seed.")
    for seed, outcome in zip(seeds, outcomes):
        summary = (f"full-model accuracy {outcome['full_accuracy']:.2f}, circuit faithfulness "
                   f"{outcome['faithfulness']:.2f} (seed {seed})")
        if outcome["full_accuracy"] < COUNTEREXAMPLE_MIN_ACCURACY:
            _fail(exercise, f"the full model does not do well here: {summary}; it must reach "
                            f"{COUNTEREXAMPLE_MIN_ACCURACY} accuracy on the counted predictions.")
        if outcome["faithfulness"] > COUNTEREXAMPLE_MAX_FAITHFULNESS:
            _fail(exercise, f"the circuit still explains this distribution: {summary}; bring faithfulness to "
                            f"{COUNTEREXAMPLE_MAX_FAITHFULNESS} or below.")
    _passed(exercise, "; ".join(f"accuracy {o['full_accuracy']:.2f}, faithfulness {o['faithfulness']:.2f}"
                                for o in outcomes) + " on 2 fresh samples")


# Measured numbers for the comparison table -------------------------------------------------------------------


ICL_EARLY_POS = 10
ICL_LATE_POS = 50


def reference_measurements(model, tokens: Tensor, half_len: int) -> dict[str, float]:
    """What the chapter's table asks the student to measure on ``tokens = BOS + x + x`` (``x`` of length half_len)."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    losses = circuits.per_token_loss(logits, tokens)
    scores = circuits.all_head_scores(cache, model.cfg.n_layers, circuits.induction_scores, half_len=half_len)
    return {
        "max_induction_score": float(scores.max()),
        "n_induction_heads": int((scores > circuits.INDUCTION_THRESHOLD).sum()),
        # Olsson et al. use loss at token 500 minus loss at token 50; our sequences are 61 tokens long, so the
        # course uses a late second-copy position minus an early first-copy position.
        "in_context_learning_score": float(losses[:, ICL_LATE_POS].mean() - losses[:, ICL_EARLY_POS].mean()),
    }


def check_measurements(fn: Callable) -> None:
    """``fn(model, tokens, half_len) -> dict`` with the three numbers of the comparison table."""
    exercise = "measure the course model"
    _require_own_function(exercise, fn, reference_measurements)
    model = fresh_model()
    for trial, batch in enumerate([32, 48]):
        tokens = tasks.repeated_tokens(batch, 30, model.cfg.d_vocab, seed=_seed(exercise, trial))
        expected = reference_measurements(model, tokens, 30)
        measured = _call(exercise, fn, model, tokens.clone(), 30)
        if not isinstance(measured, dict):
            _fail(exercise, f"return a dict, got {type(measured).__name__}.")
        for key, value in expected.items():
            if key not in measured or measured[key] is None:
                _fail(exercise, f"missing the measurement {key!r}.")
            compare(exercise, torch.tensor(float(measured[key])), torch.tensor(value), repr(key), atol=1e-3,
                    context=f"(on a fresh batch of {batch} sequences)")
    _passed(exercise, "all three numbers match on 2 fresh batches")


def check_my_scores(scores: Any) -> None:
    """The student's own point scores for an area: three integers 0..10."""
    exercise = "your point scores"
    from . import research

    try:
        research.validate_scores(scores)
    except (ValueError, TypeError) as error:
        _fail(exercise, str(error))
    _passed(exercise, "three scores between 0 and 10")


# --------------------------------------------------------------------------------------------------------------
# Notebook plumbing
# --------------------------------------------------------------------------------------------------------------


def yours_or_reference(fn: Callable, reference: Callable) -> Callable:
    """Wrap a student's function for the demo cells that follow an exercise: while the exercise is unfinished (the
    function raises ``NotImplementedError``), the demo runs the reference instead and says so, so a student who is
    stuck can still see the rest of the chapter."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            print(f"(`{fn.__name__}` is not written yet: this cell uses the course's reference implementation.)")
            return reference(*args, **kwargs)

    return run


# --------------------------------------------------------------------------------------------------------------
# Chapter 0, "History and landscape"
# --------------------------------------------------------------------------------------------------------------
#
# Quizzes: every answer key comes from the deck's text (``mechinterp_course.history`` derives each key from its
# transcription of the slides). A quiz check needs the whole answer right, so a constant answer cannot pass, and on a
# mistake it says how many items are wrong, never which.

from . import history  # noqa: E402


def _normalise_option(value: Any) -> str:
    return str(value).strip().lower().replace("_", "-").replace(" ", "-")


def _check_keys(exercise: str, given: Any, expected_keys: Sequence[str], what: str) -> dict:
    if not isinstance(given, dict):
        _fail(exercise, f"{what} should be a dict, got {type(given).__name__}.")
    missing = [k for k in expected_keys if k not in given]
    extra = [k for k in given if k not in expected_keys]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected keys {extra}"] if extra else [])
        _fail(exercise, f"{what}: {'; '.join(parts)}. Use exactly the keys the question lists.")
    return given


def _check_options(exercise: str, given: dict, options: Sequence[str], what: str, normalise=_normalise_option) -> dict:
    allowed = {normalise(o): o for o in options}
    out = {}
    for key, value in given.items():
        if value is None or normalise(value) not in allowed:
            _fail(exercise, f"{what}: {value!r} (for {key!r}) is not one of the options {list(options)}.")
        out[key] = allowed[normalise(value)]
    return out


def _count_wrong(given: dict, key: dict) -> int:
    return sum(given[k] != v for k, v in key.items())


def check_order_quiz(order: Any) -> None:
    """The letters of ``history.ORDER_QUIZ`` from earliest to latest (slides 6 and 7)."""
    exercise = "order the events"
    letters = list(history.ORDER_QUIZ)
    if not isinstance(order, (list, tuple)):
        _fail(exercise, f"give a list of letters, got {type(order).__name__}.")
    order = [str(letter).strip().upper() for letter in order]
    unknown = sorted(set(order) - set(letters))
    missing = sorted(set(letters) - set(order))
    if unknown or missing or len(order) != len(letters):
        _fail(exercise, f"give each of the {len(letters)} letters exactly once (unknown: {unknown}, missing: "
                        f"{missing}, {len(order)} given).")
    key = history.order_quiz_key()
    misplaced = sum(a != b for a, b in zip(order, key))
    if misplaced:
        rank = {letter: i for i, letter in enumerate(key)}
        inverted = sum(rank[order[i]] > rank[order[j]] for i in range(len(order)) for j in range(i + 1, len(order)))
        n_pairs = len(order) * (len(order) - 1) // 2
        _fail(exercise, f"{misplaced} of {len(order)} events are not in their place ({inverted} of {n_pairs} pairs "
                        f"are in the wrong order). Re-read slides 6 and 7.")
    _passed(exercise, f"all {len(order)} events in the deck's order")


def check_people_quiz(groups: Any, roles: Any) -> None:
    """``groups``: person -> "Distill" or "transformer-circuits"; ``roles``: person -> a letter of ``ROLE_QUIZ`` (slide 5)."""
    exercise = "who did what"
    key_groups, key_roles = history.people_quiz_key()
    groups = _check_options(exercise, _check_keys(exercise, groups, list(key_groups), "groups"),
                            [history.DISTILL, history.TRANSFORMER_CIRCUITS], "groups")
    roles = _check_options(exercise, _check_keys(exercise, roles, list(key_roles), "roles"),
                           list(history.ROLE_QUIZ), "roles", normalise=lambda v: str(v).strip().upper())
    wrong_groups, wrong_roles = _count_wrong(groups, key_groups), _count_wrong(roles, key_roles)
    if wrong_groups or wrong_roles:
        _fail(exercise, f"{wrong_groups} of {len(key_groups)} groups and {wrong_roles} of {len(key_roles)} roles are "
                        f"wrong. Re-read slide 5.")
    _passed(exercise, f"{len(key_groups)} groups and {len(key_roles)} roles match slide 5")


def check_area_quiz(areas: Any, induction_heads_when: Any) -> None:
    """``areas``: letter of ``AREA_QUIZ`` -> an area of ``AREA_QUIZ_OPTIONS``; ``induction_heads_when``: one of
    Leonard's "when in the training process" classes, as slide 7 gives it for the induction-heads paper."""
    exercise = "classify the papers"
    key_areas, key_when = history.area_quiz_key()
    areas = _check_options(exercise, _check_keys(exercise, areas, list(history.AREA_QUIZ), "areas"),
                           history.AREA_QUIZ_OPTIONS, "areas")
    when_options = history.LEONARD_TAXONOMY["when in the training process"]
    when = _check_options(exercise, {"induction_heads_when": induction_heads_when}, when_options,
                          "induction_heads_when")["induction_heads_when"]
    wrong = _count_wrong(areas, key_areas)
    if wrong or when != key_when:
        _fail(exercise, f"{wrong} of {len(key_areas)} papers are in the wrong area, and the induction-heads class is "
                        f"{'wrong' if when != key_when else 'right'}. The deck's 'main work' lists are on slides 22, 30, "
                        f"36, 39-40 and 63; the class is in slide 7's wording.")
    _passed(exercise, f"{len(key_areas)} papers in the deck's areas, and slide 7's class for induction heads")


def check_status_quiz(status: Any) -> None:
    """``status``: each item of slide 17 -> its number of check marks (0 for "__")."""
    exercise = "read the status table"
    status = _check_keys(exercise, status, list(history.STATUS), "status")
    for item, marks in status.items():
        if isinstance(marks, bool) or not isinstance(marks, int) or marks not in history.STATUS_LEGEND:
            _fail(exercise, f"status[{item!r}] should be 3, 2, 1 or 0 (the number of check marks), got {marks!r}.")
    wrong = _count_wrong(status, history.STATUS)
    if wrong:
        _fail(exercise, f"{wrong} of {len(history.STATUS)} items have the wrong number of check marks.")
    _passed(exercise, f"all {len(history.STATUS)} items of slide 17")


def check_success_quiz(answer: Any) -> None:
    """``answer``: each of slide 80's works -> the letter of the claim it is the example of."""
    exercise = "strongest successes"
    key = history.success_quiz_key()
    answer = _check_options(exercise, _check_keys(exercise, answer, list(key), "answer"), list(history.SUCCESS_QUIZ),
                            "answer", normalise=lambda v: str(v).strip().upper())
    wrong = _count_wrong(answer, key)
    if wrong:
        _fail(exercise, f"{wrong} of {len(key)} works are matched to the wrong claim. Re-read slide 80.")
    _passed(exercise, f"all {len(key)} works matched as slide 80 does")


def check_ternary_placement(corners: Any, placement: Any) -> None:
    """The student's own placement of slide 9's papers (the deck's text gives no positions, so there is no key):
    three distinct corner labels, and for every paper three non-negative weights with a positive sum."""
    exercise = "your ternary placement"
    if not (isinstance(corners, (list, tuple)) and len(corners) == 3 and all(isinstance(c, str) and c.strip() for c in corners)):
        _fail(exercise, "corners should be three non-empty strings.")
    if len({c.strip().lower() for c in corners}) != 3:
        _fail(exercise, "the three corners should be different.")
    placement = _check_keys(exercise, placement, list(history.TERNARY_PAPERS), "placement")
    points = []
    for paper, weights in placement.items():
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            _fail(exercise, f"the placement of {paper[:40]!r} should be three numbers.")
        if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
            _fail(exercise, f"the placement of {paper[:40]!r} should be three non-negative numbers with a positive sum.")
        points.append(tuple(round(v / sum(values), 2) for v in values))
    if len(set(points)) < 4:
        _fail(exercise, f"only {len(set(points))} distinct positions for {len(points)} papers: spread them out where "
                        f"they differ.")
    _passed(exercise, f"{len(points)} papers placed at {len(set(points))} distinct positions (graded by hand from here)")


# Feature visualisation -----------------------------------------------------------------------------------------


def _random_cnn(channels: tuple[int, int], hidden: int, image_size: int, seed: int) -> "history.DigitsCNN":
    """A random CNN with He-initialised weights and small random biases (so that units are alive and gradients are
    informative), frozen, in eval mode."""
    model = history.DigitsCNN(channels, hidden, 10, image_size, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * math.sqrt(2.0 / param[0].numel()))
            param.requires_grad_(False)
    return model


def check_total_variation(fn: Callable) -> None:
    """``fn(x [batch, C, H, W]) -> [batch]``: the sum of squared differences between neighbouring pixels."""
    exercise = "total_variation"
    _require_own_function(exercise, fn, history.total_variation)
    for trial, shape in enumerate([(2, 1, 8, 8), (3, 2, 5, 7), (1, 3, 4, 4)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        x = torch.randn(*shape, generator=generator)
        before = x.clone()
        actual = _call(exercise, fn, x)
        _unchanged(exercise, before, x, "x")
        compare(exercise, actual, history.total_variation(x), "the total variation", context=f"(x of shape {shape})")
        compare(exercise, _call(exercise, fn, x + 3.0), history.total_variation(x), "the total variation of x + 3",
                context="(adding a constant to every pixel must change nothing)")
    compare(exercise, _call(exercise, fn, torch.full((2, 1, 6, 6), 0.7)), torch.zeros(2), "the total variation",
            context="(of constant images)")
    _passed(exercise, "3 random shapes; zero for constant images; unchanged by adding a constant")


def _same_norm_random(reference: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``[n, batch, C, H, W]`` random images with the same L2 norm as each image of ``reference``."""
    noise = torch.randn(n, *reference.shape, generator=generator)
    norms = reference.flatten(1).norm(dim=1)
    return noise / noise.flatten(2).norm(dim=2)[..., None, None, None] * norms[None, :, None, None, None]


def _visualise_once(exercise: str, fn: Callable, activation_fn: Callable, x0: Tensor, settings: dict) -> Tensor:
    before = x0.clone()
    result = _call(exercise, fn, activation_fn, x0, **settings)
    _unchanged(exercise, before, x0, "x0")
    if not isinstance(result, Tensor):
        _fail(exercise, f"return a tensor, got {type(result).__name__}.")
    if tuple(result.shape) != tuple(x0.shape):
        _fail(exercise, f"the result has shape {tuple(result.shape)}; it should have x0's shape {tuple(x0.shape)}.")
    if not torch.isfinite(result).all():
        _fail(exercise, f"the result contains non-finite values (settings {settings}).")
    return result.detach()


def check_visualise(fn: Callable) -> None:
    """``fn(activation_fn, x0, steps, lr, l2, tv, jitter, seed) -> [batch, C, H, W]``: activation maximisation as
    ``history.visualise`` documents it. Properties first (ascent, far above random inputs, each penalty shrinks what it
    penalises, jitter spreads a single-pixel unit over exactly the allowed shifts), then the reference on fresh
    random CNNs of several shapes."""
    exercise = "visualise"
    _require_own_function(exercise, fn, history.visualise)
    generator = torch.Generator().manual_seed(_seed(exercise, 0))

    # 1. Ascent, and far above random inputs of the same size (no penalties, no jitter).
    model = _random_cnn((6, 8), 16, 8, seed=_seed(exercise, 1))
    classes = torch.tensor([1, 4, 7])
    activation_fn = history.unit_activation(model, "logits", classes)
    x0 = 0.1 * torch.randn(3, 1, 8, 8, generator=generator)
    plain = dict(steps=40, lr=0.1, l2=0.0, tv=0.0, jitter=0, seed=0)
    result = _visualise_once(exercise, fn, activation_fn, x0, plain)
    with torch.no_grad():
        start, reached = activation_fn(x0), activation_fn(result)
        randoms = torch.stack([activation_fn(r) for r in _same_norm_random(result, 128, generator)])
    if not (reached > start).all():
        _fail(exercise, "the optimised images lower the target activation: the Adam step must *increase* the "
                        "objective (minimise its negative).")
    if not (reached > randoms.max(0).values).all():
        _fail(exercise, "the optimised images do not reach a higher activation than random images of the same norm: "
                        "the optimisation is not following the gradient of the target unit.")

    # 2. Each penalty shrinks what it penalises.
    for name, settings, measure, label in [
        ("l2", dict(plain, l2=0.5), lambda x: x.flatten(1).norm(dim=1), "the images' L2 norm"),
        ("tv", dict(plain, tv=2.0), lambda x: history.total_variation(x) / x.flatten(1).pow(2).sum(1), "the images' "
         "total variation (relative to their squared norm)"),
    ]:
        penalised = _visualise_once(exercise, fn, activation_fn, x0, settings)
        if not (measure(penalised) < 0.5 * measure(result)).all():
            _fail(exercise, f"with {name}={settings[name]} {label} should be much smaller than with {name}=0; it is not "
                            f"(check the sign and the weight of the {name} penalty, and that the optimiser is Adam).")

    # 3. Jitter, on a unit that reads one pixel: it must spread over every shift in [-jitter, jitter], and no further.
    size, centre, shift = 11, 5, 2
    pixel = lambda x: x[:, 0, centre, centre]  # noqa: E731
    blank = torch.zeros(1, 1, size, size)
    still = _visualise_once(exercise, fn, pixel, blank, dict(steps=60, lr=0.1, l2=0.05, tv=0.0, jitter=0, seed=3))
    mass = still[0, 0].pow(2)
    if mass.sum() <= 0 or mass[centre, centre] < 0.99 * mass.sum():
        _fail(exercise, "with jitter=0 a unit that reads one pixel should change only that pixel.")
    moved = _visualise_once(exercise, fn, pixel, blank, dict(steps=100, lr=0.1, l2=0.05, tv=0.0, jitter=shift, seed=3))
    mass = moved[0, 0].pow(2)
    window = mass[centre - shift:centre + shift + 1, centre - shift:centre + shift + 1]
    if mass.sum() <= 0 or window.sum() < (1 - 1e-6) * mass.sum():
        _fail(exercise, f"with jitter={shift} a one-pixel unit should only change pixels at most {shift} away from it "
                        f"(draw the shifts from [-jitter, jitter] and roll the image, don't pad or wrap further).")
    edges = [window[0].sum(), window[-1].sum(), window[:, 0].sum(), window[:, -1].sum()]
    if mass[centre, centre] > 0.5 * mass.sum() or min(edges) <= 0:
        _fail(exercise, f"with jitter={shift} a one-pixel unit should be spread over every shift from -{shift} to "
                        f"{shift} in both directions (torch.randint's upper bound is exclusive).")

    # 4. The reference, on fresh random CNNs, units and settings.
    trials = [
        (((4, 6), 12, 6), "logits", 3, dict(steps=30, lr=0.1, l2=0.05, tv=0.1, jitter=1, seed=11)),
        (((8, 16), 32, 8), "conv2", 4, dict(steps=30, lr=0.05, l2=0.01, tv=0.02, jitter=2, seed=12)),
        (((3, 5), 10, 10), "fc", 2, dict(steps=30, lr=0.1, l2=0.02, tv=0.0, jitter=1, seed=13)),
    ]
    for trial, ((channels, hidden, image_size), layer, batch, settings) in enumerate(trials):
        trial_generator = torch.Generator().manual_seed(_seed(exercise, 10 + trial))
        model = _random_cnn(channels, hidden, image_size, seed=_seed(exercise, 20 + trial))
        n_units = {"logits": 10, "fc": hidden, "conv2": channels[1]}[layer]
        activation_fn = history.unit_activation(model, layer, torch.randint(0, n_units, (batch,), generator=trial_generator))
        x0 = 0.1 * torch.randn(batch, 1, image_size, image_size, generator=trial_generator)
        expected = history.visualise(activation_fn, x0, **settings)
        actual = _visualise_once(exercise, fn, activation_fn, x0, settings)
        compare(exercise, actual, expected, "the optimised images", atol=1e-3, rtol=1e-3,
                context=f"(a random CNN, unit in {layer!r}, images {tuple(x0.shape)}, {settings})")
    _passed(exercise, "ascends far above random inputs; L2, TV and jitter behave as specified; matches the reference "
                      "on 3 random CNNs")


def check_top_activating_examples(fn: Callable) -> None:
    """``fn(activation_fn, images, k) -> (values [k], indices [k])``: largest first, ties to the lower index."""
    exercise = "top_activating_examples"
    _require_own_function(exercise, fn, history.top_activating_examples)
    cases = []
    for trial, ((channels, hidden, image_size), layer, unit, n, k) in enumerate([
        (((4, 6), 12, 6), "logits", 3, 60, 5),
        (((6, 8), 16, 8), "conv2", 2, 200, 10),
        (((3, 5), 10, 10), "fc", 4, 37, 1),
    ]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        model = _random_cnn(channels, hidden, image_size, seed=_seed(exercise, 10 + trial))
        images = torch.randn(n, 1, image_size, image_size, generator=generator)
        cases.append((history.unit_activation(model, layer, unit), images, k, f"unit {unit} of {layer!r}, {n} images, k={k}"))
    # Ties: cap a unit so that more than k images share the top activation.
    generator = torch.Generator().manual_seed(_seed(exercise, 9))
    model = _random_cnn((4, 6), 12, 8, seed=_seed(exercise, 19))
    images = torch.randn(80, 1, 8, 8, generator=generator)
    logit = history.unit_activation(model, "logits", 0)
    with torch.no_grad():
        cap = float(logit(images).sort(descending=True).values[11])
    cases.append((lambda x: logit(x).clamp(max=cap), images, 6, "a unit where 12 images tie for the top"))

    for activation_fn, images, k, label in cases:
        with torch.no_grad():
            activations = activation_fn(images)
        expected_values, expected_indices = history.top_activating_examples(activation_fn, images, k)
        result = _call(exercise, fn, activation_fn, images.clone(), k)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (values, indices).")
        values, indices = (torch.as_tensor(r).detach() for r in result)
        if tuple(indices.shape) != (k,) or tuple(values.shape) != (k,):
            _fail(exercise, f"values and indices should both have shape ({k},); got {tuple(values.shape)} and "
                            f"{tuple(indices.shape)} ({label}).")
        if indices.is_floating_point() or indices.min() < 0 or indices.max() >= len(images):
            _fail(exercise, f"indices should be integer positions in images ({label}).")
        indices = indices.long()
        compare(exercise, values, activations[indices], "the values", context=f"(they must be the activations of the "
                                                                              f"images you return; {label})")
        if (values[1:] > values[:-1] + 1e-6).any():
            _fail(exercise, f"the values are not in descending order ({label}).")
        outside = torch.ones(len(images), dtype=torch.bool)
        outside[indices] = False
        if outside.any() and activations[outside].max() > values[-1] + 1e-6:
            _fail(exercise, f"an image you left out activates the unit more than one you returned ({label}).")
        if not torch.equal(indices, expected_indices):
            _fail(exercise, f"{int((indices != expected_indices).sum())} of {k} indices differ from the documented "
                            f"order: equal activations go to the lower index first ({label}).")
        compare(exercise, values, expected_values, "the values", context=f"({label})")
    _passed(exercise, "3 random CNNs and units, plus a tie that the lower index must win")


# Point scores and research directions ------------------------------------------------------------------------


def check_my_area_scores(scores: Any, required: Sequence[str] | None = None) -> None:
    """The student's point scores for several areas: ``{area: {score key: 0..10}}``, covering at least ``required``
    (default: every area the deck scores)."""
    exercise = "your point scores"
    from . import research

    if required is None:
        required = [area for area, info in research.AREAS.items()
                    if any(value is not None for value in info["scores"].values())]

    if not isinstance(scores, dict):
        _fail(exercise, f"my_scores should be a dict {{area: scores}}, got {type(scores).__name__}.")
    missing = [area for area in required if area not in scores]
    if missing:
        _fail(exercise, f"score at least the areas the deck scores: missing {missing}.")
    for area, area_scores in scores.items():
        try:
            research.validate_scores(area_scores)
        except (ValueError, TypeError) as error:
            _fail(exercise, f"{area!r}: {error}")
    _passed(exercise, f"{len(scores)} areas, three scores between 0 and 10 each")


def _random_score_tables(exercise: str) -> list[tuple[dict, dict, float, str]]:
    """Fresh random score tables of several sizes, plus tables built to tie."""
    pool = ["circuits", "grokking", "backup", "saes", "feature-composition", "modularity", "training-process",
            "attention-superposition", "probing", "steering"]
    tables = []
    for trial, (n_areas, weight) in enumerate([(2, 0.5), (4, 0.25), (7, 1.0), (5, 0.0), (6, 0.75)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        names = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n_areas].tolist()]
        draw = lambda: int(torch.randint(0, 11, (1,), generator=generator))  # noqa: E731
        mine = {name: {key: draw() for key in history.SCORE_KEYS} for name in names}
        deck = {}
        for name in names + ["unscored-by-you"]:
            if float(torch.rand(1, generator=generator)) < 0.25:
                continue  # an area the deck does not score
            deck[name] = {key: (None if float(torch.rand(1, generator=generator)) < 0.2 else draw())
                          for key in history.SCORE_KEYS}
        tables.append((mine, deck, weight, f"{n_areas} areas, weight_mine={weight}"))
    # Equal values, different excitement: the more exciting area wins although it is listed second.
    mine = {"grokking": {"low_hanging_fruit": 6, "excitement": 2, "difficulty": 3},
            "saes": {"low_hanging_fruit": 3, "excitement": 5, "difficulty": 3}}
    tables.append((mine, {}, 0.5, "two areas tied on value"))
    # Equal values and excitement: the area listed first wins.
    mine = {"modularity": {"low_hanging_fruit": 4, "excitement": 4, "difficulty": 2},
            "backup": {"low_hanging_fruit": 4, "excitement": 4, "difficulty": 2},
            "circuits": {"low_hanging_fruit": 1, "excitement": 1, "difficulty": 9}}
    deck = {"backup": {"low_hanging_fruit": None, "excitement": None, "difficulty": None}}
    tables.append((mine, deck, 0.5, "two areas tied on value and excitement"))
    return tables


def check_pick_area(fn: Callable) -> None:
    """``fn(my_scores, deck_scores, weight_mine) -> (best_area, {area: value})`` as ``history.pick_area`` documents."""
    exercise = "pick_area"
    _require_own_function(exercise, fn, history.pick_area)
    import copy

    tables = _random_score_tables(exercise)
    wrong_values, wrong_picks = 0, 0
    for mine, deck, weight, label in tables:
        expected_best, expected_values = history.pick_area(mine, deck, weight)
        before = copy.deepcopy((mine, deck))
        result = _call(exercise, fn, mine, deck, weight)
        if (mine, deck) != before:
            _fail(exercise, "your function modified the score tables it was given; work on copies.")
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            _fail(exercise, "return a pair (best_area, values) with values a dict {area: value}.")
        best, values = result
        if set(values) != set(mine):
            _fail(exercise, f"values should have one entry per area you scored ({len(mine)}), got {len(values)} ({label}).")
        if best not in mine:
            _fail(exercise, f"the pick {best!r} is not one of the areas you scored ({label}).")
        try:
            bad = sum(abs(float(values[a]) - v) > 1e-6 for a, v in expected_values.items())
        except (TypeError, ValueError):
            _fail(exercise, f"values should be numbers ({label}).")
        if bad:
            wrong_values += 1
            continue
        if float(values[best]) < max(float(v) for v in values.values()) - 1e-9:
            _fail(exercise, f"your pick does not have the largest value among your own values ({label}).")
        wrong_picks += best != expected_best
    if wrong_values or wrong_picks:
        _fail(exercise, f"on {len(tables)} score tables, {wrong_values} have wrong values and {wrong_picks} a wrong pick "
                        f"(check the weighting, the areas the deck does not score, and the tie rules).")
    _passed(exercise, f"{len(tables)} score tables: values, the argmax, and both tie rules")
