"""Running a submitted notebook: a sandboxed kernel per notebook, cell by cell, test cells judged by the grader.

:class:`Kernel` starts one kernel in a box (:mod:`.sandbox`) and talks to it over Unix sockets (the box has no
network); :func:`run_notebook` runs a notebook's code cells in order. What it guarantees:

- **Test cells never run in the kernel.** Each is handed to the judge (:mod:`.judge`), which runs the check in the
  grader's process and writes the cell's output itself: nothing the student's code does (silencing tracebacks,
  rebinding checks, printing megabytes, catching errors) can make a failed check look passed.
- **Every other cell** runs with a time limit (then it is interrupted, and if that does not stop it the kernel is
  killed), a cap on the output it keeps, and the display updates a notebook expects (live training curves).
- **A cell that kills the kernel** (``os._exit``, a crash, the memory limit) gets an error output; a fresh kernel
  replays the cells before it (outputs discarded) and goes on, at most :data:`MAX_KERNEL_RESTARTS` times.

Only the grader's own process reads what the kernel sends, and it reads values only through :mod:`.wire`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import sandbox

#: Per-cell limit (seconds) unless the instructor sets one.
DEFAULT_TIMEOUT_S = 120
#: How long a new kernel may take to start (seconds); generous, because grading machines are often busy.
KERNEL_STARTUP_TIMEOUT_S = 120
#: A notebook that kills or hangs its kernel more often than this is not run further (its later cells score zero).
MAX_KERNEL_RESTARTS = 3
#: Output kept per cell (characters of JSON), so a print loop cannot fill the grader's memory or the gradebook.
MAX_OUTPUT_CHARS_PER_CELL = 200_000
#: Largest message the grader accepts from a kernel (bytes); a larger one disconnects it.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: After an interrupt, how long a cell has to stop before the kernel is killed (seconds).
INTERRUPT_GRACE_S = 10
#: Marks a cell the grader inserted in place of a deleted test cell (never run; scores zero).
DELETED_MARK = "mechinterp_deleted"
#: Size of the in-memory folder that holds a kernel's sockets and the grader's messages (MB).
IPC_FOLDER_MB = 64


class KernelDied(RuntimeError):
    """The kernel died (or stopped answering and was killed) while running something."""


@dataclass
class Outcome:
    """What running one piece of code produced."""

    status: str  # "ok", "error", "timeout", "dead", "unresponsive"
    outputs: list[NotebookNode] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # every display_data of the probe's MIME type


def error_output(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


@dataclass
class Slot:
    """One grading slot: its folder (sockets, the grader's messages), its user id, the box plan, the environment."""

    index: int
    root: Path
    plan: sandbox.Plan
    threads: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def uid(self) -> int | None:
        return sandbox.slot_uid(self.index)

    def env(self, work_dir: str) -> dict[str, str]:
        """The kernel's whole environment: no secrets of the grader's, caches in the working folder, offline."""
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": work_dir,
            "TMPDIR": "/tmp",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "IPYTHONDIR": f"{work_dir}/.ipython",
            "MPLCONFIGDIR": f"{work_dir}/.matplotlib",
            "XDG_CACHE_HOME": f"{work_dir}/.cache",
            "JUPYTER_RUNTIME_DIR": f"{work_dir}/.jupyter",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "disabled",
            "TOKENIZERS_PARALLELISM": "false",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "NBGRADER_EXECUTION": "autograde",
            "MECHINTERP_GRADING": "1",
        }
        for key in ("PYTHONPATH", "COURSE_NETWORK_LOG"):  # the test suite's network guard, if it is on
            if os.environ.get(key):
                env[key] = os.environ[key]
        env.update(self.extra_env)
        return env


def _release(folder: Path) -> None:
    """Unmount a kernel's socket folder if a previous kernel mounted it."""
    if os.geteuid() == 0 and os.path.ismount(folder):
        sandbox.unmount(str(folder))


class Kernel:
    """One sandboxed IPython kernel (start, run code, interrupt, kill). ``files``: the released chapter folder's
    files, copied into the kernel's private working folder."""

    def __init__(self, slot: Slot, files: dict[str, str]):
        self.slot, self.files = slot, files
        self.km = self.kc = None
        self.status: dict = {}
        self.ipc = slot.root / "ipc"
        self.work_dir = f"/tmp/mechinterp-work-{slot.index}"
        self._calls = 0

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        import zmq
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpec

        self.shutdown()
        _release(self.ipc)
        if self.ipc.exists():
            shutil.rmtree(self.ipc, ignore_errors=True)
        self.ipc.mkdir(parents=True)
        if os.geteuid() == 0:  # the one folder the kernel can write outside its box: keep it small
            sandbox.mount_small_tmpfs(str(self.ipc), IPC_FOLDER_MB)
        uid = self.slot.uid
        if uid is not None:
            os.chown(self.ipc, uid, uid)
        self.ipc.chmod(0o700)
        connection = str(self.ipc / "connection.json")
        status_file = self.ipc / "box.json"  # in the kept folder: written after the rest is hidden
        spec = self.slot.plan.spec(
            work_dir=self.work_dir,
            ipc_dir=str(self.ipc),
            uid=uid,
            env=self.slot.env(self.work_dir),
            files=self.files,
            chown=[connection],
            status_file=str(status_file),
        )
        spec_file = self.slot.root / "box-spec.json"
        spec.write(spec_file)
        argv = [
            sys.executable,
            "-m",
            "mechinterp_course.instructor.sandbox",
            str(spec_file),
            "--",
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--HistoryManager.enabled=False",
            "--IPKernelApp.trio_loop=False",
        ]
        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        km = KernelManager(transport="ipc", ip=str(self.ipc / "kernel"), connection_file=connection, context=context)
        km._kernel_spec = KernelSpec(
            argv=argv, display_name="Python 3 (graded)", language="python", interrupt_mode="signal"
        )
        km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.km, self.kc = km, km.client(context=context)
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=KERNEL_STARTUP_TIMEOUT_S)
        except RuntimeError as error:
            self.shutdown()
            raise KernelDied(f"the grading kernel did not start ({error})") from error
        try:
            self.status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            self.status = {}

    def alive(self) -> bool:
        return self.km is not None and self.km.is_alive()

    def shutdown(self) -> None:
        """Kill the kernel and everything in its box (its PID namespace ends with it)."""
        if self.kc is not None:
            try:
                self.kc.stop_channels()
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.km is not None:
            provisioner = getattr(self.km, "provisioner", None)
            pgid = getattr(provisioner, "pgid", None)
            try:
                self.km.shutdown_kernel(now=True)
            except Exception:  # noqa: BLE001
                pass
            if pgid and pgid != os.getpgrp():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.km.context.destroy(linger=0)
            except Exception:  # noqa: BLE001
                pass
        self.km = self.kc = None

    def close(self) -> None:
        """Shut down and give back the socket folder."""
        self.shutdown()
        _release(self.ipc)

    # -- running code ------------------------------------------------------------------------------------------

    def run(self, code: str, timeout: float, keep_outputs: bool = True) -> Outcome:
        """Execute ``code``; returns the outputs (capped) and how it ended. A timeout interrupts the cell; a cell
        that does not stop then, or that kills the kernel, ends with status "unresponsive" or "dead"."""
        from .probe import MIME_TYPE

        msg_id = self.kc.execute(code, store_history=keep_outputs, allow_stdin=False, stop_on_error=False)
        outcome = Outcome("ok")
        used = 0
        cut = False
        displays: dict[str, list[NotebookNode]] = {}
        deadline = time.monotonic() + timeout
        interrupted_at = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now > deadline:
                self.km.interrupt_kernel()
                interrupted_at = now
                outcome.status = "timeout"
            if interrupted_at is not None and now > interrupted_at + INTERRUPT_GRACE_S:
                outcome.status = "unresponsive"
                return outcome
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                if not self.alive():
                    outcome.status = "dead"
                    return outcome
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "display_data" and MIME_TYPE in content.get("data", {}):
                try:
                    outcome.messages.append(json.loads(content["data"][MIME_TYPE]))
                except (TypeError, ValueError):
                    outcome.messages.append({"error": {"kinds": ["ValueError"], "message": "malformed reply"}})
                continue
            if kind == "error" and outcome.status == "ok":
                outcome.status = "error"
            if not keep_outputs:
                continue
            if kind == "clear_output":
                outcome.outputs.clear()
                used = 0
                continue
            if kind == "update_display_data":
                for output in displays.get(content.get("transient", {}).get("display_id"), []):
                    output["data"], output["metadata"] = content.get("data", {}), content.get("metadata", {})
                continue
            if kind not in ("stream", "display_data", "execute_result", "error") or cut:
                continue
            output = nbformat.v4.output_from_msg(msg)
            size = len(json.dumps(output))
            if used + size > MAX_OUTPUT_CHARS_PER_CELL:
                cut = True
                if output.get("output_type") == "stream":
                    output.text = output.text[: max(0, MAX_OUTPUT_CHARS_PER_CELL - used)]
                    outcome.outputs.append(output)
                outcome.outputs.append(
                    nbformat.v4.new_output(
                        "stream", name="stdout", text=f"\n[output cut at {MAX_OUTPUT_CHARS_PER_CELL} characters]\n"
                    )
                )
                continue
            used += size
            if (
                outcome.outputs
                and output.get("output_type") == "stream"
                and outcome.outputs[-1].get("output_type") == "stream"
                and outcome.outputs[-1].get("name") == output.get("name")
            ):
                outcome.outputs[-1].text += output.text
            else:
                outcome.outputs.append(output)
            display_id = content.get("transient", {}).get("display_id")
            if display_id:
                displays.setdefault(display_id, []).append(output)
        try:  # keep the shell channel drained
            self.kc.get_shell_msg(timeout=5)
        except queue.Empty:
            pass
        return outcome

    def probe(self, code: str, timeout: float) -> dict:
        """Run a probe (:mod:`.probe`) and return its message. Raises :class:`KernelDied` if the kernel dies or
        does not stop after an interrupt, TimeoutError if it stopped after one."""
        outcome = self.run(code, timeout, keep_outputs=False)
        if outcome.status in ("dead", "unresponsive"):
            raise KernelDied("the kernel died" if outcome.status == "dead" else "the kernel stopped responding")
        if outcome.status == "timeout":
            raise TimeoutError(f"it ran for more than {timeout:g} s and was stopped")
        if not outcome.messages:
            return {
                "error": {
                    "kinds": ["RuntimeError"],
                    "message": "the kernel sent no answer (did your code replace the grader's probe?)",
                }
            }
        return outcome.messages[-1]

    def exchange_file(self, data: bytes) -> str:
        """Write ``data`` where the kernel can read it; returns the path."""
        self._calls += 1
        path = self.ipc / f"args-{self._calls}.pkl"
        path.write_bytes(data)
        path.chmod(0o644)
        return str(path)

    def release_file(self, path: str) -> None:
        """Delete a file :meth:`exchange_file` wrote, once the kernel has answered the call that read it."""
        Path(path).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# A whole notebook
# --------------------------------------------------------------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def is_test(cell) -> bool:
    """An autograded test cell: graded code (nbgrader's "autograder tests")."""
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def label(cell, index: int) -> str:
    grade_id = _nbgrader(cell).get("grade_id")
    return f"cell {index + 1} ({grade_id})" if grade_id else f"cell {index + 1}"


def run_notebook(
    nb: NotebookNode,
    kernel: Kernel,
    judge: Callable[[NotebookNode, int, Kernel], list],
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[str]:
    """Run the notebook's code cells in order (module docstring); ``judge(nb, index, kernel)`` gives a test cell's
    outputs. Returns notes for the feedback."""
    notes: list[str] = []
    todo = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.metadata.get(DELETED_MARK)]
    broken: set[int] = set()  # cells that killed or hung a kernel: never run again
    done = 0
    restarts = 0
    while done < len(todo):
        try:
            kernel.start()
        except Exception as error:  # noqa: BLE001 - the grader's problem, not the student's: say so, go on
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            for i in todo[done:]:
                nb.cells[i].outputs = [error_output("NotRun", f"not run: the grading kernel failed ({message})")]
            notes.append(f"grading problem, not the student's: the kernel failed ({message}); regrade this student")
            break
        current = None
        try:
            for i in todo[:done]:  # a restarted kernel first replays what ran before
                if i not in broken and not is_test(nb.cells[i]):
                    current = ("replay", i)
                    outcome = kernel.run(nb.cells[i].source, timeout, keep_outputs=False)
                    if outcome.status in ("dead", "unresponsive"):
                        raise KernelDied(outcome.status)
            while done < len(todo):
                i = todo[done]
                cell = nb.cells[i]
                current = ("run", i)
                if is_test(cell):
                    cell.outputs = judge(nb, i, kernel)
                else:
                    outcome = kernel.run(cell.source, timeout)
                    cell.outputs = outcome.outputs
                    if outcome.status in ("dead", "unresponsive"):
                        raise KernelDied(outcome.status)
                    if outcome.status == "timeout":
                        cell.outputs.append(
                            error_output(
                                "CellTimeoutError", f"this cell ran for more than {timeout:g} s and was stopped"
                            )
                        )
                        notes.append(f"{label(cell, i)} ran for more than {timeout:g} s and was stopped")
                done += 1
        except KernelDied as error:
            what, i = current
            broken.add(i)
            died = "dead" in str(error) or "died" in str(error)
            if what == "run":
                if is_test(nb.cells[i]):
                    why = (
                        "the kernel died while the check ran your function"
                        if died
                        else "your function did not stop when interrupted, so the kernel was stopped"
                    )
                    nb.cells[i].outputs = [error_output("CheckFailed", f"{why}; later cells ran in a restarted kernel")]
                elif died:
                    nb.cells[i].outputs.append(
                        error_output(
                            "DeadKernelError",
                            "the kernel died while running this cell (os._exit, a crash, the memory "
                            "limit ...); later cells ran in a restarted kernel",
                        )
                    )
                else:
                    nb.cells[i].outputs.append(
                        error_output(
                            "KernelUnresponsive",
                            f"this cell ran for more than {timeout:g} s and did not stop when "
                            f"interrupted (does it catch KeyboardInterrupt?); later cells ran in a "
                            f"restarted kernel",
                        )
                    )
                done += 1
            reason = "the kernel died" if died else "the kernel stopped responding"
            notes.append(
                f"{reason} {'while running' if what == 'run' else 'again when re-running'} {label(nb.cells[i], i)}"
            )
            restarts += 1
            if restarts > MAX_KERNEL_RESTARTS:
                for j in todo[done:]:
                    nb.cells[j].outputs = [error_output("NotRun", "not run: the kernel died too often")]
                notes.append(
                    f"the kernel died {restarts} times; the remaining {len(todo) - done} code cells were not run"
                )
                break
        finally:
            kernel.shutdown()
    return notes
