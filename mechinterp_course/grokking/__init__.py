"""Chapter 02, "Grokking": the tools the chapter's cells use around the student's exercises.

The room holds three things (every chapter's package has the same shape):

- this module: the chapter's tools that are *not* exercises: the small training setup a notebook trains
  (:class:`GrokConfig`, :func:`make_data`, :func:`train_grokking`), Fourier helpers that no exercise asks for
  (:func:`key_frequencies`, :func:`sum_directions`, :func:`sum_fraction`, :func:`neuron_logit_map`,
  :func:`effective_rank`, :func:`grid_logits`, :func:`margins`), the progress-measure harness
  (:func:`progress_measures`, :func:`trajectory_measures`), the constants of the phase rules, and the rules of the
  research claim (:func:`validate_claim`, :func:`run_claim`). Where a tool needs an exercise's computation (the
  loss at ``=``, the split, the Fourier basis, the restricted loss, ...) it takes the function as an argument, so
  the notebook passes the student's own and trusted code (the zoo recipe, the checks) passes :mod:`.reference`'s;
- :mod:`.reference`: the exercises' answers, generated from ``solutions/02_grokking/02_grokking.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

Conventions. For a prime ``p`` the real Fourier basis has ``p`` rows: the constant, then ``cos(w_k x)`` and
``sin(w_k x)`` for ``k = 1 .. (p - 1) / 2`` with ``w_k = 2 pi k / p``, each row of unit length. Frequency ``k`` owns
rows ``2k - 1`` (cos) and ``2k`` (sin). A grid over the inputs is ``[p, p, ...]`` with axis 0 ``a`` and axis 1 ``b``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import einops
import torch
from torch import Tensor

from .. import models, tasks
from ..training import TrainConfig, train

#: Accuracy that counts as "solved" (train: memorised; test: generalised).
SOLVED_ACCURACY = 0.99
#: A frequency is a key frequency when its norm in the embedding is above this fraction of the largest one.
KEY_FREQUENCY_THRESHOLD = 0.5

#: ``loss(logits [batch, pos, n_out], labels [batch]) -> scalar``: the chapter's ``loss_at_equals``.
LossFn = Callable[[Tensor, Tensor], Tensor]
#: ``split(n, train_fraction, seed) -> (train indices, test indices)``: the chapter's ``split_indices``.
SplitFn = Callable[[int, float, int], tuple[Tensor, Tensor]]
#: ``grok_steps(history) -> (train_step, test_step)``: the chapter's ``grok_steps``.
GrokStepsFn = Callable[[list[dict]], tuple[Any, Any]]


# --------------------------------------------------------------------------------------------------------------
# The small setup trained in the notebook
# --------------------------------------------------------------------------------------------------------------


def _add(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a + b) % p


def _subtract(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a - b) % p


def _multiply(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a * b) % p


def _square_sum(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a * a + b * b) % p


#: The operations a training setup may use: ``(a, b, p) -> label``.
OPERATIONS = {"add": _add, "subtract": _subtract, "multiply": _multiply, "square_sum": _square_sum}
REGULARISERS = ("weight_decay", "l2", "l1", "none")
ACT_FNS = ("relu", "gelu")
#: Which fields of a :class:`GrokConfig` belong to which kind of change (the research exercise changes one kind).
CHANGE_KINDS = {
    "operation": ("operation",),
    "regulariser": ("regulariser", "strength"),
    "architecture": ("d_model", "n_heads", "d_mlp", "n_layers", "act_fn"),
    "train_fraction": ("train_fraction",),
}
#: Fields that may differ freely (they are not a different setup; the grader picks its own seeds anyway).
FREE_FIELDS = ("steps", "seed", "data_seed", "eval_every")
#: AdamW's betas in every grokking run (the paper's).
BETAS = (0.9, 0.98)


@dataclass
class GrokConfig:
    """A small modular-arithmetic training setup. Defaults: the smallest known CPU setup that groks (secondary
    source: p = 59, d_model 64, 4 heads, d_mlp 256, 50% of pairs for training), with weight decay 3 and lr 3e-3."""

    p: int = 59
    operation: str = "add"
    train_fraction: float = 0.5
    regulariser: str = "weight_decay"  # AdamW's decoupled weight decay; "l2" / "l1" add a penalty to the loss
    strength: float = 3.0
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    n_layers: int = 1
    act_fn: str = "relu"
    lr: float = 3e-3
    steps: int = 600
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 10

    def model_config(self) -> models.ModelConfig:
        return models.ModelConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_mlp=self.d_mlp,
            d_vocab=self.p + 1,
            d_vocab_out=self.p,
            n_ctx=3,
            attn_only=False,
            act_fn=self.act_fn,
            normalization_type=None,
        )


CHAPTER_CONFIG = GrokConfig()


def as_config(value: Any) -> GrokConfig:
    """``value`` as a :class:`GrokConfig`: a config, or a dict of its fields (a config arrives as a dict when a
    notebook is graded). Raises ``TypeError`` / ``ValueError`` saying what is wrong."""
    if isinstance(value, GrokConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a grokking.GrokConfig, got {type(value).__name__}.")
    known = {f.name for f in fields(GrokConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"a GrokConfig has no field(s) {', '.join(map(repr, unknown))}.")
    return GrokConfig(**dict(value))


def make_data(config: GrokConfig, split: SplitFn) -> tasks.ModularAddition:
    """The train/test split of all ``p * p`` pairs for ``config`` (``tasks.modular_addition`` with ``split``, the
    chapter's ``split_indices``), labelled by ``config.operation``."""
    data = tasks.modular_addition(config.p, config.train_fraction, config.data_seed, split=split)
    op = OPERATIONS[config.operation]
    return replace(
        data,
        train_labels=op(data.train_tokens[:, 0], data.train_tokens[:, 1], config.p),
        test_labels=op(data.test_tokens[:, 0], data.test_tokens[:, 1], config.p),
    )


def train_mask(data: tasks.ModularAddition) -> Tensor:
    """``[p, p]`` booleans over ``(a, b)``: which pairs are training pairs."""
    mask = torch.zeros(data.p, data.p, dtype=torch.bool)
    mask[data.train_tokens[:, 0], data.train_tokens[:, 1]] = True
    return mask


def accuracy_at_equals(logits: Tensor, labels: Tensor) -> Tensor:
    """Share of ``labels [batch]`` that are the argmax of the logits at the last (``=``) position."""
    return (logits[:, -1].argmax(-1) == labels).double().mean()


def penalty(model: torch.nn.Module, config: GrokConfig) -> Tensor | float:
    """The regulariser added to the loss (``"l2"``, ``"l1"``); weight decay lives in the optimiser instead."""
    if config.regulariser == "l2":
        return config.strength * sum(p.pow(2).sum() for p in model.parameters()) / 2
    if config.regulariser == "l1":
        return config.strength * sum(p.abs().sum() for p in model.parameters())
    return 0.0


@dataclass
class GrokRun:
    """A finished run: its config, the trained model, the logged rows (``training.train``'s rule: after each
    logged step's update, train and test measured on the same weights) and the wall time."""

    config: GrokConfig
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "test_loss", ..._accuracy}
    seconds: float = 0.0
    stopped_at: int | None = None  # the step a stopping rule ended training at (None: it ran every step)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        return [row["step"] for row in self.history], [row[key] for row in self.history]


@dataclass
class StopAfterSolved:
    """A stopping rule: stop ``patience`` steps after test accuracy first reaches ``SOLVED_ACCURACY``."""

    patience: int
    solved_at: int | None = None

    def __call__(self, step: int, row: dict) -> bool:
        if self.solved_at is None and row["test_accuracy"] >= SOLVED_ACCURACY:
            self.solved_at = step
        return self.solved_at is not None and step - self.solved_at >= self.patience


def train_grokking(
    config: GrokConfig,
    loss: LossFn,
    split: SplitFn,
    callback: Callable[[int, dict], Any] | None = None,
    progress: bool = True,
    stop_after_solved: int | None = None,
    stop: Callable[[int, dict], bool] | None = None,
) -> GrokRun:
    """Train ``config`` with the course's one loop (``training.train``): full-batch AdamW (betas 0.9, 0.98) on the
    training pairs of ``make_data(config, split)``, minimising ``loss`` (the chapter's ``loss_at_equals``) plus the
    config's penalty, on one thread (these tiny full-batch steps gain nothing from a second one).

    Every ``eval_every`` steps it logs train and test loss (``loss``) and accuracy, both measured after the step's
    update on the same weights, and calls ``callback(step, row)`` (a live plot). ``stop_after_solved`` ends
    training that many steps after test accuracy first reaches 99%; ``stop(step, row)`` is any other rule.
    """
    data = make_data(config, split)
    model = models.make_model(config.model_config(), seed=config.seed)
    rules = [
        rule
        for rule in (stop, None if stop_after_solved is None else StopAfterSolved(stop_after_solved))
        if rule is not None
    ]

    def loss_fn(model_: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        tokens, labels = batch
        return loss(model_(tokens), labels) + penalty(model_, config)

    def evaluate(model_: torch.nn.Module) -> dict[str, float]:
        row = {}
        for name, tokens, labels in (
            ("train", data.train_tokens, data.train_labels),
            ("test", data.test_tokens, data.test_labels),
        ):
            logits = model_(tokens)
            row[f"{name}_loss"] = float(loss(logits, labels))
            row[f"{name}_accuracy"] = float(accuracy_at_equals(logits, labels))
        return row

    def on_row(step: int, row: dict) -> bool:
        if callback is not None:
            callback(step, row)
        return any([rule(step, row) for rule in rules])  # a list: every rule sees every row

    decay = config.strength if config.regulariser == "weight_decay" else 0.0
    result = train(
        model,
        lambda step: (data.train_tokens, data.train_labels),
        loss_fn,
        TrainConfig(
            steps=config.steps,
            lr=config.lr,
            weight_decay=decay,
            betas=BETAS,
            eval_every=config.eval_every,
            progress=progress,
            threads=1,
            description=f"p={config.p} {config.operation}",
        ),
        eval_fn=evaluate,
        callback=on_row,
    )
    return GrokRun(config, model, result.log, result.seconds, result.stopped_at)


# --------------------------------------------------------------------------------------------------------------
# Fourier helpers that no exercise asks for
# --------------------------------------------------------------------------------------------------------------


def frequency_labels(p: int) -> list[str]:
    """``["const", "k=1", ..., "k=(p-1)/2"]``: names of the entries of a frequency-norm vector."""
    return ["const"] + [f"k={k}" for k in range(1, (p - 1) // 2 + 1)]


def basis_labels(p: int) -> list[str]:
    """``["const", "k=1 (cos)", "k=1 (sin)", ...]``: names of the rows of the Fourier basis."""
    return ["const"] + [f"k={k} ({part})" for k in range(1, (p - 1) // 2 + 1) for part in ("cos", "sin")]


def key_frequencies(norms: Tensor, threshold: float = KEY_FREQUENCY_THRESHOLD) -> list[int]:
    """The frequencies whose norm is above ``threshold`` times the largest, from ``norms [(p - 1) / 2 + 1]`` (the
    chapter's ``frequency_norms`` of the embedding; entry 0, the constant, is not a frequency). A grokked model's
    spectrum has a handful; a memorising model's is flat."""
    waves = torch.as_tensor(norms).double()[1:]
    return [k + 1 for k in torch.nonzero(waves > threshold * waves.max()).flatten().tolist()]


def sum_directions(p: int, key_freqs: Sequence[int]) -> Tensor:
    """``[2 * n_key, p, p]``: the unit-norm grids ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` over ``(a, b)``,
    cos and sin alternating per key frequency. They are orthonormal (for distinct frequencies ``0 < k < p / 2``).

    Computed once per ``(p, key_freqs)`` and copied on every call: the progress measures ask for the same grids at
    every snapshot, and a caller may change its copy in place."""
    return _sum_directions(p, tuple(int(k) for k in key_freqs)).clone()


@functools.lru_cache(maxsize=256)
def _sum_directions(p: int, key_freqs: tuple[int, ...]) -> Tensor:
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    grids = []
    for k in key_freqs:
        angle = 2 * math.pi * k * (a + b) / p
        grids += [torch.cos(angle), torch.sin(angle)]
    grids = torch.stack(grids)
    return grids / grids.flatten(1).norm(dim=1)[:, None, None]


def sum_fraction(grid: Tensor, p: int, key_freqs: Sequence[int]) -> Tensor:
    """``grid [p, p, n]`` over ``(a, b)``: per column, the fraction of its variance (mean removed) along
    ``cos/sin(w_k (a + b))`` for the key frequencies. The MLP's job is to make these terms out of the embeddings'
    ``cos(w_k a)``, ``sin(w_k b)``...: ``cos(w(a+b)) = cos(wa) cos(wb) - sin(wa) sin(wb)``."""
    centred = grid.double() - grid.double().mean(dim=(0, 1), keepdim=True)
    coefficients = einops.einsum(sum_directions(p, key_freqs), centred, "d a b, a b n -> d n")
    return coefficients.pow(2).sum(0) / centred.pow(2).sum(dim=(0, 1)).clamp_min(1e-30)


def neuron_logit_map(model) -> Tensor:
    """``W_L = W_out @ W_U``: ``[d_mlp, d_vocab_out]``, how each neuron writes to each answer's logit."""
    return model.W_out[0] @ model.W_U


def effective_rank(matrix: Tensor, energy: float = 0.99) -> int:
    """The number of singular values needed to hold ``energy`` of ``matrix``'s squared Frobenius norm."""
    singular = torch.linalg.svdvals(matrix.double())
    cumulative = singular.pow(2).cumsum(0) / singular.pow(2).sum()
    return int((cumulative < energy).sum()) + 1


def grid_logits(model, p: int) -> Tensor:
    """``[p, p, d_vocab_out]``: the logits at ``=`` for every input ``a b =``, computed from the weights of a
    one-layer model without LayerNorm (the chapter's models), equal to ``model(tokens)[:, -1]`` up to float32
    rounding (tests/test_grokking.py checks it).

    Why not run the model: only the ``=`` position's logits matter, and there the query is the same for every
    input, the keys and values of position 0 depend on ``a`` alone and those of position 1 on ``b`` alone. Built
    from those ``p``-row tables, the grid costs a fraction of a forward pass over ``p * p`` sequences (the progress
    measures need it at 31 snapshots)."""
    if model.cfg.n_layers != 1 or getattr(model.cfg, "normalization_type", None) is not None:
        raise ValueError("grid_logits computes one-layer models without LayerNorm (the chapter's); run the model")
    layer = 0
    W_E, W_pos = model.W_E, model.W_pos
    resid = {"a": W_E[:p] + W_pos[0], "b": W_E[:p] + W_pos[1], "=": W_E[p] + W_pos[2]}

    def project(W: Tensor, b: Tensor, x: Tensor) -> Tensor:  # x [..., d_model] -> [..., n_heads, d_head]
        return einops.einsum(x, W[layer], "... d, h d e -> ... h e") + b[layer]

    query = project(model.W_Q, model.b_Q, resid["="])  # [n_heads, d_head]: the same for every input
    keys = {pos: project(model.W_K, model.b_K, x) for pos, x in resid.items()}
    values = {pos: project(model.W_V, model.b_V, x) for pos, x in resid.items()}
    scale = math.sqrt(model.cfg.d_head)
    scores = [(keys[pos] * query).sum(-1) / scale for pos in ("a", "b", "=")]  # [p, h], [p, h], [h]
    scores = torch.stack(torch.broadcast_tensors(scores[0][:, None], scores[1][None, :], scores[2]), dim=-1)
    pattern = scores.softmax(dim=-1)  # [a, b, n_heads, 3 keys]
    z = (
        pattern[..., 0, None] * values["a"][:, None]
        + pattern[..., 1, None] * values["b"][None, :]
        + pattern[..., 2, None] * values["="]
    )  # [a, b, n_heads, d_head]
    attn_out = einops.einsum(z, model.W_O[layer], "a b h e, h e d -> a b d") + model.b_O[layer]
    resid_mid = resid["="] + attn_out
    pre = resid_mid @ model.W_in[layer] + model.b_in[layer]
    post = torch.relu(pre) if model.cfg.act_fn == "relu" else torch.nn.functional.gelu(pre)
    resid_post = resid_mid + post @ model.W_out[layer] + model.b_out[layer]
    return (resid_post @ model.W_U + model.b_U).detach()


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """``[...]``: the correct answer's logit minus the largest other logit, for ``logits [..., n_out]`` and
    ``labels [...]``. Positive where the model is right; the smallest over the training set is the model's margin,
    the quantity in Morwani et al.'s analysis."""
    logits = logits.double()
    correct = logits.gather(-1, labels[..., None])[..., 0]
    others = logits.scatter(-1, labels[..., None], -math.inf)
    return correct - others.max(dim=-1).values


# --------------------------------------------------------------------------------------------------------------
# Progress measures over a training trajectory (Nanda et al. 2023, section 5)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureFunctions:
    """The exercise functions the progress measures are computed with: the notebook passes the student's, the
    recipe the reference's."""

    frequency_norms: Callable[[Tensor, int], Tensor]
    gini: Callable[[Tensor], Tensor]
    restricted_loss: Callable[[Tensor, Tensor, list[int]], Tensor]
    excluded_loss: Callable[[Tensor, Tensor, list[int], Tensor], Tensor]
    sum_of_squared_weights: Callable[[torch.nn.Module], Tensor]


def progress_measures(
    model, data: tasks.ModularAddition, key_freqs: Sequence[int], fns: MeasureFunctions
) -> dict[str, float]:
    """Everything the chapter plots per snapshot: losses and accuracies on the split, the restricted and excluded
    losses, the Gini coefficients of ``W_E``'s and ``W_L``'s frequency norms, the sum of squared weights and the
    smallest training margin."""
    p = data.p
    logits = grid_logits(model, p)  # [a, b, c]
    labels = einops.rearrange(data.all_labels, "(a b) -> a b", a=p)
    mask = train_mask(data)
    flat = einops.rearrange(logits.double(), "a b c -> (a b) c")
    losses = torch.nn.functional.cross_entropy(flat, labels.flatten(), reduction="none").view(p, p)
    correct = (logits.argmax(-1) == labels).double()
    W_E = model.W_E[:p].detach()
    keys = list(key_freqs)
    return {
        "train_loss": float(losses[mask].mean()),
        "test_loss": float(losses[~mask].mean()),
        "train_accuracy": float(correct[mask].mean()),
        "test_accuracy": float(correct[~mask].mean()),
        "restricted_loss": float(fns.restricted_loss(logits, labels, keys)),
        "excluded_loss": float(fns.excluded_loss(logits, labels, keys, mask)),
        "gini_W_E": float(fns.gini(fns.frequency_norms(W_E, p)[1:])),
        "gini_W_L": float(fns.gini(fns.frequency_norms(neuron_logit_map(model).detach().T, p)[1:])),
        "sum_squared_weights": float(fns.sum_of_squared_weights(model)),
        "min_train_margin": float(margins(logits, labels)[mask].min()),
    }


def trajectory_measures(
    snapshots: Mapping[int, dict[str, Tensor]],
    config: models.ModelConfig | dict,
    seed: int,
    data: tasks.ModularAddition,
    key_freqs: Sequence[int],
    fns: MeasureFunctions,
    progress: bool = True,
) -> list[dict]:
    """``progress_measures`` at every snapshot (``{step: state_dict}``), one row per step, with a progress bar."""
    from tqdm.auto import tqdm

    model = models.make_model(config, seed=seed)
    rows = []
    for step, state in tqdm(sorted(snapshots.items()), desc="progress measures", unit="snapshot", disable=not progress):
        model.load_state_dict(state)
        rows.append({"step": step, **progress_measures(model, data, key_freqs, fns)})
    return rows


# --------------------------------------------------------------------------------------------------------------
# The three phases: the constants of the rules (the rules themselves are an exercise)
# --------------------------------------------------------------------------------------------------------------

#: Clean-up starts when the test loss has fallen below this fraction of its peak after memorisation ...
CLEANUP_START_FRACTION = 0.5
#: ... and ends when the sum of squared weights has made this fraction of its fall from there to its minimum.
CLEANUP_END_FRACTION = 0.9


# --------------------------------------------------------------------------------------------------------------
# Research exercise: a claim about another setup, re-run by the grader
# --------------------------------------------------------------------------------------------------------------

#: "Groks" = train accuracy reaches 99% at least this many steps before test accuracy does.
GROK_MIN_GAP = 100
#: The re-run's step budget for a setup as costly as the chapter's; bigger setups get fewer. Every claim is judged
#: on the whole budget, whatever ``steps`` the student's config says: "does not grok" means "does not grok within
#: the budget", and a run cut short could not show otherwise.
CLAIM_MAX_STEPS = 600
#: What one re-run costs at most, by design of the budget: the chapter's setup runs CLAIM_MAX_STEPS steps in about
#: this many seconds on one core of the benchmark machine (benchmarks/RESULTS.md: 491 steps in 24.5 s).
CLAIM_RUN_SECONDS = 30
#: Seeds the grader picks for a claim (model and data seeds, whatever the claim's config says); the majority verdict
#: counts (a setup that groks on most seeds groks). The instant check runs the first; the hidden test the others.
CLAIM_SEEDS = 3
#: A change must be big enough to be a different setup, not the chapter's with a rounding error: numeric fields
#: move by at least this fraction of the chapter's value (``train_fraction``: at least this many points, absolute).
MIN_RELATIVE_CHANGE = 0.25
MIN_FRACTION_CHANGE = 0.1
PREDICTIONS = ("groks", "does not grok")
#: The ranges the grader runs (so that one re-run stays within its time).
CLAIM_LIMITS = {
    "d_model": (16, 128),
    "d_mlp": (16, 512),
    "n_layers": (1, 2),
    "n_heads": (1, 8),
    "train_fraction": (0.05, 0.95),
    "strength": (0.0, 10.0),
}
#: Floating-point slack when comparing a change with its minimum (0.6 - 0.5 is 0.0999... in binary).
_SLACK = 1e-9


def _cost(config: GrokConfig) -> float:
    """Relative compute per step: training pairs x (per-layer MLP and attention work + unembedding)."""
    per_layer = 2 * config.d_model * config.d_mlp + 4 * config.d_model**2
    per_example = config.n_layers * per_layer + config.d_model * config.p
    evaluated = config.train_fraction + (1 - config.train_fraction) / config.eval_every / 3
    return config.p**2 * evaluated * per_example


def claim_step_budget(config: GrokConfig) -> int:
    """The most steps the grader re-runs ``config`` for (the chapter's setup: ``CLAIM_MAX_STEPS``)."""
    budget = CLAIM_MAX_STEPS * _cost(CHAPTER_CONFIG) / _cost(config)
    return int(budget // config.eval_every * config.eval_every)


def changed_kinds(config: GrokConfig, base: GrokConfig = CHAPTER_CONFIG) -> list[str]:
    """Which kinds of change (``CHANGE_KINDS``) ``config`` makes to ``base``."""
    return [kind for kind, names in CHANGE_KINDS.items() if any(getattr(config, n) != getattr(base, n) for n in names)]


def validate_claim(claim: Any) -> tuple[GrokConfig, str, str]:
    """Check a claim's form; raise ``ValueError`` saying what is wrong. Returns ``(config, change, prediction)``
    with ``config.steps`` set to the grader's budget. The config may be a :class:`GrokConfig` or a dict of its
    fields (how it arrives when a notebook is graded)."""
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
    for name in ("p", "lr"):
        if getattr(config, name) != getattr(CHAPTER_CONFIG, name):
            raise ValueError(
                f"keep {name} = {getattr(CHAPTER_CONFIG, name)} as in the chapter (it is not one of the "
                f"four kinds of change)."
            )
    if config.operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {tuple(OPERATIONS)}, got {config.operation!r}.")
    if config.regulariser not in REGULARISERS:
        raise ValueError(f"regulariser must be one of {REGULARISERS}, got {config.regulariser!r}.")
    if config.act_fn not in ACT_FNS:
        raise ValueError(f"act_fn must be one of {ACT_FNS}, got {config.act_fn!r}.")
    for name, (low, high) in CLAIM_LIMITS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r} is outside the range the grader runs, [{low}, {high}].")
    if config.d_model % config.n_heads:
        raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads ({config.n_heads}).")
    if config.eval_every != CHAPTER_CONFIG.eval_every:
        raise ValueError(f"keep eval_every = {CHAPTER_CONFIG.eval_every}: the gap is measured on that grid.")
    kinds = changed_kinds(config)
    if kinds != [change]:
        found = ", ".join(kinds) if kinds else "nothing"
        raise ValueError(
            f"the config should differ from the chapter's (grokking.CHAPTER_CONFIG) in exactly the kind "
            f"you state ({change}); it differs in: {found}."
        )
    _require_a_real_change(config, change)
    budget = claim_step_budget(config)
    if budget < 2 * GROK_MIN_GAP:
        raise ValueError(
            f"this setup is too costly to re-run: the grader could afford only {budget} steps (about "
            f"{CLAIM_RUN_SECONDS} s on one core); make it smaller."
        )
    return replace(config, steps=budget), change, prediction


def _require_a_real_change(config: GrokConfig, change: str) -> None:
    """Refuse a change too small to be a different setup (``MIN_RELATIVE_CHANGE``, ``MIN_FRACTION_CHANGE``)."""
    base = CHAPTER_CONFIG
    if change == "train_fraction" and abs(config.train_fraction - base.train_fraction) < MIN_FRACTION_CHANGE - _SLACK:
        raise ValueError(
            f"train_fraction {config.train_fraction} is within {MIN_FRACTION_CHANGE} of the chapter's "
            f"{base.train_fraction}: that is the same setup. Move it further."
        )
    if (
        change == "regulariser"
        and config.regulariser == base.regulariser
        and abs(config.strength - base.strength) < MIN_RELATIVE_CHANGE * base.strength - _SLACK
    ):
        raise ValueError(
            f"weight decay {config.strength} is within {MIN_RELATIVE_CHANGE:.0%} of the chapter's "
            f"{base.strength}: that is the same setup. Change it more, or use another regulariser."
        )
    if change == "architecture":
        moved = [
            name
            for name in ("d_model", "d_mlp")
            if abs(getattr(config, name) - getattr(base, name)) >= MIN_RELATIVE_CHANGE * getattr(base, name) - _SLACK
        ]
        discrete = [name for name in ("n_heads", "n_layers", "act_fn") if getattr(config, name) != getattr(base, name)]
        if not moved and not discrete:
            raise ValueError(
                f"d_model and d_mlp must move by at least {MIN_RELATIVE_CHANGE:.0%} (or change n_heads, "
                f"n_layers or act_fn): a smaller change is the same setup."
            )


@dataclass
class StopWhenDecided:
    """A stopping rule for a claim's re-run: stop as soon as the verdict cannot change any more. That is when test
    accuracy reaches 99% (the gap is then known), or when train accuracy has not reached 99% so late that test
    accuracy could no longer follow ``GROK_MIN_GAP`` steps later within ``last_step``."""

    last_step: int
    train_solved: bool = False

    def __call__(self, step: int, row: dict) -> bool:
        self.train_solved = self.train_solved or row["train_accuracy"] >= SOLVED_ACCURACY
        too_late = not self.train_solved and step > self.last_step - GROK_MIN_GAP
        return row["test_accuracy"] >= SOLVED_ACCURACY or too_late


def claim_verdict(history: list[dict], grok_steps: GrokStepsFn) -> str:
    """'groks' when train accuracy reached 99% at least ``GROK_MIN_GAP`` steps before test accuracy did (by
    ``grok_steps``, the chapter's exercise)."""
    train_step, test_step = grok_steps(history)
    if train_step is not None and test_step is not None and test_step - train_step >= GROK_MIN_GAP:
        return "groks"
    return "does not grok"


def describe_outcome(run: GrokRun, grok_steps: GrokStepsFn) -> str:
    """One sentence: when train and test accuracy reached 99%, or where the run stopped."""
    train_step, test_step = grok_steps(run.history)
    last = run.history[-1]
    train = (
        f"reached 99% train accuracy at step {train_step}"
        if train_step is not None
        else f"never reached 99% train accuracy (final {last['train_accuracy']:.3f})"
    )
    if test_step is not None:
        test = f"99% test accuracy at step {test_step}"
    elif run.stopped_at is not None:
        test = (
            f"was stopped at step {run.stopped_at} of {run.config.steps}, when 99% test accuracy could no longer "
            f"come {GROK_MIN_GAP} steps after 99% train accuracy (final test accuracy {last['test_accuracy']:.3f})"
        )
    else:
        test = f"never reached 99% test accuracy in {last['step'] + 1} steps (final {last['test_accuracy']:.3f})"
    return f"{train} and {test}"


def run_claim(
    config: GrokConfig | dict, loss: LossFn, split: SplitFn, grok_steps: GrokStepsFn, progress: bool = True
) -> tuple[str, GrokRun]:
    """Train ``config`` as the grader does and return ``(verdict, run)``: for ``claim_step_budget(config)`` steps
    whatever ``config.steps`` says, on one thread, stopping once the verdict is decided (``StopWhenDecided``), with
    ``config``'s own seeds (the grader's check replaces them by its own)."""
    config = as_config(config)
    config = replace(config, steps=claim_step_budget(config))
    run = train_grokking(config, loss, split, progress=progress, stop=StopWhenDecided(config.steps - 1))
    return claim_verdict(run.history, grok_steps), run
