"""One training run of a mixture benchmark: fixed weights, a schedule, or a live controller.

The run trains :class:`~workers.tasks.mixture_lm.MixtureLMTask`'s model with a
:class:`~workers.sampler.MixtureBatchSampler`. A controller is driven in-process exactly as
the head drives it (:mod:`tuner.controllers.base`): every step's report (``loss``,
``arm_loss/<arm>``, ``arm_count/<arm>`` and the batch's ``mixture_version``, built with
:func:`~workers.arm_loss.arm_metrics`) is observed once, then ``propose(Plan(horizon=step,
last_step=step))`` is asked for the next stage and what it returns is accepted with the
next version, which the sampler's ``weights_for`` serves from the stage's first step on.
Workers answered up to ``step`` is the horizon, so a decision never covers a step already
drawn, as with a real head.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tuner.controllers.base import Plan
from tuner.controllers.mixture import BanditMixture, build_mixture
from tuner.errors import ConfigError
from tuner.records import Decision, Report
from workers.arm_loss import arm_metrics, split_loss_by_arm
from workers.batch_sampler import MixtureBatchSampler
from workers.mixture import WeightsFn
from workers.tasks.mixture_lm import MixtureLMTask


@dataclass(frozen=True)
class RunSpec:
    """What to train. Exactly one of ``weights``, ``schedule`` and ``controller`` is set.

    Attributes:
        method: Label the result carries (``"uniform"``, ``"grid:+code"``, ``"odm"``...).
        seed: Seed of the model's initialisation, the draws and the controller.
        steps: Optimizer steps.
        eval_every: Steps between validation measurements (also after the last step).
        weights: A fixed mixture for the whole run.
        schedule: Fixed mixtures by step, ``((from_step, weights), ...)`` from step 0.
        controller: A :func:`~tuner.controllers.mixture.build_mixture` spec without ``arms``,
            ``total_steps`` and ``seed``, which the run fills in.
    """

    method: str
    seed: int
    steps: int
    eval_every: int
    weights: Mapping[str, float] | None = None
    schedule: Sequence[tuple[int, Mapping[str, float]]] | None = None
    controller: Mapping[str, Any] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.weights, self.schedule, self.controller))
        if given != 1:
            raise ConfigError(f"give one of weights, schedule, controller; got {given} ({self})")
        if self.steps < 1 or self.eval_every < 1:
            raise ConfigError(f"steps and eval_every must be >= 1, got steps={self.steps}")


class Decisions:
    """Accepted decisions, answering the sampler's ``weights_for(step)``."""

    def __init__(self) -> None:
        self.log: list[Decision] = []

    def add(self, decision: Decision) -> None:
        self.log.append(decision)

    def weights_for(self, step: int) -> tuple[int, Mapping[str, float]] | None:
        for d in reversed(self.log):  # the newest version covering the step wins
            if d.covers(step) and d.mixture is not None:
                return d.version, d.mixture
        return None


def _schedule_fn(schedule: Sequence[tuple[int, Mapping[str, float]]]) -> WeightsFn:
    """Weights by phase; phase ``i`` is mixture version ``i + 1``."""
    phases = sorted(schedule, key=lambda p: p[0])

    def weights_for(step: int) -> tuple[int, Mapping[str, float]] | None:
        version = None
        for i, (start, _) in enumerate(phases):
            if step >= start:
                version = i
        return None if version is None else (version + 1, phases[version][1])

    return weights_for


def train_run(task: MixtureLMTask, spec: RunSpec) -> dict[str, Any]:
    """Train one run; returns its JSON record (curves, weight trajectory, timings).

    Keys: ``method``, ``seed``, ``total_steps``, ``exploration_steps`` (0: a bandit explores
    within the run's steps), ``wall_s``, ``final`` (validation loss per domain after the
    last step), ``curve`` (``step`` and per-domain ``val`` lists, step 0 included),
    ``weights`` (``[{"step", "weights"}]``, one entry per mixture put in force) and, for a
    controller, ``controller`` (its summary at the end).
    """
    start = time.perf_counter()
    arms = task.arms
    decisions = Decisions()
    ctl: BanditMixture | None = None
    trajectory: list[dict[str, Any]] = []
    weights_fn: WeightsFn | None = None
    initial: Mapping[str, float] | str = "uniform"
    if spec.weights is not None:
        initial = spec.weights
        trajectory = [{"step": 0, "weights": dict(spec.weights)}]
    elif spec.schedule is not None:
        weights_fn = _schedule_fn(spec.schedule)
        trajectory = [{"step": s, "weights": dict(w)} for s, w in spec.schedule]
    else:
        settings = dict(spec.controller or {})
        settings.update(arms=list(arms), total_steps=spec.steps, seed=spec.seed)
        ctl = build_mixture(settings)
        weights_fn = decisions.weights_for
    sampler = MixtureBatchSampler(
        task.arm_starts,
        task.cfg.batch_size,
        weights_fn,
        initial_weights=initial,
        seed=spec.seed,
    )
    model = task.model(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.cfg.lr)
    first = task.evaluate(model)
    curve: dict[str, Any] = {"step": [0], "val": {d: [round(v, 5)] for d, v in first.items()}}
    version = 0

    def decide(step: int) -> None:
        nonlocal version
        if ctl is None:
            return
        plan = Plan(horizon=step, last_step=max(step, ctl.last_step))
        d = ctl.propose(plan)
        if d is None:
            return
        version += 1
        d = d.with_version(version)
        ctl.accept(d)
        decisions.add(d)
        weights = {a: round(w, 5) for a, w in (d.mixture or {}).items()}
        trajectory.append({"step": d.from_step, "weights": weights})

    decide(-1)  # the first stage, before any step is drawn
    batches = iter(sampler)
    for step in range(spec.steps):
        slots = next(batches)
        x = task.gather([s.idx for s in slots])
        per_sample = task.per_sample_loss(model, x)
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if ctl is not None:
            ids = [s.arm for s in slots]
            arm_loss, arm_count = split_loss_by_arm(per_sample, ids, arms)
            metrics = {"loss": loss.item(), **arm_metrics(arm_loss, arm_count, slots[0].version)}
            ctl.observe([Report(rank=0, step=step, metrics=metrics, ts=0.0)])
            decide(step)
        done = step + 1
        if done % spec.eval_every == 0 or done == spec.steps:
            curve["step"].append(done)
            for d, v in task.evaluate(model).items():
                curve["val"][d].append(round(v, 5))
    final = {d: vals[-1] for d, vals in curve["val"].items()}
    out: dict[str, Any] = {
        "method": spec.method,
        "seed": spec.seed,
        "total_steps": spec.steps,
        "exploration_steps": 0,
        "wall_s": round(time.perf_counter() - start, 2),
        "final": final,
        "curve": curve,
        "weights": trajectory,
        **dict(spec.info),
    }
    if ctl is not None:
        out["controller"] = ctl.summary()
    return out


def steps_to_target(steps: Sequence[int], losses: Sequence[float], target: float) -> int | None:
    """The first measured step (after step 0) whose loss is ``<= target``; ``None`` if none."""
    for s, v in zip(steps, losses, strict=True):
        if s > 0 and v <= target:
            return int(s)
    return None
