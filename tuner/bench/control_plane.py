"""The control-plane benchmark (issue #6): agent overhead, boundary stall, decision latency,
scale on one Redis and Bayesian-optimization cost, as one JSON document.

``tautune bench control-plane --json PATH [--quick] [--plot PNG]`` runs it
(:mod:`tuner.bench.control_plane_cli`); :func:`run_suite` is the same from Python. Every
number in the document is measured by the run that wrote it; the targets are the issue's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.bench.cp_bo import BOConfig, measure_bo_cost
from tuner.bench.cp_common import Usage, machine_info
from tuner.bench.cp_latency import LatencyConfig, measure_decision_latency
from tuner.bench.cp_overhead import OverheadConfig, measure_agent_overhead
from tuner.bench.cp_scale import ScaleConfig, measure_scale
from tuner.bench.cp_stall import StallConfig, measure_boundary_stall
from tuner.errors import ConfigError

SECTIONS = ("agent_overhead", "boundary_stall", "decision_latency", "scale", "bo_cost")
OVERHEAD_LIMIT = 0.01
"""Target: the agent adds under 1% to a training step."""
SYNC_STALL_LIMIT_MS = 10.0
"""Target: a worker waits under 10 ms at a sync boundary (and not at all at an async one)."""


@dataclass(frozen=True)
class SuiteConfig:
    """What :func:`run_suite` runs: the sections and each one's settings."""

    quick: bool = False
    sections: tuple[str, ...] = SECTIONS
    overhead: OverheadConfig = field(default_factory=OverheadConfig)
    stall: StallConfig = field(default_factory=StallConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    bo: BOConfig = field(default_factory=BOConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown sections {unknown}; known: {list(SECTIONS)}")

    @classmethod
    def full(cls) -> SuiteConfig:
        """The full run (several minutes)."""
        return cls()

    @classmethod
    def quick_config(cls) -> SuiteConfig:
        """``--quick``: every section, small (about a minute on 2 cores)."""
        return cls(
            quick=True,
            overhead=OverheadConfig(steps_per_block=32, reps=12, step_kinds=("hash",)),
            stall=StallConfig(steps=300),
            latency=LatencyConfig(samples=50),
            scale=ScaleConfig(workers=(200, 1000), seconds=4.0, warmup_s=1.0),
            bo=BOConfig(observations=(8, 64, 256), reps=2, unbounded_max=0),
        )


def run_suite(
    cfg: SuiteConfig, progress: Callable[[str, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the sections of ``cfg`` in order; returns the benchmark's JSON document.

    Args:
        progress: Called with ``(section, result)`` after each section.
    """
    started = time.time()
    machine = machine_info()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "agent_overhead": lambda: measure_agent_overhead(cfg.overhead),
        "boundary_stall": lambda: measure_boundary_stall(cfg.stall),
        "decision_latency": lambda: measure_decision_latency(cfg.latency),
        "scale": lambda: measure_scale(cfg.scale),
        "bo_cost": lambda: measure_bo_cost(cfg.bo),
    }
    results: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    for section in SECTIONS:
        if section not in cfg.sections:
            continue
        meter = Usage()
        results[section] = runners[section]()
        usage[section] = meter.read()
        if progress is not None:
            progress(section, results[section])
    return {
        "suite": "control-plane",
        "quick": cfg.quick,
        "started_unix": round(started, 1),
        "wall_s": round(time.time() - started, 1),
        "machine": machine,
        "usage": usage,
        "config": asdict(cfg),
        "results": results,
        "targets": targets(results, cfg),
    }


def targets(results: dict[str, Any], cfg: SuiteConfig) -> dict[str, Any]:
    """The issue's targets, met or not, with the measured numbers they were judged on."""
    out: dict[str, Any] = {}
    overhead = results.get("agent_overhead")
    if overhead is not None:
        limit_us = OVERHEAD_LIMIT * cfg.overhead.step_s * 1e6
        for case in cfg.overhead.cases:
            rows = [r for r in overhead["results"] if r["case"] == case]
            worst = max(rows, key=lambda r: r["added_us"])
            out[f"agent_overhead_{case}"] = {
                "met": worst["added_us"] < limit_us,
                "added_us": worst["added_us"],
                "added_pct": worst["added_pct"],
                "step_kind": worst["step_kind"],
                "limit_us": limit_us,
                "by_step_kind": {r["step_kind"]: r["added_us"] for r in rows},
            }
    stall = results.get("boundary_stall")
    if stall is not None:
        for name, run in stall["scenarios"].items():
            per = run["stall_ms_per_boundary"]
            if name == "sync":
                out["boundary_stall_sync"] = {
                    "met": run["mean_stall_ms_per_boundary"] is not None
                    and run["mean_stall_ms_per_boundary"] < SYNC_STALL_LIMIT_MS,
                    "mean_ms_per_boundary": run["mean_stall_ms_per_boundary"],
                    "p99_ms_per_boundary": per.get("p99"),
                    # wall time of the scheduler step onto a boundary: the wait plus the
                    # flush and claims around it, which stall_s leaves out
                    "boundary_sched_step_p99_ms": run["boundary_sched_step_ms"].get("p99"),
                    "boundaries": run["boundaries"],
                    "limit_ms": SYNC_STALL_LIMIT_MS,
                }
            else:
                out[f"boundary_stall_{name}"] = {
                    "met": run["stall_total_ms"] == 0.0 and run["boundaries"] > 0,
                    "stall_total_ms": run["stall_total_ms"],
                    "boundaries_waited": run["boundaries_waited"],
                    "boundaries": run["boundaries"],
                    "agent": run["agent"],
                    "limit_ms": 0.0,
                }
    latency = results.get("decision_latency")
    if latency is not None:
        p99 = latency["latency_ms"].get("p99")
        out["decision_latency_within_sync_stall_limit"] = {
            "met": p99 is not None and p99 < SYNC_STALL_LIMIT_MS and latency["missed"] == 0,
            "p50_ms": latency["latency_ms"].get("p50"),
            "p99_ms": p99,
            "limit_ms": SYNC_STALL_LIMIT_MS,
            "note": "implied by the sync-boundary target: a worker waits for this latency",
        }
    scale = results.get("scale")
    if scale is not None:
        tried = [lv["workers"] for lv in scale["levels"]]
        out["scale_p99"] = {
            "met": bool(tried)
            and all(lv["held"] for lv in scale["levels"])
            and len(tried) == len(cfg.scale.workers),
            "largest_workers_held": scale["largest_held"],
            "stopped_at": scale["stopped_at"],
            "tried": tried,
            "p99_ms": {lv["workers"]: lv["latency_ms"].get("p99") for lv in scale["levels"]},
            "limit_ms": cfg.scale.p99_limit_ms,
            "cpus": scale["cpus"],
        }
    bo = results.get("bo_cost")
    if bo is not None:
        out["bo_cost_bounded"] = {
            "met": bo["bounded_ok"],
            "largest_over_other_full_windows": bo["largest_over_other_full_windows"],
            "limit_ratio": cfg.bo.bounded_ratio,
            "window": bo["default_window"],
            "observe_suggest_ms": {
                r["observations"]: r["observe_suggest_ms"] for r in bo["bounded"]
            },
        }
    return out
