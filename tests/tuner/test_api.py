"""tune() on real Ray workers with DDP over gloo, against a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner import LRSpec, tune
from tuner.errors import ConfigError
from tuner.worker_group import check_resources

pytestmark = pytest.mark.slow


def _least_squares() -> tuple[torch.Tensor, torch.Tensor]:
    """The same 256 x 16 problem on every rank (seeds torch's global RNG first)."""
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    return x, x @ torch.randn(16, 1)


def _train(
    steps: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    agent: Any,
    sched: Any,
    batches: torch.Generator,
    data: tuple[torch.Tensor, torch.Tensor],
    pause_s: float,
) -> tuple[list[float], list[float]]:
    """``steps`` steps on batches of 32 drawn with ``batches``, reporting each loss to
    ``agent``, which is closed after; the losses and the LRs applied."""
    x, y = data
    losses, applied = [], []
    for step in range(steps):
        idx = torch.randint(0, 256, (32,), generator=batches)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        applied.append(opt.param_groups[0]["lr"])
        agent.report(step, loss=loss.item())
        sched.step()
        time.sleep(pause_s)
    agent.close()
    return losses, applied


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_in_sync(r0: dict[str, Any], r1: dict[str, Any]) -> None:
    """DDP kept the ranks' weights equal."""
    for w0, w1 in zip(r0["weights"], r1["weights"], strict=True):
        assert torch.equal(w0, w1)


def train_fn(config: dict[str, Any]) -> dict[str, Any]:
    """Least squares with DDP: ranks see different batches, gradients are averaged."""
    from workers.agent import Agent
    from workers.distributed import prepare_model, rank, world_size

    data = _least_squares()
    model = prepare_model(torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    agent = Agent.attach(flush_every=8, flush_interval_s=0.05)
    sched = agent.lr_scheduler(opt)
    gen = torch.Generator().manual_seed(100 + rank())
    _, applied = _train(config["steps"], model, opt, agent, sched, gen, data, pause_s=0.003)
    return {"rank": rank(), "world": world_size(), "lrs": applied, "weights": _weights(model)}


def test_two_ranks_apply_the_same_lr_at_every_step(
    ray_local: None, redis_server: EmbeddedRedis, store: Store
) -> None:
    steps = 240
    result = tune(
        train_fn,
        {"steps": steps, "lr": 0.05},
        num_workers=2,
        lr=LRSpec(init_lr=0.05, tau=20, total_steps=steps),
        job="ddp-two-ranks",
        redis_url=redis_server.url,
    )
    r0, r1 = result.returns
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert len(r0["lrs"]) == steps and r0["lrs"] == r1["lrs"]  # same LR, every step
    assert len(set(r0["lrs"])) > 5, "the head should have changed the LR several times"
    _assert_in_sync(r0, r1)
    # The store saw the same thing: per step, both ranks reported the same LR and version.
    by_step: dict[int, set[tuple[float, float]]] = {}
    for rep in store.job("ddp-two-ranks").all_reports():
        by_step.setdefault(rep.step, set()).add(
            (rep.metrics["lr"], rep.metrics["decision_version"])
        )
    assert len(by_step) == steps and all(len(v) == 1 for v in by_step.values())
    assert result.head is not None and result.head["controller"]["reports_seen"] == 2 * steps
    assert [d.version for d in result.decisions] == list(range(1, len(result.decisions) + 1))
    assert set(result.metrics) == {0, 1}


def test_tune_without_lr_spec_trains_on_the_base_schedule(
    ray_local: None, redis_server: EmbeddedRedis
) -> None:
    result = tune(train_fn, {"steps": 30, "lr": 0.01}, num_workers=1, redis_url=redis_server.url)
    assert result.decisions == [] and result.head is None
    assert set(result.returns[0]["lrs"]) == {0.01}


def test_bad_arguments_fail_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="num_workers"):
        tune(train_fn, num_workers=0)
    with pytest.raises(ConfigError, match="init_lr"):
        tune(train_fn, lr=LRSpec(init_lr=-1.0))
    with pytest.raises(ConfigError, match="job name"):
        tune(train_fn, job="bad name!")


def test_population_trials_share_one_head_and_explore_in_parallel(
    ray_local: None, redis_server: EmbeddedRedis, store: Store
) -> None:
    steps = 200
    result = tune(
        train_fn,
        {"steps": steps, "lr": 0.02},
        num_workers=1,
        population=2,
        lr=LRSpec(init_lr=0.02, tau=20, total_steps=steps),
        job="population",
        redis_url=redis_server.url,
    )
    assert [t.trial for t in result.trials] == [0, 1]
    assert result.best_trial in (0, 1)
    low, high = (t.returns[0]["lrs"] for t in result.trials)
    # While searching, trial 0 always trained below trial 1: one candidate LR each.
    search = [d for d in result.trials[0].decisions if d.info.get("phase") == "search"]
    assert search and all(
        low[s] < high[s] for d in search for s in range(d.from_step, d.until_step)
    )
    # One head saw every report of both trials exactly once.
    assert result.head is not None and result.head["trials"] == 2
    assert result.head["controller"]["reports_seen"] == 2 * steps
    for trial in (0, 1):
        job = store.job("population", trial)
        assert job.report_count() == steps
        assert [d.version for d in job.decisions()] == list(range(1, job.version() + 1))
    assert store.job("population").load_state("lr")["trial_state"][1]["reports"] == steps  # type: ignore[index]


def explore_fn(config: dict[str, Any]) -> dict[str, Any]:
    """Like train_fn, but the LR controller explores from snapshots: the scheduler gets the
    model and the generator the batches come from."""
    from workers.agent import Agent
    from workers.distributed import prepare_model, rank

    data = _least_squares()
    model = prepare_model(torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    agent = Agent.attach(flush_every=4, flush_interval_s=0.02)
    gen = torch.Generator().manual_seed(100 + rank())
    sched = agent.lr_scheduler(opt, model=model, extra_state={"batches": gen})
    losses, applied = _train(config["steps"], model, opt, agent, sched, gen, data, pause_s=0.002)
    return {"rank": rank(), "losses": losses, "lrs": applied, "weights": _weights(model)}


def test_two_ranks_explore_from_snapshots_together(
    ray_local: None, redis_server: EmbeddedRedis, store: Store
) -> None:
    steps = 300
    result = tune(
        explore_fn,
        {"steps": steps, "lr": 0.02},
        num_workers=2,
        lr=LRSpec(init_lr=0.02, method="explore", total_steps=steps, warmup_steps=10),
        job="ddp-explore",
        redis_url=redis_server.url,
    )
    r0, r1 = result.returns
    assert r0["lrs"] == r1["lrs"]  # one LR per step on every rank, exploration included
    _assert_in_sync(r0, r1)
    decisions = sorted(store.job("ddp-explore").stage_decisions(), key=lambda d: d.from_step)
    segs = [(d, d.info["segment"]) for d in decisions]
    probes = [d for d, seg in segs if seg["role"] == "probe" and seg.get("part") != 2]
    assert len(probes) >= 2 and probes[0].snapshot
    start = probes[0].from_step
    for r in (r0, r1):  # each rank restarted every candidate from its own snapshot
        for p in probes[1:]:
            assert p.restore_from == start
            assert r["losses"][p.from_step] == r["losses"][start]
    assert r0["losses"][start] != r1["losses"][start]  # the ranks' batches differ


def _environment(config: dict[str, Any]) -> dict[str, str]:
    import os

    return {k: os.environ[k] for k in config["keys"]}


def test_worker_groups_started_together_are_each_set_up_before_they_run(
    ray_local: None,
) -> None:
    from tuner.worker_group import WorkerGroup

    groups = [WorkerGroup(1, {"CPU": 1}, {"TAUTUNE_TRIAL": str(i)}, wait=False) for i in (0, 1)]
    try:
        assert all(g.backend is None for g in groups)  # asked for, not waited on
        # submit() waits for the group's setup, so the function sees its rank's environment
        got = [
            g.run(_environment, {"keys": ["TAUTUNE_TRIAL", "RANK", "WORLD_SIZE"]}) for g in groups
        ]
        assert got == [
            [{"TAUTUNE_TRIAL": "0", "RANK": "0", "WORLD_SIZE": "1"}],
            [{"TAUTUNE_TRIAL": "1", "RANK": "0", "WORLD_SIZE": "1"}],
        ]
        assert [g.backend for g in groups] == ["gloo", "gloo"]
    finally:
        for g in groups:
            g.shutdown()


def test_resources_the_cluster_lacks_are_named(
    ray_local: None, caplog: pytest.LogCaptureFixture
) -> None:
    # ray_local has 2 CPUs and no GPU. A Ray tune() started itself cannot grow: an error
    # before any actor waits forever; a Ray it connected to may (an autoscaler): a warning.
    with pytest.raises(ConfigError, match=r"more \['GPU'\] than this Ray cluster has"):
        check_resources(1, {"GPU": 1}, local=True)
    with caplog.at_level("WARNING", logger="tuner.worker_group"):
        check_resources(1, {"GPU": 1}, local=False)
        assert "waiting for the cluster to grow" in caplog.text
        caplog.clear()
        # every worker starts before any trains: 3 of 1 CPU on 2 would wait forever
        with pytest.raises(ConfigError, match=r"resources_per_worker=\{'CPU': 0.667\}"):
            check_resources(3, None, local=True)
        check_resources(3, None, local=False)
        assert "3 workers asking for {'CPU': 1.0} each need more ['CPU']" in caplog.text
        assert "waiting for the cluster to grow (or ask for {'CPU': 0.667})" in caplog.text
        caplog.clear()
        check_resources(3, {"CPU": 0.5}, local=True)
        assert caplog.text == ""
