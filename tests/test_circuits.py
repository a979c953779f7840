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


def test_attribution_is_the_total_first_order_effect(model, pair):
    """For a layer-0 head, the estimate is the derivative of the metric along (clean - corrupted) through *every*
    later layer (a finite difference checks it), not only the head's direct path to the logits."""
    metric = metric_for(pair)
    approx = circuits.attribution_patch_heads(model, pair.clean, pair.corrupted, metric)
    name = "blocks.0.attn.hook_z"
    _, clean_cache = model.run_with_cache(pair.clean)
    _, corrupted_cache = model.run_with_cache(pair.corrupted)
    base = float(metric(model(pair.corrupted).detach()))
    eps = 1e-2
    for head in range(model.cfg.n_heads):
        delta = torch.zeros_like(clean_cache[name])
        delta[:, :, head] = clean_cache[name][:, :, head] - corrupted_cache[name][:, :, head]
        nudge = [(name, lambda z, hook: z + eps * delta)]
        nudged = float(metric(model.run_with_hooks(pair.corrupted, fwd_hooks=nudge).detach()))
        assert (nudged - base) / eps == pytest.approx(float(approx[0, head]) - base, rel=0.05, abs=2e-3)
    # Layer 0's effect runs through layer 1: its heads' estimates are not all (near) zero.
    assert float((approx[0] - base).abs().max()) > 0.1


def test_attribution_is_exact_for_the_last_layer(model, pair):
    """No LayerNorm and no MLP: the logits are linear in the last layer's z, so the first-order estimate is exact."""
    metric = metric_for(pair)
    exact = circuits.patch_heads(model, pair.clean, pair.corrupted, metric)
    approx = circuits.attribution_patch_heads(model, pair.clean, pair.corrupted, metric)
    assert torch.allclose(approx[-1], exact[-1], atol=1e-3)


@pytest.mark.parametrize("half_len", [5, 9])
def test_score_diagonals_cover_the_documented_queries(half_len):
    """The docstrings' counts: previous-token averages over 2 half_len queries, duplicate-token over half_len + 1
    (one first-copy query, looking at BOS), induction over half_len + 2 (two first-copy queries)."""
    seq = 1 + 2 * half_len
    for score, offset, n_queries, first_copy_queries in [
        (circuits.previous_token_scores, 1, 2 * half_len, half_len),
        (lambda p: circuits.duplicate_token_scores(p, half_len), half_len, half_len + 1, 1),
        (lambda p: circuits.induction_scores(p, half_len), half_len - 1, half_len + 2, 2),
    ]:
        # A head that does the job only on first-copy queries (q <= half_len), and attends to BOS elsewhere.
        pattern = torch.zeros(1, 1, seq, seq)
        pattern[0, 0, :, 0] = 1.0
        for q in range(offset, half_len + 1):
            pattern[0, 0, q, :] = 0.0
            pattern[0, 0, q, q - offset] = 1.0
        assert float(score(pattern)) == pytest.approx(first_copy_queries / n_queries)


def test_probe_predictions_start_at_the_second_copy():
    tokens = circuits.probe_batch(3, seed=0)
    mask = circuits.probe_predictions(tokens)
    assert mask.shape == (3, 2 * circuits.PROBE_HALF_LEN) and mask.dtype == torch.bool
    first = int(mask[0].nonzero()[0])
    assert first == circuits.PROBE_HALF_LEN + 1  # predicts x_2 from the second copy's x_1
    assert torch.equal(tokens[:, first], tokens[:, 1])  # position half_len + 1 holds x_1 again


def test_circuit_studies_cite_their_sources():
    for study in circuits.CIRCUIT_STUDIES:
        assert study.source and ("deck" in study.source or "published-results.md" in study.source)
        assert study.secondary == ("secondary" in study.source)
    assert len({study.finding for study in circuits.CIRCUIT_STUDIES}) == len(circuits.CIRCUIT_STUDIES)
