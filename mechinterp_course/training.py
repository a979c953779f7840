"""A small, readable training loop: AdamW, optional linear warm-up, a tqdm progress bar, periodic evaluation and
snapshots. Used by the zoo recipes and directly by notebooks (where ``tqdm.auto`` draws a notebook progress bar).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    eval_every: int = 100
    snapshot_every: int | None = None
    grad_clip: float | None = None
    progress: bool = True
    description: str = "training"


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)  # one row per evaluation: {"step": ..., "train_loss": ..., ...}
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # step -> state_dict copy
    seconds: float = 0.0

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one logged metric, for plotting."""
        rows = [row for row in self.log if key in row]
        return [row["step"] for row in rows], [row[key] for row in rows]


def train(
    model: torch.nn.Module,
    batch_fn: Callable[[int], object],
    loss_fn: Callable[[torch.nn.Module, object], Tensor],
    config: TrainConfig,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    - ``batch_fn(step)`` returns the batch for a step (deterministic given the step, so runs are reproducible);
    - ``loss_fn(model, batch)`` returns a scalar loss;
    - ``eval_fn(model)`` returns metrics, called every ``eval_every`` steps and after the last step, under ``no_grad``;
    - ``callback(step, row)`` sees every logged row (a notebook uses it to redraw a live plot).
    """
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    scheduler = None
    if config.warmup_steps:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps)
        )
    result = TrainResult()
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc=config.description, disable=not config.progress, mininterval=0.5)
    for step in bar:
        model.train()
        loss = loss_fn(model, batch_fn(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

        last = step == config.steps - 1
        if step % config.eval_every == 0 or last:
            row = {"step": step, "train_loss": float(loss.detach())}
            if eval_fn is not None:
                model.eval()
                with torch.no_grad():
                    row.update({k: float(v) for k, v in eval_fn(model).items()})
            result.log.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
            if callback is not None:
                callback(step, row)
        if config.snapshot_every and (step % config.snapshot_every == 0 or last):
            result.snapshots[step] = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
