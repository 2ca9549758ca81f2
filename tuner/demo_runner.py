"""What both demos share: a tuned run and a baseline run, with a head for the tuned one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.progress import Progress, ProgressColumn

from trials.store import JobStore
from tuner.errors import TautuneError
from tuner.head import start_head, stop_head
from tuner.records import Decision
from tuner.runtime import local_runtime
from workers.agent import Agent

R = TypeVar("R")

TrainFn = Callable[[Agent | None, Progress, str], R]
"""``train(agent, progress, label)``: one run; ``agent`` is ``None`` for the baseline."""


@dataclass
class Pair(Generic[R]):
    """The two runs, and what the head of the tuned one left behind."""

    tuned: R
    baseline: R
    head: dict[str, Any] | None
    decisions: list[Decision]
    stall_s: float
    embedded_redis: bool


def run_pair(
    train: TrainFn[R],
    *,
    job: str,
    spec: Mapping[str, Any],
    baseline_label: str,
    console: Console,
    columns: Sequence[ProgressColumn | str] = (),
    redis_url: str | None = None,
    ray_address: str | None = None,
) -> Pair[R]:
    """Start Redis, Ray and the job's head; train tuned, then the baseline; clean up."""
    with local_runtime(redis_url, ray_address) as rt:
        start_head(job, rt.redis_url, spec)
        try:
            _wait_for_head(rt.store.job(job), console)
            with Progress(*columns, console=console) as progress:
                agent = Agent(rt.store.job(job), rank=0)
                try:
                    tuned = train(agent, progress, "tautune")
                finally:
                    agent.close()
                baseline = train(None, progress, baseline_label)
            head = stop_head(job)
            decisions = rt.store.job(job).decisions()
        except BaseException:
            stop_head(job)
            raise
        return Pair(tuned, baseline, head, decisions, agent.stall_s, rt.embedded is not None)


@dataclass(frozen=True)
class Budget:
    """What a demo's tuned run and its baseline share, so that only the tuning differs."""

    steps: int  # optimizer steps per run
    tau: int  # optimizer steps per stage
    lr: float  # the tuned run's starting LR, and the baseline's constant one
    seed: int


@dataclass(frozen=True)
class Demo:
    """One demo invocation: its job, its output folder, and where Redis and Ray are.

    Make it once the task is built: :meth:`wall_s` counts from then.
    """

    job: str
    out: Path
    console: Console
    redis_url: str | None = None
    ray_address: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(
        cls,
        name: str,
        out_dir: str | Path,
        console: Console,
        redis_url: str | None,
        ray_address: str | None,
    ) -> Demo:
        """A job named ``{name}-{unix seconds}``; ``out_dir`` is made if missing."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return cls(f"{name}-{int(time.time())}", out, console, redis_url, ray_address)

    def run_pair(
        self,
        train: TrainFn[R],
        spec: Mapping[str, Any],
        baseline_label: str,
        columns: Sequence[ProgressColumn | str] = (),
    ) -> Pair[R]:
        """:func:`run_pair` for this demo's job."""
        return run_pair(
            train,
            job=self.job,
            spec=spec,
            baseline_label=baseline_label,
            console=self.console,
            columns=columns,
            redis_url=self.redis_url,
            ray_address=self.ray_address,
        )

    def summary(self, budget: Budget, pair: Pair[Any]) -> dict[str, Any]:
        """The fields that both demos' summaries open with."""
        return {
            "job": self.job,
            "steps": budget.steps,
            "tau": budget.tau,
            "init_lr": budget.lr,
            "decisions": len(pair.decisions),
        }

    def wall_s(self) -> float:
        """Seconds since this demo started."""
        return time.perf_counter() - self.started

    def write_summary(self, name: str, summary: Mapping[str, Any]) -> None:
        """Write ``summary`` as JSON to ``name`` in the output folder."""
        (self.out / name).write_text(json.dumps(summary, indent=2, default=str))


HEAD_START_TIMEOUT_S = 120.0


def _wait_for_head(job: JobStore, console: Console) -> None:
    """Train only once the head holds its lease: a run that finishes before the head
    has started (a slow Ray start on a busy machine) would show no tuning at all."""
    with console.status("starting the job's head (a Ray actor)"):
        if not job.wait_for_head(HEAD_START_TIMEOUT_S):
            raise TautuneError(
                f"the job's head did not start within {HEAD_START_TIMEOUT_S:.0f}s; "
                "see the Ray logs under /tmp/ray/session_latest/logs"
            )
