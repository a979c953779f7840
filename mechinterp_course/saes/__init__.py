"""Chapter 04, "Sparse autoencoders and dictionary learning": the tools the chapter's cells use around the student's
exercises.

The room holds three things (every chapter's package has the same shape):

- this module: the chapter's tools that are *not* exercises: toy models of superposition trained many instances at
  once (:class:`ToyModel`, :func:`train_toy`), data with known sparse features (:class:`GroundTruth`), training a
  sparse autoencoder with the course's one loop (:func:`train_sae`), the activations of the zoo's language model
  (:func:`mlp_activations`) and feature dashboards (:func:`top_contexts`, :func:`dashboard`);
- :mod:`.reference`: the exercises' answers, generated from ``solutions/04_saes/04_saes.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

The sparse autoencoder itself is the course's shared one, :mod:`mechinterp_course.sae` (sae-lens's names:
``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``), which chapter 05 uses too.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import einops
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..backup.language import held_out_tokens, language_model
from ..sae import SAE, SAEConfig, best_cosines, evaluate, mmcs
from ..training import TrainConfig, TrainResult, train

__all__ = ["held_out_tokens", "language_model"]  # chapter 03's language model and its held-out text, reused

# --------------------------------------------------------------------------------------------------------------
# Section 1: toy models of superposition (Elhage et al. 2022)
# --------------------------------------------------------------------------------------------------------------


class ToyModel(nn.Module):
    """``n_instances`` independent toy models in one module: ``x' = ReLU(x W W^T + b)`` with ``W [n_features,
    d_hidden]`` per instance. One batched model trains a whole sweep (of sparsity, importance) in one loop, which on
    a CPU costs about as much as one instance."""

    def __init__(self, n_instances: int, n_features: int, d_hidden: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        W = torch.empty(n_instances, n_features, d_hidden)
        bound = math.sqrt(6 / (n_features + d_hidden))  # Xavier uniform, as the paper's released code
        W.uniform_(-bound, bound, generator=generator)
        self.W = nn.Parameter(W)  # [inst, n_features, d_hidden]
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, inst, n_features] -> [batch, inst, n_features]``."""
        # Instances as the batch of a matrix product (bmm), which a CPU runs faster than the equivalent einsum.
        by_instance = einops.rearrange(x, "batch inst feat -> inst batch feat")
        hidden = torch.bmm(by_instance, self.W)  # [inst, batch, hidden]
        out = torch.bmm(hidden, self.W.transpose(1, 2))  # [inst, batch, feat]
        return (einops.rearrange(out, "inst batch feat -> batch inst feat") + self.b_final).relu()


def toy_batch(feature_probability: Tensor, batch: int, generator: torch.Generator) -> Tensor:
    """``[batch, inst, n_features]``: each feature is 0 with probability ``1 - p``, else uniform on [0, 1] (the
    paper's data); ``feature_probability [inst, n_features]``."""
    # One uniform draw per entry: active when u < p, and then u / p is uniform on [0, 1].
    u = torch.rand(batch, *feature_probability.shape, generator=generator)
    return torch.where(u < feature_probability, u / feature_probability, 0.0)


#: The paper's released code trains with AdamW at lr 1e-3 on batches of 1,024 for 10,000 steps (secondary source;
#: published-results.md). At lr 1e-2 the chapter's models reach the same solutions in 1,000 steps, in seconds (at 1e-3
#: and 2,000 steps the densest pentagon had not yet dropped its three least important features: measured).
TOY_LR, TOY_BATCH = 1e-2, 1024


def train_toy(
    n_features: int,
    d_hidden: int,
    feature_probability: Tensor,
    importance: Tensor,
    steps: int = 3000,
    batch: int = TOY_BATCH,
    lr: float = TOY_LR,
    seed: int = 0,
    progress: bool = True,
) -> tuple[ToyModel, TrainResult]:
    """Train one :class:`ToyModel` per row of ``feature_probability [inst, n_features]`` (``importance`` is
    ``[n_features]`` or ``[inst, n_features]``) on the importance-weighted squared error, summed over instances so
    that each instance trains as if alone."""
    feature_probability = torch.as_tensor(feature_probability, dtype=torch.float32)
    n_instances = feature_probability.shape[0]
    importance = torch.as_tensor(importance, dtype=torch.float32).expand(n_instances, n_features)
    model = ToyModel(n_instances, n_features, d_hidden, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)

    def loss_fn(model: ToyModel, x: Tensor) -> Tensor:
        error = importance * (x - model(x)).pow(2)  # [batch, inst, feat]
        return einops.reduce(error, "batch inst feat -> inst", "mean").sum()

    config = TrainConfig(
        steps=steps,
        lr=lr,
        eval_every=max(1, steps // 10),
        progress=progress,
        threads=1,
        description=f"{n_instances} toy models",
    )
    result = train(model, lambda step: toy_batch(feature_probability, batch, generator), loss_fn, config)
    return model, result


#: Steps for the pentagon and the phase diagram.
TOY_STEPS = 1000
#: The sticky-dimensionality experiment, scaled down from the paper's 400 features in 30 dimensions so that it runs in
#: seconds (the fractions features stick at do not depend on the size).
STICKY = dict(n_features=60, d_hidden=12, instances=10, steps=1000, batch=256)
#: The phase diagram's grid (importance ratios x densities), and its batch: 256 samples a step give the regions of
#: 1,024 but for a few of the 100 cells (measured), at a third of the time.
PHASE_GRID, PHASE_BATCH = 10, 256
#: The fractions feature dimensionality sticks at in the paper's figure.
STICKY_FRACTIONS = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3)

#: How the phase diagram's small case (2 features, 1 hidden dimension) is read: a feature is represented when its
#: weight's length is at least this.
REPRESENTED_NORM = 0.5
PHASES = ("feature 2 not learned", "superposition", "feature 2 alone")


def phase(W: Tensor) -> list[str]:
    """``W [inst, 2, 1]`` -> per instance which of the paper's three regions it is in: feature 2 not represented;
    both represented (necessarily in superposition: one dimension, two features, antipodal); feature 2 alone."""
    norms = W.detach().norm(dim=-1)  # [inst, 2]
    out = []
    for first, second in (norms >= REPRESENTED_NORM).tolist():
        out.append(PHASES[0] if not second else PHASES[1] if first else PHASES[2])
    return out


# --------------------------------------------------------------------------------------------------------------
# Section 2: data with known sparse features (Sharkey, Braun & Millidge 2022)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """Synthetic activations ``x = sum_i c_i F_i`` from known unit-norm features ``features [n_features, d_in]``:
    feature ``i`` is active with probability ``probabilities[i]`` (decaying as ``decay**i``, scaled so that
    ``mean_active`` are active on average), with a coefficient uniform on [0, 1]."""

    features: Tensor  # [n_features, d_in]
    probabilities: Tensor  # [n_features]

    @property
    def d_in(self) -> int:
        return self.features.shape[1]

    def sample(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(x [batch, d_in], coefficients [batch, n_features])``."""
        # One uniform draw per entry gives both: active when u < p, and then u / p is uniform on [0, 1].
        u = torch.rand(batch, len(self.probabilities), generator=generator)
        rows, features = torch.nonzero(u < self.probabilities, as_tuple=True)
        values = u[rows, features] / self.probabilities[features]
        coefficients = torch.zeros_like(u).index_put_((rows, features), values)
        # x from the ~5 active features of each row only: a sparse sum, not a dense [batch, n_features] product.
        x = torch.zeros(batch, self.d_in).index_add_(0, rows, values[:, None] * self.features[features])
        return x, coefficients


#: Sharkey et al.'s data as public reimplementations set it (published-results.md): 256 dimensions, 512 features,
#: about 5 active per sample, activation probability decaying as 0.99^i. The chapter uses it at full size.
GT_D_IN, GT_FEATURES, GT_MEAN_ACTIVE, GT_DECAY = 256, 512, 5.0, 0.99
#: The features' seed: far from the small seeds SAEs are initialised with (an SAE drawn from the same seed would start
#: *at* the answer, since both draw unit-norm Gaussian rows).
GT_SEED = 2022


def ground_truth(
    d_in: int = GT_D_IN,
    n_features: int = GT_FEATURES,
    mean_active: float = GT_MEAN_ACTIVE,
    decay: float = GT_DECAY,
    seed: int = GT_SEED,
) -> GroundTruth:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d_in, generator=generator)
    features /= features.norm(dim=-1, keepdim=True)
    weights = decay ** torch.arange(n_features, dtype=torch.float32)
    return GroundTruth(features, (mean_active * weights / weights.sum()).clamp(max=1.0))


#: The chapter's three ground-truth SAEs: one budget for all (width 512, the truth's size). TopK's k is the truth's
#: mean L0; the ReLU and JumpReLU coefficients were chosen to land near it.
GT_TRAIN = dict(
    batch=256,
    steps=500,
    lr=3e-3,
    l1_coefficient=0.1,
    k=5,
    dead_after=256 * 50,
    l0_coefficient=0.01,
    bandwidth=0.05,
    initial_threshold=0.1,
)
#: Anthropic's resampling: the encoder of a resampled latent is its new direction times this times the mean length of
#: the live latents' encoders (Bricken et al. 2023); the chapter resamples every RESAMPLE_EVERY steps until
#: RESAMPLE_UNTIL (leaving the last steps to settle).
RESAMPLE_ENCODER_SCALE = 0.2
RESAMPLE_EVERY, RESAMPLE_UNTIL = 100, 400


# --------------------------------------------------------------------------------------------------------------
# Training a sparse autoencoder with the course's one loop
# --------------------------------------------------------------------------------------------------------------


def train_sae(
    config: SAEConfig,
    batch_fn,
    steps: int,
    lr: float = 1e-3,
    b_dec: Tensor | None = None,
    eval_x: Tensor | None = None,
    resample=None,
    progress: bool = True,
    description: str | None = None,
    threads: int | None = None,
) -> tuple[SAE, TrainResult]:
    """Train an :class:`~mechinterp_course.sae.SAE` with :func:`~mechinterp_course.training.train`: Adam (no weight
    decay), gradients clipped at norm 1 and decoder rows renormalised after each step (sae-lens's defaults), a
    learning rate falling to 10% at the end. ``batch_fn(step) -> x [batch, d_in]``; ``b_dec`` initialises the
    decoder bias (the data's mean, or its geometric median as Gao et al.); ``eval_x`` is evaluated every log row
    (L0, explained variance, dead fraction); ``resample(step, sae, optimizer)`` may resample dead latents."""
    sae = SAE(config)
    if b_dec is not None:
        with torch.no_grad():
            sae.b_dec.copy_(b_dec)

    def after_step(step: int, sae: SAE, optimizer) -> None:
        if config.architecture != "jumprelu":
            sae.normalise_decoder()
        if resample is not None:
            resample(step, sae, optimizer)

    train_config = TrainConfig(
        steps=steps,
        lr=lr,
        decay_to=0.1,
        eval_every=max(1, steps // 10),
        grad_clip=1.0,
        progress=progress,
        description=description or f"{config.architecture} SAE",
        threads=threads,
    )
    eval_fn = (
        (lambda sae: {k: v for k, v in evaluate(sae, eval_x).items() if k != "dense_fraction"})
        if (eval_x is not None)
        else None
    )
    result = train(
        sae, batch_fn, lambda sae, x: sae.loss(x)["loss"], train_config, eval_fn=eval_fn, after_step=after_step
    )
    return sae, result


# --------------------------------------------------------------------------------------------------------------
# Sharkey et al.'s sweep, shipped: dictionary size x L1 coefficient on the ground-truth data
# --------------------------------------------------------------------------------------------------------------

#: Dictionary sizes (the truth has 512 features) and L1 coefficients of the sweep, and how each SAE is trained.
SWEEP_SIZES = (128, 256, 512, 768, 1024)
SWEEP_L1 = (0.03, 0.1, 0.3)
SWEEP_TRAIN = dict(steps=1500, batch=1024, lr=3e-3, seed=0)
#: Where the sweep's results ship (made by :func:`write_sweep`; its card says how and how long it took).
SWEEP_FILE = Path(__file__).with_name("sharkey_sweep.json")
#: Samples the sweep's metrics are measured on (fresh, from a seed no training batch uses).
SWEEP_EVAL = dict(batch=8192, seed=999_983)


def sharkey_sweep(progress: bool = True, steps: int | None = None) -> dict:
    """Train a ReLU SAE for every size in :data:`SWEEP_SIZES` and coefficient in :data:`SWEEP_L1` on
    :func:`ground_truth` data (one thread, deterministic), and measure each: MMCS with the true features, L0,
    explained variance, dead fraction; and, as Sharkey et al. did to find the right size *without* ground truth, the
    MMCS of each dictionary with the next larger one trained with the same coefficient."""
    import platform
    import time

    gt = ground_truth()
    x_eval, _ = gt.sample(SWEEP_EVAL["batch"], torch.Generator().manual_seed(SWEEP_EVAL["seed"]))
    steps = steps or SWEEP_TRAIN["steps"]
    runs, decoders = [], {}
    start = time.perf_counter()
    for l1 in SWEEP_L1:
        for size in SWEEP_SIZES:
            generator = torch.Generator().manual_seed(SWEEP_TRAIN["seed"])
            config = SAEConfig(
                d_in=gt.d_in, d_sae=size, architecture="relu", l1_coefficient=l1, seed=SWEEP_TRAIN["seed"]
            )
            sae, result = train_sae(
                config,
                lambda step, generator=generator: gt.sample(SWEEP_TRAIN["batch"], generator)[0],
                steps,
                lr=SWEEP_TRAIN["lr"],
                progress=progress,
                description=f"size {size}, l1 {l1}",
                threads=1,
            )
            decoders[(l1, size)] = sae.W_dec.detach()
            metrics = evaluate(sae, x_eval)
            runs.append(
                {
                    "d_sae": size,
                    "l1_coefficient": l1,
                    "mmcs_true": round(mmcs(sae.W_dec.detach(), gt.features), 4),
                    "seconds": round(result.seconds, 1),
                    **{k: round(v, 4) for k, v in metrics.items()},
                }
            )
    for run in runs:
        bigger = [s for s in SWEEP_SIZES if s > run["d_sae"]]
        if bigger:
            run["mmcs_with_next_size"] = round(
                mmcs(decoders[(run["l1_coefficient"], bigger[0])], decoders[(run["l1_coefficient"], run["d_sae"])]), 4
            )
    return {
        "description": "ReLU SAEs (L1 weighted by decoder norms) on Sharkey et al.'s synthetic data: "
        f"{gt.d_in} dimensions, {len(gt.features)} features, {GT_MEAN_ACTIVE} active on average, probability "
        f"decaying as {GT_DECAY}^i",
        "train": dict(SWEEP_TRAIN, steps=steps),
        "eval": SWEEP_EVAL,
        "made_by": "python -c 'from mechinterp_course import saes; saes.write_sweep()'",
        "trained_on": f"{platform.machine()}, 1 thread, torch {torch.__version__}",
        "train_seconds": round(time.perf_counter() - start, 1),
        "runs": runs,
    }


def write_sweep(progress: bool = True) -> Path:
    SWEEP_FILE.write_text(json.dumps(sharkey_sweep(progress=progress), indent=2) + "\n")
    return SWEEP_FILE


def load_sweep() -> dict:
    """The shipped sweep (:func:`sharkey_sweep`)."""
    return json.loads(SWEEP_FILE.read_text())


# --------------------------------------------------------------------------------------------------------------
# Section 1's figures and the paper-vs-course table
# --------------------------------------------------------------------------------------------------------------


def directions_figure(W: Tensor, titles: list[str]) -> go.Figure:
    """One panel per instance of a model with 2 hidden dimensions: each feature's ``W_i`` as a line from the
    origin (the paper's pentagon figure)."""
    W = W.detach()
    if W.shape[-1] != 2:
        raise ValueError(f"directions_figure draws models with 2 hidden dimensions, not {W.shape[-1]}")
    fig = make_subplots(rows=1, cols=len(W), subplot_titles=titles)
    for inst, rows in enumerate(W):
        for feature, (a, b) in enumerate(rows.tolist()):
            fig.add_trace(
                go.Scatter(
                    x=[0, a],
                    y=[0, b],
                    mode="lines+markers",
                    name=f"feature {feature}",
                    legendgroup=f"feature {feature}",
                    showlegend=inst == 0,
                    line=dict(color=f"hsl({feature * 360 // len(rows)}, 70%, 45%)"),
                ),
                row=1,
                col=inst + 1,
            )
    fig.update_xaxes(range=[-1.5, 1.5], showticklabels=False)
    fig.update_yaxes(range=[-1.5, 1.5], showticklabels=False, scaleanchor="x")
    fig.update_layout(height=300, title="where each feature lives in the 2 hidden dimensions, dense to sparse")
    return fig


def dimensionality_figure(dims: Tensor, W: Tensor, density: Tensor) -> go.Figure:
    """Every feature's dimensionality against ``1 / density`` (log axis), with the paper's sticky fractions dotted
    and the hidden size divided by the total of ``||W_i||^2`` (dimensions per feature) as a line."""
    dims, W = dims.detach(), W.detach()
    fig = go.Figure()
    x = (1 / density).tolist()
    for inst, xi in enumerate(x):
        fig.add_trace(
            go.Scatter(
                x=[xi] * dims.shape[1],
                y=dims[inst].tolist(),
                mode="markers",
                marker=dict(size=5, color="#2166ac", opacity=0.5),
                showlegend=inst == 0,
                name="one feature",
                hovertemplate="1/density %{x:.3g}: D = %{y:.3f}<extra></extra>",
            )
        )
    per_feature = W.shape[-1] / W.pow(2).sum((-2, -1))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=per_feature.tolist(),
            mode="lines",
            name="dimensions per feature (m / ||W||_F^2)",
            line=dict(color="black"),
        )
    )
    for value in STICKY_FRACTIONS:
        fig.add_hline(y=value, line=dict(dash="dot", color="grey", width=1))
    fig.update_xaxes(type="log", title="1 / density (sparser to the right)")
    fig.update_yaxes(title="feature dimensionality D_i", range=[0, 1.1])
    fig.update_layout(title="features stick at simple fractions of a dimension", height=400)
    return fig


def phase_figure(regions: list[str], importance: Tensor, density: Tensor) -> go.Figure:
    """The three regions of the 2-features-in-1-dimension case over importance ratio x density."""
    n = len(importance)
    codes = torch.tensor([PHASES.index(r) for r in regions]).reshape(len(density), n)
    fig = go.Figure(
        go.Heatmap(
            z=codes.tolist(),
            x=[f"{v:.2g}" for v in importance.tolist()],
            y=[f"{v:.2g}" for v in density.tolist()],
            colorscale=[
                [0, "#f7f7f7"],
                [0.33, "#f7f7f7"],
                [0.34, "#b2182b"],
                [0.66, "#b2182b"],
                [0.67, "#2166ac"],
                [1, "#2166ac"],
            ],
            zmin=0,
            zmax=2,
            text=[[regions[i * n + j] for j in range(n)] for i in range(len(density))],
            hovertemplate="importance ratio %{x}, density %{y}: %{text}<extra></extra>",
            colorbar=dict(tickvals=[0.33, 1, 1.67], ticktext=list(PHASES)),
        )
    )
    fig.update_xaxes(title="importance of feature 2 relative to feature 1")
    fig.update_yaxes(title="feature density (1 - S)")
    fig.update_layout(title="2 features, 1 dimension: who gets it", height=420)
    return fig


def toy_comparison(
    dims: Tensor, sticky_dims: Tensor, sticky_W: Tensor, regions: list[str], importance: Tensor, density: Tensor
) -> pd.DataFrame:
    """The paper's findings beside what the chapter's models show, each computed from them."""
    sparsest = dims[-1]
    represented = sticky_W.detach().norm(dim=-1) >= REPRESENTED_NORM
    values = sticky_dims.detach()[represented]
    near = lambda v: float(((values - v).abs() < 0.03).float().mean()) if len(values) else 0.0  # noqa: E731
    n = len(importance)
    grid = [regions[i * n : (i + 1) * n] for i in range(len(density))]
    sparse_superposed = sum(row.count(PHASES[1]) for row in grid[len(density) // 2 :])
    dense_superposed = sum(row.count(PHASES[1]) for row in grid[: len(density) // 3])
    rows = [
        (
            "5 features in 2 dimensions, sparse: a pentagon (every D = 2/5)",
            f"D = {', '.join(f'{v:.2f}' for v in sparsest.tolist())}",
        ),
        (
            "dense features: the model keeps the m = 2 most important, D = 1 each, and drops the rest",
            f"D = {', '.join(f'{v:.2f}' for v in dims[0].tolist())}",
        ),
        (
            "feature dimensionality sticks at 1 and 1/2 (and 2/3, 2/5, 3/8: the lines are visible)",
            f"{near(1.0):.0%} of represented features within 0.03 of 1, {near(0.5):.0%} of 1/2, "
            f"{near(2 / 3) + near(0.4) + near(0.375):.0%} of 2/3, 2/5 or 3/8",
        ),
        (
            "phase diagram: superposition only when features are sparse",
            f"superposition in {sparse_superposed} of the {n * (len(density) - len(density) // 2)} sparser cells, "
            f"{dense_superposed} of the {n * (len(density) // 3)} densest",
        ),
        (
            "phase diagram: an unimportant feature 2 is not learned, a much more important one takes the dimension",
            f"importance {importance[0]:.2g}: {grid[0][0]}; importance {importance[-1]:.2g}: {grid[0][-1]} (densest)",
        ),
    ]
    return pd.DataFrame(rows, columns=["Elhage et al. 2022", "this chapter's models"])


# --------------------------------------------------------------------------------------------------------------
# Section 2's tools: resampling in the loop, figures of recovery and of the sweep
# --------------------------------------------------------------------------------------------------------------


def resampler(fn, batch_fn, every: int = RESAMPLE_EVERY, until: int = RESAMPLE_UNTIL, seed: int = 0):
    """An ``after_step`` for :func:`train_sae` that resamples dead latents with ``fn`` (the student's
    ``resample_dead_latents``) every ``every`` steps up to ``until``: the latents that never fire on a fresh batch
    ``batch_fn() -> x [n, d_in]`` are dead; each input's loss is its squared reconstruction error; the new weights
    are copied in and the optimiser's moments of the resampled weights reset (Bricken et al. 2023)."""
    generator = torch.Generator().manual_seed(seed)

    def resample(step: int, sae: SAE, optimizer) -> None:
        if (step + 1) % every or step + 1 > until:
            return
        x = batch_fn()
        f = sae.encode(x)
        dead = (f > 0).sum(0) == 0
        if not dead.any():
            return
        losses = (sae.decode(f) - x).pow(2).sum(-1)
        W_enc, b_enc, W_dec = fn(
            x,
            losses,
            sae.W_enc.detach(),
            sae.b_enc.detach(),
            sae.W_dec.detach(),
            sae.b_dec.detach(),
            dead,
            RESAMPLE_ENCODER_SCALE,
            generator,
        )
        for param, new, rows in (
            (sae.W_enc, W_enc, (slice(None), dead)),
            (sae.b_enc, b_enc, (dead,)),
            (sae.W_dec, W_dec, (dead,)),
        ):
            param.copy_(new)
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in optimizer.state.get(param, {}):
                    optimizer.state[param][moment][rows] = 0.0

    return resample


def recovery_figure(decoders: dict[str, Tensor], truth: GroundTruth) -> go.Figure:
    """Each true feature's best cosine with each SAE's dictionary, against how often the feature is active: rare
    features are the hard ones."""
    fig = go.Figure()
    for name, W_dec in decoders.items():
        fig.add_trace(
            go.Scatter(
                x=truth.probabilities.tolist(),
                y=best_cosines(W_dec.detach(), truth.features).tolist(),
                mode="markers",
                name=name,
                marker=dict(size=4, opacity=0.6),
            )
        )
    fig.update_xaxes(type="log", title="how often the true feature is active")
    fig.update_yaxes(title="best cosine with a learned decoder row", range=[0, 1.02])
    fig.update_layout(title="which true features each SAE found", height=400)
    return fig


def sweep_figure(sweep: dict) -> go.Figure:
    """Sharkey et al.'s two views of the sweep: MMCS with the truth, and with the next larger dictionary."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["MMCS with the 512 true features", "MMCS with the next larger dictionary (no truth needed)"],
    )
    for l1 in sorted({r["l1_coefficient"] for r in sweep["runs"]}):
        runs = sorted((r for r in sweep["runs"] if r["l1_coefficient"] == l1), key=lambda r: r["d_sae"])
        colour = f"hsl({int(200 * math.log10(l1 / 0.005)) % 360}, 65%, 40%)"
        fig.add_trace(
            go.Scatter(
                x=[r["d_sae"] for r in runs],
                y=[r["mmcs_true"] for r in runs],
                name=f"L1 {l1}",
                mode="lines+markers",
                line=dict(color=colour),
            ),
            row=1,
            col=1,
        )
        nxt = [r for r in runs if "mmcs_with_next_size" in r]
        fig.add_trace(
            go.Scatter(
                x=[r["d_sae"] for r in nxt],
                y=[r["mmcs_with_next_size"] for r in nxt],
                name=f"L1 {l1}",
                showlegend=False,
                mode="lines+markers",
                line=dict(color=colour),
            ),
            row=1,
            col=2,
        )
    for col in (1, 2):
        fig.add_vline(x=GT_FEATURES, line=dict(dash="dot", color="grey"), row=1, col=col)
        fig.update_xaxes(type="log", title="dictionary size d_sae", row=1, col=col)
    fig.update_layout(height=380, title="dictionary size x L1 coefficient (dotted: the true number of features)")
    return fig


# --------------------------------------------------------------------------------------------------------------
# Section 3: an SAE on the zoo's language model
# --------------------------------------------------------------------------------------------------------------

#: The language-model SAE the chapter trains: on the last MLP of stdlib-2l (d_mlp 512), 2 latents per neuron,
#: TopK with k = 16, on 65k held-out tokens; evaluated on the next 16k. Measured on one machine, 500 steps: 1,024
#: latents train in 12 s to explained variance 0.674 with 0.1% dead; 2,048 took 21 s for 0.686 with 3.6% dead.
LM_SAE = dict(
    layer=1, train_rows=256, eval_rows=64, d_sae=1024, k=16, steps=500, batch=512, lr=1e-3, dead_after=512 * 100
)


def mlp_activations(model, tokens: Tensor, layer: int, chunk: int = 32) -> Tensor:
    """``tokens [rows, pos] -> [rows * pos, d_mlp]``: ``blocks.{layer}.mlp.hook_post`` over every position."""
    name = f"blocks.{layer}.mlp.hook_post"
    out = []
    with torch.no_grad():
        for rows in tokens.split(chunk):
            _, cache = model.run_with_cache(rows, names_filter=name)
            out.append(einops.rearrange(cache[name], "rows pos d_mlp -> (rows pos) d_mlp"))
    return torch.cat(out)


def density_figure(sae: SAE, acts: Tensor) -> go.Figure:
    """The histogram of the latents' densities (fraction of tokens each is active on), log scale, with the dead
    ones counted in the title: the standard first look at a trained SAE."""
    density = (sae.encode(acts) > 0).float().mean(0)
    dead = int((density == 0).sum())
    fig = go.Figure(go.Histogram(x=density[density > 0].log10().tolist(), nbinsx=50, marker_color="#2166ac"))
    fig.update_xaxes(title="log10 of the fraction of tokens the latent is active on")
    fig.update_yaxes(title="latents")
    fig.update_layout(
        title=f"feature density: {dead} of {len(density)} latents dead on {len(acts):,} tokens", height=350
    )
    return fig


#: Latents the dashboards show: active on at least 1 in 500 tokens and at most 1 in 20 (rarer ones have too few
#: examples to judge; denser ones are rarely one thing).
SHOW_DENSITY = (0.002, 0.05)


def interesting_latents(latents: Tensor, n: int = 4) -> list[int]:
    """``latents [rows, pos, d_sae]`` -> ``n`` latents in :data:`SHOW_DENSITY`, the ones with the largest mean
    activation when active (sharp ones)."""
    flat = latents.reshape(-1, latents.shape[-1])
    active = flat > 0
    density = active.float().mean(0)
    mean_active = flat.sum(0) / active.sum(0).clamp_min(1)
    score = torch.where((density >= SHOW_DENSITY[0]) & (density <= SHOW_DENSITY[1]), mean_active, -1.0)
    return score.topk(n).indices.tolist()


def _token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([int(token)]).replace("\n", "\u23ce").replace("\t", "\u21e5")


def top_contexts(latent_acts: Tensor, k: int) -> list[tuple[float, int, int]]:
    """``latent_acts [rows, pos]`` -> the ``k`` largest activations as ``(value, row, pos)``."""
    values, flat = latent_acts.reshape(-1).topk(k)
    return [(float(v), int(i) // latent_acts.shape[1], int(i) % latent_acts.shape[1]) for v, i in zip(values, flat)]


def dashboard(
    latent: int,
    latents: Tensor,
    tokens: Tensor,
    tokenizer,
    logit_effects: Tensor,
    k: int = 6,
    before: int = 14,
    after: int = 3,
):
    """A feature dashboard as HTML: density, the top ``k`` contexts (tokens shaded by the latent's activation, the
    top token boxed), a histogram of the nonzero activations, and the tokens the latent promotes and suppresses
    through the weights (``logit_effects [d_sae, d_vocab]``)."""
    from IPython.display import HTML

    acts = latents[..., latent]  # [rows, pos]
    top = acts.max().clamp_min(1e-8)
    nonzero = acts[acts > 0]
    rows_html = []
    for value, row, pos in top_contexts(acts, k):
        pieces = []
        for p in range(max(0, pos - before), min(tokens.shape[1], pos + after + 1)):
            shade = float(acts[row, p] / top)
            border = "border:1px solid #b2182b;" if p == pos else ""
            pieces.append(
                f'<span style="background:rgba(178,24,43,{shade:.2f});{border}white-space:pre">'
                f"{html.escape(_token_text(tokenizer, tokens[row, p]))}</span>"
            )
        rows_html.append(f"<div style='font-family:monospace'><b>{value:.2f}</b>&nbsp; {''.join(pieces)}</div>")
    counts = torch.histc(nonzero, bins=20, min=0, max=float(top)) if len(nonzero) else torch.zeros(20)
    bars = "".join(
        f'<span title="{int(c)}" style="display:inline-block;width:8px;margin-right:1px;background:#2166ac;'
        f'height:{int(60 * c / counts.max().clamp_min(1))}px"></span>'
        for c in counts
    )
    effects = logit_effects[latent]
    promoted = ", ".join(f"<code>{html.escape(_token_text(tokenizer, t))}</code>" for t in effects.topk(8).indices)
    suppressed = ", ".join(f"<code>{html.escape(_token_text(tokenizer, t))}</code>" for t in (-effects).topk(8).indices)
    return HTML(
        f"<div style='border:1px solid #ccc;padding:8px;margin:6px 0'><b>latent {latent}</b>: active on "
        f"{float((acts > 0).float().mean()):.2%} of tokens, max {float(top):.2f}<br>"
        f"<div style='display:flex;align-items:flex-end;height:64px'>{bars}</div>"
        f"<small>histogram of its nonzero activations (0 to max)</small><br>{''.join(rows_html)}"
        f"<div>promotes: {promoted}</div><div>suppresses: {suppressed}</div></div>"
    )


def ablate_latent(
    model, sae: SAE, tokens: Tensor, layer: int, latent: int, logit_effect: Tensor, top: int = 10
) -> dict[str, float]:
    """Remove latent ``latent``'s contribution ``f_i W_dec[i]`` from ``blocks.{layer}.mlp.hook_post`` wherever it
    fires, and measure the change in the mean log-probability of the ``top`` tokens it promotes (by
    ``logit_effect [d_vocab]``), where it fires and elsewhere, and in the next-token loss where it fires."""
    name = f"blocks.{layer}.mlp.hook_post"
    promoted = logit_effect.topk(top).indices
    fired = {}

    def remove(activation, hook):
        f = sae.encode(activation)[..., latent]  # [rows, pos]
        fired["mask"] = f > 0
        return activation - f[..., None] * sae.W_dec[latent]

    with torch.no_grad():
        clean = model(tokens).log_softmax(-1)
        ablated = model.run_with_hooks(tokens, fwd_hooks=[(name, remove)]).log_softmax(-1)
    mask = fired["mask"]
    change = (ablated[..., promoted] - clean[..., promoted]).mean(-1)  # [rows, pos]
    next_tokens = tokens[:, 1:, None]
    loss_change = -(ablated[:, :-1].gather(-1, next_tokens) - clean[:, :-1].gather(-1, next_tokens))[..., 0]
    return {
        "tokens where it fires": int(mask.sum()),
        "change in log p(promoted tokens), where it fires": float(change[mask].mean()),
        "change in log p(promoted tokens), elsewhere": float(change[~mask].mean()),
        "change in next-token loss, where it fires": float(loss_change[mask[:, :-1]].mean()),
    }


# --------------------------------------------------------------------------------------------------------------
# Section 4: sparse coding from before SAEs, measured
# --------------------------------------------------------------------------------------------------------------

#: The student's ``sparse_code`` must beat the one-shot encoder with the same dictionary and L0 by this much, both in
#: explained variance and in the F1 of the true active features (at l0 below the truth's L0 no method explains all).
CODE_MARGIN = 0.02


def one_shot_codes(x: Tensor, dictionary: Tensor, l0: int) -> Tensor:
    """``[n, n_atoms]``: a TopK encoder whose weights are the dictionary itself (the best one-shot encoder for it):
    the ``l0`` largest correlations, kept as they are."""
    values, indices = (x @ dictionary.T).topk(l0, dim=-1)
    return torch.zeros(len(x), len(dictionary)).scatter(-1, indices, values.relu())


def support_f1(predicted: Tensor, truth: Tensor) -> float:
    """F1 of two supports (bool ``[n, n_features]``): how well a code finds the features really active."""
    hits = float((predicted & truth).sum())
    return 2 * hits / max(1.0, float(predicted.sum() + truth.sum()))


def explained_variance(x: Tensor, x_hat: Tensor) -> float:
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def coding_comparison(
    codes: dict[str, Tensor], x: Tensor, coefficients: Tensor, features: Tensor, trained: dict[str, SAE] | None = None
) -> pd.DataFrame:
    """L0, explained variance and support F1 (against the true active features) of codes over the true dictionary,
    and of trained SAEs (their latents mapped to the true feature each decoder row is closest to, when the cosine
    is at least 0.9)."""
    truth = coefficients > 0
    rows = {}
    for name, c in codes.items():
        rows[name] = {
            "L0": float((c != 0).sum(-1).float().mean()),
            "explained variance": explained_variance(x, c @ features),
            "support F1": support_f1(c != 0, truth),
        }
    for name, sae in (trained or {}).items():
        f = sae.encode(x)
        cosines = (sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)) @ features.T  # [d_sae, n_true]
        best, match = cosines.max(-1)
        mapped = torch.zeros_like(truth)
        rows_, latents = torch.nonzero((f > 0) & (best >= 0.9), as_tuple=True)
        mapped[rows_, match[latents]] = True
        rows[name] = {
            "L0": float((f > 0).sum(-1).float().mean()),
            "explained variance": explained_variance(x, sae.decode(f)),
            "support F1": support_f1(mapped, truth),
        }
    return pd.DataFrame(rows).T.round(3)
