"""The course's one training loop: AdamW, optional linear warm-up, a progress bar, evaluation, snapshots and early
stopping. The zoo recipes and every chapter's in-notebook training use it, so every curve in the course is logged
by one rule:

- a row is logged every ``eval_every`` steps and after the last step, *after* that step's update;
- ``row["train_loss"]`` is the loss of the step's batch as the step computed it (before its update), unless
  ``eval_fn`` measures ``train_loss`` itself, on the updated weights (full-batch setups do, so that train and test
  are measured on the same weights);
- ``callback(step, row)`` sees every row (a notebook redraws a live plot with it) and stops training by returning
  ``True``.

In a notebook ``tqdm.auto`` draws a notebook progress bar; training that stops early closes it at 100%.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps
    decay_to: float | None = None  # after warm-up, cosine decay of the learning rate to lr * decay_to at the end
    eval_every: int = 100
    snapshot_every: int | None = None  # keep a copy of the weights every this many steps (and after the last)
    grad_clip: float | None = None
    progress: bool = True
    description: str = "training"
    threads: int | None = None  # torch threads while training (tiny full-batch steps are fastest on one)


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)  # one row per evaluation: {"step": ..., "train_loss": ..., ...}
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # step -> state_dict copy
    seconds: float = 0.0
    stopped_at: int | None = None  # the step a callback stopped training at (None: it ran every step)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one logged metric, for plotting."""
        rows = [row for row in self.log if key in row]
        return [row["step"] for row in rows], [row[key] for row in rows]


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning rate at ``step`` as a fraction of ``config.lr``: linear warm-up, then constant or a cosine decay
    to ``decay_to`` (language models train better when the rate falls at the end; the small algorithmic models do
    not need it)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.decay_to is None:
        return 1.0
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.decay_to + (1 - config.decay_to) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    model: torch.nn.Module,
    batch_fn: Callable[[int], object],
    loss_fn: Callable[[torch.nn.Module, object], Tensor],
    config: TrainConfig,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    callback: Callable[[int, dict], bool | None] | None = None,
    after_step: Callable[[int, torch.nn.Module, torch.optim.Optimizer], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place (module docstring for the logging rule).

    - ``batch_fn(step)`` returns the batch for a step (deterministic given the step, so runs are reproducible);
    - ``loss_fn(model, batch)`` returns the scalar loss to minimise (a regulariser included);
    - ``eval_fn(model)`` returns metrics, called under ``no_grad`` on every logged step;
    - ``callback(step, row)`` sees every logged row and returns True to stop;
    - ``after_step(step, model, optimizer)`` runs after every optimiser step, before logging, without gradients (a
      sparse autoencoder puts its decoder rows back on the unit sphere there, and resamples dead latents, resetting
      their optimiser state).
    """
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    scheduler = None
    if config.warmup_steps or config.decay_to is not None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    result = TrainResult()
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc=config.description, disable=not config.progress, mininterval=0.5)
    try:
        for step in bar:
            model.train()
            with torch.enable_grad():  # notebooks that analyse a trained model switch gradients off globally
                loss = loss_fn(model, batch_fn(step))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(step, model, optimizer)

            last = step == config.steps - 1
            stop = False
            if step % config.eval_every == 0 or last:
                row = {"step": step, "train_loss": float(loss.detach())}
                if eval_fn is not None:
                    model.eval()
                    with torch.no_grad():
                        row.update({k: float(v) for k, v in eval_fn(model).items()})
                result.log.append(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
                if callback is not None:
                    stop = bool(callback(step, row))
            if config.snapshot_every and (step % config.snapshot_every == 0 or last or stop):
                result.snapshots[step] = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
            if stop:
                result.stopped_at = step
                bar.total = bar.n = step + 1  # finished early: a full bar, not one stuck part-way
                bar.set_description(f"{config.description} (stopped at step {step})")
                bar.refresh()
                break
    finally:
        bar.close()
        torch.set_num_threads(threads)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
