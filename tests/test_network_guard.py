"""The guard itself: outside connections and host look-ups are refused and recorded, in this process and in
subprocesses; loopback works."""

import os
import socket
import subprocess
import sys

import conftest
import pytest
from conftest import NetworkAccessError

# A documentation address (TEST-NET-3, RFC 5737): never routed, so nothing is sent even if the guard were broken.
OUTSIDE = ("203.0.113.7", 80)

pytestmark = pytest.mark.network_attempt_expected  # these tests make attempts on purpose; the guard must refuse them


def test_outside_connection_is_refused():
    with pytest.raises(NetworkAccessError):
        socket.create_connection(OUTSIDE, timeout=1)
    assert any("203.0.113.7" in attempt for attempt in conftest._attempts)


def test_host_name_lookup_is_refused():
    with pytest.raises(NetworkAccessError):
        socket.getaddrinfo("example.org", 443)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    client.connect(server.getsockname())
    client.close()
    server.close()
    assert socket.getaddrinfo("localhost", 80)


def test_subprocesses_are_offline_and_their_attempts_are_recorded():
    before = os.path.getsize(conftest.NETWORK_LOG) if os.path.exists(conftest.NETWORK_LOG) else 0
    code = (
        "import socket\n"
        f"try:\n    socket.create_connection({OUTSIDE!r}, timeout=1)\nexcept OSError as e:\n    print('refused', e)\n"
        "try:\n    socket.getaddrinfo('example.org', 443)\nexcept OSError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.count("refused network access is disabled") == 2, out.stdout + out.stderr
    recorded = conftest._kernel_attempts_since(before)
    assert len(recorded) == 2 and "203.0.113.7" in recorded[0] and "example.org" in recorded[1]
