"""Exploration from snapshots through the real stack: a Ray head, Redis, and a worker that
restores its model when the decisions say so."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from trials.store import Store
from tuner.head import start_head, stop_head
from tuner.records import DecisionKind
from workers.agent import Agent

pytestmark = pytest.mark.slow


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
    deadline = time.monotonic() + 60
    while not job.head_alive():  # the first stage starts where the head finds the workers
        assert time.monotonic() < deadline, "the head never took its lease"
        time.sleep(0.05)
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    agent = Agent(job, rank=0, sync_timeout_s=60.0, flush_every=4, flush_interval_s=0.02)
    sched = agent.lr_scheduler(opt, model=model)
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, 512, (32,))  # the global RNG: a snapshot rewinds it
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        agent.report(step, loss=loss.item())
        sched.step()
        time.sleep(0.001)
    agent.close()
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
