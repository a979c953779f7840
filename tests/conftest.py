"""Shared test set-up: the suite must pass with no network, so any attempt to open a connection fails the test.

Local sockets are allowed (Jupyter kernels talk to the test process over loopback ZeroMQ and Unix sockets);
anything else raises, with the address in the message so the culprit is easy to find.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# Subprocesses (notebook kernels, nbgrader) load tests/offline_site/sitecustomize.py, which refuses connections too.
_OFFLINE_SITE = os.path.join(os.path.dirname(__file__), "offline_site")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [_OFFLINE_SITE, os.environ.get("PYTHONPATH", "")] if p)


class NetworkAccessError(RuntimeError):
    pass


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # a Unix socket path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkAccessError(f"test tried to open a network connection to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkAccessError(f"test tried to open a network connection to {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test (in this process) that opens a non-loopback connection."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield
