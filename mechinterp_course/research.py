"""The deck's point scores and research advice for every big area, and the widget students record their own in.

The talk ("Mechanistic Interpretability: the big ideas, schools of thought, and areas people care about and why")
gives each big area (slides 19-78) a point score out of 10 for three questions (slide 2):

- ``low_hanging_fruit``: how many low-hanging fruit remain? (the deck's "LHF")
- ``excitement``: how excited am I about work in this area?
- ``difficulty``: how hard would it be to pull it off successfully?

and, for some areas, advice on how to choose a good research direction. :data:`AREAS` holds one frozen :class:`Area`
per big area, checked line by line against the deck's text: only three areas are scored (circuits, slide 25;
grokking, slide 31; SAEs, slide 40); every other score is ``None`` rather than a guess. Quotations keep the deck's own
spelling and typography.

This is the course's one table of areas: chapter 00's maps, every chapter's last section and the score widget read
it. It imports nothing from the rest of the course at import time, so that any module can import it.

Students record their own scores with :func:`score_widget` (sliders and a Save button) or in a dict checked by
:func:`validate_scores`; :func:`score_table` sets theirs beside the deck's. Saved scores live in a small JSON file,
``mechinterp_scores.json`` in the current directory unless ``$MECHINTERP_SCORES`` or a ``path=`` says otherwise.
"""

from __future__ import annotations

import difflib
import json
import numbers
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCORE_KEYS = ("low_hanging_fruit", "excitement", "difficulty")
#: How the deck asks each question (slide 2), for labels and tooltips.
SCORE_QUESTIONS = {
    "low_hanging_fruit": "How many low hanging fruit remain?",
    "excitement": "How excited am I about work in this area?",
    "difficulty": "How hard would it be to pull it off successfully?",
}
#: Short labels for tables and sliders.
SCORE_LABELS = {"low_hanging_fruit": "low-hanging fruit", "excitement": "excitement", "difficulty": "difficulty"}
MIN_SCORE = 0
MAX_SCORE = 10
#: Where a slider starts when the student has saved nothing for the area yet: the middle, not the deck's score, so
#: that the student's first judgement is their own (the deck's score is shown beside the slider).
SLIDER_START = 5

DEFAULT_SCORES_FILE = "mechinterp_scores.json"
SCORES_ENV_VAR = "MECHINTERP_SCORES"
#: How a missing deck score is shown in tables and beside the sliders.
MISSING = "\u2014"


@dataclass(frozen=True)
class Scores:
    """The deck's three point scores for an area, out of 10; ``None`` where the deck gives none."""

    low_hanging_fruit: int | None
    excitement: int | None
    difficulty: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {key: getattr(self, key) for key in SCORE_KEYS}

    @property
    def given(self) -> bool:
        return any(value is not None for value in self.as_dict().values())


@dataclass(frozen=True)
class Area:
    """One of the deck's big areas (slides 19-78), under the course's short name ``key``.

    - ``scores``: the deck's point scores; ``score_quote`` / ``score_slide``: the line they were read from, verbatim,
      and its first slide (the line repeats on the area's following slides);
    - ``summary``: the deck's one-line background or main idea; ``advice``: its "how to choose a good research
      direction", verbatim, one line per bullet; ``remark``: its closing aside (each ``None`` where it has none);
    - ``main_work``: the work the deck lists for the area, verbatim (for circuits: the circuit analyses done on "big
      models"; for attention superposition: the timeline of slides 72-78);
    - ``chapter``: the course chapter that teaches the area (``None`` where no chapter does).
    """

    key: str
    title: str
    slides: tuple[int, int]
    chapter: str | None
    scores: Scores
    score_quote: str | None
    score_slide: int | None
    summary: str | None
    advice: str | None
    remark: str | None
    main_work: tuple[str, ...]

    @property
    def slide_range(self) -> str:
        first, last = self.slides
        return f"slide {first}" if first == last else f"slides {first}-{last}"


#: The deck's big areas, in its order: the course's one table of them (chapter 00's maps, every chapter's last
#: section and the score widget read it).
AREAS: dict[str, Area] = {
    "circuits": Area(
        key="circuits",
        title="Circuit analysis",
        slides=(19, 27),
        chapter="01",
        scores=Scores(low_hanging_fruit=2, excitement=2, difficulty=4),
        score_quote="LHF 2/10, Excitement 2/10, Difficulty 4/10",
        score_slide=25,
        summary=(
            "Arguably, the point of doing a bunch of circuit analyses on a bunch of models is to gather data on "
            "the typical phenomena you’ll encounter"
        ),
        advice=(
            "We’re done doing random circuit analyses IMO. If you still want to do circuit analysis, you should "
            "explicitly be looking for counterexamples, which takes a more conceptually motivated approach (e.g. "
            "inspired by specifics of the architecture)"
        ),
        remark="Far too many people",
        main_work=(
            "pronoun selection",
            "“greater than”",
            "indirect object identification",
            "ORION (question answering, type hint understanding, factual recall, variable binding, "
            "translation, induction)",
            "docstring",
            "time",
            "arithmetic",
            "multiple choice QA",
        ),
    ),
    "grokking": Area(
        key="grokking",
        title="Grokking",
        slides=(28, 33),
        chapter="02",
        scores=Scores(low_hanging_fruit=6, excitement=4, difficulty=5),
        score_quote="LHF 6/10, excitement 4/10, difficulty 5/10",
        score_slide=31,
        summary=(
            "Main idea: 100% test solution means a plausibly clean ground truth exists, and it’s tractable to "
            "fully reverse engineer it (still extremely hard). Secondary idea: studying the nature of phase "
            "transitions."
        ),
        advice=(
            "Think “counterexamples in topology”\n"
            "Constructing counterintuitive toy models is the most useful work in this area TBH"
        ),
        remark=None,
        main_work=(
            "[May 2022] Towards Understanding Grokking",
            "[Aug 2022] Progress Measure for Grokking via Mechanistic Interpretability",
            "[May 2023] Grokking of Hierarchical Structure in Vanilla Transformers",
            "[Nov 2023] Feature emergence via margin maximization",
        ),
    ),
    "backup": Area(
        key="backup",
        title="Backup behavior",
        slides=(34, 36),
        chapter="03",
        scores=Scores(low_hanging_fruit=None, excitement=None, difficulty=None),
        score_quote=None,
        score_slide=None,
        summary="Discovered in the Interpretability in the Wild: Indirect Object Identification",
        advice=None,
        remark="Pretty important",
        main_work=(
            "Hydra Effect",
            "Comprehensively understanding an attention head",
        ),
    ),
    "saes": Area(
        key="saes",
        title="SAEs & Dictionary learning",
        slides=(37, 44),
        chapter="04",
        scores=Scores(low_hanging_fruit=10, excitement=6, difficulty=9),
        score_quote="LHF 10/10, excitement 6/10, difficulty 9/10",
        score_slide=40,
        summary=(
            "Main idea: Lets us decompose arbitrary activation spaces into a combination of few feature "
            "directions. Sparsity makes doing interp with this realistic. Good sparsity (kind of) implies "
            "interpretability"
        ),
        advice=(
            "have a plan beyond “train SAEs” and “improve automated circuit discovery”\n"
            "DON’T rely on existing mech interp literature: it was built for a world without SAEs\n"
            "Take inspiration from outside domains to maximize the variance of ideas tried\n"
            "Ask an expert in sparse coding (from old literature), ask them “what do we do next?”"
        ),
        remark="Note: SAEs don’t solve mech interp",
        main_work=(
            "[April 2023] Emergence of Sparse Representations from Noise",
            "[July 2023] (tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse Autoencoders",
            "[Sept 2023] Interpreting OpenAI's Whisper",
            "[Oct 2023] Towards Monosemanticity: Decomposing Language Models With Dictionary Learning",
        ),
    ),
    "feature-composition": Area(
        key="feature-composition",
        title="Feature composition",
        slides=(45, 45),
        chapter=None,
        scores=Scores(low_hanging_fruit=None, excitement=None, difficulty=None),
        score_quote=None,
        score_slide=None,
        summary="AKA computation in superposition, feature circuits",
        advice=None,
        remark=None,
        main_work=(),
    ),
    "modularity": Area(
        key="modularity",
        title="Modularity",
        slides=(46, 46),
        chapter=None,
        scores=Scores(low_hanging_fruit=None, excitement=None, difficulty=None),
        score_quote=None,
        score_slide=None,
        summary="AKA circuit composition, how do we combine the information from all these existing circuit studies",
        advice=None,
        remark=None,
        main_work=(),
    ),
    "training-process": Area(
        key="training-process",
        title="The training process",
        slides=(47, 47),
        chapter=None,
        scores=Scores(low_hanging_fruit=None, excitement=None, difficulty=None),
        score_quote=None,
        score_slide=None,
        summary=None,
        advice=None,
        remark=None,
        main_work=(),
    ),
    "attention-superposition": Area(
        key="attention-superposition",
        title="Attention superposition",
        slides=(48, 78),
        chapter="05",
        scores=Scores(low_hanging_fruit=None, excitement=None, difficulty=None),
        score_quote=None,
        score_slide=None,
        summary=(
            "Attention superposition occurs when several heads’ QK circuits learn to form destructive interference "
            "patterns with each other to encode hierarchical dependencies, so that the OV maps aren’t actually "
            "effectively linear"
        ),
        advice=None,
        remark="Why is it so hard? Because we don’t actually know what an “attention feature” is",
        main_work=(
            "[Feb 2023] Chris Olah speculates that attention heads can exhibit superposition",
            "[May 2023] May update: Anthropic “constructs” toy model. OV-incoherence is bad terminology",
            "[July 2023] July update: previous example is not a real toy model of attn superposition",
            "[July 2023] Me, Narmeen, and faul_sname construct an “OV-incoherent” toy model for an alignment jam",
            "[Aug 2023] Lauren Greenspan & Keith Wynroe construct an “OV-coherent” toy model",
            "[Sept 2023] We all kinda work on it together with limited success",
            "[Oct 2023] Towards monosemanticity: future work comments at the bottom",
            "[Jan 2024] Anthropic update: they made progress. Extremely preliminary results",
            "[Jan 2024] Toward A Mathematical Framework for Computation in Superposition",
        ),
    ),
}


class ScoresFileError(ValueError):
    """The saved-scores file exists but cannot be used (not JSON, or not ``{area: {score key: 0..10}}``)."""


# --------------------------------------------------------------------------------------------------------------
# Looking areas up
# --------------------------------------------------------------------------------------------------------------


def _check_area(area: Any) -> str:
    """``area`` if it is a known short name, else a ValueError that lists the known ones (and the likely typo)."""
    if isinstance(area, str) and area in AREAS:
        return area
    close = difflib.get_close_matches(str(area), list(AREAS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown area {area!r}.{hint} The known areas are: {', '.join(AREAS)}.")


def deck_scores(area: str) -> dict[str, int | None]:
    """The deck's three scores for ``area`` (``None`` where the deck gives none), as a fresh dict."""
    return AREAS[_check_area(area)].scores.as_dict()


def advice(area: str) -> str:
    """The deck's research advice for ``area``, ready to ``print``: a heading with the slides, the advice one line
    per bullet, and the deck's closing remark; says so plainly when the deck gives no advice."""
    info = AREAS[_check_area(area)]
    if not info.advice:
        text = f"The deck gives no research advice for {info.title} ({info.slide_range})."
    else:
        lines = "\n".join(f"  - {line}" for line in info.advice.splitlines())
        text = f"{info.title}: how to choose a good research direction ({info.slide_range})\n{lines}"
    if info.remark:
        text += f"\n  The deck adds: {info.remark}"
    return text


# --------------------------------------------------------------------------------------------------------------
# Validating, saving and loading a student's scores
# --------------------------------------------------------------------------------------------------------------


def _score_value(key: str, value: Any) -> int:
    """One score as an int, or a TypeError / ValueError that names the key and says how to fix it."""
    if value is None:
        raise ValueError(f"{key!r} is None: replace the None with your score from {MIN_SCORE} to {MAX_SCORE}.")
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # True is an int in Python; never a score
        raise TypeError(f"{key!r} is {value!r}: a score is a whole number from {MIN_SCORE} to {MAX_SCORE}, not a bool.")
    try:
        number = operator.index(value)  # int, numpy integers, integer 0-d tensors
    except TypeError:
        if not isinstance(value, numbers.Real):
            raise TypeError(
                f"{key!r} is {value!r} ({type(value).__name__}): a score is a whole number from "
                f"{MIN_SCORE} to {MAX_SCORE}."
            ) from None
        if not float(value).is_integer():
            raise ValueError(
                f"{key!r} is {value!r}: scores are whole numbers from {MIN_SCORE} to {MAX_SCORE}; round it."
            ) from None
        number = int(value)
    if not MIN_SCORE <= number <= MAX_SCORE:
        raise ValueError(f"{key!r} is {number}: scores go from {MIN_SCORE} to {MAX_SCORE}.")
    return number


def validate_scores(scores: Any) -> dict[str, int]:
    """Check one area's scores and return them as ``{key: int}`` in :data:`SCORE_KEYS` order.

    ``scores`` must be a mapping with exactly the keys of :data:`SCORE_KEYS`, each a whole number from 0 to 10.
    Integers of any kind (Python, numpy, a 0-d integer tensor) are accepted, and so are floats that are whole numbers
    (``7.0`` becomes ``7``: a student who types ``7.0`` means 7); ``7.5`` is a ValueError, a bool or a string a
    TypeError, ``None`` (a score not filled in yet) a ValueError. Every message names the key at fault.
    """
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"scores should be a dict with the keys {', '.join(map(repr, SCORE_KEYS))}, got {type(scores).__name__}."
        )
    extra = [key for key in scores if key not in SCORE_KEYS]
    if extra:
        hints = []
        for key in extra:
            close = difflib.get_close_matches(str(key), SCORE_KEYS, n=1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise ValueError(f"unknown score key {', '.join(hints)}: the keys are {', '.join(map(repr, SCORE_KEYS))}.")
    missing = [key for key in SCORE_KEYS if key not in scores]
    if missing:
        raise ValueError(
            f"missing score {', '.join(map(repr, missing))}: give all of {', '.join(map(repr, SCORE_KEYS))}."
        )
    return {key: _score_value(key, scores[key]) for key in SCORE_KEYS}


def scores_path(path: str | Path | None = None) -> Path:
    """Where saved scores live: ``path`` if given, else ``$MECHINTERP_SCORES``, else ``mechinterp_scores.json`` in
    the current directory (read at each call, so changing directory or the variable takes effect at once)."""
    if path is not None:
        return Path(path).expanduser()
    from_env = os.environ.get(SCORES_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path.cwd() / DEFAULT_SCORES_FILE


def load_scores(path: str | Path | None = None) -> dict[str, dict[str, int]]:
    """The saved scores, ``{area: {key: int}}``; ``{}`` if nothing has been saved yet.

    A file that exists but is not valid (not JSON, or not ``{area: {key: 0..10}}``) raises :class:`ScoresFileError`
    (a ValueError) naming the file, rather than being treated as empty: the next Save would otherwise overwrite it
    and lose every score in it. Areas the course does not know are kept (they may come from a newer version)."""
    file = scores_path(path)
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScoresFileError(
            f"the saved scores in {file} are not valid JSON ({error}). Fix the file or delete it "
            f"(you will lose the scores saved in it), then save again."
        ) from error
    if not isinstance(data, dict):
        raise ScoresFileError(
            f"the saved scores in {file} should be a JSON object {{area: scores}}, got "
            f"{type(data).__name__}. Fix the file or delete it, then save again."
        )
    loaded = {}
    for area, area_scores in data.items():
        try:
            loaded[area] = validate_scores(area_scores)
        except (TypeError, ValueError) as error:
            raise ScoresFileError(
                f"the saved scores in {file} for {area!r} are invalid: {error} Fix the file or "
                f"delete it, then save again."
            ) from error
    return loaded


def save_scores(area: str, scores: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Validate ``scores`` and save them for ``area`` (keeping every other area's), then return the file's path.

    The file is replaced in one step (written beside it, then renamed), so an interrupted save never leaves half a
    file."""
    area = _check_area(area)
    clean = validate_scores(scores)
    file = scores_path(path)
    saved = load_scores(file)
    saved[area] = clean
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    partial.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, file)
    return file


# --------------------------------------------------------------------------------------------------------------
# The widget and the comparison table
# --------------------------------------------------------------------------------------------------------------


def _deck_label(value: int | None) -> str:
    return f"deck: {MISSING}" if value is None else f"deck: {value}/{MAX_SCORE}"


def score_widget(area: str, path: str | Path | None = None):
    """A small form to score ``area``: one 0..10 slider per question, the deck's score beside each, a Save button and
    an output area that says where the scores were saved (or what went wrong).

    Sliders start at the scores saved for the area, or at :data:`SLIDER_START` if none are. Save calls
    :func:`save_scores` with ``path`` (see :func:`scores_path` for the default). Returns an ``ipywidgets.VBox`` with
    ``sliders`` (``{key: IntSlider}``), ``save_button`` and ``output`` attached for programmatic use."""
    area = _check_area(area)
    try:
        import ipywidgets as widgets
    except ImportError as error:
        raise ImportError(
            "score_widget needs ipywidgets (`pip install ipywidgets`, part of the course's "
            "dependencies). Without it, write your scores in a dict and call "
            "research.save_scores(area, scores)."
        ) from error

    info = AREAS[area]
    file = scores_path(path)
    output = widgets.Output()
    try:
        start = load_scores(file).get(area) or {}
    except ScoresFileError as error:  # still show the form; the message says what to do
        start = {}
        output.append_stderr(f"{error}\n")
    sliders, rows = {}, []
    for key in SCORE_KEYS:
        slider = widgets.IntSlider(
            value=start.get(key, SLIDER_START),
            min=MIN_SCORE,
            max=MAX_SCORE,
            step=1,
            description=SCORE_LABELS[key],
            tooltip=SCORE_QUESTIONS[key],
            style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"),
        )
        sliders[key] = slider
        rows.append(widgets.HBox([slider, widgets.Label(_deck_label(getattr(info.scores, key)))]))
    save_button = widgets.Button(
        description="Save", button_style="primary", icon="save", tooltip=f"save your scores for {info.title} to {file}"
    )

    def save(_button=None) -> None:
        output.outputs = ()
        try:
            saved_to = save_scores(area, {key: slider.value for key, slider in sliders.items()}, path)
        except (OSError, ValueError, TypeError) as error:
            output.append_stderr(f"not saved: {error}\n")
            return
        values = ", ".join(f"{SCORE_LABELS[key]} {sliders[key].value}" for key in SCORE_KEYS)
        output.append_stdout(f"saved {info.title}: {values} -> {saved_to}\n")

    save_button.on_click(save)
    heading = widgets.HTML(f"<b>{info.title}</b> (deck {info.slide_range})")
    form = widgets.VBox([heading, *rows, save_button, output])
    form.sliders, form.save_button, form.output, form.area = sliders, save_button, output, area
    return form


def _shown(value: Any, missing: str) -> Any:
    return missing if value is None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def score_table(area_or_areas: str | Sequence[str], my_scores: Mapping[str, Any] | None = None):
    """A pandas DataFrame setting the student's scores beside the deck's: one row per area (index: the short name),
    columns grouped as ``("deck", key)``, ``("you", key)`` and ``("you - deck", key)``.

    ``area_or_areas`` is one area (then ``my_scores`` is that area's scores dict) or a list of areas (then
    ``my_scores`` is ``{area: scores}``). Scores may be missing or ``None`` (not filled in yet): they are shown blank,
    and so is their difference; a score the deck does not give is shown as "—". Nothing is validated here, so the cell
    works before anything is filled in (:func:`validate_scores` is the check)."""
    import pandas as pd

    if isinstance(area_or_areas, str):
        areas = [_check_area(area_or_areas)]
        mine_by_area = {areas[0]: my_scores or {}}
    else:
        areas = [_check_area(area) for area in area_or_areas]
        mine_by_area = my_scores or {}
        if not isinstance(mine_by_area, Mapping):
            raise TypeError(
                f"with a list of areas, my_scores should be a dict {{area: scores}}, got {type(mine_by_area).__name__}."
            )
    rows = {}
    for area in areas:
        deck = AREAS[area].scores.as_dict()
        mine = mine_by_area.get(area) or {}
        if not isinstance(mine, Mapping):
            raise TypeError(f"my_scores for {area!r} should be a dict of scores, got {type(mine).__name__}.")
        row = {}
        for key in SCORE_KEYS:
            row[("deck", key)] = _shown(deck[key], MISSING)
        for key in SCORE_KEYS:
            row[("you", key)] = _shown(mine.get(key), "")
        for key in SCORE_KEYS:
            theirs, yours = deck[key], mine.get(key)
            row[("you - deck", key)] = yours - theirs if _is_number(yours) and _is_number(theirs) else ""
        rows[area] = row
    columns = pd.MultiIndex.from_tuples([(group, key) for group in ("deck", "you", "you - deck") for key in SCORE_KEYS])
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    table.index.name = "area"
    return table


# --------------------------------------------------------------------------------------------------------------
# The check every chapter's last section runs on the student's own scores
# --------------------------------------------------------------------------------------------------------------


def scores_check(chapter: str):
    """The check ``check.my_scores(my_scores)`` of a chapter's last section (``chapter``: its package, for the
    exercise's number): the student's three scores for the chapter's area are whole numbers from 0 to 10. There is
    no right answer; the check makes sure they can be saved and compared."""
    from .checking import check, fail

    @check("my_scores", functions=0, chapter=chapter)
    def my_scores(scores: Any) -> str:
        try:
            validate_scores(scores)
        except (ValueError, TypeError) as error:
            fail(str(error))
        return "three scores between 0 and 10"

    return my_scores
