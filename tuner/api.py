"""The Python tuning API: ``tune(train_fn, ...)`` runs a tuned data-parallel job.

    from tuner import tune, LRSpec

    def train_fn(config):
        agent = Agent.attach()                     # job, Redis and rank come from tune()
        ...

    result = tune(train_fn, config={"steps": 2000}, num_workers=2,
                  lr=LRSpec(init_lr=1e-3, tau=100, total_steps=2000))

Inside ``train_fn`` the agent code is the same as in a plain script, so one instrumented
training loop runs under ``tune``, under ``tautune submit`` and under ``tautune attach``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trials.keys import check_job_name
from tuner.controllers.mixture import DEFAULT_MIXTURE
from tuner.errors import ConfigError
from tuner.records import Decision
from tuner.specs import DEFAULT_LR_METHOD, check_spec, lr_settings

log = logging.getLogger(__name__)

HEAD_WAIT_S = 120.0
"""How long ``tune`` waits for the head to take its lease before the workers train."""


@dataclass(frozen=True)
class LRSpec:
    """How the head tunes the learning rate. Steps are optimizer steps; LRs are plain.

    Attributes:
        init_lr: LR the search starts from.
        tau: Stage length: the LR may change every ``tau`` steps.
        total_steps: Length of the run; enables the final anneal.
        method: Controller: ``"auto"`` (the default: ``"explore"`` when every worker
            can restore a snapshot, ``"stagewise"`` otherwise), ``"explore"``
            (candidates from in-memory snapshots; the workers pass ``model=`` to
            ``agent.lr_scheduler``), ``"stagewise"`` (ABBA probes, no restores) or
            ``"autolrs"`` (AutoLRS as published; needs ``lr_min`` and ``lr_max``).
            Settings a method does not know (``tau`` for ``explore``) are left out of
            its spec.
        lr_min, lr_max: Search bounds (default ``init_lr/100``, ``init_lr*100``).
        warmup_steps: Steps left to the workers' base schedule first.
        anneal_fraction: Fraction of ``total_steps`` at the end that decays to ``final_lr``.
        final_lr: LR at the end of the anneal.
        metric: Reported metric the controller minimizes (default ``loss``); workers
            report it with the others of its step, ``agent.report(step, loss=...,
            val_loss=...)``.
        explore_budget: Fraction of ``total_steps`` ``explore`` may spend on steps it
            throws away (default 0.1).
        settings: Further settings of the method, by name (``tie_t``, ``prune_t``,
            ``candidates``, ...; ``tautune attach --help`` lists them); a name the method
            does not know is a :class:`~tuner.errors.ConfigError`.
    """

    init_lr: float
    tau: int = 100
    total_steps: int | None = None
    method: str = DEFAULT_LR_METHOD
    lr_min: float | None = None
    lr_max: float | None = None
    warmup_steps: int = 0
    anneal_fraction: float = 0.2
    final_lr: float = 0.0
    metric: str | None = None
    explore_budget: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        """The controller spec (JSON data) the head is started with."""
        known = lr_settings(self.method) | {"method"}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        spec = {k: v for k, v in fields.items() if v is not None and k in known}
        spec.update(self.settings)  # not filtered: a misspelt name is an error, not dropped
        check_spec(spec)  # validates
        return spec


@dataclass(frozen=True)
class MixtureSpec:
    """How the head tunes the data mixture. Steps are optimizer steps.

    Attributes:
        arms: Names of the arms (domains or difficulty buckets), as the workers' sampler
            knows them.
        method: Bandit (``exp3s``, the default, ``ducb``, ``dts``, ``sec``, ``exp3``,
            ``odm``); see docs/benchmarks-mixture.md for how they compare.
        tau: Stage length; give the LR spec the same ``tau`` to decide both on one grid.
        total_steps: Length of the run.
        reward: How an arm's stage turns into a reward (``absolute_progress``, the default,
            ``learning_progress``, ``signed_progress``, ``absolute_progress_per_sample``,
            ``loss``, ``advantage``, ``intermediate_difficulty``; see
            :mod:`tuner.controllers.rewards`).
        floor: Least weight of any free arm (default: a tenth of an even share).
        final_average: Fraction of ``total_steps`` at the end that plays the average of the
            mixtures played before (default a quarter; ``0`` plays the bandit to the end).
        pinned: Arm -> weight the user fixes.
        settings: Further algorithm settings (see ``tuner.controllers.mixture``).
    """

    arms: tuple[str, ...]
    method: str = DEFAULT_MIXTURE["method"]
    tau: int = 100
    total_steps: int | None = None
    reward: str = DEFAULT_MIXTURE["reward"]
    floor: float | None = None
    final_average: float = DEFAULT_MIXTURE["final_average"]
    pinned: Mapping[str, float] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "method": self.method,
            "arms": list(self.arms),
            "tau": self.tau,
            "reward": self.reward,
            "final_average": self.final_average,
            **dict(self.settings),
        }
        for name in ("total_steps", "floor"):
            if getattr(self, name) is not None:
                spec[name] = getattr(self, name)
        if self.pinned:
            spec["pinned"] = dict(self.pinned)
        check_spec(spec)  # validates
        return spec


@dataclass
class Result:
    """What a tuned job left behind.

    Attributes:
        job: The job name (its keys in Redis are ``tt:{job}:...``).
        returns: ``train_fn``'s return value on each rank, in rank order.
        metrics: The last reported metrics of each rank.
        decisions: Every decision the head wrote, oldest first.
        head: The head's final status (``None`` without an LR spec).
        redis_url: Where the job's state lives (gone if it was the embedded server).
        wall_s: Seconds from start to finish.
    """

    job: str
    returns: list[Any]
    metrics: dict[int, dict[str, float]]
    decisions: list[Decision]
    head: dict[str, Any] | None
    redis_url: str
    wall_s: float
    trials: list[TrialResult] = field(default_factory=list)
    """Population mode: one entry per trial (``returns``/``metrics``/``decisions`` above
    are then the best trial's)."""
    best_trial: int | None = None


@dataclass
class TrialResult:
    """One trial of a population job."""

    trial: int
    returns: list[Any]
    metrics: dict[int, dict[str, float]]
    decisions: list[Decision]

    @property
    def final_loss(self) -> float:
        """Mean of the ranks' last reported ``loss`` (inf if none was reported)."""
        losses = [m["loss"] for m in self.metrics.values() if "loss" in m]
        return sum(losses) / len(losses) if losses else float("inf")


def tune(
    train_fn: Callable[[dict[str, Any]], Any],
    config: Mapping[str, Any] | None = None,
    *,
    num_workers: int = 1,
    resources_per_worker: Mapping[str, float] | None = None,
    lr: LRSpec | Mapping[str, Any] | None = None,
    mixture: MixtureSpec | Mapping[str, Any] | None = None,
    job: str | None = None,
    redis_url: str | None = None,
    ray_address: str | None = None,
    backend: str | None = None,
    population: int | None = None,
    log_to_driver: bool = True,
) -> Result:
    """Run ``train_fn(config)`` on ``num_workers`` data-parallel Ray workers, tuned by a head.

    Args:
        train_fn: The training loop; it calls ``workers.agent.Agent.attach()``.
        config: Passed to ``train_fn`` as a dict.
        num_workers: Data-parallel ranks (Ray actors; DDP over gloo on CPU, nccl on GPU).
        resources_per_worker: Ray resources per rank, ``{"CPU": 1}`` (default) or ``{"GPU": 1}``.
        lr: How to tune the LR; ``None`` trains on the workers' base schedules.
        mixture: How to tune the data mixture (workers draw with ``agent.mixture_sampler``);
            with ``lr`` too, both are decided on one stage grid.
        job: Job name (default ``$TAUTUNE_JOB``, else a fresh ``tune-<id>``).
        redis_url: Redis (default ``$TAUTUNE_REDIS_URL``, else an embedded server).
        ray_address: Ray cluster (default: the connected one, else a new local Ray).
        population: Run P trials of the job (each with ``num_workers`` ranks) sharing one
            head; the result is the best trial's, with every trial in ``Result.trials``.
            Needs ``lr``. With ``LRSpec(method="explore")`` (workers pass ``model=``) each
            trial probes one candidate LR from a shared state and every trial goes on
            from the winner's (:mod:`tuner.controllers.population_explore`); otherwise
            the trials explore P learning rates around a centre without exchanging weights.
        log_to_driver: Print the workers' output (``print``, warnings, tracebacks) and the
            head's log of its decisions here, prefixed by the Ray actor, when ``tune``
            starts the Ray (with ``ray_address`` or a connected Ray, that Ray's setting holds).

    Ctrl-C stops the workers and the head and re-raises ``KeyboardInterrupt``.
    """
    import ray

    from tuner.head import start_head, stop_head
    from tuner.runtime import local_runtime
    from tuner.worker_group import WorkerGroup, check_resources

    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers=}")
    spec = lr.to_spec() if isinstance(lr, LRSpec) else (dict(lr) if lr is not None else None)
    if mixture is not None:
        if population is not None:
            raise ConfigError("population mode tunes the LR only; pass mixture=None")
        mix = mixture.to_spec() if isinstance(mixture, MixtureSpec) else dict(mixture)
        spec = {"method": "composite", "lr": spec, "mixture": mix} if spec is not None else mix
    if population is not None:
        from tuner.specs import build_population_controller

        if spec is None:
            raise ConfigError("population mode tunes the LR: pass lr=LRSpec(...)")
        build_population_controller(spec, population)
    elif spec is not None:
        check_spec(spec)
    job = check_job_name(job or os.environ.get("TAUTUNE_JOB") or f"tune-{uuid.uuid4().hex[:8]}")
    trial_ids: list[int | None] = list(range(population)) if population else [None]
    start = time.perf_counter()
    with local_runtime(redis_url, ray_address, log_to_driver=log_to_driver) as rt:
        head = None
        groups: list[WorkerGroup] = []
        try:
            check_resources(
                num_workers * len(trial_ids), resources_per_worker, local=rt.ray_started
            )
            if spec is not None:
                start_head(job, rt.redis_url, spec, trials=population)
                # train once the head holds its lease: a short run could otherwise finish
                # (or pass the first stage's start) before the head has loaded
                if not rt.store.job(job).wait_for_head(HEAD_WAIT_S):
                    log.warning("tautune: the head of %s is not up after %.0fs", job, HEAD_WAIT_S)
            for trial in trial_ids:
                env = {"TAUTUNE_JOB": job, "TAUTUNE_REDIS_URL": rt.redis_url}
                if trial is not None:
                    env["TAUTUNE_TRIAL"] = str(trial)
                groups.append(
                    WorkerGroup(num_workers, resources_per_worker, env, backend=backend, wait=False)
                )
            # every trial's workers are up before any trains: a population explores together;
            # the groups' actors start at once, not one group after another
            for group in groups:
                group.wait()
            refs = [group.submit(train_fn, dict(config or {})) for group in groups]
            returns = [list(ray.get(r)) for r in refs]
            if spec is not None:
                head = stop_head(job)
        except BaseException:
            if spec is not None:
                stop_head(job)
            raise
        finally:
            for group in groups:
                group.shutdown()
        results = []
        for trial, trial_returns in zip(trial_ids, returns, strict=True):
            store = rt.store.job(job, trial)
            last: dict[int, dict[str, float]] = {}
            for report in store.all_reports():
                last[report.rank] = dict(report.metrics)
            results.append(TrialResult(trial or 0, trial_returns, last, store.decisions()))
    best = min(results, key=lambda r: r.final_loss)
    return Result(
        job=job,
        returns=best.returns,
        metrics=best.metrics,
        decisions=best.decisions,
        head=head,
        redis_url=rt.redis_url,
        wall_s=time.perf_counter() - start,
        trials=results if population else [],
        best_trial=best.trial if population else None,
    )
