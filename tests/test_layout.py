"""The shape of the library: each answer written once, no private names across modules, and every module a graded
kernel imports works without the reference answers and the checks (which the grader's sandbox replaces by stubs).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mechinterp_course"
#: Generated reference modules and the checks: the grader hides these from student code.
HIDDEN = ("reference.py", "checks.py")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _chapter_packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.glob("*/reference.py"))


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                offenders += [
                    f"{path.relative_to(ROOT)}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in {
                    "models",
                    "tasks",
                    "training",
                    "plots",
                    "research",
                    "checking",
                    "reference",
                    "checks",
                    "wire",
                    "judge",
                    "execute",
                    "sandbox",
                    "grade",
                    "build",
                    "export",
                    "lms",
                    "outputs",
                }:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {base.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_every_answer_is_written_once():
    """No library function outside the generated reference modules has an exercise's name: a twin of an exercise
    would be a way around it (and a second copy to keep in step)."""
    exported = {}
    for package in _chapter_packages():
        module = importlib.import_module(f"mechinterp_course.{package.name}.reference")
        exported.update({name: package.name for name in module.__all__})
    twins = []
    for path in _modules():
        if path.name in HIDDEN:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name in exported:
                twins.append(f"{path.relative_to(ROOT)}: {node.name} (an exercise of {exported[node.name]})")
    assert not twins, "\n".join(twins)


def test_a_graded_kernel_can_import_the_library_without_answers_or_checks():
    """Run in a fresh interpreter in which every chapter's reference and checks modules are stubs that raise, as in
    the grader's sandbox: every other module must still import."""
    from mechinterp_course.instructor import sandbox

    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in _modules()
        if p.name not in HIDDEN and p.name != "__main__.py"
    ]
    stubs = {
        f"mechinterp_course.{p.name}.{name[:-3]}": text
        for p in _chapter_packages()
        for name, text in sandbox.HIDDEN_MODULES.items()
    }
    script = (
        "import importlib, sys, types\n"
        f"for name, text in {stubs!r}.items():\n"
        "    module = types.ModuleType(name)\n"
        "    exec(text, module.__dict__)\n"
        "    sys.modules[name] = module\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("package", [p.name for p in _chapter_packages()])
def test_every_chapter_is_one_room_of_the_same_shape(package):
    """A chapter package holds its tools (``__init__``), its generated reference and its checks; the checks
    module defines a check for every exercise the notebook's test cells call."""
    folder = PACKAGE / package
    assert (folder / "__init__.py").is_file() and (folder / "checks.py").is_file()
    reference = importlib.import_module(f"mechinterp_course.{package}.reference")
    checks = importlib.import_module(f"mechinterp_course.{package}.checks")
    assert reference.__doc__.startswith("Chapter ") and "GENERATED" in reference.__doc__
    missing = [name for name in reference.EXERCISES if not getattr(getattr(checks, name, None), "exercise", None)]
    assert not missing, f"no check for {missing}"


def test_every_chapter_is_known_to_the_checking_api():
    """An unfinished exercise falls back to the course's reference, and failures name exercises by number, only in
    the chapters the checking API knows (chapter 04 was missing: its demonstration cells failed until the student had
    written every function)."""
    from mechinterp_course.checking.core import CHAPTER_PACKAGES

    chapters = {path.parent.name.split("_", 1)[1] for path in (ROOT / "solutions").glob("*/*.ipynb")}
    assert chapters <= set(CHAPTER_PACKAGES), sorted(chapters - set(CHAPTER_PACKAGES))
