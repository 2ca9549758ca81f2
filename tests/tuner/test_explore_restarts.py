"""A rank that restarts mid-stage: the ``explore`` and ``autolrs`` controllers give the stage
up with what they had scored, and the run goes on to its end (pure logic, in-process on the
NQM)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from tuner.bench.lr import NQMTrainable
from tuner.bench.nqm import NQM
from tuner.commands.status import summarize_state
from tuner.controllers.autolrs import AutoLRSClassic, AutoLRSConfig
from tuner.controllers.base import Plan
from tuner.controllers.explore_lr import ExploreConfig, ExploreLR
from tuner.controllers.restarts import RestartWatch
from tuner.controllers.staged import StagedLRController
from tuner.errors import ConfigError
from tuner.records import (
    RESTORABLE_METRIC,
    RESTORE_MISSED_METRIC,
    Decision,
    DecisionKind,
    Report,
)

STEPS = 1200


def _covering(decisions: list[Decision], step: int) -> Decision | None:
    live = [d for d in decisions if d.from_step <= step and (d.until_step or 10**9) > step]
    return max(live, key=lambda d: d.version) if live else None


def _explore() -> ExploreLR:
    return ExploreLR(
        ExploreConfig(init_lr=0.2, lr_min=0.005, lr_max=2.0, total_steps=STEPS, seed=0)
    )


def _autolrs() -> AutoLRSClassic:
    return AutoLRSClassic(AutoLRSConfig(lr_min=0.005, lr_max=2.0, tau=100, total_steps=500))


def _train(
    crash: tuple[int, int] | None,
    json_restart: bool = False,
    make: Callable[[], StagedLRController] = _explore,
) -> tuple[Any, list[Decision], float]:
    """Train the NQM under ``explore``. ``crash=(at, resume)``: at step ``at`` the rank's
    process dies and comes back from its checkpoint of step ``resume``, under attempt 1 and
    without its snapshots, as a restarted rank does; it misses the restores it is asked
    for and says so. ``json_restart``: the head restarts (from its stored state) then too.
    Returns the controller and the list of decisions."""
    ctl = make()
    run = NQMTrainable(NQM(seed=0))
    decisions: list[Decision] = []
    snapshots: dict[int, Any] = {}
    checkpoints: dict[int, Any] = {}
    attempt, missed, step, top = 0, None, 0, -1
    total = ctl.config.total_steps
    while step < total:
        top = max(top, step)
        plan = Plan(horizon=top - 1, last_step=step - 1, next_stage=0)
        while (p := ctl.propose(plan)) is not None:
            stored = p.with_version(len(decisions) + 1)
            decisions.append(stored)
            ctl.accept(stored)
        if crash is not None and step == crash[0] and attempt == 0:
            attempt, step, snapshots = 1, crash[1], {}
            run.load(checkpoints[step])
            if json_restart:
                fresh = make()
                fresh.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
                ctl = fresh
            continue
        if step % 10 == 0:
            checkpoints[step] = run.save()
        d = _covering(decisions, step)
        if d is not None and d.from_step == step:
            if d.snapshot:
                snapshots[step] = run.save()
            if d.restore_from is not None and d.restore_from in snapshots:
                run.load(snapshots[d.restore_from])
            elif d.restore_from is not None:  # as workers.explore does: take it from here
                snapshots[d.restore_from], missed = run.save(), step
        lr = d.lr_at(step) if d is not None else None
        loss = run.step(0.2 if lr is None else lr)
        metrics = {RESTORABLE_METRIC: 1.0, "loss": loss}
        if missed is not None:
            metrics[RESTORE_MISSED_METRIC] = float(missed)
        ctl.observe([Report(rank=0, step=step, metrics=metrics, attempt=attempt)])
        step += 1
    return ctl, decisions, run.evaluate()


def _stage_of(decisions: list[Decision]) -> tuple[int, int]:
    """The first stage's first step and the first step of its second probe."""
    probes = [d for d in decisions if d.info["segment"]["role"] == "probe"]
    second = next(d for d in probes if d.restore_from is not None)
    return probes[0].from_step, second.from_step


def test_a_run_without_a_restart_keeps_the_winners_steps() -> None:
    _, decisions, _ = _train(None)
    commit = next(d for d in decisions if d.kind == DecisionKind.COMMIT)
    assert commit.restore_from is not None and "abandoned" not in commit.info["segment"]


@pytest.mark.parametrize("head_restarts", [False, True])
def test_a_rank_restarted_mid_stage_ends_the_stage_with_what_was_scored(
    head_restarts: bool,
) -> None:
    _, plain, plain_loss = _train(None)
    start, second = _stage_of(plain)
    # the rank dies 5 steps into the second candidate, back to a checkpoint in the first
    crash = (second + 5, (start // 10 + 1) * 10)
    assert start < crash[1] < second
    ctl, decisions, loss = _train(crash, json_restart=head_restarts)
    commits = [d for d in decisions if d.kind == DecisionKind.COMMIT]
    assert len(commits) == 1
    commit = commits[0]
    seg = commit.info["segment"]
    # the last thing seen: the replayed second candidate found no snapshot to restore
    assert seg["abandoned"] == {"rank": 0, "step": second, "why": "found no snapshot to restore"}
    # back to the stage's snapshot: on the restarted rank, its state at the first miss
    assert commit.restore_from == start
    assert commit.until_step == STEPS and commit.lr_end == 0.0  # the run goes on to its end
    # the LR is the first candidate's, scored before the crash: the second never finished
    first_lr = plain[0].lr
    assert commit.lr == pytest.approx(first_lr)
    assert ctl.finished
    shown = summarize_state(json.loads(json.dumps(ctl.state_dict())))
    assert shown["method"] == "explore" and shown["restarts"] == 2  # the restart, the miss
    assert math.isfinite(loss) and loss < 1.5 * plain_loss  # a stage lost; a sound run still


def test_autolrs_ends_its_stage_with_the_candidates_before_the_restart() -> None:
    _, plain, _ = _train(None, make=_autolrs)
    probes = [d for d in plain if d.info["segment"]["role"] == "probe"]
    start = probes[0].from_step
    fourth = probes[3]  # the rank dies 3 steps into the fourth candidate
    crash = (fourth.from_step + 3, (fourth.from_step // 10) * 10)
    assert start < crash[1] <= fourth.from_step
    ctl, decisions, _ = _train(crash, make=_autolrs)
    first_commit = next(d for d in decisions if d.kind == DecisionKind.COMMIT)
    assert first_commit.restore_from == start and first_commit.from_step == fourth.until_step
    assert len(first_commit.info["segment"]["forecasts"]) == 3  # the three before it
    assert first_commit.lr in {p.lr for p in probes[:3]}
    later = [d for d in decisions if d.info["segment"]["role"] == "commit"][1:]
    assert later and all(d.restore_from is not None for d in later)  # later stages as usual
    assert ctl.restarts.count >= 1


def test_a_missed_restore_alone_ends_the_stage() -> None:
    watch = RestartWatch()
    watch.observe([Report(rank=0, step=5, metrics={"loss": 1.0})])
    assert watch.count == 0
    missed = {"loss": 1.0, RESTORE_MISSED_METRIC: 6.0}
    watch.observe([Report(rank=0, step=s, metrics=missed) for s in (6, 7, 8)])
    assert watch.count == 1 and watch.last == {
        "rank": 0,
        "step": 6,
        "why": "found no snapshot to restore",
    }
    watch.observe([Report(rank=1, step=9, metrics={"loss": 1.0}, attempt=3)])  # first seen
    assert watch.count == 1
    watch.observe([Report(rank=1, step=4, metrics={"loss": 1.0}, attempt=4)])
    assert watch.count == 2 and watch.last["step"] == 4  # type: ignore[index]
    again = RestartWatch()
    again.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert again.state_dict() == watch.state_dict()
    again.load_state_dict(None)  # stored before restarts were watched
    assert again.count == 0
    with pytest.raises(ConfigError, match="RestartWatch state is malformed"):
        again.load_state_dict({"attempts": []})
