"""One run of an LR benchmark: a fixed schedule, or a controller driven in-process.

A controller is driven exactly as the head drives it (:mod:`tuner.controllers.base`), with
a sync boundary at every step: before step ``n`` the controller is asked to
``propose(Plan(horizon=n-1, last_step=n-1))`` until it has nothing more to write, and every
decision it returns is accepted with the next version. The decision covering ``n`` is
applied as the worker applies it: its snapshot and restore directives first (the
:class:`Trainable` saves and loads its whole state, RNG included, as
:class:`~workers.explore.StateMover` does in a real job), then its LR. Each step's loss is
observed once, as a report of rank 0 that says it can restore; a non-finite loss is
reported as ``diverged`` instead, as the agent does.

Steps are steps of work: a restore does not turn the count back, so exploration shows in
``total_steps`` and in the step at which a target is reached. Evaluations made while an
exploration decision is in force describe a state that may be thrown away, so they are
recorded but not used to decide when a run reached its target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuner.controllers.base import Controller, Plan
from tuner.controllers.curves import DIVERGED_METRIC
from tuner.records import RESTORABLE_METRIC, Decision, DecisionKind, Report


class Trainable(Protocol):
    """One training run of a benchmark task, stepped one optimizer step at a time."""

    def step(self, lr: float) -> float:
        """Train one step at ``lr``; the training loss measured (maybe NaN on divergence)."""
        ...

    def evaluate(self) -> float:
        """The loss the benchmark compares: validation loss, or NQM's expected loss."""
        ...

    def save(self) -> Any:
        """A deep copy of the whole training state, RNG states included."""
        ...

    def load(self, state: Any) -> None:
        """Put back what :meth:`save` returned; training then repeats exactly."""
        ...


Schedule = Callable[[int], float]
"""LR of step ``n`` (from 0)."""


@dataclass
class RunResult:
    """What one run produced; ``curve`` is ``(step, loss, kept)`` with ``step`` the steps
    trained so far, exploration included."""

    method: str
    seed: int
    total_steps: int
    final_loss: float
    curve: list[tuple[int, float, bool]]
    schedule: list[tuple[int, float]]
    exploration_steps: int
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)

    def steps_to(self, target: float) -> int | None:
        """First step count at which a kept state's loss was at or below ``target``."""
        for step, loss, kept in self.curve:
            if kept and loss <= target:
                return step
        return None

    def to_json(self, target: float | None) -> dict[str, Any]:
        return {
            "method": self.method,
            "final_loss": self.final_loss,
            "steps_to_target": self.steps_to(target) if target is not None else None,
            "total_steps": self.total_steps,
            "exploration_steps": self.exploration_steps,
            "wall_s": round(self.wall_s, 3),
            "seed": self.seed,
            "curve": [[s, v] for s, v, kept in self.curve if kept],
            "schedule": [[s, lr] for s, lr in self.schedule],
            "info": self.info,
        }


def _schedule_points(lrs: Sequence[tuple[int, float]], total: int) -> list[tuple[int, float]]:
    every = max(1, total // 400)
    return [p for p in lrs if p[0] % every == 0 or p[0] == total - 1]


def _result(
    method: str,
    seed: int,
    total_steps: int,
    curve: list[tuple[int, float, bool]],
    lrs: Sequence[tuple[int, float]],
    exploration_steps: int,
    wall_s: float,
    info: dict[str, Any],
) -> RunResult:
    """A finished run: its last evaluation is the final loss, and ``lrs`` (every step's
    LR) is thinned to the schedule kept."""
    return RunResult(
        method=method,
        seed=seed,
        total_steps=total_steps,
        final_loss=curve[-1][1],
        curve=curve,
        schedule=_schedule_points(lrs, total_steps),
        exploration_steps=exploration_steps,
        wall_s=wall_s,
        info=info,
    )


def run_schedule(
    method: str,
    trainable: Trainable,
    schedule: Schedule,
    *,
    total_steps: int,
    eval_every: int,
    seed: int,
    info: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``total_steps`` steps with a fixed ``schedule``."""
    start = time.perf_counter()
    curve: list[tuple[int, float, bool]] = [(0, trainable.evaluate(), True)]
    lrs: list[tuple[int, float]] = []
    for step in range(total_steps):
        lr = schedule(step)
        lrs.append((step, lr))
        trainable.step(lr)
        if (step + 1) % eval_every == 0 or step + 1 == total_steps:
            curve.append((step + 1, trainable.evaluate(), True))
    wall_s = time.perf_counter() - start
    return _result(method, seed, total_steps, curve, lrs, 0, wall_s, dict(info or {}))


def run_controller(
    method: str,
    trainable: Trainable,
    controller: Controller,
    base: Schedule,
    *,
    total_steps: int,
    eval_every: int,
    seed: int,
    metric: str = "loss",
) -> RunResult:
    """Train ``total_steps`` steps under ``controller``'s decisions (``base`` elsewhere)."""
    start = time.perf_counter()
    decisions: list[Decision] = []
    snapshots: dict[int, Any] = {}
    version = 0
    next_stage = 0
    lineage = 0  # steps the current state descends from: total minus what was thrown away
    curve: list[tuple[int, float, bool]] = [(0, trainable.evaluate(), True)]
    lrs: list[tuple[int, float]] = []
    current: Decision | None = None
    for step in range(total_steps):
        while True:
            proposal = controller.propose(
                Plan(horizon=step - 1, last_step=step - 1, next_stage=next_stage)
            )
            if proposal is None:
                break
            version += 1
            stored = proposal.with_version(version)
            decisions.append(stored)
            next_stage = max(next_stage, stored.stage + 1)
            controller.accept(stored)
        current = _covering(decisions, step)
        if current is not None and current.from_step == step:
            if current.snapshot:
                snapshots[step] = (trainable.save(), lineage)
            if current.restore_from is not None:
                state, lineage = snapshots[current.restore_from]
                trainable.load(state)
                for old in [s for s in snapshots if s < current.restore_from]:
                    del snapshots[old]
        lr = current.lr_at(step) if current is not None else None
        if lr is None:
            lr = base(step)
        lrs.append((step, lr))
        loss = trainable.step(lr)
        lineage += 1
        metrics = {RESTORABLE_METRIC: 1.0}
        if math.isfinite(loss):
            metrics[metric] = loss
        else:
            metrics[DIVERGED_METRIC] = 1.0
        controller.observe([Report(rank=0, step=step, metrics=metrics)])
        if (step + 1) % eval_every == 0 or step + 1 == total_steps:
            kept = current is None or current.kind != DecisionKind.EXPLORE
            curve.append((step + 1, trainable.evaluate(), kept))
    wall_s = time.perf_counter() - start
    info = {"decisions": len(decisions), "summary": controller.summary()}
    return _result(method, seed, total_steps, curve, lrs, total_steps - lineage, wall_s, info)


def _covering(decisions: Sequence[Decision], step: int) -> Decision | None:
    for d in reversed(decisions):
        if d.covers(step):
            return d
    return None
