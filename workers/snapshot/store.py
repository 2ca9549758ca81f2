"""Named snapshots under a memory cap, and the restore every data-parallel rank makes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeAlias

import torch

from tuner.errors import ConfigError, TautuneError
from workers.snapshot.state import Snapshot, Stateful

SnapshotKey: TypeAlias = int | str
"""A snapshot's name in a :class:`SnapshotStore`: usually the optimizer step it was taken at."""


class SnapshotNotFoundError(TautuneError, KeyError):
    """A :class:`SnapshotStore` holds no snapshot under the key asked for."""


class SnapshotStore:
    """Named snapshots under a memory cap; the oldest put is evicted first.

    Keys are usually the optimizer step a snapshot was taken at, so that a decision's
    ``restore_from`` step finds it. Eviction is by insertion order (putting a key again makes
    it the newest); :meth:`get` does not refresh a snapshot.

    Args:
        max_bytes: Cap on the sum of :attr:`Snapshot.nbytes`; ``None`` for no cap.
        max_count: Cap on the number of snapshots; ``None`` for no cap.
    """

    def __init__(self, max_bytes: int | None = None, *, max_count: int | None = None) -> None:
        for name, value in (("max_bytes", max_bytes), ("max_count", max_count)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be an int >= 1 or None, got {value!r}")
        self.max_bytes = max_bytes
        self.max_count = max_count
        self._snaps: OrderedDict[SnapshotKey, Snapshot] = OrderedDict()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Sum of the kept snapshots' :attr:`Snapshot.nbytes`."""
        return self._nbytes

    def put(self, key: SnapshotKey, snapshot: Snapshot) -> list[SnapshotKey]:
        """Keep ``snapshot`` as ``key`` (replacing one already there); returns evicted keys.

        Raises:
            ConfigError: the snapshot alone is larger than ``max_bytes``.
        """
        size = snapshot.nbytes
        if self.max_bytes is not None and size > self.max_bytes:
            raise ConfigError(
                f"snapshot {key!r} holds {size} bytes, more than the store's "
                f"max_bytes={self.max_bytes}"
            )
        self.discard(key)
        evicted: list[SnapshotKey] = []
        while self._snaps and (
            (self.max_bytes is not None and self._nbytes + size > self.max_bytes)
            or (self.max_count is not None and len(self._snaps) >= self.max_count)
        ):
            old, snap = self._snaps.popitem(last=False)
            self._nbytes -= snap.nbytes
            evicted.append(old)
        self._snaps[key] = snapshot
        self._nbytes += size
        return evicted

    def get(self, key: SnapshotKey) -> Snapshot:
        """The snapshot kept as ``key``.

        Raises:
            SnapshotNotFoundError: none is kept (never put, or evicted).
        """
        try:
            return self._snaps[key]
        except KeyError:
            raise SnapshotNotFoundError(
                f"no snapshot {key!r} (never taken, or evicted under max_bytes="
                f"{self.max_bytes}, max_count={self.max_count}); kept: {list(self._snaps)}"
            ) from None

    def discard(self, key: SnapshotKey) -> None:
        """Drop the snapshot kept as ``key``, if any."""
        snap = self._snaps.pop(key, None)
        if snap is not None:
            self._nbytes -= snap.nbytes

    def clear(self) -> None:
        self._snaps.clear()
        self._nbytes = 0

    def keys(self) -> list[SnapshotKey]:
        """Kept keys, oldest first."""
        return list(self._snaps)

    def __contains__(self, key: object) -> bool:
        return key in self._snaps

    def __len__(self) -> int:
        return len(self._snaps)

    def __iter__(self) -> Iterator[SnapshotKey]:
        return iter(list(self._snaps))


def restore_all_ranks(
    snapshot: Snapshot,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Stateful | None = None,
    sampler: object | None = None,
) -> None:
    """:meth:`Snapshot.restore` on every data-parallel rank, fenced by barriers.

    Every rank must call it at the same step, with its own snapshot taken at the same step.
    When ``torch.distributed`` is initialized it checks that the ranks' ``snapshot.step``
    agree (when set), then barriers, restores, and barriers again; otherwise it just
    restores.

    Raises:
        ConfigError: the ranks' snapshots were taken at different steps (raised on every
            rank), or whatever :meth:`Snapshot.restore` raises.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        snapshot.restore(model, optimizer, scheduler, sampler)
        return
    if snapshot.step is not None:
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        steps = torch.tensor([snapshot.step, -snapshot.step], dtype=torch.int64, device=device)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
        high, low = int(steps[0]), -int(steps[1])
        if high != low:
            raise ConfigError(
                f"ranks restore snapshots of different steps ({low}..{high}, this rank "
                f"{snapshot.step}); every rank must restore the step the decision names"
            )
    dist.barrier()
    snapshot.restore(model, optimizer, scheduler, sampler)
    dist.barrier()
