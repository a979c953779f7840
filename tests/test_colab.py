"""The Colab path, offline: a chapter's first cell installs the course into a runtime that has only PyTorch (and a
kernel), keeps that PyTorch, and the chapter then runs, executed by nbval as instructors run it
(``pytest --nbval-lax``).

The runtime (tests/colab_env.py): a fresh virtual environment that sees, as Colab's ``dist-packages``, links to
the course environment's PyTorch and kernel packages and a stand-in ``google.colab`` that its kernel imports at
start; every other package the course needs is offered to pip as a wheel (``--no-index --find-links``), so pip
really installs the course's dependencies, offline. The install source is the one setting of :mod:`.colab`,
pointed at a copy of this checkout (its files as git sees them, uncommitted changes included) by the same function
the build uses to write it. What is not reproduced: Colab's own versions of its packages, and GitHub.

One chapter is run (00, the quickest: about 15 s); the install block of the first cell is the same text in every
chapter, solution and student notebook alike (checked here), so it is the same path for all of them. This nbval run
is the suite's execution of that chapter in a plain kernel; its execution for grading is
tests/test_chapter_grading.py, and in JupyterLab tests/test_browser.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import browser
import colab_env
import nbformat
import pytest
from conftest import NETWORK_LOG

from mechinterp_course.instructor import colab

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "00_history"
CHAPTERS = sorted(path.parent.name for path in (ROOT / "solutions").glob("*/*.ipynb"))
#: Per-cell limit for nbval: the first cell installs about 130 packages.
CELL_TIMEOUT_S = 600
#: Where the wheels made from the course environment are kept between runs.
WHEEL_CACHE = Path(sys.prefix) / ".course-colab-wheelhouse"
IPYTHON_STARTUP = "import google.colab  # as Colab's kernel does at start\n"

pytestmark = pytest.mark.slow


def _install_block(source: str) -> str:
    """The first cell's lines up to the pip call: what installs the course on Colab."""
    lines = source.splitlines()
    end = next(i for i, line in enumerate(lines) if "subprocess.run(" in line)
    return "\n".join(lines[: end + 1])


def test_every_chapter_installs_the_course_the_same_way():
    """Identical install blocks in every first cell (solutions and student notebooks), installing what the
    course's setting says: the Colab run of one chapter below stands for all of them."""
    requirement = colab.install_requirement(colab.read_github(ROOT))
    blocks = {}
    for folder in ("solutions", "chapters"):
        for chapter in CHAPTERS:
            nb = nbformat.read(ROOT / folder / chapter / f"{chapter}.ipynb", as_version=4)
            assert colab.install_source(nb) == requirement, f"{folder}/{chapter}: run mechinterp-course build"
            blocks[f"{folder}/{chapter}"] = _install_block(colab.first_code_cell(nb).source)
    assert len(set(blocks.values())) == 1, blocks
    block = next(iter(blocks.values()))
    assert '"google.colab" in sys.modules' in block and "keep_torch" in block


def _checkout_copy(target: Path) -> Path:
    """This checkout's files as git sees them (tracked, and untracked but not ignored): what a push would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _python_json(python: Path, code: str, env: dict, cwd: Path) -> dict:
    """Run ``code`` in the runtime's Python, from ``cwd`` (not this checkout, whose own mechinterp_course/ would be
    imported first), and read the JSON it prints."""
    result = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, env=env, cwd=cwd)
    return json.loads(result.stdout)


#: What the runtime's PyTorch is, as its Python sees it.
TORCH_FACTS = (
    "import importlib.metadata as m, json, torch; d = m.distribution('torch');"
    "print(json.dumps({'version': torch.__version__, 'file': torch.__file__, 'record': d.read_text('RECORD')}))"
)
#: Where the course and one of its dependencies were installed from, and where they are.
COURSE_FACTS = (
    "import importlib.metadata as m, json, mechinterp_course, transformer_lens;"
    "d = m.distribution('mechinterp-course');"
    "print(json.dumps({'course': mechinterp_course.__file__, 'url': json.loads(d.read_text('direct_url.json'))['url'],"
    " 'transformer_lens': transformer_lens.__file__}))"
)


@dataclass
class ColabRun:
    site: Path
    layer: Path
    checkout: Path
    torch_before: dict
    torch_after: dict
    course: dict
    nbval: subprocess.CompletedProcess
    code_cells: int
    network: list[str]


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory) -> Iterator[ColabRun]:
    tmp = tmp_path_factory.mktemp("colab")
    offset = os.path.getsize(NETWORK_LOG) if os.path.exists(NETWORK_LOG) else 0
    times = {"start": time.monotonic()}
    layer = tmp / "dist-packages"
    preinstalled = colab_env.preinstalled_layer(layer)
    wheels = colab_env.wheelhouse(WHEEL_CACHE, exclude=preinstalled)
    times["wheels"] = time.monotonic()
    python = colab_env.fresh_venv(tmp / "venv", layer)
    times["venv"] = time.monotonic()
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    checkout = _checkout_copy(tmp / "checkout")

    # The chapter, installing from the checkout: the setting written by the build's own function.
    nb = nbformat.read(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    colab.set_install_source(nb, f"mechinterp-course @ {checkout.as_uri()}")
    notebook = tmp / "run" / f"{CHAPTER}.ipynb"
    notebook.parent.mkdir()
    nbformat.write(nb, notebook)

    # A kernel on the runtime's Python that imports google.colab at start, as Colab's does.
    spec = tmp / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Colab", "language": "python"}))
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(IPYTHON_STARTUP)

    # pip sees the wheels and nothing else: no index, no configuration file of this machine's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_COMPILE="1",  # byte-compiling 130 packages costs more than the imports it saves here
        JUPYTER_PATH=str(tmp / "jupyter"),
        IPYTHONDIR=str(tmp / "ipython"),
    )
    torch_before = _python_json(python, TORCH_FACTS, env, tmp)
    (tmp / "run" / "pytest.ini").write_text("[pytest]\n")
    nbval = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-kernel-name=colab",
            f"--nbval-cell-timeout={CELL_TIMEOUT_S}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--durations=5",
            notebook.name,
        ],
        cwd=notebook.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    times["nbval"] = time.monotonic()
    torch_after = _python_json(python, TORCH_FACTS, env, tmp)
    course = _python_json(python, COURSE_FACTS, env, tmp) if nbval.returncode == 0 else {}
    network = []
    if os.path.exists(NETWORK_LOG):
        with open(NETWORK_LOG, encoding="utf-8") as f:
            f.seek(offset)
            network = [line.strip() for line in f if line.strip()]
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    durations = re.findall(r"^([\d.]+)s call .*?::Cell (\d+)$", nbval.stdout, re.MULTILINE)
    steps = {name: round(times[name] - before, 1) for before, name in zip(times.values(), list(times)[1:])}
    (browser.artifacts_dir("colab") / "timings.json").write_text(
        json.dumps({"steps": steps, "slowest cells": dict((f"cell {c}", float(t)) for t, c in durations)}, indent=2)
        + "\n"
    )
    yield ColabRun(site, layer, checkout, torch_before, torch_after, course, nbval, code_cells, network)
    # The runtime holds every dependency installed for real (about 1.2 GB): gone once this module's tests have read
    # it, so that the suite's disk use stays small on a CI machine (its timings and nbval's output are kept).
    for folder in ("venv", "checkout"):
        shutil.rmtree(tmp / folder, ignore_errors=True)


def test_the_chapter_runs_under_nbval(colab_run):
    result = colab_run.nbval
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert f"{colab_run.code_cells} passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]


def test_the_first_cell_installed_the_course_and_its_dependencies_from_the_setting(colab_run):
    assert colab_run.nbval.returncode == 0, "see test_the_chapter_runs_under_nbval"
    assert colab_run.course["url"] == colab_run.checkout.as_uri()
    for name in ("course", "transformer_lens"):  # installed by pip in the runtime, not found elsewhere
        assert Path(colab_run.course[name]).is_relative_to(colab_run.site), colab_run.course


def test_colab_pytorch_is_kept(colab_run):
    before, after = colab_run.torch_before, colab_run.torch_after
    assert after == before
    assert Path(after["file"]).parent.parent == colab_run.layer  # still the preinstalled one
    assert after["version"] == importlib.metadata.version("torch")
    assert not list(colab_run.site.glob("torch*")), "pip installed a PyTorch of its own"


def test_nothing_reached_for_the_network(colab_run):
    assert not colab_run.network, colab_run.network
