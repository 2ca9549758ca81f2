"""The LR benchmarks: ``tautune bench nqm|charlm|digits --json PATH``.

Every method trains the same task for the same number of steps (exploration included),
from the same seeds, on the same machine:

- ``cosine-grid-best``: cosine decay to 0 from the best peak of a 6-point log grid (best by
  median final loss over the seeds); the grid's other runs are kept in its ``info`` and
  their steps counted in ``grid_total_steps``.
- ``linear`` and ``constant``: linear decay to 0 from that peak, and that peak throughout.
- ``tautune``: :class:`~tuner.controllers.explore_lr.ExploreLR` (what the default LR method,
  ``auto``, runs when the workers can restore, as these runs can),
  started at the grid's geometric centre, searching the grid's range widened 4× each way.
- ``autolrs-classic``: :class:`~tuner.controllers.autolrs.AutoLRSClassic` over the same
  range, ``tau = total_steps / 16``.
- ``optimal`` (nqm only): the per-step schedule minimising NQM's exact final expected loss.

Warmup, where a task has one, is the same linear warmup for every method.

Three more tasks are *held out* (``tautune bench held-out``): a CNN on the digits, the
digits MLP under AdamW, and the byte-level LM under SGD. They were added after the
controller's defaults had been chosen on nqm, charlm and digits, to show how it does on
training it was not tuned on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from multiprocessing import get_context
from statistics import median
from typing import Any

from tuner.bench.lr_run import RunResult, Trainable, run_controller, run_schedule
from tuner.bench.lr_tasks import (
    DEFAULT_SEEDS,
    GRID_POINTS,
    HELD_OUT_TASKS,
    MAIN_TASKS,
    TASKS,
    LRTask,
)
from tuner.bench.mixture_report import machine_info
from tuner.errors import ConfigError

__all__ = [
    "CONTROLLERS",
    "DEFAULT_SEEDS",
    "GRID_POINTS",
    "HELD_OUT_TASKS",
    "MAIN_TASKS",
    "SCHEDULES",
    "TASKS",
    "BenchConfig",
    "LRTask",
    "RunSpec",
    "execute",
    "make_trainable",
    "run_bench",
]

CONTROLLERS = ("tautune", "autolrs-classic")
SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class BenchConfig:
    task: str
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    quick: bool = False
    jobs: int = 1
    methods: tuple[str, ...] = ()
    steps: int | None = None

    @property
    def spec(self) -> LRTask:
        try:
            return TASKS[self.task]
        except KeyError:
            raise ConfigError(
                f"unknown LR benchmark {self.task!r}; choose from {sorted(TASKS)}"
            ) from None

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return self.spec.quick_steps if self.quick else self.spec.steps

    @property
    def eval_every(self) -> int:
        return max(1, self.total_steps // self.spec.evals)


@dataclass(frozen=True)
class RunSpec:
    """One run: ``kind`` is ``cosine``, ``linear``, ``constant``, ``optimal`` or a controller."""

    method: str
    kind: str
    seed: int
    peak: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


# -- building runs ---------------------------------------------------------------------


@cache
def _torch_task(name: str) -> Any:
    """The model and data of ``name``; the held-out variants share their base task's data
    (``charlm-sgd`` differs from ``charlm`` only in its optimizer)."""
    if name in ("charlm", "charlm-sgd"):
        from workers.tasks.charlm import CharLMConfig, CharLMTask

        return CharLMTask(CharLMConfig(hidden=256, max_bytes=1_000_000))
    if name == "bytegpt":
        from workers.tasks.bytegpt import ByteGPTTask

        return ByteGPTTask()
    from workers.tasks.digits import DigitsConfig, DigitsTask

    return DigitsTask(DigitsConfig(arch="cnn", hidden=64) if name == "digits-cnn" else None)


def make_trainable(task: str, seed: int) -> Trainable:
    if task == "nqm":
        from tuner.bench.nqm import NQM

        return NQMTrainable(NQM(seed=seed))
    from tuner.bench.lr_trainable import TorchTrainable

    return TorchTrainable(_torch_task(task), TASKS[task].optimizer, seed)


class NQMTrainable:
    """:class:`~tuner.bench.nqm.NQM` as a :class:`Trainable`; it evaluates the exact loss."""

    def __init__(self, nqm: Any) -> None:
        self.nqm = nqm

    def step(self, lr: float) -> float:
        return float(self.nqm.step(lr))

    def evaluate(self) -> float:
        return float(self.nqm.expected_loss())

    def save(self) -> Any:
        return self.nqm.state_dict()

    def load(self, state: Any) -> None:
        self.nqm.load_state_dict(state)


def schedule_fn(kind: str, peak: float, total: int, warmup: int) -> Callable[[int], float]:
    """The LR of step ``n`` for a fixed schedule: linear warmup, then ``kind``."""

    def lr(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return peak * 0.5 * (1 + math.cos(math.pi * frac))
        if kind == "linear":
            return peak * (1 - frac)
        return peak

    return lr


def controller_for(method: str, cfg: BenchConfig, seed: int) -> Any:
    t = cfg.spec
    lo, hi = t.grid[0] / 4, t.grid[-1] * 4
    if method == "tautune":
        from tuner.controllers.explore_lr import ExploreConfig, ExploreLR

        return ExploreLR(
            ExploreConfig(
                init_lr=t.centre,
                lr_min=lo,
                lr_max=hi,
                total_steps=cfg.total_steps,
                warmup_steps=t.warmup_steps,
                seed=seed,
            )
        )
    if method == "autolrs-classic":
        from tuner.controllers.autolrs import AutoLRSClassic, AutoLRSConfig

        return AutoLRSClassic(
            AutoLRSConfig(
                lr_min=lo,
                lr_max=hi,
                tau=max(40, cfg.total_steps // 16),
                warmup_steps=t.warmup_steps,
                total_steps=cfg.total_steps,
                seed=seed,
            )
        )
    raise ConfigError(f"unknown controller method {method!r}; choose from {CONTROLLERS}")


def execute(cfg: BenchConfig, spec: RunSpec) -> dict[str, Any]:
    """Train one run and return its raw result (``to_json(None)`` plus the full curve)."""
    import torch

    torch.set_num_threads(1)
    t, total = cfg.spec, cfg.total_steps
    trainable = make_trainable(cfg.task, spec.seed)
    result: RunResult
    if spec.kind in CONTROLLERS:
        base = schedule_fn("constant", t.centre, total, t.warmup_steps)
        controller = controller_for(spec.kind, cfg, spec.seed)
        result = run_controller(
            spec.method,
            trainable,
            controller,
            base,
            total_steps=total,
            eval_every=cfg.eval_every,
            seed=spec.seed,
        )
        result.info["stages"] = getattr(controller, "stages", [])
    elif spec.kind == "optimal":
        from tuner.bench.nqm import NQMConfig, optimal_schedule

        opt = optimal_schedule(NQMConfig(), total)
        lrs = [float(x) for x in opt.lrs]
        result = run_schedule(
            spec.method,
            trainable,
            lambda n: lrs[n],
            total_steps=total,
            eval_every=cfg.eval_every,
            seed=spec.seed,
            info={"optimal_final_loss": opt.final_loss},
        )
    else:
        assert spec.peak is not None
        result = run_schedule(
            spec.method,
            trainable,
            schedule_fn(spec.kind, spec.peak, total, t.warmup_steps),
            total_steps=total,
            eval_every=cfg.eval_every,
            seed=spec.seed,
            info={"peak": spec.peak, **spec.info},
        )
    out = result.to_json(None)
    out["all_curve"] = [[s, v, k] for s, v, k in result.curve]
    return out


def _run_all(
    cfg: BenchConfig,
    specs: Sequence[RunSpec],
    progress: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    if cfg.jobs == 1:
        runs = []
        for spec in specs:
            runs.append(execute(cfg, spec))
            if progress:
                progress(runs[-1])
        return runs
    with ProcessPoolExecutor(cfg.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(execute, cfg, s) for s in specs]
        out = []
        for fut in futures:
            out.append(fut.result())
            if progress:
                progress(out[-1])
        return out


def methods_of(cfg: BenchConfig) -> tuple[str, ...]:
    default: tuple[str, ...] = ("tautune", "autolrs-classic", "cosine-grid-best", *SCHEDULES)
    if cfg.task == "nqm":
        default += ("optimal",)
    chosen = cfg.methods or default
    unknown = set(chosen) - set(default)
    if unknown:
        raise ConfigError(f"unknown methods {sorted(unknown)} for {cfg.task}; have {default}")
    return tuple(chosen)


def run_bench(
    cfg: BenchConfig, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Train every run of ``cfg`` and return the task's JSON document."""
    t = cfg.spec
    if not cfg.seeds or cfg.jobs < 1 or cfg.total_steps < 50:
        raise ConfigError(f"need seeds, jobs >= 1 and at least 50 steps, got {cfg}")
    methods = methods_of(cfg)
    start = time.perf_counter()
    grid_specs = [
        RunSpec(f"cosine@{peak:.3g}", "cosine", seed, peak) for peak in t.grid for seed in cfg.seeds
    ]
    other = [RunSpec(m, m, s) for m in methods if m in (*CONTROLLERS, "optimal") for s in cfg.seeds]
    first = _run_all(cfg, grid_specs + other, progress)
    grid_runs = first[: len(grid_specs)]
    by_peak: dict[float, list[float]] = {}
    for spec, run in zip(grid_specs, grid_runs, strict=True):
        assert spec.peak is not None
        by_peak.setdefault(spec.peak, []).append(run["final_loss"])
    best_peak = min(by_peak, key=lambda p: _nan_last(median(by_peak[p])))
    grid_medians = {f"{p:.6g}": median(v) for p, v in by_peak.items()}
    grid_total = GRID_POINTS * cfg.total_steps
    runs: list[dict[str, Any]] = []
    for spec, run in zip(grid_specs, grid_runs, strict=True):
        if spec.peak == best_peak:
            info = {"peak": best_peak, "grid": grid_medians, "grid_total_steps": grid_total}
            runs.append({**run, "method": "cosine-grid-best", "info": info})
    runs += first[len(grid_specs) :]
    fixed = [RunSpec(m, m, s, best_peak) for m in methods if m in SCHEDULES for s in cfg.seeds]
    runs += _run_all(cfg, fixed, progress)
    from tuner.bench.lr_report import exploration_floor, summarize

    raw: dict[str, Any] = {
        "task": cfg.task,
        "target_method": "cosine-grid-best",
        "machine": machine_info(),
        "config": {
            "seeds": list(cfg.seeds),
            "total_steps": cfg.total_steps,
            "optimizer": t.optimizer,
            "warmup_steps": t.warmup_steps,
            "grid": list(t.grid),
            "lr_bounds": [t.grid[0] / 4, t.grid[-1] * 4],
            "tautune_init_lr": t.centre,
            "autolrs_tau": max(40, cfg.total_steps // 16),
            "eval_every": cfg.eval_every,
            "quick": cfg.quick,
            "jobs": cfg.jobs,
        },
        "command": command_line(cfg),
        "bench_wall_s": round(time.perf_counter() - start, 1),
        "text": t.text,
        "results": runs,
    }
    floor = exploration_floor(cfg.task, cfg.total_steps, runs)
    if floor is not None:
        raw["exploration_floor"] = floor
    return summarize(raw)


def _nan_last(x: float) -> float:
    return math.inf if math.isnan(x) else x


def command_line(cfg: BenchConfig) -> str:
    parts = ["tautune bench", cfg.task]
    if cfg.quick:
        parts.append("--quick")
    if cfg.steps is not None:
        parts.append(f"--steps {cfg.steps}")
    if tuple(cfg.seeds) != (0, 1, 2) and not cfg.quick:
        parts.append("--seeds " + ",".join(map(str, cfg.seeds)))
    if cfg.methods:
        parts.append("--methods " + ",".join(cfg.methods))
    return " ".join(parts)
