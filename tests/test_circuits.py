"""Properties of the reference implementations that the graders trust."""

from __future__ import annotations

import pytest
import torch

from mechinterp_course import circuits, graders, tasks


@pytest.fixture(scope="module")
def model():
    return graders.fresh_model()


@pytest.fixture(scope="module")
def pair(model):
    return tasks.patching_pair(16, 10, model.cfg.d_vocab, seed=11)


def metric_for(pair):
    return lambda logits: circuits.logit_diff(logits, pair.answer, pair.wrong)


def test_decomposition_sums_to_logit_diff(model, pair):
    logits, cache = model.run_with_cache(pair.clean)
    logits = logits.detach()
    terms, labels = circuits.logit_diff_decomposition(model, cache, pair.answer, pair.wrong)
    assert len(labels) == len(terms) == 2 + model.cfg.n_layers * (model.cfg.n_heads + 1) + 1
    terms = terms.detach()
    assert float(terms.sum()) == pytest.approx(float(circuits.logit_diff(logits, pair.answer, pair.wrong)), abs=1e-3)
    # Induction heads write the answer: layer 1 carries most of the logit difference.
    layer1 = sum(float(t) for t, label in zip(terms, labels) if label.startswith("L1H"))
    assert layer1 > 0.5 * float(terms.sum())


def test_patching_the_whole_clean_run_restores_it(model, pair):
    metric = metric_for(pair)
    resid = circuits.patch_residual_by_layer_pos(model, pair.clean, pair.corrupted, metric)
    clean_value = float(metric(model(pair.clean).detach()))
    # At layer 0 only the changed position carries the difference: patching it restores the clean run exactly.
    assert float(resid[0, pair.source_pos]) == pytest.approx(clean_value, abs=1e-3)
    corrupted_value = float(metric(model(pair.corrupted).detach()))
    others = torch.cat([resid[0, : pair.source_pos], resid[0, pair.source_pos + 1 :]])
    assert torch.allclose(others, torch.full_like(others, corrupted_value), atol=1e-3)


def test_attribution_matches_activation_patching_in_sign(model, pair):
    metric = metric_for(pair)
    exact = circuits.patch_heads(model, pair.clean, pair.corrupted, metric)
    approx = circuits.attribution_patch_heads(model, pair.clean, pair.corrupted, metric)
    correlation = torch.corrcoef(torch.stack([exact.flatten(), approx.flatten()]))[0, 1]
    assert correlation > 0.5


def test_path_patching_finds_the_previous_token_head(model):
    """With key corruption, the layer-0 head with the highest previous-token score is the sender whose path into
    the induction heads' keys restores the most; a sender in the receiver's own layer is refused."""
    key_pair = tasks.patching_pair(32, 10, model.cfg.d_vocab, corruption="key", seed=5)
    raw = metric_for(key_pair)
    clean, corrupted = float(raw(model(key_pair.clean).detach())), float(raw(model(key_pair.corrupted).detach()))
    metric = lambda logits: circuits.normalised_metric(raw(logits), clean, corrupted)
    effects = torch.tensor([[float(circuits.path_patch_key(model, key_pair.clean, key_pair.corrupted, (0, s), (1, r), metric))
                             for r in range(4)] for s in range(4)])
    tokens = tasks.repeated_tokens(32, 20, model.cfg.d_vocab, seed=0)
    _, cache = model.run_with_cache(tokens)
    previous = circuits.previous_token_scores(cache["blocks.0.attn.hook_pattern"])
    assert int(effects.sum(1).argmax()) == int(previous.argmax())
    assert (effects[int(previous.argmax())] > 0).all()
    with pytest.raises(ValueError):
        circuits.path_patch_key(model, key_pair.clean, key_pair.corrupted, (1, 0), (1, 1), metric)


def test_ablation_methods(model):
    tokens = tasks.repeated_tokens(8, 20, model.cfg.d_vocab, seed=1)
    reference = circuits.induction_reference_tokens(model.cfg.d_vocab, batch=32)
    base = circuits.per_token_loss(model(tokens), tokens)[:, 21:].mean()
    everything = [(l, h) for l in range(2) for h in range(4)]
    for method in ("zero", "mean", "resample"):
        ablated = circuits.run_with_heads_ablated(model, tokens, everything, method, reference)
        assert circuits.per_token_loss(ablated, tokens)[:, 21:].mean() > base + 2
    with pytest.raises(ValueError, match="reference"):
        circuits.run_with_heads_ablated(model, tokens, everything, "mean")


def test_composition_score_properties():
    A, B = torch.randn(5, 6), torch.randn(6, 7)
    score = circuits.composition_score(A, B)
    assert 0 <= float(score) <= 1
    assert float(circuits.composition_score(2 * A, 3 * B)) == pytest.approx(float(score), rel=1e-5)
    identity = torch.eye(6)
    assert float(circuits.composition_score(identity, identity)) == pytest.approx(6 ** -0.5, rel=1e-5)
