"""Many simulated workers on one Redis: latency, Redis CPU and memory as the count grows.

Each simulated worker sends, once per tick (``hz``), what an agent sends: an append of its
new reports and a claim for its next step, through the same Lua scripts with the same keys
and arguments as :meth:`JobStore.append_reports` and :meth:`JobStore.claim`. To simulate
thousands of workers from a few threads, those calls are pipelined: :class:`CommandCapture`
runs the real ``JobStore`` method up to the point where it would send its ``EVALSHA``, hands
that command over instead, and the load generator sends the commands of all the workers
that are due in one pipeline. Redis is the embedded redis-server, for real.

Latency is open-loop: from the moment a worker was due to send (its phase within the
tick) to the moment its replies arrived, so a load generator that falls behind shows up as
latency instead of hiding it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from trials.store import Store
from tuner.bench.cp_common import (
    Usage,
    memory_sample,
    private_redis,
    redis_cpu_s,
    redis_info,
    summary,
    usable_cpus,
)
from tuner.bench.cp_load import LoadSpec, Sim, ThreadResult, Window, drive, job_name
from tuner.records import Decision, DecisionKind, Report


@dataclass(frozen=True)
class ScaleConfig:
    """Settings of :func:`measure_scale`.

    Attributes:
        workers: Worker counts to try, in order; stops after the first not held, or the
            first at which Redis and the load generator together keep 90% of the CPUs busy.
        workers_per_job: Workers (ranks) per job.
        seconds: Measured time per count.
        warmup_s: Time per count before measuring.
        hz: Ticks per second per worker; each sends one append and one claim.
        reports_per_tick: Reports per append (one per step; steps advance by this).
        threads: Load-generator threads (each with its own connection).
        max_batch: Most workers whose commands go in one pipeline.
        p99_limit_ms: A count is held while the p99 latency stays below this.
        min_rate: A count is held while the generator sends at least this fraction of the
            ticks due (else the machine, not Redis, is the limit).
        sample_jobs: Jobs whose keys are measured with ``MEMORY USAGE``.
    """

    workers: tuple[int, ...] = (500, 1000, 2000, 5000, 10000)
    workers_per_job: int = 100
    seconds: float = 15.0
    warmup_s: float = 3.0
    hz: float = 1.0
    reports_per_tick: int = 1
    threads: int = 4
    max_batch: int = 256
    p99_limit_ms: float = 100.0
    min_rate: float = 0.95
    sample_jobs: int = 3


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _level(store: Store, workers: int, cfg: ScaleConfig) -> dict[str, Any]:
    store.call(lambda c: c.flushall())
    n_jobs = math.ceil(workers / cfg.workers_per_job)
    jobs = [store.job(job_name(j)) for j in range(n_jobs)]
    for job in jobs:  # every claim finds an open-ended decision, as under a healthy head
        job.commit(
            expected_version=0,
            decision=Decision(
                stage=0, kind=DecisionKind.COMMIT, from_step=0, lr=0.1, controller="bench"
            ),
        )
    # One real call of each script through JobStore, which loads it into Redis (the
    # pipelines then send EVALSHA only): rank 0 of job 0 reports its step 0.
    jobs[0].append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    jobs[0].claim(0)
    base_memory = int(redis_info(store, "memory")["used_memory"])
    # Redis's own record of anything that blocked it for 10 ms or more (AOF writes, slow
    # scripts), to tell its stalls from the load generator's.
    store.call(lambda c: c.config_set("latency-monitor-threshold", 10))
    store.call(lambda c: c.execute_command("LATENCY", "RESET"))
    sims = [
        Sim(
            job=i // cfg.workers_per_job, rank=i % cfg.workers_per_job, phase=(i * 0.6180339887) % 1
        )
        for i in range(workers)
    ]
    threads = max(1, min(cfg.threads, workers))
    spec = LoadSpec(cfg.hz, cfg.reports_per_tick, cfg.max_batch, cfg.p99_limit_ms)
    results = [ThreadResult() for _ in range(threads)]
    start = time.perf_counter() + 0.2
    window = Window(start, start + cfg.warmup_s, start + cfg.warmup_s + cfg.seconds)
    runners = [
        threading.Thread(
            target=drive,
            args=(store.url, sims[t::threads], window, spec, results[t]),
            name=f"cp-scale-{t}",
            daemon=True,
        )
        for t in range(threads)
    ]
    for runner in runners:
        runner.start()
    sampled = jobs[: cfg.sample_jobs]
    time.sleep(max(0.0, window.measure - time.perf_counter()))
    cpu0, proc0, wall0 = redis_cpu_s(store), time.process_time(), time.perf_counter()
    machine = Usage()
    mem0, reports0, _ = memory_sample(store, sampled)
    time.sleep(max(0.0, window.end - time.perf_counter()))
    cpu1, proc1, wall1 = redis_cpu_s(store), time.process_time(), time.perf_counter()
    busy = machine.read().get("machine_busy_cores")
    for runner in runners:
        runner.join(timeout=120.0)
    mem1, reports1, kinds = memory_sample(store, sampled)
    used = int(redis_info(store, "memory")["used_memory"])
    events = store.call(lambda c: c.execute_command("LATENCY", "LATEST"))
    stored = sum(job.report_count() for job in jobs)
    latencies = [x for r in results for x in r.latencies]
    measured = sum(r.ticks_measured for r in results)
    due = round(workers * cfg.hz * cfg.seconds)
    lat = summary(latencies, 1e3)
    wall = wall1 - wall0
    per_report = (mem1 - mem0) / (reports1 - reports0) if reports1 > reports0 else None
    errors = sum(r.errors for r in results)
    crashed = [r.crashed for r in results if r.crashed]
    rate = measured / due if due else 0.0
    redis_cpu = (cpu1 - cpu0) / wall
    generator_cpu = (proc1 - proc0) / wall
    reasons = [
        reason
        for reason, failed in (
            ("errors", bool(errors or crashed)),
            ("p99", not lat.get("p99", math.inf) < cfg.p99_limit_ms),
            ("ticks_not_sent", rate < cfg.min_rate),
        )
        if failed
    ]
    return {
        "workers": workers,
        "jobs": n_jobs,
        "target_ops_per_s": round(2 * workers * cfg.hz, 1),
        "ops_per_s": round(2 * measured / cfg.seconds, 1),
        "sent_fraction": round(rate, 4),
        "latency_ms": lat,
        "send_lag_ms": summary([x for r in results for x in r.lags], 1e3),
        "pipeline_rtt_ms": summary([x for r in results for x in r.rtts], 1e3),
        "redis_latency_events": {
            _text(e[0]): {"latest_ms": int(e[2]), "max_ms": int(e[3])} for e in events or []
        },
        "errors": errors,
        "first_error": next((r.first_error for r in results if r.first_error), None),
        "crashed": crashed or None,
        "pipelines_per_s": round(
            sum(r.pipelines for r in results) / (window.end - window.start), 1
        ),
        "redis_cpu": round(redis_cpu, 3),
        "generator_cpu": round(generator_cpu, 3),
        "machine_busy_cores": busy,  # every process on the machine, others' work included
        "machine_saturated": busy is not None and busy >= 0.9 * usable_cpus(),
        "bench_saturated": redis_cpu + generator_cpu >= 0.9 * usable_cpus(),
        "reports_sent": sum(r.reports_sent for r in results) + 1,
        "reports_stored": stored,
        "memory": {
            "used_memory_bytes": used,
            "used_memory_delta_bytes": used - base_memory,
            "per_job_bytes": round((used - base_memory) / n_jobs),
            "sampled_job_bytes": round(mem1),
            "sampled_reports_per_job": round(reports1),
            "per_1000_reports_bytes": round(1000 * per_report) if per_report is not None else None,
            "per_job_without_reports_bytes": (
                round(mem1 - per_report * reports1) if per_report is not None else None
            ),
            "by_key_bytes": {k: round(v) for k, v in sorted(kinds.items())},
        },
        "held": not reasons,
        "not_held_because": reasons,
    }


def measure_scale(
    cfg: ScaleConfig, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run :class:`ScaleConfig`'s worker counts in order on one private redis-server, until
    one is not held (p99 at or above the limit, ticks not sent, or errors) or saturates
    the CPUs with Redis and the load generator (``bench_saturated``; ``machine_saturated``
    counts every process on the machine, other people's work included)."""
    levels: list[dict[str, Any]] = []
    with private_redis() as (_server, store):
        for workers in cfg.workers:
            level = _level(store, workers, cfg)
            levels.append(level)
            if progress is not None:
                progress(level)
            if not level["held"] or level["bench_saturated"]:
                break
    held = [lv["workers"] for lv in levels if lv["held"]]
    return {
        "config": asdict(cfg),
        "cpus": usable_cpus(),
        "levels": levels,
        "largest_held": max(held) if held else 0,
        "stopped_at": (
            levels[-1]["workers"]
            if levels and (not levels[-1]["held"] or levels[-1]["bench_saturated"])
            else None
        ),
    }
