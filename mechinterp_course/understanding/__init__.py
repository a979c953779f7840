"""Chapter 06, "What counts as mechanistic understanding": the tools the chapter's cells use around the exercises.

The room has the shape of every chapter's (tools here, :mod:`.reference` generated from
``solutions/06_understanding/06_understanding.ipynb``, :mod:`.checks` for the test cells). The tools never compute
what an exercise asks for; where they need an exercise's computation they take the student's function:

- **weights by hand** (section 2): :func:`model_from_weights` turns a dict of TransformerLens-shaped weights into a
  course model (a ``TransformerBridge``), :func:`repeated_half_loss` measures induction on repeated random tokens,
  :func:`modadd_scores` measures a modular-addition model on every pair;
- **a program** (section 3): :func:`logit_grid` (the model's logits over every pair), :func:`agreement` and
  :func:`variance_explained` (how well a program's logits match a model's);
- **proofs** (section 4): the max-of-K task and its one-layer attention-only model (:class:`MaxOfK`,
  :func:`train_max_of_k`, :func:`max_of_k_model`), how many inputs each cell (largest token, last token) holds
  (:func:`cell_sizes`), the bound a certificate proves (:func:`bound_from_certificate`) and a timer;
- **optimality** (section 5): :func:`margins` of logits.

Conventions. Weights use TransformerLens's names and shapes: ``W_E [d_vocab, d_model]``, ``W_pos [n_ctx, d_model]``,
``W_Q``, ``W_K``, ``W_V [n_layers, n_heads, d_model, d_head]``, ``W_O [n_layers, n_heads, d_head, d_model]``,
``W_in [n_layers, d_model, d_mlp]``, ``W_out [n_layers, d_mlp, d_model]``, ``W_U [d_model, d_vocab_out]``, and the
biases ``b_Q``, ``b_K``, ``b_V [n_layers, n_heads, d_head]``, ``b_O [n_layers, d_model]``, ``b_in [n_layers,
d_mlp]``, ``b_out [n_layers, d_model]``, ``b_U [d_vocab_out]`` (missing biases are zero). A max-of-K cell
``(m, q, s)`` holds the inputs whose largest token is ``m``, whose last token is ``q`` and whose largest token below
``m`` is ``s`` (``s = m`` when every token is ``m``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import einops
import torch
from torch import Tensor

from .. import models, tasks
from ..training import TrainConfig, train

# --------------------------------------------------------------------------------------------------------------
# Section 2: weights written by hand
# --------------------------------------------------------------------------------------------------------------

#: Weight names a hand-written model may set, with the axes of their shapes.
WEIGHT_AXES: dict[str, tuple[str, ...]] = {
    "W_E": ("d_vocab", "d_model"),
    "W_pos": ("n_ctx", "d_model"),
    "W_Q": ("n_layers", "n_heads", "d_model", "d_head"),
    "W_K": ("n_layers", "n_heads", "d_model", "d_head"),
    "W_V": ("n_layers", "n_heads", "d_model", "d_head"),
    "W_O": ("n_layers", "n_heads", "d_head", "d_model"),
    "b_Q": ("n_layers", "n_heads", "d_head"),
    "b_K": ("n_layers", "n_heads", "d_head"),
    "b_V": ("n_layers", "n_heads", "d_head"),
    "b_O": ("n_layers", "d_model"),
    "W_in": ("n_layers", "d_model", "d_mlp"),
    "b_in": ("n_layers", "d_mlp"),
    "W_out": ("n_layers", "d_mlp", "d_model"),
    "b_out": ("n_layers", "d_model"),
    "W_U": ("d_model", "d_vocab_out"),
    "b_U": ("d_vocab_out",),
}
REQUIRED_WEIGHTS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
MLP_WEIGHTS = ("W_in", "W_out")
#: The largest sizes a hand-written model may have (the checks build and run it on many inputs).
MAX_D_MODEL = 1024
MAX_D_MLP = 8192
MAX_HEADS = 8


@dataclass(frozen=True)
class InductionTask:
    """A configuration for a hand-written induction model: its vocabulary (token 0 is BOS), residual width and
    context. ``half_len`` random tokens (1 .. d_vocab - 1) follow BOS and are then repeated:
    ``1 + 2 * half_len <= n_ctx`` and ``half_len < d_vocab``. The configurations the course uses leave room for
    one-hot subspaces: ``d_model >= 3 * d_vocab + n_ctx``."""

    d_vocab: int
    d_model: int
    n_ctx: int
    half_len: int


#: The configuration the notebook shows; the checks draw others.
INDUCTION_TASK = InductionTask(d_vocab=40, d_model=176, n_ctx=48, half_len=20)
#: The hand-written induction model must reach this loss (nats) on the repeated half, on every configuration.
INDUCTION_LOSS_TARGET = 0.5
#: The hand-written modular-addition model must reach this accuracy over every pair, for every prime.
MODADD_ACCURACY_TARGET = 1.0
#: A weights function may take this long per call (it has no optimiser; writing weights takes milliseconds).
WEIGHTS_SECONDS = 10.0
#: A hand-written modular-addition model's embedding of the numbers must have at least this share of its variance
#: (over the numbers, per dimension, summed) on the cos/sin waves of the key frequencies it was asked for.
KEY_EMBEDDING_SHARE = 0.99
#: ... and its logits (each pair's centred over the answers) at least this share of their variance on the terms
#: cos/sin(w_k (a + b - c)) of those frequencies: the algorithm's output, not a table of answers (a table of one-hot
#: answers has 2 * n_keys / (p - 1) of it; the chapter's recipe 8 / pi^2).
KEY_LOGIT_SHARE = 0.5


def _sizes(weights: Mapping[str, Any]) -> dict[str, int]:
    """Read the architecture off the weights' shapes, checking that they agree; ValueError says what is wrong."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"the weights should be a dict of tensors, got {type(weights).__name__}.")
    unknown = sorted(set(weights) - set(WEIGHT_AXES))
    if unknown:
        raise ValueError(f"unknown weight name(s) {unknown}; the names are {list(WEIGHT_AXES)}.")
    missing = [name for name in REQUIRED_WEIGHTS if name not in weights]
    if missing:
        raise ValueError(f"missing weight(s) {missing}.")
    sizes: dict[str, int] = {}
    for name, value in weights.items():
        value = torch.as_tensor(value)
        axes = WEIGHT_AXES[name]
        if value.ndim != len(axes):
            raise ValueError(
                f"{name} should have {len(axes)} axes [{', '.join(axes)}], got shape {tuple(value.shape)}."
            )
        if not torch.isfinite(value.double()).all():
            raise ValueError(f"{name} holds NaN or infinite values.")
        for axis, size in zip(axes, value.shape):
            if sizes.setdefault(axis, int(size)) != size:
                raise ValueError(f"{name}'s {axis} is {size}, but another weight says {sizes[axis]}.")
    return sizes


def model_from_weights(weights: Mapping[str, Any], act_fn: str = "relu"):
    """A course model (``TransformerBridge``, eval mode, no LayerNorm) whose weights are exactly ``weights`` (see the
    module docstring for the names; biases not given are zero). An MLP is built when ``W_in`` and ``W_out`` are
    given, an attention-only model otherwise. ``ValueError`` / ``TypeError`` say what is wrong with the weights."""
    sizes = _sizes(weights)
    attn_only = not all(name in weights for name in MLP_WEIGHTS)
    if sizes["d_model"] > MAX_D_MODEL or sizes.get("d_mlp", 0) > MAX_D_MLP or sizes["n_heads"] > MAX_HEADS:
        raise ValueError(
            f"the model is too big for the checks: d_model <= {MAX_D_MODEL}, d_mlp <= {MAX_D_MLP}, n_heads <= "
            f"{MAX_HEADS} (got {sizes['d_model']}, {sizes.get('d_mlp', 0)}, {sizes['n_heads']})."
        )
    config = models.ModelConfig(
        n_layers=sizes["n_layers"],
        d_model=sizes["d_model"],
        n_heads=sizes["n_heads"],
        d_head=sizes["d_head"],
        d_vocab=sizes["d_vocab"],
        n_ctx=sizes["n_ctx"],
        d_mlp=None if attn_only else sizes["d_mlp"],
        attn_only=attn_only,
        act_fn=act_fn,
        normalization_type=None,
        d_vocab_out=sizes["d_vocab_out"],
    )
    model = models.make_model(config)
    state = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    get = lambda name: torch.as_tensor(weights[name]).float()  # noqa: E731
    state["embed.weight"] = get("W_E")
    state["pos_embed.weight"] = get("W_pos")
    state["unembed.weight"] = einops.rearrange(get("W_U"), "d v -> v d")
    if "b_U" in weights:
        state["unembed.bias"] = get("b_U")
    for layer in range(sizes["n_layers"]):
        block = f"blocks.{layer}"
        for letter in "QKV":
            state[f"{block}.attn.{letter.lower()}.weight"] = einops.rearrange(
                get(f"W_{letter}")[layer], "h d e -> (h e) d"
            )
            if f"b_{letter}" in weights:
                state[f"{block}.attn.{letter.lower()}.bias"] = einops.rearrange(
                    get(f"b_{letter}")[layer], "h e -> (h e)"
                )
        state[f"{block}.attn.o.weight"] = einops.rearrange(get("W_O")[layer], "h e d -> d (h e)")
        if "b_O" in weights:
            state[f"{block}.attn.o.bias"] = get("b_O")[layer]
        if not attn_only:
            state[f"{block}.mlp.in.weight"] = einops.rearrange(get("W_in")[layer], "d m -> m d")
            state[f"{block}.mlp.out.weight"] = einops.rearrange(get("W_out")[layer], "m d -> d m")
            for name, key in (("b_in", "in"), ("b_out", "out")):
                if name in weights:
                    state[f"{block}.mlp.{key}.bias"] = get(name)[layer]
    model.load_state_dict(state)
    return model.eval()


def induction_tokens(task: InductionTask, batch: int, seed: int) -> Tensor:
    """``[batch, 1 + 2 * half_len]``: BOS, ``half_len`` different random tokens (1 .. d_vocab - 1), the same again.
    Different within a row so that the earlier copy of a token is unambiguous: a perfect induction circuit then
    predicts the whole repeated half (after its first token) and its loss there goes to 0."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.stack(
        [torch.randperm(task.d_vocab - 1, generator=generator)[: task.half_len] + 1 for _ in range(batch)]
    )
    return tasks.with_bos(torch.cat([first, first], dim=1))


@torch.no_grad()
def repeated_half_loss(model, tokens: Tensor) -> float:
    """Mean loss (nats) of predicting the tokens of the repeated half after its first one, the part induction can
    predict (the recipe's convention for ``induction-2l``'s card). ``tokens [batch, 1 + 2 * half_len]``."""
    half_len = (tokens.shape[1] - 1) // 2
    log_probs = model(tokens)[:, :-1].double().log_softmax(dim=-1)
    losses = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, pos - 1]
    return float(losses[:, half_len + 1 :].mean())


def modadd_tokens(p: int) -> tuple[Tensor, Tensor]:
    """``(tokens [p * p, 3], answers [p * p])`` for every pair, rows ``a b =`` (``=`` is token ``p``), in the order
    ``a * p + b``."""
    data = tasks.modular_addition(p, 1.0, split=lambda n, fraction, seed: (torch.arange(n), torch.arange(0)))
    return data.train_tokens, data.train_labels


@torch.no_grad()
def modadd_scores(model, p: int) -> dict[str, float]:
    """Accuracy and mean loss (nats, float64) at ``=`` over every pair ``(a, b)``, and the smallest margin."""
    tokens, answers = modadd_tokens(p)
    logits = model(tokens)[:, -1].double()
    return {
        "accuracy": float((logits.argmax(-1) == answers).double().mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, answers)),
        "min_margin": float(margins(logits, answers).min()),
    }


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """``[...]``: the right answer's logit minus the largest other one (positive where the model is right), for
    ``logits [..., n_out]`` and ``labels [...]``."""
    logits = logits.double()
    correct = logits.gather(-1, labels[..., None])[..., 0]
    others = logits.scatter(-1, labels[..., None], -math.inf)
    return correct - others.max(dim=-1).values


# --------------------------------------------------------------------------------------------------------------
# Section 3: a program beside the model
# --------------------------------------------------------------------------------------------------------------

#: A frequency is a key frequency when its norm in the embedding is above this share of the largest one (chapter
#: 02's rule).
KEY_FREQUENCY_SHARE = 0.5
#: A program may hold at most this many numbers (its key frequencies, amplitudes and phases): a table of the
#: model's answers would need p * p of them.
MAX_PROGRAM_NUMBERS = 64
#: A synthesised program must agree with the model's prediction on this share of pairs ...
PROGRAM_AGREEMENT_TARGET = 1.0
#: ... and explain at least this share of the variance of its logits.
PROGRAM_VARIANCE_TARGET = 0.9


@torch.no_grad()
def logit_grid(model, p: int) -> Tensor:
    """``[p, p, p]`` float64: the model's logits at ``=`` for every pair, axes ``a, b, c`` (running the model)."""
    tokens, _ = modadd_tokens(p)
    logits = model(tokens)[:, -1, :p].double()
    return einops.rearrange(logits, "(a b) c -> a b c", a=p)


def agreement(logits: Tensor, reference_logits: Tensor) -> float:
    """Share of pairs where ``logits [..., n]`` and ``reference_logits`` pick the same answer."""
    return float((torch.as_tensor(logits).argmax(-1) == reference_logits.argmax(-1)).double().mean())


def variance_explained(logits: Tensor, reference_logits: Tensor) -> float:
    """``1 - |L - L_ref|^2 / |L_ref - mean|^2`` with both centred over the answers of each pair (a constant per pair
    changes no prediction): the share of the reference logits' variance that ``logits`` reproduce, 1 at best."""
    ours = torch.as_tensor(logits).double()
    theirs = reference_logits.double()
    ours = ours - ours.mean(-1, keepdim=True)
    theirs = theirs - theirs.mean(-1, keepdim=True)
    return float(1 - (ours - theirs).pow(2).sum() / theirs.pow(2).sum())


def pair_grids(p: int) -> tuple[Tensor, Tensor]:
    """``(a [p * p], b [p * p])``: every pair in the order ``a * p + b``: what a program is run on."""
    tokens, _ = modadd_tokens(p)
    return tokens[:, 0].clone(), tokens[:, 1].clone()


# --------------------------------------------------------------------------------------------------------------
# Section 4: max-of-K and proofs about it (Gross et al. 2024)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaxOfK:
    """The max-of-K task: ``k`` tokens from ``0 .. d_vocab - 1``; the answer, read at the last position, is the
    largest. The model: one layer, one attention head, no MLP, no LayerNorm; the course keeps its positional
    embedding and biases at zero (max-of-K does not depend on order), so that attention depends only on which tokens
    the input holds."""

    d_vocab: int = 32
    k: int = 4
    d_model: int = 32
    steps: int = 1_200
    batch: int = 512
    lr: float = 1e-2
    seed: int = 0

    def model_config(self) -> models.ModelConfig:
        return models.ModelConfig(
            n_layers=1,
            d_model=self.d_model,
            n_heads=1,
            d_head=self.d_model,
            d_vocab=self.d_vocab,
            n_ctx=self.k,
            attn_only=True,
            normalization_type=None,
        )


#: The notebook's max-of-K setup: Gross et al.'s (K = 4, d_model 32, one head) with 32 tokens instead of 64, so that
#: brute force (32 ** 4 = 1,048,576 inputs) takes seconds on a laptop.
MAX_OF_K = MaxOfK()
#: A proof strategy certifies a cell only where its bound on the margin exceeds this (float32 rounding of the
#: model's own arithmetic is far below it).
CERTIFY_MARGIN = 1e-3
#: A proof strategy's proven accuracy may fall short of the reference strategy's by at most this much.
TIGHTNESS_TOLERANCE = 0.01
#: A compact proof must run in this many seconds on a model whose inputs are far too many to enumerate.
CERTIFY_SECONDS = 20.0
#: Weights a max-of-K model keeps at zero.
FROZEN_AT_ZERO = ("pos_embed.weight", "blocks.0.attn.q.bias", "blocks.0.attn.k.bias", "blocks.0.attn.v.bias")


def max_of_k_tokens(batch: int, setup: MaxOfK, generator: torch.Generator) -> Tensor:
    """``[batch, k]`` uniformly random inputs. Uniform inputs rarely have a small largest token; half of each batch
    therefore draws its tokens below a random ceiling, so that every largest token is seen in training."""
    ceilings = torch.randint(1, setup.d_vocab + 1, (batch, 1), generator=generator)
    ceilings[: batch // 2] = setup.d_vocab
    return (torch.rand(batch, setup.k, generator=generator) * ceilings).long()


def max_of_k_model(setup: MaxOfK, state: Mapping[str, Tensor] | None = None):
    """A max-of-K model for ``setup`` with the given ``state_dict`` (the frozen weights zeroed), or freshly
    initialised."""
    model = models.make_model(setup.model_config(), seed=setup.seed)
    if state is not None:
        model.load_state_dict(dict(state))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in FROZEN_AT_ZERO or name.endswith("bias"):
                parameter.zero_()
    return model.eval()


def training_inputs(setup: MaxOfK = MAX_OF_K) -> Tensor:
    """``[steps * batch, k]``: every training input :func:`train_max_of_k` uses, in order (deterministic)."""
    generator = torch.Generator().manual_seed(setup.seed + 1)
    return torch.cat([max_of_k_tokens(setup.batch, setup, generator) for _ in range(setup.steps)])


def train_max_of_k(setup: MaxOfK = MAX_OF_K, progress: bool = True):
    """Train a max-of-K model with the course's loop (AdamW, cross-entropy at the last position), its positional
    embedding and biases frozen at zero. Returns ``(model, TrainResult)``."""
    model = max_of_k_model(setup)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not (name in FROZEN_AT_ZERO or name.endswith("bias")))
    batches = training_inputs(setup).split(setup.batch)

    def loss_fn(model_, tokens: Tensor) -> Tensor:
        logits = model_(tokens)[:, -1]
        return torch.nn.functional.cross_entropy(logits, tokens.max(dim=-1).values)

    result = train(
        model,
        lambda step: batches[step],
        loss_fn,
        TrainConfig(
            steps=setup.steps,
            lr=setup.lr,
            eval_every=max(1, setup.steps // 10),
            progress=progress,
            threads=1,
            description=f"max-of-{setup.k}",
        ),
    )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model.eval(), result


def cell_sizes(d_vocab: int, k: int) -> Tensor:
    """``[d_vocab, d_vocab, d_vocab]`` float64: how many of the ``d_vocab ** k`` inputs lie in cell ``(m, q, s)``:
    largest token ``m``, last token ``q``, and ``s`` the largest token below ``m`` (``s = m`` when every token is
    ``m``). Every input lies in exactly one cell; the sizes add up to ``d_vocab ** k``.

    Counting (the other ``k - 1`` tokens are drawn from ``{0 .. s, m}``): ``q = m``: at least one of them is ``s``
    (one input when ``s = m``); ``q = s < m``: at least one is ``m``; ``q < s < m``: at least one is ``m`` and at
    least one is ``s``. Any other cell is empty."""
    m = torch.arange(d_vocab, dtype=torch.float64)[:, None, None]
    q = torch.arange(d_vocab, dtype=torch.float64)[None, :, None]
    s = torch.arange(d_vocab, dtype=torch.float64)[None, None, :]
    n = k - 1
    one_more = (s + 2) ** n - (s + 1) ** n  # at least one of a given value among n draws from s + 2 values
    both = (s + 2) ** n - 2 * (s + 1) ** n + s**n  # at least one m and at least one s
    zero = torch.zeros(())
    sizes = torch.where((q == m) & (s < m), one_more, zero)
    sizes = sizes + torch.where((q == m) & (s == m), torch.ones(()), zero)
    sizes = sizes + torch.where((q < m) & (s == q), one_more, zero)
    return sizes + torch.where((q < s) & (s < m), both, zero)


def bound_from_certificate(certified: Tensor, k: int) -> float:
    """The accuracy a certificate ``[d_vocab, d_vocab, d_vocab]`` (cells ``(m, q, s)``, see :func:`cell_sizes`)
    proves: the share of all inputs that lie in certified cells."""
    certified = torch.as_tensor(certified).bool()
    sizes = cell_sizes(certified.shape[0], k)
    return float((sizes * certified).sum() / sizes.sum())


def timed(fn: Callable, *args: Any, repeat: int = 1) -> tuple[Any, float]:
    """``(fn(*args), seconds)``: the best wall time of ``repeat`` calls (what a strategy costs)."""
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def all_inputs(d_vocab: int, k: int, start: int, stop: int) -> Tensor:
    """``[stop - start, k]``: inputs number ``start .. stop - 1`` of the ``d_vocab ** k`` in counting order (the
    last token varies fastest). Enumerating them all, a chunk at a time, is what a brute-force proof does."""
    index = torch.arange(start, stop)
    digits = [(index // d_vocab**power) % d_vocab for power in reversed(range(k))]
    return torch.stack(digits, dim=-1)
