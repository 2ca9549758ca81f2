"""The worker-side mixture sampler: an arm per slot, drawn lazily from the weights in force.

Usage, over per-arm datasets (``agent.mixture_sampler`` wraps :func:`mixture_sampler`)::

    sampler = mixture_sampler({"web": web, "code": code}, batch_size=32,
                              weights_for=decision_weights(agent.decision),
                              rank=rank, world_size=world_size)
    loader = sampler.loader(num_workers=4)        # DataLoader(batch_sampler=sampler, ...)
    for batch in loader:                          # a MixtureBatch
        per_sample = loss_fn(model(batch.data), reduction="none")   # `batch` floats
        per_sample.mean().backward(); optimizer.step()
        agent.report(batch.step, loss=per_sample.mean().item(),
                     **sampler.metrics(batch, per_sample))
        ckpt_state = sampler.state_dict(after_batch=batch.batch)    # for checkpoints

How it draws. For batch ``b`` (optimizer step ``start_step + b // batches_per_step``) the
sampler asks ``weights_for(step - weights_lag)`` for the weights, draws ``batch_size`` arms
i.i.d. from them, keyed by ``(seed, version, b)`` only, then takes for each slot the next
item of that arm's shard. So a new weight vector applies from the next batch drawn (torch's
``WeightedRandomSampler`` draws a whole epoch ahead and would not see it).

Ranks. Every rank draws the same arm sequence; rank ``r`` of ``world_size`` reads only
arm positions ``i`` with ``i % world_size == r``, so ranks read disjoint items, and ``world_size``
times the local batch is the global one. Each arm is an endless stream: a rank's shard is
read in a shuffled order keyed by ``(seed, arm, epoch of that arm, rank)``, reshuffled when
used up, independently of the other arms.

Workers and prefetch. The batch sampler runs in the main process even with
``num_workers > 0`` (DataLoader sends index lists to the workers), so draws stay lazy; but
the DataLoader draws ``prefetch_factor * num_workers`` batches ahead of the one being
trained on. Each batch therefore carries its tag, :class:`MixtureIndex` per slot, which
:class:`MixtureDataset` passes on with the item and :class:`~workers.mixture.MixtureCollate`
turns into :class:`MixtureBatch` ``.arms/.version/.step/.batch``; report per-arm losses
with the batch's own ``version`` (``mixture_version``), and a batch prefetched under old
weights is attributed to them.

Initial weights (before ``weights_for`` answers anything, version 0) default to uniform,
which is what a bandit starts from and what a stream can do too; ``initial_weights="size"``
gives the natural mixture, in proportion to the arm sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuner.errors import ConfigError
from workers.arm_loss import ARM_COUNT, ARM_LOSS, MIXTURE_VERSION, arm_metrics, split_loss_by_arm
from workers.batch_sampler import ArmData, MixtureBatchSampler, MixtureDataset
from workers.mixture import (
    INITIAL_VERSION,
    MixtureBatch,
    MixtureCollate,
    MixtureIndex,
    MixtureSample,
    WeightsFn,
    decision_weights,
    mixture_collate,
)
from workers.mixture_stream import MixtureStream

__all__ = [
    "ARM_COUNT",
    "ARM_LOSS",
    "INITIAL_VERSION",
    "MIXTURE_VERSION",
    "ArmData",
    "MixtureBatch",
    "MixtureBatchSampler",
    "MixtureCollate",
    "MixtureDataset",
    "MixtureIndex",
    "MixtureSample",
    "MixtureStream",
    "WeightsFn",
    "arm_metrics",
    "decision_weights",
    "mixture_collate",
    "mixture_sampler",
    "split_loss_by_arm",
]


def mixture_sampler(
    data: Mapping[str, ArmData] | ArmData,
    batch_size: int,
    weights_for: WeightsFn | None = None,
    *,
    arms: Mapping[str, Sequence[int]] | None = None,
    **options: Any,
) -> MixtureBatchSampler:
    """A :class:`MixtureBatchSampler` over per-arm datasets ``{arm: dataset}``, or over
    index ranges ``arms={arm: indices}`` of the one dataset ``data``; ``options`` are the
    sampler's keyword arguments. Its ``.dataset`` and ``.loader()`` go with it."""
    if arms is None:
        if not isinstance(data, Mapping):
            raise ConfigError(
                "pass per-arm datasets as {arm: dataset}, or one dataset with arms={arm: indices}"
            )
        return MixtureBatchSampler(MixtureDataset(data), batch_size, weights_for, **options)
    if isinstance(data, Mapping):
        raise ConfigError("arms={arm: indices} index one dataset; got a mapping of datasets")
    return MixtureBatchSampler(
        MixtureDataset.from_ranges(data, arms), batch_size, weights_for, **options
    )
