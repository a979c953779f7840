"""``@exercise``: how a notebook declares an exercise function, so that the rest of the chapter can call it by name.

In a solution notebook (and so in the student's copy) every exercise function is written under the decorator::

    @exercise
    def get_attention_pattern(model, tokens, layer):
        ...

Demo cells after it call ``get_attention_pattern(...)`` like any function. Until the student's function has passed
its check (the record in :mod:`.core`), a call uses the course's reference instead and says so in one line, so that
the figures that follow show what they should and their text never contradicts them; once it passes, the student's
own function runs. Inside a check, and in a notebook being graded, the student's own function always runs: a check
measures the student's work, and the exercise functions it reaches are recorded so that a failure can say which
earlier exercise it comes from.

An exercise whose answer is open (the counterexample hunt) names a stand-in with ``fallback=``: it has no reference
(the build does not export it), and the cells after it run the student's own function as soon as it is written,
so they can try ideas before the check; the stand-in runs only while the function raises ``NotImplementedError``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

from .core import CHAPTER_PACKAGES, current_record, exercise_label

#: Set in the environment of a kernel that runs a notebook being graded: there is no reference to fall back to.
GRADING_ENV = "MECHINTERP_GRADING"


def grading() -> bool:
    """Whether this process is a kernel running a notebook for the autograder."""
    return os.environ.get(GRADING_ENV) == "1"


def reference_of(name: str) -> Callable | None:
    """The course's reference function for the exercise ``name`` (generated from the solution notebooks), or None
    where there is none or it is not available (a graded kernel)."""
    for package in CHAPTER_PACKAGES:
        try:
            module = importlib.import_module(f"mechinterp_course.{package}.reference")
            function = getattr(module, name, None)
        except Exception:  # noqa: BLE001 - a graded kernel's stub raises on every lookup
            continue
        if callable(function):
            return function
    return None


def _cell_key() -> Any:
    """Something that changes from one executed cell to the next (IPython's execution count), so that the fallback
    note is printed once per cell, not once per call of a loop."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython ships with the course
        shell = None
    return getattr(shell, "execution_count", None)


class Exercise:
    """A student's exercise function as the notebook sees it (see the module docstring)."""

    def __init__(self, fn: Callable, fallback: Callable | None = None):
        functools.update_wrapper(self, fn)
        self.fn, self.name, self.fallback = fn, fn.__name__, fallback
        self._noted_in: Any = object()

    def __repr__(self) -> str:
        return f"<exercise {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        record = current_record()
        if record.reached is not None:  # a check is running: the student's own work, always
            record.reached.add(self.name)
            return self.fn(*args, **kwargs)
        if grading() or record.has_passed(self.name, self.fn):
            return self.fn(*args, **kwargs)
        if self.fallback is not None:  # an open exercise: the student's attempt, once there is one
            try:
                return self.fn(*args, **kwargs)
            except NotImplementedError:
                self._note("is not written yet", "a stand-in")
                return self.fallback(*args, **kwargs)
        substitute = reference_of(self.name)
        if substitute is None:
            return self.fn(*args, **kwargs)
        self._note("has not passed its check yet", "the course's reference")
        return substitute(*args, **kwargs)

    def _note(self, why: str, instead: str) -> None:
        """Say once per cell that this cell does not run the student's function."""
        cell = _cell_key()
        if cell != self._noted_in or cell is None:
            self._noted_in = cell
            print(
                f"(Your {exercise_label(self.name)} {why}, so this cell uses {instead}; run the check cell once your "
                f"function is written.)"
            )


def exercise(fn: Callable | None = None, *, fallback: Callable | None = None) -> Any:
    """Declare an exercise function (module docstring). ``@exercise`` or ``@exercise(fallback=stand_in)``."""
    if fn is None:
        return lambda f: Exercise(f, fallback)
    return Exercise(fn, fallback)
