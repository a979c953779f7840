"""Reference implementations for the "Circuits" chapter.

These are the answers the chapter's graders compare a student's code against (on fresh random inputs), and the
tools later chapters reuse. Shapes follow TransformerLens: ``pattern [batch, n_heads, query_pos, key_pos]``,
``z [batch, pos, n_heads, d_head]``, ``W_O [n_heads, d_head, d_model]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import einops
import torch
from torch import Tensor

from . import tasks

#: Heads whose induction score exceeds this count as induction heads (the convention of the TransformerLens demos).
INDUCTION_THRESHOLD = 0.4


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


def normalised_metric(value: Tensor | float, clean: Tensor | float, corrupted: Tensor | float) -> Tensor | float:
    """0 when ``value`` equals the corrupted run's, 1 when it equals the clean run's."""
    return (value - corrupted) / (clean - corrupted)


# --------------------------------------------------------------------------------------------------------------
# Attention-pattern scores
# --------------------------------------------------------------------------------------------------------------


def diagonal_score(pattern: Tensor, offset: int) -> Tensor:
    """``[n_heads]``: mean attention from each query position ``q`` to key ``q - offset``, over the batch and over every
    query position where that key exists. ``pattern [batch, n_heads, query_pos, key_pos]``."""
    diagonal = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)  # [batch, n_heads, n_valid_queries]
    return diagonal.mean(dim=(0, -1))


def previous_token_scores(pattern: Tensor) -> Tensor:
    """``[n_heads]``: mean attention from every query position ``q >= 1`` to ``q - 1`` (position 1 looks at BOS)."""
    return diagonal_score(pattern, 1)


def duplicate_token_scores(pattern: Tensor, half_len: int) -> Tensor:
    """``[n_heads]`` on ``BOS + x + x`` (``tasks.repeated_tokens``, ``x`` of length ``half_len``, so the copies sit at
    positions ``1 .. half_len`` and ``half_len + 1 .. 2 half_len``): mean attention from ``q`` to ``q - half_len`` over
    the ``half_len + 1`` queries where that key exists. These are the ``half_len`` second-copy tokens looking at their
    first copy, plus one first-copy query: the last first-copy token (``q = half_len``) looking at BOS."""
    return diagonal_score(pattern, half_len)


def induction_scores(pattern: Tensor, half_len: int) -> Tensor:
    """``[n_heads]`` on ``BOS + x + x``: mean attention from ``q`` to ``q - half_len + 1`` over the ``half_len + 2``
    queries where that key exists. These are the ``half_len`` second-copy tokens looking at the token *after* their
    first copy (the last one, ``q = 2 half_len``, looks at the first token of the second copy, which follows the
    first copy's last token), plus two first-copy queries: ``q = half_len - 1`` looking at BOS and ``q = half_len``
    looking at position 1. This is the common convention: mean attention on the diagonal at offset
    ``-(half_len - 1)``, over every query where it exists."""
    return diagonal_score(pattern, half_len - 1)


def all_head_scores(cache, n_layers: int, score_fn: Callable[..., Tensor], **kwargs) -> Tensor:
    """``[n_layers, n_heads]``: ``score_fn`` applied to every layer's attention pattern in ``cache``."""
    return torch.stack([score_fn(cache[f"blocks.{layer}.attn.hook_pattern"], **kwargs) for layer in range(n_layers)])


# --------------------------------------------------------------------------------------------------------------
# Direct logit attribution
# --------------------------------------------------------------------------------------------------------------


def head_direct_logit_attribution(z: Tensor, W_O: Tensor, direction: Tensor) -> Tensor:
    """``[batch, n_heads]``: each head's output ``z_h @ W_O[h]`` projected on a per-example logit direction.

    ``z [batch, n_heads, d_head]`` (one position), ``W_O [n_heads, d_head, d_model]``, ``direction [batch, d_model]``
    (for a logit difference, ``W_U[:, answer] - W_U[:, wrong]``).
    """
    head_out = einops.einsum(z, W_O, "batch head d_head, head d_head d_model -> batch head d_model")
    return einops.einsum(head_out, direction, "batch head d_model, batch d_model -> batch head")


def logit_diff_decomposition(model, cache, answer: Tensor, wrong: Tensor) -> tuple[Tensor, list[str]]:
    """``([n_components], labels)``: every additive term of the last-position logit difference, averaged over the batch.

    The course's models have no LayerNorm, so the residual stream is exactly a sum of these terms and the
    decomposition sums to the true logit difference (up to float rounding).
    """
    direction = model.W_U[:, answer].T - model.W_U[:, wrong].T  # [batch, d_model]
    terms, labels = [], []

    def add(label: str, resid: Tensor) -> None:  # resid [batch, d_model]
        terms.append((resid * direction).sum(-1).mean())
        labels.append(label)

    add("embed", cache["hook_embed"][:, -1])
    add("pos_embed", cache["hook_pos_embed"][:, -1])
    for layer in range(model.cfg.n_layers):
        per_head = head_direct_logit_attribution(cache[f"blocks.{layer}.attn.hook_z"][:, -1], model.W_O[layer], direction)
        for head in range(model.cfg.n_heads):
            terms.append(per_head[:, head].mean())
            labels.append(f"L{layer}H{head}")
        add(f"L{layer} b_O", model.b_O[layer].expand(direction.shape[0], -1))
    b_U = model.b_U
    terms.append((b_U[answer] - b_U[wrong]).mean())
    labels.append("b_U")
    return torch.stack(terms), labels


# --------------------------------------------------------------------------------------------------------------
# Ablations
# --------------------------------------------------------------------------------------------------------------


def ablate_head(z: Tensor, head: int, method: str, reference: Tensor | None = None,
                resample_index: Tensor | None = None) -> Tensor:
    """Return a copy of ``z [batch, pos, n_heads, d_head]`` with one head's output ablated.

    - ``"zero"``: set it to 0;
    - ``"mean"``: set it to its mean over the batch of ``reference [ref_batch, ref_pos, n_heads, d_head]``
      (per position);
    - ``"resample"``: set row ``i`` to ``reference[resample_index[i]]``, the head's value on another input.

    ``reference`` may be longer than ``z`` (``ref_pos >= pos``): only its first ``pos`` positions are used, which is
    exact for a causal model.
    """
    out = z.clone()
    if method != "zero":
        if reference is None:
            raise ValueError(f"{method} ablation needs reference activations")
        if reference.shape[1] < z.shape[1]:
            raise ValueError(f"reference has {reference.shape[1]} positions, fewer than the {z.shape[1]} to ablate")
        reference = reference[:, : z.shape[1]]
    if method == "zero":
        out[:, :, head] = 0.0
    elif method == "mean":
        out[:, :, head] = reference[:, :, head].mean(dim=0)
    elif method == "resample":
        out[:, :, head] = reference[resample_index][:, :, head]
    else:
        raise ValueError(f"method must be 'zero', 'mean' or 'resample', not {method!r}")
    return out


def run_with_heads_ablated(model, tokens: Tensor, heads: list[tuple[int, int]], method: str = "mean",
                           reference_tokens: Tensor | None = None, seed: int = 0) -> Tensor:
    """Logits of ``model`` on ``tokens`` with every ``(layer, head)`` in ``heads`` ablated."""
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
        layer_heads = [h for l, h in heads if l == layer]
        reference = None if reference_cache is None else reference_cache[f"blocks.{layer}.attn.hook_z"]

        def hook(z, hook, layer_heads=layer_heads, reference=reference):
            for head in layer_heads:
                z = ablate_head(z, head, method, reference, resample_index)
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)


# --------------------------------------------------------------------------------------------------------------
# Activation patching
# --------------------------------------------------------------------------------------------------------------

MetricFn = Callable[[Tensor], Tensor]  # logits [batch, pos, vocab] -> scalar


def patch_residual_by_layer_pos(model, clean: Tensor, corrupted: Tensor, metric: MetricFn) -> Tensor:
    """``[n_layers, pos]``: the metric of the corrupted run with ``blocks.L.hook_resid_pre`` at one position
    replaced by its value in the clean run."""
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
        results = torch.zeros(model.cfg.n_layers, clean.shape[1])
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_pre"
            for pos in range(clean.shape[1]):
                def hook(resid, hook, pos=pos, name=name):
                    resid = resid.clone()
                    resid[:, pos] = clean_cache[name][:, pos]
                    return resid

                results[layer, pos] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
    return results


def patch_heads(model, clean: Tensor, corrupted: Tensor, metric: MetricFn) -> Tensor:
    """``[n_layers, n_heads]``: the metric of the corrupted run with one head's ``hook_z`` (every position) replaced
    by its value in the clean run."""
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
        results = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_z"
            for head in range(model.cfg.n_heads):
                def hook(z, hook, head=head, name=name):
                    z = z.clone()
                    z[:, :, head] = clean_cache[name][:, :, head]
                    return z

                results[layer, head] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
    return results


def attribution_patch_heads(model, clean: Tensor, corrupted: Tensor, metric: MetricFn) -> Tensor:
    """``[n_layers, n_heads]``: the first-order (gradient) estimate of :func:`patch_heads`:
    ``metric(corrupted) + sum over pos, d_head of grad_z metric(corrupted) * (z_clean - z_corrupted)``.

    Two forward passes and one backward pass for every head at once, instead of one forward pass per head.

    The gradient must be the *total* derivative, through every later layer: each hook adds a zero "probe" that
    requires grad (``z + probe``) and differentiates with respect to the probes. Replacing ``z`` by
    ``z.detach().requires_grad_(True)`` instead would cut the graph at every hooked layer, so an early head would
    only get its direct path to the logits (for layer 0 of the induction model: almost nothing).
    """
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n in names)
    probes: dict[str, Tensor] = {}
    corrupted_z: dict[str, Tensor] = {}

    def add_probe(z, hook, name):
        # `hook.name` can be the bridge's internal name, so each hook is told which name it stands for.
        corrupted_z[name] = z.detach()
        probes[name] = torch.zeros_like(z, requires_grad=True)
        return z + probes[name]

    with torch.enable_grad():
        hooks = [(name, functools.partial(add_probe, name=name)) for name in names]
        value = metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))
        grads = torch.autograd.grad(value, [probes[name] for name in names])
    estimates = []
    for name, grad in zip(names, grads):
        delta = clean_cache[name] - corrupted_z[name]  # [batch, pos, n_heads, d_head]
        estimates.append(value.detach() + einops.einsum(grad, delta, "b p h d, b p h d -> h"))
    return torch.stack(estimates)


# --------------------------------------------------------------------------------------------------------------
# Path patching and composition
# --------------------------------------------------------------------------------------------------------------


def path_patch_key(model, clean: Tensor, corrupted: Tensor, sender: tuple[int, int], receiver: tuple[int, int],
                   metric: MetricFn) -> Tensor:
    """The metric of the corrupted run in which only the path ``sender head -> receiver head's key`` carries the
    clean run's activations; every other path stays corrupted.

    Exact for the course's models: with no LayerNorm, the receiver's key is linear in the residual stream, so the
    sender's clean-minus-corrupted output changes it by ``(delta_out) @ W_K[receiver]``.
    """
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    if s_layer >= r_layer:
        raise ValueError("the sender must sit in an earlier layer than the receiver")
    z_name = f"blocks.{s_layer}.attn.hook_z"
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n == z_name)
        _, corrupted_cache = model.run_with_cache(corrupted, names_filter=lambda n: n == z_name)
        delta_z = clean_cache[z_name][:, :, s_head] - corrupted_cache[z_name][:, :, s_head]  # [batch, pos, d_head]
        delta_out = delta_z @ model.W_O[s_layer, s_head]  # [batch, pos, d_model]
        delta_k = delta_out @ model.W_K[r_layer, r_head]  # [batch, pos, d_head]

        def hook(k, hook):
            k = k.clone()
            k[:, :, r_head] = k[:, :, r_head] + delta_k
            return k

        return metric(model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{r_layer}.attn.hook_k", hook)]))


def composition_score(W_A: Tensor, W_B: Tensor) -> Tensor:
    """``||W_A W_B||_F / (||W_A||_F ||W_B||_F)``: how much of ``W_B``'s output ``W_A`` reads (Elhage et al. 2021).
    Batched over leading dimensions."""
    product = W_A @ W_B
    return product.norm(dim=(-2, -1)) / (W_A.norm(dim=(-2, -1)) * W_B.norm(dim=(-2, -1)))


def k_composition_scores(model, layer_a: int = 0, layer_b: int = 1) -> Tensor:
    """``[n_heads(layer_a), n_heads(layer_b)]``: how much each later head's key reads each earlier head's output.

    In the row-vector convention of TransformerLens, the earlier head writes ``x W_OV`` and the later head's QK
    circuit reads keys through ``W_K``: the score compares ``W_OV^{a}`` with ``W_QK^{b}`` transposed.
    """
    W_OV = model.W_V[layer_a] @ model.W_O[layer_a]  # [heads_a, d_model, d_model]
    W_QK = model.W_Q[layer_b] @ model.W_K[layer_b].transpose(-1, -2)  # [heads_b, d_model, d_model]
    return composition_score(W_OV[:, None], W_QK.transpose(-1, -2)[None])


# --------------------------------------------------------------------------------------------------------------
# Faithfulness of the induction circuit
# --------------------------------------------------------------------------------------------------------------


def induction_reference_tokens(d_vocab: int, batch: int = 128, seed: int = 7) -> Tensor:
    """The reference distribution the chapter mean-ablates against: the induction model's training distribution."""
    return tasks.periodic_tokens(batch, 64, d_vocab, 6, 32, seed=seed)


#: The standard probe of the counterexample hunt: BOS + PROBE_HALF_LEN random tokens + the same tokens again.
PROBE_HALF_LEN = 30
#: The induction model's vocabulary (token 0 is BOS).
PROBE_D_VOCAB = 128


def probe_batch(batch: int, seed: int) -> Tensor:
    """``[batch, 1 + 2 PROBE_HALF_LEN]``: the standard induction probe, in the shape of the counterexample hunt's
    ``make_batch(batch, seed)`` (the baseline a counterexample is compared with, not a counterexample)."""
    return tasks.repeated_tokens(batch, PROBE_HALF_LEN, PROBE_D_VOCAB, seed=seed)


def probe_predictions(tokens: Tensor) -> Tensor:
    """``[batch, pos - 1]`` bool, in the shape of the hunt's ``which_predictions(tokens)``: on ``BOS + x + x`` the
    predictions copying can make, i.e. from the second copy's first token on (position ``half_len + 1``, which
    predicts ``x_2``). Computed from the tokens' shape alone, as the hunt requires."""
    n_predictions = tokens.shape[1] - 1
    half_len = n_predictions // 2
    return (torch.arange(n_predictions) > half_len).expand(tokens.shape[0], n_predictions).clone()


def circuit_faithfulness(model, tokens: Tensor, mask: Tensor, circuit: list[tuple[int, int]],
                         reference_tokens: Tensor) -> dict[str, float]:
    """How much of the full model's performance the circuit alone keeps, on the masked predictions.

    ``mask [batch, pos - 1]`` marks the predictions (of ``tokens[:, i + 1]`` from position ``i``) that count.
    Performance is the mean loss there; the circuit run mean-ablates every head outside ``circuit``, the baseline
    mean-ablates every head. ``faithfulness = (loss_baseline - loss_circuit) / (loss_baseline - loss_full)``: 1 when
    the circuit alone does as well as the full model, 0 when it does no better than no heads at all. The ratio is
    only meaningful when ``loss_baseline - loss_full`` (returned as ``baseline_gap``) is well above zero.
    """
    all_heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    outside = [lh for lh in all_heads if lh not in set(circuit)]
    mask = mask.bool()

    def masked_loss(logits: Tensor) -> float:
        return float(per_token_loss(logits, tokens)[mask].mean())

    with torch.no_grad():
        full_logits = model(tokens)
    full = masked_loss(full_logits)
    circuit_loss = masked_loss(run_with_heads_ablated(model, tokens, outside, "mean", reference_tokens))
    baseline = masked_loss(run_with_heads_ablated(model, tokens, all_heads, "mean", reference_tokens))
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
# Section 8: what circuit studies found (data for the chapter's table and its quiz)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitStudy:
    """A study or theme from the deck's circuit-analysis slides and what the course's sources say it found.

    Every ``finding`` comes from the deck (``shared/deck/mechinterp-deck.txt``) or ``published-results.md``;
    ``secondary`` marks what that file takes from reimplementations or summaries rather than the paper itself.
    """

    name: str
    finding: str
    source: str
    secondary: bool = False


#: The quiz of section 8, one finding per study or theme (the answer key is derived from this order).
CIRCUIT_STUDIES: tuple[CircuitStudy, ...] = (
    CircuitStudy(
        "indirect object identification (IOI; Wang et al. 2022)",
        "in GPT-2 small, a circuit of heads with 87% faithfulness; the model's mean logit difference is 3.56 and it "
        "prefers the indirect object to the subject 99.3% of the time",
        "deck slides 19, 22 and 81; published-results.md"),
    CircuitStudy(
        "head specialisation",
        "heads that each do one nameable job: name movers, negative name movers and S-inhibition heads in IOI; "
        "previous-token and induction heads in this chapter",
        "deck slide 24 (a key discovery); published-results.md for the IOI classes"),
    CircuitStudy(
        "backup behaviour",
        "knocking out all of IOI's name-mover heads costs only about 5% of the logit difference: other heads take "
        "over",
        "deck slides 24 and 35 (discovered in the IOI paper); published-results.md"),
    CircuitStudy(
        "hydra effect (McGrath et al. 2023)",
        "ablating one attention layer makes another layer compensate, even in a model trained without dropout",
        "deck slides 24 and 36; published-results.md"),
    CircuitStudy(
        "ORION (Variengien, Dec 2023)",
        "a constellation of tasks studied together: question answering, type-hint understanding, factual recall, "
        "variable binding, translation and induction",
        "deck slides 19, 22 and 81 (the deck lists the tasks; the course's sources give no further result)"),
    CircuitStudy(
        "induction heads (Olsson et al. 2022)",
        "heads that attend to the token after an earlier copy of the current token (prefix matching) and raise "
        "that token's logit (copying)",
        "published-results.md"),
    CircuitStudy(
        "the smallest known induction setup",
        "a 2-layer attention-only model of 52k parameters learns repeated tokens on a CPU in 1,800 steps (loss from "
        "4.85 to about 0.09); a 1-layer attention-only model cannot",
        "published-results.md (secondary)", secondary=True),
)

#: Circuit analyses the deck lists on "big models" (slides 22-27) for which the course's sources record no result.
LISTED_WITHOUT_RESULT = ("pronoun selection", "greater than", "docstring", "time", "arithmetic",
                         "multiple choice QA")


def circuit_studies_quiz() -> tuple[list[str], dict[str, str]]:
    """``(studies, options)``: the quiz's studies in the chapter's order, and its findings lettered ``A, B, ...``
    in alphabetical order of their text (so the letters do not follow the studies' order)."""
    studies = [study.name for study in CIRCUIT_STUDIES]
    findings = sorted(study.finding for study in CIRCUIT_STUDIES)
    options = {chr(ord("A") + i): finding for i, finding in enumerate(findings)}
    return studies, options


def circuit_studies_key() -> dict[str, str]:
    """study -> the letter of its finding in :func:`circuit_studies_quiz`."""
    _, options = circuit_studies_quiz()
    letter_of = {finding: letter for letter, finding in options.items()}
    return {study.name: letter_of[study.finding] for study in CIRCUIT_STUDIES}
