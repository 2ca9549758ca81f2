"""The store against a real redis-server: reports, decisions, claims, states, leases."""

from __future__ import annotations

import json
import pickle
import time

import pytest

from trials.keys import SCHEMA_VERSION
from trials.serialize import decision_from_json, decision_to_json
from trials.store import Store
from tuner.errors import (
    ConfigError,
    DecisionConflictError,
    MalformedEntryError,
    StoreUnavailableError,
)
from tuner.records import Decision, DecisionKind, Report


def _decision(from_step: int, until_step: int | None, lr: float = 0.1, stage: int = 0) -> Decision:
    return Decision(
        stage=stage, kind=DecisionKind.COMMIT, from_step=from_step, until_step=until_step, lr=lr
    )


def test_reports_are_idempotent_by_rank_step_attempt(store: Store) -> None:
    job = store.job("j1")
    first = [Report(rank=0, step=s, metrics={"loss": 1.0 / (s + 1)}) for s in range(5)]
    assert job.append_reports(first).written == 5
    again = job.append_reports(first[2:])
    assert (again.written, again.duplicates) == (0, 3)
    assert job.report_count() == 5
    # Another rank and a restart (higher attempt at an earlier step) are both new.
    job.append_reports([Report(rank=1, step=0, metrics={"loss": 2.0})])
    job.append_reports([Report(rank=0, step=1, attempt=1, metrics={"loss": 0.9})])
    assert job.report_count() == 7
    assert job.progress() == {0: (1, 1), 1: (0, 0)}


def test_consumer_group_replays_unacknowledged_reports(store: Store) -> None:
    job = store.job("j2")
    job.ensure_group()
    job.append_reports([Report(rank=0, step=s, metrics={"loss": float(s)}) for s in range(4)])
    batch = job.read_reports("c1")
    assert [r.step for _, r in batch.reports] == [0, 1, 2, 3]
    assert job.read_reports("c1").reports == []  # delivered, not new
    replay = job.read_reports("c1", pending=True)  # a restarted head sees them again
    assert [r.step for _, r in replay.reports] == [0, 1, 2, 3]
    job.commit(expected_version=0, ack_ids=batch.ids[:2], states={"lr": {"seen": 2}})
    assert [r.step for _, r in job.read_reports("c1", pending=True).reports] == [2, 3]
    assert job.load_state("lr") == {"seen": 2}


def test_commit_writes_decision_state_and_acks_together(store: Store) -> None:
    job = store.job("j3")
    stored = job.commit(expected_version=0, decision=_decision(100, 200), states={"lr": {"x": 1}})
    assert stored is not None and stored.version == 1
    assert job.version() == 1
    assert job.load_state("lr") == {"x": 1}
    assert [d.version for d in job.decisions()] == [1]
    # A second writer that read version 0 loses, and nothing it carried is written.
    with pytest.raises(DecisionConflictError, match="version 1"):
        job.commit(expected_version=0, decision=_decision(200, 300), states={"lr": {"x": 2}})
    assert job.load_state("lr") == {"x": 1}
    assert job.version() == 1


def test_claim_answers_the_decision_covering_a_step(store: Store) -> None:
    job = store.job("j4")
    job.commit(expected_version=0, decision=_decision(10, 20, lr=0.1))
    job.commit(expected_version=1, decision=_decision(20, 30, lr=0.2, stage=1))
    before = job.claim(5, lookahead=16)
    assert before.decision is None and before.valid_until == 10  # stops at the next stage
    inside = job.claim(12)
    assert inside.decision is not None and inside.decision.lr == 0.1
    assert inside.valid_until == 20
    second = job.claim(25)
    assert second.decision is not None and second.decision.lr == 0.2
    after = job.claim(31, lookahead=8)
    assert after.decision is None and after.valid_until == 39


def test_unstarted_stage_may_be_superseded_but_started_stage_never(store: Store) -> None:
    job = store.job("j5")
    job.commit(expected_version=0, decision=_decision(100, 200, lr=0.1))
    job.commit(expected_version=1, decision=_decision(100, 200, lr=0.3))  # not started yet
    assert job.claim(100).decision.lr == 0.3  # type: ignore[union-attr]
    with pytest.raises(DecisionConflictError, match="already answered up to step 199"):
        job.commit(expected_version=2, decision=_decision(100, 200, lr=0.5))
    with pytest.raises(DecisionConflictError):
        job.commit(expected_version=2, decision=_decision(150, 250, lr=0.5))
    assert [d.lr for d in job.stage_decisions()] == [0.3]
    assert job.claim(150).decision.version == 2  # type: ignore[union-attr]


def test_empty_claim_promises_base_schedule_only_when_asked(store: Store) -> None:
    job = store.job("j6")
    peek = job.claim(50, lookahead=10, promise_if_none=False)
    assert peek.decision is None and job.horizon() == -1
    job.claim(50, lookahead=10)
    assert job.horizon() == 59
    with pytest.raises(DecisionConflictError):
        job.commit(expected_version=0, decision=_decision(55, 100))
    job.commit(expected_version=0, decision=_decision(60, 100))


def test_leases_expire(store: Store) -> None:
    job = store.job("j7")
    job.heartbeat(0, ttl_s=0.3, info={"pid": 1})
    job.heartbeat(1, ttl_s=30, info={"pid": 2})
    job.heartbeat(None, ttl_s=30, info={"head": True})
    assert set(job.alive_workers()) == {0, 1}
    assert job.head_alive()
    time.sleep(0.5)
    assert set(job.alive_workers()) == {1}
    job.release(None)
    assert not job.head_alive()


def test_a_rank_waiting_at_a_boundary_says_where(store: Store) -> None:
    job = store.job("j9")
    assert job.waiting() == {}
    job.append_reports([Report(rank=0, step=9, metrics={"loss": 1.0})])
    job.mark_waiting(0, 30)  # reports every 10 steps: trained 10-29 and reported none
    job.mark_waiting(1, 30)
    job.mark_waiting(0, 60)
    assert job.waiting() == {0: 60, 1: 30}
    assert job.progress() == {0: (0, 9)}  # the report stream's order is untouched


def test_jobs_are_listed_and_keys_share_one_hash_tag(store: Store) -> None:
    store.job("alpha").append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    store.job("beta").commit(expected_version=0, decision=_decision(0, 10))
    store.job("beta").mark_waiting(0, 10)
    assert store.jobs() == ["alpha", "beta"]
    keys = [k.decode() for k in store.client.keys("*")]
    assert keys and all(k.startswith(("tt:{alpha}:", "tt:{beta}:")) for k in keys)
    assert all(f":v{SCHEMA_VERSION}:" in k or k.endswith(":schema") for k in keys)


def test_store_pickles_as_url_only_and_reconnects(store: Store) -> None:
    job = store.job("j8")
    job.append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    copy = pickle.loads(pickle.dumps(job))
    assert copy.report_count() == 1
    assert b"unix://" in pickle.dumps(store) and b"Connection" not in pickle.dumps(store)


def test_unreachable_redis_is_a_clear_error_after_retries() -> None:
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1/0 is unreachable") as e:
        Store.connect("redis://app:s3cret@127.0.0.1:1/0", retries=2)
    assert "s3cret" not in str(e.value)  # passwords never reach a message
    assert time.monotonic() - start < 10


def test_decide_at_is_stored_and_read_back_and_checked(store: Store) -> None:
    job = store.job("decide-at")
    d = Decision(stage=0, kind=DecisionKind.COMMIT, from_step=0, until_step=40, decide_at=30)
    job.commit(expected_version=0, decision=d)
    got = job.claim(5).decision
    assert got is not None and got.decide_at == 30
    # A decision stored before the field existed reads back without it.
    raw = json.loads(decision_to_json(d))
    del raw["decide_at"]
    assert decision_from_json(json.dumps(raw), "test").decide_at is None
    for bad in (-1, 40, 41, True, 30.0):
        with pytest.raises(ConfigError, match="decide_at must be a step in"):
            Decision(stage=0, kind="commit", from_step=0, until_step=40, decide_at=bad)
    with pytest.raises(MalformedEntryError, match="decide_at"):
        raw["decide_at"] = 99
        decision_from_json(json.dumps(raw), "test")
