"""What the agent does ahead of training, on a real Redis: the next range's claim sent from
the background thread, promises sized by the step rate, and reports sent at once where the
head needs them (the first one, and the one at ``Decision.decide_at``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from trials.results import Claim
from trials.store import JobStore, Store
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind
from workers.agent import Agent
from workers.decisions import DecisionCache
from workers.reporter import Reporter


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.close()


def _stage(start: int, until: int, stage: int, **kw: Any) -> Decision:
    return Decision(
        stage=stage,
        kind=DecisionKind.COMMIT,
        from_step=start,
        until_step=until,
        lr=0.1 / (stage + 1),
        **kw,
    )


def _record_claims(job: JobStore) -> list[tuple[int, str, int]]:
    """Wrap ``job.claim`` to record ``(step, thread name, lookahead)`` of every call; it
    still runs."""
    calls: list[tuple[int, str, int]] = []
    claim: Callable[..., Claim] = job.claim

    def recorded(step: int, **kw: Any) -> Claim:
        calls.append((step, threading.current_thread().name, kw["lookahead"]))
        return claim(step, **kw)

    job.claim = recorded  # type: ignore[method-assign]
    return calls


def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_the_next_range_is_claimed_from_the_background_thread(
    store: Store, agents: list[Agent]
) -> None:
    job = store.job("ahead")
    for i, start in enumerate(range(0, 100, 10)):
        job.commit(expected_version=i, decision=_stage(start, start + 10, i))
    calls = _record_claims(job)
    agent = Agent(job, 0, sync=False)
    agents.append(agent)
    got = []
    for step in range(100):
        got.append(agent.decision(step))
        time.sleep(0.001)  # a training step: the claim sent ahead lands meanwhile
    assert [d.stage if d else None for d in got] == [s // 10 for s in range(100)]
    assert calls[0][:2] == (0, threading.current_thread().name)  # nothing to go ahead of yet
    # One claim per range, the one after the last stage included (sent from step 96).
    assert [step for step, _, _ in calls] == list(range(0, 101, 10))
    assert {name for _, name, _ in calls[1:]} == {"tautune-reporter-0"}


def test_a_claim_sent_ahead_that_fails_is_made_again_by_the_training_thread(
    store: Store, agents: list[Agent]
) -> None:
    job = store.job("ahead-fails")
    job.commit(expected_version=0, decision=_stage(0, 10, 0))
    job.commit(expected_version=1, decision=_stage(10, 20, 1))
    claim = job.claim
    failures: list[int] = []

    def flaky(step: int, **kw: Any) -> Claim:
        if threading.current_thread().name.startswith("tautune-reporter") and not failures:
            failures.append(step)
            raise ConnectionError("lost the connection")
        return claim(step, **kw)

    job.claim = flaky  # type: ignore[method-assign]
    agent = Agent(job, 0, sync=False)
    agents.append(agent)
    stages = []
    for step in range(20):
        d = agent.decision(step)
        stages.append(d.stage if d else None)
        time.sleep(0.001)
    assert failures == [10]
    assert stages == [0] * 10 + [1] * 10


@pytest.mark.parametrize("head", [True, False])
def test_open_answers_are_promised_for_lookahead_s_at_the_measured_step_rate(
    store: Store, agents: list[Agent], head: bool
) -> None:
    job = store.job(f"rate-{head}")
    if head:
        job.heartbeat(None, ttl_s=60.0, info={"test": "a live head"})
    calls = _record_claims(job)
    agent = Agent(job, 0, lookahead=2, lookahead_s=0.05)
    agents.append(agent)
    for step in range(150):
        assert agent.decision(step) is None
        time.sleep(0.005)
    asked = [n for _, _, n in calls]
    assert asked[0] == 2  # no rate known yet: the floor
    # At no more than 200 steps/s, 0.05 s is at most 10 steps (4x that with no head);
    # sleeps only lengthen steps.
    most = 10 if head else 10 * DecisionCache.UNATTENDED_FACTOR
    assert all(2 <= n <= most for n in asked), asked
    assert max(asked) > 2, asked  # the rate was used, not only the floor
    assert job.horizon() >= 149
    if head:
        job.release(None)

    fast = store.job(f"rate-fast-{head}")
    calls_fast = _record_claims(fast)
    agent = Agent(fast, 0, lookahead=2, lookahead_s=60.0)
    agents.append(agent)
    for step in range(5000):
        agent.decision(step)
    assert calls_fast[-1][2] == DecisionCache.MAX_LOOKAHEAD


@pytest.mark.parametrize("head", [True, False])
def test_a_fast_run_is_promised_no_more_steps_than_it_trained(
    store: Store, agents: list[Agent], head: bool
) -> None:
    # Steps of a few µs: 0.5 s of them is past the cap at once. A head that attaches or
    # decides now must still be able to place its next decision within the steps trained
    # so far again (a 400-step run was promised to step 1,134 at its second claim).
    job = store.job(f"fast-{head}")
    if head:
        job.heartbeat(None, ttl_s=60.0, info={"test": "a live head"})
    calls = _record_claims(job)
    agent = Agent(job, 0, lookahead=16)
    agents.append(agent)
    for step in range(100, 3000):  # a rank that resumed at step 100
        assert agent.decision(step) is None
        # the claim sent ahead covers from PREFETCH_STEPS on, for the steps trained
        most = step + DecisionCache.PREFETCH_STEPS + max(16, step - 100)
        assert job.horizon() < most, (step, job.horizon())
    asked = [(step, n) for step, _, n in calls]
    assert all(n <= max(16, step - 100) for step, n in asked), asked
    assert asked[-1][1] == DecisionCache.MAX_LOOKAHEAD  # the cap, once the run is long
    if head:
        job.release(None)


def test_reports_go_out_at_once_from_the_step_the_head_decides_at(
    store: Store, agents: list[Agent]
) -> None:
    job = store.job("decide-at")
    job.commit(expected_version=0, decision=_stage(0, 100, 0, decide_at=60))
    agent = Agent(job, 0, flush_every=10_000, flush_interval_s=60.0, sync=False)
    agents.append(agent)
    agent.decision(0)
    agent.report(0, loss=1.0)
    assert _until(lambda: job.progress() == {0: (0, 0)})  # the first report goes at once
    for step in range(1, 60):
        agent.decision(step)
        agent.report(step, loss=1.0)
    time.sleep(0.2)
    assert job.progress() == {0: (0, 0)}  # buffered: nothing due yet
    agent.decision(60)
    agent.report(60, loss=1.0)
    assert _until(lambda: job.progress().get(0) == (0, 60))


def test_without_decide_at_reports_wait_for_the_batch(store: Store, agents: list[Agent]) -> None:
    job = store.job("no-decide-at")
    job.commit(expected_version=0, decision=_stage(0, 1000, 0))  # no claim ahead either
    agent = Agent(job, 0, flush_every=10_000, flush_interval_s=60.0, sync=False)
    agents.append(agent)
    agent.decision(0)
    agent.report(0, loss=1.0)
    assert _until(lambda: job.progress() == {0: (0, 0)})
    for step in range(1, 99):
        agent.decision(step)
        agent.report(step, loss=1.0)
    time.sleep(0.2)
    assert job.progress() == {0: (0, 0)}
    agent.flush()
    assert job.progress() == {0: (0, 98)}


def test_submitted_calls_run_in_the_background_thread_until_it_closes(store: Store) -> None:
    reporter = Reporter(store.job("submit"), 0)
    here = threading.current_thread().name
    try:
        assert reporter.submit(lambda: threading.current_thread().name).result(10) != here
        failed = reporter.submit(lambda: 1 / 0)
        assert isinstance(failed.exception(10), ZeroDivisionError)
    finally:
        reporter.close()
    after = reporter.submit(lambda: threading.current_thread().name)
    assert after.done() and after.result() == here  # closed: run at once, right here


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_a_negative_or_nan_lookahead_s_is_refused(store: Store, bad: float) -> None:
    with pytest.raises(ConfigError, match="lookahead_s must be >= 0 seconds"):
        Agent(store.job("bad-lookahead"), 0, lookahead_s=bad)


@pytest.mark.parametrize(("head", "expected"), [(True, 50), (False, 200)])
def test_the_promise_is_lookahead_s_of_steps_at_the_rate_and_longer_with_no_head(
    store: Store, monkeypatch: pytest.MonkeyPatch, head: bool, expected: int
) -> None:
    job = store.job(f"clock-{head}")
    reporter = Reporter(job, 0)
    cache = DecisionCache(
        job,
        reporter,
        0,
        sync=True,
        sync_timeout_s=1.0,
        lookahead=2,
        lookahead_s=0.5,
        last_reported=lambda: -1,
    )
    cache._head_alive = head  # what the last claim said
    clock = iter([100.0, 102.0])  # 200 steps in 2 s: 100 steps/s
    monkeypatch.setattr("workers.decisions.time.monotonic", lambda: next(clock))
    try:
        assert cache._lookahead(1000) == 2  # first claim: no rate yet, the floor
        assert cache._lookahead(1200) == expected  # 0.5 s (x4 with no head) at 100 steps/s
    finally:
        monkeypatch.undo()
        reporter.close()
