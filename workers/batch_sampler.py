"""Map-style mixtures: :class:`MixtureDataset` and :class:`MixtureBatchSampler`.

The sampler runs in the DataLoader's main process and yields lists of
:class:`~workers.mixture.MixtureIndex` (idx, arm, version, step, batch); the dataset, in
the workers, returns each item with that tag. :mod:`workers.sampler` explains the scheme.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from tuner.errors import ConfigError
from workers.arm_loss import arm_metrics, split_loss_by_arm
from workers.mixture import (
    BatchLayout,
    MixtureBatch,
    MixtureCollate,
    MixtureIndex,
    MixtureSample,
    WeightsFn,
    WeightTracker,
    check_arm_names,
    check_int,
    normalize_weights,
    permutation,
    resolve_initial_weights,
)

STATE_FORMAT = 1

ArmData: TypeAlias = Dataset[Any] | Sequence[Any]
"""A map-style dataset: items by ``int`` index, and ``len()``."""


class MixtureDataset(Dataset[MixtureSample]):
    """Per-arm datasets (or index ranges of one dataset) behind one index space.

    Indexed by the :class:`MixtureIndex` a :class:`MixtureBatchSampler` yields; returns the
    item with its tag as a :class:`MixtureSample`. Build it from per-arm datasets (their
    items get global indices in order, as in ``ConcatDataset``) or with :meth:`from_ranges`.

    Attributes:
        arms: Arm name to the indices of its items in this index space.
    """

    def __init__(self, datasets: Mapping[str, ArmData]) -> None:
        if not isinstance(datasets, Mapping):
            raise ConfigError(
                "MixtureDataset takes {arm: dataset}; for index ranges of one dataset use "
                f"MixtureDataset.from_ranges, got {type(datasets).__name__}"
            )
        names = check_arm_names(datasets)
        self._sources: list[ArmData] = [datasets[n] for n in names]
        self._offsets: list[int] = []
        self.arms: dict[str, Sequence[int]] = {}
        offset = 0
        for name, ds in zip(names, self._sources, strict=True):
            size = _length(ds, f"the dataset of arm {name!r}")
            self._offsets.append(offset)
            self.arms[name] = range(offset, offset + size)
            offset += size

    @classmethod
    def from_ranges(cls, dataset: ArmData, arms: Mapping[str, Sequence[int]]) -> MixtureDataset:
        """Arms as index collections (``range``, lists) into the one ``dataset``."""
        if not isinstance(arms, Mapping):
            raise ConfigError(f"arms must be a mapping {{arm: indices}}, got {arms!r}")
        names = check_arm_names(arms)
        size = len(dataset) if hasattr(dataset, "__len__") else None
        for name in names:
            idx = arms[name]
            if not isinstance(idx, Sequence) and not isinstance(idx, np.ndarray | torch.Tensor):
                raise ConfigError(f"arm {name!r}: indices must be a sequence, got {idx!r}")
            if len(idx) and size is not None:
                lo, hi = int(min(idx)), int(max(idx))
                if lo < 0 or hi >= size:
                    raise ConfigError(
                        f"arm {name!r}: indices must lie in [0, {size}), got {lo}..{hi}"
                    )
        self = cls.__new__(cls)
        self._sources = [dataset] * len(names)
        self._offsets = [0] * len(names)
        self.arms = {name: arms[name] for name in names}
        return self

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(self.arms)

    def __len__(self) -> int:
        return sum(len(idx) for idx in self.arms.values())

    def __getitem__(self, key: MixtureIndex) -> MixtureSample:
        if not isinstance(key, tuple) or len(key) != 5:
            raise TypeError(
                f"MixtureDataset is indexed by the MixtureIndex a MixtureBatchSampler yields, "
                f"got {key!r}; pass DataLoader(batch_sampler=sampler) or use sampler.loader()"
            )
        index, arm, version, step, batch = key
        item = self._sources[arm][index - self._offsets[arm]]
        return MixtureSample(item, arm, version, step, batch)


class MixtureBatchSampler(Sampler[list[MixtureIndex]], BatchLayout):
    """Batches of :class:`MixtureIndex`, an arm per slot drawn from the weights in force.

    Args:
        arms: A :class:`MixtureDataset` (kept as ``.dataset``), or arm name to the indices
            of its items. Every rank must pass the same arms in the same order.
        batch_size: Slots per batch on this rank.
        weights_for: Weights per step (:data:`WeightsFn`); ``None`` keeps the initial ones.
        initial_weights: ``"uniform"`` (default), ``"size"`` or a mapping; version 0.
        seed: Shared by all ranks; with the weights it fixes every draw.
        rank: This rank, in ``[0, world_size)``.
        world_size: Data-parallel ranks; every arm needs at least this many items.
        batches_per_step: Batches per optimizer step (gradient accumulation).
        start_step: Optimizer step of batch 0.
        weights_lag: Steps the weights trail the batch: batch of step ``s`` takes
            ``weights_for(s - weights_lag)``. With a DataLoader that prefetches and an agent
            that waits at sync boundaries, ``ceil(num_workers * prefetch_factor /
            batches_per_step)`` keeps the sampler from asking for steps not yet trained.
        num_batches: Batches per ``iter()`` (one DataLoader epoch); ``None`` is endless.
        shuffle: Read each shard in a shuffled order (else in index order).
        history: Batches whose state :meth:`state_dict` can return (``after_batch``); keep it
            above what the DataLoader prefetches.

    One iterator at a time: each ``iter()`` continues where the previous one stopped, and
    batches drawn but never consumed (prefetched when a loop breaks) are skipped.
    """

    def __init__(
        self,
        arms: MixtureDataset | Mapping[str, Sequence[int]],
        batch_size: int,
        weights_for: WeightsFn | None = None,
        *,
        initial_weights: Mapping[str, float] | str = "uniform",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_step: int = 1,
        start_step: int = 0,
        weights_lag: int = 0,
        num_batches: int | None = None,
        shuffle: bool = True,
        history: int = 64,
    ) -> None:
        super().__init__()
        self.dataset = arms if isinstance(arms, MixtureDataset) else None
        index_sets = arms.arms if isinstance(arms, MixtureDataset) else arms
        if not isinstance(index_sets, Mapping):
            raise ConfigError(f"arms must be a MixtureDataset or {{arm: indices}}, got {arms!r}")
        self.arm_names = check_arm_names(index_sets)
        self.set_layout(
            batch_size, seed, rank, world_size, batches_per_step, start_step, num_batches
        )
        self.shuffle = shuffle
        sizes = [len(index_sets[name]) for name in self.arm_names]
        for name, size in zip(self.arm_names, sizes, strict=True):
            if size < self.world_size:
                raise ConfigError(
                    f"arm {name!r} has {size} items, fewer than world_size={self.world_size}: "
                    "every rank needs its own share of every arm"
                )
        self._shards = [index_sets[name][self.rank :: self.world_size] for name in self.arm_names]
        self._mixture = WeightTracker(
            self.arm_names,
            weights_for,
            resolve_initial_weights(initial_weights, self.arm_names, sizes),
            lag=check_int("weights_lag", weights_lag, minimum=0),
        )
        self._batch = 0
        self._drawn = [0] * len(self.arm_names)
        self._perms: list[npt.NDArray[np.int64] | None] = [None] * len(self.arm_names)
        self._perm_epoch = [-1] * len(self.arm_names)
        self._history: deque[tuple[int, int, tuple[float, ...], tuple[int, ...]]] = deque(
            maxlen=check_int("history", history, minimum=1)
        )

    # -- drawing ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Mixture version of the last batch drawn (of the initial weights before any)."""
        return self._mixture.version

    @property
    def weights(self) -> dict[str, float]:
        """The weights in force (sum 1), as of the last batch drawn."""
        return dict(zip(self.arm_names, self._mixture.weights, strict=True))

    @property
    def next_batch(self) -> int:
        """The counter of the next batch to draw."""
        return self._batch

    def __iter__(self) -> Iterator[list[MixtureIndex]]:
        drawn = 0
        while self.num_batches is None or drawn < self.num_batches:
            yield self._draw_batch()
            drawn += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless MixtureBatchSampler has no len(); set num_batches")
        return self.num_batches

    def _draw_batch(self) -> list[MixtureIndex]:
        b = self._batch
        step, arm_ids = self.draw_batch(self._mixture, b)
        version = self._mixture.version
        out = [MixtureIndex(self._next_index(a), a, version, step, b) for a in arm_ids]
        self._batch = b + 1
        self._history.append((b, version, self._mixture.weights, tuple(self._drawn)))
        return out

    def _next_index(self, arm: int) -> int:
        shard = self._shards[arm]
        epoch, pos = divmod(self._drawn[arm], len(shard))
        self._drawn[arm] += 1
        if not self.shuffle:
            return int(shard[pos])
        perm = self._perms[arm]
        if perm is None or self._perm_epoch[arm] != epoch:
            perm = permutation(len(shard), seed=self.seed, arm=arm, epoch=epoch, rank=self.rank)
            self._perms[arm], self._perm_epoch[arm] = perm, epoch
        return int(shard[int(perm[pos])])

    # -- state --------------------------------------------------------------------------

    def state_dict(self, after_batch: int | None = None) -> dict[str, Any]:
        """JSON data from which :meth:`load_state_dict` resumes the same sequence.

        Args:
            after_batch: Resume after this batch (a consumed batch's ``.batch``) instead of
                after the last one drawn, which a prefetching DataLoader has run past. It
                must be one of the last ``history`` batches drawn.

        The state is the same on every rank (positions are counts of items drawn per arm,
        which all ranks share), so one rank's checkpoint restores all of them.
        """
        if after_batch is None:
            batch, version = self._batch, self._mixture.version
            weights, drawn = self._mixture.weights, tuple(self._drawn)
        else:
            found = [h for h in self._history if h[0] == after_batch]
            if not found:
                kept = f"{self._history[0][0]}..{self._history[-1][0]}" if self._history else "none"
                raise ConfigError(
                    f"batch {after_batch} is not among the last batches drawn ({kept}); "
                    "raise history above the DataLoader's prefetch"
                )
            b, version, weights, drawn = found[0]
            batch = b + 1
        return {
            "format": STATE_FORMAT,
            "arms": list(self.arm_names),
            "seed": self.seed,
            "start_step": self.start_step,
            "batch": batch,
            "version": version,
            "weights": dict(zip(self.arm_names, weights, strict=True)),
            "drawn": dict(zip(self.arm_names, drawn, strict=True)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` output (of any rank; ``world_size`` may differ).

        Raises:
            ConfigError: another format, other arms or arm order, another seed, or bad values.
        """
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(
                f"sampler state format {state.get('format')!r}, expected {STATE_FORMAT}"
            )
        if list(state.get("arms", ())) != list(self.arm_names):
            raise ConfigError(
                f"sampler state is for arms {state.get('arms')}, this sampler has "
                f"{list(self.arm_names)} (same names in the same order)"
            )
        if state.get("seed") != self.seed:
            raise ConfigError(
                f"sampler state has seed={state.get('seed')!r}, this sampler seed={self.seed}; "
                "the sequence resumes only under the same seed"
            )
        drawn = state.get("drawn")
        if not isinstance(drawn, Mapping) or set(drawn) != set(self.arm_names):
            raise ConfigError(f"sampler state 'drawn' must count every arm, got {drawn!r}")
        counts = [check_int(f"drawn[{n!r}]", drawn[n], minimum=0) for n in self.arm_names]
        version = check_int("version", state.get("version"), minimum=0)
        weights = normalize_weights(state.get("weights", {}), self.arm_names, what="state weights")
        self.start_step = check_int("start_step", state.get("start_step"), minimum=0)
        self._batch = check_int("batch", state.get("batch"), minimum=0)
        self._mixture.set(version, weights)
        self._drawn = counts
        self._perms = [None] * len(self.arm_names)
        self._perm_epoch = [-1] * len(self.arm_names)
        self._history.clear()

    # -- conveniences -------------------------------------------------------------------

    def loader(self, **kwargs: Any) -> DataLoader[Any]:
        """``DataLoader(self.dataset, batch_sampler=self, collate_fn=MixtureCollate(...))``
        yielding :class:`MixtureBatch`; ``collate_fn`` (if given) collates the items."""
        if self.dataset is None:
            raise ConfigError("sampler.loader() needs a sampler built over a MixtureDataset")
        collate = MixtureCollate(kwargs.pop("collate_fn", None) or default_collate)
        return DataLoader(self.dataset, batch_sampler=self, collate_fn=collate, **kwargs)

    def metrics(self, batch: MixtureBatch, per_sample_loss: torch.Tensor) -> dict[str, float]:
        """``arm_loss/<arm>``, ``arm_count/<arm>`` and ``mixture_version`` of ``batch``, to
        splat into ``agent.report``; ``per_sample_loss`` has shape ``batch``."""
        loss, count = split_loss_by_arm(per_sample_loss, batch.arms, self.arm_names)
        return arm_metrics(loss, count, batch.version)


def _length(ds: object, what: str) -> int:
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{what} has no len(); streams go in a MixtureStream") from None
