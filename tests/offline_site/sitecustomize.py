"""Loaded by every Python subprocess the tests start (notebook kernels, nbgrader): refuse non-loopback connections
and host-name look-ups, and record each attempt.

The tests put this folder on PYTHONPATH and name a log file in ``COURSE_NETWORK_LOG`` (see conftest.py). A refused
connection raises ``OSError``, as it would for a student working offline; since library code often catches that and
falls back quietly, every attempt is also written to the log, and the test that caused it fails in its teardown.
"""

import ipaddress
import os
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_LOCAL_NAMES = {"localhost", "", socket.gethostname()}


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
    log = os.environ.get("COURSE_NETWORK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()}: {what}\n")
    raise OSError(f"network access is disabled in the course's tests (tried {what})")


def _connect(self, address):
    if not _is_local(address):
        _refuse(f"connect {address!r}")
    return _real_connect(self, address)


def _connect_ex(self, address):
    if not _is_local(address):
        _refuse(f"connect {address!r}")
    return _real_connect_ex(self, address)


def _getaddrinfo(host, *args, **kwargs):
    if not _is_local_host(host):
        _refuse(f"look up {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.getaddrinfo = _getaddrinfo
