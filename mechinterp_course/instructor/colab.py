"""Where the course lives, written once: what the first cell of every chapter installs on Colab, and the README's
"Open in Colab" links.

The setting is ``github = "OWNER/NAME@BRANCH"`` under ``[tool.mechinterp-course]`` in the course's
``pyproject.toml``. :func:`mechinterp_course.instructor.build.build` writes it into

- the ``COURSE = "..."`` line of each chapter's first code cell, in ``solutions/`` and so in ``chapters/``: the
  requirement the cell hands to pip on Colab (:func:`install_requirement`);
- the block of Colab links in ``README.md`` between :data:`LINKS_START` and :data:`LINKS_END` (:func:`readme_links`).

Why a build step and not a constant the cell imports: on Colab the cell runs before the course is installed, so the
source has to be written into the notebook itself. Why the whole install block is not generated: only the source
varies; a test checks that the block is the same in every chapter, so that testing one chapter's Colab path
(tests/test_colab.py) tests them all.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from nbformat import NotebookNode

#: Where the setting lives in ``pyproject.toml``.
SETTINGS_TABLE = "mechinterp-course"
SETTING = "github"
#: ``OWNER/NAME@BRANCH``.
GITHUB_PATTERN = re.compile(r"^(?P<repository>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@(?P<branch>[A-Za-z0-9_./-]+)$")
#: The line of the first code cell that names what pip installs on Colab.
INSTALL_LINE = re.compile(r'^COURSE = "[^"\n]*"$', re.MULTILINE)
#: The README's generated block of links.
LINKS_START = (
    "<!-- colab-links: written by `mechinterp-course build` from [tool.mechinterp-course] in pyproject.toml -->"
)
LINKS_END = "<!-- /colab-links -->"
#: A chapter's title, from its notebook's first heading: "# Chapter 1 · Circuits: reverse-engineering ...".
TITLE_PATTERN = re.compile(r"^#\s+Chapter\s+\d+\s+·\s+(?P<title>[^:\n]+)", re.MULTILINE)


class SettingError(ValueError):
    """The setting is missing or malformed, or a notebook has no install line to write it into."""


def read_github(course_dir: str | Path) -> str | None:
    """``OWNER/NAME@BRANCH`` from the course's ``pyproject.toml``, or None when the course has no such file or
    setting (a fixture course in the tests: its notebooks install nothing)."""
    path = Path(course_dir) / "pyproject.toml"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        value = tomllib.load(f).get("tool", {}).get(SETTINGS_TABLE, {}).get(SETTING)
    if value is None:
        return None
    if not isinstance(value, str) or not GITHUB_PATTERN.match(value):
        raise SettingError(
            f"[tool.{SETTINGS_TABLE}] {SETTING} in {path} should be OWNER/NAME@BRANCH "
            f"(e.g. mechinterp-course/mechinterp-course@main), got {value!r}"
        )
    return value


def install_requirement(github: str) -> str:
    """What pip installs on Colab: ``mechinterp-course @ git+https://github.com/OWNER/NAME@BRANCH``."""
    match = GITHUB_PATTERN.match(github)
    if not match:
        raise SettingError(f"not OWNER/NAME@BRANCH: {github!r}")
    return f"mechinterp-course @ git+https://github.com/{match['repository']}@{match['branch']}"


def colab_url(github: str, chapter: str) -> str:
    """The Colab link that opens ``chapters/<chapter>/<chapter>.ipynb`` from the repository's branch."""
    match = GITHUB_PATTERN.match(github)
    if not match:
        raise SettingError(f"not OWNER/NAME@BRANCH: {github!r}")
    return (
        f"https://colab.research.google.com/github/{match['repository']}/blob/{match['branch']}/"
        f"chapters/{chapter}/{chapter}.ipynb"
    )


def first_code_cell(nb: NotebookNode) -> NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code":
            return cell
    raise SettingError("the notebook has no code cell")


def install_source(nb: NotebookNode) -> str:
    """The requirement the notebook's first cell installs on Colab (the value of its ``COURSE`` line)."""
    match = INSTALL_LINE.search(first_code_cell(nb).source)
    if not match:
        raise SettingError('the first code cell has no line COURSE = "..." (what it installs on Colab)')
    return match.group(0).split("=", 1)[1].strip().strip('"')


def set_install_source(nb: NotebookNode, requirement: str) -> bool:
    """Write ``requirement`` into the ``COURSE = "..."`` line of the notebook's first code cell (in place).
    Returns whether the cell changed. Raises :class:`SettingError` when the cell has no such line."""
    if '"' in requirement or "\n" in requirement:
        raise SettingError(f"a requirement cannot hold a quote or a newline: {requirement!r}")
    cell = first_code_cell(nb)
    if not INSTALL_LINE.search(cell.source):
        raise SettingError('the first code cell has no line COURSE = "..." (what it installs on Colab)')
    source = INSTALL_LINE.sub(f'COURSE = "{requirement}"', cell.source, count=1)
    changed = source != cell.source
    cell.source = source
    return changed


def chapter_title(nb: NotebookNode, chapter: str) -> str:
    """``Chapter 01 · Circuits``: the chapter's number from its folder, its title from its first heading."""
    number = chapter.split("_", 1)[0]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = TITLE_PATTERN.search(cell.source)
            if match:
                return f"Chapter {number} · {match['title'].strip()}"
    raise SettingError(f"chapter {chapter}: no '# Chapter N · Title' heading to name its Colab link")


def readme_links(github: str, titles: dict[str, str]) -> str:
    """The README's block of Colab links, markers included: one link per chapter (``{chapter: title}``)."""
    links = [f"[{title}]({colab_url(github, chapter)})" for chapter, title in sorted(titles.items())]
    body = " ·\n".join(links) + "."
    return f"{LINKS_START}\n{body}\n{LINKS_END}"


def with_readme_links(text: str, block: str) -> str:
    """``text`` (a README) with its block of Colab links replaced by ``block``."""
    start, end = text.find(LINKS_START), text.find(LINKS_END)
    if start < 0 or end < start:
        raise SettingError(f"README.md has no block between {LINKS_START!r} and {LINKS_END!r} for the Colab links")
    return text[:start] + block + text[end + len(LINKS_END) :]
