"""A Colab-like Python environment, made offline from the course's own virtual environment (tests/test_colab.py).

Colab's runtime has PyTorch (and the kernel machinery: ipykernel, IPython, tornado, ...) preinstalled in a system
folder, and a ``google.colab`` package that its kernel imports at start; the first cell of every chapter then runs
``pip install`` on the course. To run that path with no network:

- :func:`preinstalled_layer` makes the "system folder": symbolic links to the course environment's PyTorch and the
  kernel's packages (with everything they require), and a stand-in ``google.colab``. A fresh virtual environment
  sees it through a ``.pth`` file, as a Colab runtime sees ``dist-packages``: importable, reported as installed
  by pip, and outside the environment pip installs into, so a reinstalled PyTorch could not hide.
- :func:`wheelhouse` turns every other distribution the course needs into a wheel again, from the files the
  course environment installed (its ``RECORD``), so that ``pip install --no-index --find-links`` can install the
  course's dependencies into the fresh environment for real. The wheels are cached under ``.venv/`` (keyed by
  the exact set of distributions), since making them takes a while and they change only when the environment
  does.

What this does not reproduce: Colab's own versions of the preinstalled packages (here they are the course
environment's, so pip never has to upgrade one), and the download from GitHub (the source is a local copy).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: What a Colab runtime has before the first cell runs: PyTorch, and what runs a kernel.
PREINSTALLED = ("torch", "ipykernel")
#: Always in the wheelhouse, installed or not: pip's isolated build of the course needs its build backend.
BUILD_REQUIREMENTS = ("setuptools",)
#: The stand-in: the course asks only whether google.colab is imported.
STANDIN_COLAB = '"""A stand-in for Colab\'s google.colab (tests/colab_env.py)."""\n'


def _distributions() -> dict[str, metadata.Distribution]:
    """Every distribution of the running interpreter (the course's environment), by canonical name."""
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def requirement_closure(names, dists: dict[str, metadata.Distribution] | None = None) -> set[str]:
    """The distributions ``names`` need, recursively, with the extras they ask of each other (``bleach[css]``) and
    markers evaluated for this interpreter, as installed here."""
    dists = _distributions() if dists is None else dists
    environment = default_environment()
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(n), "") for n in names]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        if name not in dists:
            raise LookupError(f"{name} is required but not installed in {sys.prefix}")
        seen.add((name, extra))
        for text in dists[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(dict(environment, extra=extra)):
                wanted = canonicalize_name(requirement.name)
                todo += [(wanted, "")] + [(wanted, e) for e in requirement.extras]
    return {name for name, _ in seen}


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The names in site-packages a distribution installed (packages, modules, its .dist-info folder)."""
    return {
        Path(str(f)).parts[0]
        for f in dist.files or []
        if not str(f).startswith("..") and Path(str(f)).parts[0] != "__pycache__"
    }


def preinstalled_layer(target: Path) -> set[str]:
    """Make ``target`` a Colab-like system folder: links to PyTorch and the kernel's packages (and what they
    require) in the course environment, and a stand-in ``google.colab``. Returns the distributions it holds."""
    dists = _distributions()
    names = requirement_closure(PREINSTALLED, dists)
    site = _site_packages()
    target.mkdir(parents=True)
    for name in sorted(names):
        for entry in _top_level_entries(dists[name]):
            link = target / entry
            if not link.exists():
                link.symlink_to(site / entry)
    # A namespace portion, as Colab ships it: google.protobuf (wandb's) must stay importable beside it.
    (target / "google" / "colab").mkdir(parents=True)
    (target / "google" / "colab" / "__init__.py").write_text(STANDIN_COLAB)
    return names


def fresh_venv(target: Path, layer: Path) -> Path:
    """A new virtual environment (with pip, from Python's own bundled wheel) that sees ``layer`` as a system
    folder. Returns its Python."""
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, capture_output=True)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "colab-dist-packages.pth").write_text(f"{layer}\n")
    return python


# --------------------------------------------------------------------------------------------------------------
# Wheels from installed distributions
# --------------------------------------------------------------------------------------------------------------


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _console_scripts(dist: metadata.Distribution) -> set[str]:
    return {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}


def repack(dist: metadata.Distribution, folder: Path) -> Path:
    """Write ``dist`` (as installed) back into a wheel in ``folder``; returns the wheel's path.

    Files in site-packages go in as they are (compiled ``.pyc`` left out, pip compiles again); files installed
    elsewhere go under ``<name>.data/``: ``bin/`` scripts that pip generated from entry points are left out (pip
    generates them again), other scripts go to ``scripts/`` with a ``#!python`` line, and ``share/``, ``etc/``
    to ``data/``. ``RECORD`` is written anew."""
    site = _site_packages()
    info = next(Path(str(f)).parts[0] for f in dist.files if Path(str(f)).parts[0].endswith(".dist-info"))
    stem = info.removesuffix(".dist-info")
    wheel_lines = dist.read_text("WHEEL").splitlines()
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel_lines if line.startswith("Tag:")]
    # The compressed tag set of the original file name (py2.py3-none-any), which pip checks against this Python.
    tag = "-".join(".".join(dict.fromkeys(parts)) for parts in zip(*tags))
    wheel = folder / f"{stem}-{tag}.whl"
    scripts = _console_scripts(dist)
    records: list[list[str]] = []
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for entry in dist.files or []:
            relative = str(entry)
            if relative.endswith(".pyc") or "/__pycache__/" in f"/{relative}":
                continue
            if relative.startswith(f"{info}/") and relative.split("/")[-1] in (
                "RECORD",
                "INSTALLER",
                "REQUESTED",
                "direct_url.json",
            ):
                continue
            source = Path(os.path.normpath(site / relative))
            if not source.is_file():
                continue
            data = source.read_bytes()
            if relative.startswith("../../../"):
                outside = relative.removeprefix("../../../")
                if outside.startswith("bin/"):
                    if outside.removeprefix("bin/") in scripts:
                        continue
                    if data.startswith(b"#!"):
                        data = b"#!python" + data[data.index(b"\n") :]
                    name = f"{stem}.data/scripts/{outside.removeprefix('bin/')}"
                else:
                    name = f"{stem}.data/data/{outside}"
            elif relative.startswith(".."):
                continue  # outside the environment altogether: nothing of a wheel
            else:
                name = relative
            archive.writestr(name, data)
            records.append(_record_line(name, data))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerows(records)
        writer.writerow([f"{info}/RECORD", "", ""])
        archive.writestr(f"{info}/RECORD", text.getvalue())
    partial.rename(wheel)
    return wheel


def wheelhouse(cache: Path, exclude: set[str]) -> Path:
    """A folder of wheels for every distribution the course needs except ``exclude`` (and the course itself),
    plus the build backend; made once per set of distributions and kept in ``cache``."""
    dists = _distributions()
    names = (requirement_closure(["mechinterp-course"], dists) - exclude - {"mechinterp-course"}) | {
        canonicalize_name(n) for n in BUILD_REQUIREMENTS
    }
    key = hashlib.sha256(
        "\n".join(f"{n}=={dists[n].version}" for n in sorted(names)).encode() + sys.version.encode()
    ).hexdigest()[:16]
    folder = cache / key
    if (folder / "COMPLETE").is_file():
        return folder
    if cache.exists():
        shutil.rmtree(cache)  # an older environment's wheels
    folder.mkdir(parents=True)
    for name in sorted(names):
        repack(dists[name], folder)
    (folder / "COMPLETE").write_text("\n".join(sorted(names)) + "\n")
    return folder
