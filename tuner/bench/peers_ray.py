"""Ray Tune's PBT and PB2 on an LR benchmark task: a population of 4 exploring log-LR.

Each member is :func:`population_trial`, a Ray Tune function trainable that builds
:func:`~tuner.bench.lr.make_trainable` for the task and seed, steps it at the member's
current LR (with the task's linear warmup over the state's first steps, as every other
method gets), and every ``report_every`` steps reports the task's ``evaluate()`` loss with
a checkpoint: the :class:`~tuner.bench.lr_run.Trainable`'s ``save()`` written with
``torch.save`` into the checkpoint folder (at every report, so that a member Ray pauses
resumes where it stopped). PBT explores ``lr`` (resampled
log-uniformly within the bounds, or multiplied by 0.8 or 1.2 and clipped: a step in
log-LR); PB2 explores ``log_lr`` within the bounds. Both run Ray's default asynchronous
mode, all four members at once on the 2 CPUs given to Ray.

The budget is the population's: :class:`PopulationBudget` sums the steps every report says
its member trained since its previous report (or since it started or restored), in the
order the driver receives them, and stops the whole population once the sum reaches
``population_steps`` (the grid's ``6 T``). Restarting from a donor's checkpoint redoes or
skips steps, so members end at different state steps, close to ``1.5 T``.

How steps are counted. The *population steps* at a report are that sum up to and
including it: the work the whole population had finished when that loss arrived. Each
report also names the report whose state it continues (``parent``: the member's previous
report, or the checkpoint it restored from), so the best member's *lineage* -- the chain
of states its final state descends from -- can be followed back to step 0; its curve is
plotted, and its steps to target counted, in population steps.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import ConfigError

POPULATION = 4
METHODS = ("pbt", "pb2")
STATE_FILE = "state.pt"
SCORE_CAP = 10.0
"""A loss that is not finite or above ``SCORE_CAP`` x the initial loss is reported to the
scheduler as that cap (Ray sorts and PB2 fits a GP on the metric; neither takes NaN)."""
KEPT = ("loss", "lr", "state_step", "trained", "point", "parent", "loss0")


@dataclass(frozen=True)
class PopulationSpec:
    """One PBT or PB2 run.

    Attributes:
        method: ``"pbt"`` or ``"pb2"``.
        task: An LR benchmark task (:data:`tuner.bench.lr.TASKS`).
        seed: Seed of every member's model and batches, and of the scheduler's draws.
        population_steps: Steps the population trains in all (the grid's ``6 T``).
        report_every: Steps between reports (evaluations).
        perturb_every: Reports between perturbations.
        lr_bounds: ``(lo, hi)`` of the LR explored.
        warmup: Linear warmup steps of the task.
    """

    method: str
    task: str
    seed: int
    population_steps: int
    report_every: int
    perturb_every: int
    lr_bounds: tuple[float, float]
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown population method {self.method!r}; choose from {METHODS}")
        lo, hi = self.lr_bounds
        if not 0 < lo < hi:
            raise ConfigError(f"lr_bounds must satisfy 0 < lo < hi, got {self.lr_bounds}")
        if min(self.population_steps, self.report_every, self.perturb_every) < 1:
            raise ConfigError(
                "population_steps, report_every and perturb_every must be >= 1, got "
                f"{self.population_steps}, {self.report_every}, {self.perturb_every}"
            )

    @property
    def perturbation_steps(self) -> int:
        """Steps between perturbations of a member."""
        return self.report_every * self.perturb_every

    def initial_lrs(self) -> list[float]:
        """The members' starting LRs: log-uniform draws within the bounds, from ``seed``."""
        lo, hi = self.lr_bounds
        rng = np.random.default_rng(self.seed)
        return [float(math.exp(x)) for x in rng.uniform(math.log(lo), math.log(hi), POPULATION)]


def population_trial(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable of one member (see the module docstring)."""
    import torch
    from ray import tune

    from tuner.bench.lr import make_trainable

    torch.set_num_threads(1)
    lr = float(math.exp(config["log_lr"]) if "log_lr" in config else config["lr"])
    every = config["report_every"]
    warmup, cap_steps = config["warmup"], config["population_steps"]
    trainable = make_trainable(config["task"], config["seed"])
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        step, parent, loss0 = 0, "", trainable.evaluate()
    else:
        with checkpoint.as_directory() as folder:
            blob = torch.load(Path(folder) / STATE_FILE, weights_only=False)
        trainable.load(blob["state"])
        step, parent, loss0 = blob["step"], blob["point"], blob["loss0"]
    cap = SCORE_CAP * loss0
    while step < cap_steps:  # PopulationBudget stops the population long before
        for _ in range(every):
            trainable.step(lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0))
            step += 1
        loss, point = trainable.evaluate(), uuid.uuid4().hex
        metrics = {
            "loss": loss,
            "score": loss if math.isfinite(loss) and loss < cap else cap,
            "lr": lr,
            "state_step": step,
            "trained": every,
            "point": point,
            "parent": parent,
            "loss0": loss0,
        }
        with tempfile.TemporaryDirectory() as folder:
            state = {"state": trainable.save(), "step": step, "point": point, "loss0": loss0}
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        parent = point


class _Clip:
    """PBT's ``custom_explore_fn``: keep a perturbed ``lr`` within the bounds."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        config["lr"] = min(self.hi, max(self.lo, float(config["lr"])))
        return config


def _budget(population_steps: int) -> Any:
    from ray import tune

    class PopulationBudget(tune.Stopper):  # type: ignore[misc]
        """Records every report once, in order of arrival, and stops the population when
        their ``trained`` steps sum to ``population_steps``."""

        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []
            self.total = 0
            self.seen: set[str] = set()

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            point = result.get("point")
            if self.total < population_steps and point and point not in self.seen:
                self.seen.add(point)
                self.total += int(result["trained"])
                self.results.append({"trial": str(trial_id), **{k: result[k] for k in KEPT}})
            return self.stop_all()

        def stop_all(self) -> bool:
            return self.total >= population_steps

    return PopulationBudget()


def _scheduler(spec: PopulationSpec) -> tuple[Any, dict[str, Any]]:
    """The Ray scheduler and the searched part of ``param_space``."""
    from ray import tune

    lo, hi = spec.lr_bounds
    inits = spec.initial_lrs()
    common: dict[str, Any] = {
        "time_attr": "state_step",
        "metric": "score",
        "mode": "min",
        "perturbation_interval": spec.perturbation_steps,
    }
    if spec.method == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        pbt = PopulationBasedTraining(
            hyperparam_mutations={"lr": tune.loguniform(lo, hi)},
            custom_explore_fn=_Clip(lo, hi),
            **common,
        )
        return pbt, {"lr": tune.grid_search(inits)}
    from ray.tune.schedulers.pb2 import PB2

    pb2 = PB2(hyperparam_bounds={"log_lr": [math.log(lo), math.log(hi)]}, **common)
    return pb2, {"log_lr": tune.grid_search([math.log(x) for x in inits])}


@contextmanager
def _quiet() -> Iterator[None]:
    """Ray Tune's per-exploit INFO lines and bottleneck warnings, PB2's GP convergence
    warnings, and Tune's per-trial CSV/JSON/TensorBoard loggers, off for the duration."""
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train", "ray.air")]
    levels = [log.level for log in loggers]
    env = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    before = os.environ.get(env)
    os.environ[env] = "1"
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
        if before is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = before


def ensure_ray() -> bool:
    """Start a local Ray (2 CPUs, no dashboard, token auth as Ray defaults) unless one is up.

    It is always a new cluster of this process (``address="local"``), never one that
    ``ray start`` left running on the machine.

    Returns:
        Whether this call started it.
    """
    import ray

    if ray.is_initialized():
        return False
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return True


def ray_running() -> bool:
    """Whether this process is connected to a Ray cluster."""
    import ray

    return bool(ray.is_initialized())


def shutdown_ray() -> None:
    """Disconnect from Ray (stopping the local cluster this process started)."""
    import ray

    ray.shutdown()


def run_population(spec: PopulationSpec) -> dict[str, Any]:
    """Run one PBT or PB2 population and return its result row (LR bench JSON shape).

    Returns:
        ``method``, ``seed``, ``final_loss`` (the best member's last loss), ``total_steps``
        (population steps), ``exploration_steps`` (population steps not in the best
        member's lineage), ``wall_s`` (the whole ``Tuner.fit``), ``curve`` (the lineage's
        ``[population_steps, loss]``), ``schedule`` (the lineage's ``[state_step, lr]``)
        and ``info`` (lineage curve in its own steps, initial LRs, members' finals).

    Raises:
        RuntimeError: A member failed, or nothing was reported.
    """
    from ray import tune

    ensure_ray()
    scheduler, searched = _scheduler(spec)
    budget = _budget(spec.population_steps)
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    storage = Path(tempfile.mkdtemp(prefix="tautune-peers-"))
    params = {
        **searched,
        "task": spec.task,
        "seed": spec.seed,
        "population_steps": spec.population_steps,
        "report_every": spec.report_every,
        "perturb_every": spec.perturb_every,
        "warmup": spec.warmup,
    }
    start = time.perf_counter()
    try:
        with _quiet():
            tuner = tune.Tuner(
                tune.with_resources(population_trial, {"cpu": 2 / POPULATION}),
                param_space=params,
                tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=f"{spec.method}-{spec.task}-{spec.seed}",
                    storage_path=str(storage),
                    verbose=0,
                    stop=budget,
                    failure_config=tune.FailureConfig(fail_fast=True),
                ),
            )
            grid = tuner.fit()
        wall = time.perf_counter() - start
        errors = [str(e) for e in grid.errors]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if errors:
        raise RuntimeError(f"{spec.method} on {spec.task} seed {spec.seed}: {errors[0]}")
    return lineage_row(spec, budget.results, wall)


def lineage_row(spec: PopulationSpec, results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The result row from the reports in order of arrival (see the module docstring)."""
    if not results:
        raise RuntimeError(f"{spec.method} on {spec.task} seed {spec.seed}: no results reported")
    population = 0
    by_point: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    for r in results:
        population += int(r["trained"])
        by_point[r["point"]] = last[r["trial"]] = {**r, "population_steps": population}
    members = sorted(last.values(), key=_by_loss)
    best = members[0]
    chain = [best]
    while chain[-1]["parent"] in by_point:
        chain.append(by_point[chain[-1]["parent"]])
    chain.reverse()
    loss0 = float(best["loss0"])
    starts = [0, *[r["state_step"] for r in chain[:-1]]]
    return {
        "method": spec.method,
        "seed": spec.seed,
        "final_loss": float(best["loss"]),
        "total_steps": population,
        "exploration_steps": population - int(best["state_step"]),
        "wall_s": round(wall, 3),
        "curve": [[0, loss0], *[[r["population_steps"], r["loss"]] for r in chain]],
        "schedule": [[s, r["lr"]] for s, r in zip(starts, chain, strict=True)],
        "info": {
            "population": POPULATION,
            "population_steps_budget": spec.population_steps,
            "best_member_state_steps": int(best["state_step"]),
            "member_state_steps": sorted(int(r["state_step"]) for r in last.values()),
            "member_final_losses": [float(r["loss"]) for r in members],
            "report_every": spec.report_every,
            "perturbation_interval_steps": spec.perturbation_steps,
            "initial_lrs": spec.initial_lrs(),
            "lr_bounds": list(spec.lr_bounds),
            "lineage_curve": [[0, loss0], *[[r["state_step"], r["loss"]] for r in chain]],
            "lineage_member_switches": sum(
                a["trial"] != b["trial"] for a, b in itertools.pairwise(chain)
            ),
            "reports": len(results),
            "steps_counted_as": "population steps: the steps all members had trained, by "
            "their reports in order of arrival, when the lineage's loss was measured",
        },
    }


def _by_loss(report: Mapping[str, Any]) -> float:
    """A report's loss for ranking, NaN (a diverged member) last."""
    loss = float(report["loss"])
    return loss if math.isfinite(loss) else math.inf
