"""Bounded history against a real redis-server: the idempotency window, trimming of
acknowledged reports, of decisions and stages, and a job's memory staying flat."""

from __future__ import annotations

import pickle
from collections.abc import Iterable

import pytest

from trials.retention import DEFAULT_RETENTION, Retention
from trials.store import AppendResult, JobStore, Store
from tuner.errors import ConfigError, StepRegressionError, TrimmedHistoryError
from tuner.records import Decision, DecisionKind, Report

HEAD = "head"


def _reports(rank: int, steps: Iterable[int], attempt: int = 0) -> list[Report]:
    return [
        Report(rank=rank, step=s, attempt=attempt, metrics={"loss": 3.0 - 1e-5 * s + rank})
        for s in steps
    ]


def _window(job: JobStore, rank: int) -> list[str]:
    raw = job.store.client.hget(job.keys.seen, rank)
    return raw.decode().strip(",").split(",") if raw else []


def _steps(job: JobStore) -> list[int]:
    return [r.step for r in job.all_reports()]


# -- the idempotency window --------------------------------------------------------------


def test_resent_recent_batch_is_a_duplicate_with_a_bounded_window(store: Store) -> None:
    job = store.job("window", retention=Retention(seen_per_rank=64))
    for start in range(0, 1000, 20):
        for rank in (0, 1, 2):
            assert job.append_reports(_reports(rank, range(start, start + 20))).written == 20
    for rank in (0, 1, 2):
        assert _window(job, rank) == [f"0:{s}" for s in range(1000 - 64, 1000)]
    last = [r for rank in (0, 1, 2) for r in _reports(rank, range(984, 1000))]
    assert job.append_reports(last) == AppendResult(written=0, duplicates=48)
    # A resend followed by new reports: the new ones are written, each once.
    again = _reports(0, range(990, 1004)) + _reports(0, range(1000, 1004))
    assert job.append_reports(again) == AppendResult(written=4, duplicates=14)
    # The window is per rank: others writing a lot meanwhile do not push rank 0's out.
    job.append_reports(_reports(1, range(1000, 6000)))
    assert job.append_reports(_reports(0, range(940, 1004))).duplicates == 64
    assert len(_window(job, 1)) == 64
    assert job.report_count() == 3 * 1000 + 4 + 5000


def test_triple_older_than_the_window_is_refused_as_a_regression(store: Store) -> None:
    job = store.job("old-resend", retention=Retention(seen_per_rank=64))
    for start in range(0, 1000, 50):
        job.append_reports(_reports(0, range(start, start + 50)))
    assert job.append_reports(_reports(0, [936])).duplicates == 1  # the window's oldest
    count, progress, window = job.report_count(), job.progress(), _window(job, 0)
    for step in (935, 10):  # stored, but longer ago than any agent resends
        with pytest.raises(StepRegressionError) as e:
            job.append_reports([*_reports(0, [999]), *_reports(0, [step]), *_reports(0, [1000])])
        message = str(e.value)
        assert f"job 'old-resend' rank 0: step {step} (attempt 0) is not after the last " in message
        assert "last stored step 999 (attempt 0)" in message and "Nothing was written" in message
    assert (job.report_count(), job.progress(), _window(job, 0)) == (count, progress, window)
    # A restarted rank reports under a higher attempt, from an earlier step.
    assert job.append_reports(_reports(0, [10], attempt=1)).written == 1
    assert _window(job, 0)[-2:] == ["0:999", "1:10"]


def test_an_earlier_tautunes_seen_set_still_answers_until_every_rank_has_a_window(
    store: Store,
) -> None:
    job = store.job("legacy")
    c, k = store.client, job.keys
    # What an earlier tautune left: every triple in one set; ranks 0 and 1 reported even steps.
    c.set(k.schema, "1")
    c.hset(k.progress, mapping={"0": "0:8", "1": "0:8"})
    c.sadd(k.legacy_seen, *[f"{rank}:0:{s}" for rank in (0, 1) for s in range(0, 10, 2)])
    assert job.append_reports(_reports(0, [6, 8])) == AppendResult(written=0, duplicates=2)
    with pytest.raises(StepRegressionError, match=r"rank 0: step 3 .* step 8"):
        job.append_reports(_reports(0, [3]))
    assert job.append_reports(_reports(0, [8, 10])) == AppendResult(written=1, duplicates=1)
    assert _window(job, 0) == ["0:10"] and c.exists(k.legacy_seen)  # rank 1 may still resend
    assert job.append_reports(_reports(1, [4, 10])) == AppendResult(written=1, duplicates=1)
    assert not c.exists(k.legacy_seen)
    assert job.append_reports(_reports(0, [10]) + _reports(1, [10])).duplicates == 2


# -- trimming acknowledged reports ---------------------------------------------------------


def test_trimming_never_drops_unacknowledged_or_undelivered_reports(store: Store) -> None:
    job = store.job("trim", retention=Retention(report_tail=10, trim_every=5))
    job.ensure_group()
    job.append_reports(_reports(0, range(100)))
    ids = job.read_reports(HEAD, count=60).ids  # steps 0-59 delivered, 60-99 not
    job.commit(expected_version=0, ack_ids=ids[:30])
    assert _steps(job) == list(range(30, 100))
    job.commit(expected_version=0, ack_ids=ids[40:])  # out of order: 30-39 still pending
    assert _steps(job) == list(range(30, 100))
    job.commit(expected_version=0, ack_ids=ids[30:40])
    assert _steps(job) == list(range(59, 100))  # the last delivered stays; the rest is new
    assert job.report_count() == 100

    # A restarted head replays what it was delivered but never acknowledged, intact.
    ids = job.read_reports(HEAD, count=20).ids  # steps 60-79
    job.commit(expected_version=0, ack_ids=ids[:5])
    restarted = store.job("trim")
    replay = restarted.read_reports(HEAD, pending=True)
    assert [r.step for _, r in replay.reports] == list(range(65, 80)) and not replay.malformed
    restarted.commit(expected_version=0, ack_ids=replay.ids)
    assert [r.step for _, r in restarted.read_reports(HEAD).reports] == list(range(80, 100))
    assert _steps(job)[0] <= 80  # delivered just now, not yet acknowledged

    # Everything acknowledged: only the tail is left, and the count is still exact.
    job.commit(expected_version=0, ack_ids=[i for i, _ in store.client.xrange(job.keys.reports)])
    assert _steps(job) == list(range(90, 100))
    assert job.report_count() == 100
    job.append_reports(_reports(0, range(100, 103)))
    assert job.report_count() == 103


def test_another_consumer_group_holds_trimming_back(store: Store) -> None:
    job = store.job("audited", retention=Retention(report_tail=0, trim_every=1))
    job.ensure_group()
    store.client.xgroup_create(job.keys.reports, "audit", id="0")
    job.append_reports(_reports(0, range(50)))
    job.commit(expected_version=0, ack_ids=job.read_reports(HEAD).ids)
    assert _steps(job) == list(range(50))  # the audit group has read nothing yet
    entries = store.client.xreadgroup("audit", "a", {job.keys.reports: ">"}, count=20)
    store.client.xack(job.keys.reports, "audit", *[i for i, _ in entries[0][1][:10]])
    job.append_reports(_reports(0, [50]))
    job.commit(expected_version=0, ack_ids=job.read_reports(HEAD).ids)
    assert _steps(job) == list(range(10, 51))  # audit's oldest pending is step 10
    assert job.report_count() == 51


def test_population_acks_trim_each_trials_stream(store: Store) -> None:
    keep = Retention(report_tail=5, trim_every=5)
    trials = [store.job("pop", trial, retention=keep) for trial in (0, 1)]
    for t in trials:
        t.ensure_group()
        t.append_reports(_reports(0, range(20)))
    ids = [t.read_reports(HEAD).ids for t in trials]
    trials[0].commit(expected_version=0, ack_ids=ids[0], other_acks={1: ids[1]})
    assert [_steps(t) for t in trials] == [list(range(15, 20))] * 2
    assert [t.report_count() for t in trials] == [20, 20]


# -- decisions and stages ------------------------------------------------------------------


def test_decision_history_and_stage_index_are_bounded(store: Store) -> None:
    keep = Retention(decision_tail=5, stage_tail=4, stage_margin=20)
    job = store.job("stages", retention=keep)
    for i in range(12):  # stages of 10 steps, each claimed by a worker once written
        lr = 0.01 * (i + 1)
        d = Decision(
            stage=i, kind=DecisionKind.COMMIT, from_step=10 * i, until_step=10 * i + 10, lr=lr
        )
        job.commit(expected_version=i, decision=d)
        assert job.claim(10 * i + 5).decision == d.with_version(i + 1)
    assert [d.version for d in job.decisions()] == [8, 9, 10, 11, 12]
    # Each commit dropped the oldest stage beyond the newest 4: it had ended 20 or more
    # steps before the horizon.
    assert job.horizon() == 119
    assert [d.from_step for d in job.stage_decisions()] == [80, 90, 100, 110]
    assert store.client.get(job.keys.stages_trimmed) == b"80"
    with pytest.raises(TrimmedHistoryError) as e:
        job.claim(79)
    assert "steps before 80 were trimmed" in str(e.value) and "step 79 cannot" in str(e.value)
    assert job.horizon() == 119  # a refused claim promises nothing
    covering = job.claim(85).decision
    assert covering is not None and covering.lr == 0.09

    # A stage closer to the horizon than the margin stays, however many there are.
    for i in range(12, 16):
        d = Decision(stage=i, kind=DecisionKind.COMMIT, from_step=10 * i, until_step=None, lr=0.5)
        job.commit(expected_version=i, decision=d)
    assert [d.from_step for d in job.stage_decisions()][:2] == [90, 100]
    assert store.client.get(job.keys.stages_trimmed) == b"90"


# -- memory --------------------------------------------------------------------------------


def test_memory_stays_flat_over_50k_reports(store: Store) -> None:
    job = store.job("week")
    assert job.retention == DEFAULT_RETENTION
    job.ensure_group()
    ranks, per_batch, version, step = 8, 25, 0, 0
    after: dict[int, int] = {}
    while job.report_count() < 50_000:
        for rank in range(ranks):
            job.append_reports(_reports(rank, range(step, step + per_batch)))
        step += per_batch
        batch = job.read_reports(HEAD, count=10_000)
        decision = None
        if step % 100 == 0:
            decision = Decision(
                stage=version, kind=DecisionKind.COMMIT, from_step=step + 1000,
                until_step=step + 1100, lr=3e-4, info={"candidates": [1e-4, 3e-4, 1e-3]},
            )  # fmt: skip
        job.commit(expected_version=version, decision=decision, ack_ids=batch.ids)
        version += decision is not None
        count = job.report_count()
        if count in (10_000, 50_000):
            after[count] = job.memory_usage()
    assert job.report_count() == 50_000
    assert after[50_000] <= 2 * after[10_000], after
    last = [r for rank in range(ranks) for r in _reports(rank, range(step - per_batch, step))]
    assert job.append_reports(last) == AppendResult(written=0, duplicates=len(last))
    with pytest.raises(StepRegressionError):
        job.append_reports(_reports(0, [10]))
    assert store.client.xlen(job.keys.reports) <= DEFAULT_RETENTION.report_tail + 1_000


def test_memory_usage_covers_the_jobs_keys(store: Store) -> None:
    job = store.job("measured")
    job.append_reports(_reports(0, range(10)))
    job.for_trial(0).append_reports(_reports(0, range(10)))
    job.commit(expected_version=0, states={"lr": {"x": 1}})
    by_key = job.memory_by_key()
    assert set(by_key) == {k.decode() for k in store.client.keys("tt:{measured}:*")}
    assert job.memory_usage() == sum(by_key.values()) > 0
    trial = job.for_trial(0).memory_by_key()
    assert trial and all(":trial:0:" in k for k in trial)


def test_retention_is_checked_and_travels_with_the_store(store: Store) -> None:
    for bad in ({"seen_per_rank": 0}, {"trim_every": True}, {"stage_margin": -1}):
        with pytest.raises(ConfigError, match="Retention"):
            Retention(**bad)  # type: ignore[arg-type]
    keep = Retention(report_tail=3)
    job = store.job("kept", retention=keep)
    assert pickle.loads(pickle.dumps(job)).retention == keep
    assert job.for_trial(1).retention == keep
