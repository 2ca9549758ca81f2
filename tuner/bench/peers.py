"""The peers benchmark: ``tautune bench peers --json PATH`` (issue #6).

On each LR benchmark task (:data:`tuner.bench.lr.TASKS`), with the same per-run step budget
``T`` (the LR bench's ``total_steps``), the same seeds and the same machine:

- ``tautune``, ``cosine-grid-best`` (6-point grid) and ``linear`` (at the grid's peak),
  exactly as the LR bench runs them (:func:`tuner.bench.lr.run_bench`);
- ``pbt`` and ``pb2``: Ray Tune's population based training and PB2, a population of 4
  exploring log-LR within the LR bench's bounds, stopped when the population has trained
  ``6 T`` steps in all, the grid's cost (about ``1.5 T`` a member) (:mod:`.peers_ray`);
- ``schedulefree`` at the grid's centre (tautune's starting LR), ``schedulefree@grid-peak``
  at ``cosine-grid-best``'s peak, on SGD tasks also ``schedulefree@10x-grid-peak`` (its
  authors advise SGD LRs 10x-50x the classical ones), and ``prodigy``
  (:mod:`.peers_optim`); these do not apply to ``nqm``, which the document says with the
  reason.

Each task's document has the LR bench's shape (``task``, ``target_loss``, ``results``,
``summary``) plus ``compute_to_target``: see :data:`COMPUTE_CONVENTION`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from statistics import median
from typing import Any

from tuner.bench.lr import GRID_POINTS, TASKS, BenchConfig, run_bench
from tuner.bench.lr_report import median_or_none, summarize
from tuner.bench.mixture_report import machine_info
from tuner.bench.peers_optim import NOT_APPLICABLE, PRODIGY_SCHEDULE, execute_optimizer
from tuner.bench.peers_ray import (
    POPULATION,
    PopulationSpec,
    ensure_ray,
    ray_running,
    run_population,
    shutdown_ray,
)
from tuner.errors import ConfigError

QUICK_TASKS = ("digits", "nqm")
METHODS = (
    "tautune",
    "cosine-grid-best",
    "linear",
    "pbt",
    "pb2",
    "schedulefree",
    "schedulefree@grid-peak",
    "schedulefree@10x-grid-peak",
    "prodigy",
)
SF_SGD_FACTOR = 10.0
"""On SGD tasks schedule-free also runs at this multiple of the grid's peak: its authors
advise SGD LRs "10x-50x larger than classical rates" (the README of ``schedulefree``)."""
COMPUTE_CONVENTION = {
    "unit": "optimizer steps of the task's model, summed over every run the method needs",
    "tautune": "its own run: T steps, exploration included",
    "cosine-grid-best": "the whole grid, 6 T: its peak is known only after all six runs end",
    "linear": "6 T for the grid that chose its peak, plus its own steps to target",
    "schedulefree@grid-peak": "6 T for the grid that chose its LR, plus its own steps",
    "schedulefree@10x-grid-peak": "as schedulefree@grid-peak",
    "schedulefree": "its own steps (its LR is the prior tautune starts from, no tuning)",
    "prodigy": "its own steps (no tuning: lr=1.0)",
    "pbt": "population steps: every member's steps finished when the best member's lineage "
    "first reached the target (measured in order of report arrival); the population is "
    "stopped at 6 T population steps (the last report may overshoot by < report_every)",
    "pb2": "as pbt",
}
SF_10X = ("schedulefree@10x-grid-peak",)
TUNING = ("linear", "schedulefree@grid-peak", "schedulefree@10x-grid-peak")
"""Methods that need the grid before their own run (``6 T`` of tuning)."""


@dataclass(frozen=True)
class PeersConfig:
    """What the suite runs.

    Attributes:
        tasks: LR benchmark tasks (default: every one, held-out ones included; ``--quick``:
            digits and nqm).
        seeds: Seeds, the same for every method (default ``0,1,2``; quick ``0,1``).
        quick: Use the LR bench's quick step budgets.
        jobs: Non-Ray runs in parallel (Ray always gets 2 CPUs and runs one population at
            a time).
    """

    tasks: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    quick: bool = False
    jobs: int = 1

    @property
    def task_list(self) -> tuple[str, ...]:
        """The tasks to run, defaults filled in; :class:`ConfigError` for unknown ones."""
        chosen = self.tasks or (QUICK_TASKS if self.quick else tuple(TASKS))
        unknown = [t for t in chosen if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown peers task(s) {unknown}; choose from {sorted(TASKS)}")
        return tuple(chosen)

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds to run, defaults filled in."""
        return self.seeds or ((0, 1) if self.quick else (0, 1, 2))

    def check(self) -> None:
        """Raise :class:`ConfigError` unless the config can run."""
        self.task_list  # noqa: B018 (validates)
        if self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if len(set(self.seed_list)) != len(self.seed_list):
            raise ConfigError(f"seeds must be distinct, got {self.seed_list}")


def command_line(cfg: PeersConfig, json_path: str = "PATH") -> str:
    """The ``tautune bench peers`` command that runs ``cfg``."""
    parts = ["tautune bench peers", f"--json {json_path}"]
    if cfg.quick:
        parts.append("--quick")
    if cfg.tasks:
        parts.append("--tasks " + ",".join(cfg.tasks))
    if cfg.seeds:
        parts.append("--seeds " + ",".join(map(str, cfg.seeds)))
    if cfg.jobs != 1:
        parts.append(f"--jobs {cfg.jobs}")
    return " ".join(parts)


def population_spec(method: str, bench: BenchConfig, seed: int) -> PopulationSpec:
    """The PBT/PB2 run of ``bench``'s task: ``6 T`` steps in all, perturbing every ~``T/10``."""
    t, total = bench.spec, bench.total_steps
    report = max(1, total // 30)
    return PopulationSpec(
        method=method,
        task=bench.task,
        seed=seed,
        population_steps=GRID_POINTS * total,
        report_every=report,
        perturb_every=max(1, round(total / 10 / report)),
        lr_bounds=(t.grid[0] / 4, t.grid[-1] * 4),
        warmup=t.warmup_steps,
    )


def _pool(
    jobs: int,
    calls: Sequence[tuple[Any, ...]],
    progress: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """``execute_optimizer(*call)`` for each call, ``jobs`` at a time, in order."""
    out: list[dict[str, Any]] = []
    if jobs == 1:
        for call in calls:
            out.append(execute_optimizer(*call))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        for fut in [pool.submit(execute_optimizer, *c) for c in calls]:
            out.append(fut.result())
            if progress:
                progress(out[-1])
    return out


def run_task(
    cfg: PeersConfig, task: str, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every method on one task; the task's JSON document."""
    start = time.perf_counter()
    seeds = cfg.seed_list
    bench = BenchConfig(
        task=task,
        seeds=seeds,
        quick=cfg.quick,
        jobs=cfg.jobs,
        methods=("tautune", "cosine-grid-best", "linear"),
    )
    grid_wall: dict[int, float] = {}

    def seen(run: dict[str, Any]) -> None:
        if run["method"].startswith("cosine@"):
            grid_wall[run["seed"]] = grid_wall.get(run["seed"], 0.0) + run["wall_s"]
        if progress:
            progress(run)

    base = run_bench(bench, seen)
    rows = [dict(r) for r in base["results"]]
    for r in rows:
        if r["method"] == "cosine-grid-best":
            r["info"] = {**r["info"], "grid_wall_s": round(grid_wall.get(r["seed"], 0.0), 3)}
    t, total = bench.spec, bench.total_steps
    peak = next(r["info"]["peak"] for r in rows if r["method"] == "cosine-grid-best")
    not_applicable = []
    if task == "nqm":
        for method in ("schedulefree", "schedulefree@grid-peak", *SF_10X, "prodigy"):
            reason = NOT_APPLICABLE[method.split("@")[0]]
            not_applicable.append({"method": method, "reason": reason})
    else:
        centre = {"lr_from": "the grid's geometric centre, tautune's starting LR"}
        at_peak = {"lr_from": "cosine-grid-best's peak"}
        calls = [
            *[(bench, "schedulefree", "schedulefree", s, t.centre, centre) for s in seeds],
            *[(bench, "schedulefree", "schedulefree@grid-peak", s, peak, at_peak) for s in seeds],
        ]
        if t.optimizer == "sgd":
            ten = {"lr_from": f"{SF_SGD_FACTOR:g} x cosine-grid-best's peak (authors' SGD advice)"}
            calls += [(bench, "schedulefree", *SF_10X, s, SF_SGD_FACTOR * peak, ten) for s in seeds]
        else:
            reason = "AdamW task: the authors advise 1x-10x schedule-based AdamW LRs for "
            reason += "schedule-free AdamW, which schedulefree@grid-peak covers; not run"
            not_applicable.append({"method": SF_10X[0], "reason": reason})
        prodigy = {"schedule": PRODIGY_SCHEDULE}
        calls += [(bench, "prodigy", "prodigy", s, 1.0, prodigy) for s in seeds]
        rows += _pool(cfg.jobs, calls, progress)
    ray_start = time.perf_counter()
    ensure_ray()
    ray_init = time.perf_counter() - ray_start
    for method in ("pbt", "pb2"):
        for seed in seeds:
            rows.append(run_population(population_spec(method, bench, seed)))
            if progress:
                progress(rows[-1])
    has_10x = any(r["method"] == SF_10X[0] for r in rows)
    spec = population_spec("pbt", bench, seeds[0])
    config = {
        **base["config"],
        "population": POPULATION,
        "population_steps_budget": spec.population_steps,
        "member_steps_nominal": spec.population_steps // POPULATION,
        "pbt_report_every": spec.report_every,
        "pbt_perturbation_interval": spec.perturbation_steps,
        "schedulefree_lr": None if task == "nqm" else t.centre,
        "schedulefree_grid_peak_lr": None if task == "nqm" else peak,
        "schedulefree_10x_grid_peak_lr": SF_SGD_FACTOR * peak if has_10x else None,
        "prodigy": None if task == "nqm" else f"lr=1.0, {PRODIGY_SCHEDULE} decay",
    }
    doc = summarize({**base, "config": config, "results": rows})
    doc.pop("done_when", None)
    doc["not_applicable"] = not_applicable
    doc["compute_convention"] = COMPUTE_CONVENTION
    doc["ray_init_s"] = round(ray_init, 1)
    doc["bench_wall_s"] = round(time.perf_counter() - start, 1)
    doc["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    add_compute(doc, total)
    return doc


def add_compute(doc: dict[str, Any], total: int) -> None:
    """Add each run's ``compute_to_target`` and ``total_compute`` (see
    :data:`COMPUTE_CONVENTION`) and their medians to the summary."""
    grid = GRID_POINTS * total
    for r in doc["results"]:
        stt, method = r["steps_to_target"], r["method"]
        if method == "cosine-grid-best":
            r["compute_to_target"] = None if stt is None else grid
            r["total_compute"] = grid
        elif method in TUNING:
            r["compute_to_target"] = None if stt is None else grid + stt
            r["total_compute"] = grid + r["total_steps"]
        else:
            r["compute_to_target"] = stt
            r["total_compute"] = r["total_steps"]
    for row in doc["summary"]:
        runs = [r for r in doc["results"] if r["method"] == row["method"]]
        ctt = [r["compute_to_target"] for r in runs]
        row["compute_to_target"] = ctt
        row["compute_to_target_median"] = median_or_none(ctt)
        row["total_compute_median"] = median(r["total_compute"] for r in runs)
    doc["compute_to_target"] = {
        row["method"]: row["compute_to_target_median"] for row in doc["summary"]
    }


def run_peers(
    cfg: PeersConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
    json_path: str = "PATH",
) -> dict[str, Any]:
    """Run the suite; the JSON document (``tasks``: one LR-bench-shaped document each).

    Args:
        cfg: Tasks, seeds, quick, jobs.
        progress: Called with each finished run's row.
        json_path: The output path, only to record the command line.

    Starts a local Ray (2 CPUs) before the first PBT run unless one is up, and shuts down
    the one it started at the end.

    Raises:
        ConfigError: An unknown task, repeated seeds or ``jobs < 1``.
    """
    cfg.check()
    start = time.perf_counter()
    machine = machine_info()
    command = command_line(cfg, json_path)
    docs = []
    ray_was_up = ray_running()
    try:
        for task in cfg.task_list:
            doc = run_task(cfg, task, progress)
            doc["command"] = command
            docs.append(doc)
    finally:
        if not ray_was_up and ray_running():
            shutdown_ray()
    return {
        "benchmark": "peers",
        "command": command,
        "machine": machine,
        "config": {
            "tasks": list(cfg.task_list),
            "seeds": list(cfg.seed_list),
            "quick": cfg.quick,
            "jobs": cfg.jobs,
            "ray_cpus": 2,
        },
        "methods": list(METHODS),
        "compute_convention": COMPUTE_CONVENTION,
        "bench_wall_s": round(time.perf_counter() - start, 1),
        "tasks": docs,
    }
