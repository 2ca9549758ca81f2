"""``tautune bench mixture`` / ``bench curriculum``: data-mixture methods side by side.

Every method trains the same model on the same task (:mod:`workers.tasks.mixture_lm`) for
the same steps, once per seed; the seed fixes the model's initialisation and the draws.
Methods:

- ``uniform``: equal weights throughout; its final target loss is what the others race to.
- ``static-grid-best``: the best fixed mixture of a small grid (uniform, each arm at half
  the mass, each arm dropped: ``2K + 1`` runs per seed), chosen by median final target loss
  over the seeds. Choosing it costs the whole grid; ``exploration_steps`` counts the runs
  besides the chosen one.
- ``odm``, ``sec``, ``exp3s``: the bandits with their defaults (``sec`` with the
  ``learning_progress`` reward, since a language model has no advantages to report).
- ``tautune``: :data:`TAUTUNE_DEFAULT`.
- ``ordered`` (tasks with a known good order only): a fixed schedule that moves the
  half-mass emphasis from the easiest bucket to the hardest in ``K`` equal phases.

Bandits decide every ``tau`` steps (default ``max(20, steps // 20)``), all with the same
``tau``. ``python -m tuner.bench.mixture mixture --json out.json`` runs it without the CLI.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from multiprocessing import get_context
from typing import Any

from tuner.bench.mixture_report import machine_info, summarize
from tuner.bench.mixture_run import RunSpec, train_run
from tuner.controllers.mixture import DEFAULT_MIXTURE, build_mixture
from tuner.errors import ConfigError
from workers.tasks.mixture_lm import TASKS, MixtureLMConfig, MixtureLMTask, build_task

METHODS = ("uniform", "static-grid-best", "odm", "sec", "exp3s", "tautune")
"""The methods every mixture benchmark runs, in report order."""

BASELINES: Mapping[str, Mapping[str, Any]] = {
    "odm": {"method": "odm"},
    "sec": {"method": "sec", "reward": "learning_progress"},
    "exp3s": {"method": "exp3s"},
}
"""Controller specs of the bandit baselines (``tau`` is added per benchmark)."""

TAUTUNE_DEFAULT: Mapping[str, Any] = dict(DEFAULT_MIXTURE)
"""The mixture controller tautune recommends, :data:`~tuner.controllers.mixture.DEFAULT_MIXTURE`
(``tau`` is the benchmark's, a twentieth of the run). Chosen among general candidates on
seeds the benchmark does not report (``docs/benchmarks-mixture.md``); it names no arm."""

EMPHASIS = 0.5
"""Weight of the emphasised arm in the grid's "+arm" points and the ``ordered`` schedule."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark invocation.

    Attributes:
        task: ``"mixture"`` or ``"curriculum"``.
        seeds: Run seeds (medians are over them).
        steps: Optimizer steps per run.
        tau: Bandit stage length in steps; ``None``: ``max(20, steps // 20)``.
        eval_every: Steps between validation losses; ``None``: ``max(10, tau // 2)``.
        quick: CI-size data (smaller validation sets) with the defaults below.
        jobs: Runs trained at once, each in its own process with one torch thread.
        methods: Methods to run (``static-grid-best`` implies ``uniform``).
        extra: More controller methods, name to spec (without arms), e.g. candidates.
    """

    task: str
    seeds: tuple[int, ...]
    steps: int
    tau: int | None = None
    eval_every: int | None = None
    quick: bool = False
    jobs: int = 1
    methods: tuple[str, ...] = METHODS
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def stage(self) -> int:
        return self.tau if self.tau is not None else max(20, self.steps // 20)

    @property
    def every(self) -> int:
        return self.eval_every if self.eval_every is not None else max(10, self.stage // 2)


FULL_STEPS = {"mixture": 1500, "curriculum": 1200}
QUICK_STEPS = 300
FULL_SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)


def default_methods(task: str) -> tuple[str, ...]:
    """:data:`METHODS`, and ``ordered`` for the curriculum (its order is known)."""
    return (*METHODS, "ordered") if task == "curriculum" else METHODS


def task_config(quick: bool) -> MixtureLMConfig:
    return MixtureLMConfig(val_chunks=64) if quick else MixtureLMConfig()


@cache
def cached_task(name: str, quick: bool) -> MixtureLMTask:
    return build_task(name, task_config(quick))


def grid_points(arms: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
    """``(label, weights)``: uniform, ``+arm`` (half the mass), ``-arm`` (none) per arm."""
    k = len(arms)
    points = [("uniform", {a: 1 / k for a in arms})]
    for arm in arms:
        rest = (1 - EMPHASIS) / (k - 1)
        points.append((f"grid:+{arm}", {a: EMPHASIS if a == arm else rest for a in arms}))
    for arm in arms:
        points.append((f"grid:-{arm}", {a: 0.0 if a == arm else 1 / (k - 1) for a in arms}))
    return points


def ordered_schedule(order: Sequence[str], steps: int) -> list[tuple[int, dict[str, float]]]:
    """Half the mass on each arm of ``order`` in turn, for ``steps / K`` steps each."""
    k = len(order)
    rest = (1 - EMPHASIS) / (k - 1)
    return [
        (i * steps // k, {a: EMPHASIS if a == arm else rest for a in order})
        for i, arm in enumerate(order)
    ]


def controller_specs(cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """Name to controller spec (with ``tau``) of the controller methods to run."""
    wanted = {**BASELINES, "tautune": TAUTUNE_DEFAULT}
    specs = {m: dict(s) for m, s in wanted.items() if m in cfg.methods}
    specs.update({m: dict(s) for m, s in cfg.extra.items()})
    for spec in specs.values():
        spec.setdefault("tau", cfg.stage)
    return specs


def aliases(cfg: BenchConfig) -> dict[str, str]:
    """Controller methods whose spec equals an earlier one's, to the earlier one: they are
    trained once and reported under both names (with ``same_as``)."""
    first: dict[str, str] = {}
    out = {}
    for m, spec in controller_specs(cfg).items():
        built = build_mixture({**spec, "arms": ["a", "b"]})
        key = f"{built.algorithm}:{built.config!r}"
        if key in first:
            out[m] = first[key]
        else:
            first[key] = m
    return out


def run_specs(cfg: BenchConfig, task: MixtureLMTask) -> list[RunSpec]:
    """Every run the benchmark trains, seed-major."""
    unknown = sorted(set(cfg.methods) - {*METHODS, "ordered"})
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {[*METHODS, 'ordered']}")
    steps, every = cfg.steps, cfg.every
    fixed = grid_points(task.arms)
    if "static-grid-best" not in cfg.methods:
        fixed = [p for p in fixed if p[0] == "uniform"]
    out = []
    for seed in cfg.seeds:
        out += [RunSpec(m, seed, steps, every, weights=w) for m, w in fixed]
        if "ordered" in cfg.methods and task.good_order:
            schedule = ordered_schedule(task.good_order, cfg.steps)
            out.append(RunSpec("ordered", seed, steps, every, schedule=schedule))
        same = aliases(cfg)
        for m, spec in controller_specs(cfg).items():
            if m not in same:
                out.append(RunSpec(m, seed, steps, every, controller=spec))
    return out


def _work(task_name: str, quick: bool, spec: RunSpec) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return train_run(cached_task(task_name, quick), spec)


def run_bench(
    cfg: BenchConfig, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Train every run of ``cfg`` and return the benchmark's JSON document."""
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown benchmark task {cfg.task!r}; choose one of {TASKS}")
    if not cfg.seeds or cfg.steps < 1 or cfg.jobs < 1:
        raise ConfigError(f"need seeds, steps >= 1 and jobs >= 1, got {cfg}")
    task = cached_task(cfg.task, cfg.quick)
    specs = run_specs(cfg, task)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if cfg.jobs == 1:
        for spec in specs:
            runs.append(_work(cfg.task, cfg.quick, spec))
            if progress:
                progress(runs[-1])
    else:
        with ProcessPoolExecutor(cfg.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_work, cfg.task, cfg.quick, s) for s in specs]
            for fut in futures:
                runs.append(fut.result())
                if progress:
                    progress(runs[-1])
    for alias, source in aliases(cfg).items():
        at = [i for i, r in enumerate(runs) if r["method"] == source]
        for i in reversed(at):
            runs.insert(i + 1, {**runs[i], "method": alias, "same_as": source})
    raw = {
        "task": cfg.task,
        "arms": list(task.arms),
        "targets": task.targets,
        "good_order": list(task.good_order),
        "config": {
            "seeds": list(cfg.seeds),
            "steps": cfg.steps,
            "tau": cfg.stage,
            "eval_every": cfg.every,
            "quick": cfg.quick,
            "jobs": cfg.jobs,
            "model": {**vars(task.cfg)},
        },
        "specs": {
            "controllers": controller_specs(cfg),
            "grid": dict(grid_points(task.arms)),
            "emphasis": EMPHASIS,
        },
        "machine": machine_info(),
        "command": command_line(cfg),
        "bench_wall_s": round(time.perf_counter() - start, 1),
        "runs": runs,
    }
    return summarize(raw)


def command_line(cfg: BenchConfig) -> str:
    parts = ["tautune", "bench", cfg.task, "--seeds", ",".join(map(str, cfg.seeds))]
    parts += ["--steps", str(cfg.steps)]
    if cfg.tau is not None:
        parts += ["--tau", str(cfg.tau)]
    if cfg.quick:
        parts.append("--quick")
    if cfg.jobs != 1:
        parts += ["--jobs", str(cfg.jobs)]
    if tuple(cfg.methods) != default_methods(cfg.task):
        parts += ["--methods", ",".join(cfg.methods)]
    for name, spec in cfg.extra.items():
        parts += ["--spec", f"'{name}={json.dumps(spec, separators=(',', ':'))}'"]
    return " ".join(parts)


def add_parser(subparsers: Any) -> None:
    """Register ``mixture`` and ``curriculum`` under ``tautune bench``'s subparsers (see
    :func:`tuner.bench.mixture_cli.add_parser`)."""
    from tuner.bench.mixture_cli import add_parser as add

    add(subparsers)


if __name__ == "__main__":
    from tuner.bench.mixture_cli import main

    sys.exit(main())
