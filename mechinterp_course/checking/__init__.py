"""The checking API: what a chapter's checks and a notebook's exercises are written with.

- :func:`exercise` declares an exercise function in a notebook (demo cells fall back to the reference until it
  passes; see :mod:`.exercises`);
- :func:`check` declares a check; inside it, :func:`trials` draws seeded inputs, :func:`call` and :func:`raises`
  run the student's code, :func:`compare` and :func:`fail` give feedback (see :mod:`.core`);
- :func:`tokens_only` runs a function that may see its arguments only, :func:`no_training` one that also cannot
  train (see :mod:`.provenance`).

The record of which exercises passed is :data:`RECORD`.
"""

from .core import (
    ATOL,
    RECORD,
    RTOL,
    CheckFailed,
    ExerciseRecord,
    StudentError,
    Trial,
    answer_digest,
    answer_key,
    as_tensor,
    call,
    canonical,
    check,
    compare,
    current_record,
    describe_index,
    exercise_label,
    exercise_numbers,
    fail,
    head_names,
    is_hidden,
    layer_head_index,
    raises,
    seed_for,
    trials,
    unchanged,
    using_record,
    wrong_answers,
)
from .exercises import Exercise, exercise, grading, reference_of
from .provenance import is_remote, no_training, tokens_only, unwrap_exercise

__all__ = [
    "ATOL",
    "answer_digest",
    "answer_key",
    "canonical",
    "RECORD",
    "RTOL",
    "CheckFailed",
    "Exercise",
    "ExerciseRecord",
    "StudentError",
    "Trial",
    "as_tensor",
    "call",
    "check",
    "compare",
    "current_record",
    "describe_index",
    "exercise",
    "exercise_label",
    "exercise_numbers",
    "fail",
    "grading",
    "head_names",
    "is_hidden",
    "is_remote",
    "layer_head_index",
    "no_training",
    "raises",
    "reference_of",
    "seed_for",
    "tokens_only",
    "trials",
    "unchanged",
    "unwrap_exercise",
    "using_record",
    "wrong_answers",
]
