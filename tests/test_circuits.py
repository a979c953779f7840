"""Chapter 01 ("Circuits"): its checks and its reference answers.

For every check: a right answer passes, right answers written differently pass (einops, float64, another
algorithm), hard-coded or input-ignoring answers fail, and each typical wrong answer gets the *telling* message
(what is wrong, and where), not only a failure. Then the reference answers' properties that the chapter's text relies
on (a decomposition that sums to the logit difference, L0H3's two regimes, copying and prefix matching in the
weights), and the notebook's form (100 columns, a quiz the table does not answer verbatim).

The shared checking machinery (refusing the reference, dependency notes, fallbacks, hidden seeds, the record) is
tested through these checks in tests/test_checking.py.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from pathlib import Path

import einops
import pytest
import torch

from mechinterp_course import circuits, models, tasks
from mechinterp_course.checking import CheckFailed
from mechinterp_course.circuits import checks as check
from mechinterp_course.circuits import reference

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "01_circuits" / "01_circuits.ipynb"


from conftest import fails, own  # noqa: E402 - the suite's shared helpers


@pytest.fixture(scope="module")
def model():
    return models.fresh(check.MODEL)


# ==================================================================================================================
# Section 1: reading a pattern
# ==================================================================================================================


def test_get_attention_pattern(capsys):
    check.get_attention_pattern(own(reference.get_attention_pattern))

    def filtered_float64(model, tokens, layer):  # another way: only the hook asked for, in float64
        name = f"blocks.{layer}.attn.hook_pattern"
        return model.run_with_cache(tokens, names_filter=lambda n: n == name)[1][name].double()

    check.get_attention_pattern(filtered_float64)
    assert capsys.readouterr().out.count("correct") == 2

    pattern = own(reference.get_attention_pattern)
    fails(
        check.get_attention_pattern,
        lambda model, tokens, layer: pattern(model, tokens, 0),
        match="asked for layer 1, your function returned layer 0's pattern",
    )
    fails(
        check.get_attention_pattern,
        lambda model, tokens, layer: pattern(model, tokens, layer).transpose(-1, -2),
        match="you transposed it",
    )

    def scores(model, tokens, layer, mask=-torch.inf):  # the scores before the softmax
        _, cache = model.run_with_cache(tokens)
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
        raw = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1] ** 0.5
        return raw.masked_fill(torch.ones_like(raw[0, 0], dtype=torch.bool).triu(1), mask)

    fails(check.get_attention_pattern, scores, match="infinite or NaN entries: a pattern is the softmax")
    fails(check.get_attention_pattern, functools.partial(scores, mask=0.0), match="sum to between")
    fails(
        check.get_attention_pattern, lambda model, tokens, layer: pattern(model, tokens[:1], layer), match="has shape"
    )


# ==================================================================================================================
# Section 2: scores, and where a head works
# ==================================================================================================================

SCORES = {
    "previous_token_scores": (check.previous_token_scores, reference.previous_token_scores, lambda h: 1, False),
    "duplicate_token_scores": (check.duplicate_token_scores, reference.duplicate_token_scores, lambda h: h, True),
    "induction_scores": (check.induction_scores, reference.induction_scores, lambda h: h - 1, True),
}


def _diagonal_score(offset_of, needs_half_len, shift=0, reduce="mean"):
    """A score read off the diagonal ``offset_of(half_len) + shift`` below the main one."""

    def score(pattern, half_len=None):
        entries = pattern.diagonal(offset=-(offset_of(half_len) + shift), dim1=-2, dim2=-1)
        return entries.mean(dim=(0, -1)) if reduce == "mean" else entries.sum(dim=(0, -1))

    return score if needs_half_len else (lambda pattern: score(pattern))


@pytest.mark.parametrize("name", SCORES)
def test_head_scores(name, capsys):
    checker, ref, offset_of, needs_half_len = SCORES[name]
    checker(own(ref))

    def by_loop(pattern, *half_len):  # another algorithm: an explicit loop over query positions, in float64
        offset = offset_of(*half_len) if half_len else 1
        seq = pattern.shape[-1]
        values = [pattern[:, :, q, q - offset].double() for q in range(offset, seq)]
        return torch.stack(values, dim=-1).mean(dim=(0, -1))

    checker(by_loop)
    assert capsys.readouterr().out.count("correct") == 2
    # Off by one either way: the perfect head scores (near) 0, and the message says to check the offset.
    for shift in (1, -1):
        message = fails(checker, _diagonal_score(offset_of, needs_half_len, shift), match="must score 1")
        assert "scores 0" in message and "offset" in message
    fails(checker, _diagonal_score(offset_of, needs_half_len, reduce="sum"), match="not a sum")
    # Hard-coded, or ignoring the input: fails on the anchors or on the random patterns.
    fails(checker, lambda *args: torch.tensor([1.0, 0.0]), match="the scores")
    fails(checker, lambda *args: torch.full((4,), 0.5), match="shape")


def test_a_score_that_changes_its_input_fails():
    score = reference.previous_token_scores  # captured in the closure below, as a test harness does

    def mutating(pattern):
        result = score(pattern)
        pattern[0, 0, 0, 0] = 0.5
        return result

    fails(check.previous_token_scores, mutating, match="in place")


def test_circuit_heads(model):
    circuit = check.induction_circuit(model)
    previous = [lh for lh in circuit if lh[0] == 0]
    induction = [lh for lh in circuit if lh[0] == 1]
    check.circuit_heads(previous, induction)
    check.circuit_heads([list(lh) for lh in previous], induction)  # lists instead of tuples are fine
    fails(check.circuit_heads, previous[:1], induction, match="1 head\\(s\\) above the 0.4 threshold are missing")
    fails(check.circuit_heads, previous + [(0, 0)], induction, match="1 listed head\\(s\\) are below it")
    fails(check.circuit_heads, "L0H3", induction, match="list of \\(layer, head\\) pairs")


def test_previous_token_attention(capsys):
    check.previous_token_attention(own(reference.previous_token_attention))

    def with_einops_and_a_loop(pattern):  # another way: gather the entries one query at a time
        batch, n_heads, seq, _ = pattern.shape
        out = torch.full((n_heads, seq), float("nan"), dtype=torch.float64)
        for q in range(1, seq):
            out[:, q] = einops.reduce(pattern[:, :, q, q - 1].double(), "batch head -> head", "mean")
        return out

    check.previous_token_attention(with_einops_and_a_loop)
    assert capsys.readouterr().out.count("correct") == 2
    ref = own(reference.previous_token_attention)
    fails(check.previous_token_attention, lambda p: ref(p).nan_to_num(0.0), match="must be NaN")
    fails(check.previous_token_attention, lambda p: ref(p)[:, 1:], match="give one per query position")
    shifted = lambda p: torch.cat([ref(p)[:, :1], ref(p)[:, 2:], torch.zeros(p.shape[1], 1)], dim=1)  # noqa: E731
    fails(check.previous_token_attention, shifted, match="shifted by one position")
    fails(check.previous_token_attention, lambda p: ref(p[:1]), match="values of the curves")  # one example only
    fails(check.previous_token_attention, lambda p: ref(p).mean(0), match="shape")


def test_where_the_previous_token_head_works():
    """The chapter's lesson, measured: L0H3 is near-perfect up to one position, idle after, and the check knows
    where (the same position whatever the batch)."""
    tokens = tasks.repeated_tokens(64, check.HALF_LEN, 128, seed=5)
    with torch.no_grad():
        pattern = models.fresh(check.MODEL).run_with_cache(tokens)[1]["blocks.0.attn.hook_pattern"]
    strongest = int(reference.previous_token_scores(pattern).argmax())
    curve = reference.previous_token_attention(pattern)[strongest]
    until = int(torch.nonzero(curve[1:] < circuits.ATTENTION_MAJORITY)[0])
    assert strongest == 3 and until == 32
    assert float(curve[1 : until + 1].min()) > 0.9 and float(curve[until + 1 :].max()) < 0.05
    # The score is a mean that describes neither regime.
    assert 0.4 < float(reference.previous_token_scores(pattern)[strongest]) < 0.6
    check.previous_token_until(until)
    check.previous_token_until(float(until))
    for off in (until - 1, until + 1):
        fails(check.previous_token_until, off, match="off by one")
    fails(check.previous_token_until, 20, match="does not stop at query position 20")
    fails(check.previous_token_until, None, match="whole number")
    fails(check.previous_token_until, True, match="whole number")


# ==================================================================================================================
# Section 3: direct logit attribution
# ==================================================================================================================


def test_head_direct_logit_attribution(capsys):
    check.head_direct_logit_attribution(own(reference.head_direct_logit_attribution))
    check.head_direct_logit_attribution(
        lambda z, W_O, d: torch.einsum("bhd,hdm,bm->bh", z.double(), W_O.double(), d.double())
    )
    assert capsys.readouterr().out.count("correct") == 2
    right = own(reference.head_direct_logit_attribution)
    fails(
        check.head_direct_logit_attribution, lambda z, W_O, d: right(z, W_O, d).T, match="return \\[batch, n_heads\\]"
    )
    fails(
        check.head_direct_logit_attribution,
        lambda z, W_O, d: right(z, W_O, d[:1].expand_as(d)),
        match="scored along the first example.s direction",
    )
    fails(
        check.head_direct_logit_attribution,
        lambda z, W_O, d: right(z, W_O, d).abs(),
        match="the sum over heads of your attributions",
    )
    fails(check.head_direct_logit_attribution, lambda z, W_O, d: right(z, W_O, d).sum(-1), match="shape")


def test_decompose_logit_diff(capsys):
    decompose = own(reference.decompose_logit_diff)
    check.decompose_logit_diff(decompose)
    assert "correct" in capsys.readouterr().out

    def without_b_U(model, cache, answer, wrong):
        terms, labels = decompose(model, cache, answer, wrong)
        return terms[:-1], labels[:-1]

    message = fails(check.decompose_logit_diff, without_b_U, match="your terms sum to")
    assert "but the model's logit difference is" in message and "lack 'b_U'" in message

    def zero_b_U(model, cache, answer, wrong):  # the label kept, the term forgotten
        terms, labels = decompose(model, cache, answer, wrong)
        return torch.cat([terms[:-1], torch.zeros(1)]), labels

    fails(check.decompose_logit_diff, zero_b_U, match="your terms sum to .* the decomposition is exact")

    def summed_over_the_batch(model, cache, answer, wrong):
        terms, labels = decompose(model, cache, answer, wrong)
        return terms * answer.shape[0], labels

    fails(check.decompose_logit_diff, summed_over_the_batch, match="times the logit difference .* not the sum")

    def two_heads_swapped(model, cache, answer, wrong):  # the sum survives; the terms name the heads
        terms, labels = decompose(model, cache, answer, wrong)
        i, j = labels.index("L1H0"), labels.index("L1H2")
        terms = terms.clone()
        terms[[i, j]] = terms[[j, i]]
        return terms, labels

    message = fails(check.decompose_logit_diff, two_heads_swapped, match="values of the terms")
    assert re.search(r"at L1H[02]\.$", message.splitlines()[0])

    def other_labels(model, cache, answer, wrong):
        terms, labels = decompose(model, cache, answer, wrong)
        return terms, [label.lower() for label in labels]

    fails(check.decompose_logit_diff, other_labels, match="the labels should be")
    fails(check.decompose_logit_diff, lambda *args: torch.zeros(13), match="return a pair")


# ==================================================================================================================
# Section 4: ablation
# ==================================================================================================================


def test_ablate_head(capsys):
    ablate = own(reference.ablate_head)
    check.ablate_head(ablate)
    assert "correct" in capsys.readouterr().out

    def every_head(z, head, method, reference=None, resample_index=None):
        out = ablate(z, head, method, reference, resample_index)
        for other in range(z.shape[2]):
            out = ablate(out, other, method, reference, resample_index)
        return out

    fails(check.ablate_head, every_head, match="zero ablation of H1 also changed H0")

    def mean_over_positions(z, head, method, reference=None, resample_index=None):
        out = ablate(z, head, method, reference, resample_index)
        if method == "mean":
            out[:, :, head] = reference[:, : z.shape[1], head].mean(dim=(0, 1))
        return out

    fails(check.ablate_head, mean_over_positions, match="same vector at every position")

    def mean_of_z(z, head, method, reference=None, resample_index=None):
        out = ablate(z, head, method, reference, resample_index)
        if method == "mean":
            out[:, :, head] = z[:, :, head].mean(dim=0)
        return out

    fails(check.ablate_head, mean_of_z, match="you averaged z itself")

    def first_rows(z, head, method, reference=None, resample_index=None):
        if method == "resample":
            return ablate(z, head, method, reference, torch.arange(z.shape[0]))
        return ablate(z, head, method, reference, resample_index)

    fails(check.ablate_head, first_rows, match="row i must get reference row resample_index\\[i\\]")

    def in_place(z, head, method, reference=None, resample_index=None):
        z.copy_(ablate(z, head, method, reference, resample_index))
        return z

    fails(check.ablate_head, in_place, match="in place")

    def no_value_error(z, head, method, reference=None, resample_index=None):
        return ablate(z, head, method if method in ("zero", "mean") else "resample", reference, resample_index)

    fails(check.ablate_head, no_value_error, match="should raise a ValueError")

    def key_error(z, head, method, reference=None, resample_index=None):
        if method not in ("zero", "mean", "resample"):
            raise KeyError(method)
        return ablate(z, head, method, reference, resample_index)

    fails(check.ablate_head, key_error, match="raised KeyError")


# ==================================================================================================================
# Sections 5-6: activation and attribution patching
# ==================================================================================================================


def test_normalised_metric(capsys):
    check.normalised_metric(own(reference.normalised_metric))
    check.normalised_metric(lambda v, c, k: 1 - (torch.as_tensor(v, dtype=torch.float64) - c) / (k - c))
    assert capsys.readouterr().out.count("correct") == 2
    message = fails(check.normalised_metric, lambda v, c, k: (v - c) / (k - c), match="you swapped clean")
    assert "maps the clean run to 0 and the corrupted run to 1" in message
    fails(
        check.normalised_metric,
        lambda v, c, k: (v - c) / (c - k),
        match="maps the clean run's own metric to -?0; it must map it to 1",
    )
    # Ignoring two of the three inputs (the numbers of one example) fails on fresh clean/corrupted values.
    fails(check.normalised_metric, lambda v, c, k: (v + 1.25) / 3.75, match="maps the")
    fails(check.normalised_metric, lambda v, c, k: (v - k) / abs(c - k), match="must map it to 1")
    # Python floats for clean and corrupted must work, not only tensors.
    fails(check.normalised_metric, lambda v, c, k: (v - k) / (c - k).clamp(min=1e-6), match="raised")


def _memo(fn):
    """An answer that ignores its input after the first call (a cached result)."""
    cached = {}

    def memo(*args):
        if "value" not in cached:
            cached["value"] = fn(*args)
        return cached["value"]

    return memo


def test_patch_residual_by_layer_pos(capsys):
    patch = own(reference.patch_residual_by_layer_pos)
    check.patch_residual_by_layer_pos(patch)
    assert "correct" in capsys.readouterr().out
    message = fails(
        check.patch_residual_by_layer_pos,
        lambda model, clean, corrupted, metric: patch(model, corrupted, clean, metric),
        match="you swapped them",
    )
    assert "the clean run's metric" in message

    def every_position_at_once(model, clean, corrupted, metric):
        _, clean_cache = model.run_with_cache(clean)
        out = torch.zeros(model.cfg.n_layers, clean.shape[1])
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_pre"
            for pos in range(clean.shape[1]):
                hook = lambda resid, hook, name=name: clean_cache[name].clone()  # noqa: E731
                out[layer, pos] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
        return out

    fails(check.patch_residual_by_layer_pos, every_position_at_once, match="patching any other position must leave")

    def after_the_block(model, clean, corrupted, metric):  # resid_post instead of resid_pre
        _, clean_cache = model.run_with_cache(clean)
        out = torch.zeros(model.cfg.n_layers, clean.shape[1])
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_post"
            for pos in range(clean.shape[1]):

                def hook(resid, hook, pos=pos, name=name):
                    resid = resid.clone()
                    resid[:, pos] = clean_cache[name][:, pos]
                    return resid

                out[layer, pos] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
        return out

    fails(check.patch_residual_by_layer_pos, after_the_block, match="hook_resid_pre")
    fails(check.patch_residual_by_layer_pos, _memo(patch), match="patching map|must leave")


def test_patch_heads(capsys):
    patch = own(reference.patch_heads)
    check.patch_heads(patch)
    assert "correct" in capsys.readouterr().out
    fails(
        check.patch_heads,
        lambda model, clean, corrupted, metric: patch(model, corrupted, clean, metric),
        match="you ran the clean input and patched in the corrupted run's activations",
    )

    def patched(model, clean, corrupted, metric, heads_of, positions=slice(None)):
        _, clean_cache = model.run_with_cache(clean)
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_z"
            for head in range(model.cfg.n_heads):

                def hook(z, hook, head=head, name=name):
                    z = z.clone()
                    for h in heads_of(head, z.shape[2]):
                        z[:, positions, h] = clean_cache[name][:, positions, h]
                    return z

                out[layer, head] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
        return out

    fails(
        check.patch_heads,
        functools.partial(patched, heads_of=lambda head, n: range(n)),
        match="you patched the whole layer's z at once",
    )
    fails(
        check.patch_heads,
        functools.partial(patched, heads_of=lambda head, n: [head], positions=slice(-1, None)),
        match="at the last position only",
    )
    fails(
        check.patch_heads,
        lambda model, clean, corrupted, metric: patch(model, clean, corrupted, metric) - metric(model(corrupted)),
        match="with clean = corrupted",
    )
    fails(check.patch_heads, _memo(patch), match="values of the per-head results")


def _detached_attribution(model, clean, corrupted, metric):
    """Detaching z at every hooked layer (a tempting way to get leaf tensors) keeps only layer 0's direct effect."""
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


def test_attribution_patch_heads(capsys):
    attribute = own(reference.attribution_patch_heads)
    check.attribution_patch_heads(attribute)
    assert "correct" in capsys.readouterr().out

    def no_start(model, clean, corrupted, metric):  # forgets metric(corrupted)
        with torch.no_grad():
            start = metric(model(corrupted))
        return attribute(model, clean, corrupted, metric) - start

    message = fails(check.attribution_patch_heads, no_start, match="yours are 0")
    assert "metric(corrupted) + gradient" in message and "normalised metric hides this" in message
    fails(check.attribution_patch_heads, _detached_attribution, match="your last layer's estimates are right but L0H")
    fails(
        check.attribution_patch_heads,
        lambda model, clean, corrupted, metric: attribute(model, corrupted, clean, metric),
        match="you linearised around the clean run",
    )

    def backwards(model, clean, corrupted, metric):
        with torch.no_grad():
            start = metric(model(corrupted))
        return 2 * start - attribute(model, clean, corrupted, metric)

    fails(check.attribution_patch_heads, backwards, match="move the wrong way")
    fails(check.attribution_patch_heads, _memo(attribute), match="values of the estimates")


# ==================================================================================================================
# Section 7: path patching, composition, copying, prefix matching
# ==================================================================================================================


def _through(kind, all_heads=False):
    """Path patching through the receiver's ``kind`` input (q, k or v), of one head or of every head."""

    def patch(model, clean, corrupted, sender, receiver, metric):
        (s_layer, s_head), (r_layer, r_head) = sender, receiver
        if s_layer >= r_layer:
            raise ValueError("not a path")
        name = f"blocks.{s_layer}.attn.hook_z"
        z_clean, z_corrupted = model.run_with_cache(clean)[1][name], model.run_with_cache(corrupted)[1][name]
        delta = z_clean[:, :, s_head] - z_corrupted[:, :, s_head]
        weight = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[kind][r_layer]
        heads = range(model.cfg.n_heads) if all_heads else [r_head]

        def hook(x, hook):
            x = x.clone()
            for head in heads:
                x[:, :, head] += delta @ model.W_O[s_layer, s_head] @ weight[head]
            return x

        return metric(model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{r_layer}.attn.hook_{kind}", hook)]))

    return patch


def test_path_patch_key(capsys):
    path_patch = own(reference.path_patch_key)
    check.path_patch_key(path_patch)
    check.path_patch_key(_through("k"))  # written differently: the same edit, computed step by step
    assert capsys.readouterr().out.count("correct") == 2

    def whole_head(model, clean, corrupted, sender, receiver, metric):
        (s_layer, s_head), (r_layer, _) = sender, receiver
        if s_layer >= r_layer:
            raise ValueError("not a path")
        name = f"blocks.{s_layer}.attn.hook_z"
        clean_z = model.run_with_cache(clean)[1][name]

        def hook(z, hook):
            z = z.clone()
            z[:, :, s_head] = clean_z[:, :, s_head]
            return z

        return metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))

    fails(check.path_patch_key, whole_head, match="patching the sender's whole output")
    # Under the key corruption the query and value paths change (almost) nothing: both read as one of them.
    for kind in ("q", "v"):
        fails(
            check.path_patch_key,
            _through(kind),
            match="the receiver's (query|value) gives .* adds it to the receiver's key",
        )
    fails(check.path_patch_key, _through("k", all_heads=True), match="every head in the receiver's layer")

    def only_same_layer_refused(model, clean, corrupted, sender, receiver, metric):
        if sender[0] == receiver[0]:
            raise ValueError("same layer")
        if sender[0] > receiver[0]:  # plausible slip: a reversed pair is "patched" anyway
            return path_patch(model, clean, corrupted, receiver, sender, metric)
        return path_patch(model, clean, corrupted, sender, receiver, metric)

    fails(check.path_patch_key, only_same_layer_refused, match="should raise a ValueError")

    def asserts(model, clean, corrupted, sender, receiver, metric):
        assert sender[0] < receiver[0], "not a path"
        return path_patch(model, clean, corrupted, sender, receiver, metric)

    fails(check.path_patch_key, asserts, match="raised AssertionError")
    fails(
        check.path_patch_key,
        lambda model, clean, corrupted, sender, receiver, metric: path_patch(
            model, clean, corrupted, (sender[0], 3), receiver, metric
        ),
        match="the result",
    )


def test_composition_score(capsys):
    check.composition_score(own(reference.composition_score))
    check.composition_score(
        lambda A, B: (
            torch.linalg.matrix_norm((A @ B).double())
            / (torch.linalg.matrix_norm(A.double()) * torch.linalg.matrix_norm(B.double()))
        )
    )
    assert capsys.readouterr().out.count("correct") == 2
    fails(
        check.composition_score,
        lambda A, B: (A @ B).norm(dim=(-2, -1)) / A.norm(dim=(-2, -1)),
        match="rescaling a matrix must not change the score.* divide by \\|\\|W_B\\|\\|_F",
    )
    fails(
        check.composition_score,
        lambda A, B: (A @ B).norm(dim=(-2, -1)) / B.norm(dim=(-2, -1)),
        match="divide by \\|\\|W_A\\|\\|_F",
    )
    fails(check.composition_score, lambda A, B: (A @ B).norm(dim=(-2, -1)), match="both matrices")
    fails(
        check.composition_score,
        lambda A, B: (A * B).norm(dim=(-2, -1)) / (A.norm(dim=(-2, -1)) * B.norm(dim=(-2, -1))),
        match="element by element",
    )
    fails(check.composition_score, lambda A, B: torch.tensor(0.35), match="the scores")


def _identity_weights(n=5, heads=2):
    eye = torch.eye(n)
    return eye, eye.expand(heads, n, n).clone(), eye.expand(heads, n, n).clone(), eye


def test_full_ov_circuit(capsys):
    circuit = own(reference.full_ov_circuit)
    check.full_ov_circuit(circuit)
    check.full_ov_circuit(
        lambda W_E, W_V, W_O, W_U: einops.einsum(
            W_E.double(), W_V.double(), W_O.double(), W_U.double(), "v1 m1, h m1 d, h d m2, m2 v2 -> h v1 v2"
        )
    )
    assert capsys.readouterr().out.count("correct") == 2
    fails(check.full_ov_circuit, lambda *w: circuit(*w).transpose(-1, -2), match="you returned the transpose")
    fails(check.full_ov_circuit, lambda *w: circuit(*w).sum(0), match="did you sum over the heads")
    fails(check.full_ov_circuit, lambda W_E, W_V, W_O, W_U: W_E @ W_V @ W_O, match="shape|raised")
    fails(check.full_ov_circuit, lambda *w: circuit(*_identity_weights()), match="values of the circuits|shape")


def test_diagonal_win_rate(capsys):
    check.diagonal_win_rate(own(reference.diagonal_win_rate))

    def another_algorithm(circuit):
        diagonal = circuit.diagonal(dim1=-2, dim2=-1)
        others = circuit - torch.diag_embed(torch.full_like(diagonal, float("inf")))
        return (diagonal > others.amax(dim=-1)).double().mean(dim=-1)

    check.diagonal_win_rate(another_algorithm)
    assert capsys.readouterr().out.count("correct") == 2
    by_columns = lambda c: (c.argmax(dim=-2) == torch.arange(c.shape[-1])).float().mean(-1)  # noqa: E731
    fails(check.diagonal_win_rate, by_columns, match="you compared each diagonal entry with its column")
    fails(check.diagonal_win_rate, lambda c: c.diagonal(dim1=-2, dim2=-1).mean(-1), match="a count")
    fails(check.diagonal_win_rate, lambda c: c.argmax(dim=-1) == torch.arange(c.shape[-1]), match="shape")
    fails(check.diagonal_win_rate, lambda c: torch.ones(c.shape[:-2]), match="values of the scores")


def test_prefix_matching_circuit(capsys):
    circuit = own(reference.prefix_matching_circuit)
    check.prefix_matching_circuit(circuit)
    check.prefix_matching_circuit(
        lambda W_E, W_Q, W_K, W_OV: einops.einsum(
            (W_E @ W_Q).double(), (W_E @ W_OV @ W_K).double(), "h t d, h s d -> h t s"
        )
    )
    assert capsys.readouterr().out.count("correct") == 2
    fails(
        check.prefix_matching_circuit,
        lambda W_E, W_Q, W_K, W_OV: (W_E @ W_Q) @ (W_E @ W_K).transpose(-1, -2),
        match="does not change when W_OV_prev does",
    )
    fails(check.prefix_matching_circuit, lambda *w: circuit(*w).transpose(-1, -2), match="transpose")
    fails(check.prefix_matching_circuit, lambda W_E, W_Q, W_K, W_OV: circuit(W_E, W_Q, W_K, W_OV.T), match="transpose")
    fails(
        check.prefix_matching_circuit,
        lambda W_E, W_Q, W_K, W_OV: circuit(W_E, W_Q, W_K, W_OV) / W_Q.shape[-1] ** 0.5,
        match="you divided by sqrt\\(d_head\\)",
    )
    fails(
        check.prefix_matching_circuit,
        lambda W_E, W_Q, W_K, W_OV: circuit(W_E, W_K, W_Q, W_OV),
        match="you swapped the query and key sides",
    )


# ==================================================================================================================
# Section 8-9: the quiz and the measurements
# ==================================================================================================================

KEY = {
    "A": "backup",
    "B": "hydra",
    "C": "head-specialisation",
    "D": "ioi",
    "E": "orion",
    "F": "induction-heads",
    "G": "smallest-induction",
}


def test_circuit_studies_quiz():
    assert sorted(KEY) == sorted(circuits.STUDY_SCENARIOS)
    assert sorted(KEY.values()) == sorted(study.key for study in circuits.CIRCUIT_STUDIES)  # each key once
    check.circuit_studies(dict(KEY))
    check.circuit_studies({letter: f"  {key.upper()} " for letter, key in KEY.items()})  # case and spaces
    swapped = dict(KEY, A=KEY["B"], B=KEY["A"])
    message = fails(check.circuit_studies, swapped, match="2 of 7 scenarios")
    assert not any(letter in message.split(":", 1)[1] for letter in ("'A'", "'B'"))  # how many, not which
    fails(check.circuit_studies, dict.fromkeys(KEY), match="not one of the study keys")
    fails(check.circuit_studies, {k: v for k, v in KEY.items() if k != "A"}, match="1 missing")
    fails(check.circuit_studies, list(KEY.values()), match="dict")


def _words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def test_the_quiz_is_not_answered_by_the_table_verbatim():
    """Issue 16, item 8: no observation shares a run of four words with its study's row of the table."""
    studies = {study.key: study for study in circuits.CIRCUIT_STUDIES}
    for letter, observation in circuits.STUDY_SCENARIOS.items():
        study = studies[KEY[letter]]
        row = _words(f"{study.name} {study.finding}")
        runs = {tuple(row[i : i + 4]) for i in range(len(row) - 3)}
        words = _words(observation)
        shared = [" ".join(words[i : i + 4]) for i in range(len(words) - 3) if tuple(words[i : i + 4]) in runs]
        assert not shared, (letter, shared)


def test_circuit_studies_cite_their_sources():
    for study in circuits.CIRCUIT_STUDIES:
        assert study.source and ("deck" in study.source or "published-results.md" in study.source)
        assert study.secondary == ("secondary" in study.source)
    assert len({study.finding for study in circuits.CIRCUIT_STUDIES}) == len(circuits.CIRCUIT_STUDIES)


@torch.no_grad()  # as in the notebook
def test_measure():
    measure = own(reference.measure)
    check.measure(measure)

    def wrong_sign(model, tokens, half_len):
        out = measure(model, tokens, half_len)
        return dict(out, in_context_learning_score=-out["in_context_learning_score"])

    fails(check.measure, wrong_sign, match="wrong sign")
    fails(check.measure, lambda model, tokens, half_len: measure(model, tokens, 30), match="half_len 26")
    fails(
        check.measure,
        lambda *args: {"max_induction_score": 0.81, "n_induction_heads": 4, "in_context_learning_score": -4.95},
        match="is .*, which is off by",
    )
    fails(check.measure, lambda *args: [0.8, 4, -5.0], match="return a dict")
    fails(check.measure, lambda model, tokens, half_len: {"max_induction_score": 0.8}, match="missing the measurement")


# ==================================================================================================================
# Section 10: the counterexample hunt
# ==================================================================================================================


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


def probe(batch, seed):
    """The standard probe, BOS + 30 random tokens + the same again, written from the tokens alone."""
    first = torch.randint(1, 128, (batch, 30), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), first, first], dim=1)


def second_copy(tokens):
    n_predictions = tokens.shape[1] - 1
    return (torch.arange(n_predictions) > n_predictions // 2).expand(tokens.shape[0], n_predictions).clone()


def fails_pair(make_batch, which_predictions, match):
    with pytest.raises(CheckFailed, match=match):
        check.counterexample(make_batch, which_predictions)


def test_counterexample():
    runs_of_three = runs(3, 10)
    check.counterexample(runs_of_three, run_starts_seen_before)
    outcome = check.measure_counterexample(runs_of_three, run_starts_seen_before, seed=3)
    assert outcome["faithfulness"] < 0.4 and outcome["full_accuracy"] > 0.8
    assert outcome["baseline_gap"] > circuits.COUNTEREXAMPLE_MIN_BASELINE_GAP
    # A near miss: with runs of five, several in-run keys outvote the exit key and the circuit copes again.
    fails_pair(runs(5, 6), run_starts_seen_before, "still explains")
    # The standard probe is what the circuit explains best.
    fails_pair(probe, second_copy, "still explains")


def test_counterexample_refuses_what_is_no_distribution():
    runs_of_three = runs(3, 10)

    def random_tokens(batch, seed):
        return torch.randint(1, 128, (batch, 64), generator=torch.Generator().manual_seed(seed))

    fails_pair(random_tokens, lambda tokens: torch.ones(tokens.shape[0], 63, dtype=torch.bool), "does not do well")
    fixed = runs_of_three(128, 0)
    fails_pair(lambda batch, seed: fixed[:batch], run_starts_seen_before, "same tokens")
    # The old interface (tokens, mask) from make_batch is refused with a pointer to the new one.
    fails_pair(lambda batch, seed: (runs_of_three(batch, seed), None), run_starts_seen_before, "tokens alone")
    fails_pair(runs_of_three, lambda tokens: run_starts_seen_before(tokens).long(), "boolean")
    fails_pair(runs_of_three, lambda tokens: torch.zeros(tokens.shape[0], 63, dtype=torch.bool), "only 0")


def test_counterexample_needs_the_heads_to_matter(monkeypatch):
    """Faithfulness is a ratio over (all heads ablated - full model): a tiny gap makes it meaningless."""
    outcome = {
        "full_loss": 1.0,
        "circuit_loss": 1.25,
        "baseline_loss": 1.3,
        "full_accuracy": 0.9,
        "baseline_gap": 0.3,
        "faithfulness": 0.17,
    }
    monkeypatch.setattr(check, "circuit_faithfulness", lambda *args: dict(outcome))
    fails_pair(runs(3, 10), run_starts_seen_before, "hardly matter")


#: The cheat an audit found, as a notebook would hold it: the mask is read off the notebook's global `model`, so it
#: counts exactly the predictions where the circuit fails and the full model succeeds.
CHEATS = textwrap.dedent("""
    OUTSIDE = [(0, 0), (0, 2)]

    def cheating_mask(tokens, model):
        full_logits = model(tokens)
        circuit_logits = circuits.run_with_heads_ablated(model, tokens, OUTSIDE, ablate, "mean",
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
        fresh = __import__("mechinterp_course.models", fromlist=["fresh"]).fresh("induction-2l")
        with torch.no_grad():
            return cheating_mask(tokens, fresh)

    def reads_the_library(tokens):
        return circuits.probe_predictions(tokens)
""")


@pytest.fixture(scope="module")
def notebook(model):
    """A namespace like a student's notebook: the model, torch and the library at top level."""
    namespace = {
        "__name__": "student_notebook",
        "torch": torch,
        "circuits": circuits,
        "model": model,
        "ablate": own(reference.ablate_head),
    }
    exec(CHEATS, namespace)
    return namespace


def test_the_cheat_would_pass_without_the_rule(notebook, model):
    """Unrestricted, the cheat's mask on a distribution the circuit explains (runs of five) passes every threshold."""
    tokens = runs(5, 6)(128, 0)
    with torch.no_grad():
        mask = notebook["cheating_mask"](tokens, model)
    outcome = circuits.circuit_faithfulness(
        model,
        tokens,
        mask,
        check.induction_circuit(model),
        reference.ablate_head,
        circuits.induction_reference_tokens(128),
    )
    assert int(mask.sum()) >= circuits.COUNTEREXAMPLE_MIN_PREDICTIONS
    assert outcome["faithfulness"] < circuits.COUNTEREXAMPLE_MAX_FAITHFULNESS
    assert outcome["full_accuracy"] > circuits.COUNTEREXAMPLE_MIN_ACCURACY


@pytest.mark.parametrize(
    "name, match",
    [
        ("uses_the_global_model", "uses `model`, a model"),
        ("through_a_helper", "uses `model`, a model"),
        ("with_a_default", "holds a model in the default argument `m`"),
        ("through_a_closure", "holds a model in its closure variable `m`"),
        ("builds_its_own_model", "ran a model"),
        ("reads_the_library", "uses `circuits`, a module of the course library"),
    ],
)
def test_the_mask_may_depend_on_the_tokens_only(notebook, name, match):
    fails_pair(runs(5, 6), notebook[name], match)
    # The guard is gone afterwards: models run as usual.
    assert notebook["model"](runs(5, 6)(2, 0)).shape == (2, 64, 128)


def test_the_solution_cell_runs_in_a_box_of_its_own():
    """Graded, make_batch and which_predictions run from their cell's source with torch, einops, math, numpy and
    functools only (instructor.judge.defining_source + its runner): the solution's cell must work that way."""
    import math

    import nbformat
    import numpy

    from mechinterp_course.instructor import judge

    nb = nbformat.read(NOTEBOOK, as_version=4)
    test_index = next(
        i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "test-counterexample"
    )
    source = judge.defining_source(nb, test_index, "make_batch")
    assert "@exercise" not in source and "circuits" not in source
    box = {
        "__name__": "__student__",
        "torch": torch,
        "einops": einops,
        "math": math,
        "np": numpy,
        "numpy": numpy,
        "functools": functools,
    }
    exec(compile(source, "<the cell>", "exec"), box)
    check.counterexample(box["make_batch"], box["which_predictions"])


# ==================================================================================================================
# The reference answers: the properties the chapter's text relies on
# ==================================================================================================================


@pytest.fixture(scope="module")
def pair(model):
    return tasks.patching_pair(16, 10, model.cfg.d_vocab, seed=11)


def test_decomposition_sums_to_logit_diff(model, pair):
    with torch.no_grad():
        logits, cache = model.run_with_cache(pair.clean)
        terms, labels = reference.decompose_logit_diff(model, cache, pair.answer, pair.wrong)
    assert len(labels) == len(terms) == 2 + model.cfg.n_layers * (model.cfg.n_heads + 1) + 1
    assert float(terms.sum()) == pytest.approx(float(circuits.logit_diff(logits, pair.answer, pair.wrong)), abs=1e-3)
    # Induction heads write the answer: layer 1 carries most of the logit difference.
    layer1 = sum(float(t) for t, label in zip(terms, labels) if label.startswith("L1H"))
    assert layer1 > 0.5 * float(terms.sum())


def test_the_random_bias_model_travels_by_its_weights():
    model = check._with_random_biases(torch.Generator().manual_seed(0))
    assert model.zoo_name is None and getattr(model, "course_config", None)
    assert float(model.b_U.abs().max()) > 0.1  # the trained unembedding bias is zero; this one is not


def metric_for(pair):
    return circuits.LogitDiff(pair.answer, pair.wrong)


def test_patching_the_whole_clean_run_restores_it(model, pair):
    metric = metric_for(pair)
    with torch.no_grad():
        resid = reference.patch_residual_by_layer_pos(model, pair.clean, pair.corrupted, metric)
        clean_value = float(metric(model(pair.clean)))
        corrupted_value = float(metric(model(pair.corrupted)))
    # At layer 0 only the changed position carries the difference: patching it restores the clean run exactly.
    assert float(resid[0, pair.source_pos]) == pytest.approx(clean_value, abs=1e-3)
    others = torch.cat([resid[0, : pair.source_pos], resid[0, pair.source_pos + 1 :]])
    assert torch.allclose(others, torch.full_like(others, corrupted_value), atol=1e-3)


def _nudge(z, hook, step):
    return z + step


def test_attribution_is_exact_for_the_last_layer_and_total_for_the_first(model, pair):
    """No LayerNorm and no MLP: the logits are linear in the last layer's z, so the first-order estimate is exact
    there; for a layer-0 head it is the derivative along (clean - corrupted) through every later layer (a finite
    difference checks it), not only the head's direct path to the logits."""
    metric = metric_for(pair)
    with torch.no_grad():
        exact = reference.patch_heads(model, pair.clean, pair.corrupted, metric)
    approx = reference.attribution_patch_heads(model, pair.clean, pair.corrupted, metric)
    assert torch.allclose(approx[-1], exact[-1], atol=1e-3)
    name = "blocks.0.attn.hook_z"
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(pair.clean)
        _, corrupted_cache = model.run_with_cache(pair.corrupted)
        base = float(metric(model(pair.corrupted)))
        eps = 1e-2
        for head in range(model.cfg.n_heads):
            delta = torch.zeros_like(clean_cache[name])
            delta[:, :, head] = clean_cache[name][:, :, head] - corrupted_cache[name][:, :, head]
            nudge = functools.partial(_nudge, step=eps * delta)
            nudged = float(metric(model.run_with_hooks(pair.corrupted, fwd_hooks=[(name, nudge)])))
            assert (nudged - base) / eps == pytest.approx(float(approx[0, head]) - base, rel=0.05, abs=2e-3)
    assert float((approx[0] - base).abs().max()) > 0.1  # layer 0's effect runs through layer 1


def test_path_patching_finds_the_previous_token_head(model):
    key_pair = tasks.patching_pair(32, 10, model.cfg.d_vocab, corruption="key", seed=5)
    metric = metric_for(key_pair)
    with torch.no_grad():
        effects = torch.tensor(
            [
                [
                    float(reference.path_patch_key(model, key_pair.clean, key_pair.corrupted, (0, s), (1, r), metric))
                    for r in range(4)
                ]
                for s in range(4)
            ]
        )
        corrupted = float(metric(model(key_pair.corrupted)))
        tokens = tasks.repeated_tokens(32, 20, model.cfg.d_vocab, seed=0)
        previous = reference.previous_token_scores(model.run_with_cache(tokens)[1]["blocks.0.attn.hook_pattern"])
    gains = effects - corrupted
    assert int(gains.sum(1).argmax()) == int(previous.argmax())
    assert (gains[int(previous.argmax())] > 0).all()


def test_ablation_methods(model):
    tokens = tasks.repeated_tokens(8, 20, model.cfg.d_vocab, seed=1)
    reference_tokens = circuits.induction_reference_tokens(model.cfg.d_vocab, batch=32)
    with torch.no_grad():
        base = circuits.per_token_loss(model(tokens), tokens)[:, 21:].mean()
    everything = [(layer, head) for layer in range(2) for head in range(4)]
    for method in ("zero", "mean", "resample"):
        ablated = circuits.run_with_heads_ablated(
            model, tokens, everything, reference.ablate_head, method, reference_tokens
        )
        assert circuits.per_token_loss(ablated, tokens)[:, 21:].mean() > base + 2
    with pytest.raises(ValueError, match="reference"):
        circuits.run_with_heads_ablated(model, tokens, everything, reference.ablate_head, "mean")


def test_composition_score_properties():
    A, B = torch.randn(5, 6), torch.randn(6, 7)
    score = reference.composition_score(A, B)
    assert 0 <= float(score) <= 1
    assert float(reference.composition_score(2 * A, 3 * B)) == pytest.approx(float(score), rel=1e-5)
    assert float(reference.composition_score(torch.eye(6), torch.eye(6))) == pytest.approx(6**-0.5, rel=1e-5)


def test_copying_and_prefix_matching_are_in_the_weights(model):
    """Section 7's claims: every layer-1 head copies (its own logit wins nearly every row of the full OV circuit),
    no layer-0 head does; through the strongest previous-token head every induction head matches prefixes, and
    with the key's own token instead of its previous one it never does."""
    with torch.no_grad():
        ov = torch.stack(
            [
                reference.full_ov_circuit(model.W_E, model.W_V[layer], model.W_O[layer], model.W_U)
                for layer in range(model.cfg.n_layers)
            ]
        )
        copying = reference.diagonal_win_rate(ov)
        assert (copying[1] > 0.9).all() and (copying[0] < 0.2).all()
        senders = model.W_V[0] @ model.W_O[0]
        matching = torch.stack(
            [
                reference.diagonal_win_rate(
                    reference.prefix_matching_circuit(model.W_E, model.W_Q[1], model.W_K[1], senders[s])
                )
                for s in range(model.cfg.n_heads)
            ]
        )
        own_token = reference.diagonal_win_rate(
            reference.prefix_matching_circuit(model.W_E, model.W_Q[1], model.W_K[1], torch.eye(model.cfg.d_model))
        )
    assert (matching[3] > 0.9).all() and (matching[3] >= matching.amax(0)).all()
    assert (own_token < 0.05).all()
    # Anchors of the scores: an identity circuit scores 1, a shifted one 0.
    assert float(reference.diagonal_win_rate(torch.eye(7))) == 1.0
    assert float(reference.diagonal_win_rate(torch.eye(7).roll(1, dims=-1))) == 0.0


@pytest.mark.parametrize("half_len", [5, 9])
def test_score_diagonals_cover_the_documented_queries(half_len):
    """The docstrings' counts: previous-token averages over 2 half_len queries, duplicate-token over half_len + 1
    (one first-copy query, looking at BOS), induction over half_len + 2 (two first-copy queries)."""
    seq = 1 + 2 * half_len
    for score, offset, n_queries, first_copy_queries in [
        (reference.previous_token_scores, 1, 2 * half_len, half_len),
        (lambda p: reference.duplicate_token_scores(p, half_len), half_len, half_len + 1, 1),
        (lambda p: reference.induction_scores(p, half_len), half_len - 1, half_len + 2, 2),
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


# ==================================================================================================================
# The notebook's form
# ==================================================================================================================


def test_the_notebook_fits_in_100_columns():
    nb = json.loads(NOTEBOOK.read_text())
    long = [
        (cell["metadata"].get("nbgrader", {}).get("grade_id"), line)
        for cell in nb["cells"]
        for line in "".join(cell["source"]).split("\n")
        if len(line) > 100
    ]
    assert not long, long[:5]


def test_every_check_has_a_test_cell_and_a_hidden_part():
    nb = json.loads(NOTEBOOK.read_text())
    tests = [
        "".join(c["source"])
        for c in nb["cells"]
        if c["metadata"].get("nbgrader", {}).get("grade")
        and c["cell_type"] == "code"
        and not c["metadata"]["nbgrader"].get("solution")
    ]
    named = {re.match(r"check\.(\w+)\(", source).group(1) for source in tests}
    checks = {name for name, value in vars(check).items() if getattr(value, "exercise", None) == name}
    assert named == checks
    salts = [re.search(r'hidden="([0-9a-f]{8})"', source).group(1) for source in tests]
    assert len(set(salts)) == len(salts)
