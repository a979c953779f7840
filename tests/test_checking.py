"""The shared checking API (``mechinterp_course.checking``), tested through chapter 01's checks.

What every chapter relies on: the reference itself and wrappers around it are refused (provenance), a failure names
the earlier exercise it comes from (dependency notes), demo cells fall back to the reference until an exercise has
passed (and open exercises to their stand-in), hidden tests draw other inputs than the visible ones, and the record
keeps which exercises passed. Chapter 01's own checks (the telling messages) are tested in tests/test_circuits.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import fails, own  # noqa: E402 - the suite's shared helpers

from mechinterp_course import checking, circuits
from mechinterp_course.checking import CheckFailed, ExerciseRecord, exercise, using_record
from mechinterp_course.checking.core import seed_for
from mechinterp_course.circuits import checks as check
from mechinterp_course.circuits import reference
from mechinterp_course.circuits.reference import previous_token_scores as imported_reference


def honest_previous_token_scores(pattern):
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


# ==================================================================================================================
# Provenance: the reference and its wrappers are refused
# ==================================================================================================================


def test_the_reference_itself_is_refused():
    fails(check.previous_token_scores, reference.previous_token_scores, match="reference implementation")
    # ... and a library function dressed up as the student's (a partial of it).
    fails(
        check.previous_token_scores,
        functools.partial(reference.induction_scores, half_len=2),
        match="reference implementation",
    )


def _through_a_helper(pattern):
    return reference.previous_token_scores(pattern)


def _import_inside(pattern):
    from mechinterp_course.circuits.reference import previous_token_scores

    return previous_token_scores(pattern)


@pytest.mark.parametrize(
    "wrapper",
    [
        lambda p: reference.previous_token_scores(p),  # the one-line wrapper
        lambda p: imported_reference(p),  # the reference imported under another name
        _import_inside,  # imported inside the function
        lambda p: _through_a_helper(p),  # through a helper of the student's
        lambda p: getattr(reference, "previous_token_scores")(p),  # noqa: B009 - by its name as a string
        lambda p, score=reference.previous_token_scores: score(p),  # as a default argument
    ],
    ids=["attribute", "alias", "import", "helper", "getattr", "default"],
)
def test_a_wrapper_around_the_reference_is_refused(wrapper):
    fails(check.previous_token_scores, wrapper, match="calls the course library's `previous_token_scores`")


def test_a_wrong_wrapper_hears_what_is_wrong_and_a_refusal_does_not_linger(record, capsys):
    # Checked like any answer first: a wrapper that is wrong is told what is wrong with its output.
    fails(check.previous_token_scores, lambda p: reference.previous_token_scores(p) * 2, match="must score 1")
    fails(check.previous_token_scores, lambda p: reference.previous_token_scores(p), match="calls the course")
    assert not record.has_passed("previous_token_scores")
    check.previous_token_scores(honest_previous_token_scores)
    assert "correct" in capsys.readouterr().out and record.has_passed("previous_token_scores")


def test_other_library_helpers_and_the_students_own_names_are_fine(capsys):
    # Another library helper is fine: only the exercise's own reference is refused.
    def uses_a_library_helper(pattern):
        return circuits.all_head_scores({"blocks.0.attn.hook_pattern": pattern}, 1, honest_previous_token_scores)[0]

    check.previous_token_scores(uses_a_library_helper)

    # A student's function may call the student's own function that has the reference's name.
    def head_direct_logit_attribution(z, W_O, direction):
        return torch.einsum("bhd,hdm,bm->bh", z, W_O, direction)

    def uses_own_helper(z, W_O, direction):
        return head_direct_logit_attribution(z, W_O, direction)

    check.head_direct_logit_attribution(uses_own_helper)
    assert capsys.readouterr().out.count("correct") == 2


def test_not_a_function_and_not_implemented():
    fails(check.previous_token_scores, torch.zeros(4), match="expected a function")

    def stub(pattern):
        raise NotImplementedError

    fails(check.previous_token_scores, stub, match="not implemented yet")
    fails(check.counterexample, stub, match="pass your functions")  # a two-function check given one


def test_a_crash_is_feedback_not_a_traceback():
    def crashes(pattern):
        return pattern[99]

    message = fails(check.previous_token_scores, crashes, match="your function raised IndexError")
    assert "Traceback" not in message


# ==================================================================================================================
# Dependency notes: a failure names the earlier exercise it comes from
# ==================================================================================================================

NOTE = "which has not passed its check yet: fix that one first"


def test_a_declared_dependency_is_named_until_it_passes(record):
    def without_b_U(model, cache, answer, wrong):
        terms, labels = reference_decompose(model, cache, answer, wrong)
        return terms[:-1], labels[:-1]

    reference_decompose = reference.decompose_logit_diff
    message = fails(check.decompose_logit_diff, without_b_U, match=NOTE)
    assert "builds on head_direct_logit_attribution (exercise 3.1)" in message
    check.head_direct_logit_attribution(own(reference.head_direct_logit_attribution))
    message = fails(check.decompose_logit_diff, without_b_U, match="your terms sum to")
    assert "builds on" not in message


def test_data_answers_name_the_functions_they_were_computed_with():
    message = fails(check.circuit_heads, [(0, 3)], [(1, 0)], match="have not passed their checks yet")
    assert "previous_token_scores (exercise 2.1–2.3), induction_scores (exercise 2.1–2.3)" in message
    message = fails(check.previous_token_until, 31, match="off by one")
    assert "builds on previous_token_attention (exercise 2.5)" in message


def test_an_exercise_function_reached_while_checking_is_named(record):
    """patch_heads declares no dependency, but the student's version calls their own normalised_metric (an exercise
    that has not passed): the failure names it, found as the function runs."""

    @exercise
    def normalised_metric(value, clean, corrupted):
        return (value - clean) / (corrupted - clean)  # swapped: not passed

    patch = reference.patch_heads
    namespace = {"normalised_metric": normalised_metric, "patch": patch}
    exec(
        "def patch_heads(model, clean, corrupted, metric):\n"
        "    normalised_metric(1.0, 2.0, 0.0)\n"
        "    return patch(model, clean, corrupted, metric) * 0.5\n",
        namespace,
    )
    message = fails(check.patch_heads, namespace["patch_heads"], match=NOTE)
    assert "builds on normalised_metric (exercise 5.1)" in message
    assert record.reached is None  # reset once the check is over


# ==================================================================================================================
# @exercise: demo cells fall back until the check passes; open exercises use their stand-in
# ==================================================================================================================


def test_a_demo_call_falls_back_to_the_reference_until_the_check_passes(record, capsys):
    @exercise
    def previous_token_scores(pattern):
        return torch.zeros(pattern.shape[1])  # not right yet

    pattern = torch.softmax(torch.randn(2, 3, 6, 6), dim=-1).tril()
    assert torch.equal(previous_token_scores(pattern), reference.previous_token_scores(pattern))
    note = capsys.readouterr().out
    assert "previous_token_scores (exercise 2.1–2.3) has not passed its check yet" in note
    assert "so this cell uses the course's reference" in note

    @exercise
    def previous_token_scores(pattern):  # noqa: F811 - the student fixes the cell and re-runs it
        return pattern.double().diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))

    check.previous_token_scores(previous_token_scores)
    capsys.readouterr()
    # Now the student's own function runs (its float64 says so), with no note.
    assert previous_token_scores(pattern).dtype == torch.float64
    assert capsys.readouterr().out == ""


def test_editing_a_function_takes_its_pass_back(record):
    first = own(reference.previous_token_scores)
    check.previous_token_scores(first)
    assert record.has_passed("previous_token_scores", first)
    edited = own(reference.previous_token_scores)  # the cell re-run: a new function object
    assert not record.has_passed("previous_token_scores", edited)
    assert record.has_passed("previous_token_scores")  # the record itself still says it passed once


def test_a_failed_check_takes_the_pass_back(record):
    check.previous_token_scores(honest_previous_token_scores)
    assert record.has_passed("previous_token_scores")
    fails(check.previous_token_scores, lambda p: honest_previous_token_scores(p) * 2, match="must score 1")
    assert not record.has_passed("previous_token_scores")


def test_data_answers_are_recorded_as_passed(record):
    check.previous_token_until(32)
    assert record.passed["previous_token_until"] is True


def test_an_open_exercise_uses_its_stand_in_until_it_is_written():
    @exercise(fallback=circuits.probe_batch)
    def make_batch(batch, seed):
        raise NotImplementedError

    assert torch.equal(make_batch(2, 0), circuits.probe_batch(2, 0))

    @exercise(fallback=circuits.probe_batch)
    def make_batch(batch, seed):  # noqa: F811 - written now, not checked yet: the attempt runs at once
        return torch.ones(batch, 3, dtype=torch.long)

    assert torch.equal(make_batch(2, 0), torch.ones(2, 3, dtype=torch.long))


def test_the_stand_in_note_says_so(capsys):
    @exercise(fallback=circuits.probe_predictions)
    def which_predictions(tokens):
        raise NotImplementedError

    which_predictions(circuits.probe_batch(1, 0))
    out = capsys.readouterr().out
    assert "which_predictions" in out and "is not written yet, so this cell uses a stand-in" in out


def test_a_graded_kernel_never_falls_back(monkeypatch):
    monkeypatch.setenv(checking.exercises.GRADING_ENV, "1")

    @exercise
    def previous_token_scores(pattern):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        previous_token_scores(torch.ones(1, 1, 3, 3))


# ==================================================================================================================
# Hidden tests: other inputs than the visible ones
# ==================================================================================================================


def test_hidden_seeds_differ_from_the_visible_ones():
    for name in ("previous_token_scores", "ablate_head", "counterexample"):
        visible = {seed_for(name, trial) for trial in range(4)}
        hidden = {seed_for(name, trial, "3f9a0c1b") for trial in range(4)}
        assert not visible & hidden
        assert hidden != {seed_for(name, trial, "0d5895ed") for trial in range(4)}  # per test cell, too
    assert seed_for("previous_token_scores", 0) == seed_for("previous_token_scores", 0)  # and stable


def test_an_answer_that_memorised_the_visible_inputs_fails_the_hidden_test(capsys):
    seen = {}
    ref = reference.previous_token_attention

    def recording(pattern):
        seen[pattern.numpy().tobytes()] = ref(pattern)
        return seen[pattern.numpy().tobytes()]

    check.previous_token_attention(recording)

    def memorised(pattern):  # right on every input it has seen, and nothing else
        return seen.get(pattern.numpy().tobytes(), torch.zeros(pattern.shape[1], pattern.shape[2]))

    check.previous_token_attention(memorised)
    assert capsys.readouterr().out.count("correct") == 2
    with pytest.raises(CheckFailed):
        check.previous_token_attention(memorised, hidden="7489cb46")


def test_hidden_tests_may_vary_what_the_visible_ones_keep_fixed():
    shapes = {}

    def spy(name):
        def score(pattern):
            shapes.setdefault(name, []).append(tuple(pattern.shape))
            return honest_previous_token_scores(pattern)

        return score

    check.previous_token_scores(spy("visible"))
    check.previous_token_scores(spy("hidden"), hidden="7d635d9a")
    # The same anchor first (it is a known answer, not an input to memorise), then other random shapes.
    assert shapes["visible"][0] == shapes["hidden"][0]
    assert shapes["visible"][1:] != shapes["hidden"][1:]


# ==================================================================================================================
# compare: what a failure says
# ==================================================================================================================


def _compare_message(*args, **kwargs):
    with pytest.raises(CheckFailed) as failure, using_record(ExerciseRecord()):

        @checking.check("a_test_check", functions=0)
        def probe(_):
            checking.compare(*args, **kwargs)
            return ""

        probe(None)
    return str(failure.value)


def test_compare_names_entries_by_what_they_are_and_never_prints_an_empty_index():
    message = _compare_message(
        torch.tensor([[0.0, 1.0], [2.0, 3.5]]),
        torch.tensor([[0.0, 1.0], [2.0, 3.0]]),
        "the scores",
        index=checking.layer_head_index,
    )
    assert "1 of 4 values of the scores are wrong" in message and "at L1H1" in message
    assert "3.0" not in message  # the expected value itself is not printed
    scalar = _compare_message(torch.tensor(2.5), torch.tensor(2.0), "the result")
    assert "is 2.5, which is off by 0.5" in scalar and "[]" not in scalar
    named = _compare_message(torch.zeros(2, 3), torch.ones(2, 3), "x", index=["L", "pos "])
    assert "at L0, pos 0" in named
    assert "dtype" in _compare_message(torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), "x")
    assert "NaN" in _compare_message(torch.tensor([float("nan"), 2.0]), torch.tensor([1.0, 2.0]), "x")
    assert "shape (3,), expected (2,)" in _compare_message(torch.zeros(3), torch.zeros(2), "x")


# ==================================================================================================================
# Quiz keys: digests, never answers
# ==================================================================================================================


def test_answer_keys_hold_digests_and_accept_equivalent_spellings():
    key = reference.ANSWER_KEYS["study_findings"]
    assert all(len(digest) == 16 for digest in key.values())
    assert "backup" not in str(reference.ANSWER_KEYS)
    assert checking.wrong_answers("study_findings", {"A": " Backup "}, {"A": key["A"]}) == []
    assert checking.canonical(3) == checking.canonical(3.0) and checking.canonical(" A ") == checking.canonical("a")
