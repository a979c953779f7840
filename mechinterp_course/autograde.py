"""Autograde a batch of submitted notebooks with nbgrader, without letting one broken submission stop the batch.

    report = grade("circuits", ["downloads/"], "grading/")

Input. ``paths`` are notebooks, folders of notebooks (one ``.ipynb`` per student, as an LMS downloads them), or an
nbgrader tree ``submitted/<student>/<chapter>/<notebook>.ipynb`` (the folder ``submitted`` itself, its parent, or
one ``<student>`` folder). In a tree, ``<chapter>.ipynb`` is graded, or the folder's only notebook whatever its name
(with a note); a folder with none, or several others, scores zero with the reason.
The student id of a loose notebook is its file name (:func:`student_id_from_filename`): the stem with the chapter's
name (``01_circuits`` or ``circuits``, as a whole word) removed, every run of characters other than letters, digits
and ``-`` replaced by ``_``, a run of ``_`` and ``-`` that contains a ``_`` shortened to one ``_``, and ``_``/``-``
stripped from both ends; ``smith_john_12345_67890_01_circuits.ipynb`` is ``smith_john_12345_67890`` and
``Jane Doe - 01_circuits (1).ipynb`` is ``Jane_Doe_1``. If nothing is left, the whole stem is used. In a tree the
id is the folder name, sanitised the same way. Two submissions with the same id are an error (rename one).

Output (``out_dir`` is an ordinary nbgrader course directory, so ``jupyter lab`` there opens the formgrader)::

    gradebook.db                              nbgrader's SQLite gradebook (manual grades survive a regrade)
    grades.csv                                ``nbgrader export`` of this chapter, one row per student
    problems.csv                              per student: the file graded, scores and every problem found
    feedback/<student>/<chapter>/<chapter>.html  nbgrader generate_feedback, one file per student
    submitted/, autograded/, source/, release/   nbgrader's own folders; submitted/ holds the executed notebooks
    nbgrader_config.py                        the configuration below, for the formgrader

Design: two stages, so that student code never runs where the grades live.

1. Stage 1 runs each student's notebook in a fresh kernel whose working directory is a private temporary folder
   (a copy of the released chapter folder, nothing else). Before it runs, the notebook is repaired against the
   released one (:func:`repair_notebook`: cells that lost their nbgrader metadata, deleted test cells) and sanitised
   by nbgrader's own preprocessors (``OverwriteCells`` restores edited test cells, hidden tests included, from the
   gradebook). Execution (:func:`execute_notebook`) has a per-cell timeout and survives a dead kernel: the cell that
   killed it gets an error output, a new kernel replays the cells before it and carries on. Before grading, stderr
   output is dropped from test cells (see below).
2. Stage 2 runs ``nbgrader autograde`` in ``out_dir`` on the executed notebooks with nbgrader's ``Execute``
   preprocessor disabled (``Execute.enabled = False``) and ``ClearOutput`` left out of
   ``Autograde.sanitize_preprocessors``: the scores come from the recorded outputs and no student code runs again.
   Then ``nbgrader generate_feedback`` and ``nbgrader export``.

Why the stderr rule. nbgrader 0.9.6 scores a test cell zero if any output is an error *or a stderr stream*
(``nbgrader.utils.determine_grade``), so a harmless ``UserWarning`` raised inside a check costs the student the
points. A failing check always raises, which gives an ``error`` output, so dropping stderr streams from test cells
loses no failure.

Why hidden tests need care in feedback. nbgrader 0.9.6's ``GenerateFeedback`` shows test cells as the autograder
ran them, hidden tests included, and error outputs with full tracebacks (which quote the test code). The feedback
here runs :class:`HideHiddenTests` and :class:`ShortTracebacks` first: test cells lose their hidden region and their
tracebacks shrink to ``ExceptionName: message``.

Every problem found (a timeout, a dead kernel, a deleted or edited test cell, unreadable JSON, repaired metadata,
a wrong file name) is listed in ``problems.csv`` and in a markdown cell the grader adds at the top of the student's
notebook, so it shows in the feedback; the broken cell itself gets an error output saying what happened.

The kernel. Notebooks run in a ``python3`` kernel that is always this interpreter's ipykernel
(``sys.executable -m ipykernel_launcher``), whatever kernelspecs the machine has (:func:`_kernel_classes`): the
grader and the student code then see the same installed course, and the tests need no kernelspec set-up.

What this does not do. It is not a security sandbox: student code runs as the grading user and could reach any
file by absolute path. Relative paths land in the private folder, the gradebook is snapshotted before student code
runs and restored if it changed, and the kernel's whole process group is killed after each notebook; for hostile
classes, run ``grade`` inside a container.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .notebooks import (CourseError, captured_nbgrader_log, find_course_dir, generate_release, last_error,
                        nbgrader_environment, nbgrader_logger, resolve_chapter, short_name)

#: Per-cell limit (seconds). Every cell of the course's chapters runs in well under this on a laptop CPU; an
#: infinite loop costs one timeout, then the kernel is interrupted and grading goes on.
DEFAULT_TIMEOUT_S = 120
#: How long a new kernel may take to start (seconds); generous, because grading machines are often busy.
KERNEL_STARTUP_TIMEOUT_S = 120
#: A notebook that kills or hangs its kernel more often than this is not run further (its later cells score zero).
MAX_KERNEL_RESTARTS = 3
#: Output kept per cell while executing (characters of JSON), so a print loop cannot fill the grader's memory.
MAX_OUTPUT_CHARS_PER_CELL = 200_000
#: The kernel name nbclient is given; the kernel itself is always this interpreter (see _kernel_classes).
KERNEL_NAME = "python3"

GRADEBOOK = "gradebook.db"
GRADES_CSV = "grades.csv"
PROBLEMS_CSV = "problems.csv"
#: A hidden-test region (nbgrader's markers); a test cell that still has one (e.g. a copy of the solution notebook)
#: is not "edited".
HIDDEN_TESTS = re.compile(r"^[^\n]*BEGIN HIDDEN TESTS.*?END HIDDEN TESTS[^\n]*\n?", re.DOTALL | re.MULTILINE)
#: Metadata key on cells the grader inserted in place of a deleted test cell (removed before stage 2).
DELETED_MARK = "mechinterp_deleted"

#: Stage 2 and the formgrader's configuration; also written to ``out_dir/nbgrader_config.py``.
NBGRADER_SETTINGS = {
    # nbgrader's default sanitize list minus ClearOutput: the outputs are the stage-1 results being graded.
    "Autograde": {"sanitize_preprocessors": [
        "nbgrader.preprocessors.DeduplicateIds",
        "nbgrader.preprocessors.OverwriteKernelspec",
        "nbgrader.preprocessors.OverwriteCells",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]},
    # Student code ran in stage 1, in a private folder; it must never run in the course directory.
    "Execute": {"enabled": False},
    "GenerateFeedback": {"preprocessors": [
        "mechinterp_course.autograde.HideHiddenTests",
        "mechinterp_course.autograde.ShortTracebacks",
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]},
}


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StudentResult:
    """One student's grade. ``auto_*`` are the autograded (code) points; ``score`` adds any manual grades."""

    student_id: str
    source: Path | None  # the file graded (None if the student handed in no notebook)
    auto_score: float = 0.0
    max_auto_score: float = 0.0
    score: float = 0.0
    max_score: float = 0.0
    needs_manual_grade: bool = False
    cell_scores: dict[str, tuple[float | None, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    problems: list[str] = field(default_factory=list)
    feedback: Path | None = None


@dataclass
class GradeReport:
    chapter: str
    out_dir: Path
    gradebook: Path
    grades_csv: Path
    problems_csv: Path
    students: list[StudentResult]
    warnings: list[str] = field(default_factory=list)  # problems with the batch rather than one student

    def __getitem__(self, student_id: str) -> StudentResult:
        for result in self.students:
            if result.student_id == student_id:
                return result
        raise KeyError(student_id)

    def table(self) -> str:
        """A plain-text summary, one line per student."""
        rows = [("student", "auto", "total", "written", "problems")]
        for r in self.students:
            rows.append((r.student_id, f"{r.auto_score:g}/{r.max_auto_score:g}", f"{r.score:g}/{r.max_score:g}",
                         "to grade" if r.needs_manual_grade else "-", "; ".join(r.problems) or "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
        return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------------------------------------------
# Collecting submissions
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Submission:
    student_id: str
    path: Path | None  # the notebook to grade
    origin: Path  # what it was found as (for messages)
    problems: list[str] = field(default_factory=list)


def _sanitise(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9-]+", "_", text)
    return re.sub(r"[_-]*_[_-]*", "_", text).strip("_-")


def student_id_from_filename(filename: str | os.PathLike, chapter: str) -> str:
    """The student id of a loose submitted notebook: see the module docstring for the rule.

    >>> student_id_from_filename("smith_john_12345_67890_01_circuits.ipynb", "01_circuits")
    'smith_john_12345_67890'
    """
    stem = Path(filename).name.removesuffix(".ipynb")
    stripped = stem
    for name in (chapter, short_name(chapter)):
        stripped = re.sub(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", "", stripped, flags=re.IGNORECASE)
    return _sanitise(stripped) or _sanitise(stem) or "student"  # "01_circuits.ipynb" keeps its name


def _from_tree(student_dir: Path, chapter: str) -> Submission:
    """One ``submitted/<student>/<chapter>/`` folder: its ``<chapter>.ipynb``, or its only notebook."""
    folder = student_dir / chapter
    sub = Submission(_sanitise(student_dir.name) or "student", None, folder)
    expected = folder / f"{chapter}.ipynb"
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if expected.is_file():
        sub.path = expected
    elif len(notebooks) == 1:
        sub.path = notebooks[0]
        sub.problems.append(f"the notebook was named {notebooks[0].name} instead of {expected.name}; graded it anyway")
    elif notebooks:
        sub.problems.append(f"no {expected.name} but {len(notebooks)} other notebooks "
                            f"({', '.join(p.name for p in notebooks)}): could not tell which to grade")
    else:
        sub.problems.append(f"no notebook in {folder}")
    return sub


def collect_submissions(paths: list[str | os.PathLike], chapter: str) -> list[Submission]:
    """Find every submission under ``paths``; raises :class:`CourseError` for paths that do not exist, folders
    with no notebooks and two submissions with the same student id."""
    if not paths:
        raise CourseError("No submissions given: pass notebooks or folders of notebooks.")
    found: list[Submission] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CourseError(f"{raw}: no such file or folder.")
        if path.is_file():
            if path.suffix != ".ipynb":
                raise CourseError(f"{raw}: not a notebook (expected a .ipynb file).")
            found.append(Submission(student_id_from_filename(path, chapter), path, path))
            continue
        if (path / chapter).is_dir() and not (path / "submitted").is_dir():  # one student's folder of a tree
            found.append(_from_tree(path, chapter))
            continue
        root = path / "submitted" if (path / "submitted").is_dir() else path
        tree = sorted(d for d in root.iterdir() if d.is_dir() and (d / chapter).is_dir())
        loose = sorted(p for p in root.glob("*.ipynb") if p.is_file())
        if not tree and not loose:
            raise CourseError(f"{raw}: no notebooks found. Expected one <student>.ipynb per student, or an nbgrader "
                              f"tree submitted/<student>/{chapter}/{chapter}.ipynb.")
        found += [_from_tree(d, chapter) for d in tree]
        found += [Submission(student_id_from_filename(p, chapter), p, p) for p in loose]
    by_id: dict[str, list[Submission]] = {}
    for sub in found:
        by_id.setdefault(sub.student_id, []).append(sub)
    clashes = {sid: subs for sid, subs in by_id.items() if len(subs) > 1}
    if clashes:
        detail = "; ".join(f"{sid}: {', '.join(str(s.origin) for s in subs)}" for sid, subs in sorted(clashes.items()))
        raise CourseError(f"Two submissions map to the same student id ({detail}). Rename one of the files.")
    return sorted(found, key=lambda s: s.student_id)


# --------------------------------------------------------------------------------------------------------------
# Stage 1a: read, repair and sanitise (no student code runs here)
# --------------------------------------------------------------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def _is_test(cell) -> bool:
    """An autograded test cell: graded code (nbgrader's "autograder tests")."""
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _label(cell, index: int) -> str:
    grade_id = _nbgrader(cell).get("grade_id")
    return f"cell {index + 1} ({grade_id})" if grade_id else f"cell {index + 1}"


def _set_cell_type(cell: NotebookNode, cell_type: str) -> None:
    if cell.cell_type == cell_type:
        return
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def read_submission(path: Path) -> NotebookNode:
    """Read a notebook, converting old formats; raises ``ValueError`` with a readable reason when it cannot."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat's NotJSONError, a JSONDecodeError, an unknown nbformat version ...
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(f"invalid notebook JSON: {message}") from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook (no list of cells)")
    cells = []
    for cell in nb.cells:  # keep what a kernel can run; repair what hand-edited JSON often breaks
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        source = cell.get("source", "")
        cell["source"] = "".join(source) if isinstance(source, list) else str(source)
        cell.setdefault("metadata", {})
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb.cells = cells
    nb.setdefault("metadata", {})
    return nb


def repair_notebook(nb: NotebookNode, release: NotebookNode) -> list[str]:
    """Match the submitted cells to the released ones and restore what nbgrader needs; returns notes.

    Why: nbgrader finds graded cells by their metadata. Colab drops cell metadata when a cell is re-created (cut
    and pasted, or retyped), and nbgrader then silently scores the exercise zero. Matching, in this order:
    the nbgrader ``grade_id`` (untouched cells), the cell id (Colab keeps it for cells it did not re-create),
    an identical source (locked cells, unanswered stubs) when unique on both sides, and finally position: an
    unmatched cell takes the first unmatched released cell of its type between its matched neighbours. A matched
    cell gets the release's nbgrader metadata; solution cells keep the student's source, locked cells (tests,
    read-only text and code) get the release's (nbgrader's ``OverwriteCells`` then restores hidden tests).
    A released graded cell with no match was deleted: it is put back in place; a test cell is marked so that it
    is not run and scores zero, a written answer comes back empty.
    """
    rel = release.cells
    notes: list[str] = []
    match: list[int | None] = [None] * len(nb.cells)
    claimed: set[int] = set()

    def claim(i: int, j: int) -> None:
        match[i] = j
        claimed.add(j)

    by_grade_id = {_nbgrader(c)["grade_id"]: j for j, c in enumerate(rel) if _nbgrader(c).get("grade_id")}
    for i, cell in enumerate(nb.cells):
        j = by_grade_id.get(_nbgrader(cell).get("grade_id"))
        if j is not None and j not in claimed:
            claim(i, j)
    by_cell_id = {c.get("id"): j for j, c in enumerate(rel) if c.get("id")}
    for i, cell in enumerate(nb.cells):
        j = by_cell_id.get(cell.get("id"))
        if match[i] is None and j is not None and j not in claimed and rel[j].cell_type == cell.cell_type:
            claim(i, j)

    def key(cell):
        return (cell.cell_type, HIDDEN_TESTS.sub("", cell.source).strip())

    rel_keys = [key(c) for c in rel]
    open_keys = [key(c) for i, c in enumerate(nb.cells) if match[i] is None]
    for i, cell in enumerate(nb.cells):
        k = key(cell)
        if match[i] is None and k[1] and open_keys.count(k) == 1 and rel_keys.count(k) == 1:
            j = rel_keys.index(k)
            if j not in claimed:
                claim(i, j)
    for i, cell in enumerate(nb.cells):
        if match[i] is not None:
            continue
        lo = max((m for m in match[:i] if m is not None), default=-1)
        hi = min((m for m in match[i + 1:] if m is not None), default=len(rel))
        for j in range(lo + 1, hi):
            if j not in claimed and rel[j].cell_type == cell.cell_type and _nbgrader(rel[j]):
                claim(i, j)
                break

    restored, edited = [], []
    for i, cell in enumerate(nb.cells):
        j = match[i]
        if j is None:
            cell.metadata.pop("nbgrader", None)  # a copy of a graded cell, or metadata from elsewhere: not graded
            continue
        ref = rel[j]
        ref_meta = copy.deepcopy(_nbgrader(ref))
        if _nbgrader(cell).get("grade_id") != ref_meta.get("grade_id"):
            restored.append(ref_meta["grade_id"])
        if ref_meta.get("locked"):
            if key(cell) != key(ref):
                edited.append(ref_meta["grade_id"])
            _set_cell_type(cell, ref.cell_type)
            cell.source = ref.source
        if ref_meta:
            cell.metadata["nbgrader"] = ref_meta
    if restored:
        graded = [g for g in restored if _nbgrader(rel[by_grade_id[g]]).get("grade") or
                  _nbgrader(rel[by_grade_id[g]]).get("solution")]
        notes.append(f"{len(restored)} cell(s) had lost their nbgrader metadata (as Colab does when cells are "
                     f"re-created) and were matched to the released notebook"
                     + (f", among them {', '.join(graded)}" if graded else ""))
    for grade_id in edited:
        kind = "test cell" if _is_test(rel[by_grade_id[grade_id]]) else "read-only cell"
        notes.append(f"{kind} {grade_id} had been edited; it was restored to the course's version")

    positions = list(match)
    for j, ref in enumerate(rel):
        if j in claimed or not _nbgrader(ref).get("grade"):
            continue
        before = [p for p, m in enumerate(positions) if m is not None and m < j]
        at = before[-1] + 1 if before else 0
        cell = copy.deepcopy(ref)
        grade_id = _nbgrader(ref)["grade_id"]
        if _is_test(ref):
            cell.metadata[DELETED_MARK] = True
            notes.append(f"test cell {grade_id} was deleted from the notebook: it was not run and scores zero")
        else:
            notes.append(f"answer cell {grade_id} was deleted from the notebook: put back empty")
        nb.cells.insert(at, cell)
        positions.insert(at, j)
    return notes


def sanitise(nb: NotebookNode, chapter: str, db_url: str) -> NotebookNode:
    """nbgrader's own autograde sanitising, in process: clear outputs, de-duplicate grade ids, set the kernelspec,
    restore locked cells (with hidden tests) and check metadata, against the gradebook at ``db_url``."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells,
                                        OverwriteKernelspec)

    resources = {"nbgrader": {"notebook": chapter, "assignment": chapter, "db_url": db_url, "student": "-"}}
    with nbgrader_environment():
        for preprocessor in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata):
            nb, resources = preprocessor(log=nbgrader_logger())(nb, resources)
    return nb


def _empty_submission(release: NotebookNode, reason: str) -> NotebookNode:
    """What an unreadable or missing submission is graded as: the released notebook, with every test failed."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if _is_test(cell):
            cell.metadata[DELETED_MARK] = True
    nb.metadata["mechinterp_empty_reason"] = reason
    return nb


# --------------------------------------------------------------------------------------------------------------
# Stage 1b: execution (the only place student code runs)
# --------------------------------------------------------------------------------------------------------------


def _kernel_classes():
    """Built on first use: importing jupyter_client and nbclient costs about a second."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    class KernelManager(AsyncKernelManager):
        """Always start this interpreter's ipykernel, whatever ``python3`` kernelspec the machine has.

        Why: a user-wide kernelspec (``~/.local/share/jupyter/kernels/python3``) can point at another Python without
        the course installed, and every student would then score zero with ``ModuleNotFoundError``.
        """

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                           display_name="Python 3 (grading)", language="python")

    class Client(NotebookClient):
        """nbclient with a cap on the output kept per cell (a kernel message can carry megabytes of text)."""

        def output(self, outs, msg, display_id, cell_index):
            if getattr(self, "_cut", None) is None:
                self._cut = set()
            if cell_index in self._cut:
                return None
            used = sum(len(str(o)) for o in outs)
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None and used + len(str(out)) > MAX_OUTPUT_CHARS_PER_CELL:
                self._cut.add(cell_index)
                if out.get("output_type") == "stream":
                    out.text = out.text[:max(0, MAX_OUTPUT_CHARS_PER_CELL - used)]
                elif out in outs:
                    outs.remove(out)
                outs.append(nbformat.v4.new_output("stream", name="stdout",
                                                   text=f"\n[output cut at {MAX_OUTPUT_CHARS_PER_CELL} characters]\n"))
            return out

    return KernelManager, Client


@contextlib.contextmanager
def _killing_process_group(client):
    """On the way out, SIGKILL the kernel's process group: jupyter_client starts each kernel in a new session, so
    this also ends what the student's code started (``subprocess.Popen``, ``multiprocessing``) and left running.
    A kernel that died on its own is otherwise never signalled, and its children would outlive the grading."""
    provisioner = getattr(client.km, "provisioner", None)
    pgid = getattr(provisioner, "pgid", None)
    try:
        yield
    finally:
        if pgid and hasattr(os, "killpg") and pgid != os.getpgrp():
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)


def _timeout_error(timeout: float) -> dict:
    message = f"this cell ran for more than {timeout:g} s and was stopped"
    return {"ename": "CellTimeoutError", "evalue": message, "traceback": [f"CellTimeoutError: {message}"]}


def execute_notebook(nb: NotebookNode, work_dir: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Run the notebook's code cells in order in a fresh kernel (working directory ``work_dir``); returns notes.

    Cells marked :data:`DELETED_MARK` are not run. A cell that runs past ``timeout`` is interrupted (nbgrader's
    behaviour) and gets a ``CellTimeoutError`` output. A cell that kills the kernel (``os._exit``, a segfault,
    running out of memory) or leaves it unresponsive gets an error output; a new kernel replays the cells before
    it (outputs discarded) and goes on with the next one, at most :data:`MAX_KERNEL_RESTARTS` times.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    timeout = max(1, math.ceil(timeout))  # nbclient takes whole seconds
    KernelManager, Client = _kernel_classes()
    notes: list[str] = []
    todo = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.metadata.get(DELETED_MARK)]
    broken: set[int] = set()  # cells that killed or hung a kernel: never run again
    done = 0  # how many of `todo` have run
    restarts = 0
    env = dict(os.environ, NBGRADER_EXECUTION="autograde")

    def record_timeout(cell, cell_index, execute_reply):
        content = execute_reply.get("content", {})
        if content.get("status") == "error" and content.get("ename") == "CellTimeoutError":
            if not any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                cell.outputs.append(nbformat.v4.new_output("error", **_timeout_error(timeout)))

    while done < len(todo):
        client = Client(nb, timeout=timeout, kernel_name=KERNEL_NAME, kernel_manager_class=KernelManager,
                        allow_errors=True, interrupt_on_timeout=True, error_on_timeout=_timeout_error(timeout),
                        raise_on_iopub_timeout=True, startup_timeout=KERNEL_STARTUP_TIMEOUT_S,
                        shutdown_kernel="immediate", record_timing=False, on_cell_executed=record_timeout,
                        resources={"metadata": {"path": str(work_dir)}}, log=nbgrader_logger())
        current = None
        try:
            with client.setup_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), \
                    _killing_process_group(client):
                for i in todo[:done]:
                    if i not in broken:
                        current = ("replay", i)
                        client.execute_cell(copy.deepcopy(nb.cells[i]), i)
                while done < len(todo):
                    i = todo[done]
                    current = ("run", i)
                    client.execute_cell(nb.cells[i], i)
                    if any(o.get("ename") == "CellTimeoutError" for o in nb.cells[i].outputs):
                        notes.append(f"{_label(nb.cells[i], i)} ran for more than {timeout:g} s and was stopped")
                    done += 1
        except (DeadKernelError, CellTimeoutError) as error:
            if current is None:
                raise
            what, i = current
            died = isinstance(error, DeadKernelError)
            reason = "the kernel died" if died else "the kernel stopped responding"
            broken.add(i)
            if what == "run":
                if died:
                    ename, why = "DeadKernelError", "the kernel died while running this cell (os._exit, a crash, " \
                                                   "too much memory ...)"
                else:
                    ename, why = "KernelUnresponsive", (f"this cell ran for more than {timeout:g} s and did not stop "
                                                        f"when interrupted (does it catch KeyboardInterrupt?)")
                nb.cells[i].outputs.append(_error_output(ename, f"{why}; later cells ran in a restarted kernel"))
                done += 1
            notes.append(f"{reason} {'while running' if what == 'run' else 'again when re-running'} "
                         f"{_label(nb.cells[i], i)}")
            restarts += 1
            if restarts > MAX_KERNEL_RESTARTS:
                for i in todo[done:]:
                    nb.cells[i].outputs = [_error_output("NotRun", "not run: the kernel died too often")]
                notes.append(f"the kernel died {restarts} times; the remaining {len(todo) - done} code cells were "
                             f"not run")
                break
        except Exception as error:  # the kernel did not start: not the student's fault, but do not stop the batch
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            for i in todo[done:]:
                nb.cells[i].outputs = [_error_output("NotRun", f"not run: the grading kernel failed ({message})")]
            notes.append(f"grading problem, not the student's: the kernel failed ({message}); regrade this student")
            break
    return notes


def drop_stderr_from_tests(nb: NotebookNode) -> None:
    """Remove stderr streams from test cells: nbgrader would score a warning as a failure (module docstring)."""
    for cell in nb.cells:
        if _is_test(cell):
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


def _finish(nb: NotebookNode, notes: list[str]) -> None:
    """Give deleted test cells their zero-scoring error and put the notes in a cell at the top (for the feedback)."""
    for cell in nb.cells:
        if cell.metadata.pop(DELETED_MARK, None):
            reason = nb.metadata.get("mechinterp_empty_reason") or "this test cell was deleted from the submission"
            cell.outputs = [_error_output("NotGraded", f"{reason}, so it scores zero")]
    nb.metadata.pop("mechinterp_empty_reason", None)
    if notes:
        text = "**Notes from the autograder**\n\n" + "\n".join(f"- {note}" for note in notes)
        ids = {c.get("id") for c in nb.cells}
        cell_id = next(f"grading-notes-{k}" if k else "grading-notes" for k in range(len(ids) + 1)
                       if (f"grading-notes-{k}" if k else "grading-notes") not in ids)
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(text, id=cell_id))


# --------------------------------------------------------------------------------------------------------------
# Stage 2: nbgrader in the course directory
# --------------------------------------------------------------------------------------------------------------


def _stage2_config(out_dir: Path):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(out_dir)
    for section, values in NBGRADER_SETTINGS.items():
        for name, value in values.items():
            setattr(getattr(config, section), name, copy.deepcopy(value))
    return config


def _write_nbgrader_config(out_dir: Path, chapter: str) -> None:
    lines = ['"""nbgrader configuration written by `mechinterp-course grade` (mechinterp_course.autograde).',
             "",
             "The submitted/ notebooks were already executed in a private folder; autograde scores their outputs",
             "and never runs student code here. Feedback hides hidden tests and shortens tracebacks.",
             '"""', "", "c = get_config()  # noqa: F821", ""]
    for section, values in NBGRADER_SETTINGS.items():
        for name, value in values.items():
            lines.append(f"c.{section}.{name} = {value!r}")
    (out_dir / "nbgrader_config.py").write_text("\n".join(lines) + "\n")


def _run_converter(converter_class, config, chapter: str, student_id: str) -> str:
    """Run one nbgrader converter for one student; returns "" or the reason it failed."""
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = chapter
    coursedir.student_id = student_id
    converter = converter_class(coursedir=coursedir, config=config, log=nbgrader_logger())
    converter.force = True
    with captured_nbgrader_log() as lines, nbgrader_environment(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy "not in session" warnings
        try:
            converter.start()
        except Exception as error:
            return last_error(lines) or f"{type(error).__name__}: {error}"
    return ""


def _read_scores(result: StudentResult, db_url: str, chapter: str) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        try:
            submission = gradebook.find_submission(chapter, result.student_id)
        except MissingEntry:
            return
        result.auto_score, result.max_auto_score = submission.code_score, submission.max_code_score
        result.score, result.max_score = submission.score, submission.max_score
        result.needs_manual_grade = bool(submission.needs_manual_grade)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                result.cell_scores[grade.name] = (grade.score, grade.max_score)


def _export_csv(db_url: str, chapter: str, path: Path) -> None:
    """``nbgrader export`` (its CSV plugin) for this chapter, rows sorted by student id so reruns are identical."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins import CsvExportPlugin

    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        CsvExportPlugin(to=str(path), assignment=[chapter], log=nbgrader_logger()).export(gradebook)
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *sorted(rows, key=lambda r: r.split(",")[3])]) + "\n")


def _write_problems_csv(report: GradeReport) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student_id", "file", "auto_score", "max_auto_score", "score", "max_score",
                     "needs_manual_grade", "problems"])
    for r in report.students:
        writer.writerow([r.student_id, r.source or "", f"{r.auto_score:g}", f"{r.max_auto_score:g}", f"{r.score:g}",
                         f"{r.max_score:g}", "yes" if r.needs_manual_grade else "no", " | ".join(r.problems)])
    report.problems_csv.write_text(buffer.getvalue())


# --------------------------------------------------------------------------------------------------------------
# The whole batch
# --------------------------------------------------------------------------------------------------------------


def grade(chapter: str, paths: list[str | os.PathLike], out_dir: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S,
          course_dir: str | os.PathLike | None = None, progress=None) -> GradeReport:
    """Autograde every submission under ``paths`` for ``chapter`` into ``out_dir`` (module docstring for the
    layout). ``course_dir`` is any folder with ``solutions/<chapter>/``; ``progress`` is an optional callable
    given one line of text per step. Raises :class:`CourseError` for bad input; never for a bad submission.
    Grading the same batch into the same ``out_dir`` again gives the same gradebook (manual grades are kept).
    """
    say = progress or (lambda text: None)
    if not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise CourseError(f"The timeout must be a positive number of seconds, not {timeout!r}.")
    root = find_course_dir(course_dir)
    chapter = resolve_chapter(chapter, root)
    submissions = collect_submissions(paths, chapter)
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out_dir}: exists and is not a folder.")
    if out == root:
        raise CourseError(f"{out_dir} is the course directory itself: choose a folder for the grading files.")
    out.mkdir(parents=True, exist_ok=True)

    # The gradebook and released notebook, from solutions/ read now, before any student code runs.
    say(f"Preparing {chapter} in {out}")
    release_dir = generate_release(root, chapter, out)
    release = nbformat.read(release_dir / f"{chapter}.ipynb", as_version=4)
    db_url = f"sqlite:///{out / GRADEBOOK}"
    _write_nbgrader_config(out, chapter)
    warnings: list[str] = []
    committed = root / "chapters" / chapter / f"{chapter}.ipynb"
    if committed.is_file() and committed.read_bytes() != (release_dir / f"{chapter}.ipynb").read_bytes():
        warnings.append(f"{committed} differs from a fresh build of solutions/{chapter}: students may have a "
                        f"different notebook from the one graded against (run `mechinterp-course build`)")

    # Stage 1a: read, repair, sanitise.
    prepared = []
    for sub in submissions:
        notes = list(sub.problems)
        if sub.path is None:
            nb = _empty_submission(release, "no notebook was submitted")
        else:
            try:
                nb = read_submission(sub.path)
            except (ValueError, OSError) as error:
                notes.append(f"{sub.path.name} could not be read ({error}); graded as an empty notebook")
                nb = _empty_submission(release, "the submitted file could not be read")
            else:
                notes += repair_notebook(nb, release)
                try:
                    nb = sanitise(nb, chapter, db_url)
                except Exception as error:
                    notes.append(f"nbgrader could not check the notebook's cells ({error}); graded as an empty "
                                 f"notebook")
                    nb = _empty_submission(release, "the notebook's nbgrader metadata could not be checked")
        prepared.append((sub, nb, notes))

    # Stage 1b: run student code, each in a private folder; the gradebook is put back if anything touched it.
    gradebook_path = out / GRADEBOOK
    snapshot = gradebook_path.read_bytes()
    for sub, nb, notes in prepared:
        if sub.path is not None and not nb.metadata.get("mechinterp_empty_reason"):
            say(f"Running {sub.student_id}")
            sandbox = Path(tempfile.mkdtemp(prefix="mechinterp-student-"))
            work = sandbox / "student" / chapter  # so that ../ and ../../ are private too
            try:
                shutil.copytree(release_dir, work, ignore=shutil.ignore_patterns("*.ipynb"))
                notes += execute_notebook(nb, work, timeout=timeout)
            finally:
                shutil.rmtree(sandbox, ignore_errors=True)
        drop_stderr_from_tests(nb)
        _finish(nb, notes)
        if not gradebook_path.is_file() or gradebook_path.read_bytes() != snapshot:
            gradebook_path.write_bytes(snapshot)
            notes.append("the gradebook was changed while this notebook ran; it was restored")
            warnings.append(f"{sub.student_id}'s code changed {gradebook_path}; it was restored")

    # Stage 2: nbgrader autograde (no execution), feedback, export.
    config = _stage2_config(out)
    from nbgrader.converters import Autograde, GenerateFeedback

    results = []
    for sub, nb, notes in prepared:
        say(f"Grading {sub.student_id}")
        result = StudentResult(sub.student_id, sub.path, problems=notes)
        folder = out / "submitted" / sub.student_id / chapter
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{chapter}.ipynb")
        failure = _run_converter(Autograde, config, chapter, sub.student_id)
        if failure:
            result.problems.append(f"grading problem: nbgrader autograde failed ({failure})")
        else:
            failure = _run_converter(GenerateFeedback, config, chapter, sub.student_id)
            feedback = out / "feedback" / sub.student_id / chapter / f"{chapter}.html"
            if feedback.is_file() and not failure:
                result.feedback = feedback
            else:
                result.problems.append(f"grading problem: no feedback ({failure or 'nbgrader wrote none'})")
        _read_scores(result, db_url, chapter)
        results.append(result)

    report = GradeReport(chapter, out, gradebook_path, out / GRADES_CSV, out / PROBLEMS_CSV, results, warnings)
    _export_csv(db_url, chapter, report.grades_csv)
    _write_problems_csv(report)
    return report


# --------------------------------------------------------------------------------------------------------------
# Feedback preprocessors (named in NBGRADER_SETTINGS)
# --------------------------------------------------------------------------------------------------------------


def _feedback_preprocessors():
    from nbgrader import utils
    from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
    from traitlets import List

    def priority():
        """``display_data_priority``, configurable as in nbgrader's GetGrades: the feedback's HTMLExporter configures
        it for every preprocessor, and traitlets warns about a class (like nbgrader's base) where it is not."""
        return List(NbGraderPreprocessor.class_traits()["display_data_priority"].default(), config=True)

    class HideHiddenTests(ClearHiddenTests):
        """Remove ``### BEGIN/END HIDDEN TESTS`` regions from graded code cells before feedback is rendered.

        nbgrader 0.9.6's feedback shows the test cells as autograded, hidden tests included. Only graded cells are
        touched (they were restored from the course's source, so their markers are well formed); a student's own
        cell that happens to contain the marker text is left alone instead of failing the feedback.
        """

        display_data_priority = priority()

        def preprocess_cell(self, cell, resources, cell_index):
            if cell.cell_type == "code" and utils.is_grade(cell):
                try:
                    self._remove_hidden_test_region(cell)
                except RuntimeError:
                    cell.source = "# (test code hidden)"
            return cell, resources

    class ShortTracebacks(NbGraderPreprocessor):
        """Shrink error outputs of graded cells to ``ExceptionName: message``.

        An IPython traceback quotes the code around each frame, which for a test cell includes its hidden tests;
        the message is what the student needs (the course's checks put the whole diagnosis in it).
        """

        display_data_priority = priority()

        def preprocess_cell(self, cell, resources, cell_index):
            if cell.cell_type == "code" and utils.is_grade(cell):
                for output in cell.get("outputs", []):
                    if output.get("output_type") == "error":
                        output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
            return cell, resources

    return HideHiddenTests, ShortTracebacks


def __getattr__(name: str):
    """``HideHiddenTests`` and ``ShortTracebacks`` are built on first use, so importing this module stays cheap
    (nbgrader's preprocessors pull in nbconvert); nbgrader finds them by these dotted names."""
    if name in ("HideHiddenTests", "ShortTracebacks"):
        classes = dict(zip(("HideHiddenTests", "ShortTracebacks"), _feedback_preprocessors()))
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
