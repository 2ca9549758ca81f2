"""What the control-plane benchmark's sections share: a calibrated synthetic training step,
a private redis-server per section, percentiles and a description of the machine.

Every number the benchmark prints is measured here or in the sections; nothing is assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trials.embedded import EmbeddedRedis, find_redis_server
from trials.store import JobStore, Store

StepKind = Literal["hash", "python"]
STEP_KINDS: tuple[StepKind, ...] = ("hash", "python")

_CHUNK = bytes(16 * 1024)  # sha256 of 16 KiB releases the GIL (hashlib does above 2 KiB)


def _hash_units(n: int) -> None:
    for _ in range(n):
        hashlib.sha256(_CHUNK).digest()


def _python_units(n: int) -> None:
    x = 0
    for i in range(n * 64):
        x = (x + i * i) % 1_000_003


@dataclass(frozen=True)
class StepWork:
    """A fixed amount of CPU work standing in for a training step (no ``time.sleep``).

    ``"hash"`` hashes 16 KiB chunks, releasing the GIL for each (as torch ops and CUDA
    waits do, so the agent's background thread and an in-process head can run beside
    it); ``"python"`` is a pure-Python loop that holds the GIL (the worst case for the
    agent's background thread). The work is fixed, not a deadline: whatever another
    thread takes from the training thread shows up as a longer step.

    Attributes:
        kind: ``"hash"`` or ``"python"``.
        units: Work units per step, calibrated by :meth:`calibrate`.
        calibrated_s: Median duration of one step measured at calibration.
    """

    kind: StepKind
    units: int
    calibrated_s: float

    def __call__(self) -> None:
        """Run one step's work."""
        if self.kind == "hash":
            _hash_units(self.units)
        else:
            _python_units(self.units)

    @classmethod
    def calibrate(cls, target_s: float, kind: StepKind = "hash", *, trials: int = 15) -> StepWork:
        """The work that takes ``target_s`` seconds here (median of ``trials`` timings)."""
        run = _hash_units if kind == "hash" else _python_units
        warm_until = time.perf_counter() + 0.3  # let the interpreter and the CPU settle
        while time.perf_counter() < warm_until:
            run(8)
        units = 8
        for _ in range(3):  # scale up from a guess, then refine on the median
            timings = []
            for _ in range(trials):
                t0 = time.perf_counter()
                run(units)
                timings.append(time.perf_counter() - t0)
            per_unit = statistics.median(timings) / units
            units = max(1, round(target_s / per_unit))
        timings = []
        for _ in range(trials):
            t0 = time.perf_counter()
            run(units)
            timings.append(time.perf_counter() - t0)
        return cls(kind, units, statistics.median(timings))


def busy_wait(seconds: float) -> None:
    """Spin (holding the GIL) until ``seconds`` have passed: a precise short pause."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """``n``, mean, p50, p90, p99 and max of ``values`` times ``scale``, rounded."""
    if not values:
        return {"n": 0}
    ordered = sorted(v * scale for v in values)

    def q(p: float) -> float:
        # nearest-rank percentile: a value that was actually observed
        index = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1
        return round(ordered[index], digits)

    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), digits),
        "p50": q(50),
        "p90": q(90),
        "p99": q(99),
        "max": round(ordered[-1], digits),
    }


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[EmbeddedRedis, Store]]:
    """A fresh embedded redis-server owned by this benchmark (safe to flush) and a store
    connected to it; stopped, with its state directory, on exit."""
    with EmbeddedRedis() as server:
        store = Store.connect(server.url)
        try:
            yield server, store
        finally:
            store.close()


def redis_info(store: Store, section: str) -> dict[str, Any]:
    """``INFO section`` of the store's Redis as a dict."""
    info: dict[str, Any] = store.call(lambda c: c.info(section))
    return info


def redis_cpu_s(store: Store) -> float:
    """CPU seconds (user + system) the Redis server has used since it started."""
    info = redis_info(store, "cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def usable_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """The machine the numbers were measured on: CPUs, memory, OS, Python, torch, Redis."""
    import torch

    with private_redis() as (_server, store):
        version = redis_info(store, "server").get("redis_version")
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "mem_total_gib": _mem_total_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "redis_version": version,
        "redis_server": find_redis_server(),
    }


def job_memory(store: Store, job: JobStore) -> dict[str, int]:
    """``MEMORY USAGE`` (all samples) of each of ``job``'s keys, by key name after the tag."""
    tag = job.keys.tag

    def usage(c: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for raw in c.scan_iter(match=f"{tag}:*", count=1000):
            key = raw.decode()
            size = c.memory_usage(key, samples=0)
            if size is not None:
                out[key[len(tag) :]] = int(size)
        return out

    return store.call(usage)


def memory_sample(store: Store, jobs: list[JobStore]) -> tuple[float, float, dict[str, float]]:
    """Mean bytes over ``jobs``, mean reports stored per job, mean bytes by key kind."""
    kinds: dict[str, float] = {}
    for job in jobs:
        for kind, size in job_memory(store, job).items():
            kinds[kind] = kinds.get(kind, 0.0) + size / len(jobs)
    reports = sum(job.report_count() for job in jobs) / len(jobs)
    return sum(kinds.values()), reports, kinds


def _cpu_ticks() -> tuple[int, int] | None:
    """Machine-wide ``(busy, total)`` clock ticks from ``/proc/stat``, or ``None``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # guest time is already counted in user
        return total - idle, total
    return None


class Usage:
    """What the machine did while a section ran: wall time, the CPU cores busy machine-wide
    (every process, this benchmark's Redis and anyone else's work included) and the cores
    this process used (all its threads)."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._proc = time.process_time()
        self._ticks = _cpu_ticks()

    def read(self) -> dict[str, Any]:
        """Usage since construction."""
        wall = time.perf_counter() - self._wall
        out: dict[str, Any] = {
            "wall_s": round(wall, 2),
            "bench_process_cores": round((time.process_time() - self._proc) / wall, 3),
        }
        ticks = _cpu_ticks()
        if ticks is not None and self._ticks is not None and ticks[1] > self._ticks[1]:
            busy = (ticks[0] - self._ticks[0]) / (ticks[1] - self._ticks[1])
            out["machine_busy_cores"] = round(busy * (os.cpu_count() or 1), 3)
        if hasattr(os, "getloadavg"):
            out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        return out
