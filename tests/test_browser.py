"""What a person sees: every chapter opened in JupyterLab in a real (headless) Chromium, run from the menu, offline.

JupyterLab is started by ``./course lab`` itself (as root too: CI runs as root) on a copy of the student notebooks
(chapters/), with no token and no browser of its own. Each chapter's student notebook is opened in a window of its
own, two at a time (two kernels: the machine's two cores), longest first, and run with Run > Run All Cells. It stops
at each exercise left undone, as it does for a student; the test then does what a student does, Run > Run Selected
Cell and All Below from the first cell that has not run, until every cell has run. Then each notebook is saved from
the menu and read back.

Checked: every cell ran; every exercise fails, and only the exercises (their stubs and their checks), every other
cell running on the course's reference, so every figure of the chapter is drawn; every plotly figure and circuitsvis
view in the saved notebook is in the page and drawn (plotly's own ``_fullData`` on a sized plot; circuitsvis's React
view inside its element); widgets render; the score widget's Save writes ``mechinterp_scores.json`` with the slider
values the page shows; the browser console shows no error; no request left the machine (the page's are refused and
recorded; the server's and kernels' by the suite's network guard); and JupyterLab neither asks about nor fetches news
or updates (the course's lab settings).

The solution notebooks are not run here: they are executed once per test run by the grader
(tests/test_chapter_grading.py), which checks that they run with no error and earn full marks. A student notebook
runs the same figures on the course's reference, so what a page draws is checked here once per chapter.

Screenshots of each chapter after its run are saved under tests/artifacts/browser/ (or $COURSE_ARTIFACTS), with
timings.json (each notebook's run time, stops, and cells the kernel ran twice).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import browser
import nbformat
import pytest
from conftest import NETWORK_LOG

from mechinterp_course import research

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(path.parent.name for path in (ROOT / "solutions").glob("*/*.ipynb"))
#: Where the student notebooks are.
FOLDER = "chapters"
#: Notebooks run at once, each in its own window with its own kernel: one per core of the 2-core machines the
#: course targets (each kernel gets its share of the cores for PyTorch's threads).
SLOTS = 2
#: Longest a notebook may take to run in the page (chapter 03, the longest, takes about 180 s on 2 cores alone).
RUN_TIMEOUT_S = 600
POLL_S = 0.25
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
CIRCUITSVIS_MARK = 'id="circuits-vis-'
#: JupyterLab's notifications (its news question is one).
TOASTS = ".jp-toast-message, .Toastify__toast"
#: The only errors an untouched student notebook may show: a stub that is still a stub, a check that says so.
UNFINISHED = {"NotImplementedError", "CheckFailed"}

pytestmark = pytest.mark.slow

#: The active notebook's state: the kernel's status and every code cell's prompt ("[3]:", "[*]:", "[ ]:").
STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(
    cell => (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
  return {status: indicator ? indicator.getAttribute('data-status') : null, prompts};
}"""
#: What the page drew: each plotly figure (size, and whether plotly filled in its data), each circuitsvis view
#: (size and rendered children), each widget output (children, and nbwidgets' failure text).
DRAWN_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const box = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  return {
    plots: [...panel.querySelectorAll('.js-plotly-plot')].map(e => ({
      size: box(e), traces: (e._fullData || []).length, svg: e.querySelectorAll('.main-svg').length})),
    views: [...panel.querySelectorAll('div[id^="circuits-vis-"]')].map(e => ({
      size: box(e), children: e.childElementCount})),
    widgets: [...panel.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets')].map(e => ({
      children: e.childElementCount, text: e.textContent.slice(0, 200)})),
    widgetErrors: [...panel.querySelectorAll('.jp-OutputArea-output')].map(e => e.textContent).filter(
      t => t.includes('Error displaying widget')),
  };
}"""


def _has_run(prompt: str) -> bool:
    return any(ch.isdigit() for ch in prompt)


def _count(prompt: str) -> int:
    """The execution count a prompt shows ("[12]:" -> 12), 0 for none."""
    digits = "".join(ch for ch in prompt if ch.isdigit())
    return int(digits) if digits else 0


@dataclass
class NotebookRun:
    """One notebook opened in its own tab and run from the menu; what it showed is filled in as it goes."""

    chapter: str
    path: Path
    page: object = None
    done: bool = False
    stops: int = 0
    started: float = 0.0
    seconds: float = 0.0
    screenshot_seconds: float = 0.0
    kernel_dialogs: int = 0
    prompts: list[str] = field(default_factory=list)
    saved: nbformat.NotebookNode | None = None
    drawn: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.chapter} (student notebook)"

    def state(self) -> dict:
        return self.page.evaluate(STATE_JS) or {"status": None, "prompts": []}

    def run(self, item: str, first: int = 0) -> None:
        """Run > ``item``, then wait until the run has visibly begun: a cell is queued (its prompt shows ``*``) or
        cell ``first`` has a newer execution count. Polling cannot then mistake the moment before for the end of
        the run, even when the cells are done before the page is asked."""
        latest = max((_count(p) for p in self.state()["prompts"]), default=0)
        browser.menu(self.page, "Run", item)
        try:
            self._wait_started(first, latest)
        except Exception:
            self.page.screenshot(path=str(browser.artifacts_dir("browser-failure") / f"{self.chapter}.png"))
            raise

    def _wait_started(self, first: int, latest: int) -> None:
        self.page.wait_for_function(
            """([first, latest]) => {
              const prompts = [...document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
              const count = p => parseInt((p.textContent.match(/\\d+/) || ['0'])[0]);
              return prompts.some(p => p.textContent.includes('*')) || count(prompts[first]) > latest;
            }""",
            arg=[first, latest],
            timeout=30_000,
        )

    def poll(self) -> None:
        """Advance: when the kernel is idle and nothing is queued, either every cell has run (done), or the run
        stopped at an error and a student would go on from the next cell (the student notebook)."""
        if self.done:
            return
        if time.monotonic() - self.started > RUN_TIMEOUT_S:
            raise AssertionError(f"{self.label} still running after {RUN_TIMEOUT_S} s: {self.state()}")
        state = self.state()
        if state["status"] != "idle" or any("*" in p for p in state["prompts"]):
            return
        self.prompts = state["prompts"]
        waiting = [i for i, p in enumerate(self.prompts) if not _has_run(p)]
        if not waiting:
            self.done, self.seconds = True, time.monotonic() - self.started
            return
        self.stops += 1
        self.select(waiting[0])
        self.run("Run Selected Cell and All Below", waiting[0])

    def select(self, index: int) -> None:
        """Make code cell ``index`` the active cell by clicking its prompt, as a person does; the click is repeated
        if the notebook was still moving under it (a click that lands on another cell would run that one)."""
        cell = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell").nth(index)
        for _ in range(10):
            cell.scroll_into_view_if_needed()
            cell.locator(".jp-InputPrompt").click()
            if "jp-mod-active" in (cell.get_attribute("class") or ""):
                return
            self.page.wait_for_timeout(200)
        raise AssertionError(f"{self.label}: could not make code cell {index} the active cell")


def _open(chromium, guard, base: str, run: NotebookRun, workspace: str) -> None:
    """The notebook in a window of its own (a browser context each: two tabs of one window would leave the hidden
    one without animation frames, and JupyterLab draws on those)."""
    context = chromium.new_context(viewport=browser.VIEWPORT)
    guard.attach(context)
    page = context.new_page()
    guard.watch(page, run.label)
    # A workspace of its own, reset: only this notebook, whatever JupyterLab restored last time.
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{run.path.as_posix()}?reset")
    run.page = page
    # Ready when its kernel is idle and has stayed so for a second with no dialog up. On a busy machine JupyterLab
    # sometimes asks which kernel to start, with the notebook's own preselected: accept it, as a student would.
    deadline, ready_since = time.monotonic() + 120, None
    while ready_since is None or time.monotonic() - ready_since < 1.0:
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            run.kernel_dialogs += 1
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
            ready_since = None
        elif run.state()["status"] == "idle" and page.locator(".jp-StatusBar-Widget", has_text="| Idle").count():
            ready_since = ready_since or time.monotonic()
        else:
            ready_since = None
        if time.monotonic() > deadline:
            page.screenshot(path=str(browser.artifacts_dir("browser-failure") / f"{run.chapter}.png"))
            raise AssertionError(f"{run.label}: the notebook's kernel did not become ready")
        page.wait_for_timeout(POLL_S * 1000)


def _save(run: NotebookRun, root: Path) -> None:
    """File > Save Notebook, then read the notebook back from disk once it holds this run."""
    browser.menu(run.page, "File", "Save Notebook")
    ran = sum(_has_run(p) for p in run.prompts)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            nb = nbformat.read(root / run.path, as_version=4)
        except (OSError, ValueError):
            nb = None
        if nb is not None and sum(c.execution_count is not None for c in nb.cells if c.cell_type == "code") == ran:
            run.saved = nb
            return
        run.page.wait_for_timeout(POLL_S * 1000)  # not time.sleep: the page must go on saving meanwhile
    run.page.screenshot(path=str(browser.artifacts_dir("browser-failure") / f"{run.chapter}.png"))
    counts = None if nb is None else sum(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
    raise AssertionError(f"{run.label}: the saved notebook shows {counts} cells run, the page {ran}")


def _use_score_widget(run: NotebookRun, root: Path) -> None:
    """Move the first score widget's first slider one step with the keyboard, press Save, and record what the page
    shows (the sliders' read-outs, the message) and what the file holds."""
    panel = run.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    form = panel.locator(".widget-vbox:has(> .widget-button)").first
    form.scroll_into_view_if_needed()
    title = form.locator(".widget-html b").first.text_content()
    readouts = form.locator(".widget-readout")
    before = int(readouts.first.text_content())
    form.locator(".noUi-handle").first.focus()
    run.page.keyboard.press("ArrowRight")
    run.page.wait_for_function(
        "([el, before]) => el.textContent.trim() !== String(before)", arg=[readouts.first.element_handle(), before]
    )
    shown = [int(readouts.nth(i).text_content()) for i in range(readouts.count())]
    form.locator(".widget-button", has_text="Save").click()
    form.locator(".widget-output", has_text="saved").wait_for(timeout=30_000)
    area = next(key for key, info in research.AREAS.items() if info.title == title)
    file = root / run.path.parent / research.DEFAULT_SCORES_FILE
    run.scores = {
        "area": area,
        "before": before,
        "shown": dict(zip(research.SCORE_KEYS, shown)),
        "message": form.locator(".widget-output").text_content(),
        "file": json.loads(file.read_text()) if file.is_file() else None,
    }


def _picture(run: NotebookRun, target, path: Path) -> None:
    """The window with ``target`` scrolled to its middle, as a student scrolling there sees it. Scrolled twice: cells
    that come into view are laid out then (JupyterLab skips laying out what is off screen), which moves the rest."""
    for wait_ms in (300, 150):
        target.evaluate("element => element.scrollIntoView({block: 'center'})")
        run.page.wait_for_timeout(wait_ms)
    run.page.screenshot(path=str(path))
    run.screenshots.append(path)


def _screenshots(run: NotebookRun, folder: Path, tick=lambda: None) -> None:
    """The window as the run left it, then scrolled to each rich output (figures, views, widgets) and to the first
    failed check, one picture each. ``tick`` is called between pictures (to keep the other notebook going)."""
    panel = run.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    path = folder / f"{run.chapter}.png"
    run.page.screenshot(path=str(path))
    run.screenshots.append(path)
    outputs = panel.locator(
        ".jp-OutputArea-child:has(.js-plotly-plot), .jp-OutputArea-child:has(div[id^='circuits-vis-']), "
        ".jp-OutputArea-child:has(.jupyter-widgets)"
    )
    for i in range(outputs.count()):
        _picture(run, outputs.nth(i), folder / f"{run.chapter}-{i + 1:02d}.png")
        tick()
    failed = panel.locator(".jp-CodeCell:has([data-mime-type='application/vnd.jupyter.stderr'])")
    if failed.count():
        _picture(run, failed.first, folder / f"{run.chapter}-first-error.png")


@dataclass
class Session:
    runs: dict[str, NotebookRun]  # by chapter
    guard: browser.Guard
    server_log: str
    network: list[str]
    news_toasts: list[str]
    seconds: float


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    from playwright.sync_api import sync_playwright

    executable = browser.chromium()
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "course"
    for chapter in CHAPTERS:
        target = root / FOLDER / chapter
        target.mkdir(parents=True)
        shutil.copy(ROOT / FOLDER / chapter / f"{chapter}.ipynb", target)
    artifacts = browser.artifacts_dir("browser")
    offset = os.path.getsize(NETWORK_LOG) if os.path.exists(NETWORK_LOG) else 0
    server = browser.course_lab(root, tmp / "home", kernels=SLOTS)
    guard = browser.Guard()
    runs: dict[str, NotebookRun] = {}
    toasts: list[str] = []
    try:
        with sync_playwright() as playwright:
            chromium = browser.launch(playwright, executable)
            waiting = [NotebookRun(c, Path(FOLDER) / c / f"{c}.ipynb") for c in _longest_first()]
            active: list[NotebookRun] = []
            while waiting or active:
                while waiting and len(active) < SLOTS:  # start the next notebook in a free slot
                    run = waiting.pop(0)
                    _open(chromium, guard, server.url, run, run.chapter)
                    run.started = time.monotonic()
                    run.run("Run All Cells")
                    active.append(run)
                for run in active:
                    run.poll()
                for run in [r for r in active if r.done]:
                    active.remove(run)
                    # JupyterLab's news question is a notification that stays until answered: after a run (the
                    # page has been open for a while) it would be showing.
                    toasts += run.page.locator(TOASTS).all_text_contents()
                    _save(run, root)
                    run.drawn = run.page.evaluate(DRAWN_JS)
                    _use_score_widget(run, root)
                    shooting = time.monotonic()
                    _screenshots(run, artifacts, tick=lambda: [other.poll() for other in active])
                    run.screenshot_seconds = time.monotonic() - shooting
                    run.page.context.close()  # its kernel stays (idle) until the server stops
                    runs[run.chapter] = run
                if active:
                    active[0].page.wait_for_timeout(POLL_S * 1000)  # not time.sleep: Playwright's events must flow
            chromium.close()
    finally:
        server.stop()
    network = []
    if os.path.exists(NETWORK_LOG):
        with open(NETWORK_LOG, encoding="utf-8") as f:
            f.seek(offset)
            network = [line.strip() for line in f if line.strip()]
    seconds = time.monotonic() - started
    timings = {
        chapter: {
            "run": round(r.seconds, 1),
            "stops": r.stops,
            # Cells the kernel ran more than once: after an error ipykernel aborts only the requests already
            # queued (its stop_on_error_timeout is 0), so Run All can run some cells below the error, which the
            # next Run Selected Cell and All Below runs again.
            "extra executions": max(c.execution_count or 0 for c in r.saved.cells if c.cell_type == "code")
            - sum(c.cell_type == "code" for c in r.saved.cells),
            "screenshots": round(r.screenshot_seconds, 1),
            "kernel dialogs": r.kernel_dialogs,
        }
        for chapter, r in runs.items()
    }
    (artifacts / "timings.json").write_text(json.dumps(dict(timings, total=round(seconds, 1)), indent=2) + "\n")
    return Session(runs, guard, server.log_text(), network, toasts, seconds)


def _outputs(nb, mime: str | None = None):
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if mime is None or mime in output.get("data", {}):
                    yield index, cell, output


def _errors(nb) -> list[tuple[int, dict, str, str]]:
    return [
        (i, cell.metadata.get("nbgrader", {}), o.get("ename"), o.get("evalue", ""))
        for i, cell, o in _outputs(nb)
        if o.get("output_type") == "error"
    ]


def _circuitsvis_views(nb) -> int:
    """circuitsvis views in the saved notebook: the elements its HTML outputs render into."""
    return sum("".join(o["data"]["text/html"]).count(CIRCUITSVIS_MARK) for _, _, o in _outputs(nb, "text/html"))


def _longest_first() -> list[str]:
    """The chapters in the order they are started: the longest first (the chapter's measured run time, from
    benchmarks/results.json), so that the two slots finish close together."""
    try:
        measured = json.loads((ROOT / "benchmarks" / "results.json").read_text())["notebooks"]
    except (OSError, KeyError, ValueError):
        measured = {}
    return sorted(CHAPTERS, key=lambda chapter: -measured.get(chapter, {}).get("seconds", 0.0))


def test_jupyterlab_starts_with_the_course_settings(session):
    """./course lab started the server (with --allow-root and its note when run as root); JupyterLab neither asked
    about nor fetched news or updates; nothing but this machine was asked for anything."""
    if os.geteuid() == 0:
        assert "running as root" in session.server_log and "--allow-root" in session.server_log
    assert not [t for t in session.news_toasts if "news" in t.lower() or "update" in t.lower()], session.news_toasts
    assert not [p for p in session.guard.paths if p.startswith(("lab/api/news", "lab/api/update"))]
    assert not session.network, session.network
    assert not session.guard.refused, session.guard.refused


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_cell_runs_from_the_menu(session, chapter):
    run = session.runs[chapter]
    code_cells = [c for c in nbformat.read(ROOT / run.path, as_version=4).cells if c.cell_type == "code"]
    assert len(run.prompts) == len(code_cells) and all(_has_run(p) for p in run.prompts), run.prompts
    counts = [c.execution_count for c in run.saved.cells if c.cell_type == "code"]
    assert all(counts), counts


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_an_untouched_student_notebook_fails_at_every_exercise_and_only_there(session, chapter):
    """Run as released, the student notebook fails at each exercise: every check cell says what is missing (so no
    stub passes its check) and every other error is a stub that still raises NotImplementedError. Every other cell
    runs (on the course's reference), with no traceback printed."""
    run = session.runs[chapter]
    errors = _errors(run.saved)
    for index, meta, ename, evalue in errors:
        assert meta.get("solution") or meta.get("grade"), f"cell {index} is not an exercise: {ename}: {evalue}"
        assert ename in UNFINISHED, f"cell {index} ({meta.get('grade_id')}): {ename}: {evalue}"
    failed = {meta.get("grade_id") for _, meta, _, _ in errors}
    checks = {
        meta["grade_id"]
        for cell in run.saved.cells
        if cell.cell_type == "code"
        and (meta := cell.metadata.get("nbgrader", {})).get("grade")
        and not meta.get("solution")
    }
    assert checks and checks <= failed, f"checks that passed on an unfinished stub: {sorted(checks - failed)}"
    stderr = [
        index
        for index, meta, o in _outputs(run.saved)
        if o.get("output_type") == "stream" and o.get("name") == "stderr" and "Traceback" in "".join(o.get("text", ""))
    ]
    assert not stderr, f"cells {stderr} printed a traceback"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_figure_and_view_is_drawn(session, chapter):
    run = session.runs[chapter]
    plots = list(_outputs(run.saved, PLOTLY))
    views = _circuitsvis_views(run.saved)
    widgets = list(_outputs(run.saved, WIDGET))
    drawn = run.drawn
    assert plots, f"{chapter}: no plotly figure at all"
    assert len(drawn["plots"]) == len(plots), (len(drawn["plots"]), len(plots))
    for plot in drawn["plots"]:
        assert plot["traces"] > 0 and plot["svg"] > 0 and min(plot["size"]) > 0, plot
    assert len(drawn["views"]) == views, (drawn["views"], views)
    for view in drawn["views"]:
        assert view["children"] > 0 and min(view["size"]) > 0, view
    assert len(drawn["widgets"]) == len(widgets), (drawn["widgets"], len(widgets))
    assert all(widget["children"] > 0 for widget in drawn["widgets"]), drawn["widgets"]
    assert not drawn["widgetErrors"], drawn["widgetErrors"]


def test_circuitsvis_views_are_drawn_in_chapter_01(session):
    """Chapter 01 shows circuitsvis's attention view (its bundle inlined from the installed package)."""
    assert _circuitsvis_views(session.runs["01_circuits"].saved) > 0


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_score_widget_saves_the_scores_file(session, chapter):
    scores = session.runs[chapter].scores
    assert scores["shown"][research.SCORE_KEYS[0]] == scores["before"] + 1
    assert scores["file"] is not None and scores["file"][scores["area"]] == scores["shown"], scores
    assert "saved" in scores["message"] and research.DEFAULT_SCORES_FILE in scores["message"]


def test_the_console_shows_no_error_and_nothing_leaves_the_machine(session):
    assert not session.guard.console_errors, session.guard.console_errors
    assert not session.guard.refused, session.guard.refused
    assert not session.network, session.network


def test_screenshots_are_saved(session):
    for run in session.runs.values():
        assert run.screenshots and all(p.is_file() and p.stat().st_size > 0 for p in run.screenshots), run.label


def test_without_chromium_the_browser_tests_skip_with_one_line_or_fail_where_required(monkeypatch, tmp_path):
    """On a machine with no Chromium a browser test skips, saying how to get one; under COURSE_REQUIRE_BROWSER=1
    (CI) it fails instead."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    monkeypatch.delenv(browser.EXECUTABLE_ENV, raising=False)
    monkeypatch.delenv(browser.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        browser.chromium()
    assert "apt-get install chromium" in str(skipped.value) and "\n" not in str(skipped.value)
    monkeypatch.setenv(browser.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="COURSE_REQUIRE_BROWSER=1 but no Chromium found"):
        browser.chromium()
    monkeypatch.setenv(browser.EXECUTABLE_ENV, str(tmp_path / "missing"))
    with pytest.raises(pytest.fail.Exception, match="is not an executable"):
        browser.chromium()


def test_ci_requires_the_browser_and_runs_the_readmes_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "chromium" in ci
    assert "export COURSE_REQUIRE_BROWSER=1" in ci
    assert ci.strip().splitlines()[-1] == "exec ./course test"
