"""Chapter 00's lab: the 8x8 digits, a small CNN trained on them by the course's one training loop, and the units
whose activations the chapter visualises.

- :func:`load_digits_data`: the 1,797 images of scikit-learn's ``load_digits`` (shipped inside scikit-learn: nothing
  is downloaded), split and standardised;
- :class:`DigitsCNN`: two convolutions, a hidden layer and the logits, with a ``run_with_cache`` in the style of
  TransformerLens;
- :func:`train_digits_cnn`: trains it with :func:`mechinterp_course.training.train` (a few seconds on a CPU,
  deterministic for a seed on a given machine);
- :class:`UnitActivation` and :class:`Pixel`: "one number per image" functions that the chapter's exercises take as
  ``activation_fn``. They are small frozen dataclasses rather than closures because a check hands them to the
  student's function, and when a notebook is graded that function runs in a sandboxed kernel: an object of a class
  defined here can travel there (pickled, and rebuilt from this module), a lambda cannot.

Nothing here computes what an exercise asks for (total variation, activation maximisation, top examples,
gradient similarity): those are the student's, and the reference's in :mod:`.reference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import training

#: How the 1,797 images are split: a fixed permutation, the first DIGITS_N_TRAIN for training, the rest for testing.
DIGITS_SPLIT_SEED = 0
DIGITS_N_TRAIN = 1400
#: The images' side in pixels, and the raw pixel scale of ``load_digits`` (values 0..16).
DIGITS_IMAGE_SIZE = 8
DIGITS_MAX_PIXEL = 16.0
DIGITS_N_CLASSES = 10


@dataclass
class DigitsData:
    """The 1,797 8x8 images of scikit-learn's ``load_digits``, scaled to [0, 1] and then standardised with the
    training set's mean and standard deviation, so that 0 is the mean pixel (ink is positive, background negative)."""

    train_x: Tensor  # [n_train, 1, 8, 8]
    train_y: Tensor  # [n_train]
    test_x: Tensor  # [n_test, 1, 8, 8]
    test_y: Tensor  # [n_test]
    mean: float
    std: float

    @property
    def all_x(self) -> Tensor:
        return torch.cat([self.train_x, self.test_x])

    @property
    def all_y(self) -> Tensor:
        return torch.cat([self.train_y, self.test_y])


def load_digits_data(split_seed: int = DIGITS_SPLIT_SEED, n_train: int = DIGITS_N_TRAIN) -> DigitsData:
    """The digits, split by a seeded permutation and standardised with the training images' statistics only (so the
    test images tell nothing about the scaling)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / DIGITS_MAX_PIXEL
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
    train, test = order[:n_train], order[n_train:]
    mean, std = float(images[train].mean()), float(images[train].std())
    return DigitsData((images[train] - mean) / std, labels[train], (images[test] - mean) / std, labels[test], mean, std)


class DigitsCNN(nn.Module):
    """conv 3x3 (1 -> c1) -> ReLU -> conv 3x3 (c1 -> c2) -> ReLU -> 2x2 max-pool -> linear (-> hidden) -> ReLU ->
    linear (-> n_classes). ``run_with_cache(x)`` returns the logits and the activations by name, like TransformerLens:
    ``"conv1" [batch, c1, H, W]``, ``"conv2" [batch, c2, H, W]`` (after their ReLUs), ``"fc" [batch, hidden]`` (after
    its ReLU) and ``"logits" [batch, n_classes]``. ``model.out`` is the final layer (``logits = fc @ W.T + b``)."""

    LAYERS = ("conv1", "conv2", "fc", "logits")

    def __init__(
        self,
        channels: tuple[int, int] = (8, 16),
        hidden: int = 32,
        n_classes: int = DIGITS_N_CLASSES,
        image_size: int = DIGITS_IMAGE_SIZE,
        seed: int = 0,
    ):
        super().__init__()
        self.config = dict(channels=tuple(channels), hidden=hidden, n_classes=n_classes, image_size=image_size)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the global generator alone
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
            self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
            self.fc = nn.Linear(channels[1] * (image_size // 2) ** 2, hidden)
            self.out = nn.Linear(hidden, n_classes)

    def run_with_cache(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cache = {"conv1": F.relu(self.conv1(x))}
        cache["conv2"] = F.relu(self.conv2(cache["conv1"]))
        cache["fc"] = F.relu(self.fc(F.max_pool2d(cache["conv2"], 2).flatten(1)))
        cache["logits"] = self.out(cache["fc"])
        return cache["logits"], cache

    def forward(self, x: Tensor) -> Tensor:
        return self.run_with_cache(x)[0]


# --------------------------------------------------------------------------------------------------------------
# Training, with the course's one loop
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsTraining:
    """How the chapter's CNN is trained: ``epochs`` passes over the training images in shuffled batches (the last
    batch of an epoch is smaller), AdamW. About 180 steps: seconds on a CPU."""

    epochs: int = 8
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch)


DIGITS_TRAINING = DigitsTraining()
#: Torch threads while the CNN trains: its steps are so small that one thread is faster than several (thread
#: start-up costs more than the work; several times more on a busy 2-core machine).
TRAINING_THREADS = 1


def digits_metrics(model: DigitsCNN, data: DigitsData) -> dict[str, float]:
    """Accuracy on the training and the test images (what the training log records once per epoch)."""
    with torch.no_grad():
        return {
            f"{split}_accuracy": float((model(x).argmax(-1) == y).float().mean())
            for split, x, y in [("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)]
        }


def train_digits_cnn(
    data: DigitsData | None = None, spec: DigitsTraining = DIGITS_TRAINING, progress: bool = True
) -> tuple[DigitsCNN, dict]:
    """Train the chapter's CNN with :func:`mechinterp_course.training.train` and return ``(model, info)``: ``info``
    holds the settings, the final accuracies (``"metrics"``), the log (one row per epoch) and the seconds it took.

    Why the batches are drawn up front: ``training.train`` asks for the batch of each step by its number, so that a
    run is reproducible; the shuffles of all epochs come from one generator seeded with ``spec.seed + 1``, in order,
    and step ``s`` reads batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``. Deterministic for a seed
    on a given machine."""
    data = load_digits_data() if data is None else data
    n_train = len(data.train_x)
    per_epoch = spec.steps_per_epoch(n_train)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    shuffles = [torch.randperm(n_train, generator=generator) for _ in range(spec.epochs)]

    def batch_fn(step: int) -> tuple[Tensor, Tensor]:
        epoch, index = divmod(step, per_epoch)
        chosen = shuffles[epoch][index * spec.batch : (index + 1) * spec.batch]
        return data.train_x[chosen], data.train_y[chosen]

    def loss_fn(model: DigitsCNN, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    model = DigitsCNN(seed=spec.seed)
    config = training.TrainConfig(
        steps=spec.epochs * per_epoch,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        eval_every=per_epoch,
        progress=progress,
        description="digits-cnn",
        threads=TRAINING_THREADS,
    )
    result = training.train(model, batch_fn, loss_fn, config, eval_fn=lambda m: digits_metrics(m, data))
    info = {
        "training": spec,
        "steps": config.steps,
        "metrics": digits_metrics(model, data),
        "log": result.log,
        "seconds": result.seconds,
    }
    return model.eval(), info


# --------------------------------------------------------------------------------------------------------------
# Units: one number per image
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class UnitActivation:
    """``activation_fn(x [batch, 1, H, W]) -> [batch]`` for one unit of ``model``: a class logit (``"logits"``), a
    hidden neuron (``"fc"``), or a conv channel's mean over positions (``"conv1"``, ``"conv2"``). ``unit`` is one unit
    for every image, or a ``[batch]`` tensor giving each image its own unit (to visualise ten classes in one batch).

    A frozen dataclass, not a closure, so that a check can hand it to a student's function in a graded kernel."""

    model: DigitsCNN
    layer: str
    unit: int | Tensor

    def __post_init__(self) -> None:
        if self.layer not in DigitsCNN.LAYERS:
            raise ValueError(f"layer must be one of {DigitsCNN.LAYERS}, got {self.layer!r}")

    def __call__(self, x: Tensor) -> Tensor:
        _, cache = self.model.run_with_cache(x)
        activation = cache[self.layer]
        if activation.ndim == 4:  # a conv channel: its mean over positions
            activation = activation.mean(dim=(-2, -1))
        if isinstance(self.unit, Tensor):
            return activation[torch.arange(len(activation)), self.unit]
        return activation[:, self.unit]


@dataclass(frozen=True)
class Pixel:
    """``activation_fn(x [batch, C, H, W]) -> [batch]``: the value of one pixel of channel 0. A unit whose answer is
    known exactly, so that a check can say what an optimisation or a ranking should have done with it."""

    row: int
    col: int

    def __call__(self, x: Tensor) -> Tensor:
        return x[:, 0, self.row, self.col]
