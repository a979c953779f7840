"""Chapter 05 (attention superposition): its tasks, toy models, reference answers and checks.

Every check must pass the reference (as a student's own function), refuse the library's own function and unfinished
stubs, fail hard-coded answers (where an answer is not the weights themselves), and give typical wrong answers a
message that says what is wrong. The claims the notebook's text makes about its trainings are asserted here too.
"""

from __future__ import annotations

import json
import re

import einops
import pytest
import torch
from conftest import exercise_contract  # noqa: E402
from conftest import fails as fails_with  # noqa: E402 - the suite's shared helpers
from conftest import own as student  # noqa: E402

from mechinterp_course import attention_superposition as attn
from mechinterp_course import models
from mechinterp_course import recipes as models_recipes
from mechinterp_course.attention_superposition import checks, reference
from mechinterp_course.checking import CheckFailed, Trial, seed_for
from mechinterp_course.understanding import model_from_weights


def fails(check, *answers, match: str, hidden: str | None = None) -> str:
    return fails_with(check, *answers, match=re.escape(match), hidden=hidden)


#: Every check but the hand-written heads', whose answer is a constant (the weights themselves), so that a
#: hard-coded answer is the answer there.
CHECKED = {
    checks.head_contributions: reference.head_contributions,
    checks.uses_superposition: reference.uses_superposition,
    checks.source_attention: reference.source_attention,
    checks.head_share: reference.head_share,
    checks.attention_features: reference.attention_features,
}
(
    test_the_reference_passes,
    test_the_library_reference_and_unfinished_stubs_are_refused,
    test_a_hard_coded_answer_fails,
) = exercise_contract(CHECKED)
#: The salts the notebook's test cells use (visible, hidden): the census must hold both verdicts under each.
NOTEBOOK_SALTS = ("", "31d7b6e8")


@pytest.mark.parametrize("hidden", [None, "5eed0001"])
def test_the_handmade_heads_reference_passes_and_the_library_and_a_stub_are_refused(hidden, capsys):
    checks.handmade_heads(student(reference.handmade_heads), hidden=hidden)
    assert "\u2705" in capsys.readouterr().out
    fails(checks.handmade_heads, reference.handmade_heads, match="reference implementation")

    def stub():
        raise NotImplementedError

    fails(checks.handmade_heads, stub, match="not implemented yet")


def test_no_tool_is_a_twin_of_an_exercise():
    exercises = set(reference.__all__)
    assert not exercises & set(dir(attn)), exercises & set(dir(attn))


# --------------------------------------------------------------------------------------------------------------
# Tasks and models
# --------------------------------------------------------------------------------------------------------------


def test_skip_trigram_data_is_mathwins_layout():
    task = attn.skip_trigrams(3)
    assert task.trigrams == [(0, 1, 4), (0, 2, 5), (0, 3, 6)] and task.bos == 7 and task.d_vocab == 8
    tokens, targets, has_source = task.batch(20_000, torch.Generator().manual_seed(0))
    assert tokens.shape == (20_000, attn.N_POS) and (tokens[:, 0] == task.bos).all()
    assert set(tokens[:, -1].unique().tolist()) == {1, 2, 3}
    context = tokens[:, 1:-1]
    assert torch.equal(has_source, (context == task.source).any(-1)) and ((context == task.source).sum(-1) <= 1).all()
    assert not (context == task.bos).any()
    assert torch.equal(targets[has_source], tokens[has_source, -1] + 3)
    assert has_source.float().mean() == pytest.approx(attn.SOURCE_PROBABILITY, abs=0.02)
    # without the source the next token is random: every non-BOS token, about equally often
    counts = torch.bincount(targets[~has_source], minlength=task.d_vocab)[: task.bos].float()
    assert counts.min() > 0.8 * counts.mean()


def test_source_pairs_are_greenspan_and_wynroes():
    task = attn.SourcePairs()
    assert (task.d_vocab, task.d_vocab_out, task.readout, task.signals) == (12, 10, 0, [1, 2, 3, 4])
    tokens, targets = task.batch(5000, torch.Generator().manual_seed(0))
    assert (tokens[:, -1] == 0).all() and not (tokens[:, :-1] == 0).any()
    signals = tokens[:, :-1][(tokens[:, :-1] >= 1) & (tokens[:, :-1] <= 4)].reshape(-1, 2)
    pairs = [tuple(sorted(row)) for row in signals.tolist()]
    assert [task.pairs[t] for t in targets.tolist()] == pairs


def test_a_bridge_computes_what_the_batched_model_computes():
    for task in (attn.skip_trigrams(4), attn.SourcePairs()):
        coherent = isinstance(task, attn.SourcePairs)
        batched = attn.HeadsModel(3, 3, 2, task.d_vocab, task.n_pos, task.d_vocab_out if coherent else None, seed=4)
        tokens = task.batch(64, torch.Generator().manual_seed(1))[0]
        with torch.no_grad():
            expected = batched(tokens)
        for i in range(3):
            torch.testing.assert_close(attn.read_off(batched.bridge(i), tokens), expected[i])


def test_a_relabelled_model_does_what_the_model_did_on_relabelled_inputs():
    model, _ = models.load("trigrams-3x2")
    task = attn.zoo_task("trigrams-3x2")
    renamed, perm = task.permuted(torch.Generator().manual_seed(3))
    assert renamed.bos == task.bos and sorted(perm.tolist()) == list(range(task.d_vocab))
    tokens = task.batch(256, torch.Generator().manual_seed(2))[0]
    with torch.no_grad():
        before = attn.read_off(model, tokens)
        after = attn.read_off(attn.relabel(model, perm), perm[tokens])
    torch.testing.assert_close(after[:, perm], before)
    assert attn.trigram_accuracy(attn.relabel(model, perm), renamed).min() == 1.0


def test_the_notebooks_training_claims_hold():
    """Section 2: every 2-head model solves the 3 trigrams; no 1-head model does (at most 2 of them); section 4:
    every one of the 2-head models is in superposition."""
    task = attn.skip_trigrams(3)
    two, log = attn.train_heads(task, 2, instances=8, progress=False)
    one, _ = attn.train_heads(task, 1, instances=4, progress=False)
    assert log.log[-1]["accuracy"] == 1.0
    tokens = task.batch(2048, torch.Generator().manual_seed(2), source_probability=1.0)[0]
    assert all(reference.uses_superposition(two.bridge(i), task, tokens) for i in range(8))  # section 4's census
    for i in range(4):
        solved = int((attn.trigram_accuracy(one.bridge(i), task) >= attn.SOLVED_FRACTION).sum())
        assert solved <= 2


@pytest.mark.parametrize("salt", NOTEBOOK_SALTS)
def test_the_census_holds_both_verdicts_under_the_notebooks_salts(salt):
    """The superposition check says it tries models of both kinds: so it does, under the salts the notebook uses."""
    seed = seed_for("uses_superposition", 0, salt)  # the check's first trial under this salt
    trial = Trial(0, seed, torch.Generator().manual_seed(seed))
    verdicts = []
    for _, model, task in checks.superposition_cases(trial, hidden=bool(salt)):
        tokens = task.batch(1024, torch.Generator().manual_seed(0), source_probability=1.0)[0]
        verdicts.append(reference.uses_superposition(model, task, tokens))
    assert verdicts[:2] == [False, True]  # split by construction, and the hand-written heads
    assert 0 < sum(verdicts[2:]) < len(verdicts[2:]), verdicts


def test_the_split_model_splits_and_the_handmade_heads_superpose():
    split, task = checks.split_model()
    tokens = task.batch(512, torch.Generator().manual_seed(0), source_probability=1.0)[0]
    assert attn.trigram_accuracy(split, task).min() == 1.0
    assert not reference.uses_superposition(split, task, tokens)


# --------------------------------------------------------------------------------------------------------------
# Feedback on typical mistakes
# --------------------------------------------------------------------------------------------------------------


def test_quiz_feedback():
    right = {"A": "OV-coherent", "B": "OV-incoherent", "C": "ov coherent", "D": "OV-Incoherent", "E": "OV-incoherent"}
    fails(checks.kinds, right, match="no answer for F")
    fails(checks.kinds, dict(right, F="coherent"), match="statement F: 'coherent' is not one of")
    message = fails(checks.kinds, dict(right, F="OV-incoherent", A="OV-incoherent"), match="2 of 6 statements")
    assert "A" not in message.split("statements")[1][:20]  # says how many, not which


def test_head_contributions_feedback():
    def no_unembed(model, tokens):
        _, cache = model.run_with_cache(tokens)
        return einops.einsum(cache["blocks.0.attn.hook_z"][:, -1], model.W_O[0], "b h e, h e d -> h b d")

    fails(checks.head_contributions, no_unembed, match="expected [n_heads, batch, d_vocab_out]")

    def every_position(model, tokens):
        _, cache = model.run_with_cache(tokens)
        z = cache["blocks.0.attn.hook_z"].mean(1)  # averaged over positions instead of the last
        return einops.einsum(z, model.W_O[0], model.W_U, "b h e, h e d, d v -> h b v")

    fails(checks.head_contributions, every_position, match="should add up to the logits")


def test_handmade_heads_feedback():
    good = reference.handmade_heads()

    def bigram():  # heads that read BOS as if it were A: they fire at every B, with an A or without
        heads = {k: v.clone() for k, v in good.items()}
        bos = 7  # BOS of the 3-trigram task
        heads["W_K"][0, :, bos], heads["W_V"][0, :, bos] = heads["W_K"][0, :, 0], heads["W_V"][0, :, 0]
        return heads

    bigram_model = model_from_weights(attn.complete_weights(bigram(), checks.HAND_TASK))
    assert attn.trigram_accuracy(bigram_model, checks.HAND_TASK).min() == 1.0
    fails(checks.handmade_heads, student(bigram), match="without an A, the model still predicts C_B")
    fails(checks.handmade_heads, student(lambda: dict(good, W_E=torch.eye(8))), match="W_E are fixed by the task")
    fails(checks.handmade_heads, student(lambda: dict(good, W_O=good["W_O"][0])), match="W_O has shape (2, 1, 8)")
    swapped = dict(good, W_O=good["W_O"].flip(1))
    message = fails(checks.handmade_heads, student(lambda: swapped), match="with an A in the context, the model misses")
    assert re.search(r"B = \d with the A at position \d", message)

    def trained():
        weights = {k: v.clone().requires_grad_() for k, v in good.items()}
        torch.optim.SGD(list(weights.values()), lr=0.1).step()
        return weights

    fails(checks.handmade_heads, student(trained), match="is not available here: the weights must be written by hand")


def test_uses_superposition_feedback():
    fails(checks.uses_superposition, student(lambda model, task, tokens: True), match="you answer True")
    fails(checks.uses_superposition, student(lambda model, task, tokens: False), match="you answer False")

    def by_size(model, task, tokens):  # a guess from the shapes, not a measurement
        return len(task.destinations) > model.cfg.n_heads

    with pytest.raises(CheckFailed):
        checks.uses_superposition(student(by_size))
    fails(checks.uses_superposition, student(lambda model, task, tokens: "yes"), match="should return True or False")


def test_source_attention_feedback():
    def nan_when_absent(model, tokens, sources):
        _, cache = model.run_with_cache(tokens)
        last = cache["blocks.0.attn.hook_pattern"][:, :, -1]
        out = []
        for s in sources:
            at = (tokens == s).float()
            rows = at.sum(-1) > 0
            out.append(einops.einsum(last[rows], at[rows], "b h p, b p -> h") / rows.sum())
        return torch.stack(out, -1)

    fails(checks.source_attention, nan_when_absent, match="NaN")

    def over_all_rows(model, tokens, sources):  # averaged over every row, not the rows that hold the source
        _, cache = model.run_with_cache(tokens)
        last = cache["blocks.0.attn.hook_pattern"][:, :, -1]
        return torch.stack(
            [einops.einsum(last, (tokens == s).float(), "b h p, b p -> h") / len(tokens) for s in sources], -1
        )

    fails(checks.source_attention, over_all_rows, match="for heads that attend uniformly")


def test_head_share_feedback():
    def unsquared(W_dec, n_heads):
        per_head = einops.rearrange(W_dec, "l (h e) -> l h e", h=n_heads).abs().sum(-1)
        return per_head / per_head.sum(-1, keepdim=True).clamp_min(1e-12)

    fails(checks.head_share, unsquared, match="wrong")

    def nan_rows(W_dec, n_heads):
        per_head = einops.rearrange(W_dec, "l (h e) -> l h e", h=n_heads).pow(2).sum(-1)
        return per_head / per_head.sum(-1, keepdim=True)

    fails(checks.head_share, nan_rows, match="a zero decoder row gives NaN")


def test_attention_features_feedback():
    def every_pair(model, contexts):  # every (token, destination, prediction): invents features
        predicted = attn.read_off(model, contexts).argmax(-1)
        return {
            (s, d, o)
            for row, d, o in zip(contexts.tolist(), contexts[:, -1].tolist(), predicted.tolist())
            for s in row[1:-1]
        }

    fails(checks.attention_features, student(every_pair), match="implements no skip-trigram, but you find")

    def from_the_task(model, contexts):  # the untouched task's trigrams: right only before renaming
        return set(attn.skip_trigrams((model.cfg.d_vocab - 2) // 2).trigrams) if model.W_O.abs().sum() > 0 else set()

    message = fails(checks.attention_features, student(from_the_task), match="its tokens renamed at random, you miss")
    assert "find" in message


def test_a_set_of_features_travels_from_a_graded_kernel():
    """attention_features returns a set: the kernel-to-grader encoding carries sets of hashable values (JSON, nothing
    that runs code) and refuses a set whose members cannot be hashed."""
    from mechinterp_course.instructor import wire

    triples = {(0, 1, 4), (0, 2, 5)}
    assert wire.decode(json.loads(wire.to_json(wire.encode(triples)))) == triples
    assert wire.decode(wire.encode(frozenset({1, 2}))) == {1, 2}
    forged = {"value": {"t": "set", "v": [{"t": "list", "v": [1]}]}, "tensors": ""}
    with pytest.raises(wire.WireError, match="unhashable"):
        wire.decode(forged)


def test_zoo_recipes_are_deterministic_and_write_files_every_user_can_read(tmp_path):
    """A graded kernel runs as another user and loads the zoo: safetensors writes owner-only files, so the zoo's
    writer opens them up."""
    built = [
        models_recipes.build("trigrams-3x2", seed=1, progress=False, zoo_dir=tmp_path / str(i), steps=30)
        for i in range(2)
    ]
    first, second = (dict(model.state_dict()) for model, _, _ in built)
    assert all(torch.equal(first[k], second[k]) for k in first)
    for path in (tmp_path / "0").iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path
    for path in models.ZOO_DIR.iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_the_coherent_models_read_most_signals_with_both_heads():
    """Section 5's text: every seed solves the source pairs, and most signal tokens are read by both heads."""
    pairs = attn.SourcePairs()
    coherent, log = attn.train_heads(pairs, 2, instances=8, progress=False)
    assert log.log[-1]["accuracy"] == 1.0
    tokens = pairs.batch(4096, torch.Generator().manual_seed(3))[0]
    used = torch.stack(
        [
            (reference.source_attention(coherent.bridge(i), tokens, pairs.signals) >= attn.USED_ATTENTION).sum(0)
            for i in range(8)
        ]
    )  # [seed, signal]
    assert (used == 2).float().mean() > 0.5, used
