"""Boundary stall: how long a worker waits at stage boundaries (``agent.stall_s``) while an
in-process :class:`~tuner.head.HeadLoop` drives a stagewise controller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from trials.store import Store
from tuner.bench.cp_common import StepWork, private_redis, summary
from tuner.bench.cp_worker import agent_defaults, loss_at, run_head, stop_head, torch_scheduler
from tuner.errors import ConfigError
from workers.agent import Agent

STALL_SCENARIOS = ("sync", "async", "async_flush")


@dataclass(frozen=True)
class StallConfig:
    """Settings of :func:`measure_boundary_stall`.

    Attributes:
        step_s: Duration of the synthetic training step.
        steps: Steps per scenario.
        tau: Stage length of the stagewise controller the head drives.
        init_lr: The controller's starting LR.
        sync_timeout_s: The agent's longest wait at a boundary.
        scenarios: ``"sync"``: the next stage is decided from the report of the stage's
            last step (``lead=1``), so every boundary waits for the head; ``"async"``: the
            controller's default lead (``tau/4`` steps before the boundary), agent
            defaults; ``"async_flush"``: the same with the agent flushing every
            ``async_flush_every`` reports, fewer than the lead.
        async_flush_every: The agent's ``flush_every`` in ``"async_flush"``.
        agent: Extra :class:`~workers.agent.Agent` keyword arguments for every scenario.
    """

    step_s: float = 0.005
    steps: int = 1000
    tau: int = 50
    init_lr: float = 0.1
    sync_timeout_s: float = 5.0
    scenarios: tuple[str, ...] = STALL_SCENARIOS
    async_flush_every: int = 4
    agent: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.scenarios) - set(STALL_SCENARIOS))
        if unknown:
            raise ConfigError(f"unknown stall scenarios {unknown}; known: {STALL_SCENARIOS}")
        if self.steps < 1 or self.step_s <= 0 or self.async_flush_every < 1:
            raise ConfigError(f"steps, step_s and async_flush_every must be > 0, got {self}")

    def spec(self, scenario: str) -> dict[str, Any]:
        """The controller spec the head runs in ``scenario``."""
        spec: dict[str, Any] = {"method": "stagewise", "init_lr": self.init_lr, "tau": self.tau}
        if scenario == "sync":
            spec["lead"] = 1
        return spec

    def agent_kwargs(self, scenario: str) -> dict[str, Any]:
        """The :class:`Agent` keyword arguments of ``scenario``."""
        kwargs = {"sync": True, "sync_timeout_s": self.sync_timeout_s, **self.agent}
        if scenario == "async_flush":
            kwargs["flush_every"] = self.async_flush_every
        return kwargs


def _stall_scenario(
    store: Store, work: Callable[[], None], scenario: str, cfg: StallConfig
) -> dict[str, Any]:
    job = store.job(f"cp-stall-{scenario}")
    spec = cfg.spec(scenario)
    loop, thread = run_head(job, spec)
    agent = Agent(job, 0, **cfg.agent_kwargs(scenario))
    waits: dict[int, float] = {}
    step_s: dict[int, float] = {}
    applied: dict[int, int] = {}
    t0 = time.perf_counter()
    try:
        sched = torch_scheduler(agent, cfg.init_lr)
        for step in range(cfg.steps):
            work()
            agent.report(step, loss=loss_at(step))
            before = agent.stall_s
            t = time.perf_counter()
            sched.step()
            step_s[step + 1] = time.perf_counter() - t
            waits[step + 1] = agent.stall_s - before
            d = agent.decision(step + 1)  # cached: what the scheduler just applied
            applied[step + 1] = d.version if d is not None else 0
        wall = time.perf_counter() - t0
    finally:
        agent.close()
        stop_head(loop, thread)
    decisions = job.stage_decisions()
    ends = sorted(
        {d.until_step for d in decisions if d.until_step is not None and d.until_step <= cfg.steps}
    )
    per_boundary = [waits[b] for b in ends if b in waits]
    late = [b for b in ends if applied.get(b, 0) == 0]
    off_boundary = sum(w for s, w in waits.items() if s not in set(ends))
    return {
        "scenario": scenario,
        "spec": spec,
        "agent": cfg.agent_kwargs(scenario),
        "steps": cfg.steps,
        "wall_s": round(wall, 2),
        "decisions": len(decisions),
        "boundaries": len(ends),
        "boundaries_waited": sum(1 for w in per_boundary if w > 0),
        "late_boundaries": len(late),
        "stall_total_ms": round(agent.stall_s * 1e3, 3),
        "stall_off_boundary_ms": round(off_boundary * 1e3, 3),
        "stall_ms_per_boundary": summary(per_boundary, 1e3),
        # wall time of sched.step() moving onto a boundary (includes the flush before the
        # wait, which stall_s leaves out) and onto any other step
        "boundary_sched_step_ms": summary([step_s[b] for b in ends if b in step_s], 1e3),
        "other_sched_step_ms": summary([t for st, t in step_s.items() if st not in set(ends)], 1e3),
        "mean_stall_ms_per_boundary": (round(1e3 * agent.stall_s / len(ends), 3) if ends else None),
        "head_error": loop.error,
    }


def measure_boundary_stall(cfg: StallConfig) -> dict[str, Any]:
    """Time a worker waits at stage boundaries (``agent.stall_s``) while an in-process
    :class:`HeadLoop` drives a stagewise controller, per scenario of :class:`StallConfig`."""
    work = StepWork.calibrate(cfg.step_s, "hash")
    with private_redis() as (_server, store):
        runs = [_stall_scenario(store, work, s, cfg) for s in cfg.scenarios]
    return {
        "config": asdict(cfg),
        "step_us": round(work.calibrated_s * 1e6, 1),
        "agent_defaults": agent_defaults(),
        "scenarios": {r["scenario"]: r for r in runs},
    }
