"""The population head against a real Redis: a crash loses nothing and counts nothing twice."""

from __future__ import annotations

from typing import Any

import pytest

from trials.store import Store
from tuner.controllers.population import PopulationConfig, PopulationLR
from tuner.population_head import PopulationLoop
from tuner.records import Report
from tuner.specs import build_population_controller


def _loop(store: Store) -> PopulationLoop:
    ctl = PopulationLR(PopulationConfig(init_lr=0.01, trials=2, tau=10, total_steps=200))
    loop = PopulationLoop(store.job("pop"), ctl, 2, checkpoint_every_s=1e9, poll_s=0.0)
    loop.resync()
    return loop


def test_crashed_population_head_replays_exactly_the_unacknowledged_reports(store: Store) -> None:
    trials = [store.job("pop", t) for t in (0, 1)]
    loop = _loop(store)
    for step in range(120):
        for t, job in enumerate(trials):
            job.append_reports([Report(rank=0, step=step, metrics={"loss": 1.0 / (step + 1 + t)})])
        loop.step()
        if step == 57:  # the head dies: whatever it observed but did not commit is gone
            loop = _loop(store)
            assert loop.restored
    loop.step()
    loop._commit(0, None)
    state = store.job("pop").load_state("lr")
    assert state is not None
    assert [t["reports"] for t in state["trial_state"]] == [120, 120]
    for job in trials:
        versions = [d.version for d in job.decisions()]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 8
        assert not job.read_reports("head", pending=True).reports  # all acknowledged


def test_trial_keys_share_the_jobs_hash_tag(store: Store) -> None:
    store.job("pop", 1).append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    keys = sorted(k.decode() for k in store.client.keys("*"))
    assert keys and all(k.startswith("tt:{pop}:") for k in keys)
    assert any(":v1:trial:1:reports" in k for k in keys)
    assert store.jobs() == ["pop"]


def _feed(trials: list[Any], loop: PopulationLoop, steps: range) -> None:
    for step in steps:
        for t, job in enumerate(trials):
            metrics = {"loss": 1.0 / (step + 1 + t), "restorable": 1.0}
            job.append_reports([Report(rank=0, step=step, metrics=metrics)])
        loop.step()


@pytest.mark.parametrize("method", ["explore", "population"])
def test_a_detached_population_head_leaves_every_trial_a_final_decision(
    store: Store, method: str
) -> None:
    spec = {"method": method, "init_lr": 0.01, "total_steps": 400}
    if method == "population":
        spec["tau"] = 10
    ctl = build_population_controller(spec, 2)
    # a lease this short makes every round beat, and so look for a detach request
    loop = PopulationLoop(
        store.job("pop"), ctl, 2, checkpoint_every_s=1e9, poll_s=0.0, lease_ttl_s=1e-3
    )
    loop.resync()
    trials = [store.job("pop", t) for t in (0, 1)]
    _feed(trials, loop, range(60))  # mid-stage: the last decisions end at a step
    assert all(not job.stage_decisions()[-1].info.get("final") for job in trials)
    store.job("pop").request_detach()
    loop.step()
    assert loop._stop.is_set()
    finals = [job.stage_decisions()[-1] for job in trials]
    assert all(d.info.get("final") for d in finals)
    if method == "explore":  # the stage's commit, the same for both trials
        assert len({(d.from_step, d.lr, d.until_step) for d in finals}) == 1
        assert all(d.info["segment"]["detached"] for d in finals)
    else:  # a hold of each trial's last LR, open-ended
        assert all(d.controller == "detach" and d.until_step is None for d in finals)
    assert not store.job("pop").detach_requested()


@pytest.mark.parametrize("method", ["explore", "population"])
def test_status_of_a_population_job_shows_every_trial(store: Store, method: str) -> None:
    from rich.console import Console

    from tuner.commands.status import job_status, print_status

    spec = {"method": method, "init_lr": 0.01, "total_steps": 400}
    ctl = build_population_controller(spec, 2)
    loop = PopulationLoop(store.job("pop"), ctl, 2, checkpoint_every_s=0.0, poll_s=0.0)
    loop.resync()
    trials = [store.job("pop", t) for t in (0, 1)]
    _feed(trials, loop, range(50))
    loop._commit(0, None)
    status = job_status(store.job("pop"))
    assert status["reports"] == 100 and status["last_step"] == 49
    assert [t["trial"] for t in status["trials"]] == [0, 1]
    assert all(t["reports"] == 50 and t["current"] is not None for t in status["trials"])
    expected = "population explore" if method == "explore" else "population"
    assert status["controller"]["method"] == expected
    # the decisions are the trials', each marked with its trial, oldest first
    shown = status["decisions"]
    assert {d["trial"] for d in shown} == {0, 1}
    assert shown == sorted(shown, key=lambda d: (d["from_step"], d["trial"]))
    assert status["controller"]["reports_seen"] is not None
    console = Console(record=True, width=120)
    print_status(status, console)
    text = console.export_text()
    assert "Trials" in text and f"controller {expected}" in text
    assert "None" not in text and "Workers" not in text  # the trials' table holds them
    from tuner.commands.status import jobs

    console = Console(record=True, width=120)
    jobs(store.url, console=console)
    row = next(line for line in console.export_text().splitlines() if "pop" in line)
    assert "100" in row  # the trials' reports, not the job key's none
