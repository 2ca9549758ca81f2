"""What a wrong Redis URL says: a Redis that wants a password given none or a wrong one,
and a server that is not Redis at all, are configuration errors named as such (not
"unreachable", not a protocol traceback). Real servers: a redis-server with a password and
a TCP listener that answers like a web server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trials.embedded import find_redis_server
from trials.store import Store
from tuner.errors import ConfigError


@pytest.fixture(scope="module")
def locked() -> Iterator[str]:
    """The unix socket of a redis-server that requires the password ``sekret``."""
    state = Path(tempfile.mkdtemp(prefix="tt-auth-"))
    sock = state / "r.sock"
    proc = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(sock), "--requirepass",
         "sekret", "--save", "", "--appendonly", "no", "--dir", str(state)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield str(sock)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(state, ignore_errors=True)


def test_a_password_redis_wants_and_was_not_given_is_named(locked: str) -> None:
    with pytest.raises(ConfigError, match=r"refused the credentials \(none given"):
        Store.connect(f"unix://{locked}", retries=0)


def test_a_wrong_password_is_named_and_not_echoed(locked: str) -> None:
    with pytest.raises(ConfigError, match=r"wrong user or password") as e:
        Store.connect(f"unix://:guess@{locked}", retries=0)
    assert "guess" not in str(e.value)
    Store.connect(f"unix://:sekret@{locked}", retries=0).close()  # the right one works


def test_a_server_that_is_not_redis_is_named() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"<html>not redis</html>\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(ConfigError, match="did not answer as a Redis server does"):
        Store.connect(f"redis://127.0.0.1:{port}/0", retries=0)
    listener.close()
