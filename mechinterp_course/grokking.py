"""Reference implementations for the "Grokking" chapter: the Fourier view of modular addition (Nanda et al. 2023).

What is here, in the chapter's order: the task (:func:`all_pairs`, :func:`loss_at_equals`, :func:`grok_steps`); the
small CPU setup trained in the notebook (:class:`GrokConfig`, :func:`train_grokking`, :class:`LiveCurves`); the
Fourier analysis (basis, frequency norms, key frequencies, neuron frequency fractions); the cosine-sum fit of the
logits (:func:`fit_logits`); the trig-identity steps (:func:`key_frequency_fraction`, :func:`sum_fraction`,
:func:`neuron_logit_map`); the progress measures (:func:`restricted_loss`, :func:`excluded_loss`, :func:`gini`,
:func:`sum_of_squared_weights`, :func:`trajectory_measures`) and the phase rules (:func:`find_phases`); and the
research exercise's claim, re-run by the grader (:func:`validate_claim`, :func:`run_claim`). The graders that
compare students' code with these live in :mod:`mechinterp_course.grokking_graders`.

Conventions. For a prime ``p`` the real Fourier basis has ``p`` rows: the constant, then ``cos(w_k x)`` and
``sin(w_k x)`` for ``k = 1 .. (p - 1) / 2`` with ``w_k = 2 pi k / p``, each row normalised to unit length, so the
basis is orthonormal: ``basis @ basis.T == I``. Frequency ``k`` owns rows ``2k - 1`` (cos) and ``2k`` (sin).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import einops
import torch
from torch import Tensor

from . import models, tasks


def fourier_basis(p: int) -> tuple[Tensor, list[str]]:
    """``([p, p], labels)``: the orthonormal real Fourier basis over ``Z_p`` (rows are basis vectors)."""
    x = torch.arange(p, dtype=torch.float64)
    rows, labels = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        labels += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float(), labels


def fourier_transform_2d(grid: Tensor, p: int) -> Tensor:
    """``grid [p, p, ...]`` over ``(a, b)`` -> coefficients ``[p, p, ...]`` in the 2D basis ``basis_a x basis_b``."""
    basis, _ = fourier_basis(p)
    # Two contractions: one three-operand einsum would build a [p, p, p, p] intermediate (650 MB for p = 113).
    over_a = einops.einsum(basis, grid, "i a, a b ... -> i b ...")
    return einops.einsum(basis, over_a, "j b, i b ... -> i j ...")


def frequency_norms(W: Tensor, p: int) -> Tensor:
    """``[(p - 1) / 2 + 1]``: the norm of ``W [p, d]``'s Fourier components per frequency (index 0 = constant).
    Applied to the embedding ``W_E[:p]`` this shows the handful of key frequencies the model uses."""
    basis, _ = fourier_basis(p)
    coefficients = basis @ W  # [p, d]
    norms = [coefficients[0].norm()]
    for k in range(1, (p - 1) // 2 + 1):
        norms.append(coefficients[2 * k - 1 : 2 * k + 1].norm())
    return torch.stack(norms)


def key_frequencies(W_E: Tensor, p: int, threshold: float = 0.5) -> list[int]:
    """Frequencies whose embedding norm exceeds ``threshold`` times the largest (the sparse spectrum of a grokked
    model; a memorising model's spectrum is flat)."""
    norms = frequency_norms(W_E, p)[1:]
    return [k + 1 for k in torch.nonzero(norms > threshold * norms.max()).flatten().tolist()]


def gini(values: Tensor) -> Tensor:
    """The Gini coefficient of non-negative ``values``: 0 when all equal, ``1 - 1/n`` when one holds everything.

    With ``x`` sorted ascending and ``i = 1 .. n``: ``G = sum_i (2i - n - 1) x_i / (n sum_i x_i)`` (the mean absolute
    difference of all pairs over twice the mean). Scale-free: multiplying every value by a constant changes nothing."""
    x, _ = values.flatten().double().sort()
    n = x.numel()
    index = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * index - n - 1) * x).sum() / (n * x.sum())


def neuron_frequency_fractions(neuron_acts: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """For MLP activations on every ``(a, b)`` (``neuron_acts [p, p, d_mlp]``), the fraction of each neuron's variance
    (constant term removed) explained by its best single frequency, and that frequency.

    A frequency ``k`` here owns every 2D basis term that uses ``k`` alone: ``cos/sin(w_k a)``, ``cos/sin(w_k b)`` and
    the four products ``{cos,sin}(w_k a){cos,sin}(w_k b)``.
    """
    coefficients = fourier_transform_2d(neuron_acts, p)  # [p, p, d_mlp]
    coefficients[0, 0] = 0.0
    total = coefficients.pow(2).sum(dim=(0, 1))  # [d_mlp]
    per_frequency = []
    for k in range(1, (p - 1) // 2 + 1):
        rows = [0, 2 * k - 1, 2 * k]
        block = coefficients[rows][:, rows]
        per_frequency.append(block.pow(2).sum(dim=(0, 1)))
    per_frequency = torch.stack(per_frequency)  # [n_freq, d_mlp]
    best, best_index = per_frequency.max(dim=0)
    return best / total.clamp_min(1e-12), best_index + 1


def sum_of_squared_weights(model) -> Tensor:
    """The quantity weight decay pushes down: it falls sharply in the clean-up phase."""
    return sum(param.detach().pow(2).sum() for param in model.parameters())


# --------------------------------------------------------------------------------------------------------------
# The task: tokens, labels, the loss at "="
# --------------------------------------------------------------------------------------------------------------

#: Accuracy that counts as "solved" (train: memorised; test: generalised).
SOLVED_ACCURACY = 0.99


def all_pairs(p: int) -> tuple[Tensor, Tensor]:
    """``(tokens [p * p, 3], labels [p * p])``: every problem ``a b =`` in the order ``a * p + b``; ``=`` is token ``p``."""
    a = einops.repeat(torch.arange(p), "a -> (a b)", b=p)
    b = einops.repeat(torch.arange(p), "b -> (a b)", a=p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def loss_at_equals(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``labels [batch]`` under the logits at the last (``=``) position of ``logits
    [batch, pos, d_vocab_out]``, in float64 (the paper's choice: float32 softmax rounding stalls the loss near 0)."""
    return torch.nn.functional.cross_entropy(logits[:, -1].to(torch.float64), labels)


def accuracy_at_equals(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits[:, -1].argmax(-1) == labels).double().mean()


def grok_steps(history: list[dict], threshold: float = SOLVED_ACCURACY) -> tuple[int | None, int | None]:
    """``(train_step, test_step)``: the first logged steps at which train and test accuracy reach ``threshold``
    (``None`` where never)."""
    first = {}
    for split in ("train", "test"):
        first[split] = next((row["step"] for row in history if row[f"{split}_accuracy"] >= threshold), None)
    return first["train"], first["test"]


# --------------------------------------------------------------------------------------------------------------
# Watching it grok: the small CPU configuration, trained in the notebook
# --------------------------------------------------------------------------------------------------------------

#: The operations a training setup may use (``(a, b) -> label mod p``).
OPERATIONS = {
    "add": lambda a, b, p: (a + b) % p,
    "subtract": lambda a, b, p: (a - b) % p,
    "multiply": lambda a, b, p: (a * b) % p,
    "square_sum": lambda a, b, p: (a * a + b * b) % p,
}
REGULARISERS = ("weight_decay", "l2", "l1", "none")
ACT_FNS = ("relu", "gelu")
#: Which fields of a :class:`GrokConfig` belong to which kind of change (the research exercise changes one kind).
CHANGE_KINDS = {
    "operation": ("operation",),
    "regulariser": ("regulariser", "strength"),
    "architecture": ("d_model", "n_heads", "d_mlp", "n_layers", "act_fn"),
    "train_fraction": ("train_fraction",),
}
#: Fields that may differ freely (they are not a different setup).
FREE_FIELDS = ("steps", "seed", "data_seed", "eval_every")


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
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_model // self.n_heads,
            d_mlp=self.d_mlp, d_vocab=self.p + 1, d_vocab_out=self.p, n_ctx=3, attn_only=False, act_fn=self.act_fn,
            normalization_type=None,
        )


CHAPTER_CONFIG = GrokConfig()


def make_data(config: GrokConfig) -> tasks.ModularAddition:
    """The train/test split of all ``p * p`` pairs for ``config`` (the split of ``tasks.modular_addition``, with the
    labels of ``config.operation``)."""
    data = tasks.modular_addition(config.p, config.train_fraction, config.data_seed)
    op = OPERATIONS[config.operation]
    return replace(data, train_labels=op(data.train_tokens[:, 0], data.train_tokens[:, 1], config.p),
                   test_labels=op(data.test_tokens[:, 0], data.test_tokens[:, 1], config.p))


@dataclass
class GrokRun:
    config: GrokConfig
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "test_loss", "train_accuracy", "test_accuracy"}
    seconds: float = 0.0
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # step -> state_dict copy

    def series(self, key: str) -> tuple[list[int], list[float]]:
        return [row["step"] for row in self.history], [row[key] for row in self.history]

    @property
    def grok_steps(self) -> tuple[int | None, int | None]:
        return grok_steps(self.history)


def _penalty(model: torch.nn.Module, config: GrokConfig) -> Tensor | float:
    if config.regulariser == "l2":
        return config.strength * sum(p.pow(2).sum() for p in model.parameters()) / 2
    if config.regulariser == "l1":
        return config.strength * sum(p.abs().sum() for p in model.parameters())
    return 0.0


def train_grokking(config: GrokConfig = CHAPTER_CONFIG, callback: Callable[[dict], None] | None = None,
                   progress: bool = True, stop_after_solved: int | None = None,
                   snapshot_every: int | None = None) -> GrokRun:
    """Full-batch AdamW (betas 0.9, 0.98) on ``config``'s training pairs; the loss is taken at ``=`` in float64.

    Every ``eval_every`` steps (and after the last) it logs train/test loss and accuracy and calls ``callback(row)``.
    ``stop_after_solved`` ends training that many steps after test accuracy first reaches 99%. Each logged row
    measures train and test on the same weights (those the step's gradient was taken at).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny full-batch steps gain nothing from a second thread, and lose a lot to a busy core
    try:
        return _train(config, callback, progress, stop_after_solved, snapshot_every)
    finally:
        torch.set_num_threads(threads)


def _train(config: GrokConfig, callback, progress: bool, stop_after_solved: int | None,
           snapshot_every: int | None) -> GrokRun:
    from tqdm.auto import tqdm

    data = make_data(config)
    model = models.make_model(config.model_config(), seed=config.seed)
    decay = config.strength if config.regulariser == "weight_decay" else 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=decay, betas=(0.9, 0.98))
    run = GrokRun(config, model)
    start = time.perf_counter()
    solved_at = None
    bar = tqdm(range(config.steps), desc=f"p={config.p} {config.operation}", disable=not progress, mininterval=0.5)
    for step in bar:
        model.train()
        with torch.enable_grad():  # notebooks analysing a trained model switch gradients off globally
            logits = model(data.train_tokens)
            loss = loss_at_equals(logits, data.train_labels)
            optimizer.zero_grad(set_to_none=True)
            (loss + _penalty(model, config)).backward()
        logged = step % config.eval_every == 0 or step == config.steps - 1
        if logged:  # test on the same weights as the training loss above: before this step's update
            model.eval()
            with torch.no_grad():
                test_logits = model(data.test_tokens)
        optimizer.step()
        if logged:
            row = {"step": step, "train_loss": float(loss.detach()),
                   "test_loss": float(loss_at_equals(test_logits, data.test_labels)),
                   "train_accuracy": float(accuracy_at_equals(logits.detach(), data.train_labels)),
                   "test_accuracy": float(accuracy_at_equals(test_logits, data.test_labels))}
            run.history.append(row)
            bar.set_postfix(train_acc=f"{row['train_accuracy']:.3f}", test_acc=f"{row['test_accuracy']:.3f}", refresh=False)
            if callback is not None:
                callback(row)
            if snapshot_every and step % snapshot_every == 0:
                run.snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if solved_at is None and row["test_accuracy"] >= SOLVED_ACCURACY:
                solved_at = step
            if stop_after_solved is not None and solved_at is not None and step - solved_at >= stop_after_solved:
                bar.total = bar.n = step + 1  # finished early: show a full bar, not one stuck part-way
                bar.set_description(f"p={config.p} {config.operation} (solved at step {solved_at})")
                bar.refresh()
                break
    bar.close()
    model.eval()
    run.seconds = time.perf_counter() - start
    return run


class LiveCurves:
    """Train/test accuracy and loss redrawn while a model trains (``callback=live.update``).

    In a notebook the figure is displayed once and replaced in place every ``redraw_every`` rows (IPython display
    handles: works in JupyterLab, Colab and a headless run); outside a notebook it only collects the rows.
    """

    def __init__(self, title: str = "Training", redraw_every: int = 5):
        self.title, self.redraw_every, self.rows, self.handle = title, redraw_every, [], None

    def figure(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss (log scale)"))
        steps = [row["step"] for row in self.rows]
        for split, dash in [("train", None), ("test", "dash")]:
            fig.add_trace(go.Scatter(x=steps, y=[r[f"{split}_accuracy"] for r in self.rows], name=f"{split} accuracy",
                                     line=dict(dash=dash)), row=1, col=1)
            fig.add_trace(go.Scatter(x=steps, y=[r[f"{split}_loss"] for r in self.rows], name=f"{split} loss",
                                     line=dict(dash=dash)), row=1, col=2)
        fig.update_yaxes(range=[0, 1.02], row=1, col=1)
        fig.update_yaxes(type="log", row=1, col=2)
        fig.update_xaxes(title_text="step")
        fig.update_layout(title=self.title, height=350)
        return fig

    def update(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) % self.redraw_every == 1 or self.redraw_every == 1:
            self.draw()

    def draw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        # A plotly figure displays itself and ignores display ids, so hand IPython the rendered mime bundle instead.
        fig = self.figure()
        bundle = fig._repr_mimebundle_(include=None, exclude=None) or {
            "application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/plain": self.title}
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


# --------------------------------------------------------------------------------------------------------------
# The trig-identity algorithm, step by step
# --------------------------------------------------------------------------------------------------------------


def key_frequency_fraction(x: Tensor, p: int, key_freqs: Sequence[int]) -> Tensor:
    """``x [p, ...]`` indexed by a number along its first axis: the fraction of its variance (the constant term
    removed) that lies in the cos/sin components of ``key_freqs``. One value for the whole tensor."""
    basis, _ = fourier_basis(p)
    coefficients = einops.einsum(basis.to(x.dtype), x, "f n, n ... -> f ...")
    rows = [row for k in key_freqs for row in (2 * k - 1, 2 * k)]
    return coefficients[rows].pow(2).sum() / coefficients[1:].pow(2).sum()


def sum_directions(p: int, key_freqs: Sequence[int]) -> Tensor:
    """``[2 * n_key, p, p]``: the unit-norm grids ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` over ``(a, b)``,
    cos and sin alternating per key frequency. They are orthonormal."""
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
    """``[p, p, d_vocab_out]``: the logits at ``=`` for every ``(a, b)``."""
    tokens, _ = all_pairs(p)
    with torch.no_grad():
        logits = model(tokens)[:, -1]
    return einops.rearrange(logits, "(a b) c -> a b c", a=p)


def grid_cache(model, p: int, names: Sequence[str]) -> dict[str, Tensor]:
    """Activations at ``=`` for every ``(a, b)``, each ``[p, p, ...]``."""
    tokens, _ = all_pairs(p)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return {name: einops.rearrange(cache[name][:, -1], "(a b) ... -> a b ...", a=p) for name in names}


# --------------------------------------------------------------------------------------------------------------
# The logits as a sum of cos(w_k (a + b - c))
# --------------------------------------------------------------------------------------------------------------


def logit_features(p: int, key_freqs: Sequence[int], n_out: int | None = None) -> Tensor:
    """``[p, p, n_out, n_key]``: ``cos(w_k (a + b - c))`` for every ``(a, b, c)`` and key frequency."""
    n_out = p if n_out is None else n_out
    a = torch.arange(p, dtype=torch.float64)[:, None, None]
    b = torch.arange(p, dtype=torch.float64)[None, :, None]
    c = torch.arange(n_out, dtype=torch.float64)[None, None, :]
    return torch.stack([torch.cos(2 * math.pi * k * (a + b - c) / p) for k in key_freqs], dim=-1)


def fit_logits(logits: Tensor, key_freqs: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Least-squares fit of ``logits [p, p, p]`` (each ``(a, b)``'s logits centred over ``c``) by
    ``sum_k alpha_k cos(w_k (a + b - c))``. Returns ``(alpha [n_key], variance explained)``, both float64."""
    p = logits.shape[0]
    target = logits.double() - logits.double().mean(dim=-1, keepdim=True)
    # The normal equations, one feature at a time: the [p, p, p, n_key] design matrix would take hundreds of MB
    # when many frequencies are passed (an ungrokked model has no sparse spectrum).
    features = [logit_features(p, [k], logits.shape[-1])[..., 0] for k in key_freqs]  # each [p, p, n_out]
    gram = torch.tensor([[float((f * g).sum()) for g in features] for f in features], dtype=torch.float64)
    moments = torch.tensor([float((f * target).sum()) for f in features], dtype=torch.float64)
    alpha = torch.linalg.solve(gram, moments)  # [n_key]
    fitted = sum(a * f for a, f in zip(alpha, features))
    return alpha, 1 - (target - fitted).pow(2).sum() / target.pow(2).sum()


# --------------------------------------------------------------------------------------------------------------
# Progress measures (Nanda et al. 2023, section 5)
# --------------------------------------------------------------------------------------------------------------


def split_sum_terms(logits: Tensor, key_freqs: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Split ``logits [p, p, n_out]`` over ``(a, b)`` into ``(kept, rest)`` with ``kept + rest == logits``:
    ``kept`` is each output's mean over ``(a, b)`` plus its projection on ``cos/sin(w_k (a + b))`` for the key
    frequencies; ``rest`` is everything else."""
    p = logits.shape[0]
    x = logits.double()
    directions = sum_directions(p, key_freqs)  # [2 n_key, p, p]
    mean = x.mean(dim=(0, 1), keepdim=True)
    coefficients = einops.einsum(directions, x - mean, "d a b, a b c -> d c")
    projection = einops.einsum(directions, coefficients, "d a b, d c -> a b c")
    kept = mean + projection
    return kept, x - kept


def restricted_loss(logits: Tensor, labels: Tensor, key_freqs: Sequence[int]) -> Tensor:
    """Loss (all ``p * p`` pairs) of the logits restricted to the key frequencies' ``cos/sin(w_k (a + b))`` terms and
    the constant: low once the generalising circuit exists, even while the memorising one still dominates.
    ``logits [p, p, p]``, ``labels [p, p]``."""
    kept, _ = split_sum_terms(logits, key_freqs)
    return torch.nn.functional.cross_entropy(einops.rearrange(kept, "a b c -> (a b) c"), labels.flatten())


def excluded_loss(logits: Tensor, labels: Tensor, key_freqs: Sequence[int], train_mask: Tensor) -> Tensor:
    """Loss on the *training* pairs (``train_mask [p, p]``) of the logits with the key frequencies'
    ``cos/sin(w_k (a + b))`` terms removed: rises as the model comes to rely on the generalising circuit."""
    kept, rest = split_sum_terms(logits, key_freqs)
    excluded = rest + logits.double().mean(dim=(0, 1), keepdim=True)  # removing the constant too is not the point
    return torch.nn.functional.cross_entropy(excluded[train_mask], labels[train_mask])


def train_mask(data: tasks.ModularAddition) -> Tensor:
    """``[p, p]`` booleans: which ``(a, b)`` are training pairs."""
    p = data.p
    mask = torch.zeros(p, p, dtype=torch.bool)
    mask[data.train_tokens[:, 0], data.train_tokens[:, 1]] = True
    return mask


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """``[...]``: the correct answer's logit minus the largest other logit, for ``logits [..., n_out]`` and
    ``labels [...]``. Positive where the model is right; the smallest over the training set is the model's margin,
    the quantity in Morwani et al.'s analysis (among networks of bounded weight norm, the ones that maximise it use
    Fourier features)."""
    logits = logits.double()
    correct = logits.gather(-1, labels[..., None])[..., 0]
    others = logits.scatter(-1, labels[..., None], -math.inf)
    return correct - others.max(dim=-1).values


def progress_measures(model, data: tasks.ModularAddition, key_freqs: Sequence[int]) -> dict[str, float]:
    """Everything the chapter plots per snapshot of the shipped trajectory."""
    p = data.p
    logits = grid_logits(model, p)
    labels = einops.rearrange(data.all_labels, "(a b) -> a b", a=p)
    mask = train_mask(data)
    flat = einops.rearrange(logits.double(), "a b c -> (a b) c")
    losses = torch.nn.functional.cross_entropy(flat, labels.flatten(), reduction="none").view(p, p)
    correct = (logits.argmax(-1) == labels).double()
    W_E = model.W_E[:p].detach()
    return {
        "train_loss": float(losses[mask].mean()),
        "test_loss": float(losses[~mask].mean()),
        "train_accuracy": float(correct[mask].mean()),
        "test_accuracy": float(correct[~mask].mean()),
        "restricted_loss": float(restricted_loss(logits, labels, key_freqs)),
        "excluded_loss": float(excluded_loss(logits, labels, key_freqs, mask)),
        "gini_W_E": float(gini(frequency_norms(W_E, p)[1:])),
        "gini_W_L": float(gini(frequency_norms(neuron_logit_map(model).detach().T, p)[1:])),
        "sum_squared_weights": float(sum_of_squared_weights(model)),
        "min_train_margin": float(margins(logits, labels)[mask].min()),
    }


def trajectory_measures(snapshots: dict[int, dict[str, Tensor]], config: dict, seed: int,
                        data: tasks.ModularAddition, key_freqs: Sequence[int]) -> list[dict]:
    """``progress_measures`` at every snapshot (``{step: state_dict}``), one row per step."""
    model = models.make_model(config, seed=seed)
    rows = []
    for step, state in sorted(snapshots.items()):
        model.load_state_dict(state)
        rows.append({"step": step, **progress_measures(model, data, key_freqs)})
    return rows


# --------------------------------------------------------------------------------------------------------------
# Research exercise: a claim about another setup, re-run by the grader
# --------------------------------------------------------------------------------------------------------------

#: "Groks" = train accuracy reaches 99% at least this many steps before test accuracy does.
GROK_MIN_GAP = 100
#: The re-run's step budget for a setup as costly as the chapter's (about 30 s on one core); bigger setups get fewer.
#: Every claim is judged on the whole budget, whatever ``steps`` the student's config says: "does not grok" means
#: "does not grok within the budget", and a run cut short could not show otherwise.
CLAIM_MAX_STEPS = 600
#: A change must be big enough to be a different setup, not the chapter's with a rounding error: numeric fields
#: move by at least this fraction of the chapter's value (``train_fraction``: at least this many points, absolute).
MIN_RELATIVE_CHANGE = 0.25
MIN_FRACTION_CHANGE = 0.1
PREDICTIONS = ("groks", "does not grok")
_LIMITS = {"d_model": (16, 128), "d_mlp": (16, 512), "n_layers": (1, 2), "n_heads": (1, 8),
           "train_fraction": (0.05, 0.95), "strength": (0.0, 10.0)}


def _cost(config: GrokConfig) -> float:
    """Relative compute per step: training pairs x (per-layer MLP and attention work + unembedding)."""
    per_example = config.n_layers * (2 * config.d_model * config.d_mlp + 4 * config.d_model ** 2) + config.d_model * config.p
    return config.p ** 2 * (config.train_fraction + (1 - config.train_fraction) / config.eval_every / 3) * per_example


def claim_step_budget(config: GrokConfig) -> int:
    """The most steps the grader re-runs ``config`` for (the chapter's setup: ``CLAIM_MAX_STEPS``)."""
    budget = CLAIM_MAX_STEPS * _cost(CHAPTER_CONFIG) / _cost(config)
    return int(budget // config.eval_every * config.eval_every)


def changed_kinds(config: GrokConfig, base: GrokConfig = CHAPTER_CONFIG) -> list[str]:
    """Which kinds of change (``CHANGE_KINDS``) ``config`` makes to ``base``."""
    return [kind for kind, names in CHANGE_KINDS.items() if any(getattr(config, n) != getattr(base, n) for n in names)]


def validate_claim(claim: Any) -> tuple[GrokConfig, str, str]:
    """Check a claim's form; raise ``ValueError`` saying what is wrong. Returns ``(config, change, prediction)``."""
    if not isinstance(claim, dict) or not {"config", "change", "prediction"} <= set(claim):
        raise ValueError('the claim should be a dict with keys "config", "change" and "prediction".')
    config, change, prediction = claim["config"], claim["change"], claim["prediction"]
    if not isinstance(config, GrokConfig):
        raise ValueError(f'claim["config"] should be a grokking.GrokConfig, got {type(config).__name__}.')
    if prediction not in PREDICTIONS:
        raise ValueError(f'claim["prediction"] should be one of {PREDICTIONS}, got {prediction!r}.')
    if change not in CHANGE_KINDS:
        raise ValueError(f'claim["change"] should be one of {tuple(CHANGE_KINDS)}, got {change!r}.')
    for name in ("p", "lr"):
        if getattr(config, name) != getattr(CHAPTER_CONFIG, name):
            raise ValueError(f"keep {name} = {getattr(CHAPTER_CONFIG, name)} as in the chapter (it is not one of the "
                             f"four kinds of change).")
    if config.operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {tuple(OPERATIONS)}, got {config.operation!r}.")
    if config.regulariser not in REGULARISERS:
        raise ValueError(f"regulariser must be one of {REGULARISERS}, got {config.regulariser!r}.")
    if config.act_fn not in ACT_FNS:
        raise ValueError(f"act_fn must be one of {ACT_FNS}, got {config.act_fn!r}.")
    for name, (low, high) in _LIMITS.items():
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r} is outside the range the grader runs, [{low}, {high}].")
    if config.d_model % config.n_heads:
        raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads ({config.n_heads}).")
    if config.eval_every != CHAPTER_CONFIG.eval_every:
        raise ValueError(f"keep eval_every = {CHAPTER_CONFIG.eval_every}: the gap is measured on that grid.")
    kinds = changed_kinds(config)
    if kinds != [change]:
        found = ", ".join(kinds) if kinds else "nothing"
        raise ValueError(f"the config should differ from the chapter's (grokking.CHAPTER_CONFIG) in exactly the kind "
                         f"you state ({change}); it differs in: {found}.")
    _require_a_real_change(config, change)
    budget = claim_step_budget(config)
    if budget < 2 * GROK_MIN_GAP:
        raise ValueError(f"this setup is too costly to re-run: the grader could afford only {budget} steps (about 30 s "
                         f"on one core); make it smaller.")
    return replace(config, steps=budget), change, prediction


def _require_a_real_change(config: GrokConfig, change: str) -> None:
    """Refuse a change too small to be a different setup (``MIN_RELATIVE_CHANGE``, ``MIN_FRACTION_CHANGE``)."""
    base = CHAPTER_CONFIG
    if change == "train_fraction" and abs(config.train_fraction - base.train_fraction) < MIN_FRACTION_CHANGE - 1e-9:
        raise ValueError(f"train_fraction {config.train_fraction} is within {MIN_FRACTION_CHANGE} of the chapter's "
                         f"{base.train_fraction}: that is the same setup. Move it further.")
    if change == "regulariser" and config.regulariser == base.regulariser and \
            abs(config.strength - base.strength) < MIN_RELATIVE_CHANGE * base.strength - 1e-9:
        raise ValueError(f"weight decay {config.strength} is within {MIN_RELATIVE_CHANGE:.0%} of the chapter's "
                         f"{base.strength}: that is the same setup. Change it more, or use another regulariser.")
    if change == "architecture":
        moved = [name for name in ("d_model", "d_mlp")
                 if abs(getattr(config, name) - getattr(base, name)) >= MIN_RELATIVE_CHANGE * getattr(base, name) - 1e-9]
        discrete = [name for name in ("n_heads", "n_layers", "act_fn") if getattr(config, name) != getattr(base, name)]
        if not moved and not discrete:
            raise ValueError(f"d_model and d_mlp must move by at least {MIN_RELATIVE_CHANGE:.0%} (or change n_heads, "
                             f"n_layers or act_fn): a smaller change is the same setup.")


def claim_verdict(history: list[dict]) -> str:
    """'groks' when train accuracy reached 99% at least ``GROK_MIN_GAP`` steps before test accuracy did."""
    train_step, test_step = grok_steps(history)
    if train_step is not None and test_step is not None and test_step - train_step >= GROK_MIN_GAP:
        return "groks"
    return "does not grok"


def describe_outcome(run: GrokRun) -> str:
    train_step, test_step = run.grok_steps
    last = run.history[-1]
    train = f"reached 99% train accuracy at step {train_step}" if train_step is not None else \
        f"never reached 99% train accuracy (final {last['train_accuracy']:.3f})"
    test = f"99% test accuracy at step {test_step}" if test_step is not None else \
        f"never reached 99% test accuracy in {last['step'] + 1} steps (final {last['test_accuracy']:.3f})"
    return f"{train} and {test}"


def run_claim(config: GrokConfig, progress: bool = True) -> tuple[str, GrokRun]:
    """Train ``config`` as the grader does (for ``claim_step_budget(config)`` steps whatever ``config.steps`` says, on
    one thread like every ``train_grokking`` run, stopping once test accuracy reaches 99%) and return
    ``(verdict, run)``."""
    config = replace(config, steps=claim_step_budget(config))
    run = train_grokking(config, progress=progress, stop_after_solved=0)  # one thread, as train_grokking always does
    return claim_verdict(run.history), run


# --------------------------------------------------------------------------------------------------------------
# The three phases, from the progress measures
# --------------------------------------------------------------------------------------------------------------

#: Clean-up starts when the test loss has fallen below this fraction of its peak after memorisation ...
CLEANUP_START_FRACTION = 0.5
#: ... and ends when the sum of squared weights has made this fraction of its fall from there to its minimum.
CLEANUP_END_FRACTION = 0.9


def find_phases(steps: Sequence[int], excluded: Sequence[float], test_loss: Sequence[float],
                squared_weights: Sequence[float]) -> tuple[int, int, int]:
    """``(memorisation_end, cleanup_start, cleanup_end)`` from curves sampled at ``steps``, by the chapter's rules:

    1. memorisation ends at the step where the excluded loss is smallest (first such step);
    2. clean-up starts at the first step after that where the test loss is below ``CLEANUP_START_FRACTION`` times its
       largest value from the end of memorisation on;
    3. clean-up ends at the first step from the start of clean-up on where the sum of squared weights ``w`` satisfies
       ``w <= w_min + (1 - CLEANUP_END_FRACTION) * (w_start - w_min)``, ``w_start`` its value at the start of
       clean-up and ``w_min`` its smallest value from there on.

    Between memorisation and clean-up lies circuit formation. If test loss never falls enough, clean-up "starts" and
    ends at the last step.
    """
    steps = list(steps)
    excluded, test_loss, weights = (torch.as_tensor(list(x), dtype=torch.float64)
                                    for x in (excluded, test_loss, squared_weights))
    i_mem = int(torch.argmin(excluded))
    peak = float(test_loss[i_mem:].max())
    later = [i for i in range(i_mem + 1, len(steps)) if test_loss[i] < CLEANUP_START_FRACTION * peak]
    i_start = later[0] if later else len(steps) - 1
    w_start, w_min = float(weights[i_start]), float(weights[i_start:].min())
    bound = w_min + (1 - CLEANUP_END_FRACTION) * (w_start - w_min)
    i_end = next(i for i in range(i_start, len(steps)) if weights[i] <= bound)
    return steps[i_mem], steps[i_start], steps[i_end]


def synthetic_trajectories(seed: int, n: int = 6) -> list[tuple[list[int], list[float], list[float], list[float]]]:
    """Random ``(steps, excluded, test_loss, squared_weights)`` curves shaped like a grokking run, with phases at
    random steps (the grader's fresh inputs for :func:`find_phases`)."""
    generator = torch.Generator().manual_seed(seed)
    problems = []
    for _ in range(n):
        n_points = int(torch.randint(20, 80, (1,), generator=generator))
        every = int(torch.randint(5, 600, (1,), generator=generator))
        steps = [i * every for i in range(n_points)]
        t = torch.linspace(0, 1, n_points, dtype=torch.float64)
        mem, drop, settle = sorted((torch.rand(3, generator=generator, dtype=torch.float64) * 0.8 + 0.1).tolist())
        noise = lambda: 1 + 0.03 * torch.randn(n_points, generator=generator, dtype=torch.float64)  # noqa: E731
        excluded = (1 + 4 * (t - mem).abs()) * noise()
        test = (5 + 20 * torch.sigmoid((t - mem) * 30)) * torch.sigmoid(-(t - drop) * 40) * noise() + 1e-3
        weights = (300 + 500 * torch.sigmoid(-(t - settle) * 25) + 100 * (1 - t)) * noise()
        # Traps for rules read too loosely, in every other trajectory: during memorisation, a test-loss spike above
        # the later peak (the peak counts "from the end of memorisation on") and a dip of the weights below their
        # later minimum (the minimum counts "from the start of clean-up on").
        i_mem = int(torch.argmin(excluded))
        if len(problems) % 2 and i_mem >= 3:
            early = int(torch.randint(1, i_mem - 1, (1,), generator=generator))
            test[early] = 2.5 * float(test[i_mem:].max())
            weights[early] = 0.5 * float(weights.min())
        problems.append((steps, excluded.tolist(), test.tolist(), weights.tolist()))
    return problems
