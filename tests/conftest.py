"""Shared test set-up: the suite must pass with no network, so any attempt to open a connection fails the test.

Local sockets are allowed (Jupyter kernels talk to the test process over loopback ZeroMQ and Unix sockets);
anything else raises, with the address in the message so the culprit is easy to find. Host-name look-ups other than
this machine's are refused too. Code that catches the refusal (a library falling back quietly) does not hide it:
every attempt, in this process or in a notebook kernel, is recorded and fails the test that made it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile

import pytest

from mechinterp_course.checking import CheckFailed, ExerciseRecord, using_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# Subprocesses (notebook kernels, nbgrader) load tests/offline_site/sitecustomize.py, which refuses connections too.
_OFFLINE_SITE = os.path.join(os.path.dirname(__file__), "offline_site")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [_OFFLINE_SITE, os.environ.get("PYTHONPATH", "")] if p)
# Where those subprocesses record refused attempts (read after every test by ``no_network``).
NETWORK_LOG = os.path.join(tempfile.mkdtemp(prefix="course-network-"), "attempts.log")
os.environ["COURSE_NETWORK_LOG"] = NETWORK_LOG


#: ``./course test`` runs the suite on two workers (pytest-xdist, a whole file per worker, files in the order
#: pytest collects them): these files, the longest, are collected first, alternating between the workers, so that
#: neither is left with a long file at the end while the other waits.
LONGEST_FIRST = (
    "test_chapter_grading.py",
    "test_browser.py",
    "test_grading.py",
    "test_colab.py",
    "test_models.py",
    "test_lms.py",
)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else 99)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # A worker's share of the cores for PyTorch in this process (more threads than cores slow every process down);
    # the kernels the tests start get theirs from the grader and from tests/browser.py.
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


class NetworkAccessError(RuntimeError):
    pass


_LOCAL_NAMES = {"localhost", "", socket.gethostname()}
#: Attempts refused in this process during the current test (checked in ``no_network``'s teardown).
_attempts: list[str] = []


def _is_local_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # a Unix socket path
        return True
    return _is_local_host(address[0])


def _refuse(what: str):
    _attempts.append(what)
    raise NetworkAccessError(f"test tried to {what}")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_local(address):
        _refuse(f"open a network connection to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        _refuse(f"open a network connection to {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local_host(host):
        _refuse(f"look up the host name {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _kernel_attempts_since(offset: int) -> list[str]:
    if not os.path.exists(NETWORK_LOG):
        return []
    with open(NETWORK_LOG, encoding="utf-8") as f:
        f.seek(offset)
        return [line.strip() for line in f if line.strip()]


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """Fail any test that opens a non-loopback connection or looks up a host, here or in a subprocess it started,
    even if the code that tried caught the error."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    _attempts.clear()
    offset = os.path.getsize(NETWORK_LOG) if os.path.exists(NETWORK_LOG) else 0
    yield
    expected = request.node.get_closest_marker("network_attempt_expected") is not None
    seen = _attempts + _kernel_attempts_since(offset)
    _attempts.clear()
    if seen and not expected:
        pytest.fail(
            "network access was attempted (refused, but it must not happen offline):\n  " + "\n  ".join(seen),
            pytrace=False,
        )


# --------------------------------------------------------------------------------------------------------------
# Calling checks as a notebook's test cells do
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_record():
    """Each test starts with nothing passed, as a fresh notebook does (the record of passes is per kernel)."""
    with using_record(ExerciseRecord()) as record:
        yield record


def own(fn):
    """A reference function as a student's own: a closure, which the provenance checks do not follow (they refuse
    the library's function itself and one-line wrappers that name it)."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def fails(check, *answers, match: str, hidden: str | None = None) -> str:
    """Run ``check`` on ``answers``; it must fail with a message matching the regular expression ``match``.
    Returns the message."""
    with pytest.raises(CheckFailed, match=match) as failure:
        check(*answers, hidden=hidden)
    return str(failure.value)


@pytest.fixture
def record(fresh_record):
    """The record of passes the current test runs with (see ``fresh_record``)."""
    return fresh_record


def hidden_test_leaks(html: str, solution_notebook) -> list[str]:
    """What of a solution notebook's hidden tests shows in a feedback page: their markers, or the salt of any hidden
    call (``hidden="71ce895e"``). A bare ``hidden=`` is not enough to tell: inlined plotly.js contains it."""
    import re
    from pathlib import Path

    salts = set(re.findall(r'hidden=\\*"([0-9a-f]{6,})', Path(solution_notebook).read_text()))
    assert salts, f"{solution_notebook} has no hidden tests to look for"
    found = [salt for salt in sorted(salts) if salt in html]
    return found + [marker for marker in ("HIDDEN TESTS", "hidden=&quot;", 'hidden="') if marker in html]


def hard_coded(reference_fn):
    """Record the reference's answer on the first input and return it whatever the input: a student who copies an
    answer instead of computing it."""
    recorded = []

    def answer(*args, **kwargs):
        if not recorded:
            recorded.append(reference_fn(*args, **kwargs))
        return recorded[0]

    return answer


def exercise_contract(checked: dict):
    """The three tests every chapter's checks owe, for ``checked`` ({check: reference function}): the reference
    passes as a student's own function (visible and hidden); the library's reference itself and an unfinished stub
    are refused; a hard-coded answer fails. A test module binds them:
    ``test_reference_passes, test_refusals, test_hard_coded = exercise_contract(CHECKED)``."""
    ids = [check.exercise for check in checked]

    @pytest.mark.parametrize("check", list(checked), ids=ids)
    @pytest.mark.parametrize("hidden", [None, "5eed0001"])
    def test_the_reference_passes(check, hidden, capsys):
        check(own(checked[check]), hidden=hidden)
        assert "\u2705" in capsys.readouterr().out

    @pytest.mark.parametrize("check", list(checked), ids=ids)
    def test_the_library_reference_and_unfinished_stubs_are_refused(check):
        fails(check, checked[check], match="reference implementation")

        def stub(*args, **kwargs):
            raise NotImplementedError

        fails(check, stub, match="not implemented yet")

    @pytest.mark.parametrize("check", list(checked), ids=ids)
    def test_a_hard_coded_answer_fails(check):
        with pytest.raises(CheckFailed):
            check(own(hard_coded(checked[check])))

    return (
        test_the_reference_passes,
        test_the_library_reference_and_unfinished_stubs_are_refused,
        (test_a_hard_coded_answer_fails),
    )
