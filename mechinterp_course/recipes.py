"""Zoo recipes: how every shipped model was trained, so that ``mechinterp-course train NAME`` rebuilds it.

A recipe is a function ``(seed, progress) -> (model, card)``. It must be deterministic for a given seed on a given
machine (same thread count), quick enough to re-run, and it records in the card the metrics it measured at the end of
training, which a test re-measures from the shipped checkpoint.
"""

from __future__ import annotations

import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F

from . import models, tasks
from .training import TrainConfig, train

RECIPES: dict[str, Callable] = {}


def recipe(name: str):
    def register(fn):
        RECIPES[name] = fn
        return fn

    return register


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]``."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


# --------------------------------------------------------------------------------------------------------------
# induction-2l: the "Circuits" chapter's model
# --------------------------------------------------------------------------------------------------------------

INDUCTION_CONFIG = models.ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=128, n_ctx=64)
INDUCTION_TRAIN = dict(batch=64, seq_len=64, min_period=6, max_period=32, steps=1000, lr=3e-3, weight_decay=0.0)
#: Evaluation convention for induction (Olsson et al.; TransformerLens demos): BOS + N random tokens repeated twice.
INDUCTION_EVAL = dict(batch=64, half_len=30, seed=12345)


def induction_metrics(model) -> dict[str, float]:
    """The numbers an induction model's card records; re-measured by the tests from the shipped checkpoint."""
    from . import circuits

    d_vocab, half_len = model.cfg.d_vocab, INDUCTION_EVAL["half_len"]
    tokens = tasks.repeated_tokens(INDUCTION_EVAL["batch"], half_len, d_vocab, seed=INDUCTION_EVAL["seed"])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    losses = circuits.per_token_loss(logits, tokens)  # [batch, pos - 1]
    scores = circuits.all_head_scores(cache, model.cfg.n_layers, circuits.induction_scores, half_len=half_len)
    prev = circuits.all_head_scores(cache, model.cfg.n_layers, circuits.previous_token_scores)
    return {
        "repeated_first_half_loss": float(losses[:, :half_len].mean()),
        "repeated_second_half_loss": float(losses[:, half_len + 1 :].mean()),
        "max_induction_score": float(scores.max()),
        "n_induction_heads": int((scores > circuits.INDUCTION_THRESHOLD).sum()),
        "max_previous_token_score": float(prev.max()),
    }


@recipe("induction-2l")
def train_induction_2l(seed: int = 0, progress: bool = True, steps: int | None = None):
    """2-layer attention-only transformer on tiled random spans: induction heads form after a few hundred steps.

    ``steps`` shortens the run (tests use it to check determinism cheaply); the zoo model uses the recipe's own.
    """
    spec = dict(INDUCTION_TRAIN, steps=steps or INDUCTION_TRAIN["steps"])
    model = models.make_model(INDUCTION_CONFIG, seed=seed)

    def batch_fn(step: int) -> torch.Tensor:
        # Data seeds are offset from the model seed so that data and weights never share a random stream.
        return tasks.periodic_tokens(
            spec["batch"], spec["seq_len"], INDUCTION_CONFIG.d_vocab, spec["min_period"], spec["max_period"],
            seed=1_000_003 * (seed + 1) + step,
        )

    result = train(
        model,
        batch_fn,
        lambda m, tokens: next_token_loss(m(tokens), tokens),
        TrainConfig(steps=spec["steps"], lr=spec["lr"], weight_decay=spec["weight_decay"], eval_every=100,
                    progress=progress, description="induction-2l"),
        eval_fn=lambda m: {"max_induction_score": induction_metrics(m)["max_induction_score"]},
    )
    card = {
        "recipe": "induction-2l",
        "description": "2-layer attention-only transformer trained on random spans tiled to length 64; "
                       "token 0 is BOS. Forms a previous-token head (layer 0) and induction heads (layer 1).",
        "config": models.config_dict(INDUCTION_CONFIG),
        "seed": seed,
        "training": dict(spec, optimizer="AdamW", data="tasks.periodic_tokens"),
        "train_seconds": round(result.seconds, 1),
        "trained_on": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "metrics": induction_metrics(model),
        "log": result.log,
    }
    return model, card


def build(name: str, seed: int = 0, progress: bool = True, zoo_dir=None, **overrides):
    """Run a recipe and write its model and card into the zoo (``zoo_dir`` defaults to the package's own)."""
    if name not in RECIPES:
        raise KeyError(f"No recipe called {name!r}. Recipes: {', '.join(sorted(RECIPES))}.")
    start = time.perf_counter()
    model, card = RECIPES[name](seed=seed, progress=progress, **overrides)
    models.save(model, name, card, zoo_dir=zoo_dir)
    return model, card, time.perf_counter() - start
