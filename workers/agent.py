"""The agent inside a training process: report metrics, read decisions, drive the LR.

Usage::

    agent = Agent.attach()                       # TAUTUNE_JOB, TAUTUNE_REDIS_URL, RANK
    sched = agent.lr_scheduler(optimizer, base="warmup=100+cosine", total_steps=5000,
                               model=model)  # model=: lets the controller explore
                                             # candidates from in-memory snapshots
    for step in range(5000):
        loss = train_step()
        optimizer.step()
        agent.report(step, loss=loss)  # before sched.step(), which may wait on it
        sched.step()
    agent.close()

The hot path never waits on Redis: reports go to a buffer a background thread sends in
batches, decisions are cached for the step range the store promised them for, and the
claim for the range after it is sent by the background thread a few steps before it is
needed. Only a sync stage boundary (a decision ended and the head is alive) waits for the
next decision, for at most ``sync_timeout_s``; then the worker falls back to its base
schedule.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from trials.store import JobStore, Store, resolve_url
from tuner.errors import ConfigError, InvalidMetricError, StepRegressionError
from tuner.records import (
    RESTORABLE_METRIC,
    RESTORE_MISSED_METRIC,
    Decision,
    DecisionKind,
    Report,
)
from workers.decisions import DecisionCache, check_lookahead
from workers.device_metrics import PendingReport, on_device
from workers.divergence import diverged_if_not_finite, divergence_hint
from workers.rank_lease import check_rank_free
from workers.reporter import Reporter

if TYPE_CHECKING:
    import torch

    from workers.sampler import ArmData, MixtureBatchSampler
    from workers.scheduler import TautuneLR
    from workers.schedules import BaseSchedule

log = logging.getLogger(__name__)

JOB_ENV = "TAUTUNE_JOB"
RANK_ENV = "RANK"
TRIAL_ENV = "TAUTUNE_TRIAL"


class Agent:
    """One rank's connection to its job.

    Args:
        store: The job's store.
        rank: Data-parallel rank.
        attempt: Restart counter; :meth:`attach` derives it from what the rank stored before.
        sync: Wait at stage boundaries for the next decision (LR exploration needs this).
        sync_timeout_s: Longest wait at a boundary before falling back to the base schedule.
        lookahead: Fewest steps an open answer (no decision, or one without an end) is
            cached for, i.e. how often at most an unattended worker looks for a decision.
        lookahead_s: Seconds of training an open answer is cached for, at the step rate
            measured (at least ``lookahead`` steps, at most the steps trained since the
            first claim and ``DecisionCache.MAX_LOOKAHEAD`` of :mod:`workers.decisions`): a
            head that changes its mind takes effect this much later. With no head alive it
            is ``DecisionCache.UNATTENDED_FACTOR`` times as long: a worker that nothing
            tunes looks for a head every 2 s of training by default, and one that attaches
            takes effect then.
        flush_every: Reports buffered before the background thread sends them.
    """

    def __init__(
        self,
        store: JobStore,
        rank: int = 0,
        *,
        attempt: int = 0,
        sync: bool = True,
        sync_timeout_s: float = 60.0,
        lookahead: int = 16,
        lookahead_s: float = 0.5,
        flush_every: int = 128,
        flush_interval_s: float = 0.5,
        lease_ttl_s: float = 10.0,
    ) -> None:
        check_lookahead(lookahead, lookahead_s)  # before the thread starts
        self.store = store
        self.rank = rank
        self.attempt = attempt
        self._last_step = -1
        self._reporter = Reporter(
            store,
            rank,
            flush_every=flush_every,
            flush_interval_s=flush_interval_s,
            lease_ttl_s=lease_ttl_s,
        )
        self._decisions = DecisionCache(
            store,
            self._reporter,
            rank,
            sync=sync,
            sync_timeout_s=sync_timeout_s,
            lookahead=lookahead,
            lookahead_s=lookahead_s,
            last_reported=lambda: self._last_step,
        )
        self._extra: dict[str, float] = {}
        # Step -> what the scheduler applied there and whether an EXPLORE decision covered
        # it, for the few steps a report may trail the scheduler by (torch's loop steps the
        # scheduler before the step is reported).
        self._applied_at: dict[int, tuple[dict[str, float], bool]] = {}
        self._exploring = False
        self._last_applied = -1  # the last step a scheduler applied; -1: no scheduler
        self._warned_ahead = False
        self._closed = False

    @classmethod
    def attach(
        cls,
        job: str | None = None,
        redis_url: str | None = None,
        rank: int | None = None,
        trial: int | None = None,
        **kwargs: Any,
    ) -> Agent:
        """Connect to ``job`` (default ``$TAUTUNE_JOB``) in the Redis at ``redis_url``
        (default ``$TAUTUNE_REDIS_URL``) as ``rank`` (default ``$RANK``, else 0) of
        ``trial`` (default ``$TAUTUNE_TRIAL``; set for the trials of a population job).

        A rank that stored reports before (a restarted process) reports under the next
        attempt, so it may go back to the step of its last checkpoint.
        """
        job = job or os.environ.get(JOB_ENV)
        if not job:
            raise ConfigError(f"no job name: pass Agent.attach(job=...) or set ${JOB_ENV}")
        url = resolve_url(redis_url)
        if not url:
            raise ConfigError(
                "no Redis URL: pass Agent.attach(redis_url=...), set $TAUTUNE_REDIS_URL, or "
                "launch the script with `tautune submit`, which sets both"
            )
        if rank is None:
            raw = os.environ.get(RANK_ENV, "0")
            try:
                rank = int(raw)
            except ValueError:
                raise ConfigError(f"${RANK_ENV} must be an integer, got {raw!r}") from None
        if rank < 0:
            raise ConfigError(f"rank must be >= 0, got {rank=}")
        if trial is None and os.environ.get(TRIAL_ENV):
            raw = os.environ[TRIAL_ENV]
            try:
                trial = int(raw)
            except ValueError:
                raise ConfigError(f"${TRIAL_ENV} must be an integer, got {raw!r}") from None
        job_store = Store.connect(url).job(job, trial)
        check_rank_free(job_store, rank)
        previous = job_store.progress().get(rank)
        attempt = previous[0] + 1 if previous is not None else 0
        return cls(job_store, rank, attempt=attempt, **kwargs)

    # -- reports ------------------------------------------------------------------------

    def report(self, step: int, **metrics: float | torch.Tensor) -> None:
        """Record ``metrics`` measured at optimizer ``step``; returns without touching Redis.

        The LR and decision version the scheduler applied at ``step`` are added as ``lr``
        and ``decision_version`` when a tautune scheduler drives this rank and the caller
        did not pass them.

        A candidate that blows up is part of exploring: on a rank that restores
        (``lr_scheduler(model=...)``), at a step an exploration decision covers while the
        rank holds a snapshot to go back to, NaN or infinite metrics are dropped and
        ``diverged=1`` is reported instead, which tells the controller to score the
        candidate worst; its next decision restores a snapshot. A controller that explores
        without snapshots (``stagewise``) cannot undo a blow-up, so there it is an error.

        A metric may be a one-element tensor. Pass a GPU loss as it is (``loss=loss``):
        reading it here would make the loop wait for the GPU, so the background thread
        reads it when it sends the batch (:mod:`workers.device_metrics`), and a value
        that is an error there is raised at this rank's next ``report()``, ``flush()`` or
        ``close()``, naming its step.

        Raises:
            InvalidMetricError: a metric is NaN, infinite or not a number (outside the case
                above), or an earlier GPU value was; the message names the LR in force at
                the step.
            StepRegressionError: ``step`` is not after the last reported step.
        """
        if step <= self._last_step:
            again = (
                f"step {step} was reported already: pass all of a step's metrics in one call, "
                f"report({step}, loss=..., val_loss=...)"
                if step == self._last_step
                else f"reported step {step} after step {self._last_step}; steps must increase"
            )
            raise StepRegressionError(f"rank {self.rank}: {again}. Nothing was recorded.")
        if 0 <= self._last_applied < step and not self._warned_ahead:
            self._ahead_of_scheduler(step)
        applied, exploring = self._applied_at.get(step, (self._extra, self._exploring))
        divergence = exploring and bool(applied.get(RESTORABLE_METRIC))
        on_gpu = any(type(v) is not float and on_device(v) for v in metrics.values())
        for name, value in applied.items():
            metrics.setdefault(name, value)
        report: Report | PendingReport | None = (  # a GPU tensor is read in the background
            PendingReport.of(self.rank, step, self.attempt, metrics, divergence, applied)
            if on_gpu
            else None
        )
        if report is None:
            if divergence:
                metrics = diverged_if_not_finite(metrics)
            try:
                values = cast(dict[str, float], metrics)  # Report reads CPU tensors' item()
                report = Report(rank=self.rank, step=step, metrics=values, attempt=self.attempt)
            except InvalidMetricError as e:
                raise InvalidMetricError(f"{e}{divergence_hint(applied)}") from None
        first = self._last_step < 0
        self._last_step = step
        self._reporter.add(report)
        if first:
            self._reporter.kick()  # the head starts deciding once it knows where training is
        elif (at := self._decisions.decide_at) is not None and step >= at:
            self._decisions.decide_at = None
            self._reporter.kick()  # the head decides the next stage from this report

    def flush(self) -> None:
        """Send buffered reports now."""
        self._reporter.flush()

    @property
    def reports_sent(self) -> int:
        return self._reporter.sent

    # -- decisions ----------------------------------------------------------------------

    def decision(self, step: int, *, wait: bool = True) -> Decision | None:
        """The decision covering optimizer ``step``, or ``None`` for the base schedule.

        Every rank gets the same answer for the same step, whenever it asks.
        ``wait=False`` (the mixture sampler, which asks ahead of or behind training) never
        waits at a boundary, leaves the boundary tracking alone and has its own cache.
        """
        return self._decisions.decision(step, wait=wait)

    @property
    def store_down(self) -> bool:
        """Whether Redis was away at the last claim: training goes on without it."""
        return self._decisions.store_down

    @property
    def stall_s(self) -> float:
        """Seconds this rank spent waiting at sync boundaries."""
        return self._decisions.stall_s

    def lr_scheduler(
        self,
        optimizer: torch.optim.Optimizer,
        base: str | BaseSchedule | None = None,
        *,
        total_steps: int | None = None,
        last_epoch: int = -1,
        model: torch.nn.Module | None = None,
        sampler: object | None = None,
        extra_state: Mapping[str, Any] | None = None,
        snapshot_device: torch.device | str | None = None,
    ) -> TautuneLR:
        """A ``torch.optim.lr_scheduler.LRScheduler`` that applies this job's LR decisions
        and follows ``base`` (a schedule or spec such as ``"warmup=100+cosine"``; default
        constant at the optimizer's LR) wherever no decision covers a step.

        Pass ``model`` (and the ``sampler``, and in ``extra_state`` any generator the
        batches are drawn from or other objects with ``state_dict()``) to let the LR
        controller explore candidates from in-memory snapshots: at the steps its decisions
        name, every rank saves or restores the model, optimizer, sampler and RNG states
        inside ``scheduler.step()`` (:mod:`workers.explore`). Snapshots live beside the
        tensors unless ``snapshot_device="cpu"``. Without ``model``, a controller that
        restores (``explore``, ``autolrs``) cannot run: ``explore`` holds its LR, and a
        restore directive raises :class:`~tuner.errors.ConfigError` saying so.
        """
        from workers.explore import StateMover
        from workers.peers import StorePeers
        from workers.scheduler import TautuneLR

        mover = None
        if model is not None:
            trial = self.store.trial  # a population's trials exchange states (workers.peers)
            peers = None if trial is None else StorePeers(self.store, self.rank)
            mover = StateMover(
                model,
                optimizer,
                sampler=sampler,
                extra=extra_state,
                device=snapshot_device,
                peers=peers,
            )
            self._extra = {**self._extra, RESTORABLE_METRIC: 1.0}
        return TautuneLR(
            optimizer,
            self,
            base=base,
            total_steps=total_steps,
            last_epoch=last_epoch,
            mover=mover,
        )

    def mixture_sampler(
        self,
        data: Mapping[str, ArmData] | ArmData,
        batch_size: int,
        *,
        arms: Mapping[str, Sequence[int]] | None = None,
        world_size: int | None = None,
        **options: Any,
    ) -> MixtureBatchSampler:
        """A :class:`~workers.sampler.MixtureBatchSampler` drawing from this job's mixture
        decisions: the batch of step ``s`` uses the mixture of the decision covering ``s``
        (kept through decisions that leave the mixture alone; before any, the initial
        weights, version 0). ``data`` is ``{arm: dataset}``, or one dataset with
        ``arms={arm: indices}``. ``world_size`` defaults to ``$WORLD_SIZE``, else 1; other
        options go to the sampler (``seed``, ``initial_weights``, ``batches_per_step``,
        ``weights_lag``, ``num_batches``, ...). With a DataLoader that prefetches, pass
        ``weights_lag=ceil(num_workers * prefetch_factor / batches_per_step)`` so the
        sampler never asks about a step before training reaches it. Build the DataLoader
        with ``sampler.loader(...)`` and report ``**sampler.metrics(batch, per_sample_loss)``
        with each step.
        """
        from workers.sampler import decision_weights, mixture_sampler

        if world_size is None:
            raw = os.environ.get("WORLD_SIZE", "1")
            try:
                world_size = int(raw)
            except ValueError:
                raise ConfigError(f"$WORLD_SIZE must be an integer, got {raw!r}") from None
        return mixture_sampler(
            data,
            batch_size,
            decision_weights(lambda step: self.decision(step, wait=False)),
            arms=arms,
            rank=self.rank,
            world_size=world_size,
            **options,
        )

    def _applied(
        self,
        step: int,
        lr: float,
        decision: Decision | None,
        *,
        rewindable: bool,
        missed: int | None = None,
    ) -> None:
        """Record what the scheduler applied at ``step``; ``rewindable``: this rank holds a
        snapshot to go back to, so a candidate that blows up there can be undone;
        ``missed``: the last step a restore found no snapshot (reported from then on)."""
        extra = dict(self._extra)
        if math.isfinite(lr):
            extra["lr"] = lr
        if missed is not None:
            extra[RESTORE_MISSED_METRIC] = float(missed)
        extra["decision_version"] = float(decision.version if decision else 0)
        self._extra = extra
        self._exploring = (
            rewindable and decision is not None and decision.kind == DecisionKind.EXPLORE
        )
        self._applied_at[step] = (extra, self._exploring)
        self._last_applied = max(self._last_applied, step)
        while len(self._applied_at) > 8:
            del self._applied_at[next(iter(self._applied_at))]

    def _ahead_of_scheduler(self, step: int) -> None:
        """Warn, once, of a report for a step the scheduler has not applied yet."""
        self._warned_ahead = True
        warnings.warn(
            f"tautune: rank {self.rank} reported step {step}, but its LR scheduler is at "
            f"step {self._last_applied}: report the optimizer step counted from 0 (the "
            "scheduler's last_epoch) and call scheduler.step() once per optimizer step. "
            "Decisions and reports are keyed by that step; a report labelled ahead of it is "
            "scored against the wrong LR, and a scheduler stepped once per epoch applies "
            "each decision that many times too late.",
            stacklevel=3,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush reports, stop the background thread and release the lease. Reports that
        Redis could not take within ``timeout_s`` are logged as lost, not raised."""
        if not self._closed:
            self._closed = True
            self._reporter.close(timeout_s)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
