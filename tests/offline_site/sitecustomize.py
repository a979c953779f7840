"""Loaded by every Python subprocess the tests start (notebook kernels, nbgrader): refuse non-loopback connections.

The tests put this folder on PYTHONPATH (see conftest.py), so a notebook that downloads anything fails its test
exactly as it would fail a student working offline.
"""

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect(self, address):
    if not _is_local(address):
        raise OSError(f"network access is disabled in the course's tests (tried {address!r})")
    return _real_connect(self, address)


def _connect_ex(self, address):
    if not _is_local(address):
        raise OSError(f"network access is disabled in the course's tests (tried {address!r})")
    return _real_connect_ex(self, address)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
