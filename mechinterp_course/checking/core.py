"""The machinery every chapter's checks share: how a check is declared, draws its inputs, calls the student's code,
compares, fails and passes.

A check is a function decorated with :func:`check`::

    @check("get_attention_pattern")
    def get_attention_pattern(fn):
        model = fresh_model()
        for trial in trials(3):                       # fresh inputs per trial, seeded per check
            tokens = tasks.repeated_tokens(2, 7, model.cfg.d_vocab, seed=trial.seed)
            compare(call(fn, model, tokens, 0), expected, "the pattern", index=heads_index(...))
        return "3 inputs, both layers"                # what the success line says was checked

The notebook's test cell calls it as ``check.get_attention_pattern(get_attention_pattern)``. The decorator prints
the success line or raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader marks the cell failed) with a
message that names the exercise and says what is wrong without giving the answer, and it keeps the record of which
exercises passed (:data:`RECORD`), which demo cells and later checks read.

Why seeds per check: the inputs change with the check's name, the trial and, for the hidden tests of a graded
notebook, a salt only the instructor's copy holds (``check.x(fn, hidden="...")``): a hard-coded answer fails, an
answer that ignores its input fails, and grading the same notebook twice gives the same result.

Where the student's code runs. In a student's notebook ``fn`` is their function and the check runs in their kernel.
When an instructor grades, the check runs in the grader's own process and ``fn`` is a stand-in that runs the
function in the student's sandboxed kernel (``mechinterp_course.instructor.judge``): the same check code, through
:func:`call`, in both places. Checks therefore use the student's functions only by calling them through
:func:`call` / :func:`raises` and read values only through what those return.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

#: Default tolerances: float32 arithmetic done in a different order differs by about 1e-6 relative.
ATOL = 1e-4
RTOL = 1e-4


class CheckFailed(AssertionError):
    """A student's answer is wrong; the message is the feedback they see."""


class StudentError(Exception):
    """The student's function raised. ``kinds`` are the names of the exception's classes (most derived first), so
    that a check can ask "did it raise a ValueError?" whether the function ran here or in a sandboxed kernel."""

    def __init__(self, kinds: Sequence[str], message: str):
        super().__init__(f"{kinds[0] if kinds else 'Exception'}: {message}")
        self.kinds, self.message = tuple(kinds), message


# --------------------------------------------------------------------------------------------------------------
# The record of what passed
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ExerciseRecord:
    """Which exercises passed their check, and which exercises' functions a running check reached.

    ``passed`` maps an exercise to a token of what passed: the function object for a function exercise (so that
    editing and re-running the function's cell takes the pass back), ``True`` for an answer given as data. In a
    notebook there is one record per kernel (:data:`RECORD`); the grader keeps one per graded notebook.
    """

    passed: dict[str, Any] = field(default_factory=dict)
    #: Exercise functions called while the current check runs (None when no check runs).
    reached: set[str] | None = None

    def has_passed(self, name: str, fn: Any = None) -> bool:
        token = self.passed.get(name)
        return token is not None and (fn is None or token is True or token is fn)

    def reset(self) -> None:
        self.passed.clear()
        self.reached = None


RECORD = ExerciseRecord()
_record: contextvars.ContextVar[ExerciseRecord] = contextvars.ContextVar("record", default=RECORD)


def current_record() -> ExerciseRecord:
    """The record in use: the kernel's own, or the one the grader installed with :func:`using_record`."""
    return _record.get()


@contextlib.contextmanager
def using_record(record: ExerciseRecord) -> Iterator[ExerciseRecord]:
    """Run checks against ``record`` (the grader keeps one per notebook it grades)."""
    token = _record.set(record)
    try:
        yield record
    finally:
        _record.reset(token)


# --------------------------------------------------------------------------------------------------------------
# Exercise names and numbers
# --------------------------------------------------------------------------------------------------------------

#: Chapter packages whose generated ``reference`` module lists their exercises (``EXERCISES``: name -> number).
CHAPTER_PACKAGES = ("history", "circuits", "grokking", "backup", "saes", "attention_superposition", "understanding")


@functools.cache
def exercise_numbers(chapter: str | None = None) -> dict[str, str]:
    """exercise name -> its number in the notebook (``"2.4"``), read from the chapter's generated reference (every
    chapter's when ``chapter`` is None). Empty where the references are not available: a graded kernel never
    needs them."""
    import importlib

    numbers: dict[str, str] = {}
    for package in CHAPTER_PACKAGES if chapter is None else (chapter,):
        try:
            module = importlib.import_module(f"mechinterp_course.{package}.reference")
            numbers.update(getattr(module, "EXERCISES", {}))
        except Exception:  # noqa: BLE001 - a graded kernel has stubs here
            continue
    return numbers


def exercise_label(name: str, chapter: str | None = None) -> str:
    """``"get_attention_pattern (exercise 1.1)"``, or the bare name when its number is unknown."""
    number = exercise_numbers(chapter).get(name) or exercise_numbers().get(name)
    return f"{name} (exercise {number})" if number else name


# --------------------------------------------------------------------------------------------------------------
# Declaring a check
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What a running check knows about itself (read by :func:`trials`, :func:`fail`, :func:`call`)."""

    name: str
    salt: str
    chapter: str | None = None


_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("run", default=None)


def _current() -> _Run:
    run = _run.get()
    if run is None:
        raise RuntimeError("trials(), fail() and call() are for use inside a function decorated with @check")
    return run


def check(name: str, *, functions: int = 1, depends_on: Sequence[str] = (), chapter: str | None = None) -> Callable:
    """Declare a check of the exercise ``name`` (the name the notebook's test cell uses: ``check.<name>(...)``).

    The check's first ``functions`` arguments are the student's functions (checked to be their own work, and
    unwrapped from ``@exercise``); the rest are answers given as data. ``depends_on`` names earlier exercises this
    one is computed from (a list of heads picked from scores an earlier function computed): when the check fails
    and one of them has not passed, the message says to fix that one first. Exercise functions that the student's
    function calls are found as it runs, and named the same way.

    The decorated check also takes ``hidden=``, a salt for the hidden tests of a graded notebook (other inputs than
    the instant check shows). It returns nothing: it prints a success line or raises :class:`CheckFailed`.
    ``chapter`` (the chapter's package, for exercise numbers) defaults to the package the check is defined in.
    """

    def decorate(body: Callable) -> Callable:
        parts = body.__module__.split(".")
        home = chapter or (parts[1] if len(parts) > 2 and parts[0] == "mechinterp_course" else None)

        @functools.wraps(body)
        def run_check(*answers: Any, hidden: str | None = None) -> None:
            from . import provenance

            record = current_record()
            token = _run.set(_Run(name, hidden or "", home))
            record.reached = set()
            raw = [provenance.unwrap_exercise(fn) for fn in answers[:functions]]
            try:
                if len(answers) < functions:
                    fail(f"pass your function{'s' if functions > 1 else ''} to the check.")
                for fn in raw:
                    provenance.require_own_function(name, fn)
                what = body(*raw, *answers[functions:])
                refusal = next((r for r in (provenance.refusal(name, fn) for fn in raw) if r), None)
                if refusal:
                    fail(refusal)
            except CheckFailed as failure:
                record.passed.pop(name, None)
                raise CheckFailed(f"{failure}{_dependency_note(record, name, depends_on, home)}") from None
            finally:
                record.reached = None
                _run.reset(token)
            record.passed[name] = raw[0] if len(raw) == 1 else True
            print(f"\u2705 {exercise_label(name, home)}: correct ({what}).")

        run_check.exercise = name
        run_check.depends_on = tuple(depends_on)
        return run_check

    return decorate


def _dependency_note(record: ExerciseRecord, name: str, depends_on: Sequence[str], chapter: str | None) -> str:
    """ " (This exercise builds on X (exercise 2.1), which has not passed its check yet: fix that one first.)" """
    reached = record.reached or set()
    earlier = [d for d in (*depends_on, *sorted(reached)) if d != name and not record.has_passed(d)]
    earlier = list(dict.fromkeys(earlier))
    if not earlier:
        return ""
    listed = ", ".join(exercise_label(d, chapter) for d in earlier)
    verb = "has" if len(earlier) == 1 else "have"
    return (
        f"\n(This exercise builds on {listed}, which {verb} not passed "
        f"{'its check' if len(earlier) == 1 else 'their checks'} "
        f"yet: fix {'that one' if len(earlier) == 1 else 'those'} first.)"
    )


def fail(message: str) -> None:
    """Stop the running check with ``message`` (prefixed with the exercise's name and number)."""
    run = _current()
    raise CheckFailed(f"{exercise_label(run.name, run.chapter)}: {message}")


# --------------------------------------------------------------------------------------------------------------
# Inputs: seeded per check, trial and (for hidden tests) salt
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One trial of a check: its index, an integer seed and a torch generator seeded with it."""

    index: int
    seed: int
    generator: torch.Generator = field(compare=False)

    def randint(self, low: int, high: int) -> int:
        """An integer in ``[low, high]`` drawn from this trial's generator (hidden tests vary shapes this way)."""
        return int(torch.randint(low, high + 1, (1,), generator=self.generator))


def seed_for(name: str, trial: int, salt: str = "") -> int:
    """A seed fixed by the check's name, the trial and the salt: stable across runs, unrelated to the notebook's."""
    digest = hashlib.sha256(f"{name}/{trial}/{salt}".encode()).hexdigest()
    return int(digest[:8], 16)


def trials(n: int) -> Iterator[Trial]:
    """``n`` trials for the running check, each with its own seed (other seeds under ``hidden=``)."""
    run = _current()
    for index in range(n):
        seed = seed_for(run.name, index, run.salt)
        yield Trial(index, seed, torch.Generator().manual_seed(seed))


def is_hidden() -> bool:
    """Whether the running check is a hidden test (it may then also vary shapes the instant check keeps fixed)."""
    return bool(_current().salt)


# --------------------------------------------------------------------------------------------------------------
# Calling the student's code
# --------------------------------------------------------------------------------------------------------------


def _invoke(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """Call ``fn``; an exception comes back as :class:`StudentError`, whether the function ran here or in a
    sandboxed kernel (where the grader's stand-in raises it; anything else it raises is the grader's business, such
    as a kernel that died, and passes through)."""
    if getattr(fn, "runs_in_kernel", False):
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except (CheckFailed, StudentError):
        raise
    except Exception as error:  # noqa: BLE001 - the student's bug: reported as feedback
        kinds = [klass.__name__ for klass in type(error).__mro__ if klass not in (object, BaseException)]
        raise StudentError(kinds, str(error)) from error


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function and return what it returns; a crash becomes feedback ("your function raised
    IndexError: ..."), ``NotImplementedError`` becomes "not implemented yet"."""
    try:
        return _invoke(fn, args, kwargs)
    except StudentError as error:
        if "NotImplementedError" in error.kinds:
            fail("not implemented yet (the function still raises NotImplementedError).")
        fail(f"your function raised {error.kinds[0]}: {error.message}")


def raises(error: type[BaseException], fn: Callable, *args: Any, **kwargs: Any) -> bool:
    """Call the student's function where it should raise ``error``: True if it did, False if it returned. Any other
    exception is reported like a crash."""
    try:
        _invoke(fn, args, kwargs)
    except StudentError as raised:
        if error.__name__ in raised.kinds:
            return True
        if "NotImplementedError" in raised.kinds:
            fail("not implemented yet (the function still raises NotImplementedError).")
        fail(f"your function raised {raised.kinds[0]}: {raised.message} (expected {error.__name__} here)")
    return False


# --------------------------------------------------------------------------------------------------------------
# Comparing with the reference
# --------------------------------------------------------------------------------------------------------------

#: How an index of a compared tensor is named: per dimension a sequence of labels (``["L0H0", ...]``), a prefix
#: (``"pos "`` names index 3 "pos 3"), or None (the number); or one function of the whole index tuple.
IndexNames = Sequence[Sequence[str] | str | None] | Callable[[tuple[int, ...]], str] | None


def head_names(n_layers: int, n_heads: int) -> list[list[str]]:
    """Per-dimension names for an ``[n_layers, n_heads]`` tensor: ``L1H2`` is layer 1, head 2."""
    return [[f"L{layer}" for layer in range(n_layers)], [f"H{head}" for head in range(n_heads)]]


def layer_head_index(index: tuple[int, ...]) -> str:
    """``(1, 2) -> "L1H2"`` for ``[layer, head]`` indices (use as ``compare(..., index=layer_head_index)``)."""
    return f"L{index[0]}H{index[1]}"


def describe_index(index: tuple[int, ...], names: IndexNames = None) -> str:
    """A readable name for one index of a tensor, by what its dimensions are (``L1H2``, ``pos 7``, ``[2, 5]``)."""
    if callable(names):
        return names(index)
    if names is None:
        return "[" + ", ".join(str(i) for i in index) + "]"
    parts = []
    for position, i in enumerate(index):
        name = names[position] if position < len(names) else None
        if name is None:
            parts.append(str(i))
        elif isinstance(name, str):
            parts.append(f"{name}{i}")
        else:
            parts.append(str(name[i]))
    joined = "".join(parts) if all(isinstance(n, (list, tuple)) for n in names[: len(index)]) else ", ".join(parts)
    return joined


def as_tensor(value: Any, what: str) -> Tensor:
    """``value`` as a tensor (numbers and nested lists of numbers are accepted), or a failure that says what it is."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    fail(f"{what} should be a torch.Tensor, got {type(value).__name__}.")
    raise AssertionError  # unreachable: fail raises


def compare(
    actual: Any,
    expected: Tensor,
    what: str = "the output",
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    context: str = "",
    index: IndexNames = None,
) -> None:
    """Compare a student's tensor with the reference's, in the order that teaches: type, shape, dtype, NaNs, then
    the values; a mismatch names the worst entry by what it is (``index=``) and never prints the expected tensor."""
    where = f" {context}" if context else ""
    actual = as_tensor(actual, f"{what}{where}")
    expected = expected.detach()
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{what}{where} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.")
    if expected.is_floating_point() and not actual.is_floating_point():
        fail(f"{what}{where} has dtype {actual.dtype}; a floating-point tensor is expected.")
    actual_f, expected_f = actual.double().cpu(), expected.double().cpu()
    if torch.isnan(actual_f).any() and not torch.isnan(expected_f).any():
        fail(f"{what}{where} contains {int(torch.isnan(actual_f).sum())} NaN value(s).")
    close = torch.isclose(actual_f, expected_f, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return
    error = (actual_f - expected_f).abs().nan_to_num(nan=math.inf)
    if actual_f.ndim == 0:
        fail(f"{what}{where} is {float(actual_f):.6g}, which is off by {float(error):.3g}.")
    worst = tuple(int(i) for i in torch.nonzero(error == error.max())[0].tolist())
    n_bad, n = int((~close).sum()), close.numel()
    fail(
        f"{n_bad} of {n} values of {what}{where} are wrong; the largest error is {float(error.max()):.3g}, at "
        f"{describe_index(worst, index)}."
    )


def unchanged(before: Tensor, after: Tensor, name: str) -> None:
    """Fail if the student's function changed its input ``name`` in place."""
    if not torch.equal(before, after):
        fail(f"your function modified its input `{name}` in place; work on a copy (for example `.clone()`).")


# --------------------------------------------------------------------------------------------------------------
# Answer keys, stored as digests
# --------------------------------------------------------------------------------------------------------------

#: Mixed into every answer digest, so that the digests of the course's keys are its own.
ANSWER_SALT = "mechinterp-course/answer-key/v1"


def canonical(value: Any) -> str:
    """An answer as text, so that ``"a"``, ``" A "`` and ``"A"`` (or ``3`` and ``3.0``) count as the same answer."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip().casefold()
    if isinstance(value, (int, float)):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(round(number, 9))
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(canonical(v) for v in value) + ")"
    return repr(value)


def answer_digest(variable: str, item: Any, value: Any) -> str:
    """The digest of one answer: the key's entry for ``item`` of the answer ``variable`` (a dict key, a list position
    or None for a single value). Keys hold digests, not answers, so that no module hands out the answers; an answer
    is right when its digest is the key's."""
    text = f"{ANSWER_SALT}/{variable}/{canonical(item)}/{canonical(value)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def answer_key(value: Any, variable: str) -> Any:
    """The digests of an answer written out in full (a dict, a list or one value), as the build stores them."""
    if isinstance(value, dict):
        return {item: answer_digest(variable, item, v) for item, v in value.items()}
    if isinstance(value, list):
        return [answer_digest(variable, i, v) for i, v in enumerate(value)]
    return answer_digest(variable, None, value)


def wrong_answers(variable: str, given: Any, key: Any) -> list[Any]:
    """The items of ``given`` whose digest differs from ``key``'s (dict keys, list positions, or ``[None]`` for a
    single answer). ``given`` must already have the key's shape (the quiz checks say so first)."""
    if isinstance(key, dict):
        return [item for item, digest in key.items() if answer_digest(variable, item, given.get(item)) != digest]
    if isinstance(key, list):
        return [i for i, digest in enumerate(key) if i >= len(given) or answer_digest(variable, i, given[i]) != digest]
    return [] if answer_digest(variable, None, given) == key else [None]
