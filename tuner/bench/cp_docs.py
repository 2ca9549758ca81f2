"""docs/benchmarks-control-plane.md, generated from ``tautune bench control-plane`` JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def _target_rows(targets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    for name, t in targets.items():
        limit = next((f"{v}" for k, v in t.items() if k.startswith("limit")), "–")
        shown = {
            k: v
            for k, v in t.items()
            if k != "met" and not k.startswith("limit") and not isinstance(v, dict | list)
        }
        nested = {k: v for k, v in t.items() if isinstance(v, dict)}
        measured = ", ".join(f"{k} {v}" for k, v in shown.items())
        if nested:
            measured += "; " + "; ".join(f"{k} {json.dumps(v)}" for k, v in nested.items())
        rows.append(f"| `{name}` | {measured} | {limit} | {_verdict(bool(t['met']))} |")
    return rows


def _scale_rows(scale: Mapping[str, Any]) -> list[str]:
    rows = [
        "| workers | jobs | p50 ms | p99 ms | Redis cores | bytes/job | bytes/1000 reports "
        "| held |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lv in scale.get("levels", []):
        lat, mem = lv["latency_ms"], lv["memory"]
        held = "yes" if lv["held"] else "no: " + ", ".join(lv.get("not_held_because") or [])
        rows.append(
            f"| {lv['workers']} | {lv['jobs']} | {lat.get('p50')} | {lat.get('p99')} | "
            f"{lv['redis_cpu']:.2f} | {mem['per_job_bytes']:,} | "
            f"{mem['per_1000_reports_bytes']:,} | {held} |"
        )
    return rows


def _bo_rows(bo: Mapping[str, Any]) -> list[str]:
    rows = [
        "| observations | kept | observe + suggest ms | best_lr ms |",
        "|---|---|---|---|",
    ]
    for r in bo.get("bounded", []):
        rows.append(
            f"| {r['observations']} | {r['kept']} | {r['observe_suggest_ms']:.0f} | "
            f"{r['best_lr_ms']:.0f} |"
        )
    for r in bo.get("unbounded", []):
        rows.append(
            f"| {r['observations']} | all (no window) | {r['observe_suggest_ms']:.0f} | – |"
        )
    return rows


def render(doc: Mapping[str, Any], plot: str | None) -> str:
    """The page for one control-plane suite document."""
    m = doc["machine"]
    usage = doc.get("usage", {})
    busy = sorted({round(u.get("machine_busy_cores", 0.0), 2) for u in usage.values()})
    res = doc["results"]
    lines = [
        "# Control-plane benchmark",
        "",
        f"Generated from the JSON written by `{doc.get('command', 'tautune bench control-plane')}`"
        f" ({doc['wall_s']:.0f} s); nothing here is edited by hand.",
        "",
        f"**Machine:** {m['cpu_model']}, {m['cpus_usable']} usable CPUs, "
        f"{m['mem_total_gib']} GiB, {m['platform']}, Python {m['python']}, torch {m['torch']}, "
        f"Redis {m['redis_version']}. Load average at the start: {m['load_avg_1m']}; whole-"
        f"machine CPU busy during the sections (cores): {busy}. Where that is near the core "
        "count, other work shared the machine and latencies include its preemptions.",
        "",
        "## Targets",
        "",
        *_target_rows(doc["targets"]),
        "",
    ]
    if "scale" in res:
        lines += [
            "## Scale",
            "",
            "Simulated workers report at 1 Hz each (an append and a claim per tick, with "
            "the store's own Lua scripts and keys) to one embedded Redis, 100 workers per "
            "job; a level is held when p99 latency stays under 100 ms and every report is "
            "stored.",
            "",
            *_scale_rows(res["scale"]),
            "",
        ]
        if plot:
            lines += [f"![latency and memory against workers]({plot})", ""]
    if "bo_cost" in res:
        lines += [
            "## BO cost",
            "",
            "Time of one decision's GP work against the number of observations made; the "
            "surrogate keeps a window of the newest ones, which bounds it.",
            "",
            *_bo_rows(res["bo_cost"]),
            "",
        ]
    return "\n".join(lines)


def write_page(doc: Mapping[str, Any], md: Path, plot: Path | None) -> Path:
    """Write the page next to ``plot`` (linked relatively) and return its path."""
    rel = None
    if plot is not None:
        try:
            rel = str(plot.resolve().relative_to(md.resolve().parent))
        except ValueError:
            rel = str(plot)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render(doc, rel) + "\n")
    return md
