"""A shuffling sampler that ``explore`` can rewind with the model, for ``DataLoader`` loops.

``DataLoader(shuffle=True)`` and ``DistributedSampler`` draw an epoch's order when the
epoch's iterator is made; restoring the model to a snapshot leaves that iterator where it
was, so every candidate of an exploration stage trains on other batches (the head says so:
its advice in ``tautune status``). :class:`RestorableSampler` replaces either one::

    sampler = RestorableSampler(len(dataset), seed=0)     # + num_replicas=, rank= for DDP
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)   # num_workers=0
    sched = agent.lr_scheduler(opt, model=model, sampler=sampler)
    for epoch in itertools.count():
        for x, y in loader: ...

Its iterator reads the position from the sampler at every index, so a restore (inside
``scheduler.step()``, before the next batch is drawn) takes the live iterator back to the
snapshot's batch. That is exact with ``num_workers=0``; a DataLoader with workers has
already drawn ``prefetch_factor * num_workers`` batches ahead, and those first batches after
a restore differ: wrap it in :class:`~workers.restorable_loader.RestorableLoader`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from tuner.errors import ConfigError


class RestorableSampler(Sampler[int]):
    """Indices ``0 .. n-1``, shuffled anew each epoch (by ``seed`` and the epoch), epoch
    after epoch, with ``state_dict()`` (epoch and position) to rewind.

    Args:
        data: The dataset, or its length.
        shuffle: Shuffle each epoch (else in order).
        seed: Seed of the shuffles; the same on every rank.
        num_replicas, rank: Data-parallel ranks, as ``DistributedSampler``: rank ``r``
            takes every ``num_replicas``-th index of the epoch's order from ``r``, the order
            padded by wrapping around so every rank has the same count (or cut, with
            ``drop_last``). Default: one replica.
        drop_last: Cut the order to a multiple of ``num_replicas`` instead of padding.
    """

    def __init__(
        self,
        data: Sized | int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        n = data if isinstance(data, int) else len(data)
        if n < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"need a non-empty dataset and 0 <= rank < num_replicas, got {n=}, "
                f"{num_replicas=}, {rank=}"
            )
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        total = n - n % num_replicas if drop_last else -(-n // num_replicas) * num_replicas
        if total < num_replicas:
            raise ConfigError(f"{n} items cannot give each of {num_replicas} ranks one")
        self.per_rank = total // num_replicas
        self._total = total
        self.epoch = 0
        self.position = 0
        self._order: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        """One epoch's indices from the current position; the epoch and position are read
        at every index, so a restore takes a live iterator along."""
        while self.position < self.per_rank:
            order = self._indices(self.epoch)
            index = order[self.position]
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """``DistributedSampler``'s call before each epoch: starts ``epoch`` from its first
        index unless the sampler is in it already (having ended the one before, or been
        restored into it)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go to ``state``'s epoch and position, with its seed: a population's trial that
        loads trial 0's state goes on with trial 0's order, whatever its own seed was."""
        try:
            epoch, position, seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"RestorableSampler state is malformed: {e!r}") from None
        if not 0 <= position <= self.per_rank or epoch < 0:
            raise ConfigError(
                f"RestorableSampler state {state} does not fit this sampler ({self.per_rank} "
                "indices an epoch)"
            )
        if seed != self.seed:
            self.seed, self._order = seed, None
        self.epoch, self.position = epoch, position

    def _indices(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch``, computed once an epoch."""
        if self._order is None or self._order[0] != epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                order = torch.randperm(self.n, generator=gen).tolist()
            else:
                order = list(range(self.n))
            order = (order * (-(-self._total // self.n)))[: self._total]
            self._order = (epoch, order[self.rank :: self.num_replicas])
        return self._order[1]
