"""Agent overhead: the time ``agent.report(...)`` and ``sched.step()`` add to a training step.

A real :class:`~workers.agent.Agent` and its torch scheduler run against a private
redis-server on a synthetic step of fixed CPU work (:class:`~tuner.bench.cp_common.StepWork`),
in blocks that alternate with blocks of the same loop without the agent, in one process,
so that drift in the machine's speed cancels.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from trials.store import JobStore, Store
from tuner.bench.cp_common import STEP_KINDS, StepKind, StepWork, private_redis, summary
from tuner.bench.cp_worker import agent_defaults, loss_at, redis_calls, torch_scheduler
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind
from workers.agent import Agent
from workers.scheduler import TautuneLR

OVERHEAD_CASES = ("healthy", "unattended")


@dataclass(frozen=True)
class OverheadConfig:
    """Settings of :func:`measure_agent_overhead`.

    Attributes:
        step_s: Duration of the synthetic training step (fixed work calibrated to it).
        steps_per_block: Steps timed together; blocks with and without the agent alternate.
        reps: Pairs of blocks (one with, one without the agent) per case and step kind.
        tau: Stage length of the decisions the healthy case writes up front.
        step_kinds: Synthetic steps to measure on (see :class:`StepWork`).
        cases: ``"healthy"`` (decisions cover every step, the head's lease is live) and/or
            ``"unattended"`` (no decisions and no head: the base schedule).
    """

    step_s: float = 0.005
    steps_per_block: int = 32
    reps: int = 60
    tau: int = 100
    step_kinds: tuple[StepKind, ...] = ("hash", "python")
    cases: tuple[str, ...] = OVERHEAD_CASES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.cases) - set(OVERHEAD_CASES)) + sorted(
            set(self.step_kinds) - set(STEP_KINDS)
        )
        if unknown:
            raise ConfigError(f"unknown cases or step kinds {unknown}")
        if self.reps < 2 or self.steps_per_block < 1 or self.step_s <= 0 or self.tau < 1:
            raise ConfigError(f"need reps >= 2 and positive sizes, got {self}")


def _agent_block(
    work: StepWork, agent: Agent, sched: TautuneLR, first: int, n: int, inline: list[int]
) -> tuple[float, float]:
    """Per-step wall and training-thread CPU seconds of ``n`` steps with the agent."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for step in range(first, first + n):
        work()
        t = time.perf_counter_ns()
        agent.report(step, loss=loss_at(step))
        sched.step()
        inline.append(time.perf_counter_ns() - t)
    return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n


def _bare_block(work: StepWork, n: int, inline: list[int]) -> tuple[float, float]:
    """The same as :func:`_agent_block` without the agent (the timing calls stay)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        work()
        t = time.perf_counter_ns()
        inline.append(time.perf_counter_ns() - t)
    return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n


def write_stages(job: JobStore, steps: int, tau: int) -> int:
    """Bounded stages of ``tau`` steps covering ``[0, steps)``, as a head would write them."""
    count = 0
    for version, start in enumerate(range(0, steps, tau)):
        job.commit(
            expected_version=version,
            decision=Decision(
                stage=version,
                kind=DecisionKind.COMMIT,
                from_step=start,
                until_step=start + tau,
                lr=0.1 * 0.99**version,
                controller="bench",
            ),
        )
        count += 1
    return count


def _overhead_case(store: Store, work: StepWork, case: str, cfg: OverheadConfig) -> dict[str, Any]:
    job = store.job(f"cp-overhead-{case}-{work.kind}")
    n = cfg.steps_per_block
    total = (cfg.reps + 1) * n + 1
    stages = 0
    if case == "healthy":
        stages = write_stages(job, total + cfg.tau, cfg.tau)
        job.heartbeat(None, ttl_s=3600.0, info={"bench": "control-plane"})
    agent = Agent(job, 0)
    sched = torch_scheduler(agent)
    scratch: list[int] = []
    _bare_block(work, n, scratch)  # warm-up, not counted
    _agent_block(work, agent, sched, 0, n, scratch)
    step = n
    added: list[float] = []
    added_cpu: list[float] = []
    bare_s: list[float] = []
    with_s: list[float] = []
    inline_agent: list[int] = []
    inline_bare: list[int] = []
    scripts0, commands0 = redis_calls(store)
    for rep in range(cfg.reps):
        gc.collect()
        if rep % 2 == 0:  # alternate the order so that drift cancels
            bare = _bare_block(work, n, inline_bare)
            with_agent = _agent_block(work, agent, sched, step, n, inline_agent)
        else:
            with_agent = _agent_block(work, agent, sched, step, n, inline_agent)
            bare = _bare_block(work, n, inline_bare)
        step += n
        bare_s.append(bare[0])
        with_s.append(with_agent[0])
        added.append(with_agent[0] - bare[0])
        added_cpu.append(with_agent[1] - bare[1])
    scripts1, commands1 = redis_calls(store)
    timed_steps = cfg.reps * n
    applied = agent.decision(step)  # cached: what the scheduler applied last
    agent.close()
    if case == "healthy":
        job.release(None)
    median_added = statistics.median(added)
    step_s = statistics.median(bare_s)
    return {
        "case": case,
        "step_kind": work.kind,
        "step_us": round(step_s * 1e6, 1),
        "with_agent_us": round(statistics.median(with_s) * 1e6, 1),
        "added_us": round(median_added * 1e6, 2),
        "added_pct": round(100 * median_added / step_s, 3),
        "added_us_quartiles": [round(q * 1e6, 2) for q in statistics.quantiles(added, n=4)],
        # standard error of the median, from the spread of the block pairs
        "added_us_se": round(1.2533e6 * statistics.stdev(added) / len(added) ** 0.5, 2),
        "added_cpu_us": round(statistics.median(added_cpu) * 1e6, 2),
        "added_us_reps": [round(a * 1e6, 2) for a in added],
        "inline_us": summary(inline_agent, 1e-3),
        "inline_bare_us": summary(inline_bare, 1e-3),
        "redis_scripts_per_step": round((scripts1 - scripts0) / timed_steps, 4),
        "redis_commands_per_step": round((commands1 - commands0) / timed_steps, 4),
        "stages_written": stages,
        "decision_version_at_end": applied.version if applied is not None else 0,
        "reports_sent": agent.reports_sent,
    }


def measure_agent_overhead(cfg: OverheadConfig) -> dict[str, Any]:
    """Time added per step by ``agent.report(...)`` + ``sched.step()``, against the same loop
    without the agent, in alternating blocks in one process.

    ``added_us`` is the median over ``reps`` of (per-step time with the agent) minus
    (per-step time without); it includes what the agent's background thread takes from the
    training thread, and on a busy machine it carries that machine's noise
    (``added_us_se``). ``added_cpu_us`` is the same difference in the training thread's
    CPU time, which other processes do not disturb (but which leaves out waits for Redis
    and for the GIL). ``inline_us`` times the two calls alone. ``redis_scripts_per_step``
    counts the Lua calls (claims and appends) per step; ``redis_commands_per_step`` counts
    those and every command they ran inside, plus heartbeats.
    """
    results: list[dict[str, Any]] = []
    steps: dict[str, dict[str, Any]] = {}
    with private_redis() as (_server, store):
        for kind in cfg.step_kinds:
            work = StepWork.calibrate(cfg.step_s, kind)
            steps[kind] = {"units": work.units, "calibrated_us": round(work.calibrated_s * 1e6, 1)}
            for case in cfg.cases:
                results.append(_overhead_case(store, work, case, cfg))
    worst = {
        case: max((r for r in results if r["case"] == case), key=lambda r: r["added_us"])
        for case in cfg.cases
    }
    return {
        "config": asdict(cfg),
        "agent_settings": agent_defaults(),
        "step_calibration": steps,
        "results": results,
        "worst_added_us": {case: r["added_us"] for case, r in worst.items()},
        "worst_added_pct": {case: r["added_pct"] for case, r in worst.items()},
    }
