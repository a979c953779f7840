"""No optimiser, no autograd: what a "write the weights by hand" function runs under.

:func:`lock` replaces torch's optimisers (``torch.optim``: every ``Optimizer`` refuses to start, and the module's
attributes cannot be read) and the autograd entry points (``Tensor.backward``, ``torch.autograd.grad`` and
``backward``, the engine that runs them, ``torch.func``'s gradient transforms) by functions that raise
:class:`TrainingRefused`; the function returned by :func:`lock` puts everything back.

What this does and does not enforce. It stops the ordinary ways to train inside the function: an optimiser, a
backward pass, a ``torch.func.grad``. It cannot stop a student who derives gradients by hand and writes their own
descent loop in plain tensor arithmetic; the checks add a time budget per call (a loop long enough to train is
likely to exceed it), and the grader runs the function from its cell's source in a process of its own, with this lock
in place before the cell's own imports run, no course library and no model. This module is self-contained (torch
only): the grader sends its source to that process.
"""

from __future__ import annotations

import sys
import types


class TrainingRefused(RuntimeError):
    """Raised when a hand-written-weights function tries to train."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise TrainingRefused(
            f"{what} is not available here: the weights must be written by hand, from the explanation, "
            f"without training."
        )

    return refuse


class _ForbiddenModule(types.ModuleType):
    def __getattr__(self, name: str):
        _refuse(f"torch.optim.{name}")()


def lock() -> callable:
    """Make training impossible by the ordinary routes; returns a function that undoes it."""
    saved: list[tuple[object, str, object]] = []

    def replace(owner: object, name: str, value: object) -> None:
        if hasattr(owner, name):
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)

    import torch.autograd.functional  # noqa: F401 - so that it is there to lock
    import torch.func
    import torch.optim

    replace(torch.optim.Optimizer, "__init__", _refuse("an optimiser (torch.optim)"))
    replace(torch.Tensor, "backward", _refuse("backward()"))
    replace(torch.autograd, "backward", _refuse("torch.autograd.backward"))
    replace(torch.autograd, "grad", _refuse("torch.autograd.grad"))
    engine = torch.autograd.variable.Variable
    replace(engine, "_execution_engine", types.SimpleNamespace(run_backward=_refuse("the autograd engine")))
    for name in ("grad", "grad_and_value", "vjp", "jacrev", "jacfwd", "hessian", "jvp"):
        replace(torch.func, name, _refuse(f"torch.func.{name}"))
    for name in ("jacobian", "hessian", "vjp", "jvp", "vhp", "hvp"):
        replace(torch.autograd.functional, name, _refuse(f"torch.autograd.functional.{name}"))
    forbidden = _ForbiddenModule("torch.optim")
    saved.append((sys.modules, "torch.optim", sys.modules["torch.optim"]))
    sys.modules["torch.optim"] = forbidden
    replace(torch, "optim", forbidden)

    def unlock() -> None:
        for owner, name, value in reversed(saved):
            if owner is sys.modules:
                sys.modules[name] = value
            else:
                setattr(owner, name, value)

    return unlock
