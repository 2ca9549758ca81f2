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


def test_a_controller_that_raises_stops_the_head_with_the_error_and_frees_the_lease() -> None:

    from tuner.controllers.base import Plan
    from tuner.records import Decision, Report

    class Broken(StagewiseLR):
        def propose(self, plan: Plan) -> Decision | None:
            raise ValueError("zero-size array to reduction operation maximum")

    state = Path(tempfile.mkdtemp(prefix="tt-hb-"))
    server = EmbeddedRedis(state).start()
    try:
        job = Store.connect(server.url, retries=1).job("broken")
        job.append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
        loop = HeadLoop(job, Broken(StagewiseConfig(init_lr=0.1, tau=20)))
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        assert loop.error == "ValueError: zero-size array to reduction operation maximum"
        assert not job.head_alive()  # a new attach need not wait for the lease to expire
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
