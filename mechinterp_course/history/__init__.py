"""Chapter 00, "History and landscape": the tools the chapter's cells use around the student's exercises.

The room has the shape of every chapter's package:

- :mod:`.deck`: the talk's history and maps of the field as data (people, timeline, taxonomy, status table, ladder,
  north stars) and the quizzes' questions and options, never their answers;
- :mod:`.digits`: the 8x8 digits, the small CNN and its training (with the course's one loop), and the units the
  exercises take as ``activation_fn``;
- this module: both, re-exported, and the few helpers the notebook's demo cells need;
- :mod:`.reference`: the exercises' answers, generated from ``solutions/00_history/00_history.ipynb``;
- :mod:`.checks`: the checks the notebook's test cells call (``check.<exercise>(...)``).

The deck's big areas, their point scores and advice are :data:`mechinterp_course.research.AREAS` (the course's one
table; ``research.deck_scores(area)`` gives an area's scores). The chapter's figures are in
:mod:`mechinterp_course.plots` (``timeline_figure``, ``ternary_figure``, ``image_grid``, ``deck_scores_figure``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import research
from .deck import (
    CHAPTER_STATUS,
    CHAPTERS,
    CIRCUIT_ANALYSIS_TOPICS,
    DECK_STATED_CLASSES,
    DISTILL,
    EVENTS,
    LADDER,
    LEONARD_TAXONOMY,
    LINEAGE_QUESTIONS,
    LINEAGE_QUIZ,
    MICRO_MACRO,
    MONTHS,
    NORTH_STARS,
    PEOPLE,
    PEOPLE_QUIZ,
    PEOPLE_QUIZ_OPTIONS,
    PROJECTS_QUIZ,
    SCHOOLS,
    SLIDE_6,
    SPOTLIGHT,
    STATUS,
    STATUS_LEGEND,
    STATUS_UNMARKED,
    SUCCESS_QUIZ,
    SUCCESS_WORKS,
    TERNARY_PAPERS,
    TERNARY_REGIONS,
    TIMELINE,
    TRACKS,
    TRANSFORMER_CIRCUITS,
    WHEN_QUIZ,
    Event,
    Person,
    chapter_label,
    chapters_label,
    ladder_label,
)
from .digits import (
    DIGITS_IMAGE_SIZE,
    DIGITS_N_CLASSES,
    DIGITS_N_TRAIN,
    DIGITS_SPLIT_SEED,
    DIGITS_TRAINING,
    DigitsCNN,
    DigitsData,
    DigitsTraining,
    Pixel,
    UnitActivation,
    digits_metrics,
    load_digits_data,
    train_digits_cnn,
)

#: The options of the "when in the training process" quiz: slide 8's second axis, in the deck's words.
WHEN_OPTIONS: tuple[str, ...] = LEONARD_TAXONOMY["when in the training process"]
#: Pick ties: two areas whose values are closer than this count as tied (so that float rounding never decides).
TIE_TOLERANCE = 1e-9


def scored_areas() -> list[str]:
    """The areas the deck gives point scores for (slides 25, 31, 40): the ones every student must score too."""
    return [key for key, area in research.AREAS.items() if area.scores.given]


def scores_ready(my_scores: Any) -> bool:
    """Whether ``my_scores`` can be used by the cells after Exercise 6.1: a non-empty dict of known areas, each with
    three whole-number scores from 0 to 10 (the demo cell says what is missing instead of crashing)."""
    if not isinstance(my_scores, Mapping) or not my_scores:
        return False
    try:
        return all(area in research.AREAS and research.validate_scores(scores) for area, scores in my_scores.items())
    except (TypeError, ValueError):
        return False


def lettered(questions: Mapping[str, str]) -> str:
    """A quiz's questions, one ``"A: ..."`` line each, for ``print``."""
    return "\n".join(f"{letter}: {text}" for letter, text in questions.items())


__all__ = [
    "CHAPTER_STATUS",
    "CHAPTERS",
    "CIRCUIT_ANALYSIS_TOPICS",
    "DECK_STATED_CLASSES",
    "DISTILL",
    "EVENTS",
    "LADDER",
    "LEONARD_TAXONOMY",
    "LINEAGE_QUESTIONS",
    "LINEAGE_QUIZ",
    "MICRO_MACRO",
    "MONTHS",
    "NORTH_STARS",
    "PEOPLE",
    "PEOPLE_QUIZ",
    "PEOPLE_QUIZ_OPTIONS",
    "PROJECTS_QUIZ",
    "SCHOOLS",
    "SLIDE_6",
    "SPOTLIGHT",
    "STATUS",
    "STATUS_LEGEND",
    "STATUS_UNMARKED",
    "SUCCESS_QUIZ",
    "SUCCESS_WORKS",
    "TERNARY_PAPERS",
    "TERNARY_REGIONS",
    "TIMELINE",
    "TRACKS",
    "TRANSFORMER_CIRCUITS",
    "WHEN_QUIZ",
    "WHEN_OPTIONS",
    "TIE_TOLERANCE",
    "Event",
    "Person",
    "chapter_label",
    "chapters_label",
    "ladder_label",
    "DIGITS_IMAGE_SIZE",
    "DIGITS_N_CLASSES",
    "DIGITS_N_TRAIN",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TRAINING",
    "DigitsCNN",
    "DigitsData",
    "DigitsTraining",
    "Pixel",
    "UnitActivation",
    "digits_metrics",
    "load_digits_data",
    "train_digits_cnn",
    "scored_areas",
    "scores_ready",
    "lettered",
]
