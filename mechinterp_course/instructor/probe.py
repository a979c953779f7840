"""The grader's hands inside a graded kernel: run one of the student's functions, or read one of their values.

While a notebook is graded its test cells never run in the kernel. The grader runs each check in its own process
(:mod:`.judge`); when the check calls the student's function, the grader asks the kernel to run it here::

    __import__("mechinterp_course.instructor.probe", fromlist=["x"]).call("ablate_head", "/ipc/args-3.pkl")

and reads the answer from a display message of :data:`MIME_TYPE` (:mod:`.wire` format). Student code can replace
this module in its kernel, but that gains nothing: the verdict is computed by the grader from what comes back, on
inputs the kernel only sees once they are asked for, with no reference answer anywhere the kernel can read.
"""

from __future__ import annotations

import sys
from typing import Any

#: The MIME type of the grader's messages in the kernel's output.
MIME_TYPE = "application/x.mechinterp-probe+json"


def _namespace() -> dict:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else sys.modules["__main__"].__dict__


def _send(message: dict) -> None:
    from IPython.display import publish_display_data

    from .wire import to_json

    publish_display_data({MIME_TYPE: to_json(message)})


def _error(error: BaseException) -> dict:
    kinds = [klass.__name__ for klass in type(error).__mro__ if klass not in (object, BaseException)]
    return {"error": {"kinds": kinds, "message": str(error)[:4000]}}


def _lookup(name: str) -> Any:
    from ..checking import unwrap_exercise

    namespace = _namespace()
    if name not in namespace:
        raise NameError(f"name {name!r} is not defined")
    return unwrap_exercise(namespace[name])


def describe(name: str) -> None:
    """Whether ``name`` is defined and callable."""
    namespace = _namespace()
    value = namespace.get(name)
    _send({"defined": name in namespace, "callable": callable(value)})


def fetch(name: str) -> None:
    """The value of ``name``, encoded for the grader."""
    from .wire import encode

    try:
        message = {"ok": encode(_lookup(name))}
    except BaseException as error:  # noqa: BLE001 - reported to the grader, who says what it was
        message = _error(error)
    _send(message)


def call(name: str, args_file: str) -> None:
    """Run the student's function ``name`` on the arguments the grader wrote to ``args_file``; send back what it
    returned or raised, the tensor arguments it changed in place, and the exercise functions it reached."""
    import torch

    from ..checking import current_record
    from .wire import encode, load_call

    try:
        with open(args_file, "rb") as f:
            args, kwargs = load_call(f.read())
    except BaseException as error:  # noqa: BLE001 - the grader's problem, said as such rather than no answer at all
        _send(
            _error(
                RuntimeError(
                    f"the grader could not pass the arguments to this kernel ({type(error).__name__}: "
                    f"{error}); this is not your code's fault: tell your instructor"
                )
            )
        )
        return
    before = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
    record = current_record()
    record.reached = set()
    try:
        fn = _lookup(name)
        if not callable(fn):
            raise TypeError(f"{name} is a {type(fn).__name__}, not a function")
        message: dict = {"ok": encode(fn(*args, **kwargs))}
    except BaseException as error:  # noqa: BLE001 - the student's error is the grader's information
        message = _error(error)
    finally:
        reached, record.reached = sorted(record.reached or ()), None
    changed = {
        str(i): a
        for i, (a, b) in enumerate(zip(args, before))
        if b is not None and (a.shape != b.shape or not torch.equal(a, b))
    }
    message["reached"] = reached
    if changed:
        try:
            message["changed"] = encode(changed)
        except BaseException:  # noqa: BLE001
            pass
    _send(message)
