"""One population run of an LR benchmark: P trials stepped in lockstep under one
:class:`~tuner.controllers.base.PopulationController`, in-process.

The trials are driven as :class:`~tuner.population_head.PopulationLoop` drives them, with a
sync boundary at every step: before step ``n`` every trial's ``propose`` is asked, with
every trial's horizon and last reported step in the plan, until none has more to write.
Directives are applied as :class:`~workers.explore.StateMover` applies them: a peer's
published state first (the publishers of a step go before the trials that load from them),
then the snapshot, the local restore, and the publish. States are kept in memory instead
of Redis: the controller, the decisions and the steps are the same.

The result is trial 0's: after a stage every trial trains the same state, so all end
alike. ``exploration_steps`` counts the steps trial 0 trained that its final state does
not descend from (its own line, or the peer's it loaded), so it measures exploration on
one trial's timeline, the time a population run takes; the other trials' steps are in
``info["population_steps"]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from tuner.bench.lr_run import RunResult, Schedule, Trainable, _covering, _result
from tuner.controllers.base import Plan, PopulationController
from tuner.controllers.curves import DIVERGED_METRIC
from tuner.records import RESTORABLE_METRIC, Decision, DecisionKind, Report


def run_population(
    method: str,
    trainables: Sequence[Trainable],
    controller: PopulationController,
    base: Schedule,
    *,
    total_steps: int,
    eval_every: int,
    seed: int,
    metric: str = "loss",
) -> RunResult:
    """Train every trial ``total_steps`` steps under ``controller`` (``base`` elsewhere)."""
    start = time.perf_counter()
    p = len(trainables)
    decisions: list[list[Decision]] = [[] for _ in range(p)]
    snapshots: list[dict[int, tuple[Any, int]]] = [{} for _ in range(p)]
    published: dict[tuple[int, int], tuple[Any, int]] = {}
    version = [0] * p
    next_stage = [0] * p
    lineage = [0] * p
    curve: list[tuple[int, float, bool]] = [(0, trainables[0].evaluate(), True)]
    lrs: list[tuple[int, float]] = []
    for step in range(total_steps):
        wrote = True
        while wrote:
            wrote = False
            peers = tuple([step - 1] * p)
            for i in range(p):
                plan = Plan(step - 1, step - 1, next_stage[i], peers, peers)
                proposal = controller.propose(i, plan)
                if proposal is None:
                    continue
                version[i] += 1
                stored = proposal.with_version(version[i])
                decisions[i].append(stored)
                next_stage[i] = max(next_stage[i], stored.stage + 1)
                controller.accept(i, stored)
                wrote = True
        current = [_covering(decisions[i], step) for i in range(p)]
        order = sorted(range(p), key=lambda i: not (current[i] and current[i].publish))  # type: ignore[union-attr]
        for i in order:
            d = current[i]
            if d is None or d.from_step != step:
                continue
            if d.restore_peer is not None:
                state, lineage[i] = published[(d.restore_peer, step)]
                trainables[i].load(state)
            if d.snapshot:
                snapshots[i][step] = (trainables[i].save(), lineage[i])
            if d.restore_from is not None:
                state, lineage[i] = snapshots[i][d.restore_from]
                trainables[i].load(state)
            if d.publish:
                published[(i, step)] = (trainables[i].save(), lineage[i])
        for i in range(p):
            d = current[i]
            lr = d.lr_at(step) if d is not None else None
            if lr is None:
                lr = base(step)
            if i == 0:
                lrs.append((step, lr))
            loss = trainables[i].step(lr)
            lineage[i] += 1
            metrics = {RESTORABLE_METRIC: 1.0}
            if math.isfinite(loss):
                metrics[metric] = loss
            else:
                metrics[DIVERGED_METRIC] = 1.0
            controller.observe(i, [Report(rank=0, step=step, metrics=metrics)])
        if (step + 1) % eval_every == 0 or step + 1 == total_steps:
            kept = current[0] is None or current[0].kind != DecisionKind.EXPLORE
            curve.append((step + 1, trainables[0].evaluate(), kept))
    wall_s = time.perf_counter() - start
    info = {
        "decisions": len(decisions[0]),
        "trials": p,
        "summary": controller.summary(),
        "population_steps": p * total_steps,
    }
    return _result(method, seed, total_steps, curve, lrs, total_steps - lineage[0], wall_s, info)
