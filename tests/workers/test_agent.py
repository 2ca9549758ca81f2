"""The worker-side Agent against a real redis-server: buffered reports, leases, attach,
step-keyed decisions that every rank agrees on, and the sync stage boundary."""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import JobStore, Store
from tuner.errors import (
    ConfigError,
    DecisionConflictError,
    InvalidMetricError,
    StepRegressionError,
)
from tuner.records import Decision, DecisionKind
from workers.agent import Agent
from workers.decisions import DecisionCache

MakeAgent = Callable[..., Agent]


@pytest.fixture
def make_agent() -> Iterator[MakeAgent]:
    """Builds agents and closes every one of them (stopping its thread) after the test."""
    made: list[Agent] = []

    def make(job: JobStore, rank: int = 0, **kwargs: Any) -> Agent:
        agent = Agent(job, rank, **kwargs)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def _decision(from_step: int, until_step: int | None, lr: float = 0.1, stage: int = 0) -> Decision:
    return Decision(
        stage=stage, kind=DecisionKind.COMMIT, from_step=from_step, until_step=until_step, lr=lr
    )


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- reports and leases ------------------------------------------------------------------


def test_report_is_buffered_until_flush(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("buf")
    agent = make_agent(job, 0, flush_every=1000, flush_interval_s=30.0, lease_ttl_s=30.0)
    agent.report(0, loss=2.5)  # the first goes at once: the head starts from it
    assert _wait_for(lambda: job.report_count() == 1)
    agent.report(1, loss=2.25)
    agent.report(2, loss=2.0)
    time.sleep(0.2)  # the background thread must not send a partial buffer
    assert job.report_count() == 1
    assert agent.reports_sent == 1
    agent.flush()
    assert job.report_count() == 3
    assert agent.reports_sent == 3
    stored = job.all_reports()
    assert [(r.rank, r.step, r.attempt) for r in stored] == [(0, 0, 0), (0, 1, 0), (0, 2, 0)]
    assert [r.metrics["loss"] for r in stored] == [2.5, 2.25, 2.0]
    agent.flush()  # nothing new: nothing sent twice
    assert job.report_count() == 3 and agent.reports_sent == 3


def test_close_sends_everything_and_releases_the_lease(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("close")
    # Long flush interval and lease: the lease must still appear as soon as the agent runs.
    agent = make_agent(job, 3, flush_every=1000, flush_interval_s=30.0, lease_ttl_s=30.0)
    assert _wait_for(lambda: 3 in job.alive_workers()), "no lease while the agent runs"
    assert job.alive_workers()[3]["pid"] == os.getpid()
    agent.report(0, loss=1.0)  # the first goes at once (the head starts from it) ...
    assert _wait_for(lambda: job.report_count() == 1)
    for step in range(1, 5):
        agent.report(step, loss=1.0 / (step + 1))
    time.sleep(0.1)
    assert job.report_count() == 1  # ... the rest wait for the batch, or for close()
    agent.close()
    assert job.report_count() == 5
    assert agent.reports_sent == 5
    assert job.progress() == {3: (0, 4)}
    assert 3 not in job.alive_workers()
    agent.close()  # idempotent


def test_background_thread_sends_on_size_and_on_interval(
    store: Store, make_agent: MakeAgent
) -> None:
    by_size = store.job("size")
    agent = make_agent(by_size, 0, flush_every=3, flush_interval_s=30.0, lease_ttl_s=30.0)
    agent.report(0, loss=1.0)  # the first goes at once
    assert _wait_for(lambda: by_size.report_count() == 1)
    agent.report(1, loss=1.0)
    agent.report(2, loss=1.0)
    time.sleep(0.2)
    assert by_size.report_count() == 1
    agent.report(3, loss=1.0)
    assert _wait_for(lambda: by_size.report_count() == 4)
    # counted once the write returns, a moment after Redis holds the reports
    assert _wait_for(lambda: agent.reports_sent == 4)

    by_time = store.job("time")
    other = make_agent(by_time, 0, flush_every=1000, flush_interval_s=0.05)
    other.report(0, loss=1.0)
    assert _wait_for(lambda: by_time.report_count() == 1)


def test_flush_racing_a_slow_background_send_loses_and_reorders_nothing(
    store: Store, make_agent: MakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.job("race")
    real_append = job.append_reports

    def slow_from_the_thread(batch: Any) -> Any:
        if threading.current_thread().name.startswith("tautune-reporter"):
            time.sleep(0.05)  # a slow network while the training thread flushes
        return real_append(batch)

    monkeypatch.setattr(job, "append_reports", slow_from_the_thread)
    agent = make_agent(job, 0, flush_every=2, flush_interval_s=30.0, lease_ttl_s=30.0)
    n = 12
    for step in range(0, n, 3):
        agent.report(step, loss=float(step))
        agent.report(step + 1, loss=float(step + 1))  # the thread takes these two ...
        time.sleep(0.01)
        agent.report(step + 2, loss=float(step + 2))
        agent.flush()  # ... while this sends the third
    agent.close()
    assert [r.step for r in job.all_reports()] == list(range(n))
    assert agent.reports_sent == n


@pytest.mark.parametrize(
    ("value", "match"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf"), ("abc", "not a number")],
)
def test_invalid_metric_raises_and_records_nothing(
    store: Store, make_agent: MakeAgent, value: Any, match: str
) -> None:
    job = store.job("bad")
    agent = make_agent(job, 0, flush_every=1000, flush_interval_s=30.0)
    agent.report(0, loss=1.0)
    with pytest.raises(InvalidMetricError, match=match):
        agent.report(1, loss=0.5, grad_norm=value)
    agent.report(1, loss=0.5)  # step 1 was not consumed by the failed call
    agent.flush()
    stored = job.all_reports()
    assert [r.step for r in stored] == [0, 1]
    assert all("grad_norm" not in r.metrics for r in stored)


def test_step_regression_raises_and_changes_nothing(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("regress")
    agent = make_agent(job, 0, flush_every=1000, flush_interval_s=30.0)
    agent.report(5, loss=1.0)
    for bad in (3, 0):
        with pytest.raises(StepRegressionError, match=f"step {bad} after step 5"):
            agent.report(bad, loss=9.0)
    # a second call for one step (a validation loss reported apart) says how to do it
    with pytest.raises(StepRegressionError, match=r"step 5 was reported already: pass all"):
        agent.report(5, val_loss=9.0)
    agent.report(6, loss=0.9)
    agent.flush()
    assert [(r.step, r.metrics["loss"]) for r in job.all_reports()] == [(5, 1.0), (6, 0.9)]


# -- attach ------------------------------------------------------------------------------


@pytest.fixture
def attached() -> Iterator[list[Agent]]:
    agents: list[Agent] = []
    yield agents
    for agent in agents:
        agent.close()


def test_attach_reads_job_url_and_rank_from_the_environment(
    store: Store,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    attached: list[Agent],
) -> None:
    monkeypatch.setenv("TAUTUNE_JOB", "envjob")
    monkeypatch.setenv("TAUTUNE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("RANK", "2")
    agent = Agent.attach(flush_every=1000, flush_interval_s=30.0)
    attached.append(agent)
    assert (agent.store.job, agent.rank, agent.attempt) == ("envjob", 2, 0)
    agent.report(0, loss=1.0)
    agent.flush()
    assert store.job("envjob").progress() == {2: (0, 0)}
    # Explicit arguments win over the environment.
    other = Agent.attach("argjob", redis_server.url, rank=0)
    attached.append(other)
    assert (other.store.job, other.rank) == ("argjob", 0)


def test_attach_defaults_rank_to_zero(
    store: Store,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    attached: list[Agent],
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("TAUTUNE_REDIS_URL", redis_server.url)
    agent = Agent.attach("norank")
    attached.append(agent)
    assert agent.rank == 0


def test_attach_without_a_job_name_says_how_to_give_one(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TAUTUNE_JOB", raising=False)
    with pytest.raises(ConfigError, match=r"job=.*\$TAUTUNE_JOB"):
        Agent.attach(redis_url=redis_server.url)


def test_attach_without_a_url_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAUTUNE_REDIS_URL", raising=False)
    monkeypatch.setenv("TAUTUNE_JOB", "nourl")
    with pytest.raises(ConfigError, match=r"redis_url=.*\$TAUTUNE_REDIS_URL.*tautune submit"):
        Agent.attach()


@pytest.mark.parametrize("raw", ["one", "1.5", ""])
def test_attach_rejects_a_rank_that_is_not_an_int(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("RANK", raw)
    with pytest.raises(ConfigError, match=rf"\$RANK must be an integer, got {raw!r}"):
        Agent.attach("badrank", redis_server.url)


def test_attach_rejects_a_negative_rank(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(ConfigError, match="rank must be >= 0"):
        Agent.attach("negrank", redis_server.url, rank=-1)


def test_reattach_takes_the_next_attempt_and_may_restart_from_step_zero(
    store: Store, redis_server: EmbeddedRedis, attached: list[Agent]
) -> None:
    first = Agent.attach("restart", redis_server.url, rank=1)
    attached.append(first)
    assert first.attempt == 0
    for step in range(10):
        first.report(step, loss=1.0)
    first.close()
    # Rank 0 never reported: its first attach is attempt 0 whatever rank 1 did.
    zero = Agent.attach("restart", redis_server.url, rank=0)
    attached.append(zero)
    assert zero.attempt == 0

    second = Agent.attach("restart", redis_server.url, rank=1)
    attached.append(second)
    assert second.attempt == 1
    second.report(0, loss=2.0)  # back to the checkpoint at step 0: allowed
    second.report(1, loss=1.5)
    second.close()
    job = store.job("restart")
    assert job.progress()[1] == (1, 1)
    assert job.report_count() == 12
    third = Agent.attach("restart", redis_server.url, rank=1)
    attached.append(third)
    assert third.attempt == 2


# -- decisions -----------------------------------------------------------------------------


def test_no_decision_means_base_schedule(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("none")
    agent = make_agent(job, 0, lookahead=8, lookahead_s=0)  # promises of 8 steps exactly
    assert all(agent.decision(step) is None for step in range(40))
    # The empty answers were promised: a decision may not start inside them any more. The
    # range after 32..39 was claimed ahead, from step 36 (PREFETCH_STEPS before its end).
    assert DecisionCache.PREFETCH_STEPS == 4
    deadline = time.monotonic() + 10.0  # by the background thread, which may still be at it
    while job.horizon() != 47 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.horizon() == 47
    with pytest.raises(DecisionConflictError):
        job.commit(expected_version=0, decision=_decision(47, None))
    job.commit(expected_version=0, decision=_decision(48, None))
    assert all(agent.decision(step) is None for step in range(40, 48))
    assert agent.decision(48) is not None


def test_decision_returns_the_committed_decision_covering_each_step(
    store: Store, make_agent: MakeAgent
) -> None:
    job = store.job("cover")
    job.commit(expected_version=0, decision=_decision(10, 20, lr=0.5, stage=0))
    job.commit(expected_version=1, decision=_decision(30, None, lr=0.2, stage=1))
    agent = make_agent(job, 0, lookahead=16)
    got = [agent.decision(step) for step in range(50)]
    for step, d in enumerate(got):
        if 10 <= step < 20:
            assert d is not None and (d.version, d.lr, d.until_step) == (1, 0.5, 20), step
        elif step >= 30:
            assert d is not None and (d.version, d.lr, d.until_step) == (2, 0.2, None), step
        else:
            assert d is None, step
    assert agent.stall_s == 0.0  # no head lease: never waited


def _truth(job: JobStore, step: int) -> Decision | None:
    """The decision covering ``step`` according to the stored stage decisions."""
    covering = [d for d in job.stage_decisions() if d.from_step <= step]
    if not covering or not covering[-1].covers(step):
        return None
    return covering[-1]


@pytest.mark.parametrize("leader", [0, 1])
def test_all_ranks_agree_even_when_decisions_land_between_their_reads(
    store: Store, make_agent: MakeAgent, leader: int
) -> None:
    job = store.job(f"agree{leader}")
    agents = {r: make_agent(job, r, lookahead=4, lookahead_s=0, sync=False) for r in (0, 1)}
    ahead, behind = agents[leader], agents[1 - leader]
    lag, steps = 7, 80
    seen: dict[int, list[Decision | None]] = {0: [], 1: []}
    accepted = refused = 0
    for step in range(steps + lag):
        if step < steps:
            seen[ahead.rank].append(ahead.decision(step))
        if step % 3 == 0 and step < steps:
            # The head tries to start a new decision at the step the leader was just
            # answered for: that step was promised, so this must be refused ...
            with pytest.raises(DecisionConflictError, match="already answered"):
                job.commit(
                    expected_version=job.version(),
                    decision=_decision(step, None, lr=0.01 * (step + 1), stage=step),
                )
            refused += 1
            # ... while a decision past the promise is accepted, and seen by both ranks.
            try:
                job.commit(
                    expected_version=job.version(),
                    decision=_decision(step + 5, step + 9, lr=0.02 * (step + 1), stage=step),
                )
                accepted += 1
            except DecisionConflictError:
                refused += 1
        if step >= lag:
            seen[behind.rank].append(behind.decision(step - lag))
    assert accepted >= 5 and refused >= 5  # both branches were exercised
    assert seen[0] == seen[1]
    assert seen[0] == [_truth(job, s) for s in range(steps)]
    versions = {d.version for d in seen[0] if d is not None}
    assert len(versions) >= 5 and None in seen[0]  # the answers really changed over time


@pytest.mark.parametrize("first", [0, 1])
def test_a_decision_committed_between_two_ranks_reads_is_refused(
    store: Store, make_agent: MakeAgent, first: int
) -> None:
    job = store.job(f"between{first}")
    job.commit(expected_version=0, decision=_decision(0, 50, lr=0.1))
    agents = {r: make_agent(job, r, lookahead=16) for r in (0, 1)}
    early = [agents[first].decision(step) for step in range(40)]
    with pytest.raises(DecisionConflictError):  # would rewrite steps 30..49 that started
        job.commit(expected_version=1, decision=_decision(30, None, lr=0.9, stage=1))
    job.commit(expected_version=1, decision=_decision(50, None, lr=0.3, stage=1))
    late = [agents[1 - first].decision(step) for step in range(60)]
    assert late[:40] == early
    assert {d.lr for d in late[:50] if d} == {0.1} and None not in late[:50]
    assert {d.lr for d in late[50:] if d} == {0.3} and None not in late[50:]


# -- sync boundary ---------------------------------------------------------------------------


def _ran_stage(job: JobStore, agent: Agent, until: int) -> None:
    job.commit(expected_version=0, decision=_decision(0, until, lr=0.5))
    for step in range(until):
        d = agent.decision(step)
        assert d is not None and d.lr == 0.5


def test_sync_boundary_waits_for_the_next_decision(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("sync")
    job.heartbeat(None, ttl_s=30, info={})
    agent = make_agent(job, 0, sync_timeout_s=10.0, flush_every=1000, flush_interval_s=30.0)
    _ran_stage(job, agent, 10)
    agent.report(9, loss=1.0)

    def head() -> None:
        time.sleep(0.3)
        job.commit(expected_version=1, decision=_decision(10, 20, lr=0.25, stage=1))

    thread = threading.Thread(target=head)
    thread.start()
    start = time.monotonic()
    got = agent.decision(10)
    waited = time.monotonic() - start
    thread.join()
    assert got is not None and (got.version, got.lr, got.from_step) == (2, 0.25, 10)
    assert 0.2 < agent.stall_s < 5.0
    assert waited >= 0.2
    assert job.report_count() == 1  # the wait flushed what the head may be waiting for
    assert agent.decision(15) == got


def test_sync_boundary_times_out_to_the_base_schedule(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("timeout")
    job.heartbeat(None, ttl_s=30, info={})
    agent = make_agent(job, 0, sync_timeout_s=0.15, lookahead=8)
    _ran_stage(job, agent, 10)
    with pytest.warns(UserWarning, match="waited .* at step 10 .* base schedule"):
        got = agent.decision(10)
    assert got is None
    assert agent.stall_s >= 0.15
    # The fallback was promised: a late decision for the boundary is refused.
    with pytest.raises(DecisionConflictError):
        job.commit(expected_version=1, decision=_decision(10, 20, lr=0.25, stage=1))
    # And the agent does not wait again inside the fallback range.
    stalled = agent.stall_s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [agent.decision(s) for s in range(11, 18)] == [None] * 7
    assert agent.stall_s == stalled


def test_no_wait_without_a_live_head(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("nohead")
    agent = make_agent(job, 0, sync_timeout_s=5.0)
    _ran_stage(job, agent, 10)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agent.decision(10) is None
    assert time.monotonic() - start < 0.5
    assert agent.stall_s == 0.0


def test_no_wait_in_async_mode(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("async")
    job.heartbeat(None, ttl_s=30, info={})
    agent = make_agent(job, 0, sync=False, sync_timeout_s=5.0)
    _ran_stage(job, agent, 10)
    start = time.monotonic()
    assert agent.decision(10) is None
    assert time.monotonic() - start < 0.5
    assert agent.stall_s == 0.0


def test_no_wait_away_from_a_boundary(store: Store, make_agent: MakeAgent) -> None:
    job = store.job("noboundary")
    job.heartbeat(None, ttl_s=30, info={})
    agent = make_agent(job, 0, sync_timeout_s=5.0)
    start = time.monotonic()
    assert [agent.decision(s) for s in range(20)] == [None] * 20  # no decision applied yet
    assert time.monotonic() - start < 0.5
    assert agent.stall_s == 0.0
