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
import torch
from torch import Tensor, nn

from .. import models, text
from ..sae import SAE, SAEConfig, evaluate, mmcs
from ..training import TrainConfig, TrainResult, train

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
        hidden = einops.einsum(x, self.W, "batch inst feat, inst feat hidden -> batch inst hidden")
        out = einops.einsum(hidden, self.W, "batch inst hidden, inst feat hidden -> batch inst feat")
        return (out + self.b_final).relu()


def toy_batch(feature_probability: Tensor, batch: int, generator: torch.Generator) -> Tensor:
    """``[batch, inst, n_features]``: each feature is 0 with probability ``1 - p``, else uniform on [0, 1] (the
    paper's data); ``feature_probability [inst, n_features]``."""
    shape = (batch, *feature_probability.shape)
    values = torch.rand(shape, generator=generator)
    return values * (torch.rand(shape, generator=generator) < feature_probability)


#: The paper's released training set-up (secondary source; published-results.md), with fewer steps where the
#: chapter's figures do not change (each call says).
TOY_LR, TOY_BATCH = 1e-3, 1024


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
        active = torch.rand(batch, len(self.probabilities), generator=generator) < self.probabilities
        coefficients = torch.rand(active.shape, generator=generator) * active
        return coefficients @ self.features, coefficients


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
SWEEP_L1 = (0.01, 0.03, 0.1)
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
