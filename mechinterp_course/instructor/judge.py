"""Judging a graded notebook's test cells in the grader's own process.

A test cell is a list of calls such as ``check.ablate_head(ablate_head)`` and, in its hidden part (restored from
the gradebook), ``check.ablate_head(ablate_head, hidden="3f9a")``. :func:`judge_cell` reads those calls (they must
be plain calls with names and constants as arguments: :func:`~.export.test_cell_calls`) and runs each check, from
the chapter's real ``checks`` module, in this process:

- an argument that names a function of the student's becomes a :class:`KernelFunction`: calling it runs the
  student's function in the sandboxed kernel (:mod:`.probe`), on arguments sent with :mod:`.wire`; what comes back
  is plain data, and an exception comes back as :class:`~mechinterp_course.checking.StudentError`;
- a function that may see its arguments only (the counterexample hunt's) runs from the source of the cell that
  defines it, in a box of its own with no course library and no model (:class:`IsolatedFunction`);
- any other argument is read from the kernel as data.

The cell's outputs are written here: the success lines, or the check's message as a ``CheckFailed`` error. So the
verdict never passes through the student's kernel.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import importlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import torch
from nbformat import NotebookNode

from ..checking import CheckFailed, ExerciseRecord, StudentError, current_record, training_lock, using_record
from . import execute, export, wire

#: A kernel call's time limit when the check has not set one (the cell timeout is passed in by the grader).
CALL_TIMEOUT_S = execute.DEFAULT_TIMEOUT_S


def _raise_student_error(message: dict) -> None:
    error = message.get("error") or {}
    kinds = [str(k) for k in error.get("kinds") or ["Exception"]][:20]
    raise StudentError(kinds, str(error.get("message", ""))[:4000])


class KernelFunction:
    """Stands for the student's function ``name`` (module docstring); calls run in the kernel."""

    runs_in_kernel = True

    def __init__(self, kernel: execute.Kernel, name: str, judge: Judge):
        self.kernel, self.name, self.judge = kernel, name, judge
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<the student's {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        path = self.kernel.exchange_file(wire.dump_call(args, kwargs))
        code = f"__import__('mechinterp_course.instructor.probe', fromlist=['call']).call({self.name!r}, {path!r})"
        try:
            message = self.kernel.probe(code, self.judge.timeout)
        except TimeoutError as error:
            raise StudentError(["TimeoutError"], str(error)) from None
        finally:
            # The exchange folder is small (a 64 MB tmpfs when grading as root): a check that passes a model many
            # times filled it (chapter 04's language model, 6 MB a call), so each call's file goes once answered.
            self.kernel.release_file(path)
        reached = current_record().reached
        if reached is not None:
            reached.update(str(name) for name in message.get("reached") or [] if isinstance(name, str))
        if "changed" in message:  # the function changed tensor arguments in place: make the check see it
            try:
                changed = wire.decode(message["changed"])
                for index, value in changed.items():
                    original = args[int(index)]
                    if (
                        isinstance(original, torch.Tensor)
                        and isinstance(value, torch.Tensor)
                        and value.shape == original.shape
                        and value.dtype == original.dtype
                    ):
                        original.copy_(value)
            except (wire.WireError, ValueError, KeyError, IndexError):
                pass
        if "error" in message:
            kinds = (message.get("error") or {}).get("kinds") or []
            if "KeyboardInterrupt" in kinds:
                raise StudentError(["TimeoutError"], f"it ran for more than {self.judge.timeout:g} s and was stopped")
            _raise_student_error(message)
        try:
            return wire.decode(message.get("ok"))
        except (wire.WireError, ValueError, KeyError) as error:
            raise StudentError(["TypeError"], f"the grader cannot read what your function returned: {error}") from None

    def isolated(self, what: str, no_training: bool = False) -> IsolatedFunction:
        return IsolatedFunction(self.judge, self.name, what, no_training)


class IsolatedFunction:
    """The student's function ``name`` run from the source of the solution cell that defines it, in a box with no
    course library, no model and no network (:meth:`Plan.spec` with ``isolate``). It can use ``torch``,
    ``einops``, ``math``, ``numpy`` (as ``np``) and ``functools``, and the cell's own imports, constants and
    functions (without decorators). With ``no_training`` the box also has no optimiser and no autograd
    (``checking.training_lock``), locked before the cell's own imports run."""

    runs_in_kernel = True

    def __init__(self, judge: Judge, name: str, what: str, no_training: bool = False):
        self.judge, self.name, self.what, self.no_training = judge, name, what, no_training
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.judge.isolated_call(self.name, self.what, args, kwargs, self.no_training)


#: What the isolated box runs: read the wire module's source, then the student's cell, then calls, from stdin.
_ISOLATED_RUNNER = r"""
import base64, json, struct, sys, types
def read():
    size = struct.unpack(">I", sys.stdin.buffer.read(4))[0]
    return json.loads(sys.stdin.buffer.read(size))
def send(message):
    data = json.dumps(message).encode()
    sys.stdout.buffer.write(struct.pack(">I", len(data)) + data)
    sys.stdout.buffer.flush()
import functools, math
import einops, numpy, torch  # before the first read: a runner started ahead of time is ready when it is needed
wire = types.ModuleType("wire")
exec(compile(read()["wire"], "wire.py", "exec"), wire.__dict__)
namespace = {"__name__": "__student__", "torch": torch, "einops": einops, "math": math, "np": numpy,
             "numpy": numpy, "functools": functools}
cell = read()
if cell.get("prelude"):
    prelude = types.ModuleType("training_lock")
    exec(compile(cell["prelude"], "training_lock.py", "exec"), prelude.__dict__)
    prelude.lock()
try:
    exec(compile(cell["source"], "<your cell>", "exec"), namespace)
    send({"ready": True})
except BaseException as error:
    send({"error": {"kinds": [k.__name__ for k in type(error).__mro__][:-1], "message": str(error)}})
    sys.exit(0)
while True:
    request = read()
    try:
        args, kwargs = wire.load_call(base64.b64decode(request["args"]))
        send({"ok": wire.encode(namespace[request["name"]](*args, **kwargs))})
    except BaseException as error:
        send({"error": {"kinds": [k.__name__ for k in type(error).__mro__][:-1], "message": str(error)[:4000]}})
"""


def defining_source(nb: NotebookNode, before: int, name: str) -> str:
    """The imports, constant assignments and function definitions (decorators removed) of the last solution cell
    before cell ``before`` that defines ``name``: what an isolated function may use."""
    for cell in reversed(nb.cells[:before]):
        if cell.cell_type != "code" or not (cell.metadata.get("nbgrader") or {}).get("solution"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError as error:
            raise StudentError(["SyntaxError"], f"the cell that defines {name} does not parse: {error}") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body):
            continue
        kept = []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                node.decorator_list = []
                kept.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
                kept.append(node)
        return ast.unparse(ast.Module(body=kept, type_ignores=[]))
    raise StudentError(["NameError"], f"no solution cell defines {name}")


class Judge:
    """Judges the test cells of one notebook against one kernel (:mod:`.execute` calls :meth:`__call__`)."""

    def __init__(self, chapter_package: str, timeout: float = CALL_TIMEOUT_S, slot: execute.Slot | None = None):
        self.checks = importlib.import_module(f"mechinterp_course.{chapter_package}.checks")
        self.timeout = timeout
        self.slot = slot
        self.record = ExerciseRecord()
        self.problems: list[str] = []
        self._nb: NotebookNode | None = None
        self._index = 0
        self._isolated: subprocess.Popen | None = None
        self._isolated_for: tuple[str, bool] | None = None
        self._spare: subprocess.Popen | None = None

    # -- one test cell -----------------------------------------------------------------------------------------

    def __call__(self, nb: NotebookNode, index: int, kernel: execute.Kernel) -> list[NotebookNode]:
        self._nb, self._index = nb, index
        try:
            calls = export.test_cell_calls(nb.cells[index].source)
        except export.ExportError as error:
            self.problems.append(f"{execute.label(nb.cells[index], index)} could not be read ({error})")
            return [execute.error_output("NotGraded", f"the grader could not read this test cell: {error}")]
        stdout = io.StringIO()
        grad = getattr(self.checks, "NOTEBOOK_GRAD_ENABLED", True)
        try:
            with using_record(self.record), contextlib.redirect_stdout(stdout), torch.set_grad_enabled(grad):
                for call in calls:
                    self._run(call, kernel)
        except CheckFailed as failure:
            return self._outputs(stdout, execute.error_output("CheckFailed", str(failure)))
        except execute.KernelDied:
            raise
        except Exception as error:  # noqa: BLE001 - a check that cannot read an answer is still a failed cell
            self.problems.append(
                f"{execute.label(nb.cells[index], index)}: the check stopped with {type(error).__name__}: {error}"
            )
            return self._outputs(
                stdout,
                execute.error_output(
                    "CheckFailed", f"the check could not use your answer ({type(error).__name__}: {error})"
                ),
            )
        finally:
            self._stop_isolated()
        return self._outputs(stdout, None)

    @staticmethod
    def _outputs(stdout: io.StringIO, error: NotebookNode | None) -> list[NotebookNode]:
        outputs = []
        if stdout.getvalue():
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=stdout.getvalue()))
        if error is not None:
            outputs.append(error)
        return outputs

    def _run(self, call: ast.Call, kernel: execute.Kernel) -> None:
        check = getattr(self.checks, call.func.attr, None)
        if check is None or not getattr(check, "exercise", None):
            raise CheckFailed(f"the course has no check called {call.func.attr!r}")
        args = [self._argument(node, kernel) for node in call.args]
        kwargs = {k.arg: self._argument(k.value, kernel) for k in call.keywords}
        check(*args, **kwargs)

    def _argument(self, node: ast.expr, kernel: execute.Kernel) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        name = node.id
        described = kernel.probe(
            f"__import__('mechinterp_course.instructor.probe', fromlist=['x']).describe({name!r})", self.timeout
        )
        if not described.get("defined"):
            raise CheckFailed(f"`{name}` is not defined: run the cell that defines it (did it raise an error?).")
        if described.get("callable"):
            return KernelFunction(kernel, name, self)
        message = kernel.probe(
            f"__import__('mechinterp_course.instructor.probe', fromlist=['x']).fetch({name!r})", self.timeout
        )
        if "error" in message:
            error = message["error"]
            raise CheckFailed(f"the grader could not read `{name}`: {error.get('message', '')}")
        try:
            return wire.decode(message.get("ok"))
        except (wire.WireError, ValueError, KeyError) as error:
            raise CheckFailed(f"the grader could not read `{name}`: {error}") from None

    # -- functions that may see their arguments only -----------------------------------------------------------

    def isolated_call(self, name: str, what: str, args: tuple, kwargs: dict, no_training: bool = False) -> Any:
        source = defining_source(self._nb, self._index, name)
        if self._isolated is None or self._isolated_for != (source, no_training):  # one process per defining cell
            self._start_isolated(source, what, no_training)
        request = {"name": name, "args": base64.b64encode(wire.dump_call(args, kwargs)).decode()}
        message = self._exchange(request)
        if "error" in message:
            _raise_student_error(message)
        try:
            return wire.decode(message.get("ok"))
        except (wire.WireError, ValueError, KeyError) as error:
            raise StudentError(["TypeError"], f"the grader cannot read what {what} returned: {error}") from None

    def prepare(self, nb: NotebookNode) -> None:
        """Start a runner for functions that may see their arguments only ahead of time (it imports torch while the
        notebook's first cells run) if one of the notebook's test cells will need it: the checks module names those
        checks in ``ISOLATED_CHECKS``. One runner serves one cell of one notebook, never two students."""
        needed = set(getattr(self.checks, "ISOLATED_CHECKS", ()))
        calls = []
        for cell in nb.cells:
            if execute.is_test(cell):
                try:
                    calls += [call.func.attr for call in export.test_cell_calls(cell.source)]
                except export.ExportError:
                    continue
        if needed & set(calls) and self._spare is None:
            self._spare = self._spawn()

    def close(self) -> None:
        self._stop_isolated()
        if self._spare is not None:
            _kill(self._spare)
            self._spare = None

    def _spawn(self) -> subprocess.Popen:
        command = [sys.executable, "-I", "-c", _ISOLATED_RUNNER]
        if self.slot is not None:
            root = self.slot.root / "isolated"
            root.mkdir(parents=True, exist_ok=True)
            uid = self.slot.uid
            env = self.slot.env("/tmp/isolated")
            spec = self.slot.plan.spec(work_dir="/tmp/isolated", ipc_dir=str(root), uid=uid, env=env, isolate=True)
            spec.write(root / "spec.json")
            command = [
                sys.executable,
                "-m",
                "mechinterp_course.instructor.sandbox",
                str(root / "spec.json"),
                "--",
                *command,
            ]
        return subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def _start_isolated(self, source: str, what: str, no_training: bool = False) -> None:
        self._stop_isolated()
        self._isolated, self._spare = self._spare or self._spawn(), None
        self._isolated_for = (source, no_training)
        self._send({"wire": Path(wire.__file__).read_text()})
        prelude = Path(training_lock.__file__).read_text() if no_training else ""
        self._send({"source": source, "prelude": prelude})
        ready = self._receive()
        if "error" in ready:
            self._stop_isolated()
            error = ready["error"]
            raise StudentError(
                error.get("kinds") or ["Exception"],
                f"the cell that defines {what} failed when run on its own (it may use only torch, "
                f"einops, math and plain Python): {error.get('message', '')}",
            )

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        self._isolated.stdin.write(struct.pack(">I", len(data)) + data)
        self._isolated.stdin.flush()

    def _receive(self) -> dict:
        import select

        stream = self._isolated.stdout
        ready, _, _ = select.select([stream], [], [], self.timeout)
        if not ready:
            self._stop_isolated()
            raise StudentError(["TimeoutError"], f"it ran for more than {self.timeout:g} s and was stopped")
        header = stream.read(4)
        if len(header) < 4:
            self._stop_isolated()
            raise StudentError(["RuntimeError"], "the process running it died (the memory limit, os._exit, ...)")
        size = struct.unpack(">I", header)[0]
        if size > wire.MAX_TENSOR_BYTES * 2:
            self._stop_isolated()
            raise StudentError(["RuntimeError"], "it returned too much data")
        return json.loads(stream.read(size))

    def _exchange(self, request: dict) -> dict:
        self._send(request)
        return self._receive()

    def _stop_isolated(self) -> None:
        if self._isolated is not None:
            _kill(self._isolated)
        self._isolated = None
        self._isolated_for = None


def _kill(process: subprocess.Popen) -> None:
    """End a runner and everything in its box."""
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(timeout=10)
