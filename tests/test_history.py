"""Chapter 00, "History and landscape": the deck's data transcribes the deck faithfully; the library holds no answer
(no twin of an exercise, no quiz key in clear); every check passes right answers, also when written differently
from the reference, and gives a plausible wrong answer the message that says what is wrong (a hard-coded or
input-ignoring answer fails too); the digits CNN trains with the course's loop; what the checks hand to a student's
function can travel to a graded kernel; and the demo cells behave in the states a student can leave them in.

The right answers of the quizzes are read from the solution notebook (the single source), never typed here.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from mechinterp_course import history, plots, research
from mechinterp_course.checking import CheckFailed, exercise
from mechinterp_course.history import checks as check
from mechinterp_course.history import reference
from mechinterp_course.instructor import export, wire

ROOT = Path(__file__).resolve().parents[1]
#: Tests run from a clean clone with the shared folder beside the repository.
DECK = Path(__file__).resolve().parents[2] / "shared" / "deck" / "mechinterp-deck.txt"
NOTEBOOK = ROOT / "solutions" / "00_history" / "00_history.ipynb"


from conftest import fails, own  # noqa: E402 - the suite's shared helpers


@pytest.fixture(scope="module")
def answers() -> dict:
    """The literal answers written in the solution notebook's solution cells."""
    return export.collect(nbformat.read(NOTEBOOK, as_version=4)).answers


@pytest.fixture(scope="module")
def slides() -> dict[int, str]:
    """The deck's text by slide number (the text has an "N of 84" header before each slide)."""
    if not DECK.exists():
        pytest.skip(
            f"the deck's text is not beside the repository (looked for {DECK}); the transcription checks need it"
        )
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
# The room: no twin of an exercise, no key in clear, one table of areas, figures in plots
# --------------------------------------------------------------------------------------------------------------

TWINS = (
    "total_variation",
    "visualise",
    "top_activating_examples",
    "tracin_scores",
    "last_layer_gradients",
    "pick_area",
    "area_values",
    "unit_activation",
    "deck_scores",
    "AREAS",
    "AREA_OF_PAPER",
    "order_quiz_key",
    "people_quiz_key",
    "area_quiz_key",
    "success_quiz_key",
    "timeline_figure",
    "ternary_figure",
    "image_grid",
)


def test_the_library_has_no_twin_of_an_exercise_and_no_key():
    for module in (history, history.deck, history.digits):
        present = [name for name in TWINS if hasattr(module, name)]
        assert not present, f"{module.__name__} has {present}"
    for name in ("timeline_figure", "ternary_figure", "image_grid", "deck_scores_figure"):
        assert callable(getattr(plots, name))
    for name in ("total_variation", "visualise", "top_activating_examples", "tracin_scores", "pick_area"):
        assert callable(getattr(reference, name)), name
    digest = re.compile(r"^[0-9a-f]{16}$")
    for variable in ("people", "builds_on", "when_in_training", "projects", "successes"):
        assert all(digest.match(value) for value in reference.ANSWER_KEYS[variable].values()), variable


def test_the_old_modules_are_gone():
    assert not (ROOT / "mechinterp_course" / "history.py").exists()
    assert not (ROOT / "mechinterp_course" / "history_graders.py").exists()


def test_every_exercise_has_a_check_and_a_number():
    assert set(reference.EXERCISES) == {
        "people",
        "builds_on",
        "when_in_training",
        "placement",
        "projects",
        "total_variation",
        "visualise",
        "top_activating_examples",
        "tracin_scores",
        "successes",
        "my_scores",
        "pick_area",
    }
    for name in reference.EXERCISES:
        assert getattr(check, name).exercise == name


# --------------------------------------------------------------------------------------------------------------
# Data: the deck's text, transcribed
# --------------------------------------------------------------------------------------------------------------


def test_timeline_is_sorted_and_every_event_has_a_one_line_summary():
    starts = [event.start for event in history.TIMELINE]
    assert starts == sorted(starts)
    assert len({event.key for event in history.TIMELINE}) == len(history.TIMELINE)
    for event in history.TIMELINE:
        assert event.summary.strip() and "\n" not in event.summary and len(event.summary) <= 260, event.key
        assert event.summary_by in ("deck", "course") and event.from_deck == (event.summary_by == "deck")
        assert event.track in history.TRACKS, event.key
        assert set(event.chapters) <= set(history.CHAPTERS), event.key
        assert 1 <= event.start[1] <= 12 and 2009 <= event.start[0] <= 2024, event.key
        if event.end is not None:
            assert event.end > event.start, event.key
        if event.summary_by == "deck":  # the deck's own words must say where in the deck they are
            assert event.slides, event.key


def test_every_later_chapter_has_papers_on_the_timeline():
    for chapter in ("01", "02", "03", "04", "05", "06"):
        assert sum(chapter in event.chapters for event in history.TIMELINE) >= 3, chapter
    for key in ("reddy", "mips", "curve-circuits"):
        assert history.EVENTS[key].chapters == ("06",), key
    assert history.EVENTS["margin-maximization"].chapters == ("02", "06")


def test_chapter_status_is_the_readmes():
    rows = re.findall(r"^\| (\d\d) \| (.+?) \| .+ \| (\w+) \|$", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert {code: status for code, _, status in rows} == history.CHAPTER_STATUS
    assert history.chapter_label("02") == "02 Grokking"
    assert history.chapter_label("03") == "03 Backup behaviour"
    assert history.chapter_label("04") == "04 Sparse autoencoders and dictionary learning"
    assert history.chapter_label("05") == "05 Attention superposition"
    assert history.chapters_label(()) == "none"
    assert history.EVENTS["ioi"].chapters_text.startswith("01 Circuits, 03 Backup behaviour")


def test_the_notebook_has_no_stale_text():
    text = "".join("".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"])
    for stale in (
        "being written",
        "02-05",
        "no chapter practises",
        "no chapter traces",
        "(value 6)",
        "7s and some 9s",
        "history_graders",
        "graders.",
        "unit_activation",
        "history.AREAS",
        "deck_scores()",
        "Classify the papers",
        "Read the status table",
        "Put the events in order",
    ):
        assert stale not in text, stale


def test_slide_6_is_complete_and_verbatim(slides):
    lines = [line.strip() for line in slides[6].splitlines() if re.match(r"^\d{4}", line.strip())]
    assert [f"{year} - {text}" for year, text, _ in history.SLIDE_6] == lines
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
    quoted += [
        ("Leonard's taxonomy", option, (8,)) for options in history.LEONARD_TAXONOMY.values() for option in options
    ]
    quoted += [(f"class of {c['work']}", c["deck_text"], (c["slide"],)) for c in history.DECK_STATED_CLASSES]
    quoted += [("ternary paper", paper, (9,)) for paper in history.TERNARY_PAPERS]
    quoted += [("micro~macro", sense, (11,)) for sense in history.MICRO_MACRO]
    quoted += [(f"region of slide {n}", region, (n,)) for n, region in history.TERNARY_REGIONS.items()]
    quoted += [("school", text, (16,)) for school in history.SCHOOLS for text in school if text]
    quoted += [("circuit-analysis topic", topic, (16,)) for topic in history.CIRCUIT_ANALYSIS_TOPICS]
    quoted += [("status item", item, (17,)) for item in [*history.STATUS, history.STATUS_UNMARKED]]
    quoted += [("status legend", legend, (17,)) for legend in history.STATUS_LEGEND.values()]
    quoted += [("ladder", text, (82,)) for rung in history.LADDER for text in (rung["rung"], rung["detail"]) if text]
    quoted += [("north star", star["star"], (star["slide"],)) for star in history.NORTH_STARS]
    quoted += [("success", star["success"], (80,)) for star in history.NORTH_STARS if star["success"]]
    quoted += [("spotlight", paper, (81,)) for paper in history.SPOTLIGHT]
    quoted += [("success quiz claim", claim, (80,)) for claim in history.SUCCESS_QUIZ.values()]
    quoted += [("slide 6", f"{year} - {text}", (6,)) for year, text, _ in history.SLIDE_6]
    missing = [(what, text) for what, text, numbers in quoted if not _on_slides(text, slides, numbers)]
    assert not missing, missing
    assert len(quoted) > 130


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
    assert stars["Trace model outputs to the specific training data examples"]["practised_in"] == ("00", "06")
    proof = stars["Provide a mathematical proof of a learned circuit/subnetwork being optimal"]
    assert proof["practised_in"] == ("02", "06") and proof["how"].startswith("read, not proved: Morwani et al.")
    necessary = next(rung for rung in history.LADDER if rung["rung"] == "Necessary conditions")
    assert history.ladder_label(necessary) == "Necessary conditions: Could it have been anything else?"


def test_dates_of_slides_6_and_7():
    slide_6 = {
        "thiel-fellowship": 2012,
        "emails-bengio": 2013,
        "google-brain": 2014,
        "deepdream": 2015,
        "distill": 2016,
        "transformers": 2017,
        "lucid-openai": 2018,
        "vision-circuits": 2019,
        "circuits-thread": 2020,
        "anthropic": 2021,
    }
    for key, year in slide_6.items():
        assert history.EVENTS[key].start[0] == year, key
    slide_7 = {
        "circuits-thread": (2020, 3),
        "math-framework": (2021, 12),
        "induction-heads": (2022, 3),
        "solu": (2022, 6),
        "toy-models": (2022, 9),
        "towards-monosemanticity": (2023, 10),
        "january-update": (2024, 1),
    }
    for key, date in slide_7.items():
        assert history.EVENTS[key].start == date, key


def test_people_roles_and_status_are_the_deck():
    roles = {p.name: p.role for p in history.PEOPLE}
    assert roles["Nelson Elhage"] == roles["Ludwig Schubert"] == "Core infrastructure"
    assert roles["Shan Carter"] is roles["Gabriel Goh"] is roles["Chelsea Voss"] is None
    assert history.STATUS == {
        "Circuits": 3,
        "Grokking": 3,
        "Backup behavior": 0,
        "SAEs & Dictionary Learning": 2,
        "Feature Composition": 0,
        "Modularity": 0,
        "The training process": 0,
        "Attention Superposition": 3,
    }
    assert len(history.TERNARY_PAPERS) == 11 and set(history.TERNARY_PAPERS.values()) <= set(history.EVENTS)


# --------------------------------------------------------------------------------------------------------------
# Quizzes: they ask what the tables do not print; the solution's answers pass, also written differently; wrong
# answers are told how many (or which rule they break), never which answer is right
# --------------------------------------------------------------------------------------------------------------


def test_quizzes_are_not_lookups(answers):
    """No quiz question repeats the data that answers it: a job is not a role of slide 5 word for word, a project
    is not named by its item, a success's work is not named by its author or date, the classed works are not among
    those the deck classes, and no table of the chapter pairs a lettered work with its predecessor."""
    roles = {p.role for p in history.PEOPLE if p.role}
    assert not any(role in job for job in history.PEOPLE_QUIZ.values() for role in roles)
    for letter, project in history.PROJECTS_QUIZ.items():
        assert answers["projects"][letter].casefold() not in project.casefold(), letter
    for work in history.SUCCESS_WORKS.values():
        assert not re.search(r"Tegmark|Olah|Reddy|Morwani|20\d\d", work), work
        assert not any(claim.casefold() in work.casefold() for claim in history.SUCCESS_QUIZ.values())
    stated = {c["work"] for c in history.DECK_STATED_CLASSES}
    assert not any(history.EVENTS[key].title in stated for key in history.WHEN_QUIZ.values())
    # The answers are not all the same (a constant answer cannot pass) and use the options they must.
    for variable in ("people", "builds_on", "when_in_training", "projects", "successes"):
        assert len(set(answers[variable].values())) > 1, variable
    assert set(answers["people"].values()) <= set(history.PEOPLE_QUIZ_OPTIONS)
    assert set(answers["projects"].values()) == set(history.STATUS)
    assert sorted(answers["successes"].values()) == sorted(history.SUCCESS_QUIZ)
    assert set(answers["when_in_training"].values()) == set(history.WHEN_OPTIONS)
    assert set(answers["builds_on"]) == set(history.LINEAGE_QUESTIONS)


def test_people_quiz(answers, capsys):
    key = answers["people"]
    check.people(key)
    check.people({letter.lower(): name.upper() for letter, name in key.items()}, hidden="0a1b2c3d")
    assert capsys.readouterr().out.count("correct") == 2
    core = [letter for letter, name in key.items() if name in ("Ludwig Schubert", "Nelson Elhage")]
    swapped = dict(key, **{core[0]: key[core[1]], core[1]: key[core[0]]})  # the two "Core infrastructure"
    message = fails(check.people, swapped, match="2 of 6 jobs are matched to the wrong person")
    assert "group" in message and not any(name in message for name in key.values())
    fails(check.people, dict(key, B="Chris Olah"), match="Chris Olah, to whom slide 5 gives no role")
    fails(check.people, {letter: "Neel Nanda" for letter in key}, match="more than one job")
    fails(check.people, dict(key, A="Shan Carter"), match="no role")
    fails(check.people, dict(key, A="Dario Amodei"), match="job A: 'Dario Amodei' is not one of the options")
    fails(check.people, {k: v for k, v in key.items() if k != "F"}, match="missing F")
    fails(check.people, list(key.values()), match="give a dict")


def test_lineage_quiz(answers, capsys):
    key = answers["builds_on"]
    check.builds_on({letter.lower(): earlier.lower() for letter, earlier in key.items()})
    assert "correct" in capsys.readouterr().out
    start = {letter: history.EVENTS[key].start for letter, key in history.LINEAGE_QUIZ.items()}
    later = next(letter for letter in history.LINEAGE_QUIZ if start[letter] > start["B"])
    fails(check.builds_on, dict(key, B=later), match=r"1 of your answers \(B\) names a work that is not earlier")
    fails(check.builds_on, dict(key, D="D"), match="D cannot build on itself")
    # An earlier work, but not the one it builds on: told how many, not which.
    wrong = next(
        letter
        for letter in history.LINEAGE_QUIZ
        if letter != key["L"]
        and history.EVENTS[history.LINEAGE_QUIZ[letter]].start < history.EVENTS[history.LINEAGE_QUIZ["L"]].start
    )
    message = fails(check.builds_on, dict(key, L=wrong), match="1 of 6 works is linked to the wrong predecessor")
    assert "L" not in message.split(":", 1)[1].replace("Lucid", "")
    for constant in history.LINEAGE_QUIZ:
        with pytest.raises(CheckFailed):
            check.builds_on(dict.fromkeys(key, constant))


def test_when_in_training_quiz(answers, capsys):
    key = answers["when_in_training"]
    check.when_in_training({letter: cls.replace("-", " ").title() for letter, cls in key.items()})  # "Post Hoc"
    assert "correct" in capsys.readouterr().out
    intrinsic = next(letter for letter, cls in key.items() if cls == "intrinsic")
    fails(check.when_in_training, dict(key, **{intrinsic: "post-hoc"}), match="1 of 6 works has the wrong class")
    fails(check.when_in_training, dict(key, B="dev-interp"), match="work B: 'dev-interp' is not one of the options")
    for option in history.WHEN_OPTIONS:
        fails(check.when_in_training, dict.fromkeys(key, option), match="works have the wrong class")


def test_projects_quiz(answers, capsys):
    key = answers["projects"]
    check.projects({letter: item.lower() for letter, item in key.items()})
    assert "correct" in capsys.readouterr().out
    composition = [letter for letter, item in key.items() if item in ("Modularity", "Feature Composition")]
    swapped = dict(key, **{composition[0]: key[composition[1]], composition[1]: key[composition[0]]})
    fails(check.projects, swapped, match="2 of 8 projects are under the wrong item.*composition")
    fails(check.projects, dict(key, H="dev-interp"), match="project H: 'dev-interp' is not one of the options")
    for item in history.STATUS:
        fails(check.projects, dict.fromkeys(key, item), match="projects are under the wrong item")


def test_successes_quiz(answers, capsys):
    key = answers["successes"]
    check.successes({int(number): letter.lower() for number, letter in key.items()})  # numbers as ints are fine
    assert "correct" in capsys.readouterr().out
    fails(
        check.successes,
        dict(key, **{"3": key["4"], "4": key["3"]}),
        match="2 of 4 works are matched to the wrong claim",
    )
    fails(check.successes, dict(key, **{"4": key["3"]}), match=f"claim {key['3']} to more than one work")
    fails(check.successes, dict.fromkeys(key, "A"), match="more than one work")


def test_placement_checks_form_only():
    corners = ("micro", "macro", "developmental")
    spread = {paper: (i % 3 + 1, i % 4, 1) for i, paper in enumerate(history.TERNARY_PAPERS)}
    check.placement(corners, spread)
    check.placement(list(corners), {paper: list(w) for paper, w in spread.items()})  # lists are fine
    fails(check.placement, corners, {p: (1, 1, 1) for p in history.TERNARY_PAPERS}, match="all 11 works sit at")
    few = {paper: (1, 0, 0) if i % 2 else (0, 1, 0) for i, paper in enumerate(history.TERNARY_PAPERS)}
    fails(check.placement, corners, few, match="only 2 distinct positions")
    fails(check.placement, ("micro", "micro", "dev"), spread, match="different")
    fails(check.placement, corners, dict(list(spread.items())[1:]), match="1 missing")
    fails(check.placement, corners, dict(spread, **{"Representation Engineering": (1, -1, 0)}), match="non-negative")


# --------------------------------------------------------------------------------------------------------------
# Total variation
# --------------------------------------------------------------------------------------------------------------


def test_total_variation_check(capsys):
    check.total_variation(own(reference.total_variation))
    check.total_variation(
        lambda x: (
            torch.diff(x, dim=-2).square().flatten(1).sum(1)  # written differently
            + torch.diff(x, dim=-1).square().flatten(1).sum(1)
        ),
        hidden="5e6f7a8b",
    )
    assert capsys.readouterr().out.count("correct") == 2
    fails(check.total_variation, reference.total_variation, match="reference implementation")
    # Absolute instead of squared differences: the single bright pixel says so.
    fails(
        check.total_variation,
        lambda x: (
            (x[..., 1:, :] - x[..., :-1, :]).abs().sum((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().sum((1, 2, 3))
        ),
        match="0 except for a 2 in the middle .* is 8, which is off by 8",
    )
    # Vertical neighbours only: the image that changes only between columns says so.
    fails(
        check.total_variation,
        lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((1, 2, 3)),
        match="columns are constant .* is 0, which is off by 16",
    )
    # One number for the whole batch.
    fails(
        check.total_variation,
        lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum() + (x[..., 1:] - x[..., :-1]).pow(2).sum(),
        match=r"one value per image\) has shape \(\), expected \(2,\)",
    )
    # The first channel only.
    fails(check.total_variation, lambda x: reference.total_variation(x[:, :1]) * 1.0, match="second channel")
    # Hard-coded and input-ignoring answers.
    fails(check.total_variation, lambda x: torch.zeros(len(x)), match="rows are constant")
    fails(check.total_variation, lambda x: torch.full((len(x),), 16.0), match="constant images")

    def in_place(x):
        value = reference.total_variation(x)
        x.zero_()
        return value

    fails(check.total_variation, in_place, match="modified its input `x` in place")


# --------------------------------------------------------------------------------------------------------------
# Activation maximisation
# --------------------------------------------------------------------------------------------------------------


def _visualise_variant(
    tv_fn=None,
    descend=False,
    optimiser="adam",
    zero_grad=True,
    low=-1,
    copy_x0=True,
    penalty_sign=1.0,
    maximize=False,
    roll=True,
):
    """Activation maximisation written another way (``maximize=True`` lets Adam ascend), with one plausible mistake
    at a time."""
    tv_fn = tv_fn or reference.total_variation

    def visualise(activation_fn, x0, steps=100, lr=0.05, l2=0.0, tv=0.0, jitter=0, seed=0):
        generator = torch.Generator().manual_seed(seed)
        x = x0.detach().clone().requires_grad_(True) if copy_x0 else x0.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr, maximize=maximize) if optimiser == "adam" else torch.optim.SGD([x], lr=lr)
        for _ in range(steps):
            dy, dx = torch.randint(low * jitter, jitter + 1, (2,), generator=generator).tolist()
            seen = torch.roll(x, (dy, dx), (-2, -1)) if roll else x
            objective = activation_fn(seen) - penalty_sign * (l2 * x.pow(2).flatten(1).sum(1) + tv * tv_fn(x))
            if zero_grad:
                opt.zero_grad()
            (objective.sum() if (descend or maximize) else -objective.sum()).backward()
            opt.step()
        return x.detach()

    return visualise


def test_visualise_check_passes_right_answers(capsys):
    check.visualise(own(reference.visualise))
    check.visualise(_visualise_variant(maximize=True), hidden="1c2d3e4f")  # written differently, hidden inputs
    assert capsys.readouterr().out.count("correct") == 2
    fails(check.visualise, reference.visualise, match="reference implementation")


@pytest.mark.parametrize(
    "variant, match",
    [
        (dict(descend=True), r"moved by lr \*down\* the gradient"),
        (dict(optimiser="sgd"), r"moved by .* on average, where Adam's first step moves each pixel by about lr=0.1"),
        (
            dict(zero_grad=False),
            r"after 2 steps .* \(each step uses that step's gradient alone\) .* at image \d, "
            r"channel 0, row \d, col \d",
        ),
        (dict(low=0), "spread over every shift from -2 to 2"),
        (dict(roll=False), "spread over every shift"),
        (dict(penalty_sign=-1.0), "with l2=0.5 the images' L2 norm should be much smaller"),
        (dict(copy_x0=False), "modified its input `x0` in place"),
    ],
    ids=["descends", "sgd", "no-zero-grad", "positive-shifts-only", "no-roll", "penalty-sign", "in-place"],
)
def test_visualise_check_says_what_is_wrong(variant, match):
    fails(check.visualise, _visualise_variant(**variant), match=match)


def test_visualise_check_refuses_hard_coded_answers_and_names_the_earlier_exercise():
    fails(check.visualise, lambda fn, x0, **settings: x0.clone(), match="have not changed")
    fails(check.visualise, lambda fn, x0, **settings: torch.zeros(3, 1, 8, 8), match="shape|steps=0")
    # A visualise that calls the student's own total_variation, which has not passed: the failure says so.
    total_variation = exercise(lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((1, 2, 3)))
    message = fails(check.visualise, _visualise_variant(tv_fn=total_variation), match="tv")
    assert "builds on" in message


def test_visualise_beats_random_inputs_on_the_chapter_cnn_shape():
    """The reference's property the chapter relies on: optimised images beat random ones of the same norm."""
    model = check.random_cnn((8, 16), 32, 8, seed=5)
    unit = history.UnitActivation(model, "logits", torch.arange(4))
    x0 = 0.1 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = reference.visualise(unit, x0, steps=60, lr=0.1, l2=0.01, tv=0.0, jitter=1)
    randoms = check.same_norm_random(x, 64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (unit(x) > torch.stack([unit(r) for r in randoms]).max(0).values).all()


# --------------------------------------------------------------------------------------------------------------
# Top activating examples
# --------------------------------------------------------------------------------------------------------------


def test_top_activating_examples_check(capsys):
    check.top_activating_examples(own(reference.top_activating_examples))

    def with_python_sorted(activation_fn, images, k):  # written differently
        with torch.no_grad():
            values = activation_fn(images).tolist()
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
        return torch.tensor([values[i] for i in order]), torch.tensor(order)

    check.top_activating_examples(with_python_sorted, hidden="9a8b7c6d")
    assert capsys.readouterr().out.count("correct") == 2

    def topk(activation_fn, images, k):
        with torch.no_grad():
            return torch.topk(activation_fn(images), k)

    def ascending(activation_fn, images, k):
        with torch.no_grad():
            activations = activation_fn(images)
        order = torch.sort(activations, stable=True).indices[-k:]
        return activations[order], order

    def bottom_k(activation_fn, images, k):
        with torch.no_grad():
            activations = activation_fn(images)
        order = torch.sort(activations, stable=True).indices[:k].flip(0)
        return activations[order], order

    def later_index_first(activation_fn, images, k):
        values = activation_fn(images).detach()
        order = sorted(range(len(images)), key=lambda i: (-float(values[i]), -i))[:k]
        return values[order], torch.tensor(order)

    fails(
        check.top_activating_examples,
        topk,
        match="ranks hold another image than they should: equal activations go to the lower index first",
    )
    fails(check.top_activating_examples, ascending, match="not in descending order")
    fails(check.top_activating_examples, bottom_k, match="image 0, which you left out, activates the unit more")
    fails(check.top_activating_examples, later_index_first, match="lower index first")
    fails(check.top_activating_examples, lambda fn, images, k: torch.arange(k), match="return a pair")
    fails(
        check.top_activating_examples,
        lambda fn, images, k: (torch.ones(k), torch.arange(k)),
        match="activations of the images you return",
    )  # hard-coded
    fails(check.top_activating_examples, reference.top_activating_examples, match="reference implementation")


# --------------------------------------------------------------------------------------------------------------
# Training-data attribution
# --------------------------------------------------------------------------------------------------------------


def _per_example_gradients(model, x, y, layer="out", labels=None):
    """Per-example gradients by autograd, one example at a time, of ``layer``'s weight and bias; ``labels``
    overrides ``y`` (a plausible mistake: the predicted labels)."""
    rows = []
    for i in range(len(x)):
        module = getattr(model, layer)
        weight = module.weight.detach().clone().requires_grad_(True)
        bias = module.bias.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            _, cache = model.run_with_cache(x[i : i + 1])
            if layer == "out":
                logits = F.linear(cache["fc"], weight, bias)
            else:  # the hidden layer's parameters instead of the final layer's
                pooled = F.max_pool2d(cache["conv2"], 2).flatten(1)
                logits = model.out(F.relu(F.linear(pooled, weight, bias)))
            loss = F.cross_entropy(logits, (y if labels is None else labels)[i : i + 1])
            grad_weight, grad_bias = torch.autograd.grad(loss, [weight, bias])
        rows.append(torch.cat([grad_weight.flatten(), grad_bias]))
    return torch.stack(rows)


def _tracin_by_autograd(model, test_x, test_y, train_x, train_y):
    return _per_example_gradients(model, test_x, test_y) @ _per_example_gradients(model, train_x, train_y).T


def test_tracin_reference_equals_autograd_and_leaves_the_model_alone():
    model = check.random_cnn((8, 16), 32, 8, seed=7)
    generator = torch.Generator().manual_seed(0)
    test_x, train_x = torch.randn(3, 1, 8, 8, generator=generator), torch.randn(20, 1, 8, 8, generator=generator)
    test_y, train_y = torch.randint(0, 10, (3,), generator=generator), torch.randint(0, 10, (20,), generator=generator)
    before = [p.clone() for p in model.parameters()]
    scores = reference.tracin_scores(model, test_x, test_y, train_x, train_y)
    assert torch.allclose(scores, _tracin_by_autograd(model, test_x, test_y, train_x, train_y), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tracin_check(capsys):
    check.tracin_scores(own(reference.tracin_scores))
    check.tracin_scores(_tracin_by_autograd, hidden="2b3c4d5e")  # written differently, hidden inputs
    assert capsys.readouterr().out.count("correct") == 2
    fails(check.tracin_scores, reference.tracin_scores, match="reference implementation")

    def closed_form(model, x, y, bias=True, error_of=lambda logits: logits.softmax(-1)):
        with torch.no_grad():
            logits, cache = model.run_with_cache(x)
            error = error_of(logits) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)
            weight = (error[:, :, None] * cache["fc"][:, None, :]).flatten(1)
            return torch.cat([weight, error], -1) if bias else weight

    def weight_only(model, test_x, test_y, train_x, train_y):
        return closed_form(model, test_x, test_y, bias=False) @ closed_form(model, train_x, train_y, bias=False).T

    def logits_not_probabilities(model, test_x, test_y, train_x, train_y):
        identity = lambda logits: logits  # noqa: E731
        return (
            closed_form(model, test_x, test_y, error_of=identity)
            @ closed_form(model, train_x, train_y, error_of=identity).T
        )

    def cosine(model, test_x, test_y, train_x, train_y):
        return (
            F.normalize(closed_form(model, test_x, test_y), dim=-1)
            @ F.normalize(closed_form(model, train_x, train_y), dim=-1).T
        )

    def hidden_layer(model, test_x, test_y, train_x, train_y):
        return (
            _per_example_gradients(model, test_x, test_y, layer="fc")
            @ _per_example_gradients(model, train_x, train_y, layer="fc").T
        )

    def negated_test_gradient(model, test_x, test_y, train_x, train_y):
        return -_tracin_by_autograd(model, test_x, test_y, train_x, train_y)

    def ignores_train_labels(model, test_x, test_y, train_x, train_y):
        return _tracin_by_autograd(model, test_x, test_y, train_x, torch.zeros_like(train_y))

    def mutating(model, test_x, test_y, train_x, train_y):
        result = _tracin_by_autograd(model, test_x, test_y, train_x, train_y)
        with torch.no_grad():
            model.out.bias.add_(1.0)
        return result

    rows = r"sums of your rows .* are wrong; the largest error is .*, at test example \d"
    for wrong in (weight_only, logits_not_probabilities, cosine, hidden_layer, negated_test_gradient):
        fails(check.tracin_scores, wrong, match=rows)
    fails(check.tracin_scores, ignores_train_labels, match=r"sums of your (rows|columns)")
    fails(check.tracin_scores, mutating, match="changed the model's parameters")
    fails(check.tracin_scores, lambda m, a, b, c, d: torch.zeros(len(a), len(c)), match=rows)  # hard-coded
    fails(check.tracin_scores, lambda m, a, b, c, d: _tracin_by_autograd(m, a, b, c, d).T, match="shape")
    fails(check.tracin_scores, lambda m, a, b, c, d: _tracin_by_autograd(m, a, b, c, d).tolist(), match="torch.Tensor")


# --------------------------------------------------------------------------------------------------------------
# Point scores
# --------------------------------------------------------------------------------------------------------------

KEYS = research.SCORE_KEYS


def _pick(my_scores, deck_scores, weight_mine=0.5, tie_rule=True, none_as_zero=False):
    """pick_area written another way (a sort key instead of a loop), optionally with a mistake."""
    combined = {}
    for area, mine in my_scores.items():
        deck = deck_scores.get(area) or {}
        combined[area] = {}
        for key in KEYS:
            theirs = deck.get(key)
            if theirs is None and none_as_zero and area in deck_scores:
                theirs = 0
            combined[area][key] = mine[key] if theirs is None else weight_mine * mine[key] + (1 - weight_mine) * theirs
    values = {area: c["low_hanging_fruit"] + c["excitement"] - c["difficulty"] for area, c in combined.items()}
    if not tie_rule:
        return max(values, key=values.get), values
    order = list(my_scores)
    best = min(order, key=lambda a: (-round(values[a], 6), -round(combined[a]["excitement"], 6), order.index(a)))
    return best, values


def test_pick_area_check(capsys):
    check.pick_area(own(reference.pick_area))
    check.pick_area(_pick, hidden="3c4d5e6f")  # written differently, hidden tables
    assert capsys.readouterr().out.count("correct") == 2
    fails(check.pick_area, reference.pick_area, match="reference implementation")
    fails(
        check.pick_area,
        lambda m, d, w=0.5: _pick(m, d, w, tie_rule=False),
        match="'saes' has the larger excitement, but you pick 'grokking'",
    )
    fails(check.pick_area, lambda m, d, w=0.5: _pick(m, {}, w), match="value of 'grokking' .*both scores given")
    fails(check.pick_area, lambda m, d, w=0.5: _pick(m, d, 1 - w), match=r"value of 'grokking' \(weight_mine=1")
    fails(
        check.pick_area,
        lambda m, d, w=0.5: _pick(m, d, w, none_as_zero=True),
        match=r"value of 'grokking' \(the deck gives no excitement \(None\)",
    )

    def with_deck_only_areas(m, d, w=0.5):
        best, values = _pick(m, d, w)
        return best, dict(values, **{area: 0.0 for area in d if area not in m})

    fails(check.pick_area, with_deck_only_areas, match=r"unexpected \['circuits'\] \(areas only the deck scores")

    def mutating(m, d, w=0.5):
        result = _pick(m, d, w)
        d.clear()
        return result

    fails(check.pick_area, mutating, match="modified the score tables")
    fails(check.pick_area, lambda m, d, w=0.5: ("grokking", {"grokking": 7.0}), match="value of 'grokking'")
    fails(check.pick_area, lambda m, d, w=0.5: next(iter(m)), match="return a pair")


def test_my_scores_check(capsys):
    good = {
        area: {"low_hanging_fruit": 5, "excitement": 5, "difficulty": 5} for area in ("circuits", "grokking", "saes")
    }
    before = copy.deepcopy(good)
    check.my_scores(good)
    assert "correct (3 areas" in capsys.readouterr().out and good == before
    check.my_scores(dict(good, modularity={"low_hanging_fruit": 0, "excitement": 10, "difficulty": 7}))
    fails(check.my_scores, {k: v for k, v in good.items() if k != "saes"}, match=r"missing \['saes'\]")
    fails(
        check.my_scores,
        dict(good, saes={"low_hanging_fruit": 11, "excitement": 5, "difficulty": 5}),
        match="'saes'.*scores go from 0 to 10",
    )
    fails(
        check.my_scores,
        dict(good, saes={"low_hanging_fruit": None, "excitement": 5, "difficulty": 5}),
        match="'saes'.*is None",
    )
    fails(check.my_scores, [good], match="dict")
    message = fails(check.my_scores, dict(good, sae=good["saes"]), match=r"unknown area name\(s\) \['sae'\]")
    assert all(area in message for area in research.AREAS)


# --------------------------------------------------------------------------------------------------------------
# The digits CNN, its training, and what travels to a graded kernel
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
        "conv1": (5, 8, 8, 8),
        "conv2": (5, 16, 8, 8),
        "fc": (5, 32),
        "logits": (5, 10),
    }
    assert torch.equal(logits, cache["logits"])
    with pytest.raises(ValueError, match="layer"):
        history.UnitActivation(a, "conv3", 0)
    per_image = history.UnitActivation(a, "logits", torch.tensor([1, 2, 3, 4, 5]))(data.test_x[:5])
    assert torch.equal(per_image, logits[torch.arange(5), torch.tensor([1, 2, 3, 4, 5])])
    assert torch.equal(history.UnitActivation(a, "conv2", 3)(data.test_x[:5]), cache["conv2"][:, 3].mean((-2, -1)))
    assert torch.equal(history.Pixel(2, 5)(data.test_x[:5]), data.test_x[:5, 0, 2, 5])


def test_training_uses_the_course_loop_and_is_deterministic():
    spec = history.DigitsTraining(epochs=2)
    first, info = history.train_digits_cnn(spec=spec, progress=False)
    second, _ = history.train_digits_cnn(spec=spec, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))
    per_epoch = spec.steps_per_epoch(history.DIGITS_N_TRAIN)
    assert info["steps"] == 2 * per_epoch and [row["step"] for row in info["log"]] == [0, per_epoch, 2 * per_epoch - 1]
    assert info["metrics"]["test_accuracy"] > 0.8 and not first.training


@pytest.mark.slow
def test_the_chapter_cnn_reaches_the_accuracy_the_chapter_prints():
    _, info = history.train_digits_cnn(progress=False)
    assert info["metrics"]["test_accuracy"] > 0.95 and info["metrics"]["train_accuracy"] > 0.97


def test_what_the_checks_hand_to_a_student_function_travels_to_a_kernel():
    """Graded notebooks run the student's function in a sandboxed kernel: the CNNs and units the checks pass must
    survive the trip (pickled, rebuilt from the library) and compute the same there."""
    model = check.random_cnn((4, 6), 12, 6, seed=1)
    units = history.UnitActivation(model, "conv2", torch.tensor([0, 5]))
    x = torch.randn(2, 1, 6, 6)
    (moved_units, pixel, moved_model), _ = wire.load_call(wire.dump_call((units, history.Pixel(1, 2), model), {}))
    assert torch.equal(moved_units(x), units(x)) and torch.equal(pixel(x), x[:, 0, 1, 2])
    assert all(torch.equal(p, q) for p, q in zip(moved_model.parameters(), model.parameters()))
    assert type(moved_units).__module__ == "mechinterp_course.history.digits"


# --------------------------------------------------------------------------------------------------------------
# The notebook's demo cells, in the states a student can leave them in
# --------------------------------------------------------------------------------------------------------------


def _cell_source(grade_id: str) -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    [cell] = [c for c in cells if c["metadata"]["nbgrader"]["grade_id"] == grade_id]
    return "".join(cell["source"])


def _run_cell(grade_id: str, namespace: dict) -> dict:
    import pandas as pd

    namespace = {"history": history, "research": research, "plots": plots, "pd": pd, "torch": torch, **namespace}
    exec(compile(_cell_source(grade_id), grade_id, "exec"), namespace)
    return namespace


def _unfinished_pick_area():
    """The student's pick_area as the released notebook has it: declared, not written yet."""

    @exercise
    def pick_area(my_scores, deck_scores, weight_mine=0.5):
        raise NotImplementedError()

    return pick_area


def test_pick_demo_skips_with_a_message_while_the_scores_are_not_filled_in(capsys):
    deck = {area: research.deck_scores(area) for area in research.AREAS}
    blank = {
        area: {"low_hanging_fruit": None, "excitement": None, "difficulty": None}
        for area in ["circuits", "grokking", "saes"]
    }  # the student version's starting point
    for my_scores in (
        blank,
        dict(blank, circuits={"low_hanging_fruit": 3, "excitement": 4, "difficulty": 4}),
        {"sae": {"low_hanging_fruit": 3, "excitement": 4, "difficulty": 4}},
        {},
        None,
    ):
        _run_cell("code-58", {"my_scores": my_scores, "pick_area": _unfinished_pick_area(), "DECK_SCORES": deck})
        assert capsys.readouterr().out.startswith("Skipped: fill in every score of my_scores in Exercise 6.1 first")
    filled = {
        area: {"low_hanging_fruit": 5, "excitement": 6, "difficulty": 4} for area in ["circuits", "grokking", "saes"]
    }
    _run_cell("code-58", {"my_scores": filled, "pick_area": _unfinished_pick_area(), "DECK_SCORES": deck})
    out = capsys.readouterr().out
    best = reference.pick_area(filled, deck)[0]
    assert "has not passed its check yet, so this cell uses the course's reference" in out
    assert f"Pick: {research.AREAS[best].title}." in out


def test_project_status_demo_reads_the_students_answers(answers, capsys):
    _run_cell("code-project-status", {"projects": dict.fromkeys(history.PROJECTS_QUIZ)})
    assert capsys.readouterr().out.startswith("Skipped: give every project of Exercise 2.4 an item")
    _run_cell("code-project-status", {"projects": {k: v.lower() for k, v in answers["projects"].items()}})
    out = capsys.readouterr().out
    untouched = sum(history.STATUS[item] == 0 for item in answers["projects"].values())
    assert f"{untouched} of {len(history.PROJECTS_QUIZ)} projects fall under items slide 17 marks untouched" in out


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
        assert namespace["saved_scores"] == {} and path.read_text() == content


def test_every_exercise_says_why_it_matters_and_how_it_is_checked():
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        meta = cell["metadata"]["nbgrader"]
        if not meta.get("solution"):
            continue
        j = max(
            k
            for k in range(i)
            if cells[k]["cell_type"] == "markdown" and not cells[k]["metadata"]["nbgrader"].get("solution")
        )
        text = " ".join("".join(cells[j]["source"]).split())
        assert "Why it matters" in text, (meta["grade_id"], text[:80])
        assert re.search(r"How it is (checked|graded)", text), (meta["grade_id"], text[:80])


def test_cells_fit_in_100_columns():
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        long = [line for line in cell.source.splitlines() if len(line) > 100]
        assert not long, (cell.metadata["nbgrader"]["grade_id"], long[:1])
