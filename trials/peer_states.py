"""Training states one trial of a population job publishes for the others.

A population ``explore`` stage trains one candidate per trial, then every trial goes on from
the winner's state. The winner's ranks publish that state here, one per rank, and the other
trials' ranks load it (:class:`workers.peers.StorePeers`). The bytes are a serialized
:class:`~workers.snapshot.Snapshot`, stored in parts of at most :data:`PART_BYTES` (a Redis
string holds 512 MiB; a 150M-parameter model with AdamW's state is 1.8 GB), the parts first
and then the key a reader polls, which names them: a reader that finds that key finds the
whole state. Each expires after ``ttl_s``, and a rank keeps its :data:`KEEP_PUBLISHED` newest
states only, deleting older ones as it publishes, so Redis holds at most that many states
per trial rank whatever the stage length.

Mixed into :class:`trials.store.JobStore`, which provides ``store`` and ``keys``.
"""

from __future__ import annotations

import contextlib
import json
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from trials.keys import JobKeys
    from trials.store import Store

PART_BYTES = 64 * 2**20
"""Largest part of a state in one Redis value."""

PEER_TTL_S = 3600.0
"""How long a published state is kept."""

KEEP_PUBLISHED = 2
"""States a trial rank keeps published: the newest, and the one before for a peer that is
still loading it."""

_FORMAT = "tautune-peer-state/1"


class PeerStates:
    """Publish and fetch training states between the trials of one job."""

    store: Store
    keys: JobKeys

    def _trial(self) -> int:
        trial = self.keys.trial
        if trial is None:
            raise ConfigError("only the trials of a population job publish states to each other")
        return trial

    def publish_state(
        self,
        rank: int,
        step: int,
        blob: bytes,
        *,
        ttl_s: float = PEER_TTL_S,
        part_bytes: int = PART_BYTES,
    ) -> None:
        """Store ``blob``, this trial's ``rank``'s state at ``step``, for ``ttl_s`` seconds,
        in parts of ``part_bytes``; of this rank's published states the newest
        :data:`KEEP_PUBLISHED` (this one included) are kept and the older ones deleted.

        Raises:
            ConfigError: the view is not a trial's.
        """
        trial = self._trial()
        key = self.keys.peer_state(trial, rank, step)
        index = self.keys.peer_index(trial, rank)
        view = memoryview(blob)
        parts = max(1, -(-len(blob) // part_bytes))
        ms = max(1, int(ttl_s * 1000))
        head = json.dumps({"format": _FORMAT, "parts": parts, "bytes": len(blob)})
        for i in range(parts):  # one value per call: other clients are served in between
            chunk = view[i * part_bytes : (i + 1) * part_bytes]
            self.store.call(partial(_set, f"{key}:part:{i}", chunk, ms))

        def put(c: Any) -> list[bytes]:
            p = c.pipeline(transaction=False)
            p.set(key, head, px=ms)
            # scored by when, not by step: a rank that restarted publishes an older step
            # again, and that is then its newest
            p.zadd(index, {str(step): time.time()})
            p.pexpire(index, ms)
            p.zrange(index, 0, -KEEP_PUBLISHED - 1)
            return list(p.execute()[-1])

        stale = [int(m) for m in self.store.call(put)]
        if stale:
            self._delete(trial, rank, stale)

    def _delete(self, trial: int, rank: int, steps: list[int]) -> None:
        """Delete the states ``rank`` of ``trial`` published at ``steps``, parts and all."""
        keys = [self.keys.peer_state(trial, rank, step) for step in steps]
        heads = self.store.call(lambda c: c.mget(keys))
        doomed: list[str] = []
        for key, raw in zip(keys, heads, strict=True):
            doomed.append(key)
            if raw is not None:
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                    doomed += [f"{key}:part:{i}" for i in range(int(json.loads(raw)["parts"]))]
        index = self.keys.peer_index(trial, rank)

        def drop(c: Any) -> None:
            p = c.pipeline(transaction=False)
            p.delete(*doomed)
            p.zrem(index, *(str(s) for s in steps))
            p.execute()

        self.store.call(drop)

    def peer_state(self, trial: int, rank: int, step: int) -> bytes | None:
        """The state ``rank`` of ``trial`` published at ``step``, or ``None`` if there is
        none (not yet published, or expired or deleted since).

        Raises:
            StoreError: the key holds something other than a state this version wrote.
        """
        key = self.keys.peer_state(trial, rank, step)
        raw = self.store.call(lambda c: c.get(key))
        if raw is None:
            return None
        try:
            head = json.loads(raw)
            if head.get("format") != _FORMAT:
                raise ValueError(f"format {head.get('format')!r}")
            parts, size = int(head["parts"]), int(head["bytes"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise StoreError(
                f"{key} holds no peer state of format {_FORMAT} ({e}); was it written by "
                "another tautune version?"
            ) from None
        out = bytearray()
        for i in range(parts):
            chunk = self.store.call(partial(_get, f"{key}:part:{i}"))
            if chunk is None:
                return None  # expired or deleted while being read
            out += chunk
        if len(out) != size:
            raise StoreError(f"{key}: the state's parts hold {len(out)} bytes, expected {size}")
        return bytes(out)


def _set(key: str, value: memoryview, ms: int, c: Any) -> None:
    c.set(key, value, px=ms)


def _get(key: str, c: Any) -> bytes | None:
    raw = c.get(key)
    return None if raw is None else bytes(raw)
