"""research: the deck's scores and advice match the deck's text; students' scores validate, save, load and tabulate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mechinterp_course import history, research

#: Tests run from a clean clone with the shared folder beside the repository (as CI lays it out).
DECK = Path(__file__).resolve().parents[2] / "shared" / "deck" / "mechinterp-deck.txt"
GOOD = {"low_hanging_fruit": 3, "excitement": 7, "difficulty": 5}


@pytest.fixture(scope="module")
def deck_text():
    if not DECK.exists():
        pytest.skip(f"the deck's text is not on this machine ({DECK})")
    return DECK.read_text(encoding="utf-8")


def _slide(deck_text: str, number: int) -> str:
    """The text of one slide ("N of 84" up to the next slide's header)."""
    match = re.search(rf"^{number} of 84\n(.*?)(?=^\d+ of 84\n|\Z)", deck_text, re.S | re.M)
    assert match, f"slide {number} not found"
    return match.group(1)


# The deck's data ---------------------------------------------------------------------------------------------


def test_one_table_of_areas():
    """research.AREAS is the course's only table of the deck's areas: chapter 00 reads it (no copy of its own), and
    every chapter it names exists."""
    assert not hasattr(history, "AREAS") and not hasattr(history, "deck_scores")
    for key, info in research.AREAS.items():
        assert info.key == key and info.title.strip()
        assert info.chapter is None or info.chapter in history.CHAPTERS, key
        first, last = info.slides
        assert 19 <= first <= last <= 78, key
        assert set(info.scores.as_dict()) == set(research.SCORE_KEYS)
        assert research.deck_scores(key) == info.scores.as_dict()
    assert history.scored_areas() == [key for key, info in research.AREAS.items() if info.scores.given]


def test_the_three_scored_areas_hold_the_deck_values():
    """Hard-checked against the deck by hand: slides 25, 31 and 40."""
    assert research.AREAS["circuits"].scores.as_dict() == {"low_hanging_fruit": 2, "excitement": 2, "difficulty": 4}
    assert research.AREAS["grokking"].scores.as_dict() == {"low_hanging_fruit": 6, "excitement": 4, "difficulty": 5}
    assert research.AREAS["saes"].scores.as_dict() == {"low_hanging_fruit": 10, "excitement": 6, "difficulty": 9}
    unscored = [area for area, info in research.AREAS.items() if not info.scores.given]
    assert unscored == ["backup", "feature-composition", "modularity", "training-process", "attention-superposition"]


def test_scores_are_read_from_the_quoted_slide(deck_text):
    for area, info in research.AREAS.items():
        if info.score_quote is None:
            assert info.score_slide is None
            continue
        assert info.score_quote in _slide(deck_text, info.score_slide), area
        numbers = [int(n) for n in re.findall(r"(\d+)/10", info.score_quote)]
        assert numbers == [info.scores.as_dict()[key] for key in research.SCORE_KEYS], area
        first, last = info.slides
        assert first <= info.score_slide <= last


def test_unscored_areas_have_no_score_on_their_slides(deck_text):
    for area, info in research.AREAS.items():
        if info.score_quote is None:
            first, last = info.slides
            text = "".join(_slide(deck_text, n) for n in range(first, last + 1))
            assert not re.search(r"\d+/10", text), f"{area}: the deck scores it after all"


def test_quotations_are_verbatim(deck_text):
    for area, info in research.AREAS.items():
        first, last = info.slides
        slides = "".join(_slide(deck_text, n) for n in range(first, last + 1))
        for field in ("summary", "remark"):
            if getattr(info, field) is not None:
                assert getattr(info, field) in slides, f"{area} {field}: {getattr(info, field)!r}"
        for line in (info.advice or "").splitlines():
            assert line in slides, f"{area} advice: {line!r}"
        for work in info.main_work:
            assert work in slides, f"{area} main work: {work!r}"


def test_advice_where_the_deck_gives_it():
    assert research.AREAS["circuits"].advice.startswith("We’re done doing random circuit analyses")
    assert "counterexamples" in research.AREAS["circuits"].advice
    assert research.AREAS["circuits"].remark == "Far too many people"
    assert "counterexamples in topology" in research.AREAS["grokking"].advice
    assert "Constructing counterintuitive toy models is the most useful work" in research.AREAS["grokking"].advice
    assert len(research.AREAS["saes"].advice.splitlines()) == 4
    for area in ("backup", "feature-composition", "modularity", "training-process", "attention-superposition"):
        assert research.AREAS[area].advice is None


def test_advice_text_for_printing():
    text = research.advice("circuits")
    assert "Circuit analysis" in text and "slides 19-27" in text
    assert "counterexamples" in text and "Far too many people" in text
    assert research.advice("modularity") == "The deck gives no research advice for Modularity (slide 46)."
    with pytest.raises(ValueError, match="known areas are: circuits, grokking"):
        research.advice("circuit")


def test_unknown_area_suggests_the_close_name():
    with pytest.raises(ValueError, match="Did you mean 'saes'"):
        research.deck_scores("sae")


# validate_scores --------------------------------------------------------------------------------------------


def test_validate_accepts_and_normalises():
    assert research.validate_scores(GOOD) == GOOD
    assert list(research.validate_scores({"difficulty": 5, "excitement": 7, "low_hanging_fruit": 3})) == list(
        research.SCORE_KEYS
    )
    odd_ints = {"low_hanging_fruit": np.int64(0), "excitement": torch.tensor(10), "difficulty": 7.0}
    result = research.validate_scores(odd_ints)
    assert result == {"low_hanging_fruit": 0, "excitement": 10, "difficulty": 7}
    assert all(type(v) is int for v in result.values())


@pytest.mark.parametrize(
    "value, error, message",
    [
        (None, ValueError, "'excitement' is None: replace the None with your score from 0 to 10"),
        (True, TypeError, "'excitement' is True.*not a bool"),
        (np.bool_(False), TypeError, "'excitement'.*not a bool"),
        (11, ValueError, "'excitement' is 11: scores go from 0 to 10"),
        (-1, ValueError, "'excitement' is -1"),
        (7.5, ValueError, "'excitement' is 7.5: scores are whole numbers"),
        ("7", TypeError, "'excitement' is '7' \\(str\\)"),
    ],
)
def test_validate_rejects_bad_values(value, error, message):
    with pytest.raises(error, match=message):
        research.validate_scores({**GOOD, "excitement": value})


def test_validate_rejects_bad_shapes():
    with pytest.raises(ValueError, match="missing score 'difficulty'"):
        research.validate_scores({"low_hanging_fruit": 3, "excitement": 7})
    with pytest.raises(ValueError, match="unknown score key 'excitment' \\(did you mean 'excitement'\\?\\)"):
        research.validate_scores({**GOOD, "excitment": 3})
    with pytest.raises(ValueError, match="unknown score key 'fun'"):
        research.validate_scores({**GOOD, "fun": 3})
    with pytest.raises(TypeError, match="should be a dict"):
        research.validate_scores([3, 7, 5])


# Saving and loading -----------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "scores.json"
    assert research.load_scores(path) == {}
    assert research.save_scores("circuits", GOOD, path) == path
    research.save_scores("saes", {"low_hanging_fruit": 9.0, "excitement": 8, "difficulty": 8}, path)
    research.save_scores("circuits", {**GOOD, "difficulty": 6}, path)  # overwrites circuits only
    assert research.load_scores(path) == {
        "circuits": {**GOOD, "difficulty": 6},
        "saes": {"low_hanging_fruit": 9, "excitement": 8, "difficulty": 8},
    }
    assert json.loads(path.read_text())["saes"]["low_hanging_fruit"] == 9
    assert not list(tmp_path.glob("*.partial"))


def test_save_refuses_bad_input_and_leaves_the_file(tmp_path):
    path = tmp_path / "scores.json"
    research.save_scores("grokking", GOOD, path)
    before = path.read_text()
    with pytest.raises(ValueError, match="'difficulty' is None"):
        research.save_scores("grokking", {**GOOD, "difficulty": None}, path)
    with pytest.raises(ValueError, match="unknown area 'grok'"):
        research.save_scores("grok", GOOD, path)
    assert path.read_text() == before


def test_default_path_is_cwd_then_env(tmp_path, monkeypatch):
    monkeypatch.delenv(research.SCORES_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert research.scores_path() == tmp_path / "mechinterp_scores.json"
    research.save_scores("backup", GOOD)
    assert (tmp_path / "mechinterp_scores.json").exists()
    elsewhere = tmp_path / "sub" / "mine.json"
    monkeypatch.setenv(research.SCORES_ENV_VAR, str(elsewhere))
    assert research.scores_path() == elsewhere
    research.save_scores("modularity", GOOD)
    assert research.load_scores() == {"modularity": GOOD}
    assert research.load_scores(tmp_path / "mechinterp_scores.json") == {"backup": GOOD}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "should be a JSON object"),
        ('{"circuits": {"low_hanging_fruit": 3, "excitement": 12, "difficulty": 1}}', "'circuits' are invalid"),
    ],
)
def test_corrupt_file_is_a_clear_error_not_silently_empty(tmp_path, content, message):
    path = tmp_path / "scores.json"
    path.write_text(content)
    with pytest.raises(research.ScoresFileError, match=message) as info:
        research.load_scores(path)
    assert str(path) in str(info.value)
    with pytest.raises(research.ScoresFileError):
        research.save_scores("circuits", GOOD, path)
    assert path.read_text() == content  # never overwritten


# The widget ------------------------------------------------------------------------------------------------


def test_widget_starts_in_the_middle_and_shows_the_deck(tmp_path):
    import ipywidgets as widgets

    form = research.score_widget("circuits", path=tmp_path / "s.json")
    assert isinstance(form, widgets.VBox)
    assert list(form.sliders) == list(research.SCORE_KEYS)
    for slider in form.sliders.values():
        assert (slider.min, slider.max, slider.value) == (0, 10, research.SLIDER_START)
    labels = [child.children[1].value for child in form.children if isinstance(child, widgets.HBox)]
    assert labels == ["deck: 2/10", "deck: 2/10", "deck: 4/10"]
    unscored = research.score_widget("modularity", path=tmp_path / "s.json")
    assert [c.children[1].value for c in unscored.children if isinstance(c, widgets.HBox)] == ["deck: —"] * 3


def test_widget_save_writes_the_file_and_reopens_with_the_saved_values(tmp_path):
    path = tmp_path / "s.json"
    form = research.score_widget("grokking", path=path)
    form.sliders["low_hanging_fruit"].value = 8
    form.sliders["excitement"].value = 1
    form.sliders["difficulty"].value = 10
    form.save_button.click()
    expected = {"low_hanging_fruit": 8, "excitement": 1, "difficulty": 10}
    assert research.load_scores(path) == {"grokking": expected}
    assert str(path) in form.output.outputs[-1]["text"]
    reopened = research.score_widget("grokking", path=path)
    assert {key: slider.value for key, slider in reopened.sliders.items()} == expected


def test_widget_reports_a_corrupt_file_instead_of_overwriting_it(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{oops")
    form = research.score_widget("saes", path=path)
    form.save_button.click()
    assert form.output.outputs[-1]["name"] == "stderr"
    assert "not saved" in form.output.outputs[-1]["text"]
    assert path.read_text() == "{oops"


def test_widget_rejects_unknown_area_and_explains_missing_ipywidgets(monkeypatch):
    with pytest.raises(ValueError, match="known areas are"):
        research.score_widget("nope")
    import builtins

    real_import = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError("No module named 'ipywidgets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    with pytest.raises(ImportError, match="score_widget needs ipywidgets"):
        research.score_widget("circuits")


# The table -------------------------------------------------------------------------------------------------


def test_table_for_one_area_before_anything_is_filled_in():
    table = research.score_table("circuits", {"low_hanging_fruit": None, "excitement": None, "difficulty": None})
    assert list(table.index) == ["circuits"]
    assert [table.loc["circuits", ("deck", key)] for key in research.SCORE_KEYS] == [2, 2, 4]
    assert [table.loc["circuits", ("you", key)] for key in research.SCORE_KEYS] == ["", "", ""]
    assert [table.loc["circuits", ("you - deck", key)] for key in research.SCORE_KEYS] == ["", "", ""]
    assert list(research.score_table("circuits", None).loc["circuits", "you"]) == ["", "", ""]


def test_table_for_many_areas_with_partial_scores():
    mine = {
        "circuits": {"low_hanging_fruit": 3, "excitement": None, "difficulty": 5},
        "backup": {"low_hanging_fruit": 4, "excitement": 4, "difficulty": 4},
    }
    table = research.score_table(list(research.AREAS), mine)
    assert list(table.index) == list(research.AREAS)
    assert table.loc["circuits", ("you - deck", "low_hanging_fruit")] == 1
    assert table.loc["circuits", ("you - deck", "difficulty")] == 1
    assert table.loc["circuits", ("you - deck", "excitement")] == ""
    assert table.loc["backup", ("deck", "excitement")] == "—"
    assert table.loc["backup", ("you", "excitement")] == 4
    assert table.loc["backup", ("you - deck", "excitement")] == ""
    assert table.loc["saes", ("you", "difficulty")] == ""  # not scored by the student at all
    assert table.columns.get_level_values(0).unique().tolist() == ["deck", "you", "you - deck"]
    assert "<table" in table._repr_html_()


def test_table_rejects_unknown_areas():
    with pytest.raises(ValueError, match="unknown area 'sae'"):
        research.score_table(["circuits", "sae"], {})
