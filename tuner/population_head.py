"""The head of a population job: one controller deciding for P trials.

Each trial has its own reports and decisions (``tt:{job}:v1:trial:<i>:...``); the
controller's state is the job's. Every commit writes one trial's decision together with
the shared state and the acknowledgement of every report, of every trial, that the state
includes, in one Lua script (all of a job's keys share one hash tag), so the exactly-once
argument of :class:`tuner.head.HeadLoop` holds for the whole population.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from trials.store import JobStore
from tuner.controllers.base import Plan, PopulationController
from tuner.errors import DecisionConflictError
from tuner.head import CONSUMER, reported_through
from tuner.loop import Loop
from tuner.records import Decision, DecisionKind

log = logging.getLogger(__name__)


class PopulationLoop(Loop):
    """Drives a :class:`PopulationController` over the trials of ``store.job``."""

    def __init__(
        self,
        store: JobStore,
        controller: PopulationController,
        trials: int,
        *,
        checkpoint_every_s: float = 2.0,
        lease_ttl_s: float = 5.0,
        poll_s: float = 0.05,
    ) -> None:
        super().__init__(store, lease_ttl_s=lease_ttl_s)
        self.controller = controller
        self.trials = [store.for_trial(i) for i in range(trials)]
        self.checkpoint_every_s = checkpoint_every_s
        self.poll_s = poll_s
        self.versions = [0] * trials
        self.next_stage = [0] * trials
        self.pending: list[list[str]] = [[] for _ in range(trials)]
        self.committed = 0
        self.malformed = 0
        self.restored = False
        self.detached = False
        self._last_checkpoint = time.monotonic()

    def resync(self) -> None:
        state = self.store.load_state(self.controller.name)
        if state is not None:
            self.controller.load_state_dict(state)
            self.restored = True
        self._advice = None
        self.advise(self.controller.advice())  # what the stored state says, again
        for i, trial in enumerate(self.trials):
            trial.ensure_group()
            self.versions[i] = trial.version()
            stages = trial.stage_decisions()
            self.next_stage[i] = stages[-1].stage + 1 if stages else 0
            self.pending[i] = []
            after = "0"
            while (batch := trial.read_reports(CONSUMER, pending=True, after=after)).last_id:
                self._take(i, batch)
                after = batch.last_id

    def _take(self, i: int, batch: Any) -> None:
        for entry_id, reason in batch.malformed:
            self.malformed += 1
            log.warning(
                "tautune head %s trial %d: skipping %s: %s", self.store.job, i, entry_id, reason
            )
        self.controller.observe(i, [r for _, r in batch.reports])
        self.pending[i].extend(batch.ids)

    def step(self) -> None:
        if self.beat() and self.store.detach_requested():
            self.detach()
            return
        got, waiting = 0, []
        for i, trial in enumerate(self.trials):
            marks = trial.waiting()  # before the read, as in HeadLoop
            batch = trial.read_reports(CONSUMER)
            got += len(batch.ids)
            waiting.append(marks if batch.last_id is None else None)
            self._take(i, batch)
        horizons = tuple(trial.horizon() for trial in self.trials)
        reported = tuple(
            reported_through(trial, waiting=waiting[i]) for i, trial in enumerate(self.trials)
        )
        for i in range(len(self.trials)):
            plan = Plan(
                horizon=horizons[i],
                last_step=reported[i],
                next_stage=self.next_stage[i],
                peers_horizon=horizons,
                peers_last_step=reported,
            )
            decision = self.controller.propose(i, plan)
            if decision is not None and not self._commit(i, decision):
                horizons = tuple(trial.horizon() for trial in self.trials)
        if any(self.pending) and time.monotonic() - self._last_checkpoint > self.checkpoint_every_s:
            self._commit(0, None)
        if not got:
            self._stop.wait(self.poll_s)

    def detach(self) -> None:
        """Leave every trial a decision to go on with, checkpoint, and stop.

        A trial whose last decision ends at a step gets what the controller says
        (:meth:`~tuner.controllers.base.PopulationController.detach_decision`: a
        population ``explore`` mid-stage commits its best candidate so far, or sends every
        trial back to the stage's start), else an open-ended hold of that decision's final
        LR, so no trial waits for a head that is gone.
        """
        for i, trial in enumerate(self.trials):
            for _ in range(20):  # a horizon conflict: the trial moved on; plan after it
                stages = trial.stage_decisions()
                last = stages[-1] if stages else None
                if last is None or last.until_step is None or last.info.get("final"):
                    break
                horizons = tuple(t.horizon() for t in self.trials)
                plan = Plan(
                    horizon=horizons[i],
                    last_step=reported_through(trial),
                    next_stage=self.next_stage[i],
                    peers_horizon=horizons,
                    peers_last_step=tuple(reported_through(t) for t in self.trials),
                )
                own = self.controller.detach_decision(i, plan)
                if own is not None:
                    if self._commit(i, own):
                        break
                    continue
                hold = Decision(
                    stage=max(last.stage + 1, self.next_stage[i]),
                    kind=DecisionKind.HOLD,
                    from_step=max(last.until_step, horizons[i] + 1),
                    lr=last.lr_at(last.until_step - 1),
                    controller="detach",
                    info={"phase": "detached", "final": True},
                )
                if self._commit(i, hold, controller_owned=False):
                    break
        if any(self.pending):
            self._commit(0, None)
        self.store.clear_detach()
        self.detached = True
        log.info("tautune head %s: detached", self.store.job)
        self.stop()

    def _commit(self, i: int, decision: Decision | None, *, controller_owned: bool = True) -> bool:
        before = self.controller.state_dict()
        if decision is not None:
            decision = decision.with_version(self.versions[i] + 1)
            if controller_owned:
                self.controller.accept(i, decision)
        try:
            self.trials[i].commit(
                expected_version=self.versions[i],
                decision=decision,
                states={self.controller.name: self.controller.state_dict()},
                ack_ids=self.pending[i],
                other_acks={j: ids for j, ids in enumerate(self.pending) if j != i and ids},
            )
        except DecisionConflictError as e:
            self.controller.load_state_dict(before)
            if "another writer" in str(e):
                self.resync()
            return False
        except BaseException:
            self.controller.load_state_dict(before)
            raise
        if decision is not None:
            self.versions[i] += 1
            self.committed += 1
            log.info("tautune head %s trial %d: %s", self.store.job, i, decision.brief())
            self.next_stage[i] = max(self.next_stage[i], decision.stage + 1)
            self.advise(self.controller.advice())
        self.pending = [[] for _ in self.trials]
        self._last_checkpoint = time.monotonic()
        return True

    def finish(self) -> None:
        for i, trial in enumerate(self.trials):  # what was sent before stopping
            while (batch := trial.read_reports(CONSUMER)).last_id is not None:
                self._take(i, batch)
        if any(self.pending):
            self._commit(0, None)

    def status(self) -> dict[str, Any]:
        return {
            "job": self.store.job,
            "trials": len(self.trials),
            "versions": list(self.versions),
            "decisions_committed": self.committed,
            "malformed_skipped": self.malformed,
            "restored": self.restored,
            "pending_reports": sum(len(p) for p in self.pending),
            "controller": self.controller.summary(),
            "done": self.controller.done,
            "error": self.error,
        }
