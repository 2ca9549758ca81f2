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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tuner.errors import ConfigError
from tuner.records import Decision
from workers.snapshot import Snapshot, SnapshotStore, restore_all_ranks


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
        max_count: Snapshots kept at most; the oldest is dropped first.
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
    ) -> None:
        self.model = model
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

    def apply(self, step: int, decision: Decision | None) -> bool:
        """Carry out ``decision``'s directives if it starts at ``step``; True if restored.

        Idempotent: asking again for the same step and decision version does nothing, so a
        scheduler that recomputes an LR cannot restore twice.

        Raises:
            ConfigError: the decision restores a snapshot this rank does not hold (taken
                before the process restarted, or evicted).
        """
        if decision is None or decision.from_step != step or not decision.moves_state:
            return False
        key = (step, decision.version)
        if key in self._done:
            return False
        self._done.add(key)
        while len(self._done) > 64:
            self._done.discard(min(self._done))
        if decision.snapshot:
            self.store.put(step, self._take(step))
            self.snapshots_taken += 1
        source = decision.restore_from
        if source is None:
            return False
        if source not in self.store:
            raise ConfigError(
                f"decision v{decision.version} (stage {decision.stage}) restores the snapshot "
                f"of step {source} at step {step}, but this rank holds snapshots of steps "
                f"{self.store.keys()} only; a rank restarted mid-stage cannot rejoin an "
                "exploration stage"
            )
        snap = self.store.get(source)
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
        for old in self.store:
            if isinstance(old, int) and old < source:
                self.store.discard(old)
        return True

    def _take(self, step: int) -> Snapshot:
        extra = {
            name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
            for name, obj in self.extra.items()
        } or None
        return Snapshot.take(
            self.model,
            self.optimizer,
            None,
            self.sampler,
            extra=extra,
            step=step,
            device=self.device,
        )
