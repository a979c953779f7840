"""The plain-PyTorch sparse autoencoders (``mechinterp_course.sae``): the sparse TopK step and the fused ReLU step
(sparse and dense) are autograd's, exactly; train_step is the step it documents; each architecture trains; the
metrics give their known answers."""

from __future__ import annotations

import pytest
import torch

from mechinterp_course.sae import SAE, SAEConfig, TopKDecode, _ReLUDecode, evaluate, mmcs, train_step


def _leaves(generator, batch, d_in, d_sae, column_major_encoder=False):
    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    W_enc = leaf(d_in, d_sae)
    if column_major_encoder:  # as SAE stores it (the decoder's transpose, cloned)
        W_enc = W_enc.detach().t().contiguous().t().requires_grad_()
    return leaf(batch, d_in), W_enc, leaf(d_sae), leaf(d_sae, d_in)


@pytest.mark.parametrize("column_major_encoder", [False, True])
@pytest.mark.parametrize("d_sae", [96, 4000])  # 4000: most latents never active, their gradient rows zero
def test_sparse_topk_step_matches_dense_autograd(d_sae, column_major_encoder):
    generator = torch.Generator().manual_seed(0)
    batch, d_in, k = 700, 24, 5
    x, W_enc, b_enc, W_dec = _leaves(generator, batch, d_in, d_sae, column_major_encoder)
    grad_recon = torch.randn(batch, d_in, generator=generator, dtype=torch.float64)
    grad_values = torch.randn(batch, k, generator=generator, dtype=torch.float64)

    recon, values, indices = TopKDecode.apply(x, W_enc, b_enc, W_dec, k)
    ((recon * grad_recon).sum() + (values * grad_values).sum()).backward()
    sparse = [t.grad.clone() for t in (x, W_enc, b_enc, W_dec)]
    for t in (x, W_enc, b_enc, W_dec):
        t.grad = None

    pre = x @ W_enc + b_enc
    top_values, top_indices = pre.topk(k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top_indices, top_values.relu())
    dense_recon = f @ W_dec
    assert torch.allclose(dense_recon, recon, atol=1e-10)
    ((dense_recon * grad_recon).sum() + (f.gather(-1, indices) * grad_values).sum()).backward()
    for name, got, t in zip(["x", "W_enc", "b_enc", "W_dec"], sparse, (x, W_enc, b_enc, W_dec)):
        assert torch.allclose(got, t.grad, atol=1e-10), name


def test_topk_step_when_only_the_reconstruction_is_used():
    """``values`` unused by the loss: its gradient reaches backward as None."""
    generator = torch.Generator().manual_seed(3)
    x, W_enc, b_enc, W_dec = _leaves(generator, 50, 8, 40)
    recon, _, _ = TopKDecode.apply(x, W_enc, b_enc, W_dec, 3)
    recon.pow(2).sum().backward()
    grads = [t.grad.clone() for t in (x, W_enc, b_enc, W_dec)]
    for t in (x, W_enc, b_enc, W_dec):
        t.grad = None
    pre = x @ W_enc + b_enc
    top = pre.topk(3, dim=-1)
    (torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu()) @ W_dec).pow(2).sum().backward()
    for got, t in zip(grads, (x, W_enc, b_enc, W_dec)):
        assert torch.allclose(got, t.grad, atol=1e-10)


@pytest.mark.parametrize("max_density", [1.0, 0.0], ids=["sparse", "dense"])
@pytest.mark.parametrize("column_major_encoder", [False, True])
def test_relu_step_matches_dense_autograd(max_density, column_major_encoder):
    """The ReLU loss's fused step, sparse (at most ``max_density`` of the latents active: always) and dense, against
    autograd through the plain formulas; the L1 term weighted by the decoder norms, whose gradient reaches W_dec."""
    generator = torch.Generator().manual_seed(2)
    batch, d_in, d_sae = 300, 16, 200
    x, W_enc, b_enc, W_dec = _leaves(generator, batch, d_in, d_sae, column_major_encoder)
    with torch.no_grad():
        b_enc -= 8.0  # pre-activations of scale 4 (sqrt(d_in)): about 1 in 40 latents active
    grad_recon = torch.randn(batch, d_in, generator=generator, dtype=torch.float64)
    grad_l1 = torch.randn(batch, generator=generator, dtype=torch.float64)

    def backward(recon, l1):
        ((recon * grad_recon).sum() + (l1 * grad_l1).sum()).backward()
        grads = [t.grad.clone() for t in (x, W_enc, b_enc, W_dec)]
        for t in (x, W_enc, b_enc, W_dec):
            t.grad = None
        return grads

    fused = backward(*_ReLUDecode.apply(x, W_enc, b_enc, W_dec, W_dec.norm(dim=-1), max_density))
    f = (x @ W_enc + b_enc).relu()
    assert 0 < (f > 0).double().mean() < 0.1
    reference = backward(f @ W_dec, (f * W_dec.norm(dim=-1)).sum(-1))
    for name, got, want in zip(["x", "W_enc", "b_enc", "W_dec"], fused, reference):
        assert torch.allclose(got, want, atol=1e-10), name


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_train_step_is_the_documented_step(architecture):
    """train_step: loss, backward, gradient norm clipped at 1.0, Adam, unit decoder rows (ReLU and TopK)."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    config = SAEConfig(8, 32, architecture, l1_coefficient=1e-2, k=4, l0_coefficient=1e-3)
    ours, by_hand = SAE(config), SAE(config)
    optimisers = [torch.optim.Adam(sae.parameters(), lr=1e-2) for sae in (ours, by_hand)]
    for _ in range(3):
        out = train_step(ours, optimisers[0], x)
        loss = by_hand.loss(x)["loss"]
        optimisers[1].zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
        optimisers[1].step()
        if architecture != "jumprelu":
            by_hand.normalise_decoder()
        assert not out["loss"].requires_grad and torch.allclose(out["loss"], loss.detach())
    for (name, a), b in zip(ours.named_parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    if architecture != "jumprelu":
        assert torch.allclose(ours.W_dec.norm(dim=-1), torch.ones(32))


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_each_architecture_learns_a_sparse_code(architecture):
    """Inputs made of 2 of 16 random directions: a few hundred steps halve the reconstruction error or better."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(16, 8, generator=generator)
    codes = torch.zeros(2048, 16).scatter(-1, torch.rand(2048, 16, generator=generator).topk(2).indices, 1.0)
    x = codes * torch.rand(2048, 16, generator=generator) @ features
    sae = SAE(SAEConfig(8, 32, architecture, l1_coefficient=1e-3, k=4, l0_coefficient=1e-4, seed=0))
    before = evaluate(sae, x)["explained_variance"]
    optimiser = torch.optim.Adam(sae.parameters(), lr=3e-3)
    for step in range(300):
        batch = x[(step * 256) % 2048 :][:256]
        loss = sae.loss(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if architecture != "jumprelu":
            sae.normalise_decoder()
    after = evaluate(sae, x)
    assert after["explained_variance"] > max(0.5, before), after
    if architecture == "topk":
        assert after["l0"] <= 4


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_loss_flattens_leading_dimensions(architecture):
    x = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(5))
    config = SAEConfig(8, 32, architecture, k=4)
    by_position, flat = SAE(config).loss(x), SAE(config).loss(x.reshape(64, 8))
    assert torch.allclose(by_position["loss"], flat["loss"])


def test_metrics_known_answers():
    features = torch.eye(4)
    assert mmcs(features, features) == pytest.approx(1.0)
    assert mmcs(-features, features) == pytest.approx(0.0)  # the best cosine of each is 0 (all others orthogonal)
    sae = SAE(SAEConfig(4, 4, "relu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    x = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0]])
    metrics = evaluate(sae, x)
    assert metrics["explained_variance"] == pytest.approx(1.0)
    assert metrics["l0"] == pytest.approx(1.0) and metrics["dead_fraction"] == pytest.approx(0.25)
    assert metrics["shrinkage"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig(4, 4, "gated")
