"""What every head loop does around its controller: heartbeat, resync, retry, stop."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod

from trials.store import JobStore
from tuner.errors import StoreError, StoreUnavailableError

log = logging.getLogger(__name__)


class Loop(ABC):
    """Runs :meth:`step` until :meth:`stop`; an unreachable Redis is retried, not fatal.

    Subclasses implement :meth:`resync` (load stored state, replay unacknowledged
    reports), :meth:`step` (one round) and :meth:`finish` (take in what was sent, write a
    last checkpoint) and call :meth:`beat` from ``step``.
    """

    def __init__(self, store: JobStore, *, lease_ttl_s: float) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        self.error: str | None = None
        self.warning: str | None = None
        """What ``tautune status`` shows the user: advice, or reports that miss a metric."""
        self._advice: str | None = None
        self._stop = threading.Event()
        self._next_beat = 0.0

    def beat(self) -> bool:
        """Renew the head's lease if due (every ``lease_ttl_s / 4``); whether it did."""
        now = time.monotonic()
        if now < self._next_beat:
            return False
        info = {"host": socket.gethostname(), "pid": os.getpid(), "ts": time.time()}
        self.store.heartbeat(None, ttl_s=self.lease_ttl_s, info=info)
        self._next_beat = now + self.lease_ttl_s / 4
        return True

    def advise(self, advice: str | None) -> None:
        """Log the controller's advice (:meth:`~tuner.controllers.base.Controller.advice`)
        once, and put it in the job's metadata for ``tautune status``."""
        if advice is None or advice == self._advice:
            return
        self._advice = self.warning = advice
        log.warning("tautune head %s: %s", self.store.job, advice)
        self.store.set_meta(warning=advice)

    @abstractmethod
    def resync(self) -> None: ...

    @abstractmethod
    def step(self) -> None: ...

    @abstractmethod
    def finish(self) -> None: ...

    def run(self) -> None:
        away = False  # Redis was unreachable: self.error says so until it answers again
        while not self._stop.is_set():
            try:
                self.store.clear_detach()  # a request made while no head ran is stale
                self.resync()
                if away:
                    away, self.error = False, None
                    log.warning("tautune head %s: Redis answers again; resumed", self.store.job)
                while not self._stop.is_set():
                    self.step()
                self.finish()
                self.store.release(None)
                return
            except StoreUnavailableError as e:
                away, self.error = True, str(e)
                log.warning("tautune head %s: %s; retrying", self.store.job, e)
                self._stop.wait(1.0)
            except StoreError as e:
                self.error = str(e)
                log.error("tautune head %s stopped: %s", self.store.job, e)
                return
            except Exception as e:  # a controller's bug: say so, and free the job's lease
                self.error = f"{type(e).__name__}: {e}"
                log.exception("tautune head %s stopped by an error", self.store.job)
                with contextlib.suppress(StoreError):
                    self.store.release(None)
                return

    def stop(self) -> None:
        self._stop.set()
