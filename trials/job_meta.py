"""A job's leases, metadata and control requests: small keys beside the streams.

Mixed into :class:`trials.store.JobStore`, which provides ``store`` (the connection) and
``keys`` (the job's :class:`~trials.keys.JobKeys`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trials.serialize import dumps, state_from_json

if TYPE_CHECKING:
    from trials.keys import JobKeys
    from trials.store import Store


class JobMeta:
    """Leases (worker and head heartbeats with a TTL), metadata and detach requests."""

    store: Store
    keys: JobKeys

    def heartbeat(self, rank: int | None, *, ttl_s: float, info: Mapping[str, Any]) -> None:
        """Renew the lease of ``rank`` (``None``: the head) for ``ttl_s`` seconds."""
        key = self.keys.head_lease if rank is None else self.keys.lease(rank)
        ms = max(1, int(ttl_s * 1000))

        def beat(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.set(key, dumps(dict(info)), px=ms)
            if rank is not None:
                pipe.sadd(self.keys.workers, rank)
            pipe.execute()

        self.store.call(beat)

    def release(self, rank: int | None) -> None:
        key = self.keys.head_lease if rank is None else self.keys.lease(rank)
        self.store.call(lambda c: c.delete(key))

    def alive_workers(self) -> dict[int, dict[str, Any]]:
        """Rank -> lease info of every rank whose lease has not expired."""
        ranks = sorted(int(r) for r in self.store.call(lambda c: c.smembers(self.keys.workers)))
        values = (
            self.store.call(lambda c: c.mget([self.keys.lease(r) for r in ranks])) if ranks else []
        )
        return {
            r: state_from_json(v, self.keys.lease(r))
            for r, v in zip(ranks, values, strict=True)
            if v
        }

    def mark_waiting(self, rank: int, step: int) -> None:
        """Record that ``rank`` has trained every step before ``step``, flushed the reports
        it made for them (a loop that steps its scheduler before it reports still owes the
        last one) and waits for the decision covering ``step``."""
        self.store.call(lambda c: c.hset(self.keys.waiting, str(rank), str(step)))

    def waiting(self) -> dict[int, int]:
        """Rank -> the step it last waited at (see :meth:`mark_waiting`)."""
        raw = self.store.call(lambda c: c.hgetall(self.keys.waiting))
        return {int(rank): int(step) for rank, step in raw.items()}

    def head_alive(self) -> bool:
        return bool(self.store.call(lambda c: c.exists(self.keys.head_lease)))

    def wait_for_head(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Wait until a head holds the job's lease (a head actor loads torch and botorch
        as it starts: seconds); whether one does within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.head_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def head_info(self) -> dict[str, Any] | None:
        """The live head's lease info (host, pid, ts), or ``None`` when no head is alive."""
        raw = self.store.call(lambda c: c.get(self.keys.head_lease))
        return state_from_json(raw, self.keys.head_lease) if raw is not None else None

    def request_detach(self) -> None:
        """Ask the job's head to leave the last decision in force and stop."""
        self.store.call(lambda c: c.hset(self.keys.control, "detach", dumps(time.time())))

    def detach_requested(self) -> bool:
        return bool(self.store.call(lambda c: c.hexists(self.keys.control, "detach")))

    def clear_detach(self) -> None:
        self.store.call(lambda c: c.hdel(self.keys.control, "detach"))

    def set_meta(self, **fields: Any) -> None:
        encoded = {name: dumps(value) for name, value in fields.items()}
        self.store.call(lambda c: c.hset(self.keys.meta, mapping=encoded))

    def meta(self) -> dict[str, Any]:
        raw = self.store.call(lambda c: c.hgetall(self.keys.meta))
        return {f.decode(): json.loads(v) for f, v in raw.items()}
