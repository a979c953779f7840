"""Chapter 03's checks: what the notebook's test cells call (``check.direct_effects(direct_effects)``).

Each check runs known answers and properties first (direct effects plus the embeddings and biases add up to the
logit difference; a last-layer head cannot be repaired; the whole model is a complete circuit), because those say
*what* is wrong; then it compares with the reference (:mod:`.reference`, generated from the solution notebook) on
fresh random models and prompts, naming heads ``L1H2``. Hidden tests (``hidden=``) draw other sizes and heads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .. import models, research, tasks
from ..checking import (
    Trial,
    as_tensor,
    call,
    check,
    compare,
    fail,
    is_hidden,
    layer_head_index,
    seed_for,
    trials,
    wrong_answers,
)
from . import (
    ABLATION_KINDS,
    CHANGE_KINDS,
    CLAIM_BASE,
    CLAIM_RUN_SECONDS,
    CLAIM_SEEDS,
    BackupConfig,
    describe,
    logit_diff,
    other_terms,
    reference,
    run_ablated,
    run_claim,
    validate_claim,
)
from .language import LogitParts, component_names

#: Tolerances for batch means of logit differences (float32 sums over heads).
ATOL_EFFECT, RTOL_EFFECT = 1e-4, 1e-4
EFFECT_NAMES = ("the direct effect of the ablation", "the total effect", "the self-repair")
PAPER_KEYS = ("ioi", "hydra", "self-repair", "copy-suppression")
FINDING_LETTERS = ("A", "B", "C", "D", "E", "F")
#: Random models' weights are scaled by this (a fresh model's effects are too small to tell ablations apart).
WEIGHT_SCALE = 3.0


def _setup(trial: Trial, n_layers: int = 2, n_heads: int = 3) -> BackupConfig:
    """A small random setup: the instant check's sizes, or random ones in a hidden test."""
    if is_hidden():
        n_layers, n_heads = trial.randint(1, 3), trial.randint(1, 4)
    return BackupConfig(
        n_names=trial.randint(4, 10),
        n_fillers=trial.randint(2, 6),
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=4 * n_heads * trial.randint(1, 2),
    )


def _random_model(config: BackupConfig, seed: int):
    """A freshly initialised model with its weights scaled up (so that heads' effects are of order 1, as in a trained
    model, and sharp attention makes later heads react to earlier ones) and random output biases (so that the
    bias terms are not all zero)."""
    model = models.make_model(config.model_config(), seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "b_O" in name or "b_U" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim > 1:
                parameter.mul_(WEIGHT_SCALE)
    return model


def _prompts(config: BackupConfig, trial: Trial, batch: int = 24) -> tasks.SymbolicIOI:
    return tasks.symbolic_ioi(batch, config.n_names, config.n_fillers, seed=trial.seed)


def _head(config: BackupConfig, trial: Trial) -> tuple[int, int]:
    return trial.randint(0, config.n_layers - 1), trial.randint(0, config.n_heads - 1)


# --------------------------------------------------------------------------------------------------------------
# Section 1: the quiz
# --------------------------------------------------------------------------------------------------------------


@check("backup_findings", functions=0)
def backup_findings(answers: Any) -> str:
    """``answers``: each letter of ``FINDINGS`` -> the key of the paper it comes from."""
    if not isinstance(answers, dict) or sorted(answers) != list(FINDING_LETTERS):
        fail(f"backup_findings should be a dict with the letters {', '.join(FINDING_LETTERS)}, each naming a paper.")
    chosen = {letter: str(value).strip().casefold() if value is not None else None for letter, value in answers.items()}
    unknown = [letter for letter, value in chosen.items() if value not in PAPER_KEYS]
    if unknown:
        fail(f"{', '.join(unknown)} should name one of the papers {PAPER_KEYS}.")
    wrong = len(wrong_answers("backup_findings", chosen, reference.ANSWER_KEYS["backup_findings"]))
    if wrong:
        fail(
            f"{wrong} of {len(FINDING_LETTERS)} findings {'is' if wrong == 1 else 'are'} given to the wrong paper. "
            "Ask of each: heads or whole layers? a circuit in GPT-2 small, or many models? one head explained?"
        )
    return f"all {len(FINDING_LETTERS)} findings matched to their papers"


# --------------------------------------------------------------------------------------------------------------
# Section 2: direct and total effects
# --------------------------------------------------------------------------------------------------------------


@check("direct_effects")
def direct_effects(fn) -> str:
    """``fn(model, z_end, io, s) -> [batch, n_layers, n_heads]``."""
    n_trials = 4 if is_hidden() else 3
    for trial in trials(n_trials):
        config = _setup(trial)
        model = _random_model(config, trial.seed % 2**31)
        batch = _prompts(config, trial)
        logits, z_end = run_ablated(model, batch.tokens)
        context = f"(random {config.n_layers}-layer model with {config.n_heads} heads per layer)"
        result = as_tensor(call(fn, model, z_end.clone(), batch.io, batch.s), "the direct effects")
        expected = reference.direct_effects(model, z_end, batch.io, batch.s)
        if tuple(result.shape) != tuple(expected.shape):
            fail(
                f"the direct effects {context} have shape {tuple(result.shape)}, expected "
                f"[batch, n_layers, n_heads] = {tuple(expected.shape)}."
            )
        total = result.double().sum((1, 2)) + other_terms(model, batch.io, batch.s, batch.tokens).double()
        target = logit_diff(logits, batch.io, batch.s).double()
        gap = (total - target).abs()
        if gap.max() > 1e-3:
            fail(
                f"{context}: your direct effects plus the embeddings' and biases' terms (backup.other_terms) "
                f"should add up to the logit difference of every prompt; prompt {int(gap.argmax())} is off by "
                f"{float(gap.max()):.3g}. Check the direction W_U[:, io] - W_U[:, s] (per prompt, IO minus S)."
            )
        compare(
            result,
            expected,
            "the direct effects",
            context=context,
            atol=1e-4,
            rtol=1e-4,
            index=lambda index: f"prompt {index[0]}, L{index[1]}H{index[2]}",
        )
    return f"{n_trials} random models: every prompt's logit difference is your heads' sum plus the rest"


def _effects(fn, model, batch, layer, head, kind, replacement, context) -> Tensor:
    result = as_tensor(call(fn, model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement), "the effects")
    if tuple(result.shape) != (3,):
        fail(f"return a tensor of 3 numbers (direct, total, self-repair), got shape {tuple(result.shape)} {context}.")
    return result


@check("ablation_effects", depends_on=("direct_effects",))
def ablation_effects(fn) -> str:
    """``fn(model, tokens, io, s, layer, head, kind, replacement=None) -> [3]``."""
    # Known answers: a 1-layer model and any last-layer head cannot be repaired.
    for trial in trials(2):
        config = _setup(trial, n_layers=1 + trial.index, n_heads=2)
        model = _random_model(config, trial.seed % 2**31)
        batch = _prompts(config, trial)
        replacement = _prompts(config, Trial(0, trial.seed + 1, torch.Generator())).tokens
        layer, head = config.n_layers - 1, trial.randint(0, config.n_heads - 1)
        for kind in ABLATION_KINDS:
            context = f"(L{layer}H{head} of a random {config.n_layers}-layer model, {kind} ablation)"
            result = _effects(fn, model, batch, layer, head, kind, replacement, context)
            if abs(float(result[2])) > 1e-3 or abs(float(result[0] - result[1])) > 1e-3:
                fail(
                    f"{context}: nothing comes after the last layer, so the total effect must equal the direct "
                    f"effect and the self-repair must be 0; you give direct {float(result[0]):.4g}, total "
                    f"{float(result[1]):.4g}, self-repair {float(result[2]):.4g}."
                )
    # Against the reference, every kind, random heads.
    for trial in trials(4 if is_hidden() else 3):
        config = _setup(trial, n_layers=3, n_heads=2)
        config = replace(config, n_layers=max(2, config.n_layers))
        model = _random_model(config, trial.seed % 2**31)
        batch = _prompts(config, trial)
        replacement = _prompts(config, Trial(0, trial.seed + 1, torch.Generator())).tokens
        # A head with layers after it: the only kind whose total effect can differ from its direct effect.
        layer, head = trial.randint(0, config.n_layers - 2), trial.randint(0, config.n_heads - 1)
        for kind in ABLATION_KINDS:
            context = f"for L{layer}H{head} of a random {config.n_layers}-layer model, {kind} ablation"
            result = _effects(fn, model, batch, layer, head, kind, replacement, context)
            expected = reference.ablation_effects(
                model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement
            )
            for i, name in enumerate(EFFECT_NAMES):
                compare(result[i], expected[i], name, context=context, atol=ATOL_EFFECT, rtol=RTOL_EFFECT)
    return "last-layer heads are never repaired, and three random models agree for all three ablations"


@check("direct_effect_shift", depends_on=("direct_effects", "ablation_effects"))
def direct_effect_shift(fn) -> str:
    """``fn(model, tokens, io, s, layer, head, kind, replacement=None) -> [n_layers, n_heads]``."""
    for trial in trials(4 if is_hidden() else 3):
        config = _setup(trial, n_layers=3, n_heads=3)
        model = _random_model(config, trial.seed % 2**31)
        batch = _prompts(config, trial)
        replacement = _prompts(config, Trial(0, trial.seed + 1, torch.Generator())).tokens
        layer, head = _head(config, trial)
        for kind in ABLATION_KINDS:
            context = f"with L{layer}H{head} {kind}-ablated (random {config.n_layers}-layer model)"
            result = as_tensor(
                call(fn, model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement), "the shift"
            )
            expected = reference.direct_effect_shift(
                model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement
            )
            if tuple(result.shape) != tuple(expected.shape):
                fail(
                    f"the shift {context} has shape {tuple(result.shape)}, expected [n_layers, n_heads] = "
                    f"{tuple(expected.shape)}."
                )
            if layer > 0 and result[:layer].abs().max() > 1e-5:
                fail(
                    f"{context}: heads before layer {layer} cannot change when a later head is ablated; your "
                    f"shift is not 0 there."
                )
            own = reference.ablation_effects(model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement)[0]
            if abs(float(result[layer, head] + own)) > 1e-3:
                fail(
                    f"{context}: the ablated head's own entry should be minus the direct effect of the ablation "
                    f"({float(-own):.4g}), got {float(result[layer, head]):.4g}."
                )
            compare(
                result,
                expected,
                "the shift",
                context=context,
                atol=ATOL_EFFECT,
                rtol=RTOL_EFFECT,
                index=layer_head_index,
            )
    return "earlier layers unchanged, the ablated head's own loss, and every later head's shift, all ablations"


# --------------------------------------------------------------------------------------------------------------
# Section 5: completeness
# --------------------------------------------------------------------------------------------------------------


def _random_heads(config: BackupConfig, trial: Trial, low: int, high: int) -> list[tuple[int, int]]:
    every = [(layer, head) for layer in range(config.n_layers) for head in range(config.n_heads)]
    order = torch.randperm(len(every), generator=trial.generator)
    count = trial.randint(min(low, len(every)), min(high, len(every)))
    return sorted(every[int(i)] for i in order[:count])


@check("incompleteness")
def incompleteness(fn) -> str:
    """``fn(model, tokens, io, s, circuit, removed, kind="mean") -> [2]``: (F(C \\ K), F(M \\ K))."""
    names = ("F(C \\ K), the circuit without K", "F(M \\ K), the model without K")
    for trial in trials(4 if is_hidden() else 3):
        config = _setup(trial, n_layers=3, n_heads=3)
        model = _random_model(config, trial.seed % 2**31)
        batch = _prompts(config, trial)
        every = [(layer, head) for layer in range(config.n_layers) for head in range(config.n_heads)]
        clean = float(logit_diff(model(batch.tokens), batch.io, batch.s).mean())
        # Known answers: the whole model as the circuit; K empty.
        removed = _random_heads(config, trial, 1, 3)
        result = as_tensor(call(fn, model, batch.tokens, batch.io, batch.s, every, removed), "the result")
        if tuple(result.shape) != (2,):
            fail(f"return a tensor of two numbers (F(C \\ K), F(M \\ K)), got shape {tuple(result.shape)}.")
        if abs(float(result[0] - result[1])) > 1e-4:
            fail(
                f"with every head in the circuit, C \\ K and M \\ K are the same heads, so the two numbers must be "
                f"equal; you give {float(result[0]):.4g} and {float(result[1]):.4g} (K = {removed})."
            )
        circuit = _random_heads(config, trial, 2, 5)
        result = as_tensor(call(fn, model, batch.tokens, batch.io, batch.s, circuit, []), "the result")
        if abs(float(result[1]) - clean) > 1e-3:
            fail(
                f"with K empty, F(M \\ K) is the clean model's mean logit difference ({clean:.4g}), got "
                f"{float(result[1]):.4g}."
            )
        # Against the reference.
        removed = [head for head in circuit if trial.randint(0, 1)] or circuit[:1]
        context = f"(circuit {circuit}, K = {removed}, random {config.n_layers}-layer model)"
        result = as_tensor(call(fn, model, batch.tokens, batch.io, batch.s, circuit, removed), "the result")
        expected = reference.incompleteness(model, batch.tokens, batch.io, batch.s, circuit, removed)
        for i, name in enumerate(names):
            compare(result[i], expected[i], name, context=context, atol=ATOL_EFFECT, rtol=RTOL_EFFECT)
    return "the whole model is complete, K = {} keeps the model, and random circuits agree"


my_scores = research.scores_check("backup")


# --------------------------------------------------------------------------------------------------------------
# Section 7: a claim, retrained on the grader's seeds
# --------------------------------------------------------------------------------------------------------------

#: Verdicts of claims already retrained in this process, by (config, seed, data seed).
_CLAIM_RUNS: dict[tuple, tuple[str, str]] = {}


def _claim_seeds() -> list[tuple[int, int]]:
    def pair(trial: Trial) -> tuple[int, int]:
        return trial.seed % 2**31, trial.randint(0, 2**31 - 1)

    visible = seed_for("my_claim", 0)
    seeds = [pair(Trial(0, visible, torch.Generator().manual_seed(visible)))]
    if is_hidden():
        seeds += [pair(trial) for trial in trials(CLAIM_SEEDS - 1)]
    return seeds


def _rerun(config: BackupConfig, seed: int, data_seed: int) -> tuple[str, str, float | None]:
    key = (tuple(sorted(vars(config).items())), seed, data_seed)
    if key in _CLAIM_RUNS:
        return (*_CLAIM_RUNS[key], None)
    started = time.perf_counter()
    verdict, details = run_claim(
        replace(config, seed=seed, data_seed=data_seed), reference.ablation_effects, progress=False
    )
    _CLAIM_RUNS[key] = verdict, describe(details)
    return (*_CLAIM_RUNS[key], time.perf_counter() - started)


def _describe_change(config: BackupConfig, change: str) -> str:
    return ", ".join(
        f"{name} {getattr(CLAIM_BASE, name)!r} -> {getattr(config, name)!r}" for name in CHANGE_KINDS[change]
    )


@check("my_claim", functions=0)
def my_claim(claim: Any) -> str:
    """``claim = {"config": BackupConfig (or its dict), "change": field, "prediction": "backup" | "no backup"}``:
    validated, then retrained from scratch on seeds the grader picks; the instant check runs the first, a hidden
    test all ``CLAIM_SEEDS`` (the first one's verdict remembered), and the majority verdict counts."""
    try:
        config, change, prediction = validate_claim(claim)
    except (ValueError, TypeError) as error:
        fail(str(error))
    seeds = _claim_seeds()
    needed = len(seeds) // 2 + 1
    print(
        f"Retraining your setup ({_describe_change(config, change)}) from scratch on "
        f"{'the first of the seeds' if len(seeds) == 1 else f'{len(seeds)} seeds'} the grader picks (about "
        f"{CLAIM_RUN_SECONDS} s each at most, on one core) ...",
        flush=True,
    )
    verdicts, outcomes = [], []
    for seed, data_seed in seeds:
        verdict, outcome, seconds = _rerun(config, seed, data_seed)
        timing = "already run by the check above" if seconds is None else f"{seconds:.0f} s"
        print(f"  seed {seed}, data seed {data_seed}: {outcome} -> '{verdict}' ({timing})", flush=True)
        verdicts.append(verdict)
        outcomes.append(f"seed {seed}: {outcome} ('{verdict}')")
        if verdicts.count(verdict) >= needed:
            break
    majority = max(set(verdicts), key=verdicts.count)
    if majority != prediction or verdicts.count(majority) < needed:
        fail(
            f"you predicted '{prediction}', but on the grader's seed{'s' if len(verdicts) > 1 else ''} the "
            f"retrained model gave {'; '.join(outcomes)}."
        )
    where = (
        "on the grader's first seed"
        if len(seeds) == 1
        else f"on {verdicts.count(majority)} of the grader's {len(seeds)} seeds, a majority"
    )
    return f"'{majority}' {where}, as you predicted (your change: {_describe_change(config, change)})"


# --------------------------------------------------------------------------------------------------------------
# Section 4: self-repair in a language model (Rushing & Nanda 2024)
# --------------------------------------------------------------------------------------------------------------

REPAIR_KEYS = ("direct", "total", "layernorm", "heads", "mlps")
SUMMARY_KEYS = (
    "direct",
    "total",
    "self_repair_fraction",
    "layernorm_fraction",
    "heads_fraction",
    "mlps_fraction",
    "overcorrected",
)


def synthetic_parts(n_layers: int, n_heads: int, shape: tuple[int, int], generator: torch.Generator) -> LogitParts:
    """A consistent random :class:`LogitParts`: every component random, the scale positive, and the logit equal to
    ``sum(components) / scale + constant`` as in a real run."""
    components = {
        name: torch.randn(shape, generator=generator, dtype=torch.float64) * 3
        for name in component_names(n_layers, n_heads)
    }
    scale = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.5
    constant = torch.randn(shape, generator=generator, dtype=torch.float64)
    return LogitParts(components, scale, constant, sum(components.values()) / scale + constant)


def perturbed_parts(clean: LogitParts, changed: dict[str, Tensor], scale: Tensor | None = None) -> LogitParts:
    """``clean`` with some components (and maybe the scale) changed, its logit recomputed."""
    components = dict(clean.components, **changed)
    scale = clean.scale if scale is None else scale
    return LogitParts(components, scale, clean.constant, sum(components.values()) / scale + clean.constant)


def _token_index(index: tuple[int, ...]) -> str:
    return f"text {index[0]}, position {index[1]}" if len(index) == 2 else str(index)


def _parts_result(result: Any) -> dict[str, Tensor]:
    if not isinstance(result, dict):
        fail(f"return a dict with the keys {list(REPAIR_KEYS)}, got {type(result).__name__}.")
    missing = [key for key in REPAIR_KEYS if key not in result]
    if missing:
        fail(f"your dict lacks {missing}; return all of {list(REPAIR_KEYS)}.")
    return {key: as_tensor(result[key], f"'{key}'") for key in REPAIR_KEYS}


@check("repair_parts")
def repair_parts(fn: Callable) -> str:
    """``fn(clean: LogitParts, ablated: LogitParts, head: str) -> {"direct", "total", "layernorm", "heads",
    "mlps"}``, each ``[batch, pos - 1]``."""
    trial_list = list(trials(3))
    anchor = trial_list[0]
    shape = (3, 5)
    clean = synthetic_parts(2, 3, shape, anchor.generator)
    zero = torch.zeros(shape, dtype=torch.float64)
    # Known answers first. Nothing changed: every part is zero.
    got = _parts_result(call(fn, clean, clean, "L1H2"))
    for key in REPAIR_KEYS:
        compare(got[key].double(), zero, f"'{key}'", atol=1e-6, context="when the ablated run equals the clean one")
    # Only the ablated head changed, the scale kept: its change is the whole effect, nothing repairs it.
    moved = torch.randn(shape, generator=anchor.generator, dtype=torch.float64)
    only_head = perturbed_parts(clean, {"L1H2": clean.components["L1H2"] - moved})
    got = _parts_result(call(fn, clean, only_head, "L1H2"))
    compare(
        got["direct"].double(),
        moved / clean.scale,
        "'direct'",
        atol=1e-6,
        context="(only L1H2 changed: its change divided by the clean scale)",
        index=_token_index,
    )
    compare(
        got["total"].double(),
        moved / clean.scale,
        "'total'",
        atol=1e-6,
        context="(only L1H2 changed, so the logit changed by exactly its direct effect)",
        index=_token_index,
    )
    for key in ("layernorm", "heads", "mlps"):
        compare(
            got[key].double(),
            zero,
            f"'{key}'",
            atol=1e-6,
            context="(only the ablated head changed and the scale did not: nothing repairs it)",
        )
    # Only the scale changed: everything is the LayerNorm's.
    new_scale = clean.scale * 1.25
    rescaled = perturbed_parts(clean, {}, scale=new_scale)
    got = _parts_result(call(fn, clean, rescaled, "L0H1"))
    expected_ln = sum(clean.components.values()) * (1 / new_scale - 1 / clean.scale)
    compare(
        got["layernorm"].double(),
        expected_ln,
        "'layernorm'",
        atol=1e-6,
        index=_token_index,
        context="(only the final LayerNorm's scale changed, by 1.25x: sum of the ablated run's components "
        "times (1/ablated scale - 1/clean scale))",
    )
    # Then random ablations of every kind; the identity direct - total = layernorm + heads + mlps first.
    for trial in trial_list:
        n_layers, n_heads = (trial.randint(1, 3), trial.randint(2, 5)) if is_hidden() else (2, 3 + trial.index)
        shape = (trial.randint(2, 6), trial.randint(3, 9))
        clean = synthetic_parts(n_layers, n_heads, shape, trial.generator)
        layer, head = trial.randint(0, n_layers - 1), trial.randint(0, n_heads - 1)
        name = f"L{layer}H{head}"
        later = [c for c in component_names(n_layers, n_heads) if c != name and c.startswith(("L", "mlp"))]
        later = [c for c in later if not c.endswith("bias")]
        changed = {
            c: clean.components[c] + torch.randn(shape, generator=trial.generator, dtype=torch.float64)
            for c in later[: trial.randint(1, len(later))]
        }
        changed[name] = clean.components[name] * 0.2
        jitter = 0.8 + 0.4 * torch.rand(shape, generator=trial.generator, dtype=torch.float64)
        ablated = perturbed_parts(clean, changed, scale=clean.scale * jitter)
        got = _parts_result(call(fn, clean, ablated, name))
        identity = got["direct"] - got["total"] - got["layernorm"] - got["heads"] - got["mlps"]
        if identity.abs().max() > 1e-4:
            fail(
                f"direct - total should equal layernorm + heads + mlps exactly (ablating {name}), but differs by up "
                f"to {float(identity.abs().max()):.3g}: the parts must account for all of the repair. Compute "
                f"every component's change at the clean scale and put the scale's change in 'layernorm'."
            )
        expected = reference.repair_parts(clean, ablated, name)
        for key in REPAIR_KEYS:
            compare(
                got[key].double(),
                expected[key].double(),
                f"'{key}'",
                atol=1e-5,
                index=_token_index,
                context=f"(ablating {name} in a random {n_layers}-layer, {n_heads}-head model)",
            )
    return "no change gives zeros; a lone head, a lone rescaling; 3 random ablations, parts summing to the repair"


def _summary_result(result: Any) -> dict[str, float]:
    if not isinstance(result, dict):
        fail(f"return a dict with the keys {list(SUMMARY_KEYS)}, got {type(result).__name__}.")
    missing = [key for key in SUMMARY_KEYS if key not in result]
    if missing:
        fail(f"your dict lacks {missing}; return all of {list(SUMMARY_KEYS)}.")
    out = {}
    for key in SUMMARY_KEYS:
        value = as_tensor(result[key], f"'{key}'")
        if value.numel() != 1:
            fail(f"'{key}' should be one number (a mean over the selected tokens), got shape {tuple(value.shape)}.")
        out[key] = float(value)
    return out


def _random_repair(shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
    """Per-token parts as a real table has them: a positive-skewed direct effect, repair noisy around a fraction."""
    direct = torch.randn(shape, generator=generator, dtype=torch.float64).exp()
    parts = {key: torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3 for key in ("heads", "mlps")}
    parts["layernorm"] = 0.2 * direct + 0.05 * torch.randn(shape, generator=generator, dtype=torch.float64)
    total = direct - parts["layernorm"] - parts["heads"] - parts["mlps"]
    return dict(parts, direct=direct, total=total)


@check("summarise_repair")
def summarise_repair(fn: Callable) -> str:
    """``fn(parts, fraction) -> {"direct", "total", "self_repair_fraction", "layernorm_fraction", "heads_fraction",
    "mlps_fraction", "overcorrected"}``: means over the tokens with the largest direct effect."""
    # Known answer: 10 tokens, the top 20% are the two with direct effect 10 and 8.
    direct = torch.tensor([[1.0, 10.0, 2.0, 0.5, 3.0], [8.0, 0.1, 0.2, 0.3, 1.5]], dtype=torch.float64)
    layernorm = torch.where(direct > 5, 3.0, 100.0).double()
    heads = torch.where(direct > 5, 1.0, -50.0).double()
    mlps = torch.zeros_like(direct)
    total = direct - layernorm - heads - mlps  # 6 and 4 at the top tokens
    hand = {"direct": direct, "total": total, "layernorm": layernorm, "heads": heads, "mlps": mlps}
    got = _summary_result(call(fn, {k: v.clone() for k, v in hand.items()}, 0.2))
    known = {
        "direct": 9.0,
        "total": 5.0,
        "self_repair_fraction": 4 / 9,
        "layernorm_fraction": 3 / 9,
        "heads_fraction": 1 / 9,
        "mlps_fraction": 0.0,
        "overcorrected": 0.0,
    }
    for key, value in known.items():
        if not math.isclose(got[key], value, abs_tol=1e-6):
            fail(
                f"'{key}' is {got[key]:.4g} on a hand-made table of 10 tokens where the top 20% by direct effect "
                f"are the 2 tokens with direct effects 10 and 8 (expected {value:.4g}). Select the "
                f"max(1, int(fraction x n_tokens)) tokens with the largest direct effect, then take means over "
                f"them; the fractions divide a mean by the mean direct effect."
            )
    # Over-correction: a selected token whose total effect is negative (the model gained from the ablation).
    over = dict(hand, total=torch.where(direct == 10.0, -1.0, total).double())
    got = _summary_result(call(fn, over, 0.2))
    if not math.isclose(got["overcorrected"], 0.5, abs_tol=1e-6):
        fail(
            f"'overcorrected' is {got['overcorrected']:.4g} where one of the 2 selected tokens has a negative "
            f"total effect (expected 0.5: the share of selected tokens where the repair exceeds the direct effect)."
        )
    # Random tables; the fractions must add up, then agree with the reference.
    for trial in trials(3):
        shape = (trial.randint(4, 40), trial.randint(10, 60)) if is_hidden() else (16, 25 + 10 * trial.index)
        fraction = (0.02, 0.1, 0.5)[trial.index]
        parts = _random_repair(shape, trial.generator)
        got = _summary_result(call(fn, {k: v.clone() for k, v in parts.items()}, fraction))
        split = got["layernorm_fraction"] + got["heads_fraction"] + got["mlps_fraction"]
        if not math.isclose(got["self_repair_fraction"], split, abs_tol=1e-5):
            fail(
                f"the three fractions add up to {split:.4g} but 'self_repair_fraction' is "
                f"{got['self_repair_fraction']:.4g}: they split the same repair, so they must add up to it."
            )
        expected = reference.summarise_repair(parts, fraction)
        for key in SUMMARY_KEYS:
            if not math.isclose(got[key], float(expected[key]), abs_tol=1e-5, rel_tol=1e-5):
                off = got[key] - float(expected[key])
                fail(
                    f"'{key}' is {got[key]:.5g} for a random table of {shape[0]} x {shape[1]} tokens with fraction "
                    f"{fraction}, off by {off:+.3g}."
                )
    return "a hand-made table, an over-correction; 3 random tables at 2%, 10% and 50%"
