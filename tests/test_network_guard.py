import socket

import pytest

from conftest import NetworkAccessError


def test_outside_connection_is_refused():
    with pytest.raises(NetworkAccessError):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    client.connect(server.getsockname())
    client.close()
    server.close()


def test_subprocesses_are_offline_too():
    import subprocess
    import sys

    code = "import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=1)\nexcept OSError as e:\n    print('refused', e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("refused network access is disabled")
