"""The graders must pass a correct answer and fail wrong ones: hard-coded, input-ignoring, off by one, mutating."""

from __future__ import annotations

import functools
import textwrap

import pytest
import torch

from mechinterp_course import circuits, graders
from mechinterp_course.circuits import previous_token_scores as imported_reference


def own(fn):
    """Wrap a reference so it looks like a student's function (the graders refuse the library's own)."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def fails(check, answer, match: str | None = None):
    with pytest.raises(graders.CheckFailed, match=match):
        check(answer)


def test_reference_itself_is_refused():
    fails(graders.check_previous_token_scores, circuits.previous_token_scores, "reference")
    fails(graders.check_previous_token_scores, functools.partial(circuits.diagonal_score, offset=1), "reference")


def _wrapper_helper(pattern):
    return circuits.previous_token_scores(pattern)


def _import_inside(pattern):
    from mechinterp_course.circuits import previous_token_scores

    return previous_token_scores(pattern)


@pytest.mark.parametrize("wrapper", [
    lambda *a: circuits.previous_token_scores(*a),  # the one-line wrapper
    lambda p: imported_reference(p),  # the reference imported under another name
    _import_inside,  # imported inside the function
    lambda p: _wrapper_helper(p),  # through a helper of the student's
    lambda p: getattr(circuits, "previous_token_scores")(p),  # by its name as a string
    lambda p, score=circuits.previous_token_scores: score(p),  # as a default argument
], ids=["attribute", "alias", "import", "helper", "getattr", "default"])
def test_a_wrapper_around_the_reference_is_refused(wrapper):
    fails(graders.check_previous_token_scores, wrapper, "calls the course library's `previous_token_scores`")


def test_a_wrong_wrapper_hears_what_is_wrong_and_a_refusal_does_not_linger(capsys):
    # Checked like any answer first: a wrapper that is wrong is told what is wrong with its output.
    fails(graders.check_previous_token_scores, lambda p: circuits.previous_token_scores(p) * 2, "wrong")
    fails(graders.check_previous_token_scores, lambda p: circuits.previous_token_scores(p), "calls the course")
    graders.check_previous_token_scores(lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1)))
    assert "correct" in capsys.readouterr().out


def test_honest_solutions_and_other_library_helpers_are_accepted(capsys):
    graders.check_previous_token_scores(lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1)))
    # Another library helper is fine (only the exercise's own reference is refused).
    graders.check_previous_token_scores(lambda p: circuits.diagonal_score(p, 1))
    assert capsys.readouterr().out.count("correct") == 2

    # A student's function may call the student's own function that has the reference's name.
    def head_direct_logit_attribution(z, W_O, direction):
        return torch.einsum("bhd,hdm,bm->bh", z, W_O, direction)

    def uses_own_helper(z, W_O, direction):
        return head_direct_logit_attribution(z, W_O, direction)

    graders.check_head_dla(uses_own_helper)


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
    reference = circuits.previous_token_scores  # captured by the variant below, as a test harness does
    def mutating(pattern):
        pattern.mul_(1.0).add_(0.0)
        pattern[0, 0, 0, 0] = 0.5
        return reference(pattern)

    fails(graders.check_previous_token_scores, mutating, "in place")


def test_head_dla():
    graders.check_head_dla(own(circuits.head_direct_logit_attribution))
    fails(graders.check_head_dla, lambda z, W_O, d: torch.einsum("bhd,hdm,bm->bh", z, W_O, d).abs(), "wrong")
    fails(graders.check_head_dla, lambda z, W_O, d: torch.zeros(2, 4), "shape")


def test_logit_diff_decomposition_must_sum_to_the_truth():
    reference = circuits.logit_diff_decomposition
    graders.check_logit_diff_decomposition(own(reference))

    def without_biases(model, cache, answer, wrong):
        terms, labels = reference(model, cache, answer, wrong)
        keep = torch.tensor(["b_" not in label for label in labels])
        return terms * keep, labels

    # The trained model's biases are not zero, so dropping them breaks the sum.
    fails(graders.check_logit_diff_decomposition, without_biases, "wrong")


def test_ablate_head():
    ablate = circuits.ablate_head
    graders.check_ablate_head(own(ablate))

    def mean_over_everything(z, head, method, reference=None, resample_index=None):
        out = ablate(z, head, method, reference, resample_index)
        if method == "mean":
            out[:, :, head] = reference[:, : z.shape[1], head].mean(dim=(0, 1))
        return out

    fails(graders.check_ablate_head, mean_over_everything, "mean ablation")

    def in_place(z, head, method, reference=None, resample_index=None):
        result = ablate(z, head, method, reference, resample_index)
        z.copy_(result)
        return z

    fails(graders.check_ablate_head, in_place, "in place")

    def no_value_error(z, head, method, reference=None, resample_index=None):
        if method == "zero":
            return ablate(z, head, method)
        if method == "mean":
            return ablate(z, head, method, reference, resample_index)
        return ablate(z, head, "resample", reference, resample_index)  # anything else: resample

    fails(graders.check_ablate_head, no_value_error, "ValueError")

    def key_error(z, head, method, reference=None, resample_index=None):
        if method not in ("zero", "mean", "resample"):
            raise KeyError(method)
        return ablate(z, head, method, reference, resample_index)

    # A crash is reported as the student's error, not as a raw traceback.
    fails(graders.check_ablate_head, key_error, "raised KeyError")


def test_normalised_metric():
    graders.check_normalised_metric(own(circuits.normalised_metric))
    fails(graders.check_normalised_metric, lambda v, c, k: (v - c) / (c - k), "wrong")
    # Ignoring two of the three inputs (the constants of a single example) fails on fresh clean/corrupted values.
    fails(graders.check_normalised_metric, lambda v, c, k: (v + 1.25) / 3.75, "wrong")
    fails(graders.check_normalised_metric, lambda v, c, k: (v - k) / 3.75, "wrong")
    # A magnitude in the denominator is right only when clean is above corrupted.
    fails(graders.check_normalised_metric, lambda v, c, k: (v - k) / abs(c - k), "wrong")
    fails(graders.check_normalised_metric, lambda v, c, k: (v - k) / c, "wrong")
    # Python floats for clean and corrupted must work, not only tensors.
    fails(graders.check_normalised_metric, lambda v, c, k: (v - k) / (c - k).clamp(min=1e-6), "raised")


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


def test_attribution_patching_that_cuts_the_graph_fails():
    """Detaching z at every hooked layer (a tempting way to get leaf tensors) leaves layer-0 heads with only their
    direct effect; the check must catch it."""

    def detached(model, clean, corrupted, metric):
        import einops

        names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
        _, clean_cache = model.run_with_cache(clean)
        saved = {}

        def save(z, hook, name):
            z = z.detach().requires_grad_(True)
            saved[name] = z
            return z

        with torch.enable_grad():
            hooks = [(name, functools.partial(save, name=name)) for name in names]
            value = metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))
            grads = torch.autograd.grad(value, [saved[name] for name in names])
        deltas = [clean_cache[n] - saved[n].detach() for n in names]
        return torch.stack([value.detach() + einops.einsum(g, d, "b p h d, b p h d -> h") for g, d in zip(grads, deltas)])

    fails(graders.check_attribution_patch_heads, detached, "wrong")


def test_path_patching():
    path_patch = circuits.path_patch_key
    graders.check_path_patch_key(own(path_patch))

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

    def only_same_layer_refused(model, clean, corrupted, sender, receiver, metric):
        if sender[0] == receiver[0]:
            raise ValueError("same layer")
        if sender[0] > receiver[0]:  # plausible slip: a reversed pair is "patched" anyway
            return path_patch(model, clean, corrupted, receiver, sender, metric)
        return path_patch(model, clean, corrupted, sender, receiver, metric)

    fails(graders.check_path_patch_key, only_same_layer_refused, "ValueError")

    def asserts(model, clean, corrupted, sender, receiver, metric):
        assert sender[0] < receiver[0], "not a path"
        return path_patch(model, clean, corrupted, sender, receiver, metric)

    # An assert is not the ValueError the exercise asks for; the crash is reported, not a raw traceback.
    fails(graders.check_path_patch_key, asserts, "raised AssertionError")

    def ignores_the_sender_head(model, clean, corrupted, sender, receiver, metric):
        return path_patch(model, clean, corrupted, (sender[0], 3), receiver, metric)

    fails(graders.check_path_patch_key, ignores_the_sender_head, "wrong")


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
    reference = graders.reference_measurements
    graders.check_measurements(own(reference))

    def wrong_positions(model, tokens, half_len):
        out = reference(model, tokens, half_len)
        out["in_context_learning_score"] += 0.5
        return out

    fails(graders.check_measurements, wrong_positions, "in_context_learning_score")

    def ignores_half_len(model, tokens, half_len):
        return reference(model, tokens, 30)  # the notebook's value, hard-coded

    fails(graders.check_measurements, ignores_half_len, "half_len 26")

    def hard_coded(model, tokens, half_len):
        return {"max_induction_score": 0.81, "n_induction_heads": 4, "in_context_learning_score": -4.95}

    fails(graders.check_measurements, hard_coded, "wrong")


def test_circuit_studies_quiz():
    studies, options = circuits.circuit_studies_quiz()
    key = circuits.circuit_studies_key()
    assert sorted(key) == sorted(studies) and sorted(key.values()) == sorted(options)  # a one-to-one matching
    assert [study.name for study in circuits.CIRCUIT_STUDIES] == studies
    assert list(key.values()) != sorted(key.values())  # the letters do not simply follow the studies' order
    assert any(study.secondary and "secondary" in study.source for study in circuits.CIRCUIT_STUDIES)
    graders.check_circuit_studies(dict(key))
    graders.check_circuit_studies({study: letter.lower() for study, letter in key.items()})  # case does not matter
    for letter in options:  # a constant answer: all but one wrong, and the message says how many, not which
        n_wrong = f"{len(studies) - 1} of {len(studies)} matches are wrong"
        with pytest.raises(graders.CheckFailed, match=n_wrong) as error:
            graders.check_circuit_studies(dict.fromkeys(studies, letter))
        assert not any(study in str(error.value) for study in studies)
    swapped = dict(key)
    first, second = studies[:2]
    swapped[first], swapped[second] = key[second], key[first]
    fails(graders.check_circuit_studies, swapped, "2 of")
    fails(graders.check_circuit_studies, dict.fromkeys(studies), "not one of the letters")
    fails(graders.check_circuit_studies, {study: key[study] for study in studies[1:]}, "1 missing")
    fails(graders.check_circuit_studies, list(key.values()), "dict")


def runs(copies: int, n_distinct: int):
    """Each of n_distinct random tokens written `copies` times in a row, the span tiled to 64 tokens after BOS."""

    def make_batch(batch, seed):
        generator = torch.Generator().manual_seed(seed)
        distinct = torch.stack([torch.randperm(127, generator=generator)[:n_distinct] + 1 for _ in range(batch)])
        span = distinct.repeat_interleave(copies, dim=1)
        return torch.cat([torch.zeros(batch, 1, dtype=torch.long), span[:, torch.arange(63) % span.shape[1]]], dim=1)

    return make_batch


def run_starts_seen_before(tokens):
    """The first token of a run whose token occurred earlier: the answer is that token again, found by induction."""
    current = tokens[:, :-1]
    previous = torch.cat([torch.full((tokens.shape[0], 1), -1), tokens[:, :-2]], dim=1)
    seen = (current[:, :, None] == current[:, None, :]).tril(-1).any(-1)
    return (current != previous) & seen


def test_counterexample():
    runs_of_three = runs(3, 10)
    graders.check_counterexample(runs_of_three, run_starts_seen_before)
    outcome = graders.measure_counterexample(runs_of_three, run_starts_seen_before, seed=3)
    assert outcome["faithfulness"] < 0.4 and outcome["full_accuracy"] > 0.8
    assert outcome["baseline_gap"] > graders.COUNTEREXAMPLE_MIN_BASELINE_GAP

    # A near miss: with runs of five, several in-run keys outvote the exit key and the circuit copes again.
    fails_pair(runs(5, 6), run_starts_seen_before, "still explains")
    # The standard probe is what the circuit explains best.
    fails_pair(circuits.probe_batch, circuits.probe_predictions, "still explains")

    def random_tokens(batch, seed):
        return torch.randint(1, 128, (batch, 64), generator=torch.Generator().manual_seed(seed))

    fails_pair(random_tokens, lambda tokens: torch.ones(tokens.shape[0], 63, dtype=torch.bool), "does not do well")

    fixed = runs_of_three(128, 0)
    fails_pair(lambda batch, seed: fixed[:batch], run_starts_seen_before, "same tokens")
    # The old interface (tokens, mask) from make_batch is refused with a pointer to the new one.
    fails_pair(lambda batch, seed: (runs_of_three(batch, seed), None), run_starts_seen_before, "tokens alone")
    fails_pair(runs_of_three, lambda tokens: run_starts_seen_before(tokens).long(), "boolean")
    fails_pair(runs_of_three, lambda tokens: torch.zeros(tokens.shape[0], 63, dtype=torch.bool), "only 0")


def fails_pair(make_batch, which_predictions, match):
    with pytest.raises(graders.CheckFailed, match=match):
        graders.check_counterexample(make_batch, which_predictions)


def test_counterexample_needs_the_heads_to_matter(monkeypatch):
    """Faithfulness is a ratio over (all heads ablated - full model): a tiny gap makes it meaningless."""
    outcome = {"full_loss": 1.0, "circuit_loss": 1.25, "baseline_loss": 1.3, "full_accuracy": 0.9,
               "baseline_gap": 0.3, "faithfulness": 0.17}
    monkeypatch.setattr(circuits, "circuit_faithfulness", lambda *args: dict(outcome))
    fails_pair(runs(3, 10), run_starts_seen_before, "hardly matter")


#: The cheat the audit found, as a notebook would hold it: the mask is read off the notebook's global `model`, so it
#: counts exactly the predictions where the circuit fails and the full model succeeds.
CHEATS = textwrap.dedent("""
    OUTSIDE = [(0, 0), (0, 2)]

    def cheating_mask(tokens, model):
        full_logits = model(tokens)
        circuit_logits = circuits.run_with_heads_ablated(model, tokens, OUTSIDE, "mean",
                                                         circuits.induction_reference_tokens(128))
        full_loss = circuits.per_token_loss(full_logits, tokens)
        circuit_loss = circuits.per_token_loss(circuit_logits, tokens)
        right = full_logits[:, :-1].argmax(-1) == tokens[:, 1:]
        return right & (circuit_loss > full_loss + 1.0)

    def uses_the_global_model(tokens):
        with torch.no_grad():
            return cheating_mask(tokens, model)

    def helper():
        return model

    def through_a_helper(tokens):
        return cheating_mask(tokens, helper())

    def with_a_default(tokens, m=model):
        return cheating_mask(tokens, m)

    def closure(m):
        def inner(tokens):
            return cheating_mask(tokens, m)
        return inner

    through_a_closure = closure(model)

    def builds_its_own_model(tokens):
        fresh = __import__("mechinterp_course.graders", fromlist=["fresh_model"]).fresh_model()
        with torch.no_grad():
            return cheating_mask(tokens, fresh)

    def reads_the_library(tokens):
        return circuits.probe_predictions(tokens)
""")


@pytest.fixture(scope="module")
def notebook():
    """A namespace like a student's notebook: the model, torch and the library at top level."""
    namespace = {"__name__": "student_notebook", "torch": torch, "circuits": circuits, "model": graders.fresh_model()}
    exec(CHEATS, namespace)
    return namespace


def test_the_cheat_would_pass_without_the_rule(notebook):
    """Unrestricted, the cheat's mask on a distribution the circuit explains (runs of five) passes every threshold."""
    model, tokens = notebook["model"], runs(5, 6)(128, graders._seed("counterexample hunt", 0))
    with torch.no_grad():
        mask = notebook["cheating_mask"](tokens, model)
    outcome = circuits.circuit_faithfulness(model, tokens, mask, graders.induction_circuit(model),
                                            circuits.induction_reference_tokens(128))
    assert int(mask.sum()) >= graders.COUNTEREXAMPLE_MIN_PREDICTIONS
    assert outcome["faithfulness"] < graders.COUNTEREXAMPLE_MAX_FAITHFULNESS
    assert outcome["full_accuracy"] > graders.COUNTEREXAMPLE_MIN_ACCURACY


@pytest.mark.parametrize("name, match", [
    ("uses_the_global_model", "uses `model`, a model"),
    ("through_a_helper", "uses `model`, a model"),
    ("with_a_default", "holds a model in the default argument `m`"),
    ("through_a_closure", "holds a model in its closure variable `m`"),
    ("builds_its_own_model", "ran a model"),
    ("reads_the_library", "uses `circuits`, a module of the course library"),
])
def test_the_mask_may_depend_on_the_tokens_only(notebook, name, match):
    fails_pair(runs(5, 6), notebook[name], match)
    # The guard is gone afterwards: models run as usual.
    assert notebook["model"](runs(5, 6)(2, 0)).shape == (2, 64, 128)


def test_demo_fallback_is_the_standard_probe(capsys):
    def make_batch(batch, seed):
        raise NotImplementedError

    def which_predictions(tokens):
        raise NotImplementedError

    outcome = graders.measure_counterexample(
        graders.yours_or_reference(make_batch, circuits.probe_batch, "the standard probe"),
        graders.yours_or_reference(which_predictions, circuits.probe_predictions, "the standard probe"), seed=0)
    assert "`make_batch` is not written yet: this cell uses the standard probe" in capsys.readouterr().out
    assert outcome["faithfulness"] > 0.9  # the probe: the circuit explains it


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

    fallback = graders.yours_or_reference(unfinished, lambda x: x + 1)
    assert [fallback(1), fallback(2)] == [2, 3]
    assert capsys.readouterr().out.count("reference") == 1  # said once, not once per call
    assert graders.yours_or_reference(lambda x: x * 10, lambda x: x + 1)(1) == 10
