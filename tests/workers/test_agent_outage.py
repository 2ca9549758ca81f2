"""A worker while its Redis is away: a real redis-server stopped and started again under a
training loop. Training goes on without blocking (the decision in force where it covers
the step, else the base schedule), reports are kept and sent once Redis is back, claims
resume, and closing while Redis is away loses only the unsent reports, with a warning."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.records import Decision, DecisionKind
from workers.agent import Agent


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    state = Path(tempfile.mkdtemp(prefix="tt-out-"))  # short: a unix socket path
    with EmbeddedRedis(state) as s:
        yield s
    shutil.rmtree(state, ignore_errors=True)


def _agent(server: EmbeddedRedis, job: str, **kwargs: Any) -> Agent:
    """An agent whose client gives up after one retry (the default's take about 5 s)."""
    return Agent(Store.connect(server.url, retries=1).job(job), 0, **kwargs)


def _loop(
    agent: Agent, lr: float = 1.0
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=lr)
    return opt, agent.lr_scheduler(opt, total_steps=400)


def _train(agent: Agent, opt: torch.optim.SGD, sched: object, steps: range) -> list[float]:
    lrs = []
    for step in steps:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        agent.report(step, loss=1.0 / (step + 1))
        sched.step()  # type: ignore[attr-defined]
    return lrs


def test_training_goes_on_while_redis_is_away_and_resumes(server: EmbeddedRedis) -> None:
    store = Store.connect(server.url)
    job = store.job("away")
    # a bounded decision: steps 0-120 at 0.5 decaying to 0.1, then nothing (base: 1.0)
    job.commit(
        expected_version=0,
        decision=Decision(
            stage=0, kind=DecisionKind.COMMIT, from_step=0, until_step=120, lr=0.5, lr_end=0.1
        ),
    )
    agent = _agent(server, "away")
    opt, sched = _loop(agent)
    before = _train(agent, opt, sched, range(0, 40))
    assert before[0] == 0.5
    agent.flush()
    assert job.report_count() == 40

    first = job.decisions()[0]
    server.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        away = _train(agent, opt, sched, range(40, 200))  # finishes with Redis still away
    said = [str(w.message) for w in caught if "Redis is unreachable" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    # the decision was promised to its end: Redis is missed only where it ends
    assert "unreachable at step 120; training goes on with the base schedule" in said[0]
    for step, lr in zip(range(40, 200), away, strict=True):
        assert lr == pytest.approx(first.lr_at(step) if step < 120 else 1.0), step
    assert agent.store_down

    server.start()
    job.commit(
        expected_version=1,
        decision=Decision(
            stage=1, kind=DecisionKind.COMMIT, from_step=200, until_step=None, lr=0.02
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deadline = time.monotonic() + 30
        step = 200
        while agent.store_down and time.monotonic() < deadline:
            _train(agent, opt, sched, range(step, step + 1))
            step += 1
            time.sleep(0.01)
    assert not agent.store_down
    assert any("Redis answers again" in str(w.message) for w in caught)
    after = _train(agent, opt, sched, range(step, step + 5))
    assert after[-1] == 0.02  # claims resumed: the decision written meanwhile is in force
    agent.flush()
    # every report made while Redis was away reached it, in order, none twice
    steps = [r.step for r in job.all_reports()]
    assert steps == list(range(step + 5))
    agent.close()
    store.close()


def test_an_open_decision_stays_in_force_while_redis_is_away(server: EmbeddedRedis) -> None:
    store = Store.connect(server.url)
    store.job("open").commit(
        expected_version=0,
        decision=Decision(stage=0, kind=DecisionKind.COMMIT, from_step=0, until_step=None, lr=0.3),
    )
    agent = _agent(server, "open", lookahead_s=0.0)  # an open decision promised 8 steps
    opt, sched = _loop(agent)
    _train(agent, opt, sched, range(0, 20))
    server.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lrs = _train(agent, opt, sched, range(20, 120))
    said = [str(w.message) for w in caught if "Redis is unreachable" in str(w.message)]
    assert len(said) == 1 and "goes on with the decision in force," in said[0]
    assert set(lrs) == {0.3}
    agent.close(timeout_s=0.1)
    store.close()


def test_close_while_redis_is_away_warns_and_releases_nothing_stored(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.connect(server.url)
    job = store.job("gone")
    agent = _agent(server, "gone")
    opt, sched = _loop(agent)
    _train(agent, opt, sched, range(0, 10))
    agent.flush()
    server.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(agent, opt, sched, range(10, 20))
    with caplog.at_level(logging.WARNING, logger="workers.reporter"):
        agent.close(timeout_s=0.5)  # the run's end, Redis still away
    assert any("closes with 10 reports unsent" in r.getMessage() for r in caplog.records)
    server.start()
    assert [r.step for r in job.all_reports()] == list(range(10))
    store.close()
