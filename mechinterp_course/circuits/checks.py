"""Chapter 01's checks: what the notebook's test cells call (``check.get_attention_pattern(get_attention_pattern)``).

Every check runs its telling tests first, because they say *what* is wrong: known answers (a perfect head scores 1,
an identity circuit scores 1, patching nothing changes nothing), properties (the terms of a decomposition sum to the
logit difference, a score ignores the matrices' scale), and the typical mistakes, recognised by their output (clean
and corrupted swapped, a missing ``metric(corrupted)``, a whole head patched instead of one path, a transposed
circuit). Only then does it compare with the reference (:mod:`.reference`, generated from the solution notebook) on
fresh inputs, naming entries by what they are (heads as ``L1H2``, query positions, tokens). The machinery is
:mod:`mechinterp_course.checking`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import models, research, tasks
from ..checking import (
    ATOL,
    RTOL,
    call,
    check,
    compare,
    fail,
    is_hidden,
    layer_head_index,
    raises,
    tokens_only,
    trials,
    unchanged,
    wrong_answers,
)
from . import (
    ATTENTION_MAJORITY,
    COUNTEREXAMPLE_BATCH,
    COUNTEREXAMPLE_MAX_FAITHFULNESS,
    COUNTEREXAMPLE_MIN_ACCURACY,
    COUNTEREXAMPLE_MIN_BASELINE_GAP,
    COUNTEREXAMPLE_MIN_PREDICTIONS,
    INDUCTION_THRESHOLD,
    LogitDiff,
    all_head_scores,
    circuit_faithfulness,
    induction_reference_tokens,
    reference,
)
from .studies import CIRCUIT_STUDIES

MODEL = "induction-2l"
#: The notebook runs with gradients off (its setup cell); the grader runs the checks the same way.
NOTEBOOK_GRAD_ENABLED = False
#: Checks whose student functions may see their arguments only: when graded they run in a process of their own,
#: which the grader starts ahead of time (``instructor.judge``).
ISOLATED_CHECKS = ("counterexample",)
#: The notebook's probe: BOS + HALF_LEN random tokens + the same tokens again.
HALF_LEN = 30


# --------------------------------------------------------------------------------------------------------------
# Helpers: inputs, and recognising a known mistake by its output
# --------------------------------------------------------------------------------------------------------------


def _causal_pattern(batch: int, n_heads: int, seq: int, generator: torch.Generator) -> Tensor:
    """A random but valid attention pattern ``[batch, n_heads, q, k]``: causal, rows summing to one."""
    scores = torch.randn(batch, n_heads, seq, seq, generator=generator) * 3
    mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, -torch.inf).softmax(-1)


def _as_float(value: Any, shape: Sequence[int]) -> Tensor | None:
    """``value`` as a float64 tensor if it is a floating tensor (or a number) of ``shape``, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if isinstance(value, Tensor) and tuple(value.shape) == tuple(shape) and value.is_floating_point():
        return value.detach().double().cpu()
    return None


def _matches(value: Any, target: Tensor | float, atol: float = ATOL, rtol: float = RTOL) -> bool:
    """Whether ``value`` is a floating tensor of ``target``'s shape, close to it everywhere (NaN matches NaN)."""
    target = torch.as_tensor(target).detach().double().cpu()
    actual = _as_float(value, target.shape)
    return actual is not None and bool(torch.isclose(actual, target, atol=atol, rtol=rtol, equal_nan=True).all())


#: A known mistake: what it gives (a tensor, or a function computing it, called only when needed) and its message.
Mistake = tuple[Tensor | Callable[[], Any], str]


def _explain(
    actual: Any, expected: Tensor, mistakes: Sequence[Mistake], atol: float = ATOL, rtol: float = RTOL
) -> None:
    """Before the element-wise comparison: if ``actual`` is wrong but is what a known mistake gives, fail with that
    mistake's message."""
    if _matches(actual, expected, atol, rtol):
        return
    for wrong, message in mistakes:
        try:
            candidate = wrong() if callable(wrong) else wrong
        except (RuntimeError, ValueError, IndexError):  # a mistake that cannot arise with these inputs
            continue
        if _matches(actual, candidate, atol, rtol):
            fail(message)


def _heads(n_heads: int) -> list[str]:
    return [f"H{head}" for head in range(n_heads)]


def _metric_of(model, tokens: Tensor, metric: Callable, hooks: Sequence = ()) -> Tensor:
    with torch.no_grad():
        return metric(model.run_with_hooks(tokens, fwd_hooks=list(hooks)) if hooks else model(tokens)).detach()


def _patch_z(
    model,
    tokens: Tensor,
    source_cache,
    layer: int,
    heads: Sequence[int],
    metric: Callable,
    positions: slice = slice(None),
) -> Tensor:
    """The metric of a run on ``tokens`` with ``heads`` of ``layer`` (at ``positions``) patched from
    ``source_cache``: what patching a whole head (or a whole layer, or one position) gives."""
    name = f"blocks.{layer}.attn.hook_z"

    def hook(z, hook):
        z = z.clone()
        for head in heads:
            z[:, positions, head] = source_cache[name][:, positions, head]
        return z

    return _metric_of(model, tokens, metric, [(name, hook)])


def _cache(model, tokens: Tensor):
    with torch.no_grad():
        return model.run_with_cache(tokens)[1]


# --------------------------------------------------------------------------------------------------------------
# Section 1: reading a pattern
# --------------------------------------------------------------------------------------------------------------


@check("get_attention_pattern")
def get_attention_pattern(fn: Callable) -> str:
    """``fn(model, tokens, layer) -> [batch, n_heads, q, k]``: read a pattern out of ``run_with_cache``."""
    model = models.fresh(MODEL)
    n_layers = model.cfg.n_layers
    names = ["example ", _heads(model.cfg.n_heads), "query ", "key "]
    for trial in trials(3):
        batch, half_len, layer = 1 + trial.index, trial.randint(6, 20), trial.index % n_layers
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=trial.seed)
        cache = _cache(model, tokens)
        expected = cache[f"blocks.{layer}.attn.hook_pattern"]
        actual = call(fn, model, tokens.clone(), layer)
        context = f"(layer {layer}, {batch} x {tokens.shape[1]} tokens)"
        pattern = _as_float(actual, expected.shape)
        if pattern is not None:
            # The properties of any attention pattern first: finite, causal, each query's row a distribution.
            if not torch.isfinite(pattern).all():
                fail(
                    f"your pattern {context} has infinite or NaN entries: a pattern is the softmax of the "
                    f"attention scores (hook_pattern), not the masked scores before it."
                )
            if pattern.triu(1).abs().max() > 1e-6:
                transposed = torch.allclose(pattern.sum(-2), torch.ones_like(pattern.sum(-2)), atol=1e-4)
                fail(
                    f"your pattern {context} gives weight to keys after their query"
                    + (
                        " and its columns, not its rows, sum to 1: you transposed it; the dimensions are "
                        "[batch, n_heads, query_pos, key_pos]."
                        if transposed
                        else ": the dimensions are [batch, n_heads, query_pos, key_pos], and a query attends only to "
                        "itself and earlier keys."
                    )
                )
            sums = pattern.sum(-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                fail(
                    f"the rows of your pattern {context} sum to between {float(sums.min()):.3g} and "
                    f"{float(sums.max()):.3g} over the keys; each query's attention is a distribution that sums "
                    f"to 1 (read hook_pattern: the softmax of the scores)."
                )
            for other in range(n_layers):
                if (
                    other != layer
                    and _matches(pattern, cache[f"blocks.{other}.attn.hook_pattern"])
                    and not _matches(pattern, expected)
                ):
                    fail(
                        f"asked for layer {layer}, your function returned layer {other}'s pattern: use the "
                        f"`layer` argument in the hook name."
                    )
        compare(actual, expected, "the pattern", context=context, index=names)
    return "3 inputs, both layers; finite, causal, rows summing to 1"


# --------------------------------------------------------------------------------------------------------------
# Section 2: head scores, and where along the sequence a head works
# --------------------------------------------------------------------------------------------------------------


def _perfect_and_useless(offset: int, seq: int) -> Tensor:
    """``[1, 2, seq, seq]``: head 0 always attends ``offset`` back (where it can; else to itself), head 1 never does
    (it attends to BOS, or to itself where BOS is the right key)."""
    pattern = torch.zeros(1, 2, seq, seq)
    for q in range(seq):
        k = q - offset
        pattern[0, 0, q, k if k >= 0 else q] = 1.0
        pattern[0, 1, q, 0 if k != 0 else q] = 1.0
    return pattern


#: Where each score's diagonal lies, as section 2's table says it (for the messages).
_OFFSETS = {
    "previous_token_scores": "1 below the diagonal (key q - 1)",
    "duplicate_token_scores": "half_len below the diagonal (key q - half_len)",
    "induction_scores": "half_len - 1 below the diagonal (key q - half_len + 1)",
}


def _check_score(
    name: str, fn: Callable, reference_fn: Callable, job: str, offset_of: Callable[[int], int], needs_half_len: bool
) -> str:
    # Known answers first: they say what is wrong (an off-by-one offset, a sum instead of a mean).
    half_len = 6
    perfect = _perfect_and_useless(offset_of(half_len), 1 + 2 * half_len)
    extra = (half_len,) if needs_half_len else ()
    scores = call(fn, perfect, *extra)
    context = f"on BOS + {half_len} tokens repeated"
    found = _as_float(scores, (2,))
    if found is not None:
        perfect_score, useless_score = float(found[0]), float(found[1])
        if not math.isclose(perfect_score, 1.0, abs_tol=1e-4):
            if perfect_score > 1.0:
                why = "a score is a mean over the query positions where the key exists (and over the batch), not a sum."
            elif perfect_score < 0.5:
                why = (
                    f"your diagonal misses where the head attends. Check the offset: the key is "
                    f"{_OFFSETS[name]}, and torch.diagonal(pattern, offset=-k, dim1=-2, dim2=-1) reads it."
                )
            else:
                why = "average only over the query positions where the key exists: the entries of that one diagonal."
            fail(
                f"a head that always attends {job} scores {perfect_score:.3g} with your function ({context}); it "
                f"must score 1: {why}"
            )
        if not math.isclose(useless_score, 0.0, abs_tol=1e-4):
            fail(
                f"a head that never attends {job} (it attends to BOS) scores {useless_score:.3g} with your "
                f"function ({context}); it must score 0: read only the diagonal {_OFFSETS[name]}."
            )
    compare(
        scores,
        torch.tensor([1.0, 0.0]),
        "the scores",
        context=f"of a head that always attends {job} (expected 1) and one that never does (expected 0), {context}",
        index=lambda i: ["the perfect head", "the useless head"][i[0]],
    )
    for trial in trials(3):
        batch, n_heads, half_len = trial.randint(1, 3), trial.randint(2, 8), trial.randint(5, 17)
        pattern = _causal_pattern(batch, n_heads, 1 + 2 * half_len, trial.generator)
        extra = (half_len,) if needs_half_len else ()
        before = pattern.clone()
        actual = call(fn, pattern, *extra)
        unchanged(before, pattern, "pattern")
        compare(
            actual,
            reference_fn(pattern, *extra),
            "the scores",
            context=f"(pattern of shape {tuple(pattern.shape)}{f', half_len {half_len}' if needs_half_len else ''})",
            index=["H"],
        )
    return "a perfect and a useless head, then 3 random patterns of different shapes"


@check("previous_token_scores")
def previous_token_scores(fn: Callable) -> str:
    """``fn(pattern [batch, n_heads, q, k]) -> [n_heads]``."""
    return _check_score(
        "previous_token_scores", fn, reference.previous_token_scores, "to the previous token", lambda half_len: 1, False
    )


@check("duplicate_token_scores")
def duplicate_token_scores(fn: Callable) -> str:
    """``fn(pattern, half_len) -> [n_heads]``."""
    return _check_score(
        "duplicate_token_scores",
        fn,
        reference.duplicate_token_scores,
        "to the earlier copy of its token",
        lambda half_len: half_len,
        True,
    )


@check("induction_scores")
def induction_scores(fn: Callable) -> str:
    """``fn(pattern, half_len) -> [n_heads]``."""
    return _check_score(
        "induction_scores",
        fn,
        reference.induction_scores,
        "to the token after the earlier copy of its token",
        lambda half_len: half_len - 1,
        True,
    )


def induction_circuit(model) -> list[tuple[int, int]]:
    """The chapter's induction circuit: heads above the threshold for induction or previous-token scores."""
    tokens = tasks.repeated_tokens(64, HALF_LEN, model.cfg.d_vocab, seed=2024)
    cache = _cache(model, tokens)
    n_layers = model.cfg.n_layers
    induction = all_head_scores(cache, n_layers, reference.induction_scores, half_len=HALF_LEN)
    previous = all_head_scores(cache, n_layers, reference.previous_token_scores)
    selected = (induction > INDUCTION_THRESHOLD) | (previous > INDUCTION_THRESHOLD)
    return [tuple(lh) for lh in torch.nonzero(selected).tolist()]


@check("circuit_heads", functions=0, depends_on=("previous_token_scores", "induction_scores"))
def circuit_heads(previous_token_heads: Any, induction_heads: Any) -> str:
    """The heads the student identified, as lists of ``(layer, head)``, against the thresholded scores."""
    model = models.fresh(MODEL)
    [trial] = trials(1)
    tokens = tasks.repeated_tokens(64, HALF_LEN, model.cfg.d_vocab, seed=trial.seed)
    cache = _cache(model, tokens)
    n_layers = model.cfg.n_layers
    expected = {
        "previous_token_heads": all_head_scores(cache, n_layers, reference.previous_token_scores),
        "induction_heads": all_head_scores(cache, n_layers, reference.induction_scores, half_len=HALF_LEN),
    }
    for name, given in [("previous_token_heads", previous_token_heads), ("induction_heads", induction_heads)]:
        try:
            given_set = {(int(layer), int(head)) for layer, head in given}
        except (TypeError, ValueError):
            fail(f"{name} should be a list of (layer, head) pairs such as [(0, 3)], got {given!r}.")
        truth = {tuple(lh) for lh in torch.nonzero(expected[name] > INDUCTION_THRESHOLD).tolist()}
        missing, extra = truth - given_set, given_set - truth
        if missing or extra:
            fail(
                f"{name}: {len(missing)} head(s) above the {INDUCTION_THRESHOLD} threshold are missing and "
                f"{len(extra)} listed head(s) are below it."
            )
    return "both lists match the heads whose scores exceed the threshold"


def _working_until(n_heads: int, seq: int, until: Sequence[int]) -> Tensor:
    """``[1, n_heads, seq, seq]``: head h attends to the previous token at query positions 1 .. until[h] and to
    itself at every other position."""
    pattern = torch.zeros(1, n_heads, seq, seq)
    for head in range(n_heads):
        for q in range(seq):
            pattern[0, head, q, q - 1 if 1 <= q <= until[head] else q] = 1.0
    return pattern


@check("previous_token_attention")
def previous_token_attention(fn: Callable) -> str:
    """``fn(pattern [batch, n_heads, q, k]) -> [n_heads, q]``: entry ``p`` is query position ``p``'s mean attention
    to position ``p - 1``; NaN at position 0."""
    seq, until = 13, (7, 12, 0)
    anchor = _working_until(len(until), seq, until)
    expected = reference.previous_token_attention(anchor)
    actual = call(fn, anchor.clone())
    job = (
        f"heads that attend to the previous token at query positions 1 to {until[0]}, at every position, and "
        f"never ({seq} positions)"
    )
    if isinstance(actual, Tensor) and tuple(actual.shape) == (len(until), seq - 1):
        fail(
            f"your result has {seq - 1} entries per head for {seq} query positions: give one per query "
            f"position, NaN at position 0 (BOS has no previous token), so that entry p is query position p."
        )
    curve = _as_float(actual, expected.shape)
    if curve is not None:
        if not torch.isnan(curve[:, 0]).all():
            fail(
                "entry 0 (query position 0, BOS) must be NaN (float('nan')): BOS has no previous token, and a 0 "
                "there would read as 'attends elsewhere'."
            )
        if _matches(curve[:, 1:-1], expected[:, 2:]) or _matches(curve[:, 2:], expected[:, 1:-1]):
            fail(
                f"for {job}, your curves are shifted by one position: entry p must be the attention of query "
                f"position p to position p - 1."
            )
    compare(actual, expected, "the curves", context=f"of {job}", index=["H", "query "])
    for trial in trials(3):
        batch, n_heads, seq = trial.randint(2, 4), trial.randint(2, 6), trial.randint(8, 40)
        pattern = _causal_pattern(batch, n_heads, seq, trial.generator)
        before = pattern.clone()
        actual = call(fn, pattern)
        unchanged(before, pattern, "pattern")
        compare(
            actual,
            reference.previous_token_attention(pattern),
            "the curves",
            context=f"(pattern of shape {tuple(pattern.shape)})",
            index=["H", "query "],
        )
    return "heads that work everywhere, nowhere and up to a position; 3 random patterns of different shapes"


@check("previous_token_until", functions=0, depends_on=("previous_token_attention",))
def previous_token_until(given: Any) -> str:
    """The last query position at which the strongest layer-0 previous-token head gives at least
    ATTENTION_MAJORITY of its attention to the previous token (measured afresh)."""
    model = models.fresh(MODEL)
    [trial] = trials(1)
    tokens = tasks.repeated_tokens(64, HALF_LEN, model.cfg.d_vocab, seed=trial.seed)
    pattern = _cache(model, tokens)["blocks.0.attn.hook_pattern"]
    strongest = int(reference.previous_token_scores(pattern).argmax())
    curve = reference.previous_token_attention(pattern)[strongest]
    stops = torch.nonzero(curve[1:] < ATTENTION_MAJORITY)
    truth = int(stops[0]) if len(stops) else curve.shape[0] - 1  # curve[1 + i] is the first below: i is the last
    if isinstance(given, bool) or not isinstance(given, (int, float)) or float(given) != int(given):
        fail(f"previous_token_until should be a whole number (a query position), got {given!r}.")
    given = int(given)
    if given == truth:
        return f"L0H{strongest} works up to query position {truth}, measured on a fresh batch"
    if abs(given - truth) == 1:
        fail(
            f"off by one. Give the query position itself (BOS is position 0, and entry p of "
            f"previous_token_attention is query position p): the last one at which L0H{strongest} still gives at "
            f"least {ATTENTION_MAJORITY} of its attention to the previous token."
        )
    fail(
        f"L0H{strongest} does not stop at query position {given}: find the last position p at which its "
        f"attention to the previous token is at least {ATTENTION_MAJORITY} (from position 1 up to p, every "
        f"position is)."
    )


# --------------------------------------------------------------------------------------------------------------
# Section 3: direct logit attribution
# --------------------------------------------------------------------------------------------------------------


@check("head_direct_logit_attribution")
def head_direct_logit_attribution(fn: Callable) -> str:
    """``fn(z [batch, n_heads, d_head], W_O [n_heads, d_head, d_model], direction [batch, d_model]) ->
    [batch, n_heads]``."""
    for trial in trials(3):
        batch, n_heads = trial.randint(2, 5), trial.randint(2, 6)
        d_head, d_model = trial.randint(3, 16), trial.randint(17, 64)
        z = torch.randn(batch, n_heads, d_head, generator=trial.generator)
        W_O = torch.randn(n_heads, d_head, d_model, generator=trial.generator)
        direction = torch.randn(batch, d_model, generator=trial.generator)
        actual = call(fn, z.clone(), W_O.clone(), direction.clone())
        context = f"(z of shape {tuple(z.shape)})"
        expected = reference.head_direct_logit_attribution(z, W_O, direction)
        _explain(
            actual,
            expected,
            [
                (expected.T, "your result is [n_heads, batch]; return [batch, n_heads]."),
                (
                    reference.head_direct_logit_attribution(z, W_O, direction[:1].expand_as(direction)),
                    "every example is scored along the first example's direction: each example has its own "
                    "(direction[i] for example i).",
                ),
            ],
            atol=1e-3,
        )
        # The property: the heads' terms add up to the whole layer's output along the direction.
        total = (torch.einsum("bhd,hdm->bm", z, W_O) * direction).sum(-1)
        terms = _as_float(actual, (batch, n_heads))
        if terms is not None:
            compare(
                terms.sum(-1),
                total,
                "the sum over heads of your attributions",
                atol=1e-3,
                context=f"{context}: it must equal the layer's summed output dotted with the direction",
                index=["example "],
            )
        compare(actual, expected, "the attributions", context=context, atol=1e-3, index=["example ", "H"])
    return "3 random shapes; the heads' attributions add up to the layer's output"


def _with_random_biases(generator: torch.Generator, model=None):
    """The course model (or ``model``, a copy of it) with random unembedding and output biases (the trained ones are
    zero or small), so that a decomposition that leaves a bias out cannot sum to the truth. It travels to a graded
    kernel by its weights."""
    model = models.fresh(MODEL) if model is None else model
    state = model.state_dict()
    for name in [n for n in state if n == "unembed.bias" or n.endswith("attn.o.bias")]:
        state[name] = torch.randn(state[name].shape, generator=generator)
    model.load_state_dict(state)
    model.zoo_name = None  # no longer the zoo's model: send it with its weights
    return model


@check("decompose_logit_diff", depends_on=("head_direct_logit_attribution",))
def decompose_logit_diff(fn: Callable) -> str:
    """``fn(model, cache, answer, wrong) -> (terms [n_components], labels)``, summing to the true logit difference."""
    model = None
    for trial in trials(2):
        model = _with_random_biases(trial.generator, model)
        batch = trial.randint(6, 16)
        pair = tasks.patching_pair(batch, trial.randint(8, 15), model.cfg.d_vocab, seed=trial.seed)
        with torch.no_grad():
            logits, cache = model.run_with_cache(pair.clean)
            expected, labels = reference.decompose_logit_diff(model, cache, pair.answer, pair.wrong)
        result = call(fn, model, cache, pair.answer, pair.wrong)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            fail("return a pair (terms, labels).")
        terms, given_labels = result
        if isinstance(terms, (list, tuple)):
            try:
                terms = torch.stack([torch.as_tensor(t, dtype=torch.float64).reshape(()) for t in terms])
            except (TypeError, ValueError, RuntimeError):
                fail("terms should be a tensor of one number per component.")
        if not isinstance(terms, Tensor) or terms.ndim != 1:
            shape = tuple(terms.shape) if isinstance(terms, Tensor) else type(terms).__name__
            fail(f"terms should be a 1-d tensor, one batch-mean number per component; got {shape}.")
        given_labels = [str(label) for label in given_labels]
        context = f"(a fresh batch of {batch} prompts, on the model with random output and unembedding biases)"
        # The property first: the decomposition is exact, so the terms sum to the model's logit difference.
        true_diff = float(LogitDiff(pair.answer, pair.wrong)(logits))
        total = float(terms.detach().double().sum())
        if abs(total - true_diff) > 1e-3 * max(1.0, abs(true_diff)):
            if math.isclose(total, batch * true_diff, rel_tol=1e-3):
                fail(
                    f"your terms sum to {total:.4g}, {batch} times the logit difference {true_diff:.4g} {context}: "
                    f"each term is the mean over the batch, not the sum."
                )
            missing = [label for label in labels if label not in given_labels]
            note = f" (your labels lack {', '.join(map(repr, missing))})" if missing else ""
            fail(
                f"your terms sum to {total:.4g}, but the model's logit difference is {true_diff:.4g} {context}: the "
                f"decomposition is exact, so some term is missing or wrong{note}."
            )
        if given_labels != labels:
            fail(f"the labels should be {labels}, in that order; got {given_labels}.")
        compare(terms, expected.detach(), "the terms", atol=1e-3, context=context, index=[labels])
    return "2 fresh prompt batches, with random biases; the terms sum to the true logit difference"


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
        while torch.equal(index, torch.arange(batch)):  # resampling must differ from taking the first rows
            index = torch.randint(0, 6, (batch,), generator=trial.generator)
        head = (trial.index + 1) % n_heads
        others = [h for h in range(n_heads) if h != head]
        for method in UNKNOWN_ABLATION_METHODS:
            if not raises(ValueError, fn, z.clone(), head, method, ref.clone(), index.clone()):
                fail(
                    f"method={method!r} returned a value; an unknown method should raise a ValueError (so that a "
                    f"typo cannot silently run the wrong ablation)."
                )
        for method in ("zero", "mean", "resample"):
            before = z.clone()
            actual = call(fn, z, head, method, ref.clone(), index.clone())
            unchanged(before, z, "z")
            context = f"({method} ablation of H{head}, z of shape {tuple(z.shape)})"
            out = _as_float(actual, z.shape)
            if out is not None:
                changed = [f"H{h}" for h in others if not torch.allclose(out[:, :, h], z[:, :, h].double())]
                if changed:
                    fail(
                        f"your {method} ablation of H{head} also changed {', '.join(changed)}: every head but the "
                        f"one asked for must be left as it was (index the head dimension, z[:, :, head])."
                    )
            expected = reference.ablate_head(z, head, method, ref, index)
            ablated = functools.partial(_ablated_with, reference.ablate_head(z, head, "zero"), head)
            _explain(
                actual,
                expected,
                [
                    (
                        ablated(ref[:, :pos, head].mean(dim=(0, 1))),
                        f"your mean ablation puts the same vector at every position: the mean is over the reference's "
                        f"batch only, one mean per position {context}.",
                    ),
                    (
                        ablated(z[:, :, head].mean(dim=0)),
                        f"you averaged z itself; the mean comes from `reference` (its first pos positions) {context}.",
                    ),
                    (
                        ablated(ref[:batch, :pos, head]),
                        f"row i must get reference row resample_index[i], not reference row i {context}.",
                    ),
                ],
            )
            compare(actual, expected, "the ablated z", context=context, index=["example ", "pos ", "H", "d_head "])
    return (
        "unknown methods refused; zero, mean and resample ablation on 2 random shapes; other heads and your "
        "input left untouched"
    )


def _ablated_with(zeroed: Tensor, head: int, value: Tensor) -> Tensor:
    """``zeroed`` (z with ``head`` zero-ablated) with ``value`` (broadcast) written into ``head``: what an ablation
    that replaces the head by ``value`` gives."""
    out = zeroed.clone()
    out[:, :, head] = value
    return out


# --------------------------------------------------------------------------------------------------------------
# Section 5-6: activation and attribution patching
# --------------------------------------------------------------------------------------------------------------

#: (shape of ``value``, how clean and corrupted are given, whether clean < corrupted) per trial.
_NORMALISED_METRIC_TRIALS = [
    ((10,), "float", False),
    ((3, 4), "0-d tensor", True),
    ((), "float", True),
    ((6,), "per-example tensor", False),
]


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
        context = (
            f"(value of shape {tuple(shape)}, clean and corrupted as {kind}s, clean "
            f"{'below' if clean_below else 'above'} corrupted)"
        )
        cases.append((values, clean, corrupted, context, ["example "] if kind == "per-example tensor" else None))
    # The anchors first: the clean run itself maps to 1, the corrupted run to 0 (and not the other way round).
    for _, clean, corrupted, context, names in cases:
        at_clean, at_corrupted = (torch.as_tensor(end).float().clone() for end in (clean, corrupted))
        clean_maps = call(fn, at_clean, clean, corrupted)
        corrupted_maps = call(fn, at_corrupted, clean, corrupted)
        if _matches(clean_maps, torch.zeros(at_clean.shape)) and _matches(corrupted_maps, torch.ones(at_clean.shape)):
            fail(
                f"your function maps the clean run to 0 and the corrupted run to 1 {context}: you swapped clean and "
                f"corrupted. 1 means 'as clean', 0 'as corrupted'."
            )
        for maps, end, target in [(clean_maps, "clean", 1.0), (corrupted_maps, "corrupted", 0.0)]:
            got = _as_float(maps, at_clean.shape)
            if got is not None and not _matches(got, torch.full(at_clean.shape, target)):
                fail(
                    f"your function maps the {end} run's own metric to {float(got.flatten()[0]):.4g}; it must map it "
                    f"to {target:g} {context}."
                )
            compare(
                maps,
                torch.full(at_clean.shape, target),
                f"the normalised metric of the {end} run itself",
                context=context,
                index=names,
            )
    for values, clean, corrupted, context, names in cases:
        expected = torch.as_tensor(reference.normalised_metric(values, clean, corrupted)).float()
        compare(
            call(fn, values.clone(), clean, corrupted), expected, "the normalised values", context=context, index=names
        )
    return (
        f"the clean run maps to 1 and the corrupted run to 0; {len(cases)} random trials (floats and tensors, "
        f"either sign)"
    )


def _patching_trials(model, corruption: str = "value", n: int = 2):
    for trial in trials(n):
        pair = tasks.patching_pair(
            trial.randint(5, 8), trial.randint(6, 10), model.cfg.d_vocab, corruption=corruption, seed=trial.seed
        )
        yield pair, LogitDiff(pair.answer, pair.wrong)


def _batch_context(pair) -> str:
    return f"(a fresh clean/corrupted batch of shape {tuple(pair.clean.shape)}; metric = the raw logit difference)"


@check("patch_residual_by_layer_pos")
def patch_residual_by_layer_pos(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, pos]``."""
    model = models.fresh(MODEL)
    for pair, metric in _patching_trials(model):
        expected = reference.patch_residual_by_layer_pos(model, pair.clean, pair.corrupted, metric).detach()
        actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), metric)
        model.reset_hooks()
        context = _batch_context(pair)
        found = _as_float(actual, expected.shape)
        if found is not None:
            # Known answers: before layer 0 only the changed token's position differs between the two runs.
            clean_value = float(_metric_of(model, pair.clean, metric))
            corrupted_value = float(_metric_of(model, pair.corrupted, metric))
            source = pair.source_pos
            others = torch.cat([found[0, :source], found[0, source + 1 :]])
            if _matches(others, torch.full(others.shape, clean_value), atol=1e-3) and _matches(
                found[0, source], corrupted_value, atol=1e-3
            ):
                fail(
                    f"where patching changes nothing (layer 0, every position but the changed token's) your map "
                    f"gives the clean run's metric {clean_value:.4g}, not the corrupted run's {corrupted_value:.4g} "
                    f"{context}: you swapped them. Run the corrupted input and patch in the clean activations."
                )
            if not _matches(others, torch.full(others.shape, corrupted_value), atol=1e-3):
                fail(
                    f"at layer 0 only position {source} (the changed token) differs between the two runs, so "
                    f"patching any other position must leave the corrupted run's metric {corrupted_value:.4g}; "
                    f"yours does not {context}. Patch blocks.L.hook_resid_pre (the stream entering block L), one "
                    f"position at a time, and clone the activation before changing it."
                )
            if not _matches(found[0, source], clean_value, atol=1e-3):
                fail(
                    f"patching layer 0 at position {source}, the only one that differs, must restore the clean "
                    f"run's metric {clean_value:.4g} exactly; yours gives {float(found[0, source]):.4g} {context}. "
                    f"Patch blocks.L.hook_resid_pre (the stream entering block L) at that position."
                )
        compare(actual, expected, "the patching map", atol=1e-3, context=context, index=["L", "pos "])
    return "changed and unchanged positions at layer 0; 2 fresh clean/corrupted batches of different lengths"


def _patched_grid(
    model, tokens: Tensor, source_cache, metric: Callable, whole_layer: bool = False, positions: slice = slice(None)
) -> Tensor:
    """``[n_layers, n_heads]``: the metric with each head (or, ``whole_layer``, its whole layer) patched at
    ``positions``: what the usual slips of head patching give."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    return torch.tensor(
        [
            [
                float(
                    _patch_z(
                        model, tokens, source_cache, layer, range(n_heads) if whole_layer else [head], metric, positions
                    )
                )
                for head in range(n_heads)
            ]
            for layer in range(n_layers)
        ]
    )


@check("patch_heads")
def patch_heads(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]``."""
    model = models.fresh(MODEL)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    # A known answer first: with nothing to patch (clean = corrupted) every head gives the corrupted run's metric.
    pair, metric = next(_patching_trials(model, n=1))
    same = call(fn, model, pair.corrupted.clone(), pair.corrupted.clone(), metric)
    model.reset_hooks()
    compare(
        same,
        _metric_of(model, pair.corrupted, metric).expand(n_layers, n_heads),
        "the per-head results",
        atol=1e-3,
        index=layer_head_index,
        context="with clean = corrupted (patching then changes nothing: "
        "every entry must be the corrupted run's metric, the raw logit difference)",
    )
    for pair, metric in _patching_trials(model):
        context = _batch_context(pair)
        expected = reference.patch_heads(model, pair.clean, pair.corrupted, metric).detach()
        actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), metric)
        model.reset_hooks()
        clean_cache = _cache(model, pair.clean)

        _explain(
            actual,
            expected,
            [
                (
                    functools.partial(reference.patch_heads, model, pair.corrupted, pair.clean, metric),
                    f"you ran the clean input and patched in the corrupted run's activations {context}: run the "
                    "corrupted "
                    f"input and patch in the clean ones.",
                ),
                (
                    functools.partial(_patched_grid, model, pair.corrupted, clean_cache, metric, whole_layer=True),
                    f"every head of a layer gives the same result: you patched the whole layer's z at once {context}; "
                    f"patch one head's slice, z[:, :, head].",
                ),
                (
                    functools.partial(
                        _patched_grid, model, pair.corrupted, clean_cache, metric, positions=slice(-1, None)
                    ),
                    f"you patched the head at the last position only {context}; patch it at every position.",
                ),
            ],
            atol=1e-3,
        )
        compare(actual, expected, "the per-head results", atol=1e-3, context=context, index=layer_head_index)
    return "clean = corrupted changes nothing; 2 fresh clean/corrupted batches"


@check("attribution_patch_heads")
def attribution_patch_heads(fn: Callable) -> str:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]`` (the gradient estimate)."""
    model = models.fresh(MODEL)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    start_from = (
        "the first-order estimate is metric(corrupted) + gradient . (z_clean - z_corrupted): add the "
        "starting value (a normalised metric hides this mistake, because it is 0 on the corrupted run)"
    )
    # A known answer first: with clean = corrupted there is nothing to patch, every estimate is metric(corrupted).
    pair, metric = next(_patching_trials(model, n=1))
    at_corrupted = float(_metric_of(model, pair.corrupted, metric))
    same = call(fn, model, pair.corrupted.clone(), pair.corrupted.clone(), metric)
    model.reset_hooks()
    if _matches(same, torch.zeros(n_layers, n_heads), atol=1e-3):
        fail(
            f"with clean = corrupted every estimate must be metric(corrupted) = {at_corrupted:.4g} (there is "
            f"nothing to patch); yours are 0: {start_from}."
        )
    compare(
        same,
        torch.full((n_layers, n_heads), at_corrupted),
        "the estimates",
        atol=1e-3,
        index=layer_head_index,
        context=f"with clean = corrupted (nothing to patch: every estimate must be metric(corrupted) = "
        f"{at_corrupted:.4g})",
    )
    for pair, metric in _patching_trials(model):
        expected = reference.attribution_patch_heads(model, pair.clean, pair.corrupted, metric).detach()
        actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), metric)
        model.reset_hooks()
        context = _batch_context(pair)
        at_corrupted = float(_metric_of(model, pair.corrupted, metric))
        found = _as_float(actual, expected.shape)
        if found is not None and not _matches(found, expected, atol=1e-3):
            if _matches(found, expected - at_corrupted, atol=1e-3):
                fail(
                    f"every estimate is off by exactly -{at_corrupted:.4g}, the metric of the corrupted run "
                    f"{context}: {start_from}."
                )
            if _matches(found, 2 * at_corrupted - expected, atol=1e-3):
                fail(
                    f"your estimates move the wrong way from metric(corrupted) {context}: the step is "
                    f"z_clean - z_corrupted (towards the clean run), not the reverse."
                )
            if _matches(found[-1], expected[-1], atol=1e-3):
                bad = [
                    f"L{layer}H{head}"
                    for layer in range(n_layers - 1)
                    for head in range(n_heads)
                    if not _matches(found[layer, head], expected[layer, head], atol=1e-3)
                ]
                fail(
                    f"your last layer's estimates are right but {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} "
                    f"are not {context}: the gradient with respect to an earlier layer's z must flow through the "
                    f"later layers. Do not detach z in the hooks (z.detach().requires_grad_() cuts the graph there); "
                    f"add a zero probe that requires grad instead."
                )
        _explain(
            actual,
            expected,
            [
                (
                    functools.partial(reference.attribution_patch_heads, model, pair.corrupted, pair.clean, metric),
                    f"you linearised around the clean run and stepped towards the corrupted one {context}: the "
                    "estimate "
                    f"starts from the corrupted run (its metric and gradient) and steps by z_clean - z_corrupted.",
                ),
            ],
            atol=1e-3,
        )
        compare(actual, expected, "the estimates", atol=1e-3, index=layer_head_index, context=context)
    return "clean = corrupted gives metric(corrupted); 2 fresh clean/corrupted batches, with the raw logit difference"


# --------------------------------------------------------------------------------------------------------------
# Section 7: path patching, composition, copying and prefix matching
# --------------------------------------------------------------------------------------------------------------

#: Sender/receiver pairs that are no path (same layer, or the sender after the receiver): they must raise ValueError.
IMPOSSIBLE_PATHS = [((1, 0), (1, 1)), ((0, 2), (0, 1)), ((1, 2), (0, 3))]


def _whole_head(model, pair, sender: tuple[int, int], metric: Callable) -> Tensor:
    """The metric of the corrupted run with the sender head's whole output patched from the clean run."""
    return _patch_z(model, pair.corrupted, _cache(model, pair.clean), sender[0], [sender[1]], metric)


def _add_to_receiver(model, pair, sender, receiver, metric, hook_kind: str, all_receivers: bool = False) -> Tensor:
    """The sender's clean-minus-corrupted output added to the receiver's ``q``, ``k`` or ``v`` input (one head, or
    every head of the receiver's layer): what a path patch through the wrong input gives."""
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    name = f"blocks.{s_layer}.attn.hook_z"
    delta = _cache(model, pair.clean)[name][:, :, s_head] - _cache(model, pair.corrupted)[name][:, :, s_head]
    delta_out = delta @ model.W_O[s_layer, s_head]
    weight = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[hook_kind][r_layer]  # [n_heads, d_model, d_head]
    heads = range(model.cfg.n_heads) if all_receivers else [r_head]

    def hook(x, hook):
        x = x.clone()
        for head in heads:
            x[:, :, head] += delta_out @ weight[head]
        return x

    return _metric_of(model, pair.corrupted, metric, [(f"blocks.{r_layer}.attn.hook_{hook_kind}", hook)])


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
            fail(
                f"sender L{sender[0]}H{sender[1]} -> receiver L{receiver[0]}H{receiver[1]} returned a value; a sender "
                f"that is not in an earlier layer than the receiver is no path at all and should raise a ValueError."
            )
        model.reset_hooks()
    # ... and with identical clean and corrupted inputs there is nothing to restore: the corrupted run's metric.
    unchanged_metric = _metric_of(model, pair.corrupted, metric)
    actual = call(fn, model, pair.corrupted.clone(), pair.corrupted.clone(), (0, 3), (1, 2), metric)
    model.reset_hooks()
    compare(
        actual,
        unchanged_metric,
        "the result",
        atol=1e-3,
        context="with clean = corrupted (patching any path then changes nothing: expected the corrupted run's metric)",
    )
    paths = [((0, 3), (1, 1)), ((0, 1), (1, 0)), ((0, 0), (1, 2))]
    for sender, receiver in paths:
        for pair, metric in _patching_trials(model, corruption="key"):
            expected = reference.path_patch_key(model, pair.clean, pair.corrupted, sender, receiver, metric).detach()
            actual = call(fn, model, pair.clean.clone(), pair.corrupted.clone(), sender, receiver, metric)
            model.reset_hooks()
            path = f"L{sender[0]}H{sender[1]} -> L{receiver[0]}H{receiver[1]}'s key"
            context = f"(path {path}, a fresh batch of shape {tuple(pair.clean.shape)})"
            _explain(
                actual,
                expected,
                [
                    (
                        functools.partial(_whole_head, model, pair, sender, metric),
                        f"your result is what patching the sender's whole output gives {context}: that restores every "
                        "path "
                        f"from the sender (to every later head's query, key and value, and to the logits). Add the "
                        f"sender's clean-minus-corrupted output to the receiver's key only.",
                    ),
                    (
                        functools.partial(
                            _add_to_receiver, model, pair, sender, receiver, metric, "k", all_receivers=True
                        ),
                        f"you changed the key of every head in the receiver's layer {context}; change the receiver "
                        "head's "
                        f"key only.",
                    ),
                    (
                        functools.partial(_add_to_receiver, model, pair, sender, receiver, metric, "q"),
                        f"your result is what adding the sender's change to the receiver's query gives {context}; this "
                        f"exercise adds it to the receiver's key (hook_k, through W_K).",
                    ),
                    (
                        functools.partial(_add_to_receiver, model, pair, sender, receiver, metric, "v"),
                        f"your result is what adding the sender's change to the receiver's value gives {context}; this "
                        f"exercise adds it to the receiver's key (hook_k, through W_K).",
                    ),
                    (
                        functools.partial(
                            reference.path_patch_key, model, pair.corrupted, pair.clean, sender, receiver, metric
                        ),
                        f"you ran the clean input with corrupted activations on the path {context}: run the corrupted "
                        f"input and restore the clean activations along the path.",
                    ),
                ],
                atol=1e-3,
            )
            compare(actual, expected, "the result", atol=1e-3, context=context)
    return "impossible paths refused; clean = corrupted changes nothing; 3 sender/receiver pairs on 2 fresh batches"


def _elementwise_score(W_A: Tensor, W_B: Tensor) -> Tensor:
    """The composition score with an element-wise product in place of the matrix product (a typical slip)."""
    return (W_A * W_B).norm(dim=(-2, -1)) / (W_A.norm(dim=(-2, -1)) * W_B.norm(dim=(-2, -1)))


@check("composition_score")
def composition_score(fn: Callable) -> str:
    """``fn(W_A [..., n, m], W_B [..., m, k]) -> [...]``."""
    shapes = [((8, 8), (8, 8)), ((3, 6, 5), (3, 5, 7)), ((2, 1, 4, 4), (1, 3, 4, 4))]
    for trial, (shape_a, shape_b) in zip(trials(len(shapes)), shapes):
        W_A = torch.randn(*shape_a, generator=trial.generator)
        W_B = torch.randn(*shape_b, generator=trial.generator)
        context = f"(W_A {tuple(W_A.shape)}, W_B {tuple(W_B.shape)})"
        expected = reference.composition_score(W_A, W_B)
        plain, rescaled = call(fn, W_A.clone(), W_B.clone()), call(fn, 3.0 * W_A, 0.5 * W_B)
        # The property first: the score measures directions, not sizes; a missing norm shows as a changed score.
        first, second = _as_float(plain, expected.shape), _as_float(rescaled, expected.shape)
        if first is not None and second is not None and not _matches(second, first):
            ratio = float((second / first).flatten()[0])
            which = {
                3.0: "W_A: divide by ||W_A||_F",
                0.5: "W_B: divide by ||W_B||_F",
                1.5: "both matrices: divide by ||W_A||_F ||W_B||_F",
            }
            hint = next(
                (text for factor, text in which.items() if math.isclose(ratio, factor, rel_tol=1e-3)),
                "the matrices' sizes: divide by both Frobenius norms",
            )
            fail(
                f"rescaling a matrix must not change the score, but with W_A times 3 and W_B times 0.5 yours is "
                f"multiplied by {ratio:.4g} {context}: it grows with {hint}."
            )
        _explain(
            plain,
            expected,
            [
                (
                    functools.partial(_elementwise_score, W_A, W_B),
                    f"you multiplied the matrices element by element {context}; the score composes them: "
                    f"W_A @ W_B, the matrix product.",
                ),
                (
                    torch.linalg.matrix_norm(W_A @ W_B, ord=2)
                    / (torch.linalg.matrix_norm(W_A, ord=2) * torch.linalg.matrix_norm(W_B, ord=2)),
                    f"you used the spectral norm {context}; the score uses Frobenius norms (the default of "
                    f"tensor.norm over the last two dimensions).",
                ),
            ],
        )
        compare(plain, expected, "the scores", context=context, index=["pair "])
    return "invariant to rescaling; 3 shapes, batched"


def _identity_ov(n: int, factors: Sequence[float]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """W_E, W_V, W_O, W_U with d_vocab = d_model = d_head = n: W_E, W_U and every W_V the identity, W_O[h] =
    factors[h] times the identity."""
    eye = torch.eye(n)
    W_V = eye.expand(len(factors), n, n).clone()
    W_O = torch.stack([factor * eye for factor in factors])
    return eye.clone(), W_V, W_O, eye.clone()


@check("full_ov_circuit")
def full_ov_circuit(fn: Callable) -> str:
    """``fn(W_E [d_vocab, d_model], W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model], W_U [d_model,
    d_vocab]) -> [n_heads, d_vocab, d_vocab]``."""
    factors, n = (1.0, -1.0, 2.0), 6
    weights = _identity_ov(n, factors)
    actual = call(fn, *(w.clone() for w in weights))
    expected = reference.full_ov_circuit(*weights)
    if isinstance(actual, Tensor) and tuple(actual.shape) == (n, n):
        fail(
            f"your result has shape {tuple(actual.shape)}: one circuit per head, [n_heads, d_vocab, d_vocab] (did "
            f"you sum over the heads?)."
        )
    compare(
        actual,
        expected,
        "the circuits",
        index=["H", "token ", "logit of token "],
        context=f"(d_vocab = d_model = d_head = {n}; W_E, W_U and every W_V the identity, W_O[h] = c_h times "
        f"the identity with c = {list(factors)}: head h's circuit must be c_h times the identity)",
    )
    for trial in trials(3):
        n_heads, d_head = trial.randint(1, 4), trial.randint(2, 8)
        d_model, d_vocab = trial.randint(9, 16), trial.randint(17, 40)
        W_E = torch.randn(d_vocab, d_model, generator=trial.generator)
        W_V = torch.randn(n_heads, d_model, d_head, generator=trial.generator)
        W_O = torch.randn(n_heads, d_head, d_model, generator=trial.generator)
        W_U = torch.randn(d_model, d_vocab, generator=trial.generator)
        expected = reference.full_ov_circuit(W_E, W_V, W_O, W_U)
        actual = call(fn, W_E.clone(), W_V.clone(), W_O.clone(), W_U.clone())
        context = f"(d_vocab {d_vocab}, d_model {d_model}, {n_heads} heads of size {d_head})"
        _explain(
            actual,
            expected,
            [
                (
                    expected.transpose(-1, -2),
                    f"you returned the transpose {context}: row t must be the token the head reads (attends to), "
                    "through "
                    f"W_E; column s the logit it writes, through W_U.",
                ),
            ],
            atol=1e-3,
            rtol=1e-3,
        )
        compare(
            actual,
            expected,
            "the circuits",
            context=context,
            atol=1e-3,
            rtol=1e-3,
            index=["H", "token ", "logit of token "],
        )
    return "identity weights give the identity; 3 random shapes"


def _column_winner(n: int) -> Tensor:
    """``[n, n]``: the diagonal wins every column but only row 0 (column 0 holds large values)."""
    matrix = torch.eye(n)
    matrix[:, 0] = 2.0
    matrix[0, 0] = 3.0
    return matrix


@check("diagonal_win_rate")
def diagonal_win_rate(fn: Callable) -> str:
    """``fn(circuit [..., n, n]) -> [...]``: the fraction of rows whose diagonal entry is the largest of the row."""
    n = 8
    half_shifted = torch.eye(n)
    half_shifted[n // 2 :] = torch.eye(n).roll(1, dims=-1)[n // 2 :]
    anchors = {
        "the identity": (torch.eye(n), 1.0),
        "a shifted identity (row t's largest entry is in column t + 1)": (torch.eye(n).roll(1, dims=-1), 0.0),
        "the identity with its last half of rows shifted": (half_shifted, 0.5),
        "half the identity (diagonal 0.5, the rest 0)": (0.5 * torch.eye(n), 1.0),
        "a matrix whose column 0 is large (the diagonal wins every column, but only row 0)": (
            _column_winner(n),
            1.0 / n,
        ),
    }
    batch = torch.stack([matrix for matrix, _ in anchors.values()])  # [n_anchors, n, n]
    wanted = torch.tensor([score for _, score in anchors.values()])
    actual = call(fn, batch.clone())
    names = list(anchors)
    found = _as_float(actual, wanted.shape)
    if found is not None and not _matches(found, wanted):
        if math.isclose(float(found[-1]), 1.0, abs_tol=1e-6) and _matches(found[:-1], wanted[:-1]):
            fail(
                f"{names[-1]} scores 1 with your function; it must score 1/{n}: you compared each diagonal entry "
                f"with its column. Compare it with its row: for a source token, does its own entry beat every "
                f"other entry of its row?"
            )
        if math.isclose(float(found[3]), 0.5, abs_tol=1e-6):
            fail(
                f"{names[3]} scores 0.5 with your function; it must score 1: the score is the fraction of rows "
                f"whose diagonal entry is the row's largest (a count), not the size of the diagonal entries."
            )
    compare(actual, wanted, "the scores", context=f"of {n} x {n} anchor matrices", index=lambda i: names[i[0]])
    for trial in trials(3):
        lead = tuple(trial.randint(1, 3) for _ in range(trial.index))  # 0, 1 and 2 leading dimensions
        n = trial.randint(5, 40)
        circuit = torch.randn(*lead, n, n, generator=trial.generator) + 2.0 * torch.eye(n)  # about half the rows win
        before = circuit.clone()
        actual = call(fn, circuit)
        unchanged(before, circuit, "circuit")
        compare(
            actual,
            reference.diagonal_win_rate(circuit),
            "the scores",
            context=f"(circuits of shape {tuple(circuit.shape)})",
        )
    return "anchors (identity 1, shifted 0, half 0.5, column winner 1/n); random circuits, batched"


def _shift(n: int) -> Tensor:
    """``[n, n]`` permutation: row vector e_s maps to e_{s+1} (mod n)."""
    return torch.eye(n).roll(1, dims=-1)


@check("prefix_matching_circuit")
def prefix_matching_circuit(fn: Callable) -> str:
    """``fn(W_E [d_vocab, d_model], W_Q [n_heads, d_model, d_head], W_K [n_heads, d_model, d_head],
    W_OV_prev [d_model, d_model]) -> [n_heads, d_vocab, d_vocab]``: entry ``[h, t, s]`` is head h's attention score
    from a query on token t to a key whose previous token is s, as the previous-token head writes it."""
    n = 6
    eye = torch.eye(n)
    # Known answers first: identity weights match every query to the key after its own token...
    actual = call(fn, eye.clone(), eye[None].clone(), eye[None].clone(), eye.clone())
    _explain(
        actual,
        eye[None],
        [
            (
                eye[None] / math.sqrt(n),
                "you divided by sqrt(d_head): the exercise asks for the product without the "
                "scaling (it does not change which key wins).",
            )
        ],
    )
    compare(
        actual,
        eye[None],
        "the circuit",
        index=["H", "query token ", "previous token "],
        context=f"(d_vocab = d_model = d_head = {n}, every matrix the identity: the circuit must be the identity)",
    )
    # ... and a previous-token head that writes token s as token s + 1 moves every match by one.
    expected = reference.prefix_matching_circuit(eye, eye[None], eye[None], _shift(n))
    actual = call(fn, eye.clone(), eye[None].clone(), eye[None].clone(), _shift(n))
    context = (
        "(every matrix the identity, but W_OV_prev maps token s to token s + 1: the query on token s + 1 "
        "must match the key whose previous token is s)"
    )
    if _matches(actual, eye[None]):
        fail(
            f"your circuit does not change when W_OV_prev does {context}: the key side must read what the "
            f"previous-token head writes at the key's position: the previous token's embedding times W_OV_prev, "
            f"then W_K."
        )
    if _matches(actual, expected.transpose(-1, -2)):
        fail(
            f"you returned the transpose {context}: rows are the query's token, columns the key's previous "
            f"token; and W_OV_prev acts on row vectors (x @ W_OV_prev), as every weight in TransformerLens does."
        )
    compare(actual, expected, "the circuit", context=context, index=["H", "query token ", "previous token "])
    for trial in trials(3):
        n_heads, d_head = trial.randint(1, 4), trial.randint(2, 8)
        d_model, d_vocab = trial.randint(9, 16), trial.randint(17, 40)
        W_E = torch.randn(d_vocab, d_model, generator=trial.generator)
        W_Q = torch.randn(n_heads, d_model, d_head, generator=trial.generator)
        W_K = torch.randn(n_heads, d_model, d_head, generator=trial.generator)
        W_OV = torch.randn(d_model, d_model, generator=trial.generator)
        expected = reference.prefix_matching_circuit(W_E, W_Q, W_K, W_OV)
        actual = call(fn, W_E.clone(), W_Q.clone(), W_K.clone(), W_OV.clone())
        context = f"(d_vocab {d_vocab}, d_model {d_model}, {n_heads} heads of size {d_head})"
        _explain(
            actual,
            expected,
            [
                (
                    expected.transpose(-1, -2),
                    f"you returned the transpose {context}: rows are the query's token, columns the key's previous "
                    f"token.",
                ),
                (
                    reference.prefix_matching_circuit(W_E, W_Q, W_K, W_OV.T),
                    f"you applied W_OV_prev transposed {context}: the previous-token head writes x @ W_OV_prev for a "
                    "row "
                    f"vector x.",
                ),
                (
                    expected / math.sqrt(d_head),
                    f"you divided by sqrt(d_head) {context}: the exercise asks for the product without the scaling (it "
                    f"does not change which key wins).",
                ),
                (
                    reference.prefix_matching_circuit(W_E, W_K, W_Q, W_OV),
                    f"you swapped the query and key sides {context}: W_Q reads the query's own token, W_K the key's "
                    f"input.",
                ),
                (
                    (W_E @ W_Q) @ (W_E @ W_K).transpose(-1, -2),
                    f"your circuit leaves out W_OV_prev {context}: it matches a token to a key that holds the same "
                    "token "
                    f"(a duplicate-token circuit), not to a key whose previous token it is.",
                ),
            ],
            atol=1e-3,
            rtol=1e-3,
        )
        compare(
            actual,
            expected,
            "the circuit",
            context=context,
            atol=1e-3,
            rtol=1e-3,
            index=["H", "query token ", "previous token "],
        )
    return "identity and shifted anchors; 3 random shapes"


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
        fail(
            f"use exactly the {len(key)} scenario letters {', '.join(key)} as keys ({len(missing)} missing, "
            f"{len(extra)} unexpected: {extra})."
        )
    invalid = {
        letter: given
        for letter, given in answers.items()
        if not isinstance(given, str) or given.strip().casefold() not in options
    }
    if invalid:
        fail(f"{len(invalid)} answer(s) are not one of the study keys {options}: {invalid}.")
    wrong = wrong_answers("study_findings", answers, key)
    if wrong:
        fail(
            f"{len(wrong)} of {len(key)} scenarios are matched to the wrong study. Re-read section 8's table: "
            f"which finding does each observation show?"
        )
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
        context = f"(on a fresh batch of {batch} sequences with half_len {half_len})"
        missing = [key for key in expected if key not in measured or measured[key] is None]
        if missing:
            fail(f"missing the measurement{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}.")
        for key, value in expected.items():
            try:
                given = float(measured[key])
            except (TypeError, ValueError):
                fail(f"{key!r} should be a number, got {type(measured[key]).__name__}.")
            if key == "in_context_learning_score" and math.isclose(given, -value, rel_tol=1e-3) and abs(value) > 1e-3:
                fail(
                    f"your in-context learning score has the wrong sign {context}: it is the late loss minus the "
                    f"early one (negative when the model learns from its context)."
                )
            compare(torch.tensor(given), torch.tensor(float(value)), repr(key), atol=1e-3, context=context)
    return (
        f"all three numbers match on {len(MEASUREMENT_HALF_LENS)} fresh batches with half_len "
        f"{', '.join(map(str, MEASUREMENT_HALF_LENS))}"
    )


my_scores = research.scores_check("circuits")


# --------------------------------------------------------------------------------------------------------------
# Section 10: the counterexample hunt
# --------------------------------------------------------------------------------------------------------------


def measure_counterexample(
    make_batch: Callable, which_predictions: Callable, seed: int, batch: int = COUNTEREXAMPLE_BATCH
) -> dict[str, float]:
    """Draw ``make_batch(batch, seed)``, let ``which_predictions(tokens)`` say which predictions count (both see
    their arguments only), and measure the full model and the circuit there."""
    model = models.fresh(MODEL)
    make = tokens_only(make_batch, "make_batch")
    tokens = call(make, batch, seed)
    if isinstance(tokens, tuple):
        fail(
            "make_batch(batch, seed) returns the tokens alone; which predictions count is decided by "
            "which_predictions(tokens)."
        )
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
        fail(
            f"which_predictions must return a boolean tensor of shape [{batch}, {tokens.shape[1] - 1}] (one per "
            f"prediction), got a {got}."
        )
    n_counted = int(mask.sum())
    if n_counted < COUNTEREXAMPLE_MIN_PREDICTIONS:
        fail(
            f"the mask counts only {n_counted} predictions; count at least {COUNTEREXAMPLE_MIN_PREDICTIONS} so the "
            f"measurement is meaningful."
        )
    outcome = circuit_faithfulness(
        model,
        tokens,
        mask,
        induction_circuit(model),
        reference.ablate_head,
        induction_reference_tokens(model.cfg.d_vocab),
    )
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
        summary = (
            f"full-model accuracy {outcome['full_accuracy']:.2f}, circuit faithfulness "
            f"{outcome['faithfulness']:.2f}, all-heads-ablated loss {outcome['baseline_gap']:.2f} nats above "
            f"the full model's (seed {seed})"
        )
        if outcome["full_accuracy"] < COUNTEREXAMPLE_MIN_ACCURACY:
            fail(
                f"the full model does not do well here: {summary}; it must reach {COUNTEREXAMPLE_MIN_ACCURACY} "
                f"accuracy on the counted predictions."
            )
        if outcome["baseline_gap"] < COUNTEREXAMPLE_MIN_BASELINE_GAP:
            fail(
                f"the heads hardly matter for the counted predictions: {summary}. Faithfulness divides by that gap, "
                f"so it must be at least {COUNTEREXAMPLE_MIN_BASELINE_GAP} nats for the ratio to mean anything."
            )
        if outcome["faithfulness"] > COUNTEREXAMPLE_MAX_FAITHFULNESS:
            fail(
                f"the circuit still explains this distribution: {summary}; bring faithfulness to "
                f"{COUNTEREXAMPLE_MAX_FAITHFULNESS} or below."
            )
    hidden = " (hidden seeds)" if is_hidden() else ""
    return (
        "; ".join(f"accuracy {o['full_accuracy']:.2f}, faithfulness {o['faithfulness']:.2f}" for o in outcomes)
        + f" on 2 fresh samples{hidden}"
    )
