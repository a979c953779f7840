"""Chapter 05's checks: what the notebook's test cells call (``check.head_contributions(head_contributions)``).

Each check runs known answers and properties first, because those say *what* is wrong (contributions that do not add
up to the logits; a hand-written model that answers C_B without an A; a source that never occurs given NaN), then
compares with the reference (:mod:`.reference`, generated from the solution notebook) on models it makes itself:
random weights, models it trains, and trained or hand-written models with their tokens renamed at random, whose true
features it therefore knows and no answer can have remembered. Hidden tests (``hidden=``) draw other models and
inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import models, research
from ..checking import (
    Trial,
    as_tensor,
    call,
    check,
    compare,
    fail,
    is_hidden,
    no_training,
    tokens_only,
    trials,
    unchanged,
    wrong_answers,
)
from ..understanding import model_from_weights
from ..understanding.checks import time_limit
from . import (
    HEAD_WEIGHTS,
    HeadsModel,
    SkipTrigrams,
    SourcePairs,
    complete_weights,
    read_off,
    reference,
    relabel,
    skip_trigrams,
    train_heads,
    zoo_task,
)

ATOL, RTOL = 1e-4, 1e-4


def _random_model(trial: Trial, coherent: bool = False):
    """A one-layer one-hot model with random weights (1-4 heads, d_head 1-3), as a course model, and its task."""
    task = SourcePairs() if coherent else skip_trigrams(trial.randint(2, 5))
    n_heads, d_head = trial.randint(1, 4), trial.randint(1, 3)
    batched = HeadsModel(
        1, n_heads, d_head, task.d_vocab, task.n_pos, task.d_vocab_out if coherent else None, seed=trial.seed
    )
    with torch.no_grad():  # sharper than at initialisation, so that attention patterns are far from uniform
        for name in HEAD_WEIGHTS:
            getattr(batched, name).mul_(4.0)
    return batched.bridge(0), task


def _inputs(task: SkipTrigrams | SourcePairs, batch: int, trial: Trial) -> Tensor:
    return task.batch(batch, trial.generator)[0]


# --------------------------------------------------------------------------------------------------------------
# Section 1: the vocabulary quiz
# --------------------------------------------------------------------------------------------------------------

KIND_OPTIONS = ("OV-coherent", "OV-incoherent")
KIND_STATEMENTS = ("A", "B", "C", "D", "E", "F")


def _kind_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    squeezed = "".join(value.replace("-", " ").split()).casefold()
    return {"ovcoherent": "OV-coherent", "ovincoherent": "OV-incoherent"}.get(squeezed)


@check("kinds", functions=0)
def kinds(answers: Any) -> str:
    """``answers``: statement letter -> "OV-coherent" or "OV-incoherent"."""
    if not isinstance(answers, dict):
        fail(f"`kinds` should be a dict (letter -> kind), got {type(answers).__name__}.")
    missing = [letter for letter in KIND_STATEMENTS if letter not in answers]
    if missing:
        fail(f"`kinds` has no answer for {', '.join(missing)}.")
    chosen = {}
    for letter in KIND_STATEMENTS:
        name = _kind_name(answers[letter])
        if name is None:
            fail(f"statement {letter}: {answers[letter]!r} is not one of {', '.join(map(repr, KIND_OPTIONS))}.")
        chosen[letter] = name
    wrong = len(wrong_answers("kinds", chosen, reference.ANSWER_KEYS["kinds"]))
    if wrong:
        fail(
            f"{wrong} of {len(KIND_STATEMENTS)} statements {'is' if wrong == 1 else 'are'} given the wrong kind. "
            f"Ask of each: is the source (key) fixed, or the destination (query)? And which bottleneck forces it: "
            f"too few heads, or too few dimensions per head?"
        )
    return f"all {len(KIND_STATEMENTS)} statements"


# --------------------------------------------------------------------------------------------------------------
# Section 2: each head's contribution
# --------------------------------------------------------------------------------------------------------------


def _head_contribution_names(index: tuple[int, ...]) -> str:
    return f"L0H{index[0]}, input {index[1]}, output token {index[2]}"


@check("head_contributions")
def head_contributions(fn: Callable) -> str:
    for trial in trials(4 if is_hidden() else 3):
        model, task = _random_model(trial, coherent=trial.index == 1)
        tokens = _inputs(task, trial.randint(5, 40), trial)
        before = tokens.clone()
        given = as_tensor(call(fn, model, tokens), "the contributions")
        unchanged(before, tokens, "tokens")
        n_heads, d_out = model.cfg.n_heads, model.cfg.d_vocab_out
        what = f"for a random model with {n_heads} head(s) of d_head {model.cfg.d_head}"
        if tuple(given.shape) != (n_heads, len(tokens), d_out):
            fail(
                f"the contributions {what} have shape {tuple(given.shape)}, expected [n_heads, batch, d_vocab_out] = "
                f"{(n_heads, len(tokens), d_out)}."
            )
        with torch.no_grad():
            logits = read_off(model, tokens)
            direct = model.W_E[tokens[:, -1]] @ model.W_U
        compare(
            given.sum(0) + direct,
            logits,
            "the heads' contributions plus the direct path",
            context=f"{what} (they should add up to the logits at the last position)",
            index=["input ", "output token "],
            atol=ATOL,
            rtol=RTOL,
        )
        compare(
            given,
            reference.head_contributions(model, tokens),
            "the contributions",
            context=what,
            index=_head_contribution_names,
            atol=ATOL,
            rtol=RTOL,
        )
    zoo_model = models.fresh("trigrams-3x2")
    tokens = zoo_task("trigrams-3x2").batch(64, torch.Generator().manual_seed(seed_of("contrib")))[0]
    compare(
        call(fn, zoo_model, tokens),
        reference.head_contributions(zoo_model, tokens),
        "the contributions",
        context="for the zoo's trigrams-3x2",
        index=_head_contribution_names,
        atol=ATOL,
        rtol=RTOL,
    )
    return "they add up to the logits; random models with 1-4 heads, a learned unembedding, a trained model"


def seed_of(name: str) -> int:
    """A seed for the running check's fixed inputs that changes under ``hidden=`` (not the notebook's seeds)."""
    return next(iter(trials(1))).seed + sum(map(ord, name))


# --------------------------------------------------------------------------------------------------------------
# Section 3: hand-written heads
# --------------------------------------------------------------------------------------------------------------

#: The task of exercise 3.1 and the shapes its heads must have.
HAND_TASK = skip_trigrams(3)
HAND_SHAPES = {"W_Q": (1, 2, 8, 1), "W_K": (1, 2, 8, 1), "W_V": (1, 2, 8, 1), "W_O": (1, 2, 1, 8)}
#: Writing weights takes milliseconds; this is generous.
HAND_SECONDS = 10.0
#: Random contexts per (source position, destination) pair, and inputs without a source.
HAND_CONTEXTS, HAND_WITHOUT = 48, 2048


def _hand_inputs(generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Every position of the source and every destination, ``HAND_CONTEXTS`` random contexts each:
    ``(tokens, source_position, destination)``."""
    task = HAND_TASK
    rows, positions, destinations = [], [], []
    fillers = task.fillers
    for position in range(1, task.n_pos - 1):
        for b in task.destinations:
            context = fillers[torch.randint(len(fillers), (HAND_CONTEXTS, task.n_pos), generator=generator)]
            context[:, 0], context[:, position], context[:, -1] = task.bos, task.source, b
            rows.append(context)
            positions += [position] * HAND_CONTEXTS
            destinations += [b] * HAND_CONTEXTS
    return torch.cat(rows), torch.tensor(positions), torch.tensor(destinations)


@check("handmade_heads")
def handmade_heads(fn: Callable) -> str:
    locked = no_training(fn, "handmade_heads")
    with time_limit(fn, HAND_SECONDS, "writing weights by hand takes milliseconds; training is not allowed"):
        heads = call(
            locked,
        )
    if not isinstance(heads, dict):
        fail(f"handmade_heads should return a dict (name -> tensor), got {type(heads).__name__}.")
    extra = sorted(set(heads) - set(HEAD_WEIGHTS))
    if extra:
        fail(
            f"return the heads only ({', '.join(HEAD_WEIGHTS)}); {', '.join(extra)} are fixed by the task "
            f"(one-hot embedding and unembedding, no positional embedding)."
        )
    for name, shape in HAND_SHAPES.items():
        if name not in heads:
            fail(f"the dict has no {name}.")
        value = as_tensor(heads[name], name)
        if tuple(value.shape) != shape:
            fail(f"{name} has shape {tuple(value.shape)}, expected {shape} ([n_layers, n_heads, ...]).")
        if not torch.isfinite(value).all():
            fail(f"{name} has a NaN or infinite value.")
    model = model_from_weights(complete_weights(heads, HAND_TASK))
    generator = next(iter(trials(1))).generator
    tokens, positions, destinations = _hand_inputs(generator)
    with torch.no_grad():
        predicted = read_off(model, tokens).argmax(-1)
    wrong = predicted != HAND_TASK.output_of(destinations)
    if wrong.any():
        first = int(wrong.nonzero()[0, 0])
        b = int(destinations[first])
        fail(
            f"with an A in the context, the model misses C_B on {int(wrong.sum())} of {len(tokens)} inputs; the "
            f"first is B = {b} with the A at position {int(positions[first])}, where it predicts "
            f"{int(predicted[first])} instead of C_B = {HAND_TASK.outputs[HAND_TASK.destinations.index(b)]}."
        )
    without, _, _ = HAND_TASK.batch(HAND_WITHOUT, generator, source_probability=0.0)
    with torch.no_grad():
        predicted = read_off(model, without).argmax(-1)
    bigram = predicted == HAND_TASK.output_of(without[:, -1])
    if bigram.any():
        first = int(bigram.nonzero()[0, 0])
        fail(
            f"without an A, the model still predicts C_B on {int(bigram.sum())} of {len(without)} inputs (the first: "
            f"B = {int(without[first, -1])}): it must read the A, not only the B. A head that is switched on should "
            f"attend to A alone and carry A's value, and nothing else."
        )
    return f"C_B on all {len(tokens)} inputs with an A (every position and every B), never C_B without one"


# --------------------------------------------------------------------------------------------------------------
# Section 4: superposition or decomposition
# --------------------------------------------------------------------------------------------------------------

#: The models the check trains: 2 heads on 2 trigrams, where training goes either way (measured: 3-5 of 8 seeds
#: keep a trigram in both heads).
CENSUS = dict(n_trigrams=2, n_heads=2, instances=8)


@functools.cache
def _census_models(seed: int) -> tuple[Any, ...]:
    batched, _ = train_heads(
        skip_trigrams(CENSUS["n_trigrams"]), CENSUS["n_heads"], instances=CENSUS["instances"], seed=seed, progress=False
    )
    return tuple(batched.bridge(i) for i in range(batched.n_instances))


def split_model():
    """Two heads, two trigrams, split by construction: head ``h`` attends to A from B = h + 1 only and writes
    C_{h+1}; each head alone solves its trigram."""
    task = skip_trigrams(2)
    heads = {name: torch.zeros(1, 2, task.d_vocab, 1) for name in ("W_Q", "W_K", "W_V")}
    heads["W_O"] = torch.zeros(1, 2, 1, task.d_vocab)
    for h, (b, c) in enumerate(zip(task.destinations, task.outputs)):
        heads["W_K"][0, h, task.source, 0] = heads["W_V"][0, h, task.source, 0] = 1.0
        heads["W_Q"][0, h, list(task.destinations), 0] = -10.0
        heads["W_Q"][0, h, b, 0] = 10.0
        heads["W_O"][0, h, 0, c] = 3.0
    return model_from_weights(complete_weights(heads, task)), task


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype == torch.bool:
        return bool(value)
    if type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    fail(f"uses_superposition should return True or False, got {type(value).__name__} {what}.")
    raise AssertionError  # unreachable


def superposition_cases(trial: Trial, hidden: bool):
    """The models the superposition check asks about, cheapest first: a split model and a superposed one by
    construction, then the models it trains (their tokens renamed when ``hidden``). A generator: nothing is trained
    for a function that already failed on the first two."""
    split, split_task = split_model()
    yield "a model that splits 2 trigrams between its 2 heads by construction", split, split_task
    hand = model_from_weights(complete_weights(reference.handmade_heads(), HAND_TASK))
    yield "the reference's hand-written heads (exercise 3.1)", hand, HAND_TASK
    for i, model in enumerate(_census_models(trial.seed % 1000)):
        task = skip_trigrams(CENSUS["n_trigrams"])
        if hidden:
            task, perm = task.permuted(trial.generator)
            model = relabel(model, perm)
        yield f"model {i} the check trained (2 heads, 2 trigrams)", model, task


@check("uses_superposition", depends_on=("head_contributions",))
def uses_superposition(fn: Callable) -> str:
    trial = next(iter(trials(1)))
    verdicts = []
    for what, model, task in superposition_cases(trial, is_hidden()):
        tokens, _, _ = task.batch(1024, trial.generator, source_probability=1.0)
        expected = reference.uses_superposition(model, task, tokens)
        given = _as_bool(call(fn, model, task, tokens), f"for {what}")
        if given != expected:
            if given:
                fail(
                    f"for {what} you answer True, but every trigram it solves is also solved by one of its heads "
                    f"alone (direct path + that head's contribution)."
                )
            fail(
                f"for {what} you answer False, but one trigram it solves is solved by none of its heads alone: "
                f"remove the other heads' contributions, keep the direct path, and compare with the model's own "
                f"predictions."
            )
        verdicts.append(expected)
    return (
        f"{len(verdicts)} models: {sum(verdicts)} in superposition, {len(verdicts) - sum(verdicts)} split, among them "
        f"{CENSUS['instances']} the check trained itself"
    )


# --------------------------------------------------------------------------------------------------------------
# Section 5: which heads read which source
# --------------------------------------------------------------------------------------------------------------


def _uniform_model(task: SourcePairs, n_heads: int):
    """Every query and key zero: every head attends uniformly over the positions."""
    batched = HeadsModel(1, n_heads, 1, task.d_vocab, task.n_pos, task.d_vocab_out)
    with torch.no_grad():
        batched.W_Q.zero_()
    return batched.bridge(0)


@check("source_attention")
def source_attention(fn: Callable) -> str:
    pairs = SourcePairs()
    trial = next(iter(trials(1)))
    uniform = _uniform_model(pairs, 2)
    tokens = torch.full((6, pairs.n_pos), pairs.n_signals + 1)  # noise everywhere
    tokens[:, -1] = pairs.readout
    tokens[:3, 2] = 1  # signal 1 once in three rows
    tokens[3:, 4] = tokens[3:, 7] = 2  # signal 2 twice in the other three
    given = as_tensor(call(fn, uniform, tokens, [1, 2, 3]), "the attention")
    expected = torch.tensor([[1.0, 2.0, 0.0]] * 2) / pairs.n_pos
    compare(
        given,
        expected,
        "the attention",
        context="for heads that attend uniformly (signal 1 once per row, "
        "signal 2 twice, signal 3 never: 1/11, 2/11 and 0)",
        index=["L0H", "source "],
    )
    for trial in trials(3):
        model, task = _random_model(trial, coherent=True)
        tokens = _inputs(task, trial.randint(20, 200), trial)
        sources = task.signals + [task.n_signals + 1 + trial.randint(0, task.n_noise - 1)]
        compare(
            call(fn, model, tokens, sources),
            reference.source_attention(model, tokens, sources),
            "the attention",
            context=f"for a random model with {model.cfg.n_heads} head(s)",
            index=["L0H", "source "],
            atol=ATOL,
            rtol=RTOL,
        )
    zoo_model = models.fresh("source-pairs-2x1")
    tokens = pairs.batch(512, torch.Generator().manual_seed(seed_of("source")))[0]
    compare(
        call(fn, zoo_model, tokens, pairs.signals),
        reference.source_attention(zoo_model, tokens, pairs.signals),
        "the attention",
        context="for the zoo's source-pairs-2x1",
        index=["L0H", "source "],
        atol=ATOL,
        rtol=RTOL,
    )
    return "uniform heads (1/11 per occurrence, 0 when absent), random models, the trained model"


# --------------------------------------------------------------------------------------------------------------
# Section 6: head shares of SAE latents
# --------------------------------------------------------------------------------------------------------------


@check("head_share")
def head_share(fn: Callable) -> str:
    fn = tokens_only(fn, "head_share")
    W_dec = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    given = as_tensor(call(fn, W_dec.clone(), 2), "the shares")
    if torch.isnan(given).any():
        fail("a zero decoder row gives NaN: its shares are 0 (guard the division by the row's squared norm).")
    compare(
        given,
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]]),
        "the shares",
        context="for latents inside head 0, inside head 1, split evenly, and zero (2 heads of d_head 2)",
        index=["latent ", "L0H"],
    )
    for trial in trials(3):
        n_heads, d_head = trial.randint(1, 6), trial.randint(1, 4)
        W_dec = torch.randn(trial.randint(3, 30), n_heads * d_head, generator=trial.generator)
        before = W_dec.clone()
        given = as_tensor(call(fn, W_dec, n_heads), "the shares")
        unchanged(before, W_dec, "W_dec")
        if tuple(given.shape) == (len(W_dec), n_heads) and not torch.allclose(
            given.sum(-1), torch.ones(len(W_dec)), atol=1e-4
        ):
            fail(f"the shares of a latent should sum to 1 over the heads ({n_heads} heads of d_head {d_head}).")
        compare(
            given,
            reference.head_share(W_dec, n_heads),
            "the shares",
            context=f"for {n_heads} heads of d_head {d_head}",
            index=["latent ", "L0H"],
        )
    return "known splits, a zero row, rows that sum to 1, random decoders"


# --------------------------------------------------------------------------------------------------------------
# Section 7: attention features, defined as code
# --------------------------------------------------------------------------------------------------------------


def _as_triples(value: Any, what: str) -> set[tuple[int, int, int]]:
    try:
        triples = {tuple(int(t) for t in item) for item in value}
    except (TypeError, ValueError):
        fail(f"attention_features should return a set of (source, destination, output) triples of ints {what}.")
    if any(len(t) != 3 for t in triples):
        fail(f"every feature should be a (source, destination, output) triple {what}.")
    return triples


def _silent_model(task: SkipTrigrams):
    """A model whose heads write nothing (W_O = 0): it implements no skip-trigram."""
    batched = HeadsModel(1, 2, 1, task.d_vocab, task.n_pos)
    with torch.no_grad():
        batched.W_O.zero_()
    return batched.bridge(0)


@check("attention_features")
def attention_features(fn: Callable) -> str:
    trial = next(iter(trials(1)))
    silent_task = skip_trigrams(3)
    contexts = silent_task.batch(512, trial.generator)[0]
    found = _as_triples(call(fn, _silent_model(silent_task), contexts), "for a model whose heads write nothing")
    if found:
        fail(f"a model whose heads write nothing (W_O = 0) implements no skip-trigram, but you find {len(found)}.")
    hand = model_from_weights(complete_weights(reference.handmade_heads(), HAND_TASK))
    cases = [
        ("the zoo's trigrams-3x2", models.fresh("trigrams-3x2"), zoo_task("trigrams-3x2")),
        ("the zoo's trigrams-5x2", models.fresh("trigrams-5x2"), zoo_task("trigrams-5x2")),
        ("the reference's hand-written heads (exercise 3.1)", hand, HAND_TASK),
    ]
    for what, model, task in cases:
        renamed, perm = task.permuted(trial.generator)
        contexts = renamed.batch(2048, trial.generator)[0]
        found = _as_triples(call(fn, relabel(model, perm), contexts), f"for {what}")
        truth = set(renamed.trigrams)
        missed, invented = len(truth - found), len(found - truth)
        if missed or invented:
            fail(
                f"for {what}, its tokens renamed at random, you miss {missed} of its {len(truth)} skip-trigrams and "
                f"find {invented} it does not implement."
            )
    return "no features in a silent model; every skip-trigram of 3 models with renamed tokens, and nothing else"


my_scores = research.scores_check("attention_superposition")
