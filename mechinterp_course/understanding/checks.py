"""Chapter 06's checks: what the notebook's test cells call (``check.induction_weights(induction_weights)``).

Each check runs known answers and properties first (a model that is always right fills every cell; a sharp,
noiseless max-of-K model is proven right everywhere; one frequency with amplitude 1 is a plain cosine), then measures
or compares with the reference (:mod:`.reference`, generated from the solution notebook) on inputs it draws: other
vocabularies and contexts, other primes and frequencies, other noisy models. Hidden tests (``hidden=``) draw others.

Three kinds of function are held to what they claim to be:

- **hand-written weights** (``induction_weights``, ``fourier_weights``) run with no optimiser and no autograd
  (:func:`~mechinterp_course.checking.no_training`), no model and no course library, within a time limit, and are
  judged by what the model built from their weights does on configurations they were not written for;
- **the program** (``run_program``, ``synthesis``) runs with no model and no course library
  (:func:`~mechinterp_course.checking.tokens_only`), on the pairs in an order the check shuffles, and holds at most
  ``MAX_PROGRAM_NUMBERS`` numbers;
- **proofs** (``certify``) are judged for soundness cell by cell against brute force, for tightness against the
  reference's proof, and for compactness on a model whose inputs cannot be enumerated (a time limit, and sampled
  inputs of every certified cell, the worst the check can build among them).

When a notebook is graded, the first two kinds run from the source of their cell in a process of their own
(``ISOLATED_CHECKS``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import einops
import torch
from torch import Tensor

from .. import models, research
from ..checking import (
    as_tensor,
    call,
    check,
    compare,
    fail,
    is_hidden,
    is_remote,
    no_training,
    tokens_only,
    trials,
    wrong_answers,
)
from ..history import LADDER, NORTH_STARS, ladder_label
from . import (
    CERTIFY_SECONDS,
    INDUCTION_LOSS_TARGET,
    INDUCTION_TASK,
    KEY_EMBEDDING_SHARE,
    KEY_LOGIT_SHARE,
    MAX_PROGRAM_NUMBERS,
    MODADD_ACCURACY_TARGET,
    PROGRAM_AGREEMENT_TARGET,
    PROGRAM_VARIANCE_TARGET,
    TIGHTNESS_TOLERANCE,
    WEIGHTS_SECONDS,
    InductionTask,
    agreement,
    bound_from_certificate,
    cell_sizes,
    induction_tokens,
    logit_grid,
    modadd_tokens,
    model_from_weights,
    pair_grids,
    reference,
    repeated_half_loss,
    variance_explained,
)

#: The grader starts the process for functions that may see their arguments only when these checks are in a notebook.
ISOLATED_CHECKS = ("induction_weights", "fourier_weights", "run_program", "synthesis")
#: The notebook runs with gradients off (``torch.set_grad_enabled(False)``); the grader calls checks the same way.
NOTEBOOK_GRAD_ENABLED = False
#: The zoo model whose program section 3 synthesises.
PROGRAM_MODEL = "modadd-113"
#: Odd primes the modular-addition checks draw from.
PRIMES = (11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


@contextlib.contextmanager
def time_limit(fn: Any, seconds: float, why: str) -> Iterator[None]:
    """Stop the student's function after ``seconds`` with a ``TimeoutError`` saying ``why`` (in a notebook's main
    thread; a graded notebook's functions run under the grader's own time limit)."""
    if is_remote(fn) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"it ran for more than {seconds:g} s and was stopped: {why}")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _weights_of(fn: Callable, what: str, *args: Any) -> tuple[dict, float]:
    """Call a hand-written-weights function with no optimiser, within ``WEIGHTS_SECONDS``; returns (weights, s)."""
    locked = no_training(fn, what)
    start = time.perf_counter()
    with time_limit(fn, WEIGHTS_SECONDS, "writing weights by hand takes milliseconds; training is not allowed"):
        weights = call(locked, *args)
    seconds = time.perf_counter() - start
    if seconds > WEIGHTS_SECONDS:
        fail(f"{what} took {seconds:.1f} s (at most {WEIGHTS_SECONDS:g} s): write the weights, do not search for them.")
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        fail(f"{what} should return a dict of tensors (name -> weight), got {type(weights).__name__}.")
    return weights, seconds


def _build(weights: dict, context: str):
    """The model of hand-written weights, or a failure that says what is wrong with them."""
    try:
        return model_from_weights(weights)
    except (ValueError, TypeError) as error:
        fail(f"the weights {context} cannot make a model: {error}")
    raise AssertionError  # unreachable


def _sizes_must_be(model, context: str, **expected: int) -> None:
    actual = {
        "d_vocab": model.cfg.d_vocab,
        "d_model": model.cfg.d_model,
        "n_ctx": model.cfg.n_ctx,
        "d_vocab_out": model.cfg.d_vocab_out,
        "n_layers": model.cfg.n_layers,
    }
    wrong = [
        f"{name} is {actual[name]} (expected {value})" for name, value in expected.items() if actual[name] != value
    ]
    if wrong:
        fail(f"the weights {context} have the wrong shapes: {'; '.join(wrong)}.")


# --------------------------------------------------------------------------------------------------------------
# Section 1: the ladder
# --------------------------------------------------------------------------------------------------------------

#: The letters of the ladder quiz (the notebook prints their measurements).
LADDER_LETTERS = ("A", "B", "C", "D", "E", "F")


def _normalised(text: Any) -> str:
    return " ".join(str(text).split()).casefold()


@check("ladder_rungs", functions=0)
def ladder_rungs(answers: Any) -> str:
    """``answers``: each letter of the notebook's ``LADDER_QUIZ`` -> the rung (``history.ladder_label``) it reaches."""
    rungs = [ladder_label(rung) for rung in LADDER]
    if not isinstance(answers, dict) or sorted(answers) != list(LADDER_LETTERS):
        fail(f"ladder_rungs should be a dict with the letters {', '.join(LADDER_LETTERS)}, each naming a rung.")
    allowed = {_normalised(rung): rung for rung in rungs}
    chosen = {}
    for letter, value in answers.items():
        if value is None or _normalised(value) not in allowed:
            fail(f"{letter}: {value!r} is not one of the rungs; copy one of: {', '.join(map(repr, rungs))}.")
        chosen[letter] = allowed[_normalised(value)]
    wrong = len(wrong_answers("ladder_rungs", chosen, reference.ANSWER_KEYS["ladder_rungs"]))
    if wrong:
        fail(
            f"{wrong} of {len(LADDER_LETTERS)} measurements {'is' if wrong == 1 else 'are'} on the wrong rung. Ask of "
            f"each what was done: observed without intervening (correlation), intervened on one component "
            f"(causation), intervened on one path between components (causal understanding), kept only a part and "
            f"removed the rest (sufficient), or changed how the model was trained to see what must stay "
            f"(necessary)."
        )
    return f"all {len(LADDER_LETTERS)} measurements on the rung they reach"


# --------------------------------------------------------------------------------------------------------------
# Section 2: weights by hand
# --------------------------------------------------------------------------------------------------------------

#: The instant check's configurations (the notebook's, and two more); hidden tests draw others.
INDUCTION_CASES = (INDUCTION_TASK, InductionTask(12, 60, 24, 11), InductionTask(25, 110, 35, 17))
#: Shorter repeats tried on every configuration (a head that copies from a fixed offset fails one of them).
SHORT_HALF_LEN = 5
INDUCTION_BATCH = 32
#: A head "does its job" when its score is at least this.
HEAD_SCORE_OK = 0.9


def _induction_case(trial) -> InductionTask:
    d_vocab = trial.randint(8, 50)
    n_ctx = trial.randint(16, 64)
    d_model = 3 * d_vocab + n_ctx + trial.randint(0, 16)
    return InductionTask(d_vocab, d_model, n_ctx, min((n_ctx - 1) // 2, d_vocab - 1))


def _head_scores(model, tokens: Tensor) -> tuple[float, float]:
    """(best previous-token score in layer 0, best induction score in layer 1) on ``tokens``."""
    half_len = (tokens.shape[1] - 1) // 2
    _, cache = model.run_with_cache(tokens)
    first = cache["blocks.0.attn.hook_pattern"]  # [batch, head, q, k]
    second = cache["blocks.1.attn.hook_pattern"]
    previous = first.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    induction = second.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)[..., half_len + 1 :]
    return float(previous.max()), float(induction.mean(dim=(0, -1)).max())


@check("induction_weights")
def induction_weights(fn: Callable) -> str:
    """``fn(d_vocab, d_model, n_ctx) -> weights``: a 2-layer attention-only model that does induction."""
    cases = [_induction_case(trial) if is_hidden() else case for trial, case in zip(trials(3), INDUCTION_CASES)]
    worst = 0.0
    for index, task in enumerate(cases):
        context = f"for d_vocab = {task.d_vocab}, d_model = {task.d_model}, n_ctx = {task.n_ctx}"
        weights, _ = _weights_of(fn, "induction_weights", task.d_vocab, task.d_model, task.n_ctx)
        model = _build(weights, context)
        _sizes_must_be(
            model,
            context,
            d_vocab=task.d_vocab,
            d_model=task.d_model,
            n_ctx=task.n_ctx,
            d_vocab_out=task.d_vocab,
            n_layers=2,
        )
        if not model.cfg.attn_only:
            fail(f"the weights {context} include an MLP (W_in, W_out); the model is attention-only.")
        for half_len in sorted({task.half_len, min(SHORT_HALF_LEN, task.half_len)}):
            sized = InductionTask(task.d_vocab, task.d_model, task.n_ctx, half_len)
            tokens = induction_tokens(sized, INDUCTION_BATCH, seed=1000 * index + half_len)
            loss = repeated_half_loss(model, tokens)
            worst = max(worst, loss)
            if loss <= INDUCTION_LOSS_TARGET:
                continue
            previous, induction = _head_scores(model, tokens)
            if previous < HEAD_SCORE_OK:
                hint = (
                    "layer 0 has no previous-token head: no head puts its attention on position i - 1 (the query "
                    "should read the position block, the key the position block shifted by one, at a large scale)"
                )
            elif induction < HEAD_SCORE_OK:
                hint = (
                    "layer 0's previous-token head works, but no layer-1 head attends to the token after the earlier "
                    "copy of the current token: its query should read the token block and its key the "
                    "previous-token block that layer 0 writes"
                )
            else:
                hint = (
                    "both heads attend where they should, so the attended token does not become the prediction: "
                    "layer 1's OV circuit should copy it into a block that the unembedding reads, token for token, "
                    "at a large scale (and nothing else should reach the logits)"
                )
            fail(
                f"{context}, with {half_len} repeated tokens, the loss on the repeated half is {loss:.3g} nats (at "
                f"most {INDUCTION_LOSS_TARGET} needed). Best previous-token score in layer 0: {previous:.2f}; best "
                f"induction score in layer 1: {induction:.2f}. {hint}."
            )
    shown = "; ".join(f"({t.d_vocab}, {t.d_model}, {t.n_ctx})" for t in cases)
    return f"induction on {len(cases)} configurations {shown}, two lengths each, worst loss {worst:.2g} nats"


#: The instant check's primes and frequencies (the first: modadd-113's); hidden tests draw others.
FOURIER_CASES = ((113, [23, 34, 36, 53]), (59, [3, 17, 25]), (31, [2, 9]))


def _fourier_case(trial) -> tuple[int, list[int]]:
    p = PRIMES[trial.randint(0, len(PRIMES) - 1)]
    n_keys = trial.randint(2, 4)
    keys = torch.randperm((p - 1) // 2, generator=trial.generator)[:n_keys] + 1
    return p, sorted(keys.tolist())


def key_share(W_E: Tensor, p: int, keys: list[int]) -> float:
    """Share of the numbers' embedding variance (``W_E [p, d_model]``, centred over the numbers) on the cos/sin waves
    of ``keys``."""
    centred = W_E.double() - W_E.double().mean(0, keepdim=True)
    x = torch.arange(p, dtype=torch.float64)
    waves = []
    for k in keys:
        waves += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(waves)
    basis = basis / basis.norm(dim=1, keepdim=True)  # orthonormal for distinct keys in 1 .. (p - 1) / 2
    return float((basis @ centred).pow(2).sum() / centred.pow(2).sum().clamp_min(1e-30))


def logit_key_share(grid: Tensor, keys: list[int]) -> float:
    """Share of the variance of ``grid [p, p, p]`` (logits over a, b, c; each pair centred over c) on the terms
    ``cos(w_k (a + b - c))`` and ``sin(w_k (a + b - c))`` of ``keys`` (orthogonal for distinct keys)."""
    p = grid.shape[0]
    centred = grid.double() - grid.double().mean(-1, keepdim=True)
    x = torch.arange(p, dtype=torch.float64)
    angle = 2 * math.pi * (x[:, None, None] + x[None, :, None] - x[None, None, :]) / p
    captured = 0.0
    for k in keys:
        for wave in (torch.cos(k * angle), torch.sin(k * angle)):
            captured += float((centred * wave).sum() ** 2 / wave.pow(2).sum())
    return captured / float(centred.pow(2).sum().clamp_min(1e-30))


@check("fourier_weights")
def fourier_weights(fn: Callable) -> str:
    """``fn(p, key_freqs) -> weights``: a 1-layer model with an MLP computing (a + b) mod p at ``key_freqs``."""
    cases = [_fourier_case(trial) if is_hidden() else case for trial, case in zip(trials(3), FOURIER_CASES)]
    for p, keys in cases:
        context = f"for p = {p}, key frequencies {keys}"
        weights, _ = _weights_of(fn, "fourier_weights", p, list(keys))
        model = _build(weights, context)
        _sizes_must_be(model, context, d_vocab=p + 1, n_ctx=3, d_vocab_out=p, n_layers=1)
        if model.cfg.attn_only:
            fail(f"the weights {context} have no MLP (W_in, W_out): the algorithm multiplies waves in the MLP.")
        share = key_share(model.W_E[:p], p, keys)
        if share < KEY_EMBEDDING_SHARE:
            fail(
                f"the embedding {context} has only {share:.1%} of its variance on those frequencies (at least "
                f"{KEY_EMBEDDING_SHARE:.0%} needed): embed each number x as cos(w_k x), sin(w_k x) for the key "
                f"frequencies you are given, not others."
            )
        tokens, answers = modadd_tokens(p)
        predictions = model(tokens)[:, -1].argmax(-1)
        right = predictions == answers
        accuracy = float(right.double().mean())
        if accuracy < MODADD_ACCURACY_TARGET:
            row = int((~right).nonzero()[0])
            a, b = int(tokens[row, 0]), int(tokens[row, 1])
            fail(
                f"{context} the model is right on {accuracy:.2%} of the {p * p} pairs (needed: "
                f"{MODADD_ACCURACY_TARGET:.0%}); for example it answers {a} + {b} = {int(predictions[row])} "
                f"(mod {p}) instead of {int(answers[row])}. Check each step on that pair: the attention output at "
                f"'=' (cos w a + cos w b, ...), the neurons' pre-activations, and the logits."
            )
        logit_share = logit_key_share(logit_grid(model, p), keys)
        if logit_share < KEY_LOGIT_SHARE:
            fail(
                f"{context} the model is right, but only {logit_share:.0%} of its logits' variance lies on the terms "
                f"cos/sin(w_k (a + b - c)) of the key frequencies (at least {KEY_LOGIT_SHARE:.0%} needed): the "
                f"logits should be the algorithm's sum of cosines, not a table of answers."
            )
    shown = "; ".join(f"p = {p} at {keys}" for p, keys in cases)
    return f"right on every pair for {shown}; embedding and logits on the given frequencies"


# --------------------------------------------------------------------------------------------------------------
# Section 3: the program
# --------------------------------------------------------------------------------------------------------------

PROGRAM_KEYS = ("p", "freqs", "amplitudes", "phases")


def _program_form(program: Any, what: str) -> dict:
    """``program`` checked for form: the four keys, a prime-sized p, as many amplitudes and phases as frequencies,
    finite numbers, frequencies in 1 .. (p - 1) / 2."""
    if not isinstance(program, dict) or set(program) != set(PROGRAM_KEYS):
        got = sorted(program) if isinstance(program, dict) else type(program).__name__
        fail(f"{what} should be a dict with exactly the keys {list(PROGRAM_KEYS)}; got {got}.")
    p = program["p"]
    if isinstance(p, bool) or not isinstance(p, int) or p < 3:
        fail(f"{what}['p'] should be an integer (the modulus), got {p!r}.")
    lists = {key: program[key] for key in ("freqs", "amplitudes", "phases")}
    for key, values in lists.items():
        if not isinstance(values, (list, tuple)):
            fail(f"{what}[{key!r}] should be a list, got {type(values).__name__}.")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(f"{what}[{key!r}] should hold plain finite numbers, found {value!r}.")
    if not len(lists["freqs"]) == len(lists["amplitudes"]) == len(lists["phases"]):
        fail(
            f"{what} has {len(lists['freqs'])} frequencies but {len(lists['amplitudes'])} amplitudes and "
            f"{len(lists['phases'])} phases: one of each per term."
        )
    bad = [k for k in lists["freqs"] if not float(k).is_integer() or not 1 <= k <= (p - 1) // 2]
    if bad:
        fail(f"{what}['freqs'] holds {bad}: frequencies are whole numbers from 1 to (p - 1) / 2 = {(p - 1) // 2}.")
    return program


def _phase_error(actual: list[float], expected: list[float]) -> Tensor:
    """Absolute differences of angles, wrapped into [0, pi]."""
    difference = torch.tensor(actual, dtype=torch.float64) - torch.tensor(expected, dtype=torch.float64)
    return torch.atan2(torch.sin(difference), torch.cos(difference)).abs()


def synthetic_program(p: int, generator: torch.Generator, d_model: int = 24, noise: float = 0.01):
    """``(W_E [p, d_model], logits [p, p, p], truth)``: an embedding on 2-4 random frequencies and logits that are
    their cosine sum with random amplitudes and phases, plus a random constant per pair and a little noise."""
    n_keys = int(torch.randint(2, 5, (1,), generator=generator))
    freqs = sorted((torch.randperm((p - 1) // 2, generator=generator)[:n_keys] + 1).tolist())
    amplitudes = (2 + 8 * torch.rand(n_keys, generator=generator, dtype=torch.float64)).tolist()
    phases = ((torch.rand(n_keys, generator=generator, dtype=torch.float64) - 0.5) * 2).tolist()
    x = torch.arange(p, dtype=torch.float64)
    W_E = noise * torch.randn(p, d_model, generator=generator, dtype=torch.float64)
    for k in freqs:
        directions = torch.randn(2, d_model, generator=generator, dtype=torch.float64)
        W_E += torch.cos(2 * math.pi * k * x / p)[:, None] * directions[0]
        W_E += torch.sin(2 * math.pi * k * x / p)[:, None] * directions[1]
    a, b, c = x[:, None, None], x[None, :, None], x[None, None, :]
    logits = sum(
        amplitude * torch.cos(2 * math.pi * k * (a + b - c) / p + phase)
        for k, amplitude, phase in zip(freqs, amplitudes, phases)
    )
    logits = logits + 3 * torch.randn(p, p, 1, generator=generator, dtype=torch.float64)
    logits = logits + noise * torch.randn(p, p, p, generator=generator, dtype=torch.float64)
    truth = {"p": p, "freqs": freqs, "amplitudes": amplitudes, "phases": phases}
    return W_E.float(), logits, truth


@functools.cache
def program_model_grid() -> tuple[Tensor, Tensor]:
    """``(W_E [p, d_model], logits [p, p, p])`` of ``PROGRAM_MODEL``, computed once per process."""
    model = models.fresh(PROGRAM_MODEL)
    p = model.cfg.d_vocab_out
    return model.W_E[:p].detach().clone(), logit_grid(model, p)


#: How close a read amplitude (relative) and phase (radians) must be to the truth on synthetic data.
AMPLITUDE_RTOL = 0.02
PHASE_ATOL = 0.02


def _read_checked(fn: Callable, W_E: Tensor, logits: Tensor, context: str) -> dict:
    program = _program_form(call(fn, W_E.clone(), logits.clone()), f"the result {context}")
    if program["p"] != logits.shape[0]:
        fail(f"the result {context} says p = {program['p']}; p is the size of the logits' axes, {logits.shape[0]}.")
    if list(program["freqs"]) != sorted(program["freqs"]):
        fail(f"the frequencies {context} should be increasing, got {program['freqs']}.")
    return program


@check("read_program")
def read_program(fn: Callable) -> str:
    """``fn(W_E [p, d_model], logits [p, p, p]) -> {"p", "freqs", "amplitudes", "phases"}``."""
    sizes = []
    for trial in trials(2):
        p = PRIMES[trial.randint(3, 12)] if is_hidden() else (31, 43)[trial.index]
        W_E, logits, truth = synthetic_program(p, trial.generator)
        context = f"on synthetic data (p = {p}, frequencies, amplitudes and phases the check chose)"
        program = _read_checked(fn, W_E, logits, context)
        if [int(k) for k in program["freqs"]] != truth["freqs"]:
            fail(
                f"the key frequencies {context} are {program['freqs']}, but the embedding is built on "
                f"{len(truth['freqs'])} frequencies only: keep those whose norm is above "
                f"KEY_FREQUENCY_SHARE times the largest."
            )
        amplitudes = torch.tensor(program["amplitudes"], dtype=torch.float64)
        expected = torch.tensor(truth["amplitudes"], dtype=torch.float64)
        worst = int(((amplitudes - expected).abs() / expected).argmax())
        if not torch.allclose(amplitudes, expected, rtol=AMPLITUDE_RTOL, atol=0):
            fail(
                f"the amplitude of k={truth['freqs'][worst]} {context} is {float(amplitudes[worst]):.4g}, off by "
                f"{float((amplitudes[worst] - expected[worst]).abs() / expected[worst]):.1%}: project the logits on "
                f"cos and on sin of w_k (a + b - c), each divided by its own squared norm, and combine the two (a "
                f"constant per pair, which these logits have, must not matter)."
            )
        errors = _phase_error(program["phases"], truth["phases"])
        if float(errors.max()) > PHASE_ATOL:
            worst = int(errors.argmax())
            fail(
                f"the phase of k={truth['freqs'][worst]} {context} is off by {float(errors[worst]):.3g} radians: "
                f"with alpha (cos) and beta (sin) projections, A cos(x + phi) = A cos(phi) cos(x) - A sin(phi) "
                f"sin(x) gives phi = atan2(-beta, alpha)."
            )
        sizes.append(p)
    W_E, logits = program_model_grid()
    context = f"on {PROGRAM_MODEL}"
    program = _read_checked(fn, W_E, logits, context)
    expected = reference.read_program(W_E, logits)
    if [int(k) for k in program["freqs"]] != expected["freqs"]:
        fail(f"the key frequencies {context} are {program['freqs']}, not the ones its embedding holds.")
    names = [f"k={k}" for k in expected["freqs"]]
    compare(
        torch.tensor(program["amplitudes"], dtype=torch.float64),
        torch.tensor(expected["amplitudes"], dtype=torch.float64),
        "the amplitudes",
        rtol=1e-4,
        atol=1e-6,
        context=context,
        index=[names],
    )
    compare(
        _phase_error(program["phases"], expected["phases"]),
        torch.zeros(len(names), dtype=torch.float64),
        "the phases' errors",
        atol=1e-4,
        context=context,
        index=[names],
    )
    return f"synthetic programs at p = {', '.join(map(str, sizes))} and {PROGRAM_MODEL} read right"


def _run_checked(fn: Callable, a: Tensor, b: Tensor, program: dict, context: str) -> Tensor:
    runner = tokens_only(fn, "run_program")
    logits = as_tensor(call(runner, a.clone(), b.clone(), dict(program)), f"the logits {context}")
    expected_shape = (len(a), program["p"])
    if tuple(logits.shape) != expected_shape:
        fail(f"the logits {context} have shape {tuple(logits.shape)}; expected [n, p] = {expected_shape}.")
    if logits.dtype != torch.float64:
        fail(f"the logits {context} have dtype {logits.dtype}; compute them in float64.")
    return logits


@check("run_program")
def run_program(fn: Callable) -> str:
    """``fn(a [n], b [n], program) -> logits [n, p]`` float64, with no model: the cosine sum."""
    # Known answers: one plain cosine, then the same with phase pi (its negative).
    p = 7
    a, b = torch.tensor([0, 1, 3, 6]), torch.tensor([0, 2, 5, 6])
    c = torch.arange(p, dtype=torch.float64)
    plain = torch.cos(2 * math.pi * ((a + b).double()[:, None] - c) / p)
    for phase, expected, name in ((0.0, plain, "cos(w(a + b - c))"), (math.pi, -plain, "its negative")):
        program = {"p": p, "freqs": [1], "amplitudes": [1.0], "phases": [phase]}
        context = f"for one frequency (k = 1, p = 7), amplitude 1 and phase {phase:.3g} (expected {name})"
        compare(_run_checked(fn, a, b, program, context), expected, "the logits", atol=1e-9, context=context)
    # Random programs on random pairs.
    for trial in trials(3):
        p = PRIMES[trial.randint(0, len(PRIMES) - 1)] if is_hidden() else (13, 59, 113)[trial.index]
        _, _, program = synthetic_program(p, trial.generator)
        n = trial.randint(5, 200)
        a = torch.randint(0, p, (n,), generator=trial.generator)
        b = torch.randint(0, p, (n,), generator=trial.generator)
        context = f"(p = {p}, {len(program['freqs'])} terms, {n} pairs)"
        compare(
            _run_checked(fn, a, b, program, context),
            reference.run_program(a, b, program),
            "the logits",
            atol=1e-9,
            rtol=1e-9,
            context=context,
            index=["pair ", "c="],
        )
    return "one cosine and its negative, 3 random programs on random pairs, with no model"


@check("synthesis", functions=1, depends_on=("read_program", "run_program"))
def synthesis(fn: Callable, program: Any) -> str:
    """``run_program`` with the student's ``my_program``, against ``PROGRAM_MODEL`` on every pair."""
    program = _program_form(program, "my_program")
    numbers = 1 + sum(len(program[key]) for key in ("freqs", "amplitudes", "phases"))
    if numbers > MAX_PROGRAM_NUMBERS:
        fail(f"my_program holds {numbers} numbers (at most {MAX_PROGRAM_NUMBERS}): a program, not a table.")
    _, grid = program_model_grid()
    p = grid.shape[0]
    if program["p"] != p:
        fail(f"my_program says p = {program['p']}; {PROGRAM_MODEL} computes modulo {p}.")
    model_logits = einops.rearrange(grid, "a b c -> (a b) c")
    a, b = pair_grids(p)
    trial = next(iter(trials(1)))
    order = torch.randperm(p * p, generator=trial.generator)  # in an order of the check's: no cached table fits
    logits = _run_checked(fn, a[order], b[order], program, "on every pair (in a shuffled order)")
    model_logits = model_logits[order]
    share = agreement(logits, model_logits)
    if share < PROGRAM_AGREEMENT_TARGET:
        row = int((logits.argmax(-1) != model_logits.argmax(-1)).nonzero()[0])
        fail(
            f"your program makes {PROGRAM_MODEL}'s prediction on {share:.2%} of the pairs (needed: "
            f"{PROGRAM_AGREEMENT_TARGET:.0%}); on a = {int(a[order][row])}, b = {int(b[order][row])} the model "
            f"answers {int(model_logits[row].argmax())} and your program {int(logits[row].argmax())}. Keep more "
            f"terms, or read them again."
        )
    explained = variance_explained(logits, model_logits)
    if explained < PROGRAM_VARIANCE_TARGET:
        fail(
            f"your program explains {explained:.1%} of the variance of {PROGRAM_MODEL}'s logits (needed: "
            f"{PROGRAM_VARIANCE_TARGET:.0%}): its terms' sizes or phases are not the model's (use the amplitudes "
            f"and phases read_program measured)."
        )
    return (
        f"{numbers} numbers, no model: the model's prediction on {share:.0%} of {p * p} pairs, {explained:.1%} of "
        f"its logits' variance"
    )


# --------------------------------------------------------------------------------------------------------------
# Section 4: proofs about max-of-K
# --------------------------------------------------------------------------------------------------------------


def max_of_k_test_model(d_vocab: int, k: int, generator: torch.Generator, noise: float, sharpness: float):
    """A hand-built max-of-K model (the chapter's architecture: one head, no MLP, positions and biases zero) with
    Gaussian ``noise`` on every weight: token one-hots, a constant query, keys that score token t as
    ``sharpness * t``, an OV circuit that copies, a small direct path. Without noise it is right on every input."""
    d_model, d_head = 2 * d_vocab + 1, d_vocab
    tokens = torch.arange(d_vocab)
    constant, output = d_vocab, d_vocab + 1
    weights = {
        "W_E": torch.zeros(d_vocab, d_model),
        "W_pos": torch.zeros(k, d_model),
        "W_Q": torch.zeros(1, 1, d_model, d_head),
        "W_K": torch.zeros(1, 1, d_model, d_head),
        "W_V": torch.zeros(1, 1, d_model, d_head),
        "W_O": torch.zeros(1, 1, d_head, d_model),
        "W_U": torch.zeros(d_model, d_vocab),
    }
    weights["W_E"][tokens, tokens] = 1.0
    weights["W_E"][:, constant] = 1.0
    weights["W_Q"][0, 0, constant, 0] = sharpness * math.sqrt(d_head)
    weights["W_K"][0, 0, tokens, 0] = tokens.float()
    weights["W_V"][0, 0, tokens, tokens] = 1.0
    weights["W_O"][0, 0, tokens, output + tokens] = 1.0
    weights["W_U"][output + tokens, tokens] = 10.0
    weights["W_U"][tokens, tokens] = 1.0  # the direct path: a pull towards the last token
    for name in ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_U"):
        weights[name] += noise * torch.randn(weights[name].shape, generator=generator)
    return model_from_weights(weights)


def _test_models(n: int) -> list[tuple[Any, str]]:
    """Small noisy max-of-K models (every input enumerable), with a description each."""
    made = []
    for trial in trials(n):
        d_vocab, k = trial.randint(5, 10), trial.randint(2, 4)
        noise = 0.05 + 0.1 * trial.index + (0.05 * trial.randint(0, 2) if is_hidden() else 0.0)
        sharpness = 1.0 + trial.randint(0, 3)
        model = max_of_k_test_model(d_vocab, k, trial.generator, noise, sharpness)
        made.append((model, f"(a max-of-{k} model over {d_vocab} tokens with noisy weights)"))
    return made


def _cell_name(index: tuple[int, ...]) -> str:
    m, q, s = index
    return f"cell m={m}, q={q}, s={s}"


def _counts(fn: Callable, model, context: str) -> Tensor:
    d_vocab = model.cfg.d_vocab
    counts = as_tensor(call(fn, model), f"the counts {context}")
    shape = (d_vocab, d_vocab, d_vocab)
    if tuple(counts.shape) != shape:
        fail(f"the counts {context} have shape {tuple(counts.shape)}; expected [d_vocab, d_vocab, d_vocab] = {shape}.")
    return counts.double()


@check("brute_force_correct")
def brute_force_correct(fn: Callable) -> str:
    """``fn(model) -> [d_vocab, d_vocab, d_vocab]``: correct inputs per cell (m, q, s), over every input."""
    # Known answer: a model that is always right fills every cell to its size.
    generator = torch.Generator().manual_seed(0)
    perfect = max_of_k_test_model(6, 3, generator, noise=0.0, sharpness=4.0)
    sizes = cell_sizes(6, 3)
    context = "(a max-of-3 model over 6 tokens that is right on every input, so each count is its cell's size)"
    counts = _counts(fn, perfect, context)
    compare(counts, sizes, "the counts", atol=0, rtol=0, context=context, index=_cell_name)
    for model, context in _test_models(3):
        counts = _counts(fn, model, context)
        sizes = cell_sizes(model.cfg.d_vocab, model.cfg.n_ctx)
        over = counts > sizes
        if over.any():
            cell = tuple(int(i) for i in over.nonzero()[0])
            fail(
                f"{_cell_name(cell)} {context} counts {int(counts[cell])} correct inputs, but it holds only "
                f"{int(sizes[cell])} (understanding.cell_sizes): each input belongs to exactly one cell."
            )
        compare(
            counts,
            reference.brute_force_correct(model),
            "the counts",
            atol=0,
            rtol=0,
            context=context,
            index=_cell_name,
        )
    return "an always-right model fills every cell; 3 noisy models counted cell by cell"


def _certificate(fn: Callable, model, context: str) -> Tensor:
    d_vocab = model.cfg.d_vocab
    certified = call(fn, model)
    if not isinstance(certified, Tensor) or certified.dtype != torch.bool:
        got = f"a {certified.dtype} tensor" if isinstance(certified, Tensor) else type(certified).__name__
        fail(f"the certificate {context} should be a boolean tensor, got {got}.")
    if tuple(certified.shape) != (d_vocab,) * 3:
        fail(f"the certificate {context} has shape {tuple(certified.shape)}; expected {(d_vocab,) * 3}.")
    return certified & (cell_sizes(d_vocab, model.cfg.n_ctx) > 0)


def _tight_enough(certified: Tensor, model, context: str) -> float:
    k = model.cfg.n_ctx
    ours = bound_from_certificate(certified, k)
    theirs = bound_from_certificate(reference.certify(model), k)
    if ours < theirs - TIGHTNESS_TOLERANCE:
        fail(
            f"your proof {context} proves accuracy {ours:.4f}; the chapter's proof reaches {theirs:.4f} (yours may "
            f"fall short by at most {TIGHTNESS_TOLERANCE}). Certify every cell whose bound is above CERTIFY_MARGIN "
            f"for every wrong answer c: use the least attention on m for that cell (alpha_min, by q = m or q < m) "
            f"and the worst other token t <= s only."
        )
    return ours


#: The compactness test: a model whose inputs no one can enumerate (d_vocab ** k of them).
COMPACT_VOCAB, COMPACT_K = 16, 8
#: Sampled inputs per certified cell in the compactness test (besides the worst one the check builds).
SAMPLES_PER_CELL = 4


def _cell_inputs(m: int, q: int, s: int, k: int, others: Tensor) -> Tensor:
    """Inputs of cell (m, q, s): ``others [n, k - 1]`` are tokens in {0 .. s, m}; the required m and s are set in
    the first two places (``q`` last)."""
    others = others.clone()
    if s == m:
        others[:] = m
    elif q == m:
        others[:, 0] = s
    else:
        others[:, 0] = m
        if k > 2 and s != q:
            others[:, 1] = s
    return torch.cat([others, torch.full((len(others), 1), q)], dim=1)


def sampled_soundness(model, certified: Tensor, generator: torch.Generator) -> tuple[tuple[int, ...], Tensor] | None:
    """A certified cell with a wrong input among the worst input the check can build for it (every free place at the
    token below s that the query attends to most) and ``SAMPLES_PER_CELL`` random ones; None if all are right."""
    k = model.cfg.n_ctx
    embed = model.W_E.double()
    scores = (embed @ model.W_Q[0, 0].double()) @ (embed @ model.W_K[0, 0].double()).T
    batches, cells = [], []
    for cell in certified.nonzero().tolist():
        m, q, s = cell
        if (q < m and (k < 3 and s != q)) or (q == m and s < m and k < 2):
            continue  # no input with these constraints in this few places (the cell is empty)
        pool = torch.tensor(list(range(s + 1)) + [m])
        worst = int(scores[q, : s + 1].argmax()) if s < m else m
        others = torch.cat(
            [
                torch.full((1, k - 1), worst),
                pool[torch.randint(0, len(pool), (SAMPLES_PER_CELL, k - 1), generator=generator)],
            ]
        )
        batches.append(_cell_inputs(m, q, s, k, others))
        cells += [tuple(cell)] * len(others)
    if not batches:
        return None
    inputs = torch.cat(batches)
    right = model(inputs)[:, -1].argmax(-1) == inputs.max(-1).values
    if right.all():
        return None
    row = int((~right).nonzero()[0])
    return cells[row], inputs[row]


@check("certify")
def certify(fn: Callable) -> str:
    """``fn(model) -> [d_vocab, d_vocab, d_vocab] bool``: cells proven right from the weights."""
    # Known answer: a sharp, noiseless model is right everywhere and the proof must say so.
    generator = torch.Generator().manual_seed(1)
    sharp = max_of_k_test_model(6, 3, generator, noise=0.0, sharpness=4.0)
    context = "(a sharp, noiseless max-of-3 model over 6 tokens, right on every input)"
    bound = bound_from_certificate(_certificate(fn, sharp, context), 3)
    if bound < 1.0 - 1e-12:
        fail(
            f"your proof {context} proves only {bound:.4f}; every cell of this model has a positive bound "
            f"(attention on the largest token is near 1, and it is copied with a large margin)."
        )
    bounds = []
    for model, context in _test_models(3):
        certified = _certificate(fn, model, context)
        sizes = cell_sizes(model.cfg.d_vocab, model.cfg.n_ctx)
        correct = reference.brute_force_correct(model)
        unsound = certified & (correct < sizes)
        if unsound.any():
            cell = tuple(int(i) for i in unsound.nonzero()[0])
            fail(
                f"your proof is unsound {context}: it certifies {_cell_name(cell)}, where the model is wrong on "
                f"{int(sizes[cell] - correct[cell])} of {int(sizes[cell])} inputs. A cell may be certified only when "
                f"the bound holds for the worst input in it: the least attention on m, and the worst other token."
            )
        bounds.append(_tight_enough(certified, model, context))
    # Compactness: brute force is impossible here.
    trial = next(iter(trials(1)))
    big = max_of_k_test_model(COMPACT_VOCAB, COMPACT_K, trial.generator, noise=0.1, sharpness=3.0)
    context = f"(a max-of-{COMPACT_K} model over {COMPACT_VOCAB} tokens: {COMPACT_VOCAB**COMPACT_K:,} inputs)"
    start = time.perf_counter()
    why = f"a compact proof must not enumerate the {COMPACT_VOCAB**COMPACT_K:,} inputs"
    with time_limit(fn, CERTIFY_SECONDS, why):
        certified = _certificate(fn, big, context)
    seconds = time.perf_counter() - start
    if seconds > CERTIFY_SECONDS:
        fail(f"your proof took {seconds:.1f} s {context} (at most {CERTIFY_SECONDS:g} s): {why}.")
    found = sampled_soundness(big, certified, trial.generator)
    if found is not None:
        cell, example = found
        fail(
            f"your proof is unsound {context}: it certifies {_cell_name(cell)}, but the model answers "
            f"{example.tolist()} wrongly."
        )
    bounds.append(_tight_enough(certified, big, context))
    return (
        f"sound on 3 noisy models (cell by cell), as tight as the chapter's ({', '.join(f'{b:.3f}' for b in bounds)}),"
        f" {seconds:.2f} s on {COMPACT_VOCAB}^{COMPACT_K} inputs"
    )


# --------------------------------------------------------------------------------------------------------------
# Sections 7 and 8: the north star and the scores
# --------------------------------------------------------------------------------------------------------------

#: Slide 83's five north stars.
STARS = tuple(star["star"] for star in NORTH_STARS if star["slide"] == 83)
#: A landing spot and a claim are sentences: at least this many words.
MIN_WORDS = 5


@check("north_star", functions=0)
def north_star(claim: Any) -> str:
    """``claim``: ``{"star": one of slide 83's, "landing": str, "claim": str, "measured": number}`` (the form only)."""
    keys = ("star", "landing", "claim", "measured")
    if not isinstance(claim, dict) or set(claim) != set(keys):
        fail(f"my_north_star should be a dict with exactly the keys {list(keys)}.")
    stars = {_normalised(star): star for star in STARS}
    if _normalised(claim["star"]) not in stars:
        fail(f"'star' should be one of slide 83's north stars, verbatim: {'; '.join(map(repr, STARS))}.")
    for key in ("landing", "claim"):
        text = claim[key]
        if not isinstance(text, str) or len(text.split()) < MIN_WORDS:
            fail(f"'{key}' should be a sentence (at least {MIN_WORDS} words), got {text!r}.")
    measured = claim["measured"]
    if isinstance(measured, Tensor) and measured.numel() == 1:
        measured = float(measured)
    if isinstance(measured, bool) or not isinstance(measured, (int, float)) or not math.isfinite(measured):
        fail(f"'measured' should be the number your cell measured, got {measured!r}.")
    return f"a north star, a landing spot, a claim and a measured number ({measured:.4g})"


my_scores = research.scores_check("understanding")
