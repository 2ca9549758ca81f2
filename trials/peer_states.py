"""Training states one trial of a population job publishes for the others.

A population ``explore`` stage trains one candidate per trial, then every trial goes on from
the winner's state. The winner's ranks publish that state here, one value per rank, and
the other trials' ranks load it (:class:`workers.peers.StorePeers`). The bytes are a
serialized :class:`~workers.snapshot.Snapshot`; a value expires after ``ttl_s`` so a
finished stage leaves nothing behind.

Mixed into :class:`trials.store.JobStore`, which provides ``store`` and ``keys``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError

if TYPE_CHECKING:
    from trials.keys import JobKeys
    from trials.store import Store

MAX_STATE_BYTES = 500 * 2**20
"""Largest state published through Redis (its strings hold 512 MiB at most)."""

PEER_TTL_S = 3600.0
"""How long a published state is kept."""


class PeerStates:
    """Publish and fetch training states between the trials of one job."""

    store: Store
    keys: JobKeys

    def publish_state(
        self, rank: int, step: int, blob: bytes, *, ttl_s: float = PEER_TTL_S
    ) -> None:
        """Store ``blob``, this trial's ``rank``'s state at ``step``, for ``ttl_s`` seconds.

        Raises:
            ConfigError: the view is not a trial's, or ``blob`` is larger than Redis holds.
        """
        trial = self.keys.trial
        if trial is None:
            raise ConfigError("only the trials of a population job publish states to each other")
        if len(blob) > MAX_STATE_BYTES:
            raise ConfigError(
                f"trial {trial} rank {rank}: the training state at step {step} is "
                f"{len(blob) / 2**20:.0f} MiB; peers exchange states through Redis, which "
                f"holds {MAX_STATE_BYTES // 2**20} MiB per value. Run the population with "
                "lr.method other than explore, or a smaller model per rank"
            )
        key = self.keys.peer_state(trial, rank, step)
        ms = max(1, int(ttl_s * 1000))

        def put(c: Any) -> None:
            c.set(key, blob, px=ms)

        self.store.call(put)

    def peer_state(self, trial: int, rank: int, step: int) -> bytes | None:
        """The state ``rank`` of ``trial`` published at ``step``, or ``None`` if none is."""
        key = self.keys.peer_state(trial, rank, step)
        raw = self.store.call(lambda c: c.get(key))
        return bytes(raw) if raw is not None else None
