"""Chapter 05, "Attention superposition": the tools the chapter's cells use around the student's exercises.

The room holds three things (every chapter's package has the same shape):

- this module: the chapter's tasks and toy models, which are *not* exercises: the OV-incoherent skip-trigram task
  (:class:`SkipTrigrams`, after Mathwin, Akar & Sharkey 2024), the OV-coherent source-pair task (:class:`SourcePairs`,
  after Greenspan & Wynroe 2023), one-layer attention-only models trained many instances at once
  (:class:`HeadsModel`, :func:`train_heads`) and turned into ordinary course models (``TransformerBridge``, with
  TransformerLens's hook names) for the analysis, and the chapter's figures;
- :mod:`.reference`: the exercises' answers, generated from
  ``solutions/05_attention_superposition/05_attention_superposition.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

Why one-hot embeddings. The toy models have no embedding to learn: ``W_E`` is the identity (``d_model = d_vocab``),
there are no positional embeddings, and for the skip-trigram task ``W_U`` is the identity too, as in the published
toy models. Everything the model learns is then in its heads (``W_Q``, ``W_K``, ``W_V``, ``W_O``), where attention
superposition lives, and every weight can be read as "token -> number".

Why the read-off is the last position. Mathwin et al.'s data puts the skip-trigram anywhere in the sequence and
trains on every position; here the destination token is always the last one and the loss is taken there only. The
computation the heads must do is the same, with one query per sequence instead of ten: per sequence, a training
step took about a quarter of the time (measured: 2.7 against 11 microseconds per sequence and instance, 2 cores),
which with the batched instances lets the notebook train 8 models in seconds on a CPU.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import einops
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..training import TrainConfig, TrainResult, train
from ..understanding import model_from_weights

#: Sequence length of both tasks' inputs, as Mathwin et al. (BOS, 9 context tokens, the read-off token).
N_POS = 11
#: The chance that a skip-trigram input holds the source token A (otherwise the next token is random).
SOURCE_PROBABILITY = 0.5

# --------------------------------------------------------------------------------------------------------------
# The OV-incoherent task: skip-trigrams [A] ... [B] -> [C_B]
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkipTrigrams:
    """Skip-trigrams ``[source] ... [destination b] -> [output c_b]`` with one source and several destinations: the
    OV-incoherent case (a fixed source, what it means depends on the destination).

    An input is ``[BOS, 9 context tokens, b]``: the context holds the source at a random position with probability
    :data:`SOURCE_PROBABILITY`, else only filler tokens; the target at the last position is ``c_b`` when the source
    is there, a uniformly random token otherwise. ``BOS`` is always the last token id (``d_vocab - 1``)."""

    source: int
    destinations: tuple[int, ...]
    outputs: tuple[int, ...]
    d_vocab: int
    n_pos: int = N_POS

    @property
    def bos(self) -> int:
        return self.d_vocab - 1

    @property
    def trigrams(self) -> list[tuple[int, int, int]]:
        """The task's ground-truth features: ``(source, destination, output)`` triples."""
        return [(self.source, b, c) for b, c in zip(self.destinations, self.outputs)]

    @property
    def fillers(self) -> Tensor:
        """Tokens the context is filled with: every token but the source and BOS."""
        return torch.tensor([t for t in range(self.d_vocab - 1) if t != self.source])

    def output_of(self, destinations: Tensor) -> Tensor:
        """``[n]`` destination tokens -> their outputs ``c_b``."""
        table = torch.full((self.d_vocab,), -1, dtype=torch.long)
        table[list(self.destinations)] = torch.tensor(self.outputs)
        return table[destinations]

    def batch(
        self, batch: int, generator: torch.Generator, source_probability: float = SOURCE_PROBABILITY
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(tokens [batch, pos], targets [batch], has_source [batch])``."""
        fillers = self.fillers
        context = fillers[torch.randint(len(fillers), (batch, self.n_pos - 2), generator=generator)]
        has_source = torch.rand(batch, generator=generator) < source_probability
        where = torch.randint(self.n_pos - 2, (batch,), generator=generator)
        context[has_source, where[has_source]] = self.source
        dest = torch.tensor(self.destinations)[torch.randint(len(self.destinations), (batch,), generator=generator)]
        tokens = torch.cat([torch.full((batch, 1), self.bos), context, dest[:, None]], dim=1)
        noise = torch.randint(self.d_vocab - 1, (batch,), generator=generator)
        return tokens, torch.where(has_source, self.output_of(dest), noise), has_source

    def permuted(self, generator: torch.Generator) -> tuple[SkipTrigrams, Tensor]:
        """The same task with its tokens relabelled at random (BOS stays last), and the relabelling ``[d_vocab]``
        (old id -> new id). A model relabelled the same way (:func:`relabel`) does exactly what the old one did."""
        perm = torch.cat([torch.randperm(self.d_vocab - 1, generator=generator), torch.tensor([self.bos])])
        new = SkipTrigrams(
            int(perm[self.source]),
            tuple(int(perm[b]) for b in self.destinations),
            tuple(int(perm[c]) for c in self.outputs),
            self.d_vocab,
            self.n_pos,
        )
        return new, perm


def skip_trigrams(n_trigrams: int) -> SkipTrigrams:
    """Mathwin et al.'s token layout: A = 0, B = 1..n, C = B + n, BOS = 2n + 1."""
    n = n_trigrams
    return SkipTrigrams(0, tuple(range(1, n + 1)), tuple(range(n + 1, 2 * n + 1)), 2 * n + 2)


# --------------------------------------------------------------------------------------------------------------
# The OV-coherent task: a fixed read-off token combines two sources
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcePairs:
    """Greenspan and Wynroe's OV-coherent task: 12 input tokens (token 0 is the read-off, 1..4 are signals, 5..11
    noise); an input is 10 noise tokens with two signal tokens (possibly the same one twice) at random positions and
    the read-off last; the target is the unordered pair of signals, one of 10 outputs. The destination is fixed and
    the output depends on two sources: many sources, one destination."""

    n_signals: int = 4
    n_noise: int = 7
    n_pos: int = N_POS

    @property
    def readout(self) -> int:
        return 0

    @property
    def signals(self) -> list[int]:
        return list(range(1, self.n_signals + 1))

    @property
    def d_vocab(self) -> int:
        return 1 + self.n_signals + self.n_noise

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Output ``i`` is the signal pair ``pairs[i]`` (signal tokens, smaller first)."""
        return list(itertools.combinations_with_replacement(self.signals, 2))

    @property
    def d_vocab_out(self) -> int:
        return len(self.pairs)

    def batch(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(tokens [batch, pos], targets [batch])``."""
        first_noise = 1 + self.n_signals
        tokens = torch.randint(first_noise, self.d_vocab, (batch, self.n_pos), generator=generator)
        tokens[:, -1] = self.readout
        signals = torch.randint(1, first_noise, (batch, 2), generator=generator)
        where = torch.rand(batch, self.n_pos - 1, generator=generator).argsort(-1)[:, :2]
        tokens.scatter_(1, where, signals)
        pair_index = torch.full((first_noise, first_noise), -1, dtype=torch.long)
        for i, (a, b) in enumerate(self.pairs):
            pair_index[a, b] = pair_index[b, a] = i
        return tokens, pair_index[signals[:, 0], signals[:, 1]]


# --------------------------------------------------------------------------------------------------------------
# One-layer attention-only models, many at once
# --------------------------------------------------------------------------------------------------------------

#: Initial weights: Normal(0, INIT_SCALE / sqrt(d_model)), as every course model (``models.INIT_SCALE``).
INIT_SCALE = 0.8


class HeadsModel(nn.Module):
    """``n_instances`` one-layer attention-only transformers with one-hot embeddings, trained together (one batched
    module costs about as much as one on a CPU). Weights have TransformerLens's names and shapes with an instance
    dimension first: ``W_Q [inst, n_heads, d_model, d_head]``, ``W_O [inst, n_heads, d_head, d_model]``; ``W_U`` is
    learned (``[inst, d_model, d_vocab_out]``) when ``d_vocab_out`` is given, else the identity.

    Only the last position is computed: the tasks read off there. :meth:`bridge` makes instance ``i`` an ordinary
    course model (every position, hooks, caches)."""

    def __init__(
        self,
        n_instances: int,
        n_heads: int,
        d_head: int,
        d_vocab: int,
        n_ctx: int = N_POS,
        d_vocab_out: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = INIT_SCALE / math.sqrt(d_vocab)

        def draw(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.W_Q = draw(n_instances, n_heads, d_vocab, d_head)
        self.W_K = draw(n_instances, n_heads, d_vocab, d_head)
        self.W_V = draw(n_instances, n_heads, d_vocab, d_head)
        self.W_O = draw(n_instances, n_heads, d_head, d_vocab)
        self.W_U = draw(n_instances, d_vocab, d_vocab_out) if d_vocab_out is not None else None
        self.d_vocab, self.n_ctx = d_vocab, n_ctx

    @property
    def n_instances(self) -> int:
        return self.W_Q.shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens [batch, pos]`` -> logits at the last position ``[inst, batch, d_vocab_out]``."""
        # One-hot embeddings: x W is a row lookup, W[token].
        q = self.W_Q[:, :, tokens[:, -1]]  # [inst, head, batch, d_head]
        k = self.W_K[:, :, tokens]  # [inst, head, batch, pos, d_head]
        v = self.W_V[:, :, tokens]
        scores = einops.einsum(q, k, "i h b e, i h b p e -> i h b p") / math.sqrt(q.shape[-1])
        pattern = scores.softmax(-1)  # the last query sees every position: no mask needed
        z = einops.einsum(pattern, v, "i h b p, i h b p e -> i h b e")
        residual = einops.einsum(z, self.W_O, "i h b e, i h e d -> i b d") + F.one_hot(tokens[:, -1], self.d_vocab)
        return residual if self.W_U is None else residual @ self.W_U

    def weights(self, instance: int) -> dict[str, Tensor]:
        """Instance ``instance``'s weights in TransformerLens's layout (one layer: ``W_Q [1, n_heads, d_model,
        d_head]``), one-hot ``W_E`` and zero ``W_pos`` included: what ``understanding.model_from_weights`` takes."""
        d = self.d_vocab
        W_U = torch.eye(d) if self.W_U is None else self.W_U[instance]
        return {
            "W_E": torch.eye(d),
            "W_pos": torch.zeros(self.n_ctx, d),
            **{name: getattr(self, name)[instance][None].detach().clone() for name in ("W_Q", "W_K", "W_V", "W_O")},
            "W_U": W_U.detach().clone(),
        }

    def bridge(self, instance: int):
        """Instance ``instance`` as a course model (``TransformerBridge``): hooks ``blocks.0.attn.hook_pattern``,
        ``blocks.0.attn.hook_z``; its last-position logits equal this module's."""
        return model_from_weights(self.weights(instance))


def read_off(model, tokens: Tensor) -> Tensor:
    """``tokens [batch, pos]`` -> the model's logits at the last position ``[batch, d_vocab_out]``."""
    return model(tokens)[:, -1]


#: The chapter's training: AdamW at lr 3e-2 (no weight decay) on batches of 256, 1,000 steps. Measured on the
#: skip-trigram tasks: 16 of 16 seeds reach 100% accuracy with 2 heads on 3 trigrams, 3 heads on 4, and 2 heads on 5.
TRAIN = dict(steps=1000, lr=3e-2, batch=256)


def train_heads(
    task: SkipTrigrams | SourcePairs,
    n_heads: int,
    d_head: int = 1,
    instances: int = 8,
    steps: int = TRAIN["steps"],
    lr: float = TRAIN["lr"],
    batch: int = TRAIN["batch"],
    seed: int = 0,
    progress: bool = True,
) -> tuple[HeadsModel, TrainResult]:
    """Train ``instances`` models (seeds ``seed`` .. ``seed + instances - 1`` in effect: one generator draws them
    all) on ``task``, cross-entropy at the last position. The log's ``accuracy`` is the worst instance's accuracy on
    the inputs whose target is determined (a skip-trigram input with its source; every source-pair input)."""
    coherent = isinstance(task, SourcePairs)
    model = HeadsModel(
        instances, n_heads, d_head, task.d_vocab, task.n_pos, task.d_vocab_out if coherent else None, seed=seed
    )
    generator = torch.Generator().manual_seed(seed + 1)

    def batch_fn(step: int):
        return task.batch(batch, generator)[:2]

    def loss_fn(model: HeadsModel, data) -> Tensor:
        tokens, targets = data
        logits = model(tokens)  # [inst, batch, out]
        losses = F.cross_entropy(
            einops.rearrange(logits, "i b o -> (i b) o"), targets.repeat(model.n_instances), reduction="none"
        )
        return einops.reduce(losses, "(i b) -> i", "mean", i=model.n_instances).sum()

    evaluation = task.batch(2048, torch.Generator().manual_seed(seed + 2))

    def eval_fn(model: HeadsModel) -> dict[str, float]:
        tokens, targets = evaluation[:2]
        determined = torch.ones_like(targets, dtype=torch.bool) if coherent else evaluation[2]
        correct = model(tokens).argmax(-1) == targets  # [inst, batch]
        return {"accuracy": float(correct[:, determined].float().mean(-1).min())}

    config = TrainConfig(
        steps=steps,
        lr=lr,
        eval_every=max(1, steps // 10),
        progress=progress,
        threads=1,
        description=f"{instances} models, {n_heads} heads",
    )
    return model, train(model, batch_fn, loss_fn, config, eval_fn=eval_fn)


def trigram_accuracy(model, task: SkipTrigrams, batch: int = 2048, seed: int = 0) -> Tensor:
    """``[n_trigrams]``: how often the model predicts ``c_b`` on inputs that hold the source, per destination ``b``."""
    tokens, targets, has_source = task.batch(batch, torch.Generator().manual_seed(seed), source_probability=1.0)
    with torch.no_grad():
        correct = read_off(model, tokens).argmax(-1) == targets
    return torch.stack([correct[tokens[:, -1] == b].float().mean() for b in task.destinations])


def relabel(model, perm: Tensor):
    """A copy of a one-hot model with every token id ``t`` renamed ``perm[t]`` (input and output alike): it does on
    relabelled inputs exactly what ``model`` did. The checks use it to make fresh models whose features they know."""
    inverse = torch.argsort(perm)
    weights = {
        "W_E": torch.eye(model.cfg.d_vocab),
        "W_pos": torch.zeros(model.cfg.n_ctx, model.cfg.d_model),
        "W_Q": model.W_Q.detach()[:, :, inverse],
        "W_K": model.W_K.detach()[:, :, inverse],
        "W_V": model.W_V.detach()[:, :, inverse],
        "W_O": model.W_O.detach()[..., inverse],
        "W_U": model.W_U.detach()[inverse][:, inverse],
    }
    return model_from_weights(weights)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def softmax_split_figure(n_keys: int = N_POS - 1) -> go.Figure:
    """Why splitting attention is hard: the weight a query puts on the first of two keys it wants, against how
    much better the first key matches, for heads of three sharpnesses (the scale of their scores). The other
    ``n_keys - 2`` keys score 0."""
    gap = torch.linspace(-1, 1, 121)
    fig = go.Figure()
    for scale in (1, 4, 16):
        scores = torch.zeros(len(gap), n_keys)
        scores[:, 0], scores[:, 1] = scale * (1 + gap / 2), scale * (1 - gap / 2)
        weight = scores.softmax(-1)[:, 0]
        fig.add_scatter(x=gap.tolist(), y=weight.tolist(), name=f"sharpness {scale}")
    fig.update_layout(
        title="Attention on the first of two wanted keys, as the first matches a little better or worse",
        xaxis_title="how much better key 1 matches the query than key 2 (before the head's scale)",
        yaxis_title="attention on key 1",
        height=380,
    )
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="an even split")
    return fig


def heads_by_trigram_figure(contributions: Tensor, task: SkipTrigrams, title: str) -> go.Figure:
    """``contributions [n_heads, n_trigrams, d_vocab]`` (mean logit contribution of each head at each destination,
    source present) as one heatmap per head: rows are destinations ``b``, columns output tokens (BOS left out); a
    box marks the right output ``c_b``."""
    contributions = contributions.detach()[..., : task.bos]  # BOS is never a target: its large logit hides the rest
    n_heads = contributions.shape[0]
    names = [str(t) for t in range(task.bos)]
    rows = [f"b = {b}" for b in task.destinations]
    fig = make_subplots(1, n_heads, subplot_titles=[f"L0H{h}" for h in range(n_heads)], horizontal_spacing=0.06)
    limit = float(contributions.abs().max())
    for h in range(n_heads):
        fig.add_heatmap(
            z=contributions[h].tolist(),
            x=names,
            y=rows,
            zmin=-limit,
            zmax=limit,
            colorscale="RdBu",
            showscale=h == n_heads - 1,
            row=1,
            col=h + 1,
        )
        for row, c in enumerate(task.outputs):
            fig.add_shape(
                type="rect", x0=c - 0.5, x1=c + 0.5, y0=row - 0.5, y1=row + 0.5, line=dict(width=2), row=1, col=h + 1
            )
    fig.update_layout(title=title, height=120 + 50 * len(rows))
    fig.update_xaxes(title_text="output token")
    return fig


def source_attention_figure(attention: Tensor, labels: list[str], threshold: float) -> go.Figure:
    """``attention [n_heads, n_sources]`` as a heatmap with the threshold a head must pass to count as used."""
    fig = go.Figure(
        go.Heatmap(
            z=attention.tolist(),
            x=labels,
            y=[f"L0H{h}" for h in range(attention.shape[0])],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[f"{v:.2f}" for v in row] for row in attention.tolist()],
            texttemplate="%{text}",
        )
    )
    fig.update_layout(
        title=f"Attention from the read-off to each signal token (a head counts as used above {threshold})",
        height=150 + 40 * attention.shape[0],
    )
    return fig


def latent_figure(shares: Tensor, by_trigram: Tensor, task: SkipTrigrams) -> go.Figure:
    """Left: each latent's decoder split across heads (``shares [d_sae, n_heads]``); right: each latent's mean
    activation per destination ``b`` with the source present (``by_trigram [d_sae, n_trigrams]``)."""
    latents = [f"latent {i}" for i in range(shares.shape[0])]
    fig = make_subplots(
        1,
        2,
        subplot_titles=["share of the decoder in each head", "mean activation by trigram"],
        horizontal_spacing=0.15,
    )
    fig.add_heatmap(
        z=shares.tolist(),
        x=[f"L0H{h}" for h in range(shares.shape[1])],
        y=latents,
        zmin=0,
        zmax=1,
        colorscale="Blues",
        showscale=False,
        row=1,
        col=1,
    )
    fig.add_heatmap(
        z=by_trigram.tolist(), x=[f"b = {b}" for b in task.destinations], y=latents, colorscale="Greens", row=1, col=2
    )
    fig.update_layout(height=150 + 30 * shares.shape[0])
    return fig


# --------------------------------------------------------------------------------------------------------------
# Section 6: an SAE on the heads' outputs (hook_z), with the course's SAE
# --------------------------------------------------------------------------------------------------------------

#: The hook the SAE reads: every head's output before W_O, concatenated (Kissane et al. 2024).
HOOK_Z = "blocks.0.attn.hook_z"


def z_at_readout(model, tokens: Tensor) -> Tensor:
    """``[batch, n_heads * d_head]``: ``hook_z`` at the last position, heads concatenated (``head`` outer)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK_Z)
    return einops.rearrange(cache[HOOK_Z][:, -1], "batch head d_head -> batch (head d_head)")


# --------------------------------------------------------------------------------------------------------------
# Hand-written heads, and the chapter's thresholds
# --------------------------------------------------------------------------------------------------------------

#: The weights a hand-written skip-trigram model may give: its heads. The rest is fixed by the task.
HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")


def complete_weights(heads: dict[str, Tensor], task: SkipTrigrams) -> dict[str, Tensor]:
    """A one-layer skip-trigram model's full weights from its heads (``W_Q, W_K, W_V [1, n_heads, d_vocab, d_head]``,
    ``W_O [1, n_heads, d_head, d_vocab]``): one-hot ``W_E`` and ``W_U``, zero ``W_pos``, as the trained ones."""
    return {
        "W_E": torch.eye(task.d_vocab),
        "W_pos": torch.zeros(task.n_pos, task.d_vocab),
        **{name: torch.as_tensor(heads[name]).float() for name in HEAD_WEIGHTS},
        "W_U": torch.eye(task.d_vocab),
    }


#: A trigram counts as solved (by the model, or by one head alone) when its output is the argmax on at least this
#: share of the inputs that hold the source.
SOLVED_FRACTION = 0.99
#: Section 5: a head counts as used by a signal token when it puts at least this much attention on it on average.
USED_ATTENTION = 0.2
#: Section 7's features: removing a context token must lower the prediction's probability by this much on average.
FEATURE_DROP = 0.2


# --------------------------------------------------------------------------------------------------------------
# The zoo's toy models: trained longer than the notebook's, the best of 4 seeds kept
# --------------------------------------------------------------------------------------------------------------

#: The zoo models' training: 2,000 steps (the notebook's 1,000 reach 100% accuracy, these also the confident
#: predictions that section 7's feature definitions rely on), 4 instances, the one with the lowest loss kept.
ZOO_TRAIN = dict(steps=2000, instances=4)
#: Zoo name -> (task, n_heads, d_head).
ZOO_MODELS = {
    "trigrams-3x2": ("skip_trigrams", 3, 2, 1),
    "trigrams-5x2": ("skip_trigrams", 5, 2, 1),
    "source-pairs-2x1": ("source_pairs", None, 2, 1),
}


def zoo_task(name: str) -> SkipTrigrams | SourcePairs:
    kind, n, _, _ = ZOO_MODELS[name]
    return skip_trigrams(n) if kind == "skip_trigrams" else SourcePairs()


def zoo_metrics(model, task: SkipTrigrams | SourcePairs) -> dict[str, float]:
    """What a zoo card records and the tests re-measure: accuracy and loss on determined inputs (fixed seed)."""
    if isinstance(task, SkipTrigrams):
        tokens, targets, _ = task.batch(4096, torch.Generator().manual_seed(777), source_probability=1.0)
    else:
        tokens, targets = task.batch(4096, torch.Generator().manual_seed(777))
    with torch.no_grad():
        logits = read_off(model, tokens)
    return {
        "accuracy": float((logits.argmax(-1) == targets).float().mean()),
        "loss": float(F.cross_entropy(logits, targets)),
    }


def train_zoo_model(name: str, seed: int = 0, progress: bool = True, steps: int | None = None):
    """Train a zoo model's 8 instances and return the best as a course model, with its card's training fields."""
    task = zoo_task(name)
    _, _, n_heads, d_head = ZOO_MODELS[name]
    batched, result = train_heads(
        task,
        n_heads,
        d_head,
        instances=ZOO_TRAIN["instances"],
        steps=steps or ZOO_TRAIN["steps"],
        seed=seed,
        progress=progress,
    )
    losses = [zoo_metrics(batched.bridge(i), task)["loss"] for i in range(batched.n_instances)]
    best = min(range(len(losses)), key=losses.__getitem__)
    return batched.bridge(best), result, best


def z_figure(z: Tensor, tokens: Tensor, has_source: Tensor, task: SkipTrigrams, sae=None) -> go.Figure:
    """``hook_z`` at the read-off of a 2-head, ``d_head = 1`` model as points in the plane (``z [batch, 2]``), one
    colour per destination ``b`` (inputs with the source) and grey without it; an SAE's decoder directions drawn
    from its ``b_dec``, as long as its mean activation where it fires."""
    fig = go.Figure()
    fig.add_scatter(
        x=z[~has_source, 0].tolist(),
        y=z[~has_source, 1].tolist(),
        mode="markers",
        marker=dict(color="lightgrey", size=5),
        name="no A",
    )
    for b in task.destinations:
        rows = has_source & (tokens[:, -1] == b)
        fig.add_scatter(
            x=z[rows, 0].tolist(), y=z[rows, 1].tolist(), mode="markers", marker=dict(size=7), name=f"A ... b = {b}"
        )
    if sae is not None:
        with torch.no_grad():
            codes = sae.encode(z)  # [batch, d_sae]
        for latent in range(codes.shape[1]):
            active = codes[:, latent] > 0
            if not active.any():
                continue
            start = sae.b_dec.detach()
            end = start + codes[active, latent].mean() * sae.W_dec[latent].detach()
            fig.add_scatter(
                x=[float(start[0]), float(end[0])],
                y=[float(start[1]), float(end[1])],
                mode="lines",
                line=dict(color="black", dash="dot"),
                name=f"latent {latent}",
                showlegend=False,
            )
            fig.add_annotation(x=float(end[0]), y=float(end[1]), text=f"latent {latent}", showarrow=False, yshift=10)
    fig.update_layout(
        title="hook_z at the read-off: one point per input (dotted: the SAE's live latents)",
        xaxis_title="z of L0H0",
        yaxis_title="z of L0H1",
        height=450,
    )
    return fig
