"""The job's head: reads reports, drives the controller, writes decisions with its state.

:class:`HeadLoop` is the loop itself and runs in any thread; :class:`JobHead` wraps it as a
named, detached Ray actor with ``max_restarts``, so Ray brings it back if its process dies.

Exactly-once: a report counts once it is acknowledged in the head's consumer group, and the
acknowledgement is written in the same Lua script as the controller state that includes
it. A restarted head loads that state, then replays the reports delivered to it but never
acknowledged, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from trials.store import JobStore, ReadBatch, Store
from tuner.controllers.advice import missing_metrics
from tuner.controllers.base import Controller, Plan
from tuner.errors import DecisionConflictError
from tuner.loop import Loop
from tuner.records import Decision, DecisionKind, Report
from tuner.specs import build_controller, check_spec

log = logging.getLogger(__name__)

NAMESPACE = "tautune"
CONSUMER = "head"
CHECK_AFTER = 20
"""Reports the head takes in before it checks they carry what the controller learns from."""


def reported_through(
    store: JobStore,
    *,
    taken: Mapping[int, int] | None = None,
    waiting: Mapping[int, int] | None = None,
) -> int:
    """The last step every live rank has reported to the controller (a rank whose lease
    lapsed does not hold it back).

    ``taken``: rank -> the last step of the reports the head has read; a rank's stored
    progress can be ahead of them (reports stored since the read). ``waiting``: rank -> the
    step it waits at (read before the stream, and only when the stream was then drained),
    which counts as reported up to the step before.

    The least over ranks, not the most: under data parallelism every rank reports its own
    shard's loss, and a controller that scored a stage when the first rank got there read
    the others' last steps as missing (``examples/tune_ddp.py`` committed 0.0005 instead
    of 0.002 in 3 runs of 4, on part of the last candidate's cool-down).
    """
    steps = {rank: step for rank, (_, step) in store.progress().items()}
    for rank, step in (taken or {}).items():
        steps[rank] = min(steps.get(rank, step), step)
    for rank, step in (waiting or {}).items():
        steps[rank] = max(steps.get(rank, -1), step - 1)
    alive = store.alive_workers()
    live = [step for rank, step in steps.items() if rank in alive]
    return min(live) if live else max(steps.values(), default=-1)


def head_name(job: str) -> str:
    """Name of the job's head actor in the ``tautune`` Ray namespace."""
    return f"head:{job}"


class HeadLoop(Loop):
    """Drives one controller from one job's store.

    Args:
        store: The job's store.
        controller: The controller; its state is loaded from the store if stored before.
        checkpoint_every_s: Longest time observed reports stay unacknowledged without a
            decision (bounds how much a restart replays).
        lease_ttl_s: Lifetime of the head's heartbeat, which workers read to decide whether
            to wait at a sync boundary.
    """

    def __init__(
        self,
        store: JobStore,
        controller: Controller,
        *,
        checkpoint_every_s: float = 2.0,
        lease_ttl_s: float = 5.0,
        poll_ms: int = 50,
    ) -> None:
        super().__init__(store, lease_ttl_s=lease_ttl_s)
        self.controller = controller
        self.checkpoint_every_s = checkpoint_every_s
        self.poll_ms = poll_ms
        self.version = 0
        self.committed = 0
        self.malformed = 0
        self.restored = False
        self._pending: list[str] = []
        self._last_checkpoint = time.monotonic()
        self._next_control = 0.0
        self._next_stage = 0
        self.detached = False
        self._seen_metrics: set[str] = set()
        self._reports_taken = 0
        self._taken: dict[int, int] = {}  # rank -> last step of the reports read

    def resync(self) -> None:
        """Load the stored state, then replay reports delivered but not acknowledged."""
        self.store.ensure_group()
        if self.store.meta().get("warning"):
            self.store.set_meta(warning=None)  # checked again on the reports from here on
        state = self.store.load_state(self.controller.name)
        if state is not None:
            self.controller.load_state_dict(state)
            self.restored = True
        self._advice = None
        self.advise(self.controller.advice())  # what the stored state says, again
        self.version = self.store.version()
        stages = self.store.stage_decisions()
        self._next_stage = stages[-1].stage + 1 if stages else 0
        self._pending = []
        after = "0"
        while True:
            batch = self.store.read_reports(CONSUMER, pending=True, after=after)
            if batch.last_id is None:
                break
            self._take(batch)
            after = batch.last_id

    def _take(self, batch: ReadBatch) -> None:
        for entry_id, reason in batch.malformed:
            self.malformed += 1
            log.warning("tautune head %s: skipping entry %s: %s", self.store.job, entry_id, reason)
        reports = [r for _, r in batch.reports]
        for r in reports:
            self._taken[r.rank] = max(self._taken.get(r.rank, -1), r.step)
        self.controller.observe(reports)
        self._pending.extend(batch.ids)
        self._check_metrics(reports)

    def _check_metrics(self, reports: list[Report]) -> None:
        """Warn once, in the log and in the job's metadata (``tautune status``), when the
        first reports carry none of what the controller learns from: it would go on
        deciding from nothing (a loop that reports ``train_loss`` to a spec for ``loss``)."""
        if self._reports_taken >= CHECK_AFTER or not reports:
            return
        for r in reports:
            self._seen_metrics.update(r.metrics)
        self._reports_taken += len(reports)
        if self._reports_taken < CHECK_AFTER:
            return
        warning = missing_metrics(self.controller.metrics(), self._seen_metrics)
        if warning is None:
            return
        self.warning = f"the first {self._reports_taken} reports {warning}"
        log.warning("tautune head %s: %s", self.store.job, self.warning)
        self.store.set_meta(warning=self.warning)

    def step(self) -> None:
        """One round: heartbeat, read new reports, commit a decision or a checkpoint."""
        now = time.monotonic()
        self.beat()
        if now >= self._next_control:
            self._next_control = now + 0.25
            if self.store.detach_requested():
                self.detach()
                return
        waiting = self.store.waiting()  # before the read: their reports were sent before
        batch = self.store.read_reports(CONSUMER, block_ms=self.poll_ms)
        self._take(batch)
        # With nothing left to read, ranks waiting at a boundary sent every report before
        # it: their position counts as reported (they may report every N steps only).
        decision = self.controller.propose(
            self._plan(waiting=waiting if batch.last_id is None else None)
        )
        if decision is not None:
            self._commit(decision)
        elif self._pending and now - self._last_checkpoint > self.checkpoint_every_s:
            self._commit(None)

    def _plan(self, *, waiting: Mapping[int, int] | None = None) -> Plan:
        last_step = reported_through(self.store, taken=self._taken, waiting=waiting)
        return Plan(horizon=self.store.horizon(), last_step=last_step, next_stage=self._next_stage)

    def _commit(self, decision: Decision | None, *, controller_owned: bool = True) -> bool:
        """Write ``decision`` (if any), the controller state and the pending acks.

        Returns whether it was written; on a conflict the controller is rolled back.
        """
        before = self.controller.state_dict()
        if decision is not None:
            decision = decision.with_version(self.version + 1)
            if controller_owned:
                self.controller.accept(decision)
        try:
            self.store.commit(
                expected_version=self.version,
                decision=decision,
                states={self.controller.name: self.controller.state_dict()},
                ack_ids=self._pending,
            )
        except DecisionConflictError as e:
            self.controller.load_state_dict(before)
            if "another writer" in str(e):
                log.warning("tautune head %s: %s; reloading", self.store.job, e)
                self.resync()
            return False  # a horizon conflict: propose again next round, after the horizon
        except BaseException:
            self.controller.load_state_dict(before)
            raise
        if decision is not None:
            self.version += 1
            self.committed += 1
            self._next_stage = max(self._next_stage, decision.stage + 1)
            log.info(
                "tautune head %s: %s", self.store.job, decision.with_version(self.version).brief()
            )
            self.advise(self.controller.advice())
        self._pending = []
        self._last_checkpoint = time.monotonic()
        return True

    def detach(self) -> Decision | None:
        """Leave the last committed decision in force, checkpoint, and stop.

        If the last decision ends at a step (a stage boundary), an open-ended ``hold``
        decision keeping its final LR takes over from there, so workers neither wait for a
        head that is gone nor fall back to their base schedule. A controller whose last
        decision is a candidate it would throw away says what to leave instead
        (:meth:`~tuner.controllers.base.Controller.detach_decision`: ``explore`` commits
        its best candidate so far). Returns that decision.
        """
        hold: Decision | None = None
        for _ in range(20):  # a horizon conflict: workers moved on; plan after them
            stages = self.store.stage_decisions()
            last = stages[-1] if stages else None
            if last is None or last.until_step is None or last.info.get("final"):
                self._commit(None)
                break
            own = self.controller.detach_decision(self._plan())
            if own is not None:  # the candidate in force is one a snapshot would undo
                hold = own
                if self._commit(own):
                    break
                hold = None
                continue
            hold = Decision(
                stage=last.stage + 1,
                kind=DecisionKind.HOLD,
                from_step=max(last.until_step, self.store.horizon() + 1),
                lr=last.lr_at(last.until_step - 1),
                mixture=last.mixture,
                controller="detach",
                info={"phase": "detached", "final": True},
            )
            if self._commit(hold, controller_owned=False):
                break
            hold = None
        self.store.clear_detach()
        self.detached = True
        self.stop()
        self.store.release(None)
        log.info(
            "tautune head %s: detached; in force: %s",
            self.store.job,
            hold.brief() if hold else "the last decision",
        )
        return hold

    def finish(self) -> None:
        if not self.detached:  # take in what the workers sent before stopping
            while (batch := self.store.read_reports(CONSUMER)).last_id is not None:
                self._take(batch)
        if self._pending:
            self._commit(None)

    def status(self) -> dict[str, Any]:
        return {
            "job": self.store.job,
            "version": self.version,
            "decisions_committed": self.committed,
            "malformed_skipped": self.malformed,
            "restored": self.restored,
            "pending_reports": len(self._pending),
            "controller": self.controller.summary(),
            "done": self.controller.done,
            "detached": self.detached,
            "error": self.error,
            "warning": self.warning,
        }


class JobHead:
    """The head as a Ray actor; create it with :func:`start_head`.

    ``__init__`` runs again when Ray restarts the actor, which is all a restart needs:
    the loop resyncs from the store.
    """

    def __init__(
        self, job: str, redis_url: str, controller: Mapping[str, Any], trials: int | None = None
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        store = Store.connect(redis_url).job(job)
        self.loop: Any
        if trials is None:
            self.loop = HeadLoop(store, build_controller(controller))
        else:
            from tuner.population_head import PopulationLoop
            from tuner.specs import build_population_controller

            self.loop = PopulationLoop(
                store, build_population_controller(controller, trials), trials
            )
        self.thread = threading.Thread(target=self.loop.run, name="tautune-head", daemon=True)
        self.thread.start()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self.loop.status()
        out["pid"] = os.getpid()
        out["alive"] = self.thread.is_alive()
        return out

    def stop(self) -> dict[str, Any]:
        """Stop the loop after a last checkpoint; returns the final status."""
        self.loop.stop()
        self.thread.join(timeout=30)
        self.loop.store.release(None)
        return self.status()


def start_head(
    job: str,
    redis_url: str,
    controller: Mapping[str, Any],
    *,
    max_restarts: int = -1,
    detached: bool = True,
    trials: int | None = None,
) -> Any:
    """Start (or find) the job's head actor in the connected Ray; returns its handle.

    Args:
        controller: A controller spec (see :mod:`tuner.specs`); checked here, before Ray.
        max_restarts: How often Ray restarts a dead head (-1: always).
        detached: Outlive the driver that started it, until :func:`stop_head`.
        trials: The number of trials of a population job (``None``: not a population).
    """
    import ray

    if trials is None:  # fail fast, in the caller, on a bad spec
        check_spec(controller)
    else:
        from tuner.specs import build_population_controller

        build_population_controller(controller, trials)
    actor = ray.remote(JobHead).options(  # type: ignore[attr-defined]
        name=head_name(job),
        namespace=NAMESPACE,
        lifetime="detached" if detached else None,
        max_restarts=max_restarts,
        max_task_retries=-1,
        get_if_exists=True,
        num_cpus=0,
    )
    return actor.remote(job, redis_url, dict(controller), trials)


def find_head(job: str) -> Any | None:
    """The running head actor of ``job``, or ``None``."""
    import ray

    try:
        return ray.get_actor(head_name(job), namespace=NAMESPACE)
    except ValueError:
        return None


def stop_head(job: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Stop the job's head after a last checkpoint and remove the actor."""
    import ray

    actor = find_head(job)
    if actor is None:
        return None
    try:
        final: dict[str, Any] | None = ray.get(actor.stop.remote(), timeout=timeout_s)
    finally:
        ray.kill(actor, no_restart=True)
    return final
