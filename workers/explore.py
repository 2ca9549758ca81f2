"""Carry out a decision's snapshot and restore directives on this rank.

An LR exploration stage tries several candidates from the same point of training. The head
says so in its decisions (:attr:`~tuner.records.Decision.snapshot` and
:attr:`~tuner.records.Decision.restore_from`), keyed by optimizer step, so every
data-parallel rank moves its state at the same step without talking to the others.

Steps are steps of work: they keep counting up through a restore. The report of step 700
after a restore to the snapshot of step 600 is still "step 700", so the store's rule that
steps never go backwards holds, and exploration shows up in the step count exactly as it
costs. The model's own progress is the controller's business.

:class:`StateMover` is what :meth:`workers.Agent.lr_scheduler` builds when it is given the
model: :class:`~workers.scheduler.TautuneLR` calls :meth:`StateMover.apply` with the
decision of each step, from inside ``scheduler.step()``, which runs after
``optimizer.step()`` of the step before: the state saved is the state at the very start of
the step. The scheduler itself is not part of a snapshot: its step count is the work step
and must not go back.

In a population job the trials explore one candidate each and then all go on from the
winner's state: a decision may ask a rank to load the state the same rank of another trial
published at the same step (``restore_peer``, first) or to publish its own (``publish``,
last), through a :class:`PeerChannel`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from tuner.errors import ConfigError
from tuner.records import Decision
from workers.snapshot import Snapshot, SnapshotStore, restore_all_ranks, wire

log = logging.getLogger(__name__)


class PeerChannel(Protocol):
    """How a rank of one trial of a population job exchanges states with the same rank of
    the other trials (:class:`workers.peers.StorePeers`)."""

    def publish(self, step: int, blob: bytes) -> None:
        """Make this rank's state at ``step`` available to the other trials."""
        ...

    def fetch(self, trial: int, step: int) -> bytes | None:
        """The state ``trial`` published at ``step``, waiting for it; ``None`` when it is
        gone for good (expired, or deleted as newer ones came); raises
        :class:`~tuner.errors.ConfigError` when it does not come in time."""
        ...


class StateMover:
    """Snapshots and restores one rank's training state when decisions say so.

    Args:
        model: The module being trained.
        optimizer: Its optimizer.
        sampler: A sampler with ``state_dict()`` to rewind with the model, if any.
        extra: Further state to save and restore with the rest, by name: objects with
            ``state_dict()``/``load_state_dict()`` (a ``GradScaler``) or ``torch.Generator``
            objects (the one a DataLoader or a batch sampler draws from).
        device: Where snapshot copies live (``None``: beside the tensors; ``"cpu"``: host).
            A snapshot that does not fit beside the tensors on an accelerator goes to host
            memory, and so do the later ones, with a warning.
        max_count: Snapshots kept at most; the oldest is dropped first.
        peers: In a trial of a population job, the channel to the other trials, for
            decisions that publish a state or load a peer's (``restore_peer``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sampler: object | None = None,
        extra: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        max_count: int = 16,
        peers: PeerChannel | None = None,
    ) -> None:
        if (why := _sharded(model)) is not None:
            raise ConfigError(
                f"lr_scheduler(model=...): the model is sharded ({why}); tautune's snapshots "
                "copy each rank's own state dict and cannot restore a sharded one. Leave "
                "model= out (the LR method is then stagewise, which never rewinds the model)"
            )
        self.model = model
        self.peers = peers
        self.optimizer = optimizer
        self.sampler = sampler
        self.extra = dict(extra or {})
        for name, obj in self.extra.items():
            if isinstance(obj, torch.Generator):
                continue
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ConfigError(
                    f"extra state {name!r} ({type(obj).__name__}) needs state_dict() and "
                    "load_state_dict(), or must be a torch.Generator"
                )
        self.device = device
        self.store = SnapshotStore(max_count=max_count)
        self._done: set[tuple[int, int]] = set()
        self.snapshots_taken = 0
        self.restores = 0
        self.peer_loads = 0
        self.published = 0
        self.missed: int | None = None  # the last step a restore found no snapshot

    def apply(self, step: int, decision: Decision | None) -> bool:
        """Carry out ``decision``'s directives if it starts at ``step``; True if restored.

        Idempotent: asking again for the same step and decision version does nothing, so a
        scheduler that recomputes an LR cannot restore twice.

        A restore of a snapshot this rank does not hold (it was taken before the process
        restarted and resumed from a checkpoint, or it was evicted) takes that snapshot from
        the current state instead, with a warning: the rank trains on from where it is, and
        the stage's later restores (and the controller's commit) come back to that point
        rather than to whatever the decisions it replays trained since, a candidate that
        diverged included. :attr:`missed` says from which step; the agent reports it
        (:data:`~tuner.records.RESTORE_MISSED_METRIC`) so the controller stops comparing
        candidates in that stage. Every rank of a data-parallel job restarts together, so
        they all do it alike.

        Raises:
            ConfigError: the decision exchanges states with peers this rank has no channel
                to, or a peer's state did not come.
        """
        if decision is None or decision.from_step != step or not decision.moves_state:
            return False
        key = (step, decision.version)
        if key in self._done:
            return False
        self._done.add(key)
        while len(self._done) > 64:
            self._done.discard(min(self._done))
        restored = False
        if decision.restore_peer is not None:
            peer = decision.restore_peer
            blob = self._channel(decision).fetch(peer, step)
            if blob is None:
                log.warning(
                    "tautune: decision v%d (stage %d) loads the state trial %d published at "
                    "step %d, which is gone (expired, or replaced by newer ones: this rank "
                    "restarted and replays an old decision); training on from this rank's "
                    "own state, and telling the controller",
                    decision.version,
                    decision.stage,
                    peer,
                    step,
                )
                self.missed = step
            else:
                where = f"the state trial {peer} published at step {step}"
                self._restore(wire.from_bytes(blob, where))
                self.peer_loads += 1
                restored = True
        if decision.snapshot:
            self.store.put(step, self._take(step))
            self.snapshots_taken += 1
        source = decision.restore_from
        if source is not None and source not in self.store:
            log.warning(
                "tautune: decision v%d (stage %d) restores the snapshot of step %d at step %d, "
                "but this rank holds snapshots of steps %s only (it restarted mid-stage, or "
                "the snapshot was evicted); taking it from the current state instead, and "
                "telling the controller",
                decision.version,
                decision.stage,
                source,
                step,
                self.store.keys(),
            )
            self.store.put(source, self._take(step))
            self.missed = step
        elif source is not None:
            self._restore(self.store.get(source))
            restored = True
        if source is not None:
            for old in self.store:
                if isinstance(old, int) and old < source:
                    self.store.discard(old)
        if decision.publish:
            self._channel(decision).publish(step, wire.to_bytes(self._take(step)))
            self.published += 1
        return restored

    def _channel(self, decision: Decision) -> PeerChannel:
        if self.peers is None:
            raise ConfigError(
                f"decision v{decision.version} (stage {decision.stage}) exchanges training "
                "states between the trials of a population job, and this rank is not a trial "
                "of one (attach with trial=, or $TAUTUNE_TRIAL)"
            )
        return self.peers

    def _restore(self, snap: Snapshot) -> None:
        restore_all_ranks(snap, self.model, self.optimizer, None, self.sampler)
        for name, obj in self.extra.items():
            saved = (snap.extra or {}).get(name)
            if saved is None:
                continue
            if isinstance(obj, torch.Generator):
                obj.set_state(saved)
            else:
                obj.load_state_dict(saved)
        self.restores += 1

    def _take(self, step: int) -> Snapshot:
        extra = {
            name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
            for name, obj in self.extra.items()
        } or None

        def take(device: torch.device | str | None) -> Snapshot:
            return Snapshot.take(
                self.model,
                self.optimizer,
                None,
                self.sampler,
                extra=extra,
                step=step,
                device=device,
            )

        try:
            return take(self.device)
        except torch.OutOfMemoryError:
            if self.device is not None and torch.device(self.device).type == "cpu":
                raise
            log.warning(
                "tautune: a snapshot of the training state at step %d does not fit in the "
                "accelerator's memory; keeping it and every later one in host memory "
                "(agent.lr_scheduler(..., snapshot_device='cpu') says so from the start)",
                step,
            )
            self.device = "cpu"  # the partial copies are freed with the exception
            return take("cpu")


def _sharded(model: torch.nn.Module) -> str | None:
    """What makes ``model`` sharded across ranks (FSDP, or DTensor parameters of tensor
    parallelism), or ``None``."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed: nothing can be sharded
        return None
    for module in model.modules():
        if isinstance(module, FullyShardedDataParallel | FSDPModule):
            return f"{type(module).__name__} is FSDP"
    for name, param in model.named_parameters():
        if isinstance(param, DTensor):
            return f"parameter {name!r} is a DTensor"
    return None
