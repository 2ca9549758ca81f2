"""The mixture over streams: an ``IterableDataset`` drawing an arm per item.

Usage::

    stream = MixtureStream({"web": web_shards, "code": code_shards}, batch_size=32,
                           weights_for=..., rank=rank, world_size=world_size)
    loader = stream.loader(num_workers=4)         # DataLoader(batch_size=32, MixtureCollate)
    for batch in loader: ...                      # a MixtureBatch, as from the batch sampler

Draws follow :class:`~workers.sampler.MixtureBatchSampler`'s scheme: batch ``b`` (step
``start_step + b // batches_per_step``) takes ``weights_for(step - weights_lag)`` and draws
its ``batch_size`` arms keyed by ``(seed, version, b)``, so every rank and every worker
count yields the same arm sequence, and the same as the batch sampler.

DataLoader workers. With ``num_workers=W``, worker ``w`` makes batches ``b`` with
``(b - start_batch) % W == w``; the DataLoader collects the workers' batches round robin,
so batches arrive in order, as with no workers, provided its ``batch_size`` is the
stream's (:meth:`MixtureStream.loader` sets it; :class:`~workers.mixture.MixtureCollate`
refuses a batch mixing two). Each arm's data is split into ``world_size * W`` disjoint
shards, shard ``rank * W + w`` for that worker: an arm given as an iterable is read with a
stride (``islice(iterable, shard, None, num_shards)``, so each process reads and drops the
others' items); an arm given as a factory ``(shard, num_shards) -> iterable`` opens only its
own shard, e.g. its own files. A shard that runs out is reopened (the next epoch of the arm),
so pass re-iterables or factories, not one-shot generators.

``weights_for`` is called in the process that iterates: in each DataLoader worker when
``num_workers > 0``, so it must work there (after fork), and with ``None`` answers each
worker keeps the weights of the last step it asked about. Each ``iter()`` starts over at
``start_batch``: to resume, build the stream with ``start_batch`` = the last consumed
batch's ``.batch`` + 1 (arm streams resume where their factories do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TypeAlias

from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from tuner.errors import ConfigError
from workers.mixture import (
    BatchLayout,
    MixtureCollate,
    MixtureSample,
    WeightsFn,
    WeightTracker,
    check_arm_names,
    check_int,
    resolve_initial_weights,
)

ArmSource: TypeAlias = Iterable[Any] | Callable[[int, int], Iterable[Any]]
"""An arm's data: a re-iterable (sharded by stride) or a factory ``(shard, num_shards)``."""


class MixtureStream(IterableDataset[MixtureSample], BatchLayout):
    """Tagged items from per-arm streams, an arm per item drawn from the weights in force.

    Args:
        streams: Arm name to :data:`ArmSource`; the same arms in the same order on every rank.
        batch_size: Items per batch on this rank (the DataLoader's ``batch_size``).
        weights_for, initial_weights, seed, rank, world_size, batches_per_step, start_step,
        weights_lag, num_batches: As for :class:`~workers.sampler.MixtureBatchSampler`;
            ``initial_weights`` is ``"uniform"`` or a mapping (stream sizes are unknown).
        start_batch: Counter of the first batch each ``iter()`` yields.
    """

    def __init__(
        self,
        streams: Mapping[str, ArmSource],
        batch_size: int,
        weights_for: WeightsFn | None = None,
        *,
        initial_weights: Mapping[str, float] | str = "uniform",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_step: int = 1,
        start_step: int = 0,
        start_batch: int = 0,
        weights_lag: int = 0,
        num_batches: int | None = None,
    ) -> None:
        if not isinstance(streams, Mapping):
            raise ConfigError(f"streams must be a mapping {{arm: iterable}}, got {streams!r}")
        self.arm_names = check_arm_names(streams)
        for name in self.arm_names:
            if not isinstance(streams[name], Iterable) and not callable(streams[name]):
                raise ConfigError(
                    f"arm {name!r} must be an iterable or a factory (shard, num_shards) -> "
                    f"iterable, got {streams[name]!r}"
                )
        self.streams = dict(streams)
        self.set_layout(
            batch_size, seed, rank, world_size, batches_per_step, start_step, num_batches
        )
        self.start_batch = check_int("start_batch", start_batch, minimum=0)
        self.weights_lag = check_int("weights_lag", weights_lag, minimum=0)
        self.weights_for = weights_for
        self.initial = resolve_initial_weights(initial_weights, self.arm_names, None)

    def __iter__(self) -> Iterator[MixtureSample]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        num_shards = self.world_size * workers
        shard = self.rank * workers + worker
        readers = [
            _ArmReader(name, self.streams[name], shard, num_shards) for name in self.arm_names
        ]
        mixture = WeightTracker(
            self.arm_names, self.weights_for, self.initial, lag=self.weights_lag
        )
        end = None if self.num_batches is None else self.start_batch + self.num_batches
        b = self.start_batch + worker
        while end is None or b < end:
            step, arm_ids = self.draw_batch(mixture, b)
            for arm in arm_ids:
                yield MixtureSample(readers[arm].next(), arm, mixture.version, step, b)
            b += workers

    def loader(self, **kwargs: Any) -> DataLoader[Any]:
        """``DataLoader(self, batch_size=self.batch_size, collate_fn=MixtureCollate(...))``
        yielding :class:`~workers.mixture.MixtureBatch`."""
        if kwargs.setdefault("batch_size", self.batch_size) != self.batch_size:
            raise ConfigError(
                f"the DataLoader's batch_size must be the stream's {self.batch_size}, "
                f"got {kwargs['batch_size']}"
            )
        collate = MixtureCollate(kwargs.pop("collate_fn", None) or default_collate)
        return DataLoader(self, collate_fn=collate, **kwargs)


class _ArmReader:
    """One process's endless read of its shard of one arm; opened at the first draw."""

    def __init__(self, name: str, source: ArmSource, shard: int, num_shards: int) -> None:
        self.name = name
        self.source = source
        self.shard = shard
        self.num_shards = num_shards
        self._it: Iterator[Any] | None = None
        self.epoch = -1

    def _open(self) -> Iterator[Any]:
        self.epoch += 1
        if isinstance(self.source, Iterable):
            it = iter(self.source)
            return islice(it, self.shard, None, self.num_shards) if self.num_shards > 1 else it
        return iter(self.source(self.shard, self.num_shards))

    def next(self) -> Any:
        if self._it is not None:
            try:
                return next(self._it)
            except StopIteration:
                pass
        self._it = self._open()
        try:
            return next(self._it)
        except StopIteration:
            raise ConfigError(
                f"arm {self.name!r}: shard {self.shard} of {self.num_shards} has no items "
                f"(epoch {self.epoch}); give every shard data, and pass a re-iterable or a "
                "factory (shard, num_shards) -> iterable rather than a one-shot generator"
            ) from None
