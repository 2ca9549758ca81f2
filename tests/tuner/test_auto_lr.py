"""The default LR method, ``auto``: ``explore`` where the workers restore, ``stagewise``
where they cannot. Driven in-process on the NQM (pure logic: no Ray, no Redis)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tuner.api import LRSpec
from tuner.bench.lr import NQMTrainable
from tuner.bench.lr_run import run_controller
from tuner.bench.nqm import NQM
from tuner.controllers.auto_lr import AutoLR
from tuner.controllers.base import Controller, Plan
from tuner.controllers.explore_lr import ExploreConfig, ExploreLR
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
from tuner.errors import ConfigError
from tuner.records import RESTORABLE_METRIC, Decision, Report
from tuner.specs import build_controller, parse_lr_spec

STEPS = 600
SETTINGS: dict[str, Any] = {
    "init_lr": 0.2,
    "lr_min": 0.005,
    "lr_max": 2.0,
    "tau": 40,
    "total_steps": STEPS,
    "seed": 0,
}


def _drive(
    ctl: Controller, restorable: bool, first_ask: int = 0, restart_at: int | None = None
) -> list[Decision]:
    """Train the NQM under ``ctl`` as the workers would, reporting ``restorable``; the head
    first asks for a decision before step ``first_ask``, and at step ``restart_at`` it
    restarts: a fresh ``AutoLR`` loads the state the old one stored (as JSON)."""
    decisions: list[Decision] = []
    nqm = NQM(seed=0)
    version = 0
    for step in range(STEPS):
        if step == restart_at:
            stored = json.loads(json.dumps(ctl.state_dict()))
            ctl = AutoLR(SETTINGS)
            ctl.load_state_dict(stored)
        while step >= first_ask and (d := ctl.propose(Plan(step - 1, step - 1))) is not None:
            version += 1
            d = d.with_version(version)
            ctl.accept(d)
            decisions.append(d)
        live = [d for d in decisions if d.covers(step)]
        lr = live[-1].lr_at(step) if live else None
        loss = nqm.step(0.2 if lr is None else lr)
        metrics = {"loss": float(loss)}
        if restorable:
            metrics[RESTORABLE_METRIC] = 1.0
        ctl.observe([Report(rank=0, step=step, metrics=metrics)])
    return decisions


def _key(decisions: list[Decision]) -> list[tuple[Any, ...]]:
    return [
        (d.from_step, d.until_step, d.lr, d.lr_end, d.snapshot, d.restore_from) for d in decisions
    ]


def _bench_run(ctl: Controller) -> Any:
    """The NQM under ``ctl`` as the benchmarks run it (reports say the run can restore)."""
    return run_controller(
        "run", NQMTrainable(NQM(seed=0)), ctl, lambda s: 0.2, total_steps=STEPS,
        eval_every=100, seed=0,
    )  # fmt: skip


def test_workers_that_restore_get_explore_and_its_exact_decisions() -> None:
    auto = AutoLR(SETTINGS)
    assert auto.choice is None and auto.propose(Plan(horizon=-1, last_step=-1)) is None
    auto_run = _bench_run(auto)
    explore_run = _bench_run(
        ExploreLR(ExploreConfig(**{k: v for k, v in SETTINGS.items() if k != "tau"}))
    )
    assert auto.choice == "explore" and auto.summary()["method"] == "explore"
    assert auto_run.final_loss == explore_run.final_loss
    assert auto_run.exploration_steps == explore_run.exploration_steps > 0
    assert auto.done


def test_workers_that_cannot_restore_get_stagewise_and_its_exact_decisions() -> None:
    auto = AutoLR(SETTINGS)
    got = _drive(auto, restorable=False)
    settings = {k: v for k, v in SETTINGS.items() if k != "seed"}
    # stagewise proposes its first stage before any report; auto waits for one, so it
    # decides as stagewise does when stagewise is first asked after the first report
    want = _drive(StagewiseLR(StagewiseConfig(**settings)), restorable=False, first_ask=1)
    assert auto.choice == "stagewise" and auto.summary()["method"] == "stagewise"
    assert len(got) > 5 and _key(got) == _key(want)
    assert all(d.restore_from is None and not d.snapshot for d in got)


def test_the_choice_and_the_chosen_state_survive_a_restart() -> None:
    auto = AutoLR(SETTINGS)
    auto.observe([Report(rank=0, step=0, metrics={"loss": 2.0, RESTORABLE_METRIC: 1.0})])
    state = json.loads(json.dumps(auto.state_dict()))  # as the head stores it
    again = AutoLR(SETTINGS)
    again.load_state_dict(state)
    assert again.choice == "explore"
    assert again.state_dict() == state
    fresh = AutoLR(SETTINGS)
    fresh.load_state_dict(json.loads(json.dumps(AutoLR(SETTINGS).state_dict())))
    assert fresh.choice is None


@pytest.mark.parametrize("restorable", [True, False])
@pytest.mark.parametrize("restart_at", [1, 40, 300])
def test_a_head_restart_anywhere_changes_no_decision(restorable: bool, restart_at: int) -> None:
    # 40: inside explore's probes (and stagewise's first stage); 300: after the commit
    straight = _drive(AutoLR(SETTINGS), restorable)
    restarted = _drive(AutoLR(SETTINGS), restorable, restart_at=restart_at)
    assert len(straight) > 3 and _key(restarted) == _key(straight)


@pytest.mark.parametrize("restorable", [True, False])
def test_a_bare_stagewise_or_explore_state_is_taken_over(restorable: bool) -> None:
    # a job whose head ran stagewise or explore by name (or before auto was the default)
    method = "explore" if restorable else "stagewise"
    auto = AutoLR(SETTINGS)
    _drive(auto, restorable, restart_at=None)
    bare = json.loads(json.dumps(auto.state_dict()["inner"]))
    again = AutoLR(SETTINGS)
    again.load_state_dict(bare)
    assert again.choice == method and again.state_dict()["inner"] == bare


@pytest.mark.parametrize(
    "state",
    [{}, {"choice": "cosine", "inner": {}}, {"choice": "explore", "inner": None}],
)
def test_a_malformed_state_is_refused(state: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="AutoLR state is malformed"):
        AutoLR(SETTINGS).load_state_dict(state)


def test_one_report_that_cannot_restore_means_stagewise() -> None:
    auto = AutoLR(SETTINGS)
    auto.observe(
        [
            Report(rank=0, step=0, metrics={"loss": 2.0, RESTORABLE_METRIC: 1.0}),
            Report(rank=1, step=0, metrics={"loss": 2.0}),
        ]
    )
    assert auto.choice == "stagewise"


def test_auto_is_the_default_everywhere_and_checks_both_methods_settings() -> None:
    assert isinstance(build_controller({"init_lr": 0.01}), AutoLR)
    assert LRSpec(init_lr=0.01).to_spec()["method"] == "auto"
    assert parse_lr_spec("init_lr=1e-3,tau=100,total_steps=5000")["init_lr"] == 1e-3
    # a setting of either method is known; both configs are checked at once
    build_controller({"init_lr": 0.01, "explore_budget": 0.2, "tau": 50, "total_steps": 2000})
    with pytest.raises(ConfigError, match="unknown setting"):
        build_controller({"init_lr": 0.01, "taw": 5})
    with pytest.raises(ConfigError, match="needs init_lr"):
        build_controller({"method": "auto", "tau": 5})
    with pytest.raises(ConfigError, match=r"as explore: explore_budget.*method=.stagewise"):
        build_controller({"init_lr": 0.01, "explore_budget": 2.0})
    with pytest.raises(ConfigError, match="as stagewise: tau"):
        build_controller({"init_lr": 0.01, "tau": 2})


@pytest.mark.parametrize(("restorable", "method"), [(True, "explore"), (False, "stagewise")])
def test_status_names_the_method_auto_picked(restorable: bool, method: str) -> None:
    from tuner.commands.status import summarize_state

    auto = AutoLR(SETTINGS)
    assert summarize_state(auto.state_dict())["method"] == "auto"
    _drive(auto, restorable=restorable)
    shown = summarize_state(json.loads(json.dumps(auto.state_dict())))
    assert shown["method"] == f"auto: {method}"
    assert shown["reports_seen"] == STEPS and shown["finished"]


def test_in_a_composite_auto_is_stagewise_and_methods_that_rewind_are_refused() -> None:
    from tuner.controllers.composite import Composite

    mixture = {"method": "exp3s", "arms": ["a", "b"], "tau": 40}
    both = build_controller({"method": "composite", "lr": SETTINGS, "mixture": mixture})
    assert isinstance(both, Composite)
    lr = both.parts["lr"]
    assert isinstance(lr, AutoLR)
    # the composite carries no snapshot or restore: the LR part must never rewind
    lr.observe([Report(rank=0, step=0, metrics={"loss": 2.0, RESTORABLE_METRIC: 1.0})])
    assert lr.choice == "stagewise"
    for method in ("explore", "autolrs"):
        spec = {"method": method, "init_lr": 0.1, "lr_min": 0.01, "lr_max": 1.0}
        with pytest.raises(ConfigError, match="rewinds the model"):
            build_controller({"method": "composite", "lr": spec, "mixture": mixture})
    # nor does a stored state that chose explore come back into one
    free = AutoLR(SETTINGS)
    free.observe([Report(rank=0, step=0, metrics={"loss": 2.0, RESTORABLE_METRIC: 1.0})])
    with pytest.raises(ConfigError, match="not allowed here"):
        AutoLR(SETTINGS, explore=False).load_state_dict(free.state_dict())
