"""Pipelining the store's own script calls: :class:`CommandCapture` runs a real
:class:`~trials.store.JobStore` method up to the point where it would send its ``EVALSHA``
and hands that command over instead, so that a load generator can send the commands of
many simulated workers in one pipeline, with exactly the keys and arguments the store
builds (whatever its current layout). Nothing here stands in for Redis: the commands are
sent to a real server by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from trials.store import Store

T = TypeVar("T")


class _Captured(Exception):
    def __init__(self, command: tuple[Any, ...]) -> None:
        super().__init__("captured a store command")
        self.command = command


class _Recorder:
    """Stands where the redis client would and stops the call at its ``EVALSHA``."""

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> NoReturn:
        raise _Captured(("EVALSHA", sha, numkeys, *args))


_RECORDER = _Recorder()


class CommandCapture(Store):
    """A :class:`Store` that can hand over the script command a ``JobStore`` call would send.

    Outside :meth:`capture` it is an ordinary store (``JobStore`` construction, schema
    checks and everything else go to Redis).
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._local = threading.local()

    def call(self, fn: Callable[[Any], T]) -> T:
        if getattr(self._local, "capturing", False):
            return fn(_RECORDER)
        return super().call(fn)

    def capture(self, fn: Callable[[], object]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command ``fn`` (a ``JobStore`` method call on this store) would
        send, as arguments for ``execute_command``; nothing is sent."""
        self._local.capturing = True
        try:
            fn()
        except _Captured as c:
            return c.command
        finally:
            self._local.capturing = False
        raise RuntimeError("the store call sent no script command")
