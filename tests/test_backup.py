"""Chapter 03 (backup behaviour): its tools, its reference answers, its checks and its zoo models.

Every check must pass the reference (as a student's own function), refuse the library's own function and unfinished
stubs, fail hard-coded answers, and give typical wrong answers a message that says what is wrong.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from conftest import exercise_contract  # noqa: E402
from conftest import fails as fails_with  # noqa: E402 - the suite's shared helpers
from conftest import own as student  # noqa: E402

from mechinterp_course import backup, models, recipes, tasks
from mechinterp_course.backup import checks, language, reference

RIGHT_FINDINGS = {
    "A": "ioi",
    "B": "hydra",
    "C": "self-repair",
    "D": "copy-suppression",
    "E": "ioi",
    "F": "self-repair",
}


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def fails(check, *answers, match: str, hidden: str | None = None) -> str:
    return fails_with(check, *answers, match=re.escape(match), hidden=hidden)


CHECKED = {
    checks.direct_effects: reference.direct_effects,
    checks.ablation_effects: reference.ablation_effects,
    checks.direct_effect_shift: reference.direct_effect_shift,
    checks.incompleteness: reference.incompleteness,
    checks.repair_parts: reference.repair_parts,
    checks.summarise_repair: reference.summarise_repair,
}
(
    test_the_reference_passes,
    test_the_library_reference_and_unfinished_stubs_are_refused,
    test_a_hard_coded_answer_fails,
) = exercise_contract(CHECKED)


def test_findings_quiz(capsys):
    checks.backup_findings(RIGHT_FINDINGS)
    assert "\u2705" in capsys.readouterr().out
    fails(checks.backup_findings, dict(RIGHT_FINDINGS, A="hydra"), match="1 of 6 findings is given to the wrong")
    fails(checks.backup_findings, dict(RIGHT_FINDINGS, A="wang"), match="A should name one of the papers")
    fails(checks.backup_findings, {"A": "ioi"}, match="a dict with the letters")


def test_direct_effects_feedback():
    def wrong_sign(model, z_end, io, s):  # S minus IO
        return -reference.direct_effects(model, z_end, io, s)

    fails(checks.direct_effects, student(wrong_sign), match="should add up to the logit difference")

    def summed(model, z_end, io, s):  # one number per head: the batch dimension summed away
        return reference.direct_effects(model, z_end, io, s).mean(0)

    fails(checks.direct_effects, student(summed), match="expected [batch, n_layers, n_heads]")


def test_ablation_effects_feedback():
    def no_repair(model, tokens, io, s, layer, head, kind, replacement=None):  # total taken as direct
        effects = reference.ablation_effects(model, tokens, io, s, layer, head, kind, replacement)
        return torch.stack([effects[0], effects[0], torch.zeros(())])

    fails(checks.ablation_effects, student(no_repair), match="the total effect")

    def zero_only(model, tokens, io, s, layer, head, kind, replacement=None):  # ignores the kind
        return reference.ablation_effects(model, tokens, io, s, layer, head, "zero", replacement)

    message = fails(checks.ablation_effects, student(zero_only), match="mean ablation")
    assert re.search(r"L\dH\d", message)


def test_shift_feedback_names_heads():
    def clean_minus_ablated(model, tokens, io, s, layer, head, kind, replacement=None):
        return -reference.direct_effect_shift(model, tokens, io, s, layer, head, kind, replacement)

    fails(checks.direct_effect_shift, student(clean_minus_ablated), match="should be minus the direct effect")


def test_incompleteness_feedback():
    def swapped(model, tokens, io, s, circuit, removed, kind="mean"):
        return reference.incompleteness(model, tokens, io, s, circuit, removed, kind).flip(0)

    fails(checks.incompleteness, student(swapped), match="F(M \\ K) is the clean model's")


def test_a_last_layer_head_has_no_self_repair_and_effects_add_up():
    config = dataclasses.replace(backup.PLAIN_CONFIG, n_layers=1, n_heads=1, d_model=8)
    model = models.make_model(config.model_config(), seed=3)
    batch = backup.prompts(config, 32)
    for kind in backup.ABLATION_KINDS:
        replacement = backup.prompts(config, 32, seed=4).tokens
        effects = reference.ablation_effects(model, batch.tokens, batch.io, batch.s, 0, 0, kind, replacement)
        assert abs(float(effects[2])) < 1e-5
    logits, z_end = backup.run_ablated(model, batch.tokens)
    total = reference.direct_effects(model, z_end, batch.io, batch.s).sum((1, 2))
    total = total + backup.other_terms(model, batch.io, batch.s, batch.tokens)
    assert torch.allclose(total, backup.logit_diff(logits, batch.io, batch.s), atol=1e-4)


def test_symbolic_ioi_prompts():
    batch = tasks.symbolic_ioi(200, 8, 4, seed=1)
    tokens = batch.tokens
    assert tokens.shape == (200, tasks.IOI_LENGTH)
    assert (tokens[:, tasks.IOI_S2] == batch.s).all() and (batch.io != batch.s).all()
    names = tokens[:, [tasks.IOI_X, tasks.IOI_Y]]
    assert ((names == batch.io[:, None]).sum(1) == 1).all() and ((names == batch.s[:, None]).sum(1) == 1).all()
    assert (tokens[:, tasks.IOI_END] == tasks.ioi_vocab(8, 4) - 1).all()
    assert ((tokens[:, 3:5] > 8) & (tokens[:, 3:5] < 13)).all()
    assert (names[:, 0] == batch.io).any() and (names[:, 1] == batch.io).any()  # both orders occur


def test_dropout_masks_are_seeded_and_drop_at_the_rate():
    config = backup.DROPOUT_CONFIG
    a, b = backup.dropout_masks(config, 512, 7), backup.dropout_masks(config, 512, 7)
    assert torch.equal(a, b) and not torch.equal(a, backup.dropout_masks(config, 512, 8))
    assert abs(float(1 - a.mean()) - config.head_dropout) < 0.03


def test_zoo_models_show_the_chapters_story():
    """Trained plainly the movers' self-repair is negative; with head dropout it is positive; both solve the task."""
    plain, dropout = models.card("backup-plain"), models.card("backup-dropout")
    assert plain["metrics"]["accuracy"] >= backup.SOLVED_ACCURACY <= dropout["metrics"]["accuracy"]
    assert plain["metrics"]["backup_score"] < backup.NO_BACKUP_BELOW
    assert dropout["metrics"]["backup_score"] >= backup.BACKUP_AT_LEAST
    assert plain["size_bytes"] < 1_000_000 and dropout["size_bytes"] < 1_000_000
    assert {"backup-plain", "backup-dropout"} <= set(recipes.RECIPES)


def test_claim_validation():
    base = backup.CLAIM_BASE
    good = {"config": dataclasses.replace(base, label_noise=0.0), "change": "label_noise", "prediction": "no backup"}
    config, change, prediction = backup.validate_claim(good)
    assert config.label_noise == 0.0 and change == "label_noise"
    backup.validate_claim(dict(good, config=dataclasses.asdict(good["config"])))  # as it arrives when graded
    backup.validate_claim(dict(good, config=dataclasses.replace(good["config"], seed=5, data_seed=9)))
    cases = [
        (dict(good, prediction="maybe"), "prediction"),
        (dict(good, change="lr"), "change"),
        (dict(good, config=base), "it differs in: nothing"),
        (dict(good, config=dataclasses.replace(base, label_noise=0.0, n_heads=2)), "it differs in: n_heads"),
        (dict(good, config=dataclasses.replace(base, label_noise=0.9)), "outside the range"),
        (dict(good, change="d_model", config=dataclasses.replace(base, d_model=30)), "multiple of n_heads"),
        ({"config": base}, "a dict with keys"),
    ]
    for claim, match in cases:
        with pytest.raises(ValueError, match=re.escape(match)):
            backup.validate_claim(claim)
    fails(checks.my_claim, dict(good, change="lr"), match='claim["change"]')


@pytest.mark.slow
def test_claim_check_retrains_on_the_graders_seeds(capsys):
    """The solution's claim (no label noise: no backup) holds on the grader's seeds; the opposite fails with the
    outcomes, remembered rather than trained again."""
    claim = {
        "config": dataclasses.replace(backup.CLAIM_BASE, label_noise=0.0, seed=12345),
        "change": "label_noise",
        "prediction": "no backup",
    }
    checks.my_claim(claim)
    out = capsys.readouterr().out
    assert "the first of the seeds" in out and "\u2705" in out and "12345" not in out
    fails(checks.my_claim, dict(claim, prediction="backup"), match="you predicted 'backup'")


def test_no_tool_is_a_twin_of_an_exercise():
    exercises = set(reference.__all__)
    assert not exercises & set(dir(backup)), exercises & set(dir(backup))


# --------------------------------------------------------------------------------------------------------------
# Section 4: self-repair in the language model
# --------------------------------------------------------------------------------------------------------------


def test_repair_parts_feedback():
    def no_rescaling(clean, ablated, head):  # forgets the LayerNorm: the parts no longer add up
        parts = reference.repair_parts(clean, ablated, head)
        return dict(parts, layernorm=torch.zeros_like(parts["layernorm"]))

    fails(checks.repair_parts, student(no_rescaling), match="'layernorm'")

    def ablated_scale(clean, ablated, head):  # the direct effect read at the ablated run's scale
        parts = reference.repair_parts(clean, ablated, head)
        direct = (clean.components[head] - ablated.components[head]) / ablated.scale
        return dict(parts, direct=direct)

    fails(checks.repair_parts, student(ablated_scale), match="direct - total should equal layernorm + heads + mlps")

    def counts_itself(clean, ablated, head):  # the ablated head's own change counted as repair by other heads
        parts = reference.repair_parts(clean, ablated, head)
        own = (ablated.components[head] - clean.components[head]) / clean.scale
        return dict(parts, heads=parts["heads"] + own)

    fails(checks.repair_parts, student(counts_itself), match="'heads'")
    fails(checks.repair_parts, student(lambda clean, ablated, head: [0.0]), match="return a dict")


def test_summarise_repair_feedback():
    def mean_of_ratios(parts, fraction):  # a fraction per token, then averaged: not a ratio of means
        out = reference.summarise_repair(parts, fraction)
        direct = parts["direct"].flatten()
        top = direct.topk(max(1, int(fraction * direct.numel()))).indices
        return dict(out, layernorm_fraction=float((parts["layernorm"].flatten()[top] / direct[top]).mean()))

    fails(checks.summarise_repair, student(mean_of_ratios), match="'layernorm_fraction'")

    def every_token(parts, fraction):  # forgets to select the top tokens
        return reference.summarise_repair(parts, 1.0)

    fails(checks.summarise_repair, student(every_token), match="top 20%")

    def never_over(parts, fraction):
        return dict(reference.summarise_repair(parts, fraction), overcorrected=0.0)

    fails(checks.summarise_repair, student(never_over), match="'overcorrected'")


def test_logit_parts_add_up_to_the_language_models_logits():
    """The accounting identity of section 4 on the shipped model: components / scale + constant = the logit, and
    an ablation's parts split its self-repair exactly."""
    model, _, _ = language.language_model()
    tokens = language.held_out_tokens(4)
    clean, ablated = language.resample_ablated_parts(model, tokens, layer=0, head=1)
    for run in (clean, ablated):
        rebuilt = sum(run.components.values()) / run.scale + run.constant
        assert torch.allclose(rebuilt, run.logit, atol=1e-4)
    assert set(clean.components) == set(language.component_names(2, 4))
    parts = reference.repair_parts(clean, ablated, "L0H1")
    gap = parts["direct"] - parts["total"] - parts["layernorm"] - parts["heads"] - parts["mlps"]
    assert gap.abs().max() < 1e-4
    assert not torch.equal(clean.components["L0H1"], ablated.components["L0H1"])
    assert torch.equal(clean.components["embed"], ablated.components["embed"])  # upstream: untouched
    permutation = language.resample_permutation(16, seed=3)
    assert sorted(permutation.tolist()) == list(range(16)) and (permutation != torch.arange(16)).all()
