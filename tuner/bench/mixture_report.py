"""From a mixture benchmark's runs to its results: targets, grid choice, medians, speedups.

:func:`summarize` turns the raw runs (:func:`tuner.bench.mixture_run.train_run` records)
into the benchmark's JSON: ``target_loss`` (median over seeds of uniform's final target
loss), ``results`` (one row per method and seed, in the shape of the LR benchmarks plus
``speedup``, ``weights`` and, for ``static-grid-best``, the grid point and its cost),
``summary`` (medians and spread per method) and, for the ``mixture`` task, ``done_when``.
Every number comes from the runs; nothing is estimated. :mod:`tuner.bench.mixture_docs`
writes the markdown and the plot.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.bench.mixture_run import steps_to_target

GRID_BEST = "static-grid-best"
SPEEDUP_REQUIRED = 1.25
"""The issue's bar: tautune reaches uniform's final target loss in 1.25x fewer steps."""


def machine_info() -> dict[str, Any]:
    """Where the benchmark ran: OS, CPU, core count, load, Python and torch versions, and
    the vector ISA torch's CPU kernels use: hosts that report the same CPU name can differ
    in it, and then round differently, which moves chaotic runs (digits) by tens of %."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads_per_run": 1,
    }


def target_curve(run: Mapping[str, Any], weights: Mapping[str, float]) -> list[float]:
    """The run's target loss at each measured step (weighted mean of domain losses)."""
    val = run["curve"]["val"]
    total = sum(weights.values())
    n = len(run["curve"]["step"])
    return [sum(w * val[d][i] for d, w in weights.items()) / total for i in range(n)]


def _median(values: Sequence[float | None]) -> float | None:
    """Median with ``None`` (never reached) ranked worst; ``None`` if the median is one."""
    ranked = sorted(values, key=lambda v: (v is None, v if v is not None else 0.0))
    if not ranked:
        return None
    mid = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    if any(v is None for v in mid):
        return None
    return float(statistics.fmean(v for v in mid if v is not None))


def _median_up(values: Sequence[float | None]) -> float | None:
    """Median of speedups (``None``, never reached, ranks lowest)."""
    ranked = sorted(values, key=lambda v: (v is not None, v if v is not None else 0.0))
    mid = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    if not mid or any(v is None for v in mid):
        return None
    return float(statistics.fmean(v for v in mid if v is not None))


def evaluate(raw: Mapping[str, Any], target: str) -> dict[str, Any]:
    """Results, grid choice and summary of ``raw``'s runs for target ``target``."""
    weights = raw["targets"][target]
    runs = raw["runs"]
    curves = {(r["method"], r["seed"]): target_curve(r, weights) for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    goal = {s: curves[("uniform", s)][-1] for s in seeds}
    grid = [m for m in dict.fromkeys(r["method"] for r in runs) if m == "uniform" or "grid:" in m]
    finals = {m: [curves[(m, s)][-1] for s in seeds] for m in grid}
    best = min(grid, key=lambda m: (statistics.median(finals[m]), m != "uniform"))
    rows: list[dict[str, Any]] = []
    for r in runs:
        if "grid:" in r["method"]:
            continue
        rows.append(_row(r, curves[(r["method"], r["seed"])], goal[r["seed"]]))
        if r["method"] == "uniform" and len(grid) > 1:
            chosen = next(x for x in runs if x["method"] == best and x["seed"] == r["seed"])
            row = _row(chosen, curves[(best, r["seed"])], goal[r["seed"]])
            grid_runs = [x for x in runs if x["method"] in grid and x["seed"] == r["seed"]]
            row.update(
                method=GRID_BEST,
                grid_point=best,
                exploration_steps=(len(grid) - 1) * chosen["total_steps"],
                grid_cost_steps=len(grid) * chosen["total_steps"],
                grid_wall_s=round(sum(x["wall_s"] for x in grid_runs), 2),
            )
            rows.append(row)
    first = {s: next(x for x in rows if x["seed"] == s and x["method"] == "uniform") for s in seeds}
    for row in rows:
        base = first[row["seed"]]["steps_to_target"]
        stt = row["steps_to_target"]
        row["speedup"] = round(base / stt, 4) if stt and base else None
    methods = list(dict.fromkeys(row["method"] for row in rows))
    summary = [_summary(m, [x for x in rows if x["method"] == m]) for m in methods]
    return {
        "target": target,
        "target_domains": dict(weights),
        "target_loss": round(statistics.median(goal.values()), 5),
        "target_loss_by_seed": {str(s): round(v, 5) for s, v in goal.items()},
        "grid_best": best if len(grid) > 1 else None,
        "grid_medians": {m: round(statistics.median(v), 5) for m, v in finals.items()},
        "results": rows,
        "summary": summary,
    }


def _row(run: Mapping[str, Any], curve: Sequence[float], goal: float) -> dict[str, Any]:
    same = {"same_as": run["same_as"]} if "same_as" in run else {}
    return {
        **same,
        "method": run["method"],
        "seed": run["seed"],
        "final_loss": round(curve[-1], 5),
        "steps_to_target": steps_to_target(run["curve"]["step"], curve, goal),
        "total_steps": run["total_steps"],
        "exploration_steps": run["exploration_steps"],
        "wall_s": run["wall_s"],
        "weights": run["weights"],
    }


def _summary(method: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    finals = [r["final_loss"] for r in rows]
    stts = [r["steps_to_target"] for r in rows]
    out = {
        "method": method,
        "seeds": len(rows),
        "final_loss_median": _median(finals),
        "final_loss_min": min(finals),
        "final_loss_max": max(finals),
        "steps_to_target_median": _median(stts),
        "steps_to_target": stts,
        "reached": sum(s is not None for s in stts),
        "speedup_median": _median_up([r["speedup"] for r in rows]),
        "speedups": [r["speedup"] for r in rows],
        "exploration_steps": rows[0]["exploration_steps"],
        "wall_s_median": _median([r["wall_s"] for r in rows]),
    }
    for key in ("grid_point", "same_as"):
        if key in rows[0]:
            out[key] = rows[0][key]
    return out


def done_when(summary: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The issue's bar for ``tautune``: median speedup >= 1.25 and a median final loss no
    worse than ``static-grid-best``'s. ``None`` without both methods."""
    by = {row["method"]: row for row in summary}
    if "tautune" not in by or GRID_BEST not in by:
        return None
    speedup = by["tautune"]["speedup_median"]
    final, grid_final = by["tautune"]["final_loss_median"], by[GRID_BEST]["final_loss_median"]
    fast = speedup is not None and speedup >= SPEEDUP_REQUIRED
    no_worse = final <= grid_final
    return {
        "speedup_required": SPEEDUP_REQUIRED,
        "tautune_speedup_median": speedup,
        "speedup_met": fast,
        "tautune_final_median": final,
        "static_grid_best_final_median": grid_final,
        "no_worse_met": no_worse,
        "met": fast and no_worse,
    }


def summarize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The benchmark's JSON document from the raw runs (see the module docstring)."""
    targets = list(raw["targets"])
    main = evaluate(raw, targets[0])
    doc: dict[str, Any] = {"task": raw["task"], **main}
    if raw["task"] == "mixture":
        doc["done_when"] = done_when(main["summary"])
    others = {t: evaluate(raw, t) for t in targets[1:]}
    doc["other_targets"] = {
        t: {k: v for k, v in ev.items() if k != "results"} for t, ev in others.items()
    }
    doc.update({k: v for k, v in raw.items() if k not in doc})
    return doc


def merge(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One document from several runs of the same task, steps and tau (e.g. candidate
    batches of the default's selection, or more seeds for the same methods), summarised
    again over all their runs.

    A run that two documents share (``uniform`` in each batch) must agree to the last
    digit: runs are deterministic, so a mismatch means they are not comparable. Every
    method must have run every seed of the merged document, so medians compare like with
    like.

    Raises:
        ValueError: Tasks, steps or tau differ, a shared run does not agree, or a method
            lacks some of the seeds.
    """
    first = docs[0]
    key = ("task", "steps", "tau")
    want = (first["task"], first["config"]["steps"], first["config"]["tau"])
    runs: dict[tuple[str, int], Mapping[str, Any]] = {}
    controllers: dict[str, Any] = {}
    for doc in docs:
        got = (doc["task"], doc["config"]["steps"], doc["config"]["tau"])
        if got != want:
            raise ValueError(f"cannot merge {got} into {want} ({', '.join(key)})")
        controllers.update(doc["specs"]["controllers"])
        for run in doc["runs"]:
            at = (run["method"], run["seed"])
            if at in runs and runs[at]["curve"] != run["curve"]:
                raise ValueError(f"run {at} differs between documents: not the same setup")
            runs.setdefault(at, run)
    seeds = sorted({seed for _, seed in runs})
    for method in dict.fromkeys(m for m, _ in runs):
        missing = [s for s in seeds if (method, s) not in runs]
        if missing:
            raise ValueError(f"method {method!r} has no runs for seeds {missing}")
    raw = {k: v for k, v in first.items() if k in _RAW_KEYS}
    raw["config"] = {**first["config"], "seeds": seeds}
    raw["specs"] = {**first["specs"], "controllers": controllers}
    raw["command"] = " ; ".join(dict.fromkeys(d["command"] for d in docs))
    raw["bench_wall_s"] = round(sum(d["bench_wall_s"] for d in docs), 1)
    raw["runs"] = list(runs.values())
    return summarize(raw)


_RAW_KEYS = ("task", "arms", "targets", "good_order", "config", "machine")
