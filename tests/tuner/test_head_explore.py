"""Exploration from snapshots through the real stack: a Ray head, Redis, and a worker that
restores its model when the decisions say so."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray
import torch

from trials.store import JobStore, Store
from tuner.head import start_head, stop_head
from tuner.records import DecisionKind
from workers.agent import Agent

pytestmark = pytest.mark.slow


def _wait_for_head(job: JobStore) -> None:
    deadline = time.monotonic() + 120  # the head loads botorch as it starts: slow on busy cores
    while not job.head_alive():  # the first stage starts where the head finds the workers
        assert time.monotonic() < deadline, "the head never took its lease"
        time.sleep(0.05)


def _train(
    job: JobStore,
    steps: int,
    on_step: Callable[[int], None] | None = None,
    report_every: int = 1,
    step_s: float = 0.001,
    **agent_kw: Any,
) -> tuple[Agent, list[float]]:
    """A small regression net under the job's LR, on a rank that restores and reports
    every ``report_every`` steps, sleeping ``step_s`` a step; its losses."""
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw = {"sync_timeout_s": 60.0, "flush_every": 4, "flush_interval_s": 0.02, **agent_kw}
    agent = Agent(job, rank=0, **kw)
    sched = agent.lr_scheduler(opt, model=model)
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, 512, (32,))  # the global RNG: a snapshot rewinds it
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        if step % report_every == 0:
            agent.report(step, loss=loss.item())
        sched.step()
        if on_step is not None:
            on_step(step)
        if step_s:
            time.sleep(step_s)
    agent.close()
    return agent, losses


@pytest.mark.parametrize("method", ["explore", "auto"])
def test_candidates_restart_from_one_snapshot_and_the_winner_keeps_its_steps(
    ray_local: None, store: Store, redis_server: Any, method: str
) -> None:
    # auto, the default, is explore here: the worker passes model= and so can restore
    steps = 400
    name = f"{method}-e2e"
    spec = {
        "method": method,
        "init_lr": 0.01,
        "total_steps": steps,
        "warmup_steps": 20,
        "explore_budget": 0.2,
    }
    start_head(name, redis_server.url, spec)
    job = store.job(name)
    _wait_for_head(job)
    agent, losses = _train(job, steps)
    final = stop_head(name)
    assert final is not None and final["error"] is None
    if method == "auto":
        stored = job.load_state("lr")
        assert stored is not None and stored["choice"] == "explore"

    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    # each candidate's first half (its second half goes on from it without a restore)
    probes = [
        d
        for d in decisions
        if d.info["segment"]["role"] == "probe" and d.info["segment"].get("part") != 2
    ]
    tails = [d for d in decisions if d.info["segment"]["role"] == "tail"]
    commits = [d for d in decisions if d.kind == DecisionKind.COMMIT]
    assert len(probes) >= 2 and tails and commits  # a smaller one may be skipped
    start = probes[0].from_step
    assert probes[0].snapshot and start >= 20
    # Each candidate begins from the same weights on the same batch: the same first loss,
    # bit for bit, although the steps in between trained other LRs.
    for p in probes[1:]:
        assert p.restore_from == start
        assert losses[p.from_step] == losses[start]
    # The commit resumes the winner where its cool-down began: its probe steps are kept.
    commit = commits[0]
    assert commit.restore_from in {t.from_step for t in tails}
    assert losses[commit.from_step] == losses[commit.restore_from]  # type: ignore[index]
    assert decisions[-1].until_step == steps and decisions[-1].lr_end == 0.0
    assert job.report_count() == steps
    assert agent.stall_s < 30


def test_a_short_run_of_fast_steps_is_explored(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    # Steps of well under a millisecond and the agent's defaults (reports sent every 128,
    # open answers promised for 0.5 s of training): the promises must not outrun the run,
    # or the head finds no step left to explore at (it did: promised to step 1,134 of 400).
    steps = 400
    spec = {"init_lr": 0.01, "total_steps": steps, "warmup_steps": 20, "explore_budget": 0.2}
    start_head("fast-e2e", redis_server.url, spec)
    job = store.job("fast-e2e")
    _wait_for_head(job)
    _train(job, steps, step_s=0.0, flush_every=128, flush_interval_s=0.5)
    final = stop_head("fast-e2e")
    assert final is not None and final["error"] is None
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    probes = [d for d in decisions if d.info.get("segment", {}).get("role") == "probe"]
    assert probes and probes[0].snapshot, decisions
    assert probes[0].from_step < steps // 2
    assert decisions[-1].until_step == steps and decisions[-1].lr_end == 0.0


@pytest.mark.parametrize("when", ["first probe", "after a cool-down"])
def test_detach_mid_stage_leaves_a_committed_lr_not_a_candidate(
    ray_local: None, store: Store, redis_server: Any, when: str
) -> None:
    # Before, the hold kept the candidate in force: a probe's LR (up to 16x init_lr) or
    # the end of a cool-down (near 0), on weights the stage meant to throw away.
    steps = 400
    name = f"explore-detach-{when.replace(' ', '-')}"
    spec = {"init_lr": 0.01, "total_steps": steps, "warmup_steps": 20, "explore_budget": 0.2}
    start_head(name, redis_server.url, spec)
    job = store.job(name)
    _wait_for_head(job)
    detached_at: list[int] = []

    def detach_mid_stage(step: int) -> None:
        if detached_at:
            return
        roles = [d.info["segment"]["role"] for d in job.stage_decisions()]
        due = (
            roles[-1:] == ["probe"]
            if when == "first probe"
            else roles[-1:] == ["probe"] and "tail" in roles
        )
        if due:
            detached_at.append(step)
            job.request_detach()
            deadline = time.monotonic() + 30
            while job.head_alive():
                assert time.monotonic() < deadline, "the head did not detach"
                time.sleep(0.05)

    agent, losses = _train(job, steps, detach_mid_stage)
    assert detached_at and not job.head_alive()
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    last, before = decisions[-1], decisions[-2]
    assert before.kind is DecisionKind.EXPLORE and last.info["final"] and last.info["detached"]
    assert last.from_step == before.until_step and last.from_step > detached_at[0]
    stage_start = next(d.from_step for d in decisions if d.snapshot)
    if when == "first probe":
        # nothing cooled down yet: back to the stage's snapshot and the base schedule
        assert last.kind is DecisionKind.HOLD and last.lr is None and last.until_step is None
        assert last.restore_from == stage_start
    else:
        # the best candidate so far, from where its cool-down began, decaying to the end
        tails = {d.from_step: d.lr for d in decisions if d.info["segment"]["role"] == "tail"}
        assert last.kind is DecisionKind.COMMIT and last.restore_from in tails
        assert last.until_step == steps and last.lr_end == 0.0
    assert losses[last.from_step] == losses[last.restore_from]  # type: ignore[index]
    assert job.report_count() == steps and agent.stall_s < 30
    stored = job.load_state("lr")
    assert stored is not None and stored["inner"]["finished"]


def test_a_head_killed_mid_stage_comes_back_and_the_stage_goes_on(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    # The controller's candidates, scores and curve live in Redis with the acknowledgements:
    # a head that dies between two candidates resumes the stage where it stood.
    steps = 400
    name = "explore-kill"
    spec = {"init_lr": 0.01, "total_steps": steps, "warmup_steps": 20, "explore_budget": 0.2}
    actor = start_head(name, redis_server.url, spec)
    job = store.job(name)
    _wait_for_head(job)
    first_pid = ray.get(actor.status.remote(), timeout=30)["pid"]
    killed: list[int] = []

    def kill_mid_stage(step: int) -> None:
        segments = [d.info["segment"] for d in job.stage_decisions()]
        if not killed and segments and segments[-1]["role"] == "probe" and segments[-1]["cand"]:
            killed.append(step)
            ray.kill(actor, no_restart=False)  # the process dies; Ray restarts the actor

    agent, losses = _train(job, steps, kill_mid_stage)
    status = ray.get(actor.status.remote(), timeout=30)
    assert killed and status["pid"] != first_pid and status["restored"]
    final = stop_head(name)
    assert final is not None and final["error"] is None
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    assert [d.version for d in job.decisions()] == list(range(1, job.version() + 1))
    for a, b in itertools.pairwise(decisions):
        assert a.until_step == b.from_step  # no gap, no overlap: nothing was rewritten
    probes = [d for d in decisions if d.info["segment"]["role"] == "probe" and d.restore_from]
    start = decisions[0].from_step if decisions[0].snapshot else None
    assert start is not None and len(probes) >= 1
    assert all(p.restore_from == start and losses[p.from_step] == losses[start] for p in probes)
    assert any(p.from_step > killed[0] for p in probes) or decisions[-1].from_step > killed[0]
    commit = decisions[-1]
    assert commit.kind is DecisionKind.COMMIT and commit.until_step == steps
    assert losses[commit.from_step] == losses[commit.restore_from]  # type: ignore[index]
    stored = job.load_state("lr")
    assert stored is not None and stored["inner"]["reports_seen"] == steps
    assert job.report_count() == steps and agent.stall_s < 30


def test_a_worker_that_reports_every_10_steps_is_not_kept_waiting_and_is_scored(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    # A segment ends between two reports: the head used to wait for a report the worker
    # would only send after the next decision (60 s at every boundary, then the base
    # schedule). Waiting at the boundary now says how far the worker is.
    steps = 1000
    name = "explore-sparse"
    spec = {"init_lr": 0.01, "total_steps": steps, "warmup_steps": 40}
    start_head(name, redis_server.url, spec)
    job = store.job(name)
    _wait_for_head(job)
    agent, _ = _train(job, steps, report_every=10)
    final = stop_head(name)
    assert final is not None and final["error"] is None
    assert agent.stall_s < 30, f"waited {agent.stall_s:.0f}s at boundaries"
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    assert decisions[0].from_step >= 40 and decisions[-1].until_step == steps
    stored = job.load_state("lr")
    assert stored is not None and stored["inner"]["every"] == 10
    stage = stored["inner"]["stages"][0]
    assert sum(s is not None for s in stage["scores"]) >= 2  # candidates were scored


def test_a_rank_that_restarts_mid_stage_from_its_checkpoint_trains_to_the_end(
    ray_local: None, store: Store, redis_server: Any
) -> None:
    # The rank's process dies 5 steps into the second candidate and a new one resumes from
    # its last checkpoint (every 10 steps), holding none of the stage's snapshots. It used
    # to stop at the first restore with an error; now it takes the snapshot from where it is,
    # says so, and the head gives the stage up with what it had scored.
    steps = 400
    name = "explore-rank-restart"
    spec = {"init_lr": 0.01, "total_steps": steps, "warmup_steps": 20, "explore_budget": 0.2}
    start_head(name, redis_server.url, spec)
    job = store.job(name)
    _wait_for_head(job)
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    checkpoint: dict[str, Any] = {}
    crashed_at: list[int] = []
    resume = 0
    for attempt in (0, 1):
        agent = Agent(job, rank=0, sync_timeout_s=60.0, flush_every=4, attempt=attempt)
        sched = agent.lr_scheduler(opt, model=model, last_epoch=resume - 1)
        for step in range(resume, steps):
            d = agent.decision(step)
            second = d is not None and d.restore_from is not None  # a candidate after the first
            if attempt == 0 and second and step == d.from_step + 5:  # type: ignore[union-attr]
                crashed_at.append(step)
                break  # the process dies: nothing after its last flush is kept
            if step % 10 == 0:
                checkpoint = {
                    "step": step,
                    "model": {k: v.clone() for k, v in model.state_dict().items()},
                    "opt": copy.deepcopy(opt.state_dict()),
                    "rng": torch.get_rng_state(),
                }
            idx = torch.randint(0, 512, (32,))
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            agent.report(step, loss=loss.item())
            sched.step()
            time.sleep(0.001)
        agent.close()
        if attempt == 0:
            assert crashed_at, "the stage never reached its second candidate"
            model.load_state_dict(checkpoint["model"])
            opt.load_state_dict(checkpoint["opt"])
            torch.set_rng_state(checkpoint["rng"])
            resume = checkpoint["step"]
    final = stop_head(name)
    assert final is not None and final["error"] is None
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    commit = next(d for d in decisions if d.kind is DecisionKind.COMMIT)
    assert commit.info["segment"]["abandoned"]["rank"] == 0
    # every rank back to the stage's snapshot: on the restarted one, taken where it missed
    assert commit.restore_from == decisions[0].from_step and commit.from_step > crashed_at[0]
    # the restarted rank missed the first restore it met after resuming (the commit's, or a
    # later candidate's when it resumed before that candidate began), and took the stage's
    # snapshot there
    assert sched.mover is not None and sched.mover.missed is not None
    restores = [d.from_step for d in decisions if d.restore_from is not None]
    assert sched.mover.missed == min(s for s in restores if s > resume)
    assert sched.mover.missed <= commit.from_step
    assert commit.until_step == steps and commit.lr_end == 0.0
    assert decisions[-1] == commit
    # the head went on from the rank's replay: every step of both attempts was reported
    assert job.report_count() == steps + crashed_at[0] - resume
    assert agent.stall_s < 30
