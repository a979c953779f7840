"""The plain-PyTorch sparse autoencoders (``mechinterp_course.sae``): the sparse TopK step is the dense one, exactly;
each architecture trains; the metrics give their known answers."""

from __future__ import annotations

import pytest
import torch

from mechinterp_course.sae import SAE, SAEConfig, TopKDecode, evaluate, mmcs


def test_sparse_topk_step_matches_dense_autograd():
    generator = torch.Generator().manual_seed(0)
    batch, d_in, d_sae, k = 700, 24, 96, 5  # 700 rows: more than one SPARSE_CHUNK

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    x, W_enc, b_enc, W_dec = leaf(batch, d_in), leaf(d_in, d_sae), leaf(d_sae), leaf(d_sae, d_in)
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
