"""In-memory snapshots of a training process, for LR exploration.

An LR exploration stage tries several candidate LRs from the same point of training: take a
:class:`Snapshot` at the stage's first step, train a candidate, :meth:`Snapshot.restore`,
train the next one. A snapshot holds deep copies of

- ``model.state_dict()`` (parameters and buffers),
- ``optimizer.state_dict()`` (per-parameter state and the param groups, LRs included),
- ``scheduler.state_dict()`` (a torch ``LRScheduler``, such as
  :class:`~workers.scheduler.TautuneLR`, whose state leaves the agent out),
- ``sampler.state_dict()`` when the sampler has one (such as
  :class:`~workers.batch_sampler.MixtureBatchSampler`),
- the RNG states: torch CPU, torch CUDA (every device, when CUDA is available), numpy's
  global generator and Python's :mod:`random`,

so that training after :meth:`~Snapshot.restore` repeats bit for bit what it did after
:meth:`~Snapshot.take` (same device, same deterministic kernels). Restoring works in place:
parameters are copied into the tensors the model already owns and the optimizer keeps the
parameter objects the training loop holds, so nothing has to be rebuilt. The optimizer's
state is copied into the tensors it already holds too, when it has state of the same shapes
(``load_state_dict`` otherwise): a restore then needs no memory beyond the snapshot's.

Where the copies live. ``device=None`` (the default) keeps every tensor on the device it
came from: on a GPU model the snapshot costs GPU memory (about the model plus the optimizer
state again, see :attr:`Snapshot.nbytes`) and both take and restore are device-local
copies. ``device="cpu"`` keeps them in host memory instead, at the cost of a transfer each
way; the restore is still bit-exact. The agent's :class:`~workers.explore.StateMover` moves
to host memory by itself, with a warning, when a snapshot does not fit on the GPU. On an
H200, a 152M-parameter model with AdamW (1.8 GB of state) took 10.6-12.5 ms to snapshot on
the GPU and 8.4-16.8 ms to restore, 147-160 and 304-346 ms in host memory (two runs,
``docs/benchmarks-accel.md``; those restores ran ``load_state_dict``, before the in-place
copy above).

Not captured: ``torch.Generator`` objects you create yourself (a DataLoader's
``generator=``; put their ``get_state()`` in ``extra``), a ``GradScaler`` (put its
``state_dict()`` in ``extra``), DataLoader iterators (start a new ``iter()`` after a
restore), and MPS/XPU RNGs. With a prefetching DataLoader the sampler has run ahead of the
batch being trained; pass ``sampler_state=sampler.state_dict(after_batch=batch.batch)``.

Data parallelism. Every rank takes and restores its own snapshot at the same optimizer step:
decisions are keyed by step (a decision's ``restore_from``), so all ranks agree on which
step to snapshot and when to restore without talking to each other. Use
:func:`restore_all_ranks`, which barriers before and after the restore so no rank runs a
collective of the next candidate while another is still restoring. Sharded models (FSDP,
ZeRO) are not supported: their state dicts are collectives themselves, and
``agent.lr_scheduler(model=...)`` refuses an FSDP model or DTensor parameters by name.
"""

from __future__ import annotations

from workers.snapshot.state import RNGState, Snapshot, Stateful
from workers.snapshot.store import (
    SnapshotKey,
    SnapshotNotFoundError,
    SnapshotStore,
    restore_all_ranks,
)

__all__ = [
    "RNGState",
    "Snapshot",
    "SnapshotKey",
    "SnapshotNotFoundError",
    "SnapshotStore",
    "Stateful",
    "restore_all_ranks",
]
