"""The head loop while its Redis is away: a real redis-server stopped and started again
under a :class:`~tuner.head.HeadLoop` in a thread. The head retries, says so while Redis is
away, and, once it answers, resumes with no error left behind (``tautune attach`` exits
non-zero on an error)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
from tuner.head import HeadLoop


def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_head_resumes_without_an_error_once_redis_is_back() -> None:
    state = Path(tempfile.mkdtemp(prefix="tt-ho-"))
    server = EmbeddedRedis(state).start()
    try:
        job = Store.connect(server.url, retries=1).job("away")
        loop = HeadLoop(job, StagewiseLR(StagewiseConfig(init_lr=0.1, tau=20)))
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        assert _until(lambda: job.head_alive())
        server.stop()
        assert _until(lambda: loop.error is not None)
        assert "unreachable" in str(loop.error)
        server.start()
        assert _until(lambda: loop.error is None), loop.error
        assert _until(lambda: job.head_alive())  # its lease renewed: the loop runs again
        loop.stop()
        thread.join(10)
        assert not thread.is_alive() and loop.error is None
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
