"""Chapter 01, "Circuits": the tools the chapter's cells use around the student's exercises.

The room holds three things (every chapter's package has the same shape):

- this module: the chapter's tools that are *not* exercises (losses and metrics, the ablation and faithfulness
  harnesses, the counterexample hunt's standard probe). Where a tool needs an exercise's computation it takes the
  function as an argument (``ablate=``, ``score_fn=``), so the notebook passes the student's own;
- :mod:`.reference`: the exercises' answers, generated from ``solutions/01_circuits/01_circuits.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

Shapes follow TransformerLens: ``pattern [batch, n_heads, query_pos, key_pos]``, ``z [batch, pos, n_heads,
d_head]``, ``W_O [n_heads, d_head, d_model]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import tasks

#: Heads whose induction (or previous-token) score exceeds this count as such heads (the TransformerLens demos'
#: convention).
INDUCTION_THRESHOLD = 0.4
#: A head does its job at a query position when it puts at least this share of its attention on the key the job
#: names (section 2's "where does a head work"): at least as much as on all other keys together.
ATTENTION_MAJORITY = 0.5

#: ``ablate(z, head, method, reference, resample_index) -> z'``: the signature of the chapter's ``ablate_head``.
AblateFn = Callable[..., Tensor]


# --------------------------------------------------------------------------------------------------------------
# Losses and metrics
# --------------------------------------------------------------------------------------------------------------


def per_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """``[batch, pos - 1]``: the loss of predicting ``tokens[:, i + 1]`` from ``logits[:, i]``."""
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


def logit_diff(logits: Tensor, answer: Tensor, wrong: Tensor) -> Tensor:
    """Mean over the batch of ``logit[answer] - logit[wrong]`` at the last position. ``logits [batch, pos, vocab]``."""
    last = logits[:, -1]
    return (last.gather(-1, answer[:, None]) - last.gather(-1, wrong[:, None])).mean()


@dataclass(frozen=True)
class LogitDiff:
    """The patching metric ``logits -> logit_diff(logits, answer, wrong)`` as an object (a check hands it to the
    student's function; unlike a lambda it can travel to a graded notebook's kernel)."""

    answer: Tensor
    wrong: Tensor

    def __call__(self, logits: Tensor) -> Tensor:
        return logit_diff(logits, self.answer, self.wrong)


def all_head_scores(cache, n_layers: int, score_fn: Callable[..., Tensor], **kwargs) -> Tensor:
    """``[n_layers, n_heads]``: ``score_fn`` (one of the chapter's scores) applied to every layer's pattern."""
    return torch.stack([score_fn(cache[f"blocks.{layer}.attn.hook_pattern"], **kwargs) for layer in range(n_layers)])


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """``["L0H0", "L0H1", ...]``: every head's name, layer by layer."""
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]


# --------------------------------------------------------------------------------------------------------------
# Ablation and faithfulness harnesses
# --------------------------------------------------------------------------------------------------------------


def run_with_heads_ablated(
    model,
    tokens: Tensor,
    heads: Sequence[tuple[int, int]],
    ablate: AblateFn,
    method: str = "mean",
    reference_tokens: Tensor | None = None,
    seed: int = 0,
) -> Tensor:
    """Logits of ``model`` on ``tokens`` with every ``(layer, head)`` in ``heads`` ablated by ``ablate`` (the
    chapter's ``ablate_head``) with ``method``; mean and resample ablation read ``reference_tokens``' activations."""
    reference_cache = None
    if method != "zero":
        if reference_tokens is None:
            raise ValueError("mean and resample ablation need reference_tokens")
        with torch.no_grad():
            _, reference_cache = model.run_with_cache(reference_tokens, names_filter=lambda n: n.endswith("hook_z"))
    resample_index = None
    if method == "resample":
        generator = torch.Generator().manual_seed(seed)
        resample_index = torch.randint(0, reference_tokens.shape[0], (tokens.shape[0],), generator=generator)

    hooks = []
    for layer in sorted({layer for layer, _ in heads}):
        layer_heads = [h for lh_layer, h in heads if lh_layer == layer]
        reference = None if reference_cache is None else reference_cache[f"blocks.{layer}.attn.hook_z"]

        def hook(z, hook, layer_heads=layer_heads, reference=reference):
            for head in layer_heads:
                z = ablate(z, head, method, reference, resample_index)
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)


def induction_reference_tokens(d_vocab: int, batch: int = 128, seed: int = 7) -> Tensor:
    """The reference distribution the chapter mean-ablates against: the induction model's training distribution."""
    return tasks.periodic_tokens(batch, 64, d_vocab, 6, 32, seed=seed)


def circuit_faithfulness(
    model, tokens: Tensor, mask: Tensor, circuit: Sequence[tuple[int, int]], ablate: AblateFn, reference_tokens: Tensor
) -> dict[str, float]:
    """How much of the full model's performance the circuit alone keeps, on the masked predictions.

    ``mask [batch, pos - 1]`` marks the predictions (of ``tokens[:, i + 1]`` from position ``i``) that count.
    Performance is the mean loss there; the circuit run mean-ablates (with ``ablate``) every head outside
    ``circuit``, the baseline mean-ablates every head. ``faithfulness = (loss_baseline - loss_circuit) /
    (loss_baseline - loss_full)``: 1 when the circuit alone does as well as the full model, 0 when it does no
    better than no heads at all. The ratio means something only when ``baseline_gap = loss_baseline - loss_full``
    is well above zero.
    """
    all_heads = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    outside = [lh for lh in all_heads if lh not in set(circuit)]
    mask = mask.bool()

    def masked_loss(logits: Tensor) -> float:
        return float(per_token_loss(logits, tokens)[mask].mean())

    with torch.no_grad():
        full_logits = model(tokens)
    full = masked_loss(full_logits)
    circuit_loss = masked_loss(run_with_heads_ablated(model, tokens, outside, ablate, "mean", reference_tokens))
    baseline = masked_loss(run_with_heads_ablated(model, tokens, all_heads, ablate, "mean", reference_tokens))
    predictions = full_logits[:, :-1].argmax(-1)
    accuracy = float((predictions == tokens[:, 1:])[mask].float().mean())
    return {
        "full_loss": full,
        "circuit_loss": circuit_loss,
        "baseline_loss": baseline,
        "full_accuracy": accuracy,
        "baseline_gap": baseline - full,
        "faithfulness": (baseline - circuit_loss) / (baseline - full),
    }


# --------------------------------------------------------------------------------------------------------------
# The counterexample hunt's standard probe (the baseline a counterexample is compared with)
# --------------------------------------------------------------------------------------------------------------

#: The standard probe: BOS + PROBE_HALF_LEN random tokens + the same tokens again.
PROBE_HALF_LEN = 30
#: The induction model's vocabulary (token 0 is BOS) and context length.
PROBE_D_VOCAB = 128
PROBE_N_CTX = 64


def probe_batch(batch: int, seed: int) -> Tensor:
    """``[batch, 1 + 2 PROBE_HALF_LEN]``: the standard induction probe, in the shape of the counterexample hunt's
    ``make_batch(batch, seed)`` (a baseline, not a counterexample)."""
    return tasks.repeated_tokens(batch, PROBE_HALF_LEN, PROBE_D_VOCAB, seed=seed)


def probe_predictions(tokens: Tensor) -> Tensor:
    """``[batch, pos - 1]`` bool, in the shape of the hunt's ``which_predictions(tokens)``: on ``BOS + x + x`` the
    predictions copying can make, from the second copy's first token on (position ``half_len + 1``, which predicts
    ``x_2``). Computed from the tokens' shape alone, as the hunt requires."""
    n_predictions = tokens.shape[1] - 1
    half_len = n_predictions // 2
    return (torch.arange(n_predictions) > half_len).expand(tokens.shape[0], n_predictions).clone()


# --------------------------------------------------------------------------------------------------------------
# Composition from the weights
# --------------------------------------------------------------------------------------------------------------


def k_composition_scores(
    model, score_fn: Callable[[Tensor, Tensor], Tensor], layer_a: int = 0, layer_b: int = 1
) -> Tensor:
    """``[n_heads(layer_a), n_heads(layer_b)]``: how much each later head's key reads each earlier head's output,
    scored by ``score_fn`` (the chapter's ``composition_score``).

    In the row-vector convention of TransformerLens, the earlier head writes ``x W_OV`` and the later head's QK
    circuit reads keys through ``W_K``: the score compares ``W_OV^{a}`` with ``W_QK^{b}`` transposed.
    """
    W_OV = model.W_V[layer_a] @ model.W_O[layer_a]  # [heads_a, d_model, d_model]
    W_QK = model.W_Q[layer_b] @ model.W_K[layer_b].transpose(-1, -2)  # [heads_b, d_model, d_model]
    return score_fn(W_OV[:, None], W_QK.transpose(-1, -2)[None])


# --------------------------------------------------------------------------------------------------------------
# The comparison table and the counterexample hunt's bar
# --------------------------------------------------------------------------------------------------------------

#: The course's in-context learning score: loss at a late second-copy position minus loss at an early first-copy
#: position (Olsson et al. use tokens 500 and 50; the course's sequences are at most 64 tokens long).
ICL_EARLY_POS = 10
ICL_LATE_POS = 50

#: A counterexample must take the circuit's faithfulness to at most this, against about 0.97 on the standard probe
#: (more than half of what the circuit explained there is gone). A distribution built from the architecture
#: reaches about 0.3.
COUNTEREXAMPLE_MAX_FAITHFULNESS = 0.5
#: ... while the full model still gets at least this fraction of the counted predictions right (the reference
#: distribution gives about 0.89, the model's own training distribution about 0.99 on the repeated half).
COUNTEREXAMPLE_MIN_ACCURACY = 0.7
#: Enough counted predictions that the measurement is not noise.
COUNTEREXAMPLE_MIN_PREDICTIONS = 500
#: Faithfulness divides by (loss with every head ablated - the full model's loss) on the counted predictions; unless
#: the heads matter there by at least this many nats, the ratio is noise over a small denominator.
COUNTEREXAMPLE_MIN_BASELINE_GAP = 1.0
#: Sequences drawn per measurement.
COUNTEREXAMPLE_BATCH = 128


from .studies import CIRCUIT_STUDIES, STUDY_SCENARIOS, CircuitStudy  # noqa: E402, F401 - section 8's data, re-exported
