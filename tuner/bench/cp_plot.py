"""The control-plane benchmark's figure: latency, Redis memory and CPU against the number of
simulated workers on one Redis (from the ``scale`` section of its JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_scale(scale: dict[str, Any], path: Path, title: str = "") -> Path:
    """Write the scale figure of ``scale`` (a ``results["scale"]`` dict) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = scale["levels"]
    workers = [lv["workers"] for lv in levels]
    fig, (ax_lat, ax_mem, ax_cpu) = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        ax_lat.plot(workers, [lv["latency_ms"].get(key) for lv in levels], style, label=key)
    ax_lat.axhline(scale["config"]["p99_limit_ms"], color="red", lw=1, ls="--", label="p99 limit")
    ax_lat.set(xscale="log", yscale="log", xlabel="simulated workers (1 Hz each)")
    ax_lat.set(ylabel="append + claim latency (ms)", title="latency, open loop")
    for lv in levels:
        if not lv["held"]:
            ax_lat.annotate("not held", (lv["workers"], lv["latency_ms"].get("p99") or 1))
    ax_lat.legend()

    mem = [lv["memory"] for lv in levels]
    per_1000 = [m["per_1000_reports_bytes"] for m in mem]
    ax_mem.plot(workers, [m["per_job_bytes"] / 1024 for m in mem], "o-", label="per job")
    ax_mem.plot(
        workers,
        [p / 1024 if p is not None else float("nan") for p in per_1000],
        "s-",
        label="per 1000 reports",
    )
    ax_mem.plot(workers, [m["used_memory_delta_bytes"] / 1024 for m in mem], "^:", label="total")
    ax_mem.set(xscale="log", yscale="log", xlabel="simulated workers", ylabel="KiB")
    ax_mem.set(title="Redis memory (MEMORY USAGE, INFO)")
    ax_mem.legend()

    ax_cpu.plot(workers, [lv["redis_cpu"] for lv in levels], "o-", label="redis-server")
    ax_cpu.plot(workers, [lv["generator_cpu"] for lv in levels], "s-", label="load generator")
    busy = [lv.get("machine_busy_cores") for lv in levels]
    ax_cpu.plot(
        workers,
        [b if b is not None else float("nan") for b in busy],
        "^:",
        label="whole machine (all processes)",
    )
    ax_cpu.axhline(scale["cpus"], color="gray", lw=1, ls="--", label=f"{scale['cpus']} CPUs")
    ax_cpu.set(xscale="log", xlabel="simulated workers", ylabel="cores", title="CPU")
    ax_cpu.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
