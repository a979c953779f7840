"""Chapter 03's tools for self-repair in a language model: the zoo's ``stdlib-2l`` (section 4) and, online, GPT-2
small on IOI (section 6).

Section 4 follows Rushing & Nanda (2024), "Explorations of self-repair in language models". A head is
resample-ablated (its ``hook_z`` replaced, at every position, by the same head's ``hook_z`` on another text), and the
change in the logit of the correct next token is split in two:

- the **direct effect** of the ablation: how much the head's own path to the logits changes, read through the final
  LayerNorm with the clean run's scale (what direct logit attribution predicts the ablation will cost);
- the **total effect**: how much the logit actually changes.

Self-repair is ``direct - total``: the part of the prediction the rest of the model gives back. Because the final
LayerNorm is the only nonlinearity after the last layer, the logit of token ``t`` is exactly
``sum_c a_c / scale + constant``, where ``a_c`` is component ``c``'s centred output times the LayerNorm weight,
projected on ``W_U[:, t]`` (:func:`logit_components`). The repair then splits exactly into the LayerNorm's rescaling,
the other heads and the MLPs (the student's ``repair_parts``).
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from torch import Tensor

from .. import models, text

#: The zoo's language model (trained by the course on the standard library's source: ``recipes.train_stdlib_2l``).
LANGUAGE_MODEL = "stdlib-2l"
#: Rushing & Nanda measure each head on the tokens where its direct effect is largest: their top 2%.
TOP_FRACTION = 0.02
#: Held-out rows the chapter measures on (each 256 tokens): 32k predicted tokens, about 1 s per ablated head.
MEASURE_ROWS = 128
#: Their headline numbers, which the chapter's table sets beside ours.
PAPER_LAYERNORM_MAX_FRACTION = 0.30  # "the final LayerNorm alone can repair up to 30% of the direct effect"


def language_model(device: str = "cpu"):
    """``(model, tokenizer, card)``: the zoo's ``stdlib-2l`` and its BPE tokenizer (``tokenizers.Tokenizer``)."""
    model, card = models.load(LANGUAGE_MODEL, device=device)
    tokenizer = text.load_tokenizer(models.zoo_file(LANGUAGE_MODEL, "tokenizer.json"))
    return model, tokenizer, card


def held_out_tokens(n_rows: int | None = None) -> Tensor:
    """``[n_rows, 256]`` token ids (int64, BOS first) of held-out standard-library text, shipped beside the model so
    that every machine measures on the same tokens whatever its Python version."""
    from safetensors.torch import load_file

    rows = load_file(str(models.zoo_file(LANGUAGE_MODEL, "tokens.safetensors")))["held_out"].long()
    return rows if n_rows is None else rows[:n_rows]


def loss_by_position(model, tokens: Tensor, chunk: int = 32) -> Tensor:
    """``[pos - 1]``: the mean loss of predicting token ``i + 1`` at each position ``i`` over the rows of ``tokens``
    (in-context learning shows as a curve that keeps falling with position)."""
    losses = []
    with torch.no_grad():
        for rows in tokens.split(chunk):
            log_probs = model(rows)[:, :-1].log_softmax(-1)
            losses.append(-log_probs.gather(-1, rows[:, 1:, None])[..., 0])
    return torch.cat(losses).mean(0)


def repeated_text(rows: Tensor, half: int) -> Tensor:
    """``rows [n, pos]`` (BOS first) -> ``[n, 1 + 2 * half]``: BOS, each text's first ``half`` tokens, then the same
    tokens again (chapter 01's induction probe, on real text: an induction head predicts the second copy)."""
    first = rows[:, 1 : half + 1].long()
    return torch.cat([rows[:, :1].long(), first, first], dim=1)


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """The residual stream's parts in order: ``embed``, then per layer its heads ``L0H0 ..``, the attention bias
    ``L0 attn bias`` and the MLP ``mlp0``."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [f"L{layer}H{head}" for head in range(n_heads)] + [f"L{layer} attn bias", f"mlp{layer}"]
    return names


@dataclass
class LogitParts:
    """One run's logit of each correct next token, split by component (everything ``[batch, pos - 1]``):
    ``logit == sum(components.values()) / scale + constant``."""

    components: dict[str, Tensor]  # name -> a_c: centred output x LayerNorm weight, projected on W_U[:, next token]
    scale: Tensor  # the final LayerNorm's scale (the root mean square of the centred residual stream)
    constant: Tensor  # what no component controls: the LayerNorm bias and the unembedding bias, read at the token
    logit: Tensor  # the model's logit of the correct next token


def logit_parts(model, cache, tokens: Tensor) -> LogitParts:
    """Split every correct next token's logit (``tokens[:, 1:]``) by residual-stream component (module docstring)."""
    next_tokens = tokens[:, 1:]  # [batch, pos - 1]
    readout = einops.rearrange(model.W_U[:, next_tokens], "d batch pos -> batch pos d") * model.ln_final.w

    def project(x: Tensor) -> Tensor:  # [batch, pos, d_model] -> [batch, pos - 1]
        x = x[:, :-1]
        return ((x - x.mean(-1, keepdim=True)) * readout).sum(-1)

    components = {"embed": project(cache["hook_embed"] + cache["hook_pos_embed"])}
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [batch, pos, head, d_head]
        per_head = einops.einsum(z, model.W_O[layer], "b p h dh, h dh d -> b p h d")
        for head in range(model.cfg.n_heads):
            components[f"L{layer}H{head}"] = project(per_head[:, :, head])
        components[f"L{layer} attn bias"] = project(model.b_O[layer].expand_as(per_head[:, :, 0]))
        components[f"mlp{layer}"] = project(cache[f"blocks.{layer}.hook_mlp_out"])
    scale = cache["ln_final.hook_scale"][:, :-1, 0]
    constant = (model.ln_final.b @ model.W_U + model.b_U)[next_tokens]
    if "next_token_logit" in cache:  # what _cached_run keeps
        logit = cache["next_token_logit"]
    else:  # a full cache (model.run_with_cache) holds every logit
        logit = cache["unembed.hook_out"][:, :-1].gather(-1, next_tokens[..., None])[..., 0]
    return LogitParts(components, scale, constant, logit)


def resample_permutation(batch: int, seed: int) -> Tensor:
    """Which row each row's ablated activations come from: a random derangement (no row keeps its own)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.arange(batch) + torch.randint(1, batch, (1,), generator=generator)) % batch


def _cached_run(model, tokens: Tensor, fwd_hooks=()) -> dict[str, Tensor]:
    """A forward pass that keeps only what :func:`logit_parts` reads, and the logit of each correct next token
    (``"next_token_logit"``) rather than all the logits: 128 texts' logits are 0.5 GB, which two runs would hold at
    once."""
    wanted = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale"}
    for layer in range(model.cfg.n_layers):
        wanted |= {f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"}
    kept: dict[str, Tensor] = {}

    def keeper(name: str):  # by the name asked for: the bridge's hook.name may be an alias's target
        def keep(activation: Tensor, hook) -> None:
            kept[name] = activation.detach()

        return keep

    def keep_logit(logits: Tensor, hook) -> None:
        kept["next_token_logit"] = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]

    hooks = list(fwd_hooks) + [(name, keeper(name)) for name in sorted(wanted)] + [("unembed.hook_out", keep_logit)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    return kept


def resample_ablated_parts(
    model, tokens: Tensor, layer: int, head: int, seed: int = 0, clean_cache=None
) -> tuple[LogitParts, LogitParts]:
    """``(clean, ablated)`` logit parts when head ``L{layer}H{head}``'s ``hook_z`` is replaced, at every position,
    by its value on another row of ``tokens`` (Rushing & Nanda's resample ablation). Pass ``clean_cache`` (from
    an earlier call's run) to skip the clean forward pass."""
    source = resample_permutation(len(tokens), seed)
    clean_cache = _cached_run(model, tokens) if clean_cache is None else clean_cache
    donor = clean_cache[f"blocks.{layer}.attn.hook_z"][source, :, head]  # [batch, pos, d_head]

    def replace(z: Tensor, hook) -> Tensor:
        z = z.clone()
        z[:, :, head] = donor
        return z

    ablated_cache = _cached_run(model, tokens, [(f"blocks.{layer}.attn.hook_z", replace)])
    with torch.no_grad():
        return logit_parts(model, clean_cache, tokens), logit_parts(model, ablated_cache, tokens)


def self_repair_table(model, tokens: Tensor, repair_parts, summarise, fraction: float = TOP_FRACTION, seed: int = 0):
    """Every head resample-ablated in turn; ``repair_parts`` and ``summarise`` are the chapter's exercises 4.1 and
    4.2 (yours once they pass). Returns a pandas DataFrame, one row per head (``L0H0`` ..), with ``summarise``'s
    columns and ``repair_spread``: the standard deviation of the per-token repair (direct - total) over the same
    top tokens, relative to their mean direct effect (how noisy the repair is)."""
    import pandas as pd

    clean_cache = _cached_run(model, tokens)
    rows = {}
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            name = f"L{layer}H{head}"
            clean, ablated = resample_ablated_parts(model, tokens, layer, head, seed=seed, clean_cache=clean_cache)
            parts = repair_parts(clean, ablated, name)
            direct = parts["direct"].flatten()
            top = direct.topk(max(1, int(fraction * direct.numel()))).indices
            repair = (parts["direct"] - parts["total"]).flatten()[top]
            rows[name] = dict(summarise(parts, fraction), repair_spread=float(repair.std() / direct[top].mean()))
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------------------------
# Section 6: GPT-2 small on IOI (online; tested offline on real_models.make_tiny_gpt2)
# --------------------------------------------------------------------------------------------------------------

#: ARENA's IOI bonus numbers (GPT-2 small, name mover 9.9 mean-ablated at END with means from ABC prompts of the same
#: template): published-results.md. Ours come from our own prompts, so they differ somewhat.
ARENA_BACKUP = {
    "logit_diff": 2.8052,
    "direct_effect": 1.7086,
    "predicted_after_ablation": 1.0966,
    "measured_after_ablation": 2.6290,
    "ln_scale_ratio": 1.04,
}
IOI_TEMPLATES = (
    "When{a} and{b} went to the store,{s} gave a drink to",
    "When{a} and{b} went to the park,{s} gave a ball to",
    "Then,{a} and{b} had a long argument, and afterwards{s} said to",
    "After{a} and{b} went to the office,{s} gave a book to",
)
IOI_NAMES = (
    " Mary John Tom James Dan Sid Martin Amy Lisa Michael Sarah Paul Kate Ben Anna Mark Jane Adam Laura Eric"
).split()


@dataclass
class IOIPrompts:
    tokens: Tensor  # [n, pos]: BOS then the prompt; every prompt of a template has the same length
    io: Tensor  # [n] the indirect object's token (the right answer)
    s: Tensor  # [n] the subject's token
    template: Tensor  # [n] which template
    abc_tokens: Tensor  # [n, pos]: the same prompts with the second subject replaced by a third name


def _fill(template: str, first: str, second: str, subject: str) -> str:
    return template.format(a=" " + first, b=" " + second, s=" " + subject)


def ioi_prompts(tokenizer, n_per_template: int = 16, seed: int = 0, names=IOI_NAMES) -> dict[int, IOIPrompts]:
    """IOI prompts (half ABBA, half BABA) grouped by template: ``{template index: IOIPrompts}``.

    A name's token is the last token of ``" " + name``; names are kept only if that takes the same number of tokens
    as for the first name, so prompts of one template line up position by position (on GPT-2 every default name is
    one token)."""
    lengths = {name: len(tokenizer.encode(" " + name)) for name in names}
    names = [name for name in names if lengths[name] == lengths[names[0]]]
    if len(names) < 3:
        raise ValueError("IOI needs at least three names that the tokenizer encodes to the same number of tokens.")
    token_of = {name: tokenizer.encode(" " + name)[-1] for name in names}
    bos = tokenizer.bos_token_id
    generator = torch.Generator().manual_seed(seed)
    groups = {}
    for index, template in enumerate(IOI_TEMPLATES):
        rows, abc_rows, io, s = [], [], [], []
        for i in range(n_per_template):
            a_i, b_i, c_i = torch.randperm(len(names), generator=generator)[:3].tolist()
            io_name, s_name, other = names[a_i], names[b_i], names[c_i]
            first, second = (io_name, s_name) if i % 2 == 0 else (s_name, io_name)  # ABBA, then BABA
            rows.append([bos] + tokenizer.encode(_fill(template, first, second, s_name)))
            abc_rows.append([bos] + tokenizer.encode(_fill(template, first, second, other)))
            io.append(token_of[io_name])
            s.append(token_of[s_name])
        groups[index] = IOIPrompts(
            tokens=torch.tensor(rows),
            io=torch.tensor(io),
            s=torch.tensor(s),
            template=torch.full((len(rows),), index),
            abc_tokens=torch.tensor(abc_rows),
        )
    return groups


def _end_direct_effect(model, z: Tensor, layer: int, head: int, direction: Tensor, scale: Tensor) -> Tensor:
    """``z [n, d_head]`` of one head at the last position -> ``[n]``: its output's direct effect on the logit
    difference ``direction [d_model, n]``, through the final LayerNorm with the clean run's ``scale [n]``."""
    out = z @ model.W_O[layer, head]  # [n, d_model]
    out = out - out.mean(-1, keepdim=True)
    return (out * model.ln_final.w * direction.T).sum(-1) / scale


def _measure_template(model, group: IOIPrompts, layer: int, head: int) -> dict[str, Tensor]:
    """One template's prompts: per-prompt clean and ablated logit differences, the ablation's direct effect and the
    final LayerNorm's scale ratio (see :func:`backup_measurement`)."""
    hook_z = f"blocks.{layer}.attn.hook_z"
    logits, cache = model.run_with_cache(group.tokens)
    _, abc_cache = model.run_with_cache(group.abc_tokens, names_filter=lambda name: name == hook_z)
    mean_z = abc_cache[hook_z][:, -1, head].mean(0)  # [d_head]

    def ablate(z: Tensor, hook) -> Tensor:
        z = z.clone()
        z[:, -1, head] = mean_z
        return z

    with model.hooks(fwd_hooks=[(hook_z, ablate)]):
        ablated_logits, ablated_cache = model.run_with_cache(group.tokens)
    rows = torch.arange(len(group.tokens))
    direction = model.W_U[:, group.io] - model.W_U[:, group.s]  # [d_model, n]
    scale = cache["ln_final.hook_scale"][:, -1, 0]  # [n]
    clean_z = cache[hook_z][:, -1, head]
    return {
        "logit_diff": logits[rows, -1, group.io] - logits[rows, -1, group.s],
        "measured": ablated_logits[rows, -1, group.io] - ablated_logits[rows, -1, group.s],
        "direct": _end_direct_effect(model, clean_z, layer, head, direction, scale)
        - _end_direct_effect(model, mean_z.expand_as(clean_z), layer, head, direction, scale),
        "scale_ratio": scale / ablated_cache["ln_final.hook_scale"][:, -1, 0],
    }


def backup_measurement(model, prompts: dict[int, IOIPrompts], layer: int, head: int) -> dict[str, float]:
    """ARENA's measurement of the hydra effect: mean-ablate one name mover at the last position, with the mean of its
    ``hook_z`` over the ABC prompts of the same template, and compare the logit difference that its direct effect
    predicts (clean minus direct effect) with the one measured. Means over all prompts. ``ln_scale_ratio`` is the
    clean run's final LayerNorm scale over the ablated run's (above 1: the ablated run's logits are amplified).
    Reads the final LayerNorm's scale from ``ln_final.hook_scale``, so the LayerNorm must not be folded away
    (``boot_transformers``' default, and the course's own models)."""
    with torch.no_grad():
        measured = [_measure_template(model, group, layer, head) for group in prompts.values()]
    mean = {key: float(torch.cat([m[key] for m in measured]).mean()) for key in measured[0]}
    return {
        "logit_diff": mean["logit_diff"],
        "direct_effect": mean["direct"],
        "predicted_after_ablation": mean["logit_diff"] - mean["direct"],
        "measured_after_ablation": mean["measured"],
        "ln_scale_ratio": mean["scale_ratio"],
    }
