"""tune(population=P, lr=LRSpec(method="explore")) on real Ray workers against a real Redis:
the trials start the stage from one state and all end on the winner's."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import torch

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner import LRSpec, tune

pytestmark = pytest.mark.slow


def trial_fn(config: dict[str, Any]) -> dict[str, Any]:
    """Least squares; each trial starts from its own weights and batches (seeded by trial)."""
    from workers.agent import Agent

    trial = int(os.environ["TAUTUNE_TRIAL"])
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1)
    torch.manual_seed(trial)
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    agent = Agent.attach(flush_every=4, flush_interval_s=0.02)
    gen = torch.Generator().manual_seed(100 + trial)
    sched = agent.lr_scheduler(opt, model=model, extra_state={"batches": gen})
    losses, lrs = [], []
    for step in range(config["steps"]):
        idx = torch.randint(0, 256, (32,), generator=gen)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
        agent.report(step, loss=loss.item())
        sched.step()
        time.sleep(config["pause_s"])
    agent.close()
    weights = [p.detach().clone() for p in model.parameters()]
    return {"trial": trial, "losses": losses, "lrs": lrs, "weights": weights}


def test_population_explores_one_candidate_per_trial_and_shares_the_winner(
    ray_local: None, redis_server: EmbeddedRedis, store: Store
) -> None:
    steps = 300
    result = tune(
        trial_fn,
        {"steps": steps, "lr": 0.02, "pause_s": 0.03},  # trials start seconds apart
        num_workers=1,
        resources_per_worker={"CPU": 0.5},  # the three trials run at once on two cores
        population=3,
        lr=LRSpec(init_lr=0.02, method="explore", total_steps=steps, warmup_steps=10),
        job="pop-explore",
        redis_url=redis_server.url,
    )
    runs = [t.returns[0] for t in result.trials]
    assert [r["trial"] for r in runs] == [0, 1, 2]
    decisions = [store.job("pop-explore", t).stage_decisions() for t in range(3)]
    probes = [next(d for d in ds if d.info["segment"]["role"] == "probe") for ds in decisions]
    start = probes[0].from_step
    assert probes[0].publish and [p.restore_peer for p in probes[1:]] == [0, 0]
    assert {p.from_step for p in probes} == {start}
    # before the stage the trials trained apart; from its first step, on one state and
    # one batch sequence: the same loss at the stage's first step, each at its own LR
    assert len({r["losses"][start - 1] for r in runs}) == 3
    assert len({r["losses"][start] for r in runs}) == 1
    assert len({r["lrs"][start] for r in runs}) == 3
    # the commit: every trial goes on from the winner's state, at one LR, to the end
    commits = [ds[-1] for ds in decisions]
    assert all(c.info["segment"]["role"] == "commit" for c in commits)
    _, win = commits[0].info["segment"]["winner"]
    assert commits[win].publish and commits[win].restore_from is not None
    assert [c.restore_peer for j, c in enumerate(commits) if j != win] == [win, win]
    end = commits[0].from_step
    assert all(r["lrs"][end:] == runs[0]["lrs"][end:] for r in runs)
    assert all(r["losses"][end:] == runs[0]["losses"][end:] for r in runs)
    for r in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(r["weights"], runs[0]["weights"], strict=True))
    assert result.head is not None and result.head["controller"]["winner"] is not None
    assert not store.client.keys("*peer*") or all(
        store.client.pttl(k) > 0 for k in store.client.keys("*peer*")
    )
