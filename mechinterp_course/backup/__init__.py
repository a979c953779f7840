"""Chapter 03, "Backup behaviour": the tools the chapter's cells use around the student's exercises.

The room holds three things (every chapter's package has the same shape):

- this module: the chapter's tools that are *not* exercises: the symbolic IOI task and its metric
  (:func:`prompts`, :func:`logit_diff`, :func:`accuracy`), the toy setup and its training with head dropout
  (:class:`BackupConfig`, :func:`train_backup`), a run of the model that records every head's ``z`` at ``END``
  with a head ablated (:func:`run_ablated`), the summary of a model's backup (:func:`backup_score`, which takes
  the student's ``ablation_effects``) and the rules of the research claim (:func:`validate_claim`,
  :func:`run_claim`);
- :mod:`.reference`: the exercises' answers, generated from ``solutions/03_backup/03_backup.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

Conventions. A symbolic IOI prompt is ``BOS X Y f f S END`` (:mod:`mechinterp_course.tasks`); the metric is the
logit difference ``logit(IO) - logit(S)`` at ``END``. A head is named ``L1H2`` (layer 1, head 2). Ablations
replace a head's ``z`` (``blocks.{l}.attn.hook_z``, ``[batch, pos, n_heads, d_head]``) at every position: ``"zero"``
by zeros, ``"mean"`` by its mean over the batch at each position, ``"resample"`` by its value on other prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from .. import models, tasks
from ..training import TrainConfig, train

#: The three ways to ablate a head.
ABLATION_KINDS = ("zero", "mean", "resample")
#: Accuracy (IO preferred over S at END) that counts as "the task is solved".
SOLVED_ACCURACY = 0.95
#: A head counts as a "mover" of a model when its direct effect is at least this fraction of the logit difference.
MOVER_FRACTION = 0.1
#: Verdicts of the backup score (the DE-weighted self-repair fraction of the movers outside the last layer).
BACKUP_AT_LEAST = 0.2
NO_BACKUP_BELOW = 0.1
#: Prompts the chapter measures on (a batch drawn with a seed far from every training batch's).
EVAL_PROMPTS, EVAL_SEED, RESAMPLE_SEED = 512, 999_983, 999_979


@dataclass
class BackupConfig:
    """The toy setup: an attention-only transformer on symbolic IOI, trained with soft targets (the answer is IO
    with probability ``1 - label_noise``, otherwise a uniformly random name) and, optionally, head dropout: every
    head's output is dropped with probability ``head_dropout``, per example, at every training step."""

    n_names: int = 16
    n_fillers: int = 16
    n_layers: int = 3
    n_heads: int = 4
    d_model: int = 32
    head_dropout: float = 0.0
    label_noise: float = 0.2
    weight_decay: float = 0.01
    lr: float = 3e-3
    batch: int = 128
    steps: int = 1000
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 50

    @property
    def d_vocab(self) -> int:
        return tasks.ioi_vocab(self.n_names, self.n_fillers)

    def model_config(self) -> models.ModelConfig:
        return models.ModelConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_vocab=self.d_vocab,
            n_ctx=tasks.IOI_LENGTH,
            attn_only=True,
        )


#: The chapter's two setups: the same model and data, trained plainly and with head dropout.
PLAIN_CONFIG = BackupConfig()
DROPOUT_CONFIG = replace(PLAIN_CONFIG, head_dropout=0.3)


def as_config(value: Any) -> BackupConfig:
    """A :class:`BackupConfig` from itself or a dict of its fields (how a claim arrives when graded)."""
    if isinstance(value, BackupConfig):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(BackupConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; a BackupConfig has {sorted(known)}.")
        return BackupConfig(**value)
    raise TypeError(f"expected a backup.BackupConfig (or a dict of its fields), got {type(value).__name__}.")


def prompts(config: BackupConfig, batch: int = EVAL_PROMPTS, seed: int = EVAL_SEED) -> tasks.SymbolicIOI:
    """``batch`` symbolic IOI prompts for ``config``'s vocabulary."""
    return tasks.symbolic_ioi(batch, config.n_names, config.n_fillers, seed=seed)


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """``["L0H0", "L0H1", ...]`` in ``[layer, head]`` order (flattened)."""
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]


def logit_diff(logits: Tensor, io: Tensor, s: Tensor) -> Tensor:
    """``[batch]``: ``logit(IO) - logit(S)`` at the last position (``END``)."""
    last = logits[:, -1]
    return last.gather(-1, io[:, None])[:, 0] - last.gather(-1, s[:, None])[:, 0]


def accuracy(model, batch: tasks.SymbolicIOI) -> float:
    """Share of prompts where IO is the top logit at END."""
    with torch.no_grad():
        return float((model(batch.tokens)[:, -1].argmax(-1) == batch.io).float().mean())


def soft_target_loss(logits: Tensor, batch: tasks.SymbolicIOI, config: BackupConfig) -> Tensor:
    """Cross-entropy at END against the soft target: IO with ``1 - label_noise``, the rest spread over the names.
    Why noise: with it the best logit difference is finite (about ``ln((1 - q + q/n) / (q/n))``), so a model that
    loses a head has a reason to make it up, rather than merely to stay above zero."""
    log_probs = logits[:, -1].log_softmax(-1)
    target = torch.zeros_like(log_probs)
    target[:, 1 : 1 + config.n_names] = config.label_noise / config.n_names
    target[torch.arange(len(batch.io)), batch.io] += 1 - config.label_noise
    return -(target * log_probs).sum(-1).mean()


def best_logit_diff(config: BackupConfig) -> float:
    """The logit difference that minimises the soft-target loss (infinite without label noise)."""
    if config.label_noise == 0:
        return float("inf")
    other = config.label_noise / config.n_names
    return float(torch.log(torch.tensor((1 - config.label_noise + other) / other)))


def dropout_masks(config: BackupConfig, batch: int, step: int) -> Tensor:
    """``[n_layers, batch, n_heads]`` of 0/1: which heads each example keeps at ``step`` (seeded by the step and
    the data seed, so a run is repeatable). No rescaling by ``1 / (1 - p)``: a head's output is what it is."""
    generator = torch.Generator().manual_seed(7_919 * (config.data_seed + 1) + step)
    keep = torch.rand(config.n_layers, batch, config.n_heads, generator=generator) >= config.head_dropout
    return keep.float()


def _mask_hook(mask: Tensor) -> Callable:
    def hook(z: Tensor, hook=None) -> Tensor:  # z [batch, pos, n_heads, d_head]
        return z * mask[:, None, :, None]

    return hook


def train_batch(config: BackupConfig, step: int) -> tasks.SymbolicIOI:
    """The training batch of ``step`` (seeded by the step and the data seed)."""
    return prompts(config, config.batch, seed=1_000_003 * (config.data_seed + 1) + step)


@dataclass
class BackupRun:
    model: Any
    config: BackupConfig
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_backup(
    config: BackupConfig, progress: bool = True, callback: Callable | None = None, threads: int | None = 1
) -> BackupRun:
    """Train ``config`` with the course's training loop: the soft-target loss at END, and with
    ``head_dropout > 0`` every head's ``z`` multiplied by a per-example, per-head 0/1 mask
    (``model.run_with_hooks`` inside the loss), seeded per step. Logs accuracy and logit difference."""
    model = models.make_model(config.model_config(), seed=config.seed)
    evaluation = prompts(config, 256, seed=EVAL_SEED + 1)

    def loss_fn(model_, item) -> Tensor:
        step, batch = item
        if config.head_dropout > 0:
            masks = dropout_masks(config, len(batch.io), step)
            hooks = [(f"blocks.{layer}.attn.hook_z", _mask_hook(masks[layer])) for layer in range(config.n_layers)]
            logits = model_.run_with_hooks(batch.tokens, fwd_hooks=hooks)
        else:
            logits = model_(batch.tokens)
        return soft_target_loss(logits, batch, config)

    def evaluate(model_) -> dict[str, float]:
        logits = model_(evaluation.tokens)
        return {
            "accuracy": float((logits[:, -1].argmax(-1) == evaluation.io).float().mean()),
            "logit_diff": float(logit_diff(logits, evaluation.io, evaluation.s).mean()),
        }

    description = f"backup ({'head dropout ' + str(config.head_dropout) if config.head_dropout else 'plain'})"
    result = train(
        model,
        lambda step: (step, train_batch(config, step)),
        loss_fn,
        TrainConfig(
            steps=config.steps,
            lr=config.lr,
            weight_decay=config.weight_decay,
            eval_every=config.eval_every,
            progress=progress,
            description=description,
            threads=threads,
        ),
        eval_fn=evaluate,
        callback=callback,
    )
    return BackupRun(model, config, result.log, result.seconds)


def config_of(model) -> BackupConfig:
    """The :class:`BackupConfig` a zoo model was trained with (its card's ``training``)."""
    return as_config(model.backup_config) if hasattr(model, "backup_config") else PLAIN_CONFIG


# --------------------------------------------------------------------------------------------------------------
# Running the model with one head ablated
# --------------------------------------------------------------------------------------------------------------


def replacement_z(model, tokens: Tensor, layer: int, kind: str, replacement: Tensor | None = None) -> Tensor:
    """``[batch, pos, n_heads, d_head]``: what an ablation of kind ``kind`` writes into layer ``layer``'s ``z``:
    zeros, the batch mean at each position (broadcast), or ``z`` on the ``replacement`` prompts."""
    if kind not in ABLATION_KINDS:
        raise ValueError(f"kind must be one of {ABLATION_KINDS}, got {kind!r}.")
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        if kind == "resample":
            if replacement is None or replacement.shape != tokens.shape:
                raise ValueError("a resample ablation needs replacement prompts of the same shape as tokens.")
            return model.run_with_cache(replacement, names_filter=name)[1][name]
        z = model.run_with_cache(tokens, names_filter=name)[1][name]
    if kind == "zero":
        return torch.zeros_like(z)
    return z.mean(0, keepdim=True).expand_as(z).clone()


def run_ablated(
    model,
    tokens: Tensor,
    heads: Sequence[tuple[int, int]] = (),
    kind: str = "mean",
    replacement: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``tokens`` with every head in ``heads`` (``[(layer, head), ...]``; none: a clean run)
    ablated; returns ``(logits [batch, pos, d_vocab], z_end [batch, n_layers, n_heads, d_head])``, where ``z_end``
    is every head's ``z`` at END **as the run used it** (an ablated head's entry is its replacement)."""
    n_layers = model.cfg.n_layers
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    hooks = []
    for layer, ablated in by_layer.items():
        values = replacement_z(model, tokens, layer, kind, replacement)

        def hook(z: Tensor, hook=None, ablated=ablated, values=values) -> Tensor:
            z = z.clone()
            z[:, :, ablated] = values[:, :, ablated]
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    z_end = torch.stack([cache[name][:, -1] for name in names], dim=1)
    return logits, z_end


def other_terms(model, io: Tensor, s: Tensor, tokens: Tensor) -> Tensor:
    """``[batch]``: the part of the logit difference no head writes: the embeddings' direct path and the biases
    (``b_O`` of every layer, ``b_U``). Heads' direct effects plus this is the logit difference, exactly."""
    direction = (model.W_U[:, io] - model.W_U[:, s]).T  # [batch, d_model]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in ("hook_embed", "hook_pos_embed"))
    resid = cache["hook_embed"][:, -1] + cache["hook_pos_embed"][:, -1] + model.b_O.sum(0)
    return (resid * direction).sum(-1) + model.b_U[io] - model.b_U[s]


# --------------------------------------------------------------------------------------------------------------
# How much backup a model has (the claim's measure)
# --------------------------------------------------------------------------------------------------------------

#: ``ablation_effects(model, tokens, io, s, layer, head, kind, replacement) -> [3]`` (direct, total, self-repair).
EffectsFn = Callable[..., Tensor]


def effects_table(model, batch: tasks.SymbolicIOI, effects: EffectsFn, kind: str = "mean", replacement=None) -> Tensor:
    """``[n_layers, n_heads, 3]``: ``effects`` (the chapter's ``ablation_effects``) for every head."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        rows = [
            torch.as_tensor(effects(model, batch.tokens, batch.io, batch.s, layer, head, kind, replacement)).double()
            for layer in range(n_layers)
            for head in range(n_heads)
        ]
    return torch.stack(rows).reshape(n_layers, n_heads, 3)


def backup_score(model, batch: tasks.SymbolicIOI, effects: EffectsFn, kind: str = "mean") -> dict[str, Any]:
    """The share of the movers' direct effect that ablating them one at a time does not cost: the sum of their
    self-repair over the sum of their direct effects (the effects of the ablations), over the heads outside the
    last layer (a last-layer head has nothing downstream to repair it) whose direct effect is at least
    ``MOVER_FRACTION`` of the logit difference. 0 when there is no such head."""
    table = effects_table(model, batch, effects, kind)
    with torch.no_grad():
        total = float(logit_diff(model(batch.tokens), batch.io, batch.s).mean())
    movers = [
        (layer, head)
        for layer in range(model.cfg.n_layers - 1)
        for head in range(model.cfg.n_heads)
        if table[layer, head, 0] >= MOVER_FRACTION * total
    ]
    direct = sum(float(table[layer, head, 0]) for layer, head in movers)
    repaired = sum(float(table[layer, head, 2]) for layer, head in movers)
    return {
        "score": repaired / direct if movers else 0.0,
        "movers": [f"L{layer}H{head}" for layer, head in movers],
        "logit_diff": total,
    }


def verdict_of(score: float, solved: bool) -> str:
    if not solved:
        return "task not solved"
    if score >= BACKUP_AT_LEAST:
        return "backup"
    if score < NO_BACKUP_BELOW:
        return "no backup"
    return "unclear"


# --------------------------------------------------------------------------------------------------------------
# The research claim (section 7)
# --------------------------------------------------------------------------------------------------------------

PREDICTIONS = ("backup", "no backup")
#: Which fields belong to which kind of change (a claim changes exactly one field).
CHANGE_KINDS = {
    "head_dropout": ("head_dropout",),
    "label_noise": ("label_noise",),
    "weight_decay": ("weight_decay",),
    "n_layers": ("n_layers",),
    "n_heads": ("n_heads",),
    "d_model": ("d_model",),
}
#: Fields a claim may set freely: the grader replaces the seeds with its own.
FREE_FIELDS = ("seed", "data_seed")
CLAIM_LIMITS = {
    "head_dropout": (0.0, 0.6),
    "label_noise": (0.0, 0.5),
    "weight_decay": (0.0, 1.0),
    "n_layers": (2, 4),
    "n_heads": (1, 8),
    "d_model": (16, 64),
}
#: The claim's base setup (the chapter's dropout model) and the grader's seeds.
CLAIM_BASE = DROPOUT_CONFIG
CLAIM_SEEDS = 3
#: About how long one re-run takes on one core (the chapter's setup: ~15 s).
CLAIM_RUN_SECONDS = 40
#: The most compute a claim may cost, relative to the base (layers x d_model^2).
CLAIM_MAX_COST = 2.5


def _cost(config: BackupConfig) -> float:
    return config.n_layers * config.d_model**2 + config.d_model * config.d_vocab


def validate_claim(claim: Any) -> tuple[BackupConfig, str, str]:
    """Check a claim's form; raise ``ValueError`` saying what is wrong. Returns ``(config, change, prediction)``."""
    if not isinstance(claim, Mapping) or not {"config", "change", "prediction"} <= set(claim):
        raise ValueError('the claim should be a dict with keys "config", "change" and "prediction".')
    change, prediction = claim["change"], claim["prediction"]
    try:
        config = as_config(claim["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f'claim["config"]: {error}') from None
    if prediction not in PREDICTIONS:
        raise ValueError(f'claim["prediction"] should be one of {PREDICTIONS}, got {prediction!r}.')
    if change not in CHANGE_KINDS:
        raise ValueError(f'claim["change"] should be one of {tuple(CHANGE_KINDS)}, got {change!r}.')
    for name, (low, high) in CLAIM_LIMITS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r} is outside the range the grader runs, [{low}, {high}].")
    if config.d_model % config.n_heads:
        raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads ({config.n_heads}).")
    changed = [
        f.name
        for f in fields(BackupConfig)
        if f.name not in FREE_FIELDS and getattr(config, f.name) != getattr(CLAIM_BASE, f.name)
    ]
    if changed != list(CHANGE_KINDS[change]):
        found = ", ".join(changed) if changed else "nothing"
        raise ValueError(
            f"the config should differ from the chapter's dropout setup (backup.CLAIM_BASE) in exactly the field "
            f"you name ({change}); it differs in: {found}."
        )
    if _cost(config) > CLAIM_MAX_COST * _cost(CLAIM_BASE):
        raise ValueError(
            f"this setup costs {_cost(config) / _cost(CLAIM_BASE):.1f} times the chapter's per step; the grader "
            f"re-runs at most {CLAIM_MAX_COST} times: make it smaller."
        )
    return config, change, prediction


def run_claim(config: BackupConfig | dict, effects: EffectsFn, progress: bool = True) -> tuple[str, dict]:
    """Train ``config`` as the grader does (one thread, ``config``'s own seeds; the grader's check replaces them)
    and return ``(verdict, details)``: the verdict of :func:`backup_score` with ``effects`` (the chapter's
    ``ablation_effects``) on the evaluation prompts, "task not solved" below ``SOLVED_ACCURACY``."""
    config = as_config(config)
    started = time.perf_counter()
    run = train_backup(config, progress=progress)
    batch = prompts(config)
    solved = accuracy(run.model, batch)
    measured = backup_score(run.model, batch, effects)
    details = dict(measured, accuracy=solved, seconds=time.perf_counter() - started)
    return verdict_of(measured["score"], solved >= SOLVED_ACCURACY), details


def describe(details: Mapping[str, Any]) -> str:
    """One line: accuracy, logit difference, movers and the backup score."""
    movers = ", ".join(details["movers"]) or "none outside the last layer"
    return (
        f"accuracy {details['accuracy']:.3f}, logit difference {details['logit_diff']:.2f}, movers {movers}, "
        f"backup score {details['score']:.2f}"
    )


def config_dict(config: BackupConfig) -> dict:
    return asdict(config)
