"""Chapter 04 (sparse autoencoders): its tools, its reference answers and its checks.

Every check must pass the reference (as a student's own function), refuse the library's own function and unfinished
stubs, fail hard-coded answers, and give typical wrong answers a message that says what is wrong. The engine itself
(``mechinterp_course.sae``) is tested in tests/test_sae.py.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import exercise_contract  # noqa: E402
from conftest import fails as fails_with  # noqa: E402 - the suite's shared helpers
from conftest import own as student  # noqa: E402

from mechinterp_course import saes
from mechinterp_course.sae import SAE, SAEConfig
from mechinterp_course.saes import checks, reference


def fails(check, *answers, match: str, hidden: str | None = None) -> str:
    return fails_with(check, *answers, match=re.escape(match), hidden=hidden)


CHECKED = {
    checks.feature_dimensionality: reference.feature_dimensionality,
    checks.relu_sae_loss: reference.relu_sae_loss,
    checks.topk_aux_loss: reference.topk_aux_loss,
    checks.jumprelu_threshold_grad: reference.jumprelu_threshold_grad,
    checks.resample_dead_latents: reference.resample_dead_latents,
    checks.ce_loss_recovered: reference.ce_loss_recovered,
    checks.latent_logit_effects: reference.latent_logit_effects,
    checks.sparse_code: reference.sparse_code,
}
(
    test_the_reference_passes,
    test_the_library_reference_and_unfinished_stubs_are_refused,
    test_a_hard_coded_answer_fails,
) = exercise_contract(CHECKED)


def test_no_tool_is_a_twin_of_an_exercise():
    exercises = set(reference.__all__)
    assert not exercises & set(dir(saes)), exercises & set(dir(saes))


# --------------------------------------------------------------------------------------------------------------
# Section 1
# --------------------------------------------------------------------------------------------------------------


def test_toy_data_and_model():
    g = torch.Generator().manual_seed(0)
    x = saes.toy_batch(torch.tensor([[0.5, 0.1], [1.0, 0.0]]), 20_000, g)  # [batch, inst, feat]
    density = (x > 0).float().mean(0)
    assert torch.allclose(density, torch.tensor([[0.5, 0.1], [1.0, 0.0]]), atol=0.02)
    assert abs(float(x[x > 0].mean()) - 0.5) < 0.02 and float(x.max()) <= 1
    model = saes.ToyModel(3, 5, 2)
    assert model(torch.rand(7, 3, 5)).shape == (7, 3, 5)


def test_phase_reads_the_three_regions():
    W = torch.tensor([[[1.0], [0.1]], [[1.0], [-1.0]], [[0.05], [1.0]]])
    assert saes.phase(W) == ["feature 2 not learned", "superposition", "feature 2 alone"]


def test_sparse_pentagon_forms_in_seconds():
    model, result = saes.train_toy(5, 2, torch.full((1, 5), 0.1), torch.ones(5), steps=3000, progress=False)
    dims = reference.feature_dimensionality(model.W.detach())
    assert torch.allclose(dims, torch.full((1, 5), 0.4), atol=0.05), dims


def test_feature_dimensionality_feedback():
    def no_guard(W):
        lengths = W.norm(dim=-1)
        overlaps = torch.einsum("ifh,igh->ifg", W / lengths[..., None], W)
        return lengths.pow(2) / overlaps.pow(2).sum(-1)

    fails(checks.feature_dimensionality, student(no_guard), match="gives NaN")

    def without_self(W):  # the sum over j leaves out j = i
        lengths = W.norm(dim=-1)
        overlaps = torch.einsum("ifh,igh->ifg", W / lengths[..., None].clamp_min(1e-12), W).pow(2)
        return lengths.pow(2) / (overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)).clamp_min(1e-12)

    fails(checks.feature_dimensionality, student(without_self), match="for features in dimensions of their own")


# --------------------------------------------------------------------------------------------------------------
# Section 2
# --------------------------------------------------------------------------------------------------------------


def test_ground_truth_data_is_sharkeys():
    truth = saes.ground_truth()
    assert truth.features.shape == (512, 256)
    assert torch.allclose(truth.features.norm(dim=-1), torch.ones(512))
    x, c = truth.sample(4096, torch.Generator().manual_seed(0))
    assert torch.allclose(x, c @ truth.features, atol=1e-5)
    assert abs(float((c > 0).sum(-1).float().mean()) - 5) < 0.2
    assert float(truth.probabilities[0] / truth.probabilities[100]) == pytest.approx(0.99**-100, rel=1e-4)


def test_the_engine_computes_the_exercises_losses():
    """The library's SAE.loss is the function the student writes (exercise 2.1) and uses their aux loss (2.2)."""
    g = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=24, architecture="relu", l1_coefficient=0.3))
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(8, generator=g))
        sae.W_dec.mul_(1 + torch.rand(24, 1, generator=g))
    x = torch.randn(16, 8, generator=g)
    loss, mse, l1 = reference.relu_sae_loss(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 0.3)
    engine = sae.loss(x)
    assert torch.allclose(engine["loss"], loss) and torch.allclose(engine["l1"], l1)
    topk = SAE(SAEConfig(d_in=8, d_sae=24, architecture="topk", k=3, dead_after=1, k_aux=4))
    with torch.no_grad():
        topk.tokens_since_fired.fill_(100)  # every latent dead before the step; the firing ones come alive
        out = topk.loss(x)
    dead = topk.tokens_since_fired >= 1
    aux = reference.topk_aux_loss(x, topk.W_enc, topk.b_enc, topk.W_dec, topk.b_dec, 3, dead, 4)
    assert torch.allclose(out["aux"], aux, atol=1e-6)


def test_relu_loss_feedback():
    relu_sae_loss = reference.relu_sae_loss  # a closure: the check hides the course's modules, not this

    def unweighted(x, W_enc, b_enc, W_dec, b_dec, c):
        f = ((x - b_dec) @ W_enc + b_enc).relu()
        mse = (f @ W_dec + b_dec - x).pow(2).sum(-1).mean()
        return mse + c * f.sum(-1).mean(), mse, f.sum(-1).mean()

    fails(checks.relu_sae_loss, student(unweighted), match="Weight each activation's L1")

    def bias_added(x, W_enc, b_enc, W_dec, b_dec, c):
        return relu_sae_loss(x + 2 * b_dec, W_enc, b_enc, W_dec, b_dec, c)

    fails(checks.relu_sae_loss, student(bias_added), match="the encoder must see x - b_dec")


def test_aux_loss_and_jumprelu_feedback():
    jumprelu_threshold_grad = (
        reference.jumprelu_threshold_grad
    )  # a closure: the check hides the course's modules, not this
    topk_aux_loss = reference.topk_aux_loss  # a closure: the check hides the course's modules, not this

    def unnormalised(x, W_enc, b_enc, W_dec, b_dec, k, dead, k_aux):
        value = topk_aux_loss(x, W_enc, b_enc, W_dec, b_dec, k, dead, k_aux)
        pre = (x - b_dec) @ W_enc + b_enc
        values, indices = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        return value * (x - f @ W_dec - b_dec).pow(2).sum(-1).mean()

    fails(checks.topk_aux_loss, student(unnormalised), match="the normalised loss must be exactly 1")

    def wrong_sign(pre, threshold, bandwidth):
        return -jumprelu_threshold_grad(pre, threshold, bandwidth)

    fails(checks.jumprelu_threshold_grad, student(wrong_sign), match="3 of 4 (latent 0)")

    def window_too_wide(pre, threshold, bandwidth):
        return jumprelu_threshold_grad(pre, threshold, 2 * bandwidth) * 2

    fails(checks.jumprelu_threshold_grad, student(window_too_wide), match="the expected L0's derivative is")


def test_resample_feedback():
    resample_dead_latents = reference.resample_dead_latents  # a closure: the check hides the course's modules, not this

    def by_loss(x, losses, W_enc, b_enc, W_dec, b_dec, dead, scale, generator):
        return resample_dead_latents(x, losses.sqrt(), W_enc, b_enc, W_dec, b_dec, dead, scale, generator)

    fails(checks.resample_dead_latents, student(by_loss), match="80% of the dead latents")

    def in_place(x, losses, W_enc, b_enc, W_dec, b_dec, dead, scale, generator):
        new = resample_dead_latents(x, losses, W_enc, b_enc, W_dec, b_dec, dead, scale, generator)
        W_dec.copy_(new[2])
        return new

    fails(checks.resample_dead_latents, student(in_place), match="modified its input `W_dec` in place")

    def raw_input(x, losses, W_enc, b_enc, W_dec, b_dec, dead, scale, generator):
        zero = torch.zeros_like(b_dec)
        return resample_dead_latents(x, losses, W_enc, b_enc, W_dec, zero, dead, scale, generator)

    fails(checks.resample_dead_latents, student(raw_input), match="not the direction of any input minus b_dec")


def test_the_course_sae_cannot_stand_in_for_the_students_loss():
    def via_engine(x, W_enc, b_enc, W_dec, b_dec, c):
        sae = SAE(SAEConfig(d_in=W_enc.shape[0], d_sae=W_enc.shape[1], l1_coefficient=c))
        with torch.no_grad():
            for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
                getattr(sae, name).copy_(value)
        out = sae.loss(x)
        return out["loss"], out["mse"], out["l1"]

    fails(checks.relu_sae_loss, via_engine, match="a class of the course library")


def test_resampler_revives_dead_latents_and_resets_their_optimiser_state():
    truth = saes.ground_truth(d_in=16, n_features=32)
    g = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="relu"))
    with torch.no_grad():
        sae.b_enc[:8] = -100.0  # 8 latents that cannot fire
    optimizer = torch.optim.Adam(sae.parameters())
    sae.loss(truth.sample(64, g)[0])["loss"].backward()
    optimizer.step()
    resample = saes.resampler(student(reference.resample_dead_latents), lambda: truth.sample(256, g)[0], every=1)
    with torch.no_grad():
        resample(0, sae, optimizer)
    assert (sae.b_enc[:8] == 0).all()
    assert (optimizer.state[sae.W_dec]["exp_avg"][:8] == 0).all()
    assert (optimizer.state[sae.W_dec]["exp_avg"][8:] != 0).any()


def test_shipped_sweep_is_sharkeys_shape():
    sweep = saes.load_sweep()
    runs = {(r["l1_coefficient"], r["d_sae"]): r for r in sweep["runs"]}
    assert {size for _, size in runs} == set(saes.SWEEP_SIZES) and {c for c, _ in runs} == set(saes.SWEEP_L1)
    assert sweep["train_seconds"] > 0 and "made_by" in sweep
    for l1 in saes.SWEEP_L1:  # a dictionary smaller than the truth cannot find all its features
        assert runs[(l1, 128)]["mmcs_true"] < runs[(l1, 512)]["mmcs_true"]
    assert json.loads(saes.SWEEP_FILE.read_text()) == sweep


# --------------------------------------------------------------------------------------------------------------
# Section 3
# --------------------------------------------------------------------------------------------------------------


def test_ce_and_logit_feedback():
    def wrong_ratio(model, sae, tokens, hook_name):
        result = reference.ce_loss_recovered(model, sae, tokens, hook_name)
        return dict(result, recovered=(result["spliced"] - result["clean"]) / (result["zero"] - result["clean"]))

    fails(checks.ce_loss_recovered, student(wrong_ratio), match="must recover 1")

    def with_bias(model, directions, layer):
        return (directions @ model.W_out[layer] + model.b_out[layer]) @ model.W_U  # the bias is no latent's

    fails(checks.latent_logit_effects, student(with_bias), match="a zero direction writes nothing")


def test_dashboard_and_ablation_run_on_the_language_model():
    model, tokenizer, _ = saes.language_model()
    tokens = saes.held_out_tokens(4)
    acts = saes.mlp_activations(model, tokens, 1)
    assert acts.shape == (4 * 256, 512)
    sae = SAE(SAEConfig(d_in=512, d_sae=1024, architecture="topk", k=8))
    latents = sae.encode(acts).reshape(4, 256, -1)
    effects = reference.latent_logit_effects(model, sae.W_dec, 1)
    [latent] = saes.interesting_latents(latents, n=1)
    page = saes.dashboard(latent, latents, tokens, tokenizer, effects).data
    assert f"latent {latent}" in page and "promotes" in page and page.count("<b>") >= 7
    effect = saes.ablate_latent(model, sae, tokens, 1, latent, effects[latent])
    assert effect["tokens where it fires"] > 0 and math.isfinite(effect["change in next-token loss, where it fires"])


# --------------------------------------------------------------------------------------------------------------
# Section 4
# --------------------------------------------------------------------------------------------------------------


def test_sparse_code_is_graded_by_measurement():
    sparse_code = reference.sparse_code  # a closure: the check hides the course's modules, not this
    through_module = lambda x, dictionary, l0: saes.one_shot_codes(x, dictionary, l0)  # noqa: E731
    fails(checks.sparse_code, through_module, match="uses `saes`, a module of the course library")
    one_shot_codes = saes.one_shot_codes  # the course's one-shot encoder, captured: it runs, and is measured
    one_shot = lambda x, dictionary, l0: one_shot_codes(x, dictionary, l0)  # noqa: E731
    fails(checks.sparse_code, one_shot, match="the one-shot encoder with the same dictionary explains")

    def too_many(x, dictionary, l0):
        return sparse_code(x, dictionary, l0 + 1)

    fails(checks.sparse_code, student(too_many), match="at most l0 = 5 are allowed")

    def trained(x, dictionary, l0):
        codes = torch.zeros(len(x), len(dictionary), requires_grad=True)
        torch.optim.Adam([codes]).step()
        return sparse_code(x, dictionary, l0)

    fails(checks.sparse_code, student(trained), match="sparse_code")
