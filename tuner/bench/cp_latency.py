"""Decision latency: from a report written to Redis to the decision it triggers being
visible to a worker's claim, with an in-process :class:`~tuner.head.HeadLoop`.

The head drives a stagewise controller with ``lead=1``: it decides the next stage as soon
as it sees the report of the current stage's last step, so each such report triggers
exactly one decision. The benchmark writes that report and polls ``claim`` (without a
promise, as a worker waiting at a boundary does) until the new decision answers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from trials.store import JobStore
from tuner.bench.cp_common import private_redis, summary
from tuner.bench.cp_worker import run_head, stop_head
from tuner.records import Decision, Report


@dataclass(frozen=True)
class LatencyConfig:
    """Settings of :func:`measure_decision_latency`.

    Attributes:
        samples: Decisions triggered and timed.
        tau: Stage length of the controller (steps; only the step numbers matter here).
        poll_s: Pause between two claims while waiting (the claim's own round trip adds).
        timeout_s: Longest wait for one decision before it counts as missed.
    """

    samples: int = 300
    tau: int = 8
    poll_s: float = 0.0002
    timeout_s: float = 5.0


def _wait_for(job: JobStore, step: int, cfg: LatencyConfig) -> tuple[Decision | None, int]:
    deadline = time.perf_counter() + cfg.timeout_s
    polls = 0
    while True:
        claim = job.claim(step, promise_if_none=False)
        polls += 1
        d = claim.decision
        if d is not None and d.from_step == step:
            return d, polls
        if time.perf_counter() > deadline:
            return None, polls
        time.sleep(cfg.poll_s)


def measure_decision_latency(cfg: LatencyConfig) -> dict[str, Any]:
    """p50/p99 of report written → decision visible to a claim (see the module docstring).

    ``latency_ms`` runs from just before the report's append call to the return of the
    first claim that sees the decision; ``append_ms`` and ``claim_ms`` are the round
    trips of those calls alone, for scale.
    """
    spec = {"method": "stagewise", "init_lr": 0.1, "tau": cfg.tau, "lead": 1}
    latencies: list[float] = []
    appends: list[float] = []
    claims: list[float] = []
    polls: list[int] = []
    missed = 0
    with private_redis() as (_server, store):
        job = store.job("cp-latency")
        loop, thread = run_head(job, spec)
        try:
            first, _ = _wait_for(job, 0, cfg)  # the head decides stage 0 unprompted
            if first is None or first.until_step is None:
                raise RuntimeError(f"the head made no first decision: {loop.error}")
            until = first.until_step
            job.claim(until - 1)  # a worker ran stage 0 up to its last step
            for _ in range(cfg.samples):
                report = Report(rank=0, step=until - 1, metrics={"loss": 1.0 + 1.0 / until})
                t0 = time.perf_counter()
                job.append_reports([report])
                t1 = time.perf_counter()
                decision, n = _wait_for(job, until, cfg)
                t2 = time.perf_counter()
                if decision is None or decision.until_step is None:
                    missed += 1
                    break
                latencies.append(t2 - t0)
                appends.append(t1 - t0)
                polls.append(n)
                c0 = time.perf_counter()
                job.claim(decision.until_step - 1)  # the worker runs the new stage
                claims.append(time.perf_counter() - c0)
                until = decision.until_step
        finally:
            stop_head(loop, thread)
    return {
        "config": asdict(cfg),
        "controller": spec,
        "head_poll_ms": loop.poll_ms,
        "latency_ms": summary(latencies, 1e3),
        "append_ms": summary(appends, 1e3),
        "claim_ms": summary(claims, 1e3),
        "polls_per_decision": summary([float(p) for p in polls], 1.0, 1),
        "missed": missed,
        "head_error": loop.error,
    }
