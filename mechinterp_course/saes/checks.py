"""Chapter 04's checks: what the notebook's test cells call (``check.relu_sae_loss(relu_sae_loss)``).

Each check runs known answers and properties first, because those say *what* is wrong (an L1 penalty that a longer
decoder row can buy down; a decoder bias added instead of subtracted; an auxiliary loss that is not 1 when the dead
latents cannot fire; a resampled latent that is not pointed at an input), then compares with the reference
(:mod:`.reference`, generated from the solution notebook) on fresh random inputs. Hidden tests (``hidden=``) draw
other sizes. The sparse-coding exercise has no reference to match: it is graded by measurement on fresh data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import research
from ..checking import (
    Trial,
    as_tensor,
    call,
    check,
    compare,
    fail,
    is_hidden,
    no_training,
    tokens_only,
    trials,
    unchanged,
)
from ..sae import SAE, SAEConfig
from . import (
    CODE_MARGIN,
    RESAMPLE_ENCODER_SCALE,
    explained_variance,
    ground_truth,
    held_out_tokens,
    language_model,
    one_shot_codes,
    reference,
    support_f1,
)

ATOL, RTOL = 1e-5, 1e-4


def _feature_names(index: tuple[int, ...]) -> str:
    return f"instance {index[0]}, feature {index[1]}"


# --------------------------------------------------------------------------------------------------------------
# Section 1
# --------------------------------------------------------------------------------------------------------------


def _pentagon() -> Tensor:
    angles = torch.arange(5) * 2 * math.pi / 5
    return torch.stack([angles.cos(), angles.sin()], -1)[None]  # [1, 5, 2]


@check("feature_dimensionality")
def feature_dimensionality(fn) -> str:
    fn = tokens_only(fn, "feature_dimensionality")  # its arguments only: not the course's SAE, which computes the same
    known = [
        ("features in dimensions of their own (W = identity)", torch.eye(4)[None] * 1.7, 1.0),
        ("an antipodal pair", torch.tensor([[[0.0, 1.2], [0.0, -1.2]]]), 0.5),
        ("a regular pentagon", _pentagon() * 0.9, 0.4),
    ]
    for what, W, value in known:
        given = call(fn, W.clone())
        compare(given, torch.full(W.shape[:2], value), "D", context=f"for {what}", index=_feature_names)
    W = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]])
    given = as_tensor(call(fn, W.clone()), "D")
    if torch.isnan(given).any():
        fail("a feature with W_i = 0 gives NaN: its dimensionality is 0 (guard the division by ||W_i||).")
    compare(given, torch.tensor([[1.0, 0.0, 1.0]]), "D", context="with a zero feature", index=_feature_names)
    for trial in trials(3):
        inst, feat, hidden = trial.randint(1, 4), trial.randint(3, 12), trial.randint(2, 6)
        W = torch.randn(inst, feat, hidden, generator=trial.generator)
        before = W.clone()
        given = call(fn, W)
        unchanged(before, W, "W")
        compare(
            given,
            reference.feature_dimensionality(W),
            "D",
            context=f"for random W {tuple(W.shape)}",
            index=_feature_names,
            atol=ATOL,
            rtol=RTOL,
        )
    return "known answers (1, 1/2, 2/5, 0) and random weights"


# --------------------------------------------------------------------------------------------------------------
# Section 2
# --------------------------------------------------------------------------------------------------------------


def _random_sae(trial: Trial, d_in: int | None = None, d_sae: int | None = None) -> dict[str, Tensor]:
    g = trial.generator
    d_in = d_in or trial.randint(6, 16)
    d_sae = d_sae or trial.randint(2 * d_in, 3 * d_in)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in),
        "b_enc": 0.1 * torch.randn(d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g) * (0.5 + torch.rand(d_sae, 1, generator=g)),
        "b_dec": 0.3 * torch.randn(d_in, generator=g),
    }


def _three_scalars(result: Any, what: str) -> list[Tensor]:
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        fail(f"{what} should return three scalars (loss, mse, l1), got {type(result).__name__}.")
    values = [as_tensor(v, name) for v, name in zip(result, ("loss", "mse", "l1"))]
    for v, name in zip(values, ("loss", "mse", "l1")):
        if v.numel() != 1:
            fail(f"`{name}` should be a scalar (averaged over the batch), got shape {tuple(v.shape)}.")
    return [v.reshape(()) for v in values]


@check("relu_sae_loss")
def relu_sae_loss(fn) -> str:
    fn = tokens_only(fn, "relu_sae_loss")  # its arguments only: not the course's SAE, which computes the same
    names = ("loss", "mse", "l1")
    for trial in trials(4 if is_hidden() else 3):
        w = _random_sae(trial)
        x = torch.randn(trial.randint(5, 20), w["W_enc"].shape[0], generator=trial.generator)
        coefficient = 0.05 + float(torch.rand((), generator=trial.generator))
        given = _three_scalars(
            call(fn, x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], coefficient), "relu_sae_loss"
        )
        # Property 1: scaling a latent's encoder by c and its decoder by 1/c changes nothing.
        latent, c = trial.randint(0, w["W_enc"].shape[1] - 1), 4.0
        scaled = {k: v.clone() for k, v in w.items()}
        scaled["W_enc"][:, latent] *= c
        scaled["b_enc"][latent] *= c
        scaled["W_dec"][latent] /= c
        again = _three_scalars(
            call(fn, x, scaled["W_enc"], scaled["b_enc"], scaled["W_dec"], scaled["b_dec"], coefficient),
            "relu_sae_loss",
        )
        for name, a, b in zip(names, given, again):
            if not torch.isclose(a, b, rtol=1e-4, atol=1e-5):
                fail(
                    f"`{name}` changed ({float(a):.5g} -> {float(b):.5g}) when latent {latent}'s encoder was scaled "
                    f"by {c} and its decoder row by 1/{c}: the reconstruction is the same, so the loss must be. "
                    "Weight each activation's L1 by its decoder row's length."
                )
        # Property 2: b_dec is subtracted before encoding (shift x and b_dec together: nothing changes).
        shift = torch.randn(x.shape[1], generator=trial.generator)
        moved = _three_scalars(
            call(fn, x + shift, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"] + shift, coefficient), "relu_sae_loss"
        )
        for name, a, b in zip(names, given, moved):
            if not torch.isclose(a, b, rtol=1e-4, atol=1e-5):
                fail(
                    f"`{name}` changed when x and b_dec were shifted by the same vector: the encoder must see "
                    "x - b_dec, and the decoder add b_dec back."
                )
        expected = reference.relu_sae_loss(x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], coefficient)
        for name, a, b in zip(names, given, expected):
            compare(a, b, f"`{name}`", context=f"(random SAE, batch {len(x)})", atol=ATOL, rtol=RTOL)
    return "the rescaling and bias properties, and random SAEs"


@check("topk_aux_loss")
def topk_aux_loss(fn) -> str:
    fn = tokens_only(fn, "topk_aux_loss")  # its arguments only: not the course's SAE, which computes the same
    for trial in trials(3):
        w = _random_sae(trial)
        d_sae = w["W_enc"].shape[1]
        x = torch.randn(trial.randint(6, 20), w["W_enc"].shape[0], generator=trial.generator)
        k, k_aux = trial.randint(1, 4), trial.randint(2, 8)
        args = (w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], k)
        none_dead = torch.zeros(d_sae, dtype=torch.bool)
        value = as_tensor(call(fn, x, *args, none_dead, k_aux), "the loss")
        if value.numel() != 1 or abs(float(value)) > 1e-6:
            fail(f"with no dead latent the auxiliary loss must be 0, got {value.tolist()}.")
        dead = torch.rand(d_sae, generator=trial.generator) < 0.4
        dead[0] = True
        silent = {key: v.clone() for key, v in w.items()}
        silent["b_enc"][dead] = -1e4  # the dead latents cannot fire: they explain nothing
        value = as_tensor(
            call(fn, x, silent["W_enc"], silent["b_enc"], silent["W_dec"], silent["b_dec"], k, dead, k_aux), "the loss"
        )
        if value.numel() != 1 or not math.isclose(float(value), 1.0, rel_tol=1e-4):
            fail(
                f"when the dead latents cannot fire (every pre-activation negative) they reconstruct nothing, so "
                f"the normalised loss must be exactly 1, got {value.reshape(-1)[:1].tolist()}: check the ReLU on "
                "their activations and the normalisation by mean ||e||^2."
            )
        before = x.clone()
        given = call(fn, x, *args, dead, k_aux)
        unchanged(before, x, "x")
        compare(
            given,
            reference.topk_aux_loss(x, *args, dead, k_aux),
            "the auxiliary loss",
            context=f"(random SAE, {int(dead.sum())} dead of {d_sae}, k {k}, k_aux {k_aux})",
            atol=ATOL,
            rtol=RTOL,
        )
    return "no dead latents (0), silent dead latents (1), random SAEs"


@check("jumprelu_threshold_grad")
def jumprelu_threshold_grad(fn) -> str:
    fn = tokens_only(fn, "jumprelu_threshold_grad")  # its arguments only: not the course's SAE, which computes the same
    threshold, bandwidth = torch.tensor([0.5, 1.0]), 0.1
    far = torch.tensor([[0.0, 3.0], [2.0, -1.0]])
    compare(
        call(fn, far, threshold, bandwidth),
        torch.zeros(2),
        "the gradient",
        context="when no pre-activation is within bandwidth/2 of its threshold",
    )
    near = torch.tensor([[0.5, 1.2], [0.52, 0.0], [0.47, 1.04], [0.9, 0.96]])  # latent 0: 3 of 4 inside the window
    compare(
        call(fn, near, threshold, bandwidth),
        torch.tensor([-0.75 / bandwidth, -0.5 / bandwidth]),
        "the gradient",
        context="for 3 of 4 (latent 0) and 2 of 4 (latent 1) pre-activations inside the window",
        index=["latent "],
    )
    # The estimator approaches the true derivative of the expected L0 (-density at the threshold) as the batch grows.
    g = torch.Generator().manual_seed(7)
    pre = torch.randn(200_000, 1, generator=g)
    estimate = float(as_tensor(call(fn, pre, torch.tensor([0.5]), 0.02), "the gradient").reshape(-1)[0])
    true = -math.exp(-0.125) / math.sqrt(2 * math.pi)
    if not math.isclose(estimate, true, rel_tol=0.05):
        fail(
            f"for standard normal pre-activations and threshold 0.5, the expected L0's derivative is {true:.4f} "
            f"(minus the density at the threshold); your estimate on 200,000 samples is {estimate:.4f}."
        )
    for trial in trials(3):
        d_sae, batch = trial.randint(3, 12), trial.randint(50, 200)
        pre = torch.randn(batch, d_sae, generator=trial.generator)
        theta = torch.rand(d_sae, generator=trial.generator)
        eps = 0.05 + 0.5 * float(torch.rand((), generator=trial.generator))
        given = call(fn, pre, theta, eps)
        if (as_tensor(given, "the gradient") > 0).any():
            fail("the gradient is positive somewhere: raising a threshold can only make fewer latents fire.")
        compare(
            given,
            reference.jumprelu_threshold_grad(pre, theta, eps),
            "the gradient",
            context=f"(random pre-activations, bandwidth {eps:.3f})",
            index=["latent "],
            atol=ATOL,
            rtol=RTOL,
        )
    return "known windows, the Gaussian limit and random pre-activations"


def _resample_args(trial: Trial, n_dead: int, batch: int, d_in: int = 8) -> dict[str, Any]:
    w = _random_sae(trial, d_in=d_in, d_sae=n_dead + 6)
    dead = torch.zeros(n_dead + 6, dtype=torch.bool)
    dead[torch.randperm(n_dead + 6, generator=trial.generator)[:n_dead]] = True
    x = torch.randn(batch, d_in, generator=trial.generator)
    losses = torch.rand(batch, generator=trial.generator) + 0.1
    return dict(x=x, losses=losses, dead=dead, **w)


def _resample(fn, a: dict[str, Any], seed: int, scale: float = RESAMPLE_ENCODER_SCALE):
    result = call(
        fn,
        a["x"],
        a["losses"],
        a["W_enc"],
        a["b_enc"],
        a["W_dec"],
        a["b_dec"],
        a["dead"],
        scale,
        torch.Generator().manual_seed(seed),
    )
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        fail(f"return the new (W_enc, b_enc, W_dec), a tuple of three tensors; got {type(result).__name__}.")
    W_enc, b_enc, W_dec = (as_tensor(v, n) for v, n in zip(result, ("W_enc", "b_enc", "W_dec")))
    for name, got, was in (("W_enc", W_enc, a["W_enc"]), ("b_enc", b_enc, a["b_enc"]), ("W_dec", W_dec, a["W_dec"])):
        if got.shape != was.shape:
            fail(f"the new {name} has shape {tuple(got.shape)}, expected {tuple(was.shape)}.")
    return W_enc, b_enc, W_dec


@check("resample_dead_latents")
def resample_dead_latents(fn) -> str:
    fn = tokens_only(fn, "resample_dead_latents")  # its arguments only: not the course's SAE, which computes the same
    for trial in trials(3):
        a = _resample_args(trial, n_dead=trial.randint(2, 6), batch=trial.randint(5, 12))
        before = {k: v.clone() for k, v in a.items() if isinstance(v, Tensor)}
        encoder_scale = RESAMPLE_ENCODER_SCALE if trial.index == 0 else 0.1 + 0.5 * trial.index / 3
        W_enc, b_enc, W_dec = _resample(fn, a, trial.seed, encoder_scale)
        for name, was in before.items():
            unchanged(was, a[name], name)
        dead, live = a["dead"], ~a["dead"]
        compare(W_dec[live], a["W_dec"][live], "the live latents' decoder rows", context="(they keep theirs)")
        compare(W_enc[:, live], a["W_enc"][:, live], "the live latents' encoder columns")
        compare(b_enc[live], a["b_enc"][live], "the live latents' encoder biases")
        compare(b_enc[dead], torch.zeros(int(dead.sum())), "the resampled latents' encoder biases")
        compare(W_dec[dead].norm(dim=-1), torch.ones(int(dead.sum())), "the resampled decoder rows' lengths")
        centred = a["x"] - a["b_dec"]
        unit = centred / centred.norm(dim=-1, keepdim=True)
        cosines = W_dec[dead] @ unit.T  # [n_dead, batch]
        if (cosines.max(-1).values < 1 - 1e-4).any():
            fail(
                "a resampled decoder row is not the direction of any input minus b_dec (each dead latent takes "
                "one input x_b, and its row is (x_b - b_dec) / ||x_b - b_dec||)."
            )
        scale = encoder_scale * a["W_enc"][:, live].norm(dim=0).mean()
        compare(
            W_enc[:, dead].T,
            W_dec[dead] * scale,
            "the resampled encoder columns",
            context=f"(the direction times encoder_scale = {encoder_scale:.3g} x the live encoders' mean length)",
            index=["latent ", None],
            atol=1e-5,
            rtol=1e-4,
        )
        # All the loss on one input: every draw takes it.
        a["losses"] = torch.zeros_like(a["losses"])
        a["losses"][0] = 1.0
        _, _, W_dec = _resample(fn, a, trial.seed + 1)
        if ((W_dec[dead] @ unit[0]) < 1 - 1e-4).any():
            fail(
                "when one input carries all the loss, every dead latent must be resampled to it (draw with "
                "probability proportional to the squared loss)."
            )
    # Frequencies: two inputs with losses 1 and 2 are drawn 1 : 4 (squared losses) over many dead latents.
    trial = next(iter(trials(1)))
    a = _resample_args(trial, n_dead=1994, batch=2)
    a["losses"] = torch.tensor([1.0, 2.0])
    _, _, W_dec = _resample(fn, a, trial.seed + 2)
    second = (a["x"][1] - a["b_dec"]) / (a["x"][1] - a["b_dec"]).norm()
    share = float(((W_dec[a["dead"]] @ second) > 1 - 1e-4).float().mean())
    if abs(share - 0.8) > 0.04:
        fail(
            f"with losses 1 and 2, the second input should be drawn for 80% of the dead latents (probability "
            f"proportional to the squared loss: 4 / (1 + 4)); it was drawn for {share:.0%}."
        )
    return "live latents kept, directions, lengths, biases and the loss-squared draw"


# --------------------------------------------------------------------------------------------------------------
# Section 3
# --------------------------------------------------------------------------------------------------------------

#: Held-out rows the checks use (beyond the notebook's 320), cut to this many tokens (the loss of a short prefix is
#: as good a test and 4x cheaper).
CHECK_FIRST_ROW, CHECK_POS = 1024, 64


def _lm():
    model, _, _ = language_model()
    return model


def _check_tokens(trial: Trial, rows: int = 4) -> Tensor:
    tokens = held_out_tokens()
    start = CHECK_FIRST_ROW + trial.randint(0, len(tokens) - CHECK_FIRST_ROW - rows)
    return tokens[start : start + rows, :CHECK_POS]


def _sae_with(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor) -> SAE:
    sae = SAE(SAEConfig(d_in=W_enc.shape[0], d_sae=W_enc.shape[1]))
    with torch.no_grad():
        for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            getattr(sae, name).copy_(value)
    return sae.eval()


_CE_KEYS = ("clean", "spliced", "zero", "recovered")


def _ce_result(result: Any) -> dict[str, float]:
    if not isinstance(result, dict) or set(result) != set(_CE_KEYS):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        fail(f"return a dict with the keys {list(_CE_KEYS)}, got {keys}.")
    out = {}
    for key in _CE_KEYS:
        value = as_tensor(result[key], f"`{key}`")
        if value.numel() != 1:
            fail(f"`{key}` should be one number, got shape {tuple(value.shape)}.")
        out[key] = float(value)
    return out


@check("ce_loss_recovered")
def ce_loss_recovered(fn) -> str:
    model = _lm()
    d_mlp, hook_name = model.cfg.d_mlp, "blocks.1.mlp.hook_post"
    trial = next(iter(trials(1)))
    tokens = _check_tokens(trial)
    # GELU outputs are above -0.2: with b_dec = -10, x - b_dec > 0 and an identity encoder passes it through exactly.
    exact = _sae_with(torch.eye(d_mlp), torch.zeros(d_mlp), torch.eye(d_mlp), torch.full((d_mlp,), -10.0))
    got = _ce_result(call(fn, model, exact, tokens, hook_name))
    if abs(got["recovered"] - 1) > 2e-3 or abs(got["spliced"] - got["clean"]) > 2e-3:
        fail(
            f"an SAE that reconstructs the activations exactly must recover 1 (spliced = clean); got spliced "
            f"{got['spliced']:.4f}, clean {got['clean']:.4f}, recovered {got['recovered']:.4f}."
        )
    nothing = _sae_with(torch.eye(d_mlp), torch.zeros(d_mlp), torch.zeros(d_mlp, d_mlp), torch.zeros(d_mlp))
    got = _ce_result(call(fn, model, nothing, tokens, hook_name))
    if abs(got["recovered"]) > 2e-3:
        fail(
            f"an SAE that outputs zeros is the zero ablation: it must recover 0, got {got['recovered']:.4f} "
            f"(spliced {got['spliced']:.4f}, zero {got['zero']:.4f})."
        )
    for trial in trials(2):
        layer = trial.randint(0, 1) if is_hidden() else 1
        name = f"blocks.{layer}.mlp.hook_post"
        w = _random_sae(trial, d_in=d_mlp, d_sae=2 * d_mlp)
        sae = _sae_with(w["W_enc"], w["b_enc"] - 0.5, w["W_dec"] * 0.1, w["b_dec"] * 0.1)
        tokens = _check_tokens(trial)
        got = _ce_result(call(fn, model, sae, tokens, name))
        expected = reference.ce_loss_recovered(model, sae, tokens, name)
        for key in _CE_KEYS:
            compare(
                torch.tensor(got[key]),
                torch.tensor(float(expected[key])),
                f"`{key}`",
                context=f"(a random SAE on {name})",
                atol=1e-4,
                rtol=1e-4,
            )
    return "an exact SAE (1), a zero SAE (0) and random SAEs on held-out text"


@check("latent_logit_effects")
def latent_logit_effects(fn) -> str:
    model = _lm()
    d_mlp = model.cfg.d_mlp
    zero = as_tensor(call(fn, model, torch.zeros(2, d_mlp), 1), "the effects")
    if zero.shape != (2, model.cfg.d_vocab):
        fail(f"the effects should have shape (n, d_vocab) = (2, {model.cfg.d_vocab}), got {tuple(zero.shape)}.")
    if zero.abs().max() > 1e-6:
        fail("a zero direction writes nothing: its effects must be 0 (no bias belongs in the direct path).")
    for trial in trials(2):
        layer = trial.index % 2
        directions = torch.randn(trial.randint(2, 6), d_mlp, generator=trial.generator)
        given = call(fn, model, directions.clone(), layer)
        doubled = call(fn, model, 2 * directions, layer)
        compare(
            doubled,
            2 * as_tensor(given, "the effects"),
            "the effects of twice the directions",
            context="(the direct path is linear)",
            atol=1e-4,
            rtol=1e-4,
        )
        compare(
            given,
            reference.latent_logit_effects(model, directions, layer),
            "the effects",
            context=f"(layer {layer})",
            index=["direction ", "token "],
            atol=1e-4,
            rtol=1e-4,
        )
    return "zero, linearity, and the reference through both layers"


# --------------------------------------------------------------------------------------------------------------
# Section 4
# --------------------------------------------------------------------------------------------------------------


@check("sparse_code")
def sparse_code(fn) -> str:
    run = no_training(fn, "sparse_code")
    results = []
    for trial in trials(3 if is_hidden() else 2):
        hidden = is_hidden()
        d_in = 128 if hidden and trial.index == 2 else 256
        truth = ground_truth(d_in=d_in, n_features=2 * d_in, seed=trial.seed % 2**31)
        x, coefficients = truth.sample(1024, trial.generator)
        l0 = trial.randint(4, 6) if hidden else 5
        before = x.clone()
        codes = as_tensor(call(run, x, truth.features.clone(), l0), "codes")
        unchanged(before, x, "x")
        if codes.shape != coefficients.shape:
            fail(f"codes should have shape (n, n_atoms) = {tuple(coefficients.shape)}, got {tuple(codes.shape)}.")
        if not torch.isfinite(codes).all():
            fail("codes contain NaN or infinite values.")
        used = (codes != 0).sum(-1)
        if (used > l0).any():
            row = int(torch.nonzero(used > l0)[0])
            fail(f"row {row} uses {int(used[row])} atoms; at most l0 = {l0} are allowed.")
        ev = explained_variance(x, codes.float() @ truth.features)
        f1 = support_f1(codes != 0, coefficients > 0)
        base = one_shot_codes(x, truth.features, l0)
        base_f1 = support_f1(base != 0, coefficients > 0)
        base_ev = explained_variance(x, base @ truth.features)
        if ev < base_ev + CODE_MARGIN:
            fail(
                f"your codes explain {ev:.3f} of the variance at l0 = {l0} ({d_in} dimensions, {2 * d_in} atoms); the "
                f"one-shot encoder with the same dictionary explains {base_ev:.3f}, and you need {CODE_MARGIN} more: "
                "refit the coefficients of the chosen atoms, or iterate."
            )
        if f1 < base_f1 + CODE_MARGIN:
            fail(
                f"your codes find the true active features with F1 {f1:.3f}; the one-shot TopK encoder with the "
                f"same dictionary gets {base_f1:.3f}, and you need {CODE_MARGIN} more: explain away what each "
                "chosen atom accounts for before choosing the next."
            )
        results.append(f"EV {ev:.3f}, F1 {f1:.3f} vs one-shot {base_f1:.3f}")
    return "; ".join(results)


# --------------------------------------------------------------------------------------------------------------
# Section 4: scores
# --------------------------------------------------------------------------------------------------------------

my_scores = research.scores_check("saes")
