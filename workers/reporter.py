"""The agent's background thread: sends buffered reports in batches and renews the lease.

The training loop only appends to an in-memory buffer; this thread sends the buffer in one
Lua call every ``flush_every`` reports or ``flush_interval_s`` seconds, whichever first,
renews the rank's heartbeat, and runs the round trips the agent asks for ahead of time
(:meth:`Reporter.submit`: the next decision's claim). An unreachable Redis keeps the buffer
(its newest :data:`MAX_KEPT` reports) and retries; any other store error is kept and raised
in the training thread at its next call.

Every wake-up of this thread costs the training thread more than the round trip itself (it
must give up the GIL and get it back), so it wakes rarely: a submitted call goes out with
the buffered reports in one wake-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

from trials.store import JobStore
from tuner.errors import StoreError, StoreUnavailableError
from tuner.records import Report
from workers.device_metrics import PendingReport, resolve

log = logging.getLogger(__name__)

MAX_KEPT = 200_000
"""Reports kept for a Redis that is away (about 100 MB at most); older ones are dropped."""
LOG_EVERY_S = 30.0
"""How often an outage is logged again while it lasts."""


class Reporter:
    """Buffers reports and sends them from a daemon thread.

    Args:
        store: The job's store.
        rank: This worker's rank (its lease key).
        flush_every: Send once this many reports are buffered.
        flush_interval_s: Send at least this often (seconds) while reports are buffered.
        lease_ttl_s: Lifetime of the heartbeat key; renewed every ``lease_ttl_s / 3`` seconds.
    """

    def __init__(
        self,
        store: JobStore,
        rank: int,
        *,
        flush_every: int = 32,
        flush_interval_s: float = 0.5,
        lease_ttl_s: float = 10.0,
    ) -> None:
        self.store = store
        self.rank = rank
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.sent = 0
        self.dropped = 0
        """Reports dropped while Redis was away, beyond :data:`MAX_KEPT`."""
        self.unreachable = False
        """Whether the thread's last round found Redis away (cleared when one succeeds)."""
        self._logged_at: float | None = None  # when this outage was last logged
        self._buffer: list[Report | PendingReport] = []
        self._pending = 0  # PendingReports in the buffer: none, and a send reads nothing
        self._cond = threading.Condition()
        # One send at a time: two batches in flight at once (the thread's and a flush's)
        # could land out of order, and Redis refuses a step that is not after the last.
        self._send_lock = threading.Lock()
        self._error: StoreError | None = None
        self._closed = False
        self._urgent = False
        self._tasks: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._info = {"host": socket.gethostname(), "pid": os.getpid()}
        self._thread = threading.Thread(
            target=self._run, name=f"tautune-reporter-{rank}", daemon=True
        )
        self._thread.start()

    def add(self, report: Report | PendingReport) -> None:
        """Buffer ``report``; raises the last background error, if any (a store error, or
        a pending report's value refused when it was read)."""
        self.raise_error()
        with self._cond:
            self._buffer.append(report)
            if type(report) is not Report:
                self._pending += 1
            if len(self._buffer) >= self.flush_every:
                self._cond.notify()

    def kick(self) -> None:
        """Have the background thread send what is buffered now, without waiting for it
        (a stage boundary is near and the head may be waiting for these reports)."""
        with self._cond:
            if self._buffer:
                self._urgent = True
                self._cond.notify()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        """Run ``call`` in the background thread now, after sending what is buffered (one
        wake-up for both); its result or exception goes to the returned future. After
        :meth:`close` (or should the thread have died) it runs at once in the calling
        thread."""
        future: Future[Any] = Future()
        with self._cond:
            if not self._closed and self._thread.is_alive():
                self._tasks.append((call, future))
                self._cond.notify()
                return future
        _run_task(call, future)
        return future

    def raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def flush(self, timeout_s: float = 30.0) -> None:
        """Send everything buffered now, from the calling thread."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._send()
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.raise_error()

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the thread and release the lease."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5.0)
        self._run_tasks()
        try:
            self.flush(timeout_s)
        except StoreUnavailableError as e:  # the run is over: say what is lost, do not fail it
            log.warning(
                "tautune: rank %d closes with %d reports unsent: %s",
                self.rank,
                len(self._buffer),
                e,
            )
        finally:  # also when a buffered value was refused: the rank is gone either way
            if not self.unreachable:  # else its lease expires on its own
                with contextlib.suppress(StoreError):
                    self.store.release(self.rank)

    def _send(self) -> None:
        with self._send_lock:
            with self._cond:
                batch, self._buffer = self._buffer, []
                pending, self._pending = self._pending, 0
            if not batch:
                return
            if pending:
                reports, refused = resolve(batch)  # reads the values still on a device
            else:
                reports, refused = cast(list[Report], batch), []
            if refused and self._error is None:
                self._error = refused[0]  # raised in the training thread at its next call
            if not reports:
                return
            try:
                result = self.store.append_reports(reports)
            except StoreUnavailableError:
                self.unreachable = True  # before the calls queued behind this send fail too
                with self._cond:  # keep them, in order, for the next try
                    self._buffer[:0] = reports
                    if (over := min(len(self._buffer) - MAX_KEPT, len(reports))) > 0:
                        del self._buffer[:over]
                        self.dropped += over
                raise
            self.unreachable = False
            self.sent += result.written

    def _run(self) -> None:
        next_beat = 0.0
        first = True  # take the lease at once, not after the first wait
        while True:
            with self._cond:
                idle = not (
                    self._closed
                    or self._urgent
                    or self._tasks
                    or len(self._buffer) >= self.flush_every
                )
                if not first and idle:
                    self._cond.wait(timeout=min(self.flush_interval_s, self.lease_ttl_s / 3))
                first = False
                self._urgent = False
                closed = self._closed
            if closed:
                return
            try:
                try:
                    self._send()
                finally:
                    self._run_tasks()
                now = time.monotonic()
                if now >= next_beat:
                    self.store.heartbeat(self.rank, ttl_s=self.lease_ttl_s, info=self._info)
                    next_beat = now + self.lease_ttl_s / 3
            except StoreUnavailableError as e:
                self.unreachable = True
                now = time.monotonic()
                if self._logged_at is None or now - self._logged_at > LOG_EVERY_S:
                    self._logged_at = now
                    log.warning(
                        "tautune: Redis unreachable, keeping %d reports (%d dropped): %s",
                        len(self._buffer),
                        self.dropped,
                        e,
                    )
                continue
            except StoreError as e:
                self._error = e
            self.unreachable = False
            if self._logged_at is not None:
                self._logged_at = None
                log.warning("tautune: Redis answers again; reports sent")

    def _run_tasks(self) -> None:
        with self._cond:
            tasks, self._tasks = self._tasks, []
        for call, future in tasks:
            _run_task(call, future)


def _run_task(call: Callable[[], Any], future: Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(call())
    except BaseException as e:  # handed to whoever waits on the future
        future.set_exception(e)
