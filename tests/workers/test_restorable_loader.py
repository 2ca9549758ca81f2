"""RestorableLoader: a DataLoader with worker processes whose batches a restore takes back
exactly, where a RestorableSampler alone is off by the batches prefetched."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.errors import ConfigError
from tuner.head import HeadLoop
from tuner.records import Decision, DecisionKind
from tuner.specs import build_controller
from workers.agent import Agent
from workers.explore import StateMover
from workers.restorable_loader import RestorableLoader
from workers.restorable_sampler import RestorableSampler

ITEMS = 30  # 8 batches of 4 an epoch, the last one of 2


def _loader(workers: int, persistent: bool = False) -> DataLoader[Any]:
    data = TensorDataset(torch.arange(float(ITEMS)))
    return DataLoader(
        data,
        batch_size=4,
        sampler=RestorableSampler(ITEMS, seed=1),
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        persistent_workers=persistent,
    )


def _stream(batches: Any) -> Iterator[Any]:
    """Batches epoch after epoch, as ``for epoch in count(): for batch in loader`` gives."""
    for _ in itertools.count():
        yield from batches


def _decision(step: int, version: int, **kw: Any) -> Decision:
    return Decision(
        stage=version, kind=DecisionKind.EXPLORE, from_step=step, lr=0.1, version=version, **kw
    )


def _train(batches: Any, state_of: Any) -> dict[int, list[float]]:
    """Steps 0-19 through a StateMover that snapshots at step 5 and restores to it at step
    13 (after the epoch turned) and at step 17; the batch each step took."""
    model = torch.nn.Linear(1, 1)
    mover = StateMover(model, torch.optim.SGD(model.parameters(), lr=0.1), sampler=state_of)
    plan = {
        5: _decision(5, 1, snapshot=True),
        13: _decision(13, 2, restore_from=5),
        17: _decision(17, 3, restore_from=5),
    }
    stream = _stream(batches)
    seen = {}
    for step in range(20):
        mover.apply(step, plan.get(step))  # what scheduler.step() does before the batch
        (x,) = next(stream)
        seen[step] = x.tolist()
    return seen


@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, False), (2, True)])
def test_a_restored_candidate_takes_the_snapshots_batches(workers: int, persistent: bool) -> None:
    loader = RestorableLoader(_loader(workers, persistent))
    seen = _train(loader, loader)
    assert [seen[s] for s in (13, 14, 15, 16)] == [seen[s] for s in (5, 6, 7, 8)]
    assert seen[8] != seen[0]  # step 8 is the next epoch's first batch, as from step 5
    assert [seen[s] for s in (17, 18, 19)] == [seen[s] for s in (5, 6, 7)]
    assert loader.restarts == 2


def test_with_workers_the_sampler_alone_is_off_by_the_prefetched_batches() -> None:
    # Why the wrapper exists: the same run with the sampler's own state, 2 workers
    # prefetching 2 batches each, trains other batches after a restore.
    loader = _loader(workers=2)
    seen = _train(loader, loader.sampler)
    assert seen[13] != seen[5]


def test_the_state_is_the_position_taken_not_the_samplers() -> None:
    loader = RestorableLoader(_loader(workers=2))
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    assert loader.state_dict() == {"epoch": 0, "position": 12, "seed": 1}
    assert loader.sampler.position > 12  # the workers were handed batches ahead
    for _ in range(5):
        next(batches)
    with pytest.raises(StopIteration):
        next(batches)
    assert loader.state_dict() == {"epoch": 1, "position": 0, "seed": 1}


def test_a_loader_without_a_restorable_sampler_is_refused() -> None:
    data = TensorDataset(torch.arange(4.0))
    with pytest.raises(ConfigError, match="sampler=RestorableSampler"):
        RestorableLoader(DataLoader(data, batch_size=2, shuffle=True))
    with pytest.raises(ConfigError, match="batch_size="):
        RestorableLoader(DataLoader(data, batch_size=None, sampler=RestorableSampler(4)))


def _explore_with_workers(redis_url: str, job: str, wrap: bool) -> tuple[HeadLoop, int]:
    """``explore`` (a real head in a thread, real Redis) over a regression whose batches
    come from a DataLoader with 2 persistent workers; the head, and the probes it made."""
    torch.manual_seed(0)
    x = torch.randn(2048, 16)
    y = x @ torch.randn(16, 1) + 0.3 * torch.randn(2048, 1)
    spec = {"method": "explore", "init_lr": 0.01, "total_steps": 400, "warmup_steps": 20}
    store = Store.connect(redis_url).job(job)
    head = HeadLoop(store, build_controller(spec))
    thread = threading.Thread(target=head.run, daemon=True)
    thread.start()
    while not store.head_alive():
        time.sleep(0.05)
    sampler = RestorableSampler(2048, seed=0)
    data = DataLoader(
        TensorDataset(x, y),
        batch_size=32,
        sampler=sampler,
        num_workers=2,
        persistent_workers=True,
    )
    loader: Any = RestorableLoader(data) if wrap else data
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    agent = Agent(store, 0, sync_timeout_s=60, flush_every=4, flush_interval_s=0.02)
    sched = agent.lr_scheduler(opt, model=model, sampler=loader if wrap else sampler)
    stream = _stream(loader)
    for step in range(400):
        xb, yb = next(stream)
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        agent.report(step, loss=loss)
        sched.step()
        time.sleep(0.002)
    agent.close()
    head.stop()
    thread.join(timeout=30)
    probes = [d for d in store.stage_decisions() if d.restore_from is not None]
    return head, len(probes)


@pytest.mark.slow
def test_a_real_head_finds_the_candidates_paired_through_a_loader_with_workers(
    redis_server: EmbeddedRedis,
) -> None:
    head, restored = _explore_with_workers(redis_server.url, "loader-wrapped", wrap=True)
    assert head.error is None and restored >= 2
    assert head.warning is None
    # the sampler alone: the prefetched batches come first after each restore, and the
    # head's check of the candidates' first losses says so
    head, restored = _explore_with_workers(redis_server.url, "loader-plain", wrap=False)
    assert restored >= 2
    assert head.warning is not None and "RestorableLoader" in head.warning
