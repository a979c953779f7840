"""Chapter 0, "History and landscape": the data transcribes the deck faithfully, the quiz keys come from it, and the
graders pass right answers and fail plausible wrong ones (constant answers, one swap, descent instead of ascent,
penalties with the wrong sign, an exclusive jitter range, unstable ties, ignored deck scores, a gradient of the wrong
layer or the wrong loss, ...). The demo cells of the notebook that follow an unfinished exercise, or read a file,
are run here too, in the states a student can leave them in."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mechinterp_course import graders, history, history_graders, research

ROOT = Path(__file__).resolve().parents[1]
#: Tests run from a clean clone with the shared folder beside the repository.
DECK = Path(__file__).resolve().parents[2] / "shared" / "deck" / "mechinterp-deck.txt"
NOTEBOOK = ROOT / "solutions" / "00_history" / "00_history.ipynb"


def own(fn):
    """Wrap a reference so it looks like a student's function (the graders refuse the library's own)."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def fails(check, *answer, match: str | None = None):
    with pytest.raises(graders.CheckFailed, match=match):
        check(*answer)


@pytest.fixture(scope="module")
def slides() -> dict[int, str]:
    """The deck's text by slide number (the text has an "N of 84" header before each slide)."""
    if not DECK.exists():
        pytest.skip(f"the deck's text is not beside the repository (looked for {DECK}); the transcription checks need it")
    parts = re.split(r"^(\d+) of 84\n", DECK.read_text(encoding="utf-8"), flags=re.M)
    found = {int(number): text for number, text in zip(parts[1::2], parts[2::2])}
    assert sorted(found) == list(range(1, 85)), "the deck's text should have 84 slides"
    return found


def _normal(text: str) -> str:
    """Case- and whitespace-insensitive form (typography, i.e. quotes and dashes, must match exactly)."""
    return " ".join(text.split()).lower()


def _on_slides(text: str, slides: dict[int, str], numbers) -> bool:
    return any(_normal(text) in _normal(slides[n]) for n in numbers)


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
    for chapter in ("01", "02", "03", "04", "05", "06"):
        assert sum(chapter in event.chapters for event in history.TIMELINE) >= 3, chapter
    # The north-star successes belong to chapter 06; neither Circuits nor Grokking discusses Reddy or MIPS.
    for key in ("reddy", "mips", "curve-circuits"):
        assert history.EVENTS[key].chapters == ("06",), key
    assert history.EVENTS["margin-maximization"].chapters == ("02", "06")  # in Grokking's reading list too


def test_chapter_status_is_the_readmes():
    rows = re.findall(r"^\| (\d\d) \| (.+?) \| .+ \| (\w+) \|$", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert {code: status for code, _, status in rows} == history.CHAPTER_STATUS
    assert history.chapter_label("02") == "02 Grokking"
    assert history.chapter_label("03") == "03 Backup behaviour (planned)"
    assert history.chapters_label(()) == "none"


def test_the_notebook_has_no_stale_text_about_which_chapters_exist():
    text = "".join("".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"])
    for stale in ("being written", "02-05", "no chapter practises", "no chapter traces", "(value 6)", "7s and some 9s"):
        assert stale not in text, stale


def test_slide_6_is_complete_and_verbatim(slides):
    lines = [line.strip() for line in slides[6].splitlines() if re.match(r"^\d{4}", line.strip())]
    assert [f"{year} - {text}" for year, text, _ in history.SLIDE_6] == lines
    assert any(year == "2020" for year, _, _ in history.SLIDE_6)
    for year, _, key in history.SLIDE_6:
        event = history.EVENTS[key]
        assert str(event.start[0]) == year[:4] and 6 in event.slides, key


def test_every_string_presented_as_the_decks_words_is_in_the_deck(slides):
    everywhere = range(1, 85)
    quoted: list[tuple[str, str, object]] = []  # (what, text, slides it must be on)
    for event in history.TIMELINE:
        assert set(event.slides) <= set(everywhere), event.key
        if event.summary_by == "deck":
            quoted.append((f"event {event.key}", event.summary, event.slides))
        if event.deck_text:
            quoted.append((f"event {event.key} deck_text", event.deck_text, event.slides))
    for person in history.PEOPLE:
        if person.role:
            quoted.append((f"role of {person.name}", person.role, (5,)))
        if person.group:
            name = "Christine Olsson" if person.name == "Catherine Olsson" else person.name  # corrected, with a note
            quoted.append((f"name {person.name}", name, (5,)))
    assert "Christine Olsson" in history.PEOPLE[7].note
    quoted += [("Leonard's taxonomy", option, (8,)) for options in history.LEONARD_TAXONOMY.values() for option in options]
    quoted += [(f"class of {c['work']}", c["deck_text"], (c["slide"],)) for c in history.DECK_STATED_CLASSES]
    quoted += [("ternary paper", paper, (9,)) for paper in history.TERNARY_PAPERS]
    quoted += [("micro~macro", sense, (11,)) for sense in history.MICRO_MACRO]
    quoted += [(f"region of slide {n}", region, (n,)) for n, region in history.TERNARY_REGIONS.items()]
    quoted += [("school", text, (16,)) for school in history.SCHOOLS for text in school if text]
    quoted += [("circuit-analysis topic", topic, (16,)) for topic in history.CIRCUIT_ANALYSIS_TOPICS]
    quoted += [("status item", item, (17,)) for item in [*history.STATUS, history.STATUS_UNMARKED]]
    quoted += [("status legend", legend, (17,)) for legend in history.STATUS_LEGEND.values()]
    quoted += [(f"area {area}", info["title"], range(info["slides"][0], info["slides"][1] + 1))
               for area, info in history.AREAS.items()]
    quoted += [("main work", paper, (22, 30, 36, 39, 40, 63)) for paper in history.AREA_OF_PAPER]
    quoted += [("ladder", text, (82,)) for rung in history.LADDER for text in (rung["rung"], rung["detail"]) if text]
    quoted += [("north star", star["star"], (star["slide"],)) for star in history.NORTH_STARS]
    quoted += [("success", star["success"], (80,)) for star in history.NORTH_STARS if star["success"]]
    quoted += [("spotlight", paper, (81,)) for paper in history.SPOTLIGHT]
    quoted += [("role quiz", role, (5,)) for role in history.ROLE_QUIZ.values()]
    quoted += [("success quiz", claim, (80,)) for claim in history.SUCCESS_QUIZ.values()]
    quoted += [("slide 6", f"{year} - {text}", (6,)) for year, text, _ in history.SLIDE_6]
    missing = [(what, text) for what, text, numbers in quoted if not _on_slides(text, slides, numbers)]
    assert not missing, missing
    assert len(quoted) > 150


_MONTH = re.compile(r"^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)", re.I)


def _date_on(slide_text: str, date: tuple[int, int], precision: str) -> bool:
    year, month = date
    if precision == "year":
        return re.search(rf"\b{year}\b", slide_text) is not None
    abbreviation = history.MONTHS[month - 1]
    return re.search(rf"\b{abbreviation}[a-z]*\.?\s+{year}\b", slide_text, re.I) is not None


def test_dates_the_deck_gives_are_on_its_slides_and_the_others_are_marked_as_the_courses(slides):
    for event in history.TIMELINE:
        assert event.date_by in ("deck", "course"), event.key
        if event.date_by == "course":
            assert event.date_note and "course" in event.date_note, event.key
            continue
        assert event.date_note == "", event.key
        assert any(_date_on(slides[n], event.start, event.precision) for n in event.slides), event.key
        if event.end is not None:
            assert any(_date_on(slides[n], event.end, event.precision) for n in event.slides), event.key
    # Slide 7 names double descent among undated small posts: its date is the course's.
    assert history.EVENTS["double-descent"].date_by == "course"
    assert not _date_on(slides[7], history.EVENTS["double-descent"].start, "month")


def test_slide_numbers_of_the_attention_superposition_milestones(slides):
    incoherent = history.EVENTS["ov-incoherent-model"]
    first = min(n for n in slides if "faul_sname" in slides[n])
    assert first == 62 and min(incoherent.slides) == 62 and "(OV-incoherent)" in slides[62]
    january = history.EVENTS["january-update"]
    wording = [n for n in slides if "[Jan 2024] Anthropic update" in slides[n]]
    assert wording == [74, 75, 76, 77, 78] and set(wording) <= set(january.slides)
    coherent = history.EVENTS["ov-coherent-model"]
    assert min(coherent.slides) == min(n for n in slides if "Greenspan" in slides[n]) == 63


def test_ladder_and_north_stars_are_each_practised_by_a_chapter():
    for item in history.LADDER + history.NORTH_STARS:
        assert item["practised_in"] and set(item["practised_in"]) <= set(history.CHAPTERS), item
        assert item["how"].strip(), item
    stars = {star["star"]: star for star in history.NORTH_STARS}
    assert stars["Trace model outputs to the specific training data examples"]["practised_in"] == ("00",)
    proof = stars["Provide a mathematical proof of a learned circuit/subnetwork being optimal"]
    assert proof["practised_in"] == ("02",) and proof["how"].startswith("read, not proved: Morwani et al.")
    necessary = next(rung for rung in history.LADDER if rung["rung"] == "Necessary conditions")
    assert necessary["detail"] == "Could it have been anything else?" and necessary["practised_in"] == ("02",)
    assert necessary["how"].startswith("which ingredients grokking needs")
    assert history.ladder_label(necessary) == "Necessary conditions: Could it have been anything else?"


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
    history_graders.check_order_quiz(key)
    assert "correct" in capsys.readouterr().out
    history_graders.check_order_quiz([letter.lower() for letter in key])  # case does not matter
    fails(history_graders.check_order_quiz, sorted(key), match="not in their place")
    fails(history_graders.check_order_quiz, sorted(key, reverse=True), match="not in their place")
    swapped = list(key)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(graders.CheckFailed) as error:
        history_graders.check_order_quiz(swapped)
    message = str(error.value)
    assert f"2 of {len(key)} events" in message and "1 of" in message
    assert "".join(key) not in message.replace(", ", "").replace("'", "")
    fails(history_graders.check_order_quiz, key[:-1], match="exactly once")
    fails(history_graders.check_order_quiz, key[:-1] + key[:1], match="exactly once")
    fails(history_graders.check_order_quiz, "".join(key), match="list")


def test_people_quiz():
    groups, roles = history.people_quiz_key()
    history_graders.check_people_quiz(groups, roles)
    history_graders.check_people_quiz({k: v.upper() for k, v in groups.items()}, {k: v.lower() for k, v in roles.items()})
    fails(history_graders.check_people_quiz, {k: "Distill" for k in groups}, roles, match="3 of 9 groups")
    fails(history_graders.check_people_quiz, groups, {k: "A" for k in roles}, match="4 of 6 roles")
    swapped = dict(roles, **{"Neel Nanda": roles["Catherine Olsson"], "Catherine Olsson": roles["Neel Nanda"]})
    fails(history_graders.check_people_quiz, groups, swapped, match="0 of 9 groups and 2 of 6 roles")
    fails(history_graders.check_people_quiz, {k: v for k, v in groups.items() if k != "Shan Carter"}, roles, match="missing")
    fails(history_graders.check_people_quiz, dict(groups, **{"Shan Carter": "OpenAI"}), roles, match="not one of the options")


def test_area_quiz():
    areas, when = history.area_quiz_key()
    history_graders.check_area_quiz(areas, when)
    history_graders.check_area_quiz(areas, "Developmental")
    for constant in history.AREA_QUIZ_OPTIONS:
        fails(history_graders.check_area_quiz, {k: constant for k in areas}, when, match="papers are in the wrong area")
    fails(history_graders.check_area_quiz, areas, "post-hoc", match="0 of 13 papers .* class is wrong")
    fails(history_graders.check_area_quiz, dict(areas, A="grokking"), when, match="1 of 13")
    fails(history_graders.check_area_quiz, dict(areas, A="probing"), when, match="not one of the options")


def test_status_and_success_quizzes():
    history_graders.check_status_quiz(dict(history.STATUS))
    for constant in range(4):
        fails(history_graders.check_status_quiz, {k: constant for k in history.STATUS}, match="wrong number")
    fails(history_graders.check_status_quiz, dict(history.STATUS, Modularity=1), match="1 of 8")
    fails(history_graders.check_status_quiz, dict(history.STATUS, Modularity="__"), match="3, 2, 1 or 0")
    key = history.success_quiz_key()
    history_graders.check_success_quiz(key)
    for constant in history.SUCCESS_QUIZ:
        fails(history_graders.check_success_quiz, {k: constant for k in key}, match="3 of 4")
    works = list(key)
    fails(history_graders.check_success_quiz, dict(key, **{works[0]: key[works[1]], works[1]: key[works[0]]}), match="2 of 4")


def test_ternary_placement_checks_form_only():
    corners = ("micro", "macro", "developmental")
    spread = {paper: (i % 3 + 1, i % 4, 1) for i, paper in enumerate(history.TERNARY_PAPERS)}
    history_graders.check_ternary_placement(corners, spread)
    fails(history_graders.check_ternary_placement, corners, {p: (1, 1, 1) for p in history.TERNARY_PAPERS}, match="distinct")
    fails(history_graders.check_ternary_placement, ("micro", "micro", "dev"), spread, match="different")
    fails(history_graders.check_ternary_placement, corners, dict(list(spread.items())[1:]), match="missing")
    fails(history_graders.check_ternary_placement, corners, dict(spread, **{"Representation Engineering": (1, -1, 0)}),
          match="non-negative")
    fails(history_graders.check_ternary_placement, corners, dict(spread, **{"Representation Engineering": (0, 0, 0)}),
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
    history_graders.check_total_variation(own(history.total_variation))
    fails(history_graders.check_total_variation, history.total_variation, match="reference")
    fails(history_graders.check_total_variation, lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().sum((1, 2, 3))
          + (x[..., 1:] - x[..., :-1]).abs().sum((1, 2, 3)), match="wrong")  # L1 instead of squared
    fails(history_graders.check_total_variation, lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((1, 2, 3)),
          match="wrong")  # vertical only
    fails(history_graders.check_total_variation, lambda x: history.total_variation(x) / x[0].numel(), match="wrong")
    fails(history_graders.check_total_variation, lambda x: history.total_variation(x).sum(), match="shape")


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
    history_graders.check_visualise(own(history.visualise))
    assert "correct" in capsys.readouterr().out
    history_graders.check_visualise(_visualise_variant())  # an independent correct implementation
    fails(history_graders.check_visualise, history.visualise, match="reference")
    fails(history_graders.check_visualise, _visualise_variant(sign=-1.0), match="lower the target activation")
    fails(history_graders.check_visualise, _visualise_variant(penalty_sign=-1.0), match="penalty")
    fails(history_graders.check_visualise, _visualise_variant(low=0), match="every shift")  # only positive shifts
    fails(history_graders.check_visualise, _visualise_variant(jitter_on=False), match="spread")
    fails(history_graders.check_visualise, _visualise_variant(dims=(-1, -2)), match="wrong")
    fails(history_graders.check_visualise, _visualise_variant(optimiser=torch.optim.SGD), match="Adam|wrong|random images")

    def in_place(activation_fn, x0, **settings):
        result = history.visualise(activation_fn, x0, **settings)
        x0.copy_(result)
        return x0

    fails(history_graders.check_visualise, in_place, match="in place")


def test_top_activating_examples_grader():
    history_graders.check_top_activating_examples(own(history.top_activating_examples))

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

    fails(history_graders.check_top_activating_examples, ascending, match="descending")
    fails(history_graders.check_top_activating_examples, later_index_first, match="lower index")
    fails(history_graders.check_top_activating_examples, bottom_k, match="left out")
    fails(history_graders.check_top_activating_examples, lambda fn, images, k: torch.arange(k), match="pair")


def test_visualise_beats_random_inputs_on_the_trained_cnn_shape():
    """The reference's property the chapter relies on: optimised images beat random ones of the same norm."""
    model = history_graders._random_cnn((8, 16), 32, 8, seed=5)
    unit = history.unit_activation(model, "logits", torch.arange(4))
    x0 = 0.1 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = history.visualise(unit, x0, steps=60, lr=0.1, l2=0.01, tv=0.0, jitter=1)
    randoms = history_graders._same_norm_random(x, 64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (unit(x) > torch.stack([unit(r) for r in randoms]).max(0).values).all()


# --------------------------------------------------------------------------------------------------------------
# Training-data attribution
# --------------------------------------------------------------------------------------------------------------


def _per_example_gradients(model, x, y, layer="out", reduction="mean", labels=None):
    """Per-example gradients by autograd, one example at a time (an independent implementation), of ``layer``'s
    weight and bias; ``labels`` overrides ``y`` (a plausible mistake: the predicted labels)."""
    rows = []
    for i in range(len(x)):
        module = getattr(model, layer)
        weight = module.weight.detach().clone().requires_grad_(True)
        bias = module.bias.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            if layer == "out":
                _, cache = model.run_with_cache(x[i:i + 1])
                logits = F.linear(cache["fc"], weight, bias)
            else:  # the hidden layer's parameters instead of the final layer's
                _, cache = model.run_with_cache(x[i:i + 1])
                pooled = F.max_pool2d(cache["conv2"], 2).flatten(1)
                logits = model.out(F.relu(F.linear(pooled, weight, bias)))
            target = (y if labels is None else labels)[i:i + 1]
            loss = F.cross_entropy(logits, target, reduction=reduction)
            grad_weight, grad_bias = torch.autograd.grad(loss, [weight, bias])
        rows.append(torch.cat([grad_weight.flatten(), grad_bias]))
    return torch.stack(rows)


def _tracin_by_autograd(model, test_x, test_y, train_x, train_y):
    return _per_example_gradients(model, test_x, test_y) @ _per_example_gradients(model, train_x, train_y).T


def test_tracin_reference_equals_autograd_and_leaves_the_model_alone():
    model = history_graders._random_cnn((8, 16), 32, 8, seed=7)
    generator = torch.Generator().manual_seed(0)
    test_x, train_x = torch.randn(3, 1, 8, 8, generator=generator), torch.randn(20, 1, 8, 8, generator=generator)
    test_y, train_y = torch.randint(0, 10, (3,), generator=generator), torch.randint(0, 10, (20,), generator=generator)
    before = [p.clone() for p in model.parameters()]
    gradients = history.last_layer_gradients(model, train_x, train_y)
    assert gradients.shape == (20, 10 * 32 + 10)
    assert torch.allclose(gradients, _per_example_gradients(model, train_x, train_y), atol=1e-5)
    scores = history.tracin_scores(model, test_x, test_y, train_x, train_y)
    assert scores.shape == (3, 20)
    assert torch.allclose(scores, _tracin_by_autograd(model, test_x, test_y, train_x, train_y), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(p.requires_grad for p in model.parameters())
    # The bias gradient is softmax - onehot: it sums to 0 over the classes.
    assert torch.allclose(gradients[:, -10:].sum(-1), torch.zeros(20), atol=1e-6)


def test_tracin_grader(capsys):
    history_graders.check_tracin_scores(own(history.tracin_scores))
    assert "correct" in capsys.readouterr().out
    history_graders.check_tracin_scores(_tracin_by_autograd)  # an independent correct implementation
    fails(history_graders.check_tracin_scores, history.tracin_scores, match="reference")

    def only(part):
        def scores(model, test_x, test_y, train_x, train_y):
            n_weight = model.out.weight.numel()
            keep = slice(0, n_weight) if part == "weight" else slice(n_weight, None)
            return (history.last_layer_gradients(model, test_x, test_y)[:, keep]
                    @ history.last_layer_gradients(model, train_x, train_y)[:, keep].T)
        return scores

    def hidden_layer(model, test_x, test_y, train_x, train_y):
        return (_per_example_gradients(model, test_x, test_y, layer="fc")
                @ _per_example_gradients(model, train_x, train_y, layer="fc").T)

    def batch_mean_test_gradient(model, test_x, test_y, train_x, train_y):  # one gradient for the whole test batch
        mean = history.last_layer_gradients(model, test_x, test_y).mean(0, keepdim=True)
        return (mean @ history.last_layer_gradients(model, train_x, train_y).T).expand(len(test_x), -1).clone()

    def negated_test_gradient(model, test_x, test_y, train_x, train_y):  # gradient of the negative test loss
        return -history.tracin_scores(model, test_x, test_y, train_x, train_y)

    def cosine(model, test_x, test_y, train_x, train_y):
        a = F.normalize(history.last_layer_gradients(model, test_x, test_y), dim=-1)
        return a @ F.normalize(history.last_layer_gradients(model, train_x, train_y), dim=-1).T

    def predicted_labels(model, test_x, test_y, train_x, train_y):
        with torch.no_grad():
            guess = model(test_x).argmax(-1)
        return history.tracin_scores(model, test_x, guess, train_x, train_y)

    def logits_not_probabilities(model, test_x, test_y, train_x, train_y):
        def gradients(x, y):
            logits, cache = model.run_with_cache(x)
            error = logits - F.one_hot(y, logits.shape[-1])
            weight = torch.einsum("bc,bh->bch", error, cache["fc"]).flatten(1)
            return torch.cat([weight, error], -1)
        return gradients(test_x, test_y) @ gradients(train_x, train_y).T

    def ignores_train_labels(model, test_x, test_y, train_x, train_y):
        return history.tracin_scores(model, test_x, test_y, train_x, torch.zeros_like(train_y))

    def mutating(model, test_x, test_y, train_x, train_y):
        result = history.tracin_scores(model, test_x, test_y, train_x, train_y)
        with torch.no_grad():
            model.out.bias.add_(1.0)
        return result

    fails(history_graders.check_tracin_scores, only("weight"), match="sums of your rows")
    fails(history_graders.check_tracin_scores, only("bias"), match="sums of your rows")
    fails(history_graders.check_tracin_scores, hidden_layer, match="sums of your rows")
    fails(history_graders.check_tracin_scores, batch_mean_test_gradient, match="sums of your rows")
    fails(history_graders.check_tracin_scores, negated_test_gradient, match="sums of your rows")
    fails(history_graders.check_tracin_scores, cosine, match="sums of your rows")
    fails(history_graders.check_tracin_scores, predicted_labels, match="sums of your rows")
    fails(history_graders.check_tracin_scores, logits_not_probabilities, match="sums of your rows")
    fails(history_graders.check_tracin_scores, ignores_train_labels, match="sums of your (rows|columns)")
    fails(history_graders.check_tracin_scores, mutating, match="parameters")
    fails(history_graders.check_tracin_scores, lambda m, a, b, c, d: torch.zeros(len(a), len(c)), match="sums of your rows")
    fails(history_graders.check_tracin_scores, lambda m, a, b, c, d: history.tracin_scores(m, a, b, c, d).T, match="shape")
    fails(history_graders.check_tracin_scores, lambda m, a, b, c, d: history.tracin_scores(m, a, b, c, d).tolist(),
          match="torch.Tensor")

    def raises(model, test_x, test_y, train_x, train_y):
        raise NotImplementedError()

    fails(history_graders.check_tracin_scores, raises, match="not implemented")


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
    history_graders.check_pick_area(own(history.pick_area))
    fails(history_graders.check_pick_area, history.pick_area, match="reference")

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

    fails(history_graders.check_pick_area, plain_max, match="0 have wrong values and 1 a wrong pick")
    for wrong in (ignores_deck, missing_is_zero, weight_on_deck):
        fails(history_graders.check_pick_area, wrong, match="wrong values")
    fails(history_graders.check_pick_area, mutating, match="modified")
    fails(history_graders.check_pick_area, lambda m, d, w=0.5: next(iter(m)), match="pair")


def test_my_area_scores_grader(capsys):
    good = {area: {"low_hanging_fruit": 5, "excitement": 5, "difficulty": 5} for area in ("circuits", "grokking", "saes")}
    before = copy.deepcopy(good)
    history_graders.check_my_area_scores(good)
    assert "correct (3 areas" in capsys.readouterr().out
    assert good == before, "the check must not change the student's scores"
    history_graders.check_my_area_scores(dict(good, modularity={"low_hanging_fruit": 0, "excitement": 10,
                                                                "difficulty": 7}))  # more areas than required
    fails(history_graders.check_my_area_scores, {k: v for k, v in good.items() if k != "saes"}, match="missing \\['saes'\\]")
    fails(history_graders.check_my_area_scores, dict(good, saes={"low_hanging_fruit": 11, "excitement": 5, "difficulty": 5}),
          match="'saes'.*scores go from 0 to 10")
    fails(history_graders.check_my_area_scores, dict(good, saes={"low_hanging_fruit": None, "excitement": 5, "difficulty": 5}),
          match="'saes'.*is None")
    fails(history_graders.check_my_area_scores, dict(good, saes={"low_hanging_fruit": 5, "excitement": 5}),
          match="missing score 'difficulty'")
    fails(history_graders.check_my_area_scores, [good], match="dict")
    # Unknown names are refused with the list of valid ones (a typo would otherwise be silently ignored later).
    with pytest.raises(graders.CheckFailed) as error:
        history_graders.check_my_area_scores(dict(good, sae={"low_hanging_fruit": 5, "excitement": 5, "difficulty": 5}))
    assert "unknown area name(s) ['sae']" in str(error.value)
    assert all(area in str(error.value) for area in research.AREAS)
    fails(history_graders.check_my_area_scores, {"Circuit analysis": good["circuits"], "grokking": good["grokking"],
                                                 "saes": good["saes"]}, match="unknown area")


# --------------------------------------------------------------------------------------------------------------
# The notebook's demo cells, in the states a student can leave them in
# --------------------------------------------------------------------------------------------------------------


def _cell_source(grade_id: str) -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    [cell] = [c for c in cells if c["metadata"]["nbgrader"]["grade_id"] == grade_id]
    return "".join(cell["source"])


def _run_cell(grade_id: str, namespace: dict) -> dict:
    import pandas as pd

    namespace = {"history": history, "research": research, "graders": graders, "pd": pd, "torch": torch, **namespace}
    exec(compile(_cell_source(grade_id), grade_id, "exec"), namespace)
    return namespace


def _unfinished(*args, **kwargs):
    raise NotImplementedError()


def test_pick_demo_skips_with_a_message_while_the_scores_are_not_filled_in(capsys):
    blank = {area: {"low_hanging_fruit": None, "excitement": None, "difficulty": None}
             for area in ["circuits", "grokking", "saes"]}  # the student version's starting point
    for my_scores in (blank, dict(blank, circuits={"low_hanging_fruit": 3, "excitement": 4, "difficulty": 4}),
                      {"sae": {"low_hanging_fruit": 3, "excitement": 4, "difficulty": 4}}, {}, None):
        _run_cell("code-58", {"my_scores": my_scores, "pick_area": _unfinished, "DECK_SCORES": history.deck_scores()})
        out = capsys.readouterr().out
        assert out.startswith("Skipped: fill in every score of my_scores in Exercise 6.1 first"), out
    filled = {area: {"low_hanging_fruit": 5, "excitement": 6, "difficulty": 4} for area in ["circuits", "grokking", "saes"]}
    _run_cell("code-58", {"my_scores": filled, "pick_area": _unfinished, "DECK_SCORES": history.deck_scores()})
    out = capsys.readouterr().out
    best = history.pick_area(filled, history.deck_scores())[0]
    assert "uses the course's reference implementation" in out and f"Pick: {history.AREAS[best]['title']}." in out


def test_score_table_cell_survives_a_corrupt_scores_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mechinterp_scores.json"
    monkeypatch.setenv(research.SCORES_ENV_VAR, str(path))
    namespace = _run_cell("code-54", {})  # no file yet: the deck's scores, no note
    assert capsys.readouterr().out == "" and namespace["saved_scores"] == {}
    for content in ("{not json", "[1, 2]", '{"circuits": {"low_hanging_fruit": 3, "excitement": 12, "difficulty": 1}}'):
        path.write_text(content)
        namespace = _run_cell("code-54", {})
        out = capsys.readouterr().out
        assert out.startswith("Note: your saved scores could not be read") and str(path) in out
        assert namespace["saved_scores"] == {} and path.read_text() == content  # the file is left as it was
    research.save_scores("grokking", {"low_hanging_fruit": 1, "excitement": 2, "difficulty": 3}, tmp_path / "ok.json")
    monkeypatch.setenv(research.SCORES_ENV_VAR, str(tmp_path / "ok.json"))
    assert _run_cell("code-54", {})["saved_scores"] == {"grokking": {"low_hanging_fruit": 1, "excitement": 2, "difficulty": 3}}


def test_every_exercise_says_why_it_matters_and_how_it_is_checked():
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        meta = cell["metadata"]["nbgrader"]
        if not meta.get("solution"):
            continue
        # the explanation is the nearest read-only markdown cell above the exercise
        j = max(k for k in range(i) if cells[k]["cell_type"] == "markdown" and not cells[k]["metadata"]["nbgrader"].get("solution"))
        text = " ".join("".join(cells[j]["source"]).split())
        assert "Why it matters" in text, (meta["grade_id"], text[:80])
        assert re.search(r"How it is (checked|graded)", text), (meta["grade_id"], text[:80])
