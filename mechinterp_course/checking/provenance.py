"""Whose work is a function, and what may it reach: the checks' defences against answers that are not the student's.

Two questions, for a check running in a student's notebook (a graded notebook answers both more strongly: its
kernel cannot read the reference at all, and the functions that must see tokens only run in a process of their own,
see ``mechinterp_course.instructor``):

1. **Is this the student's own function?** :func:`require_own_function` refuses at once a function defined in the
   course library (the reference itself, or a ``functools.partial`` of a library function). :func:`refusal` is asked
   when the check would otherwise pass: a function whose code calls the exercise's reference by its name
   (``reference.ablate_head(...)``, ``from ... import ablate_head``, ``getattr(module, "ablate_head")``), directly,
   through the student's own helper functions, or through a global or default argument bound to the reference
   under another name, is refused rather than praised. A wrong one hears what is wrong with its output first, like
   any answer. Other library helpers stay allowed. This stops the one-line wrapper, not a determined disguise (a
   name built at run time, a reference captured in a closure, which is how the tests stand a reference in for a
   student's answer); the autograder's sandbox stops those.

2. **Does it use the tokens alone?** :func:`tokens_only` returns a copy of a function (and of every function of the
   student's it reaches) whose globals lack every ``torch.nn.Module`` and every module of this library; it refuses a
   closure or default argument that holds a module or a model, and makes any model's forward pass fail while it
   runs. The counterexample hunt needs this: a mask that could run the model could count exactly the predictions
   where the circuit fails, whatever the distribution.
"""

from __future__ import annotations

import builtins
import dis
import functools
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

import torch

from .core import fail
from .exercises import Exercise, reference_of

#: Opcodes that use a name as an attribute or an imported name (``x.NAME``, ``from m import NAME``).
_ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM", "IMPORT_NAME"}
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}
_THIRD_PARTY_ROOTS = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def is_remote(fn: Any) -> bool:
    """Whether ``fn`` stands for a function that runs in a graded notebook's kernel (the grader's stand-in)."""
    return bool(getattr(fn, "runs_in_kernel", False))


def unwrap_exercise(value: Any) -> Any:
    """The student's own function behind an ``@exercise`` wrapper (checks call it, never the fallback)."""
    return value.fn if isinstance(value, Exercise) else value


def is_library(module_name: str | None) -> bool:
    return module_name == "mechinterp_course" or (module_name or "").startswith("mechinterp_course.")


def _unwrap_partials(fn: Any) -> list[Any]:
    """``fn`` and, for a ``functools.partial`` or a bound method, the function it stands for (recursively)."""
    targets = [fn]
    while True:
        inner = getattr(fn, "func", None) if isinstance(fn, functools.partial) else getattr(fn, "__func__", None)
        if inner is None or inner is fn:
            return targets
        targets.append(inner)
        fn = inner


def _code_objects(code: types.CodeType):
    """``code`` and every code object nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _cell_is_set(cell) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell: the variable is not assigned yet
        return False
    return True


def calls_reference(fn: Callable, reference: Callable) -> bool:
    """Whether ``fn`` (or a helper of the same namespace it calls by name) reaches ``reference``: by naming it (as an
    attribute, an imported name or a string) while its globals, closure or imports reach the library module that
    defines it (or a package above it), or through a global (or a default argument) bound to the reference itself."""
    name = getattr(reference, "__name__", None)
    home = getattr(reference, "__module__", None)
    if not name or not home:
        return False
    home_and_parents = {".".join(home.split(".")[: i + 1]) for i in range(home.count(".") + 1)}

    def reaches_home(value: Any) -> bool:
        return value is reference or (isinstance(value, types.ModuleType) and value.__name__ in home_and_parents)

    seen: set[int] = set()

    def visit(func: types.FunctionType) -> bool:
        if id(func) in seen:
            return False
        seen.add(id(func))
        namespace = func.__globals__
        instructions = [ins for code in _code_objects(func.__code__) for ins in dis.get_instructions(code)]
        global_names = {ins.argval for ins in instructions if ins.opname in _GLOBAL_OPS}
        closure = [cell.cell_contents for cell in func.__closure__ or () if _cell_is_set(cell)]
        defaults = list(func.__defaults__ or ()) + list((func.__kwdefaults__ or {}).values())
        if any(namespace.get(n) is reference for n in global_names) or any(v is reference for v in defaults):
            return True
        reachable = (
            any(reaches_home(namespace.get(n)) for n in global_names)
            or any(map(reaches_home, closure))
            or any(ins.opname == "IMPORT_NAME" and ins.argval in home_and_parents for ins in instructions)
        )
        named = any(
            ins.argval == name
            for ins in instructions
            if ins.opname in _ATTRIBUTE_OPS or (ins.opname == "LOAD_CONST" and isinstance(ins.argval, str))
        )
        if reachable and named:
            return True
        # The student's own helpers: functions of the same namespace that it calls by their global name (an
        # exercise wrapper counts as its function). A function captured in a closure is not followed: that is how
        # test harnesses wrap a reference, and in a notebook it takes a deliberate factory.
        helpers = [unwrap_exercise(namespace.get(n)) for n in global_names]
        return any(visit(h) for h in helpers if isinstance(h, types.FunctionType) and h.__globals__ is namespace)

    return any(visit(f) for f in _unwrap_partials(fn) if isinstance(f, types.FunctionType))


def require_own_function(exercise: str, fn: Any) -> None:
    """Refuse at once what cannot be the student's work: a non-function, or a function of the course library."""
    if is_remote(fn):
        return
    if not callable(fn):
        fail(f"expected a function, got {type(fn).__name__}. Pass the function itself, without calling it.")
    reference = reference_of(exercise)
    for target in _unwrap_partials(fn):
        if (reference is not None and target is reference) or is_library(getattr(target, "__module__", "") or ""):
            fail("this is the course library's reference implementation; write your own function.")


def refusal(exercise: str, fn: Any) -> str | None:
    """Why a function that would pass is refused (it calls the exercise's reference), or None."""
    reference = reference_of(exercise)
    if is_remote(fn) or reference is None or not calls_reference(fn, reference):
        return None
    return (
        f"your function calls the course library's `{reference.__name__}`, the answer to this exercise; write "
        f"the computation yourself (other library helpers are fine)."
    )


# --------------------------------------------------------------------------------------------------------------
# Functions that may see the tokens only
# --------------------------------------------------------------------------------------------------------------


class ModelRun(RuntimeError):
    """Raised by the forward pre-hook that guards a tokens-only function."""


def _is_third_party(func: types.FunctionType) -> bool:
    """A function of the standard library or an installed package (not the student's, not the course's)."""
    if func.__module__ in (None, "__main__") or is_library(func.__module__):
        return False
    path = getattr(sys.modules.get(func.__module__), "__file__", None) or ""
    return bool(path) and (path.startswith(_THIRD_PARTY_ROOTS) or "site-packages" in path)


def _hidden(value: Any) -> bool:
    """Models, the course library's modules, and its classes (an SAE class would compute a loss the student is asked
    to write)."""
    return (
        isinstance(value, torch.nn.Module)
        or (isinstance(value, types.ModuleType) and is_library(value.__name__))
        or (isinstance(value, type) and is_library(value.__module__))
    )


def _restricted_copy(fn: Callable, what: str) -> tuple[Callable, dict[str, str]]:
    """A copy of ``fn`` that cannot see models or the course library, and the names hidden from it."""
    hidden: dict[str, str] = {}
    copies: dict[int, Any] = {}

    def refuse_captured(owner: str, name: str, value: Any, where: str) -> None:
        if isinstance(value, (types.ModuleType, torch.nn.Module)):
            kind = "a model" if isinstance(value, torch.nn.Module) else f"the module `{value.__name__}`"
            fail(
                f"`{owner}` holds {kind} in {where} `{name}`; {what} must work from the tokens alone, so it may not "
                f"capture modules or models."
            )

    def restrict(value: Any) -> Any:
        value = unwrap_exercise(value)
        if isinstance(value, functools.partial):
            for i, arg in enumerate(value.args):
                refuse_captured(what, f"#{i}", arg, "the functools.partial argument")
            for name, arg in value.keywords.items():
                refuse_captured(what, name, arg, "the functools.partial argument")
            return functools.partial(restrict(value.func), *value.args, **value.keywords)
        if isinstance(value, types.FunctionType) and not _is_third_party(value):
            return copy(value)
        return value

    def copy(func: types.FunctionType) -> types.FunctionType:
        if id(func) in copies:
            return copies[id(func)]
        code = func.__code__
        positional_defaults = func.__defaults__ or ()
        first_default = code.co_argcount - len(positional_defaults)
        for name, value in zip(code.co_varnames[first_default:], positional_defaults):
            refuse_captured(func.__name__, name, value, "the default argument")
        for name, value in (func.__kwdefaults__ or {}).items():
            refuse_captured(func.__name__, name, value, "the default argument")
        namespace: dict[str, Any] = {"__builtins__": func.__globals__.get("__builtins__", builtins)}
        new_cells = tuple(types.CellType() for _ in code.co_freevars)
        clone = types.FunctionType(code, namespace, func.__name__, positional_defaults, new_cells or None)
        clone.__kwdefaults__ = func.__kwdefaults__
        copies[id(func)] = clone  # before recursing: a function that calls itself gets its own copy
        for name, cell, new_cell in zip(code.co_freevars, func.__closure__ or (), new_cells):
            if _cell_is_set(cell):
                refuse_captured(func.__name__, name, cell.cell_contents, "its closure variable")
                new_cell.cell_contents = restrict(cell.cell_contents)
        for name in {n for c in _code_objects(code) for n in c.co_names} & func.__globals__.keys():
            value = func.__globals__[name]
            if _hidden(value):
                hidden[name] = (
                    "a model"
                    if isinstance(value, torch.nn.Module)
                    else "a class of the course library"
                    if isinstance(value, type)
                    else "a module of the course library"
                )
            else:
                namespace[name] = restrict(value)
        return clone

    fn = unwrap_exercise(fn)
    if not isinstance(fn, (types.FunctionType, functools.partial)):
        fail(f"{what} should be a plain function (def or lambda), got {type(fn).__name__}.")
    return restrict(fn), hidden


def tokens_only(fn: Callable, what: str) -> Callable:
    """``fn`` as a function that can use only its arguments (see the module docstring); call it through
    :func:`~mechinterp_course.checking.call`. A graded notebook's stand-in runs it in a process of its own."""
    if is_remote(fn):
        return fn.isolated(what)
    restricted, hidden = _restricted_copy(fn, what)

    def run(*args: Any, **kwargs: Any) -> Any:
        ran: list[str] = []

        def refuse_forward(module, inputs):
            ran.append(type(module).__name__)
            raise ModelRun(type(module).__name__)

        handle = torch.nn.modules.module.register_module_forward_pre_hook(refuse_forward)
        try:
            result = restricted(*args, **kwargs)
        except ModelRun:
            result = None
        except NameError as error:
            if getattr(error, "name", None) in hidden:
                fail(
                    f"{what} uses `{error.name}`, {hidden[error.name]}: it must work from its arguments alone, so "
                    f"the check hides models and the course library from it."
                )
            raise
        finally:
            handle.remove()
        if ran:
            fail(
                f"{what} ran a model ({ran[0]}): it must work from its arguments alone, not from what a model does "
                f"on them."
            )
        return result

    return run


def no_training(fn: Callable, what: str) -> Callable:
    """``fn`` as a function that sees only its arguments (:func:`tokens_only`) and cannot train while it runs: no
    optimiser, no autograd (:mod:`.training_lock`). For exercises that write a model's weights by hand. A graded
    notebook's stand-in runs it in a process of its own, locked before the cell's imports run."""
    if is_remote(fn):
        return fn.isolated(what, no_training=True)
    from . import training_lock

    inner = tokens_only(fn, what)

    def run(*args: Any, **kwargs: Any) -> Any:
        unlock = training_lock.lock()
        try:
            return inner(*args, **kwargs)
        finally:
            unlock()

    return run
