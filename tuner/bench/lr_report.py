"""Turn an LR benchmark's runs into its JSON document: target, steps to it, medians, verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

NQM_WITHIN = 0.10
"""The issue's bar on nqm: tautune's final expected loss within 10% of the optimum."""


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median where a missing value counts as worse than any other (never reached)."""
    ranked = sorted(values, key=lambda v: (v is None, v if v is not None else 0.0))
    mid = ranked[(len(ranked) - 1) // 2]
    if len(ranked) % 2 == 0 and ranked[len(ranked) // 2] is None:
        return None
    if mid is None:
        return None
    if len(ranked) % 2 == 0:
        other = ranked[len(ranked) // 2]
        assert other is not None
        return (mid + other) / 2
    return mid


def steps_to(curve: Sequence[Sequence[Any]], target: float) -> int | None:
    """First kept point of ``[step, loss, kept]`` at or below ``target``."""
    for point in curve:
        if point[2] and point[1] <= target:
            return int(point[0])
    return None


def summarize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in ``target_loss``, each run's ``steps_to_target``, ``summary``, ``done_when``."""
    doc = dict(raw)
    runs = [dict(r) for r in raw["results"]]
    targets = [r["final_loss"] for r in runs if r["method"] == raw["target_method"]]
    target = median(targets) if targets else None
    for r in runs:
        curve = r.pop("all_curve", None) or [[s, v, True] for s, v in r["curve"]]
        r["steps_to_target"] = steps_to(curve, target) if target is not None else None
    order: list[str] = []
    for r in runs:
        if r["method"] not in order:
            order.append(r["method"])
    optimal = [r["final_loss"] for r in runs if r["method"] == "optimal"]
    opt = median(optimal) if optimal else None
    summary = []
    for method in order:
        rows = [r for r in runs if r["method"] == method]
        finals = [r["final_loss"] for r in rows]
        stt = [r["steps_to_target"] for r in rows]
        fm = median(finals)
        summary.append(
            {
                "method": method,
                "final_loss_median": fm,
                "final_loss_min": min(finals),
                "final_loss_max": max(finals),
                "steps_to_target": stt,
                "steps_to_target_median": median_or_none(stt),
                "reached": f"{sum(s is not None for s in stt)}/{len(stt)}",
                "exploration_steps_median": median(r["exploration_steps"] for r in rows),
                "wall_s_median": median(r["wall_s"] for r in rows),
                "ratio_to_optimal": fm / opt if opt else None,
            }
        )
    doc["results"] = runs
    doc["target_loss"] = target
    doc["summary"] = summary
    doc["done_when"] = done_when(doc["task"], summary, runs, raw.get("exploration_floor"))
    return doc


def exploration_floor(
    task: str, total_steps: int, runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """On nqm: the optimal schedule over the steps tautune kept (its median exploration
    steps taken off), over the ``optimal`` run's loss for all steps. No method that throws
    those steps away can do better."""
    expl = [r["exploration_steps"] for r in runs if r["method"] == "tautune"]
    opt = [r["info"]["optimal_final_loss"] for r in runs if r["method"] == "optimal"]
    if task != "nqm" or not expl or not opt:
        return None
    from tuner.bench.nqm import NQMConfig, optimal_schedule

    steps = int(median(expl))
    kept = optimal_schedule(NQMConfig(), total_steps - steps).final_loss
    return {"exploration_steps": steps, "optimal_kept_final_loss": kept, "ratio": kept / opt[0]}


def done_when(
    task: str,
    summary: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    floor: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The issue's verdict for ``task``, from the medians. ``floor`` (nqm): the optimal
    schedule's loss over the steps tautune kept, as a ratio to the optimum over all steps:
    the best any method that explores that many steps could do."""
    rows = {r["method"]: r for r in summary}
    if "tautune" not in rows or "cosine-grid-best" not in rows:
        return None
    tt, cos = rows["tautune"], rows["cosine-grid-best"]
    out: dict[str, Any] = {
        "tautune_final_median": tt["final_loss_median"],
        "cosine_grid_best_final_median": cos["final_loss_median"],
        "beats_cosine_grid_best": tt["final_loss_median"] < cos["final_loss_median"],
    }
    if "autolrs-classic" in rows:
        classic = rows["autolrs-classic"]["final_loss_median"]
        out["autolrs_classic_final_median"] = classic
        out["beats_autolrs_classic"] = tt["final_loss_median"] < classic
    if task == "nqm" and "optimal" in rows:
        ratio = tt["ratio_to_optimal"]
        out["ratio_to_optimal"] = ratio
        out["within_10pct_of_optimal"] = ratio is not None and ratio <= 1 + NQM_WITHIN
        if floor:
            out["best_possible_ratio_after_tautune_exploration"] = floor["ratio"]
        out["met"] = bool(
            out["within_10pct_of_optimal"]
            and out["beats_cosine_grid_best"]
            and out.get("beats_autolrs_classic", False)
        )
        return out
    cos_runs = [r for r in runs if r["method"] == "cosine-grid-best"]
    if not cos_runs:
        return out
    single = int(cos_runs[0]["total_steps"])
    whole = int(cos_runs[0]["info"].get("grid_total_steps", single))
    stt = tt["steps_to_target_median"]
    out.update(
        {
            "tautune_steps_to_target_median": stt,
            "grid_best_run_steps": single,
            "grid_total_steps": whole,
            "fewer_steps_than_grid_best_run": stt is not None and stt < single,
            "fewer_steps_than_whole_grid": stt is not None and stt < whole,
        }
    )
    out["met"] = out["fewer_steps_than_grid_best_run"]
    return out
