"""Chapter 0, "History and landscape": the data transcribes the deck faithfully, the quiz keys come from it, and the
graders pass right answers and fail plausible wrong ones (constant answers, one swap, descent instead of ascent,
penalties with the wrong sign, an exclusive jitter range, unstable ties, ignored deck scores, ...)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mechinterp_course import graders, history


def own(fn):
    """Wrap a reference so it looks like a student's function (the graders refuse the library's own)."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def fails(check, *answer, match: str | None = None):
    with pytest.raises(graders.CheckFailed, match=match):
        check(*answer)


# --------------------------------------------------------------------------------------------------------------
# Data: the deck's text, transcribed
# --------------------------------------------------------------------------------------------------------------


def test_timeline_is_sorted_and_every_event_has_a_one_line_summary():
    starts = [event.start for event in history.TIMELINE]
    assert starts == sorted(starts)
    assert len({event.key for event in history.TIMELINE}) == len(history.TIMELINE)
    for event in history.TIMELINE:
        assert event.summary.strip() and "\n" not in event.summary and len(event.summary) <= 260, event.key
        assert event.summary_by in ("deck", "course"), event.key
        assert event.track in history.TRACKS, event.key
        assert set(event.chapters) <= set(history.CHAPTERS), event.key
        assert 1 <= event.start[1] <= 12 and 2009 <= event.start[0] <= 2024, event.key
        if event.end is not None:
            assert event.end > event.start, event.key
        if event.summary_by == "deck":  # the deck's own words must say where in the deck they are
            assert event.slides, event.key
    assert history.timeline_figure().data, "the timeline figure has traces"


def test_every_later_chapter_has_papers_on_the_timeline():
    for chapter in ("01", "02", "03", "04", "05"):
        assert sum(chapter in event.chapters for event in history.TIMELINE) >= 3, chapter


def test_prehistory_years_are_slide_6():
    slide_6 = {"thiel-fellowship": 2012, "emails-bengio": 2013, "google-brain": 2014, "deepdream": 2015,
               "distill": 2016, "transformers": 2017, "lucid-openai": 2018, "vision-circuits": 2019,
               "circuits-thread": 2020, "anthropic": 2021}
    for key, year in slide_6.items():
        assert history.EVENTS[key].start[0] == year, key
    assert history.EVENTS["olah-3d-printing"].start[0] == 2010 and history.EVENTS["olah-3d-printing"].end[0] == 2011


def test_transformer_circuits_dates_are_slide_7():
    slide_7 = {"circuits-thread": (2020, 3), "math-framework": (2021, 12), "induction-heads": (2022, 3),
               "solu": (2022, 6), "toy-models": (2022, 9), "towards-monosemanticity": (2023, 10),
               "january-update": (2024, 1)}
    for key, date in slide_7.items():
        assert history.EVENTS[key].start == date, key
    assert history.EVENTS["circuits-thread"].end == (2021, 4)


def test_people_roles_and_status_are_the_deck():
    roles = {p.name: p.role for p in history.PEOPLE}
    assert roles["Nelson Elhage"] == roles["Ludwig Schubert"] == "Core infrastructure"
    assert roles["Shan Carter"] is roles["Gabriel Goh"] is roles["Chelsea Voss"] is None  # slide 5 gives "..."
    assert history.STATUS == {"Circuits": 3, "Grokking": 3, "Backup behavior": 0, "SAEs & Dictionary Learning": 2,
                              "Feature Composition": 0, "Modularity": 0, "The training process": 0,
                              "Attention Superposition": 3}
    assert len(history.TERNARY_PAPERS) == 11 and set(history.TERNARY_PAPERS.values()) <= set(history.EVENTS)
    assert len(history.MICRO_MACRO) == 5


def test_point_scores_equal_the_deck():
    deck = {"circuits": (2, 2, 4), "grokking": (6, 4, 5), "saes": (10, 6, 9)}  # slides 25, 31, 40
    scores = history.deck_scores()
    for area, values in deck.items():
        assert tuple(scores[area][key] for key in history.SCORE_KEYS) == values, area
    for area in set(history.AREAS) - set(deck):
        assert all(value is None for value in scores[area].values()), f"the deck gives {area} no scores"


def test_quiz_keys_come_from_the_data_and_are_not_trivial():
    order = history.order_quiz_key()
    assert order != sorted(order) and order != sorted(order, reverse=True)
    dates = [history.EVENTS[history.ORDER_QUIZ[letter]].start for letter in order]
    assert dates == sorted(dates) and len(set(dates)) == len(dates), "quiz events need distinct dates"
    areas, when = history.area_quiz_key()
    assert set(areas.values()) == set(history.AREA_QUIZ_OPTIONS) and when == "developmental"
    assert set(history.AREA_QUIZ.values()) <= set(history.AREA_OF_PAPER)
    successes = history.success_quiz_key()
    assert sorted(successes.values()) == sorted(history.SUCCESS_QUIZ)
    assert list(successes.values()) != sorted(successes.values())


# --------------------------------------------------------------------------------------------------------------
# Quiz graders: the key passes; constant answers and single mistakes fail, saying how many, not which
# --------------------------------------------------------------------------------------------------------------


def test_order_quiz(capsys):
    key = history.order_quiz_key()
    graders.check_order_quiz(key)
    assert "correct" in capsys.readouterr().out
    graders.check_order_quiz([letter.lower() for letter in key])  # case does not matter
    fails(graders.check_order_quiz, sorted(key), match="not in their place")
    fails(graders.check_order_quiz, sorted(key, reverse=True), match="not in their place")
    swapped = list(key)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(graders.CheckFailed) as error:
        graders.check_order_quiz(swapped)
    message = str(error.value)
    assert f"2 of {len(key)} events" in message and "1 of" in message
    assert "".join(key) not in message.replace(", ", "").replace("'", "")
    fails(graders.check_order_quiz, key[:-1], match="exactly once")
    fails(graders.check_order_quiz, key[:-1] + key[:1], match="exactly once")
    fails(graders.check_order_quiz, "".join(key), match="list")


def test_people_quiz():
    groups, roles = history.people_quiz_key()
    graders.check_people_quiz(groups, roles)
    graders.check_people_quiz({k: v.upper() for k, v in groups.items()}, {k: v.lower() for k, v in roles.items()})
    fails(graders.check_people_quiz, {k: "Distill" for k in groups}, roles, match="3 of 9 groups")
    fails(graders.check_people_quiz, groups, {k: "A" for k in roles}, match="4 of 6 roles")
    swapped = dict(roles, **{"Neel Nanda": roles["Catherine Olsson"], "Catherine Olsson": roles["Neel Nanda"]})
    fails(graders.check_people_quiz, groups, swapped, match="0 of 9 groups and 2 of 6 roles")
    fails(graders.check_people_quiz, {k: v for k, v in groups.items() if k != "Shan Carter"}, roles, match="missing")
    fails(graders.check_people_quiz, dict(groups, **{"Shan Carter": "OpenAI"}), roles, match="not one of the options")


def test_area_quiz():
    areas, when = history.area_quiz_key()
    graders.check_area_quiz(areas, when)
    graders.check_area_quiz(areas, "Developmental")
    for constant in history.AREA_QUIZ_OPTIONS:
        fails(graders.check_area_quiz, {k: constant for k in areas}, when, match="papers are in the wrong area")
    fails(graders.check_area_quiz, areas, "post-hoc", match="0 of 13 papers .* class is wrong")
    fails(graders.check_area_quiz, dict(areas, A="grokking"), when, match="1 of 13")
    fails(graders.check_area_quiz, dict(areas, A="probing"), when, match="not one of the options")


def test_status_and_success_quizzes():
    graders.check_status_quiz(dict(history.STATUS))
    for constant in range(4):
        fails(graders.check_status_quiz, {k: constant for k in history.STATUS}, match="wrong number")
    fails(graders.check_status_quiz, dict(history.STATUS, Modularity=1), match="1 of 8")
    fails(graders.check_status_quiz, dict(history.STATUS, Modularity="__"), match="3, 2, 1 or 0")
    key = history.success_quiz_key()
    graders.check_success_quiz(key)
    for constant in history.SUCCESS_QUIZ:
        fails(graders.check_success_quiz, {k: constant for k in key}, match="3 of 4")
    works = list(key)
    fails(graders.check_success_quiz, dict(key, **{works[0]: key[works[1]], works[1]: key[works[0]]}), match="2 of 4")


def test_ternary_placement_checks_form_only():
    corners = ("micro", "macro", "developmental")
    spread = {paper: (i % 3 + 1, i % 4, 1) for i, paper in enumerate(history.TERNARY_PAPERS)}
    graders.check_ternary_placement(corners, spread)
    fails(graders.check_ternary_placement, corners, {p: (1, 1, 1) for p in history.TERNARY_PAPERS}, match="distinct")
    fails(graders.check_ternary_placement, ("micro", "micro", "dev"), spread, match="different")
    fails(graders.check_ternary_placement, corners, dict(list(spread.items())[1:]), match="missing")
    fails(graders.check_ternary_placement, corners, dict(spread, **{"Representation Engineering": (1, -1, 0)}),
          match="non-negative")
    fails(graders.check_ternary_placement, corners, dict(spread, **{"Representation Engineering": (0, 0, 0)}),
          match="positive sum")


# --------------------------------------------------------------------------------------------------------------
# Feature visualisation: the model, the data, and the graders
# --------------------------------------------------------------------------------------------------------------


def test_digits_load_offline_and_the_cnn_caches_its_activations():
    data = history.load_digits_data()
    assert data.train_x.shape == (history.DIGITS_N_TRAIN, 1, 8, 8) and len(data.all_x) == 1797
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-3
    state = torch.random.get_rng_state()
    a, b = history.DigitsCNN(seed=3), history.DigitsCNN(seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "building a model must not touch the global generator"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    logits, cache = a.run_with_cache(data.test_x[:5])
    assert {k: tuple(v.shape) for k, v in cache.items()} == {
        "conv1": (5, 8, 8, 8), "conv2": (5, 16, 8, 8), "fc": (5, 32), "logits": (5, 10)}
    assert torch.equal(logits, cache["logits"])
    with pytest.raises(ValueError, match="layer"):
        history.unit_activation(a, "conv3", 0)


@pytest.mark.slow
def test_training_the_chapter_cnn():
    model, info = history.train_digits_cnn(epochs=3)
    assert info["metrics"]["test_accuracy"] > 0.9, info["metrics"]


def test_total_variation_grader():
    graders.check_total_variation(own(history.total_variation))
    fails(graders.check_total_variation, history.total_variation, match="reference")
    fails(graders.check_total_variation, lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().sum((1, 2, 3))
          + (x[..., 1:] - x[..., :-1]).abs().sum((1, 2, 3)), match="wrong")  # L1 instead of squared
    fails(graders.check_total_variation, lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((1, 2, 3)),
          match="wrong")  # vertical only
    fails(graders.check_total_variation, lambda x: history.total_variation(x) / x[0].numel(), match="wrong")
    fails(graders.check_total_variation, lambda x: history.total_variation(x).sum(), match="shape")


def _visualise_variant(sign: float = 1.0, penalty_sign: float = 1.0, low: int = -1, dims=(-2, -1),
                       optimiser=torch.optim.Adam, jitter_on: bool = True):
    """``history.visualise`` with one plausible mistake."""

    def visualise(activation_fn, x0, steps=100, lr=0.05, l2=0.0, tv=0.0, jitter=0, seed=0):
        generator = torch.Generator().manual_seed(seed)
        x = x0.clone().requires_grad_(True)
        optimizer = optimiser([x], lr=lr)
        for _ in range(steps):
            dy, dx = torch.randint(low * jitter, jitter + 1, (2,), generator=generator).tolist()
            shifted = torch.roll(x, shifts=(dy, dx), dims=dims) if jitter_on else x
            objective = activation_fn(shifted) - penalty_sign * (l2 * (x ** 2).sum((1, 2, 3))
                                                                 + tv * history.total_variation(x))
            optimizer.zero_grad()
            (-sign * objective).sum().backward()
            optimizer.step()
        return x.detach()

    return visualise


def test_visualise_grader(capsys):
    graders.check_visualise(own(history.visualise))
    assert "correct" in capsys.readouterr().out
    graders.check_visualise(_visualise_variant())  # an independent correct implementation
    fails(graders.check_visualise, history.visualise, match="reference")
    fails(graders.check_visualise, _visualise_variant(sign=-1.0), match="lower the target activation")
    fails(graders.check_visualise, _visualise_variant(penalty_sign=-1.0), match="penalty")
    fails(graders.check_visualise, _visualise_variant(low=0), match="every shift")  # only positive shifts
    fails(graders.check_visualise, _visualise_variant(jitter_on=False), match="spread")
    fails(graders.check_visualise, _visualise_variant(dims=(-1, -2)), match="wrong")
    fails(graders.check_visualise, _visualise_variant(optimiser=torch.optim.SGD), match="Adam|wrong|random images")

    def in_place(activation_fn, x0, **settings):
        result = history.visualise(activation_fn, x0, **settings)
        x0.copy_(result)
        return x0

    fails(graders.check_visualise, in_place, match="in place")


def test_top_activating_examples_grader():
    graders.check_top_activating_examples(own(history.top_activating_examples))

    def ascending(activation_fn, images, k):
        values, indices = history.top_activating_examples(activation_fn, images, k)
        return values.flip(0), indices.flip(0)

    def later_index_first(activation_fn, images, k):
        activations = activation_fn(images).detach()
        order = sorted(range(len(images)), key=lambda i: (-float(activations[i]), -i))[:k]
        return activations[order], torch.tensor(order)

    def bottom_k(activation_fn, images, k):
        activations = activation_fn(images).detach()
        order = torch.sort(activations, stable=True).indices[:k].flip(0)  # the k smallest, largest first
        return activations[order], order

    fails(graders.check_top_activating_examples, ascending, match="descending")
    fails(graders.check_top_activating_examples, later_index_first, match="lower index")
    fails(graders.check_top_activating_examples, bottom_k, match="left out")
    fails(graders.check_top_activating_examples, lambda fn, images, k: torch.arange(k), match="pair")


def test_visualise_beats_random_inputs_on_the_trained_cnn_shape():
    """The reference's property the chapter relies on: optimised images beat random ones of the same norm."""
    model = graders._random_cnn((8, 16), 32, 8, seed=5)
    unit = history.unit_activation(model, "logits", torch.arange(4))
    x0 = 0.1 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = history.visualise(unit, x0, steps=60, lr=0.1, l2=0.01, tv=0.0, jitter=1)
    randoms = graders._same_norm_random(x, 64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (unit(x) > torch.stack([unit(r) for r in randoms]).max(0).values).all()


# --------------------------------------------------------------------------------------------------------------
# Point scores
# --------------------------------------------------------------------------------------------------------------


def test_pick_area_reference_rules():
    mine = {"a": {"low_hanging_fruit": 6, "excitement": 2, "difficulty": 3},
            "b": {"low_hanging_fruit": 3, "excitement": 5, "difficulty": 3},
            "c": {"low_hanging_fruit": 0, "excitement": 0, "difficulty": 10}}
    assert history.pick_area(mine, {}) == ("b", {"a": 5.0, "b": 5.0, "c": -10.0})  # tie: more exciting wins
    mine["b"]["excitement"] = 2
    mine["b"]["low_hanging_fruit"] = 6
    assert history.pick_area(mine, {})[0] == "a"  # full tie: first listed wins
    deck = {"c": {"low_hanging_fruit": 10, "excitement": 10, "difficulty": None}, "zzz": {"excitement": 10}}
    best, values = history.pick_area(mine, deck, weight_mine=0.0)
    assert best == "c" and values["c"] == 10 and set(values) == {"a", "b", "c"}
    assert history.pick_area(mine, deck, weight_mine=1.0)[0] == "a"  # the deck ignored
    with pytest.raises(ValueError):
        history.pick_area({}, deck)


def test_pick_area_grader():
    graders.check_pick_area(own(history.pick_area))
    fails(graders.check_pick_area, history.pick_area, match="reference")

    def plain_max(my_scores, deck_scores, weight_mine=0.5):
        _, values = history.pick_area(my_scores, deck_scores, weight_mine)
        return max(values, key=values.get), values  # ignores the excitement tie rule

    def ignores_deck(my_scores, deck_scores, weight_mine=0.5):
        return history.pick_area(my_scores, {}, weight_mine)

    def missing_is_zero(my_scores, deck_scores, weight_mine=0.5):
        filled = {a: {k: (v if v is not None else 0) for k, v in s.items()} for a, s in deck_scores.items()}
        return history.pick_area(my_scores, filled, weight_mine)

    def weight_on_deck(my_scores, deck_scores, weight_mine=0.5):
        return history.pick_area(my_scores, deck_scores, 1 - weight_mine)

    def mutating(my_scores, deck_scores, weight_mine=0.5):
        result = history.pick_area(my_scores, deck_scores, weight_mine)
        deck_scores.clear()
        return result

    fails(graders.check_pick_area, plain_max, match="0 have wrong values and 1 a wrong pick")
    for wrong in (ignores_deck, missing_is_zero, weight_on_deck):
        fails(graders.check_pick_area, wrong, match="wrong values")
    fails(graders.check_pick_area, mutating, match="modified")
    fails(graders.check_pick_area, lambda m, d, w=0.5: next(iter(m)), match="pair")


def test_my_area_scores_grader():
    good = {area: {"low_hanging_fruit": 5, "excitement": 5, "difficulty": 5} for area in ("circuits", "grokking", "saes")}
    graders.check_my_area_scores(good)
    fails(graders.check_my_area_scores, {k: v for k, v in good.items() if k != "saes"}, match="missing")
    fails(graders.check_my_area_scores, dict(good, saes={"low_hanging_fruit": 11, "excitement": 5, "difficulty": 5}))
    fails(graders.check_my_area_scores, dict(good, saes={"low_hanging_fruit": None, "excitement": 5, "difficulty": 5}))
    fails(graders.check_my_area_scores, [good], match="dict")
    assert copy.deepcopy(good) == good and math.isfinite(1.0)
