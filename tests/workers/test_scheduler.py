"""TautuneLR, the torch LR scheduler: base schedule underneath, decisions on top, torch's
contract (get_last_lr, param-group ratios, state_dict), and the metrics it adds to reports."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from trials.store import JobStore, Store
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind
from workers.agent import Agent
from workers.scheduler import TautuneLR
from workers.schedules import parse_schedule

MakeAgent = Callable[..., Agent]


@pytest.fixture
def make_agent() -> Iterator[MakeAgent]:
    made: list[Agent] = []

    def make(job: JobStore, rank: int = 0, **kwargs: Any) -> Agent:
        kwargs.setdefault("flush_every", 1000)
        kwargs.setdefault("flush_interval_s", 30.0)
        agent = Agent(job, rank, **kwargs)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run(opt: torch.optim.Optimizer, sched: TautuneLR, steps: int) -> list[list[float]]:
    """The LRs of every param group used by each of ``steps`` optimizer steps."""
    used = []
    for _ in range(steps):
        used.append([g["lr"] for g in opt.param_groups])
        assert sched.get_last_lr() == used[-1]
        opt.step()
        sched.step()
    return used


# -- base schedule only ------------------------------------------------------------------------


def test_without_agent_follows_warmup_cosine_exactly() -> None:
    opt = _optimizer(0.1)
    sched = TautuneLR(opt, None, base="warmup=10+cosine", total_steps=100)
    used = [lrs[0] for lrs in _run(opt, sched, 120)]
    # Hand-computed points: linear warmup 0 -> 0.1 over 10 steps, then a half cosine over
    # the remaining 90 steps down to 0, flat afterwards.
    assert used[0] == 0.0
    assert used[5] == pytest.approx(0.05)
    assert used[10] == pytest.approx(0.1)
    assert used[55] == pytest.approx(0.05)
    assert used[100] == pytest.approx(0.0, abs=1e-15) and used[119] == used[100]
    expected = parse_schedule("warmup=10+cosine", peak_lr=0.1, total_steps=100)
    for step, lr in enumerate(used):
        want = 0.1 * step / 10 if step < 10 else 0.05 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert lr == pytest.approx(want if step <= 100 else 0.0, abs=1e-12), step
        assert lr == pytest.approx(expected.lr(step), abs=1e-15), step
    assert sched.last_epoch == 120


def test_default_base_is_constant_at_the_optimizer_lr() -> None:
    opt = _optimizer(0.03)
    sched = TautuneLR(opt, None)
    assert [lrs[0] for lrs in _run(opt, sched, 20)] == [0.03] * 20


def test_param_groups_keep_their_ratio() -> None:
    opt = _optimizer(0.1, 0.01, 0.4)
    sched = TautuneLR(opt, None, base="warmup=4+linear", total_steps=40)
    used = _run(opt, sched, 45)
    assert used[10][0] > 0 and used[10][0] != used[20][0]  # the LR really moves
    for step, (a, b, c) in enumerate(used):
        assert b == pytest.approx(a * 0.1, abs=1e-15), step
        assert c == pytest.approx(a * 4.0, abs=1e-15), step


def test_rejects_an_optimizer_without_a_positive_lr() -> None:
    with pytest.raises(ConfigError, match="lr > 0"):
        TautuneLR(_optimizer(0.0), None)


# -- decisions on top -----------------------------------------------------------------------


def _commit(job: JobStore, decision: Decision) -> None:
    job.commit(expected_version=job.version(), decision=decision)


def test_decisions_override_the_base_inside_their_ranges(
    store: Store, make_agent: MakeAgent
) -> None:
    job = store.job("override")
    _commit(job, Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=10, until_step=20, lr=0.5))
    _commit(
        job,
        Decision(
            stage=1, kind=DecisionKind.COMMIT, from_step=30, until_step=40, lr=0.4, lr_end=0.2
        ),
    )
    _commit(job, Decision(stage=2, kind=DecisionKind.HOLD, from_step=40, until_step=45))
    _commit(job, Decision(stage=3, kind=DecisionKind.COMMIT, from_step=50, lr=0.01))
    agent = make_agent(job, 0, lookahead=4)
    opt = _optimizer(0.1, 0.05)
    sched = agent.lr_scheduler(opt, "warmup=5+linear", total_steps=60)
    base = parse_schedule("warmup=5+linear", peak_lr=0.1, total_steps=60)
    used = _run(opt, sched, 70)
    for step, (lr, second) in enumerate(used):
        if 10 <= step < 20:
            want = 0.5
        elif 30 <= step < 40:
            want = 0.4 + (0.2 - 0.4) * (step - 30) / 10  # lr_end: linear interpolation
        elif step >= 50:
            want = 0.01
        else:  # before, between, and in a hold decision without an LR: the base schedule
            want = base.lr(step)
        assert lr == pytest.approx(want, abs=1e-15), step
        assert second == pytest.approx(want / 2, abs=1e-15), step
    assert used[35][0] == pytest.approx(0.3)


def test_decision_applied_at_the_first_step(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("first")
    _commit(job, Decision(stage=0, kind=DecisionKind.COMMIT, from_step=0, until_step=3, lr=0.7))
    agent = make_agent(job)
    opt = _optimizer(0.1)
    sched = agent.lr_scheduler(opt)
    assert opt.param_groups[0]["lr"] == 0.7  # set at construction, before the first step
    assert [lrs[0] for lrs in _run(opt, sched, 5)] == [0.7, 0.7, 0.7, 0.1, 0.1]


# -- state_dict --------------------------------------------------------------------------------


def test_state_dict_holds_no_live_objects(store: Store, make_agent: MakeAgent) -> None:
    agent = make_agent(store.job("state"))
    opt = _optimizer(0.1, 0.2)
    sched = agent.lr_scheduler(opt, "warmup=3+cosine", total_steps=50)
    _run(opt, sched, 7)
    state = sched.state_dict()
    assert "optimizer" not in state and "agent" not in state
    text = json.dumps(state)  # JSON-able: plain numbers, lists and the schedule's spec
    assert "redis" not in text.lower()
    blob = pickle.dumps(state)
    assert b"redis" not in blob.lower() and b"Agent" not in blob and b"SGD" not in blob
    assert state["last_epoch"] == 7
    assert parse_schedule(state["base"]) == sched.base


def test_load_state_dict_continues_the_lr_sequence() -> None:
    spec = "warmup=10+cosine:final_lr=0.001"
    opt = _optimizer(0.1, 0.3)
    sched = TautuneLR(opt, None, base=spec, total_steps=80)
    _run(opt, sched, 25)
    state = json.loads(json.dumps(sched.state_dict()))  # as a checkpoint would store it
    continued = _run(opt, sched, 40)

    # A fresh process: new optimizer, a scheduler built with another base, then restored.
    opt2 = _optimizer(0.1, 0.3)
    fresh = TautuneLR(opt2, None)
    assert fresh.last_epoch == 0
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 25
    assert fresh.base == parse_schedule(spec, peak_lr=0.1, total_steps=80)
    assert fresh.get_last_lr() == continued[0]
    opt2.step()
    fresh.step()
    resumed = [continued[0], *_run(opt2, fresh, 39)]
    assert resumed == continued
    assert fresh.last_epoch == sched.last_epoch == 65


def test_load_state_dict_with_an_agent_keeps_following_decisions(
    store: Store, make_agent: MakeAgent
) -> None:
    job = store.job("resume")
    _commit(job, Decision(stage=0, kind=DecisionKind.COMMIT, from_step=20, until_step=30, lr=0.9))
    opt = _optimizer(0.1)
    sched = make_agent(job, 0).lr_scheduler(opt, "linear", total_steps=50)
    _run(opt, sched, 15)
    state = sched.state_dict()
    continued = _run(opt, sched, 25)

    opt2 = _optimizer(0.1)
    fresh = make_agent(job, 0, attempt=1).lr_scheduler(opt2)
    fresh.load_state_dict(state)
    opt2.step()
    fresh.step()
    assert [continued[0], *_run(opt2, fresh, 24)] == continued
    assert continued[4][0] != 0.9 and continued[5][0] == 0.9 and continued[15][0] != 0.9


def test_after_the_final_decay_the_lr_stays_at_its_end(store: Store, make_agent: MakeAgent) -> None:
    # the loop's last scheduler.step() moves to total_steps, which no decision covers: the
    # optimizer keeps the decay's end (a checkpoint or a logged LR), not the base schedule's
    job = store.job("after")
    final = Decision(
        stage=0,
        kind=DecisionKind.COMMIT,
        from_step=0,
        until_step=40,
        lr=0.5,
        lr_end=0.0,
        info={"final": True},
    )
    _commit(job, final)
    opt = _optimizer(0.1)
    sched = make_agent(job, 0).lr_scheduler(opt, total_steps=40)
    used = _run(opt, sched, 40)
    assert used[0][0] == 0.5 and used[-1][0] == pytest.approx(0.5 / 40)
    assert opt.param_groups[0]["lr"] == 0.0 and sched.last_epoch == 40


# -- reports carry the LR ------------------------------------------------------------------------


def test_report_adds_lr_and_decision_version(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("metrics")
    _commit(job, Decision(stage=0, kind=DecisionKind.COMMIT, from_step=5, until_step=10, lr=0.5))
    agent = make_agent(job)
    opt = _optimizer(0.1)
    sched = agent.lr_scheduler(opt, "linear", total_steps=20)
    used = []
    for step in range(15):  # the loop of the Agent docstring
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        agent.report(step, loss=1.0 / (step + 1))
    agent.report(15, loss=0.01, lr=123.0)  # a metric the caller passes wins
    agent.flush()
    reports = job.all_reports()
    assert [r.step for r in reports] == list(range(16))
    for r in reports[:15]:
        assert r.metrics["lr"] == pytest.approx(used[r.step], abs=1e-15), r.step
        want_version = 1.0 if 5 <= r.step < 10 else 0.0
        assert r.metrics["decision_version"] == want_version, r.step
        assert r.metrics["loss"] == pytest.approx(1.0 / (r.step + 1))
    assert reports[15].metrics["lr"] == 123.0


def test_report_without_a_scheduler_adds_nothing(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("plain")
    agent = make_agent(job)
    agent.report(0, loss=1.0)
    agent.flush()
    assert dict(job.all_reports()[0].metrics) == {"loss": 1.0}


@pytest.mark.parametrize(
    ("loop", "said"),
    [
        ("report, then step", None),
        ("step, then report", None),
        ("steps from 1", "reported step 1, but its LR scheduler is at step 0"),
        ("scheduler per epoch", "reported step 1, but its LR scheduler is at step 0"),
    ],
)
def test_a_report_ahead_of_the_scheduler_warns_once(
    store: Store, make_agent: MakeAgent, loop: str, said: str | None
) -> None:
    agent = make_agent(store.job(loop.replace(" ", "-").replace(",", "")))
    opt = _optimizer(0.1)
    sched = agent.lr_scheduler(opt, "linear", total_steps=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(40):
            opt.step()
            if loop == "report, then step":
                agent.report(step, loss=1.0)
                sched.step()
            elif loop == "step, then report":
                sched.step()
                agent.report(step, loss=1.0)
            elif loop == "steps from 1":
                agent.report(step + 1, loss=1.0)
                sched.step()
            else:  # epochs of 4 steps
                agent.report(step, loss=1.0)
                if step % 4 == 3:
                    sched.step()
    told = [str(w.message) for w in caught if "reported step" in str(w.message)]
    assert told == ([] if said is None else [told[0]])
    assert said is None or said in told[0]


@pytest.mark.parametrize(
    ("until", "match"),
    [
        (30, "the LR follows the base schedule from step 30 on"),
        (90, "the run ends 30 steps before the decay does"),
        (60, None),
        (None, None),
    ],
)
def test_a_final_decision_that_ends_elsewhere_than_the_loop_warns_once(
    store: Store, make_agent: MakeAgent, until: int | None, match: str | None
) -> None:
    job = store.job(f"end-{until}")
    final = Decision(
        stage=0,
        kind=DecisionKind.COMMIT,
        from_step=10,
        until_step=until,
        lr=0.1,
        lr_end=0.0 if until else None,
        info={"final": True},
    )
    _commit(job, final)
    agent = make_agent(job, 0, lookahead=4)
    opt = _optimizer(0.1, 0.05)
    sched = agent.lr_scheduler(opt, "linear", total_steps=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(opt, sched, 60)
    said = [str(w.message) for w in caught if "total_steps" in str(w.message)]
    if match is None:
        assert said == []
    else:
        assert len(said) == 1 and match in said[0] and "total_steps=60" in said[0], said


def test_a_second_scheduler_changing_the_lr_is_warned_about_once() -> None:
    opt = _optimizer(0.1)
    sched = TautuneLR(opt, None, base="cosine", total_steps=100)
    own = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            opt.step()
            sched.step()
            own.step()  # the user's warmup, stepped after tautune's: the two compound
    said = [str(w.message) for w in caught if "something else changes it" in str(w.message)]
    assert len(said) == 1 and "base='warmup=100+cosine'" in said[0]


def test_no_warning_from_tautunes_scheduler_alone_nor_after_a_resume() -> None:
    opt = _optimizer(0.1, 0.3)
    sched = TautuneLR(opt, None, base="warmup=10+cosine", total_steps=80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(opt, sched, 25)
        state = json.loads(json.dumps(sched.state_dict()))
        fresh_opt = _optimizer(0.1, 0.3)  # a checkpoint's scheduler, a fresh optimizer
        fresh = TautuneLR(fresh_opt, None)
        fresh.load_state_dict(state)
        fresh_opt.step()  # at the optimizer's own LR, as the test above
        fresh.step()
        _run(fresh_opt, fresh, 10)
