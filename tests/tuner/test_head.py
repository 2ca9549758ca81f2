"""The head as a real Ray actor over a real Redis, including a kill in mid-run."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import ray
import torch

from trials.store import JobStore, Store
from tuner.head import find_head, start_head, stop_head
from workers.agent import Agent

pytestmark = pytest.mark.slow


def _wait(predicate: Any, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def _status(actor: Any) -> dict[str, Any]:
    return ray.get(actor.status.remote(), timeout=30)  # type: ignore[no-any-return]


def _train(
    job: JobStore, steps: int, on_step: Any = None, lr: float = 0.05
) -> tuple[Agent, dict[int, int]]:
    """Real PyTorch training (least squares on a fixed problem) driven by the job's LR.

    Returns the agent and, per step, the version of the decision applied (0 for base).
    """
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(256, 1)
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    agent = Agent(job, rank=0, sync_timeout_s=60.0, flush_every=8, flush_interval_s=0.05)
    sched = agent.lr_scheduler(opt)
    applied: dict[int, int] = {}
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        d = agent.decision(step)
        applied[step] = d.version if d is not None else 0
        idx = torch.randint(0, 256, (32,), generator=gen)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        agent.report(step, loss=loss.item())
        sched.step()
        if on_step is not None:
            on_step(step)
        time.sleep(0.002)  # a training step takes time; lets the head keep up
    agent.close()
    return agent, applied


def test_killed_head_comes_back_and_nothing_is_lost_or_rewritten(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    job_name = "kill-mid-run"
    steps = 600
    spec = {"method": "stagewise", "init_lr": 0.05, "tau": 40, "total_steps": steps}
    actor = start_head(job_name, redis_server.url, spec)
    job = store.job(job_name)
    first = _status(actor)
    killed: dict[str, Any] = {}

    def kill_once(step: int) -> None:
        if step == 260 and not killed:
            killed["before"] = _status(actor)
            assert killed["before"]["decisions_committed"] >= 3
            ray.kill(actor, no_restart=False)  # the process dies; Ray restarts the actor

    agent, applied = _train(job, steps, kill_once)
    after = _status(actor)
    assert after["pid"] != first["pid"], "the actor should run in a new process"
    assert after["restored"], "the restarted head should have reloaded stored state"

    # Every report reaches the controller exactly once: none lost, none counted twice.
    assert job.report_count() == steps == agent.reports_sent
    _wait(lambda: _status(actor)["pending_reports"] == 0, what="head to acknowledge all")
    final = stop_head(job_name)
    assert final is not None and final["error"] is None
    assert job.load_state("lr")["reports_seen"] == steps  # type: ignore[index]
    assert find_head(job_name) is None

    # Decisions: versions 1..N in order; what a worker applied was never rewritten.
    history = job.decisions()
    assert [d.version for d in history] == list(range(1, len(history) + 1))
    by_stage = {d.from_step: d for d in job.stage_decisions()}
    for step, version in applied.items():
        if version:
            stage = max(f for f in by_stage if f <= step)
            assert by_stage[stage].version == version, f"step {step} ran a rewritten decision"
    stages = sorted(by_stage.values(), key=lambda d: d.from_step)
    for prev, nxt in itertools.pairwise(stages):
        assert prev.until_step is not None and nxt.from_step >= prev.until_step
    assert stages[-1].info["phase"] == "anneal"
    assert sum(1 for v in applied.values() if v) > steps * 0.9  # tuned nearly throughout
    assert agent.stall_s < 30


def test_head_skips_foreign_entries_and_restarts_are_idempotent(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    job_name = "foreign"
    spec = {"method": "stagewise", "init_lr": 0.05, "tau": 20, "total_steps": 200}
    actor = start_head(job_name, redis_server.url, spec)
    assert start_head(job_name, redis_server.url, spec)._actor_id == actor._actor_id
    job = store.job(job_name)
    _wait(job.head_alive, what="head lease")
    store.client.xadd(job.keys.reports, {"not": "ours"})
    _train(job, 200)
    _wait(lambda: _status(actor)["malformed_skipped"] == 1, what="malformed entry skipped")
    assert store.client.xlen(job.keys.reports) == 201  # the foreign entry is left in place
    stop_head(job_name)


def test_bad_controller_spec_fails_in_the_caller(ray_local: None, redis_server: Any) -> None:
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown setting"):
        start_head("bad", redis_server.url, {"method": "stagewise", "init_lr": 0.1, "taw": 5})
    with pytest.raises(ConfigError, match="unknown method"):
        start_head("bad", redis_server.url, {"method": "nope"})


@pytest.mark.parametrize("metric", ["train_loss", "loss"])
def test_reports_without_the_controllers_metric_are_a_warning_in_status(
    store: Store, metric: str
) -> None:
    from tuner.commands.status import job_status
    from tuner.head import HeadLoop
    from tuner.records import Report
    from tuner.specs import build_controller

    job = store.job(f"metric-{metric}")
    spec = {"method": "stagewise", "init_lr": 0.05, "tau": 20, "total_steps": 400}
    loop = HeadLoop(job, build_controller(spec))
    loop.resync()
    job.append_reports([Report(rank=0, step=s, metrics={metric: 1.0}) for s in range(30)])
    loop.step()
    if metric == "loss":
        assert loop.warning is None and job_status(job)["warning"] is None
        return
    assert loop.warning is not None and "no 'loss'" in loop.warning
    assert "['train_loss']" in loop.warning and "metric=NAME" in loop.warning
    assert job_status(job)["warning"] == loop.warning
    HeadLoop(job, build_controller(spec)).resync()  # a new head checks afresh
    assert job_status(job)["warning"] is None


@pytest.mark.parametrize("per_arm", [True, False])
def test_a_mixture_without_per_arm_reports_is_a_warning(store: Store, per_arm: bool) -> None:
    from tuner.head import HeadLoop
    from tuner.records import Report
    from tuner.specs import build_controller

    job = store.job(f"arms-{per_arm}")
    spec = {"method": "exp3s", "arms": ["easy", "noise"], "tau": 20, "total_steps": 400}
    loop = HeadLoop(job, build_controller(spec))
    loop.resync()
    arms = {"arm_loss/easy": 0.5, "arm_count/easy": 3.0} if per_arm else {}
    job.append_reports([Report(rank=0, step=s, metrics={"loss": 1.0, **arms}) for s in range(30)])
    loop.step()
    if per_arm:  # any arm's loss will do: a small arm may be absent from the first batches
        assert loop.warning is None
        return
    assert loop.warning is not None and "carry no 'arm_loss/*'" in loop.warning
    assert "Report each arm's loss" in loop.warning


def test_a_controllers_advice_is_logged_once_and_shown_in_status(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from tuner.commands.status import job_status
    from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
    from tuner.head import HeadLoop
    from tuner.records import Decision, Report

    class Advising(StagewiseLR):
        accepted = 0

        def accept(self, decision: Decision) -> None:
            super().accept(decision)
            self.accepted += 1

        def advice(self) -> str | None:
            return "stage 0: fix the loop" if self.accepted else None

        def state_dict(self) -> dict[str, Any]:
            return {**super().state_dict(), "accepted": self.accepted}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            super().load_state_dict(state)
            self.accepted = state["accepted"]

    config = StagewiseConfig(init_lr=0.05, tau=20, total_steps=400)
    job = store.job("advice")
    loop = HeadLoop(job, Advising(config))
    loop.resync()
    assert loop.warning is None
    job.append_reports([Report(rank=0, step=s, metrics={"loss": 1.0}) for s in range(30)])
    with caplog.at_level("WARNING", logger="tuner.loop"):
        loop.step()  # the first decision: advice from then on
        job.append_reports([Report(rank=0, step=s, metrics={"loss": 1.0}) for s in range(30, 90)])
        for _ in range(3):
            loop.step()
    assert loop.warning == "stage 0: fix the loop"
    assert job_status(job)["warning"] == "stage 0: fix the loop"
    assert [r.getMessage() for r in caplog.records].count(
        "tautune head advice: stage 0: fix the loop"
    ) == 1
    restarted = HeadLoop(job, Advising(config))  # from the stored state: says it again
    restarted.resync()
    assert restarted.warning == job_status(job)["warning"] == "stage 0: fix the loop"


def test_the_plan_waits_for_every_live_rank_and_for_reports_the_head_has_read(
    store: Store,
) -> None:
    from tuner.head import reported_through
    from tuner.records import Report

    job = store.job("two-ranks")
    job.append_reports([Report(rank=0, step=s, metrics={"loss": 1.0}) for s in range(102)])
    job.append_reports([Report(rank=1, step=s, metrics={"loss": 1.0}) for s in range(96)])
    for rank in (0, 1):
        job.heartbeat(rank, ttl_s=30, info={})
    # under DDP the first rank to get there is not the stage's data: rank 1 is behind
    assert reported_through(job) == 95
    # ...unless it waits at step 102: it sent what it had (every 10th step, say)
    assert reported_through(job, waiting={1: 102}) == 101
    # stored is not read: the controller has seen rank 0 only up to 99
    assert reported_through(job, taken={0: 99}, waiting={1: 102}) == 99
    job.release(1)  # a rank that is gone does not hold the others back
    assert reported_through(job) == 101
