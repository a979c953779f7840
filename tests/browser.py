"""The suite's browser: headless Chromium driven by Playwright, JupyterLab started as the course starts it, and a
guard that refuses every request that leaves the machine.

Where the browser comes from. Playwright's Python package is a dev dependency; the browser is not: Playwright's own
download (``playwright install``) is never used. :func:`chromium` finds an installed Chromium (``$COURSE_CHROMIUM``,
else ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH). Without one, a browser test is skipped with
one line saying how to get it, unless ``COURSE_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails: CI must
never pass by skipping them.

Offline. Every request the page makes to anything but this machine (``127.0.0.1``, ``localhost``) is aborted and
recorded (:class:`Guard`), and Chromium's own background traffic (updates, sync, safe browsing) is switched off by
its flags. The Jupyter server and its kernels are Python processes started by the tests, so the suite's network guard
(tests/offline_site) refuses and records their attempts too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Set to 1 where a missing browser must fail the browser tests rather than skip them (.ci/run sets it).
REQUIRE_ENV = "COURSE_REQUIRE_BROWSER"
#: A Chromium (or Chrome) executable to use instead of the one found on the PATH.
EXECUTABLE_ENV = "COURSE_CHROMIUM"
#: Where screenshots go (default: tests/artifacts/, ignored by git).
ARTIFACTS_ENV = "COURSE_ARTIFACTS"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW_TO_ENABLE = (
    "no Chromium found, so the browser tests are skipped; to run them install one "
    "(Debian/Ubuntu: `apt-get install chromium`) or set COURSE_CHROMIUM=/path/to/chromium"
)
#: Headless, and nothing of Chromium's own that talks to the internet (these work as root too, with --no-sandbox).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
]
LOCAL_HOSTS = ("127.0.0.1", "localhost")
#: Every URL but this machine's: what the guard routes (and aborts).
OUTSIDE = re.compile(r"^(?!(https?|wss?)://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$))")
#: How long JupyterLab may take to start (./course lab checks the environment and builds missing chapters first).
START_TIMEOUT_S = 180
VIEWPORT = {"width": 1400, "height": 1000}


def chromium() -> str:
    """The Chromium executable to drive; skips the calling test (or fails it, under ``COURSE_REQUIRE_BROWSER=1``)
    when there is none."""
    wanted = os.environ.get(EXECUTABLE_ENV)
    found = wanted if wanted and os.access(wanted, os.X_OK) else None
    if found is None and not wanted:
        found = next((path for name in CANDIDATES if (path := shutil.which(name))), None)
    if found is None:
        reason = f"{EXECUTABLE_ENV}={wanted} is not an executable" if wanted else HOW_TO_ENABLE
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def artifacts_dir(name: str) -> Path:
    """A fresh folder for one test module's screenshots, under ``$COURSE_ARTIFACTS`` or tests/artifacts/."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or ROOT / "tests" / "artifacts") / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def is_local(url: str) -> bool:
    """Whether ``url`` stays on this machine (or is not a network URL at all: data:, blob:, about:)."""
    if not url.startswith(("http:", "https:", "ws:", "wss:")):
        return True
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.split(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
    return host in LOCAL_HOSTS or host == "[::1]"


@dataclass
class Guard:
    """What the pages of a browser context did that a test must see: requests refused (anything leaving the
    machine, aborted), console errors and uncaught exceptions, and every local request's path."""

    refused: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def attach(self, context) -> None:
        """Refuse what leaves the machine. Only those requests reach this process (the pattern is matched in
        Playwright's driver): routing every request through Python would hold each one until the test next calls
        Playwright."""
        context.route(OUTSIDE, self._refuse)
        context.on("request", lambda request: self.paths.append(_path(request.url)) if is_local(request.url) else None)

    def watch(self, page, label: str) -> None:
        page.on(
            "console",
            lambda message: self.console_errors.append(f"{label}: {message.text}") if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: self.console_errors.append(f"{label}: uncaught {error}"))

    def _refuse(self, route) -> None:
        url = route.request.url
        if is_local(url):  # not a network request after all (the pattern is the first test, this the second)
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()


def _path(url: str) -> str:
    """``lab/api/news`` from ``http://127.0.0.1:8888/lab/api/news?x=1``."""
    return url.split("://", 1)[1].split("/", 1)[-1].split("?", 1)[0]


def launch(playwright, executable: str):
    """Headless Chromium, with a fresh profile (Playwright makes one per launch)."""
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


# --------------------------------------------------------------------------------------------------------------
# JupyterLab
# --------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A JupyterLab server this test run started (its own process group), and its log."""

    process: subprocess.Popen
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this server leads: it and its kernels
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def isolated_env(home: Path) -> dict[str, str]:
    """The test's environment, with JupyterLab's per-user settings, workspaces and configuration in ``home`` (a
    temporary folder): what is tested is the course's settings, not the developer's own."""
    env = dict(os.environ)
    for name, folder in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTERLAB_SETTINGS_DIR", "user-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ]:
        (home / folder).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / folder)
    env.pop("MECHINTERP_SCORES", None)  # the score widget saves beside the notebook, as for a student
    return env


def start(command: list[str], cwd: Path, port: int, home: Path, kernels: int = 1) -> Server:
    """Run ``command`` (a JupyterLab server on ``port``) and wait until it answers. ``kernels`` is how many kernels
    will run at once: each gets that share of the cores for PyTorch's threads, as the grader's kernels do (more
    threads than cores makes every kernel slower)."""
    env = isolated_env(home)
    threads = str(max(1, (os.cpu_count() or 1) // kernels))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    log = home / f"jupyterlab-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"JupyterLab did not answer within {START_TIMEOUT_S} s:\n{server.log_text()[-3000:]}")


def server_options(port: int, root_dir: Path) -> list[str]:
    """A server for a test: on ``port``, no token or password (only this machine can reach it), no browser."""
    return [
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.token=",
        "--ServerApp.password=",
        f"--notebook-dir={root_dir}",
    ]


def course_lab(root_dir: Path, home: Path, kernels: int = 1) -> Server:
    """JupyterLab on ``root_dir`` the way students start it: ``./course lab`` (which adds what running as root
    needs, and uses the course's lab settings), plus the options of :func:`server_options`."""
    port = free_port()
    return start([str(ROOT / "course"), "lab", *server_options(port, root_dir)], ROOT, port, home, kernels)


def instructor_lab(folder: Path, home: Path) -> Server:
    """``jupyter lab`` in a grading folder, as the README tells instructors (``--allow-root`` where the tests run
    as root, as ``./course lab`` adds it)."""
    port = free_port()
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    return start([sys.executable, "-m", "jupyterlab", *server_options(port, folder), *as_root], folder, port, home)


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in JupyterLab's menu bar, then ``item`` in the menu it opens (exact labels)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()
