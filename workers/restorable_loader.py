"""A ``DataLoader`` with worker processes whose batches ``explore`` can rewind exactly.

A :class:`~workers.restorable_sampler.RestorableSampler` is exact only with
``num_workers=0``: a DataLoader with workers draws ``prefetch_factor * num_workers``
batches ahead, so the sampler's position is ahead of the batch being trained, and the
batches already in flight when the model is restored still come out first.
:class:`RestorableLoader` wraps such a DataLoader: its state is the position of the batches
the loop has *taken* (not the sampler's), and a restore (inside ``scheduler.step()``) drops
the batches in flight and starts the DataLoader again from the restored position, so the
next batch the loop takes is the one it took after the snapshot::

    sampler = RestorableSampler(len(dataset), seed=0)     # + num_replicas=, rank= for DDP
    loader = RestorableLoader(DataLoader(dataset, batch_size=32, sampler=sampler,
                                         num_workers=4, persistent_workers=True))
    sched = agent.lr_scheduler(opt, model=model, sampler=loader)
    for epoch in itertools.count():
        for x, y in loader: ...

Starting again costs a new iterator: with ``persistent_workers=True`` the same workers,
told to drop what they had prepared; without, new worker processes (slower, a few per
exploration stage).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import BatchSampler, DataLoader

from tuner.errors import ConfigError
from workers.restorable_sampler import RestorableSampler


class RestorableLoader:
    """``loader``'s batches, with ``state_dict()`` that rewinds them; see the module.

    Args:
        loader: A DataLoader made with ``batch_size=`` and ``sampler=`` a
            :class:`~workers.restorable_sampler.RestorableSampler`.
    """

    def __init__(self, loader: DataLoader[Any]) -> None:
        batches = loader.batch_sampler
        if not (
            isinstance(batches, BatchSampler) and isinstance(batches.sampler, RestorableSampler)
        ):
            raise ConfigError(
                "RestorableLoader needs a DataLoader made with batch_size= and "
                "sampler=RestorableSampler(...); got sampler "
                f"{type(loader.sampler).__name__}, batch_sampler {type(batches).__name__}"
            )
        self.loader = loader
        self.sampler: RestorableSampler = batches.sampler
        self.batch_size = batches.batch_size
        self._taken = (self.sampler.epoch, self.sampler.position)
        self._restored = False
        self.restarts = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        """One epoch's batches from the position taken so far; a restore in between two
        batches starts the DataLoader again from the restored position."""
        while True:
            self._restored = False
            epoch, start = self.sampler.epoch, self.sampler.position
            self._taken = (epoch, start)
            for k, batch in enumerate(self.loader, 1):
                self._taken = (epoch, min(start + k * self.batch_size, self.sampler.per_rank))
                yield batch
                if self._restored:
                    self.restarts += 1
                    break  # what the workers prepared since belongs to the old timeline
            else:
                self._taken = (self.sampler.epoch, self.sampler.position)
                return

    def state_dict(self) -> dict[str, Any]:
        """The epoch and position after the last batch the loop took, and the seed."""
        epoch, position = self._taken
        return {"epoch": epoch, "position": position, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go back to ``state``: the next batch the loop takes is the one after it."""
        self.sampler.load_state_dict(state)
        self._taken = (self.sampler.epoch, self.sampler.position)
        self._restored = True
