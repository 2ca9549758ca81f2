"""AutoLRS classic mode, driven in-process on the NQM: the published stage structure."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tuner.bench.lr import NQMTrainable
from tuner.bench.lr_run import run_controller
from tuner.bench.nqm import NQM
from tuner.controllers.autolrs import AutoLRSClassic, AutoLRSConfig
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind


class Recorder(AutoLRSClassic):
    def __init__(self, config: AutoLRSConfig) -> None:
        super().__init__(config)
        self.accepted: list[Decision] = []

    def accept(self, decision: Decision) -> None:
        self.accepted.append(decision)
        super().accept(decision)


def _run(total: int = 1500, tau: int = 100) -> tuple[Recorder, int]:
    ctl = Recorder(AutoLRSConfig(lr_min=0.01, lr_max=1.5, tau=tau, total_steps=total))
    result = run_controller(
        "classic",
        NQMTrainable(NQM(seed=0)),
        ctl,
        lambda s: 0.1,
        total_steps=total,
        eval_every=100,
        seed=0,
    )
    return ctl, result.exploration_steps


def test_each_stage_tries_ten_candidates_from_one_snapshot_then_trains_tau() -> None:
    ctl, wasted = _run()
    d = ctl.accepted
    first = d[:11]
    probes, commit = first[:10], first[10]
    assert probes[0].snapshot and all(p.restore_from == probes[0].from_step for p in probes[1:])
    assert all(p.kind == DecisionKind.EXPLORE for p in probes)
    assert [p.until_step - p.from_step for p in probes] == [10] * 10  # tau' = tau / 10
    assert commit.restore_from == probes[0].from_step
    assert commit.until_step - commit.from_step == 100
    forecasts = commit.info["segment"]["forecasts"]
    assert commit.lr == probes[min(range(10), key=forecasts.__getitem__)].lr
    # candidates fill the range: no LR is tried twice in a stage
    assert len({p.lr for p in probes}) == 10
    # tau doubles from one stage to the next
    assert ctl.stages[1]["tau"] == 200 and d[12].until_step - d[12].from_step == 20
    for a, b in itertools.pairwise(d):
        assert a.until_step == b.from_step
    assert d[-1].until_step == 1500 and ctl.done
    # the exploration costs as much as training: every probe step is thrown away
    assert wasted >= sum(p.until_step - p.from_step for p in d if p.kind == DecisionKind.EXPLORE)


def test_state_round_trip() -> None:
    ctl, _ = _run(total=400, tau=40)
    twin = AutoLRSClassic(ctl.config)
    twin.load_state_dict(ctl.state_dict())
    assert twin.state_dict() == ctl.state_dict()


@pytest.mark.parametrize(
    "kw",
    [
        {"lr_min": 0.0, "lr_max": 1.0},
        {"lr_min": 1.0, "lr_max": 0.5},
        {"lr_min": 0.1, "lr_max": 1.0, "tau": 10},
        {"lr_min": 0.1, "lr_max": 1.0, "k": 1},
    ],
)
def test_bad_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        AutoLRSConfig(**kw)  # type: ignore[arg-type]


def test_detach_mid_stage_restores_the_snapshot_and_holds_the_best_forecast(
    drive_nqm: Any,
) -> None:
    cfg = AutoLRSConfig(lr_min=0.01, lr_max=1.5, tau=100, total_steps=1500)

    def probing(stage: int, cands: int) -> Any:
        return lambda c: c.stage == stage and len(c.cands) == cands and c.last["role"] == "probe"

    # the first candidate of the first stage is still training: back to the snapshot and
    # the base schedule
    ctl = AutoLRSClassic(cfg)
    plan = drive_nqm(ctl, probing(0, 1))
    hold = ctl.detach_decision(plan)
    assert hold is not None and hold.kind is DecisionKind.HOLD and hold.lr is None
    assert hold.restore_from == ctl.stage_start and hold.until_step is None
    # four finished in the second stage: the one of least forecast loss, held from the
    # stage's snapshot
    ctl = AutoLRSClassic(cfg)
    plan = drive_nqm(ctl, probing(1, 5))
    hold = ctl.detach_decision(plan)
    assert hold is not None and hold.restore_from == ctl.stage_start and hold.info["detached"]
    forecasts = hold.info["segment"]["forecasts"]
    assert len(forecasts) == 4
    assert hold.lr == ctl.cands[min(range(4), key=forecasts.__getitem__)]["lr"]
    ctl.accept(hold.with_version(99))
    assert ctl.done and ctl.propose(plan) is None
    # between stages (a commit in force) there is nothing to undo: the default hold
    ctl = AutoLRSClassic(cfg)
    plan = drive_nqm(ctl, lambda c: c.last is not None and c.last["role"] == "commit")
    assert ctl.detach_decision(plan) is None
