"""The graders must pass a correct answer and fail wrong ones: hard-coded, input-ignoring, off by one, mutating."""

from __future__ import annotations

import pytest
import torch

from mechinterp_course import circuits, graders, tasks


def own(fn):
    """Wrap a reference so it looks like a student's function (the graders refuse the library's own)."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def fails(check, answer, match: str | None = None):
    with pytest.raises(graders.CheckFailed, match=match):
        check(answer)


def test_reference_itself_is_refused():
    fails(graders.check_previous_token_scores, circuits.previous_token_scores, "reference")


def test_not_callable_and_not_implemented():
    fails(graders.check_previous_token_scores, torch.zeros(4), "expected a function")

    def stub(pattern):
        raise NotImplementedError

    fails(graders.check_previous_token_scores, stub, "not implemented")


@pytest.mark.parametrize(
    "check, reference, off_by_one",
    [
        (graders.check_previous_token_scores, circuits.previous_token_scores,
         lambda p: p.diagonal(-2, -2, -1).mean((0, -1))),
        (graders.check_duplicate_token_scores, circuits.duplicate_token_scores,
         lambda p, h: p.diagonal(-(h - 1), -2, -1).mean((0, -1))),
        (graders.check_induction_scores, circuits.induction_scores,
         lambda p, h: p.diagonal(-h, -2, -1).mean((0, -1))),
    ],
)
def test_head_scores(check, reference, off_by_one, capsys):
    check(own(reference))
    assert "correct" in capsys.readouterr().out
    fails(check, off_by_one, "wrong")
    # A hard-coded answer (right for one shape) fails on the others.
    fails(check, lambda *args: torch.full((4,), 0.5), "shape")
    # Averaging over the wrong axes gives the right shape but wrong values.
    if check is graders.check_previous_token_scores:
        fails(check, lambda p: p.diagonal(-1, -2, -1).mean(-1)[0], "wrong")


def test_score_that_mutates_its_input_fails():
    def mutating(pattern):
        pattern.mul_(1.0).add_(0.0)
        pattern[0, 0, 0, 0] = 0.5
        return circuits.previous_token_scores(pattern)

    fails(graders.check_previous_token_scores, mutating, "in place")


def test_head_dla():
    graders.check_head_dla(own(circuits.head_direct_logit_attribution))
    fails(graders.check_head_dla, lambda z, W_O, d: torch.einsum("bhd,hdm,bm->bh", z, W_O, d).abs(), "wrong")
    fails(graders.check_head_dla, lambda z, W_O, d: torch.zeros(2, 4), "shape")


def test_logit_diff_decomposition_must_sum_to_the_truth():
    graders.check_logit_diff_decomposition(own(circuits.logit_diff_decomposition))

    def without_biases(model, cache, answer, wrong):
        terms, labels = circuits.logit_diff_decomposition(model, cache, answer, wrong)
        keep = torch.tensor(["b_" not in label for label in labels])
        return terms * keep, labels

    # The trained model's biases are not zero, so dropping them breaks the sum.
    fails(graders.check_logit_diff_decomposition, without_biases, "wrong")


def test_ablate_head():
    graders.check_ablate_head(own(circuits.ablate_head))

    def mean_over_everything(z, head, method, reference=None, resample_index=None):
        out = circuits.ablate_head(z, head, method, reference, resample_index)
        if method == "mean":
            out[:, :, head] = reference[:, : z.shape[1], head].mean(dim=(0, 1))
        return out

    fails(graders.check_ablate_head, mean_over_everything, "mean ablation")

    def in_place(z, head, method, reference=None, resample_index=None):
        result = circuits.ablate_head(z, head, method, reference, resample_index)
        z.copy_(result)
        return z

    fails(graders.check_ablate_head, in_place, "in place")


def test_normalised_metric():
    graders.check_normalised_metric(own(circuits.normalised_metric))
    fails(graders.check_normalised_metric, lambda v, c, k: (v - c) / (c - k), "wrong")


@pytest.mark.parametrize(
    "check, reference",
    [
        (graders.check_patch_residual, circuits.patch_residual_by_layer_pos),
        (graders.check_patch_heads, circuits.patch_heads),
        (graders.check_attribution_patch_heads, circuits.attribution_patch_heads),
    ],
)
def test_patching_checks(check, reference):
    check(own(reference))
    # Swapping clean and corrupted is the classic bug: right shape, wrong values.
    fails(check, lambda model, clean, corrupted, metric: reference(model, corrupted, clean, metric), "wrong")
    # An answer that ignores its input (a cached result) fails on the next fresh batch.
    cached = {}

    def memo(model, clean, corrupted, metric):
        if "value" not in cached:
            cached["value"] = reference(model, clean, corrupted, metric)
        return cached["value"]

    fails(check, memo)


def test_path_patching():
    graders.check_path_patch_key(own(circuits.path_patch_key))

    def through_the_query(model, clean, corrupted, sender, receiver, metric):
        # Plausible wrong answer: patch the receiver's query instead of its key.
        (s_layer, s_head), (r_layer, r_head) = sender, receiver
        if s_layer >= r_layer:
            raise ValueError
        name = f"blocks.{s_layer}.attn.hook_z"
        _, cc = model.run_with_cache(clean)
        _, kc = model.run_with_cache(corrupted)
        delta = (cc[name][:, :, s_head] - kc[name][:, :, s_head]) @ model.W_O[s_layer, s_head] @ model.W_Q[r_layer, r_head]

        def hook(q, hook):
            q = q.clone()
            q[:, :, r_head] += delta
            return q

        return metric(model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{r_layer}.attn.hook_q", hook)]))

    fails(graders.check_path_patch_key, through_the_query, "wrong")


def test_composition_score():
    graders.check_composition_score(own(circuits.composition_score))
    fails(graders.check_composition_score, lambda A, B: (A @ B).norm(dim=(-2, -1)), "wrong")


def test_circuit_heads():
    model = graders.fresh_model()
    circuit = graders.induction_circuit(model)
    previous = [lh for lh in circuit if lh[0] == 0]
    induction = [lh for lh in circuit if lh[0] == 1]
    graders.check_circuit_heads(previous, induction)
    with pytest.raises(graders.CheckFailed, match="missing"):
        graders.check_circuit_heads(previous[:1], induction)
    with pytest.raises(graders.CheckFailed, match="pairs"):
        graders.check_circuit_heads("L0H3", induction)


def test_measurements():
    graders.check_measurements(own(graders.reference_measurements))

    def wrong_positions(model, tokens, half_len):
        out = graders.reference_measurements(model, tokens, half_len)
        out["in_context_learning_score"] += 0.5
        return out

    fails(graders.check_measurements, wrong_positions, "in_context_learning_score")


def test_counterexample():
    def runs(copies: int, n_distinct: int):
        """Each of n_distinct random tokens written `copies` times, tiled; count predictions at a run's first token."""
        def make_batch(batch, seed):
            generator = torch.Generator().manual_seed(seed)
            distinct = torch.stack([torch.randperm(127, generator=generator)[:n_distinct] + 1 for _ in range(batch)])
            span = distinct.repeat_interleave(copies, dim=1)
            span_len = span.shape[1]
            tokens = torch.cat([torch.zeros(batch, 1, dtype=torch.long), span[:, torch.arange(63) % span_len]], dim=1)
            mask = tokens[:, :-1] != torch.cat([torch.full((batch, 1), -1), tokens[:, :-2]], dim=1)
            mask[:, : span_len + 1] = False
            return tokens, mask
        return make_batch

    runs_of_three = runs(3, 10)
    graders.check_counterexample(runs_of_three)
    outcome = graders.measure_counterexample(runs_of_three, seed=3)
    assert outcome["faithfulness"] < 0.4 and outcome["full_accuracy"] > 0.8

    # A near miss: with runs of five, several in-run keys outvote the exit key and the circuit copes again.
    fails(graders.check_counterexample, runs(5, 6), "still explains")

    def standard(batch, seed):
        tokens = tasks.repeated_tokens(batch, 30, 128, seed=seed)
        mask = torch.zeros(batch, 60, dtype=torch.bool)
        mask[:, 31:] = True
        return tokens, mask

    fails(graders.check_counterexample, standard, "still explains")

    def model_fails_too(batch, seed):
        tokens = torch.randint(1, 128, (batch, 64), generator=torch.Generator().manual_seed(seed))
        return tokens, torch.ones(batch, 63, dtype=torch.bool)

    fails(graders.check_counterexample, model_fails_too, "does not do well")

    fixed = runs_of_three(128, 0)
    fails(graders.check_counterexample, lambda batch, seed: (fixed[0][:batch], fixed[1][:batch]), "same tokens")
    fails(graders.check_counterexample, lambda batch, seed: runs_of_three(batch, seed)[0], "pair")


def test_compare_reports_without_revealing():
    with pytest.raises(graders.CheckFailed) as error:
        graders.compare("x", torch.tensor([1.0, 2.0, 3.5]), torch.tensor([1.0, 2.0, 3.0]))
    message = str(error.value)
    assert "1 of 3 values" in message and "0.5" in message and "[2]" in message
    assert "3.0" not in message  # the expected value itself is not printed
    with pytest.raises(graders.CheckFailed, match="dtype"):
        graders.compare("x", torch.tensor([1, 2]), torch.tensor([1.0, 2.0]))
    with pytest.raises(graders.CheckFailed, match="NaN"):
        graders.compare("x", torch.tensor([float("nan"), 2.0]), torch.tensor([1.0, 2.0]))


def test_yours_or_reference(capsys):
    def unfinished(x):
        raise NotImplementedError

    assert graders.yours_or_reference(unfinished, lambda x: x + 1)(1) == 2
    assert "reference" in capsys.readouterr().out
    assert graders.yours_or_reference(lambda x: x * 10, lambda x: x + 1)(1) == 10
