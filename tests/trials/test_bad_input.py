"""Bad input gets a specific error naming what and where, and stored state does not change.

Every test starts from a job with realistic state (reports from two ranks, one of which
restarted, a committed decision whose stage has started, controller state, delivered but
unacknowledged reports, leases, metadata), snapshots every key of it, feeds one kind of bad
input and checks the exception, its message and that the snapshot is byte-for-byte the same.
"""

from __future__ import annotations

import math
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from trials.embedded import EmbeddedRedis
from trials.keys import SCHEMA_VERSION
from trials.serialize import report_from_entry
from trials.store import AppendResult, JobStore, Store
from tuner.errors import (
    ConfigError,
    DecisionConflictError,
    InvalidMetricError,
    MalformedEntryError,
    SchemaVersionError,
    StepRegressionError,
    StoreUnavailableError,
    TautuneError,
)
from tuner.records import Decision, DecisionKind, Report

JOB = "bad-input.run_7"
CONSUMER = "head-0"
TS = 1_700_000_000.0

Snapshot = dict[str, tuple[str, bytes, Any]]


# -- state and snapshots ---------------------------------------------------------------


@dataclass(frozen=True)
class Populated:
    job: JobStore
    pending: list[str]
    """Report entries delivered to the head but not acknowledged."""


def _report(rank: int, step: int, attempt: int = 0, loss: float | None = None) -> Report:
    loss = 3.0 - 0.05 * step + 0.01 * rank if loss is None else loss
    metrics = {"loss": loss, "tokens": 4096.0 * (step + 1)}
    return Report(rank=rank, step=step, attempt=attempt, metrics=metrics, ts=TS + step)


@pytest.fixture
def populated(store: Store) -> Populated:
    job = store.job(JOB)
    job.ensure_group()
    job.set_meta(created=TS, config={"tau": 20, "controller": "lr"}, status="running")
    for rank in (0, 1):
        job.heartbeat(rank, ttl_s=600, info={"pid": 4000 + rank, "host": "node-0"})
    job.heartbeat(None, ttl_s=600, info={"pid": 3999})
    # Two ranks report every other step; rank 1 restarted from its step-16 checkpoint.
    reports = [_report(rank, step) for step in range(0, 20, 2) for rank in (0, 1)]
    reports += [_report(1, 16, attempt=1, loss=2.2), _report(1, 18, attempt=1, loss=2.1)]
    assert job.append_reports(reports) == AppendResult(written=22, duplicates=0)
    batch = job.read_reports(CONSUMER)
    assert len(batch.reports) == 22 and not batch.malformed
    stored = job.commit(
        expected_version=0,
        decision=Decision(
            stage=0,
            kind=DecisionKind.COMMIT,
            from_step=20,
            until_step=40,
            lr=3e-4,
            lr_end=1e-4,
            controller="lr",
            info={"score": -2.15, "candidates": [1e-4, 3e-4, 1e-3]},
        ),
        states={"lr": {"stage": 0, "mu": [-8.1, -8.3], "n_obs": 14, "best": 3e-4}},
        ack_ids=batch.ids[:14],
    )
    assert stored is not None and stored.version == 1
    claim = job.claim(24)  # a worker was answered: stage 0 has started
    assert claim.decision == stored and claim.valid_until == 40
    assert job.horizon() == 39
    return Populated(job, batch.ids[14:])


def snapshot(store: Store, job: str = JOB) -> Snapshot:
    """Every key of ``job``: its type, exact bytes (no TTL) and a readable copy.

    The exact bytes are the key's DUMP, except for hash-table encoded sets and hashes, whose
    DUMP follows the table's iteration order, which a mere lookup may change (incremental
    rehashing); for those they are the sorted members (and values) themselves.
    """
    c = store.client
    out: Snapshot = {}
    for raw in sorted(c.keys(f"tt:{{{job}}}*")):
        kind = c.type(raw).decode()
        encoding = c.object("encoding", raw).decode()
        content: Any
        if kind == "stream":
            groups = c.xinfo_groups(raw)
            content = {
                "entries": c.xrange(raw),
                "groups": [
                    (g["name"], g["consumers"], g["pending"], g["last-delivered-id"])
                    for g in groups
                ],
                "pending": [
                    (g["name"], p["message_id"], p["consumer"], p["times_delivered"])
                    for g in groups
                    for p in c.xpending_range(raw, g["name"], "-", "+", 100_000)
                ],
            }
        elif kind == "hash":
            content = sorted(c.hgetall(raw).items())
        elif kind == "set":
            content = sorted(c.smembers(raw))
        elif kind == "zset":
            content = c.zrange(raw, 0, -1, withscores=True)
        elif kind == "string":
            content = c.get(raw)
        else:
            raise AssertionError(f"unexpected type {kind} of {raw!r}")
        exact = repr(content).encode() if encoding == "hashtable" else c.dump(raw)
        out[raw.decode()] = (f"{kind}/{encoding}", exact, content)
    return out


def assert_unchanged(store: Store, before: Snapshot) -> None:
    after = snapshot(store)
    assert after.keys() == before.keys()
    for key, (kind, exact, content) in before.items():
        assert after[key][0] == kind, key
        assert after[key][2] == content, key
        assert after[key][1] == exact, key  # byte for byte, consumer group included


def test_snapshot_covers_every_kind_of_job_state(store: Store, populated: Populated) -> None:
    snap = snapshot(store)
    k = populated.job.keys
    expected = {
        k.schema, k.meta, k.reports, k.seen, k.progress, k.decisions, k.stages, k.latest,
        k.version, k.horizon, k.ctl("lr"), k.workers, k.lease(0), k.lease(1), k.head_lease,
    }  # fmt: skip
    assert set(snap) == expected
    assert snap[k.reports][2]["groups"] == [(b"head", 1, 8, snap[k.reports][2]["entries"][-1][0])]
    assert [p[1].decode() for p in snap[k.reports][2]["pending"]] == populated.pending
    assert_unchanged(store, snap)
    # Acknowledging one entry changes only the consumer group, and the snapshot sees it.
    store.client.xack(k.reports, "head", populated.pending[0])
    with pytest.raises(AssertionError):
        assert_unchanged(store, snap)


# -- malformed and foreign stream entries ----------------------------------------------


def _r(body: str) -> dict[str, str | bytes]:
    return {"r": body}


_GOOD_BODY = '{"attempt":0,"metrics":{"loss":2.0},"rank":0,"step":30,"ts":1.0}'
FOREIGN: list[tuple[str, dict[str, str | bytes], str]] = [
    ("no r field", {"x": "1", "source": "other-app"}, "no field 'r' (fields: ['source', 'x'])"),
    ("r not JSON", _r("{rank: 0"), "not JSON"),
    ("r not UTF-8", _r(b'{"rank": "\xc3\x28"}'), "not JSON"),
    ("r a JSON array", _r("[0, 30, 2.0]"), "expected a JSON object, got list"),
    ("r a JSON string", _r('"report"'), "expected a JSON object, got str"),
    ("metrics a list", _r(_GOOD_BODY.replace('{"loss":2.0}', "[2.0]")), "'metrics' must be an"),
    ("metric a string", _r(_GOOD_BODY.replace("2.0", '"low"')), "metric 'loss' is not a number"),
    ("metric a bool", _r(_GOOD_BODY.replace("2.0", "true")), "metric 'loss' is not a number"),
    ("metric raw NaN", _r(_GOOD_BODY.replace("2.0", "NaN")), "metric 'loss' is not finite: nan"),
    ("metric raw Infinity", _r(_GOOD_BODY.replace("2.0", "Infinity")), "'loss' is not finite"),
    ("metric -Infinity", _r(_GOOD_BODY.replace("2.0", "-Infinity")), "'loss' is not finite"),
    ("metric 1e999", _r(_GOOD_BODY.replace("2.0", "1e999")), "metric 'loss' is not finite"),
    ("metric huge int", _r(_GOOD_BODY.replace("2.0", "9" * 400)), "metric 'loss' is not finite"),
    ("int too long to parse", _r(_GOOD_BODY.replace("2.0", "9" * 5000)), "not JSON"),
    ("metric name empty", _r(_GOOD_BODY.replace('"loss"', '""')), "metric names must be"),
    ("negative step", _r(_GOOD_BODY.replace('"step":30', '"step":-1')), "'step' must be an int"),
    ("float step", _r(_GOOD_BODY.replace('"step":30', '"step":30.5')), "'step' must be an int"),
    ("no rank", _r(_GOOD_BODY.replace('"rank":0,', "")), "'rank' must be an int >= 0, got None"),
    ("ts NaN", _r(_GOOD_BODY.replace('"ts":1.0', '"ts":NaN')), "'ts' must be a finite number"),
    ("deeply nested", _r("[" * 100_000), "not JSON"),
]


@pytest.mark.parametrize(
    ("fields", "reason"), [c[1:] for c in FOREIGN], ids=[c[0] for c in FOREIGN]
)
def test_foreign_entry_is_refused_by_the_parser_naming_stream_and_entry(
    store: Store, populated: Populated, fields: dict[str, str | bytes], reason: str
) -> None:
    stream = populated.job.keys.reports
    entry_id = store.client.xadd(stream, fields).decode()  # a foreign writer
    before = snapshot(store)
    [(raw_id, stored_fields)] = store.client.xrange(stream, entry_id, entry_id)
    with pytest.raises(MalformedEntryError) as e:
        report_from_entry(stream, raw_id.decode(), stored_fields)
    message = str(e.value)
    assert f"stream {stream!r} entry {entry_id}" in message
    assert reason in message
    assert isinstance(e.value, TautuneError)
    assert_unchanged(store, before)


def test_a_well_formed_entry_still_parses(store: Store, populated: Populated) -> None:
    # The control for the table above: the body it mutates is a valid report.
    stream = populated.job.keys.reports
    entry_id = store.client.xadd(stream, _r(_GOOD_BODY)).decode()
    [(_, fields)] = store.client.xrange(stream, entry_id, entry_id)
    report = report_from_entry(stream, entry_id, fields)
    assert (report.rank, report.step, report.attempt) == (0, 30, 0)
    assert dict(report.metrics) == {"loss": 2.0} and report.ts == 1.0


def test_read_reports_sets_foreign_entries_aside_and_alters_nothing(
    store: Store, populated: Populated
) -> None:
    job, stream = populated.job, populated.job.keys.reports
    foreign: dict[str, str] = {}
    good: list[str] = []
    for step, (_name, fields, reason) in zip(range(20, 100, 2), FOREIGN, strict=False):
        foreign[store.client.xadd(stream, fields).decode()] = reason
        assert job.append_reports([_report(0, step), _report(1, step, attempt=1)]).written == 2
        good += [i.decode() for i, _ in store.client.xrange(stream, "-", "+")[-2:]]
    before = snapshot(store)

    batch = job.read_reports(CONSUMER)
    assert [i for i, _ in batch.reports] == good
    assert [(r.rank, r.step) for _, r in batch.reports][:4] == [(0, 20), (1, 20), (0, 22), (1, 22)]
    assert [i for i, _ in batch.malformed] == list(foreign)
    for entry_id, why in batch.malformed:
        assert f"stream {stream!r} entry {entry_id}" in why
        assert foreign[entry_id] in why

    # Reading only delivered the entries: every other key is byte for byte the same and the
    # stream holds exactly the entries it held, foreign ones included.
    after = snapshot(store)
    assert {k: v for k, v in after.items() if k != stream} == {
        k: v for k, v in before.items() if k != stream
    }
    assert after[stream][2]["entries"] == before[stream][2]["entries"]
    assert len(after[stream][2]["pending"]) == len(populated.pending) + len(good) + len(foreign)

    # A restarted head replays the same split; acknowledging keeps every entry in the stream.
    replay = job.read_reports(CONSUMER, pending=True)
    assert [i for i, _ in replay.reports] == populated.pending + good
    assert replay.malformed == batch.malformed
    job.commit(expected_version=1, ack_ids=replay.ids)
    assert store.client.xrange(stream) == before[stream][2]["entries"]
    assert store.client.xpending(stream, "head")["pending"] == 0


# -- non-finite metrics ----------------------------------------------------------------

NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
def test_non_finite_metric_is_refused_when_the_report_is_made(value: float) -> None:
    with pytest.raises(InvalidMetricError) as e:
        Report(rank=1, step=22, metrics={"tokens": 1.0, "loss": value})
    message = str(e.value)
    assert "metric 'loss' at step 22 (rank 1)" in message
    assert str(value) in message and "finite" in message
    assert isinstance(e.value, TautuneError)


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
def test_non_finite_metric_that_skipped_validation_is_refused_by_the_store(
    store: Store, populated: Populated, value: float
) -> None:
    bad = _report(1, 20, attempt=1)
    object.__setattr__(bad, "metrics", MappingProxyType({"tokens": 1.0, "loss": value}))
    before = snapshot(store)
    with pytest.raises(InvalidMetricError) as e:
        populated.job.append_reports([_report(0, 20), bad, _report(0, 22)])
    message = str(e.value)
    assert f"job {JOB!r}" in message
    assert "metric 'loss' at step 20 (rank 1)" in message and str(value) in message
    assert "Nothing was written" in message
    assert isinstance(e.value, TautuneError)
    assert_unchanged(store, before)


def test_non_finite_timestamp_is_refused_by_the_store(store: Store, populated: Populated) -> None:
    bad = Report(rank=0, step=20, metrics={"loss": 1.0}, ts=math.nan)
    before = snapshot(store)
    with pytest.raises(ConfigError) as e:
        populated.job.append_reports([_report(1, 20, attempt=1), bad])
    assert f"job {JOB!r}" in str(e.value) and "rank 0 step 20" in str(e.value)
    assert "Nothing was written" in str(e.value)
    assert_unchanged(store, before)


# -- steps that go backwards -----------------------------------------------------------

REGRESSIONS = [
    # (batch of (rank, step, attempt), the refused one, the rank's last step and attempt)
    ("behind stored step", [(1, 20, 1), (0, 7, 0), (0, 20, 0)], (0, 7, 0), (18, 0)),
    ("attempt went back", [(0, 20, 0), (1, 20, 0)], (1, 20, 0), (18, 1)),
    (
        "behind earlier in batch",
        [(0, 20, 0), (0, 24, 0), (1, 20, 1), (0, 22, 0)],
        (0, 22, 0),
        (24, 0),
    ),
]


@pytest.mark.parametrize(
    ("batch", "refused", "last"),
    [c[1:] for c in REGRESSIONS],
    ids=[c[0] for c in REGRESSIONS],
)
def test_step_going_backwards_refuses_the_whole_batch(
    store: Store,
    populated: Populated,
    batch: list[tuple[int, int, int]],
    refused: tuple[int, int, int],
    last: tuple[int, int],
) -> None:
    job = populated.job
    reports = [_report(rank, step, attempt) for rank, step, attempt in batch]
    count, progress = job.report_count(), job.progress()
    before = snapshot(store)
    with pytest.raises(StepRegressionError) as e:
        job.append_reports(reports)
    rank, step, attempt = refused
    last_step, last_attempt = last
    message = str(e.value)
    assert f"job {JOB!r} rank {rank}: step {step} (attempt {attempt})" in message
    assert f"step {last_step} (attempt {last_attempt})" in message
    assert "Nothing was written" in message
    assert isinstance(e.value, TautuneError)
    assert job.report_count() == count and job.progress() == progress
    assert_unchanged(store, before)


def test_duplicates_are_skipped_not_refused(store: Store, populated: Populated) -> None:
    job = populated.job
    before = snapshot(store)
    # Already stored (a retried send), even with other metrics: nothing changes.
    again = [_report(0, 18), _report(1, 16, attempt=1, loss=9.9), _report(0, 4, loss=9.9)]
    assert job.append_reports(again) == AppendResult(written=0, duplicates=3)
    assert_unchanged(store, before)
    # Mixed with new reports, and repeated inside one batch: each triple is stored once.
    batch = [_report(0, 18), _report(0, 20), _report(0, 20, loss=9.9), _report(1, 20, attempt=1)]
    assert job.append_reports(batch) == AppendResult(written=2, duplicates=2)
    assert job.report_count() == 24
    assert job.progress() == {0: (0, 20), 1: (1, 20)}
    stored = [r for r in job.all_reports() if (r.rank, r.step) == (0, 20)]
    assert [r.metrics["loss"] for r in stored] == [_report(0, 20).metrics["loss"]]


# -- unknown schema version ------------------------------------------------------------


@pytest.mark.parametrize("found", ["2", "0"])
def test_unknown_schema_version_is_refused_on_open_and_on_write(
    store: Store, populated: Populated, found: str
) -> None:
    old = populated.job  # opened before the job was rewritten under another schema
    store.client.set(old.keys.schema, found)
    before = snapshot(store)

    with pytest.raises(SchemaVersionError) as e:
        store.job(JOB)
    message = str(e.value)
    assert f"job {JOB!r}" in message and store.url in message
    assert f"schema v{found}; this tautune reads v{SCHEMA_VERSION}" in message
    assert "Use the tautune release that wrote it, or start the job under a new name" in message

    with pytest.raises(SchemaVersionError, match=f"schema v{found}; this tautune reads v1"):
        old.append_reports([_report(0, 20), _report(1, 20, attempt=1)])
    with pytest.raises(SchemaVersionError, match=f"schema v{found}; this tautune reads v1"):
        old.commit(
            expected_version=1,
            decision=Decision(stage=1, kind=DecisionKind.HOLD, from_step=40, until_step=60),
            states={"lr": {"stage": 1}},
            ack_ids=populated.pending,
        )
    with pytest.raises(SchemaVersionError, match=f"schema v{found}; this tautune reads v1"):
        old.claim(500)  # a worker must not be promised anything under a foreign schema
    with pytest.raises(SchemaVersionError):
        old.check_schema()
    assert_unchanged(store, before)


# -- unreachable server ----------------------------------------------------------------


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every address a socket tries to connect to, from now on."""
    seen: list[object] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        seen.append(address)
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


# Backoff doubles from 50 ms: two retries sleep 0.1 s + 0.2 s.
_BACKOFF_2 = 0.3


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
        ("redis://app:s3cret@127.0.0.1:1/0", "redis://app:***@127.0.0.1:1/0"),
        ("redis://:s3cret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://127.0.0.1:1/0?password=s3cret", "redis://127.0.0.1:1/0?password=***"),
    ],
)
def test_unreachable_url_is_retried_with_backoff_then_a_clear_error(
    connects: list[object], url: str, shown: str
) -> None:
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as e:
        Store.connect(url, retries=2)
    elapsed = time.monotonic() - start
    assert connects.count(("127.0.0.1", 1)) == 3  # the first try and two retries
    assert _BACKOFF_2 * 0.9 <= elapsed < 5
    message = str(e.value)
    assert f"Redis at {shown} is unreachable after 2 retries with backoff" in message
    assert "s3cret" not in message
    assert "--redis" in message and "TAUTUNE_REDIS_URL" in message
    assert isinstance(e.value, TautuneError)


@pytest.fixture
def private_server() -> Iterator[EmbeddedRedis]:
    state_dir = tempfile.mkdtemp(prefix="tt-")  # short: the socket path must fit 107 bytes
    server = EmbeddedRedis(state_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_stopped_server_is_retried_with_backoff_then_a_clear_error(
    private_server: EmbeddedRedis, connects: list[object]
) -> None:
    private_server.start()
    store = Store.connect(private_server.url, retries=2)
    job = store.job(JOB)
    job.ensure_group()
    assert job.append_reports([_report(0, s) for s in range(4)]).written == 4
    batch = job.read_reports(CONSUMER)
    job.commit(
        expected_version=0,
        decision=Decision(stage=0, kind=DecisionKind.COMMIT, from_step=10, lr=1e-3),
        states={"lr": {"n_obs": 4}},
        ack_ids=batch.ids[:2],
    )
    before = snapshot(store)
    private_server.stop()
    connects.clear()

    attempts = {
        "append_reports": lambda: job.append_reports([_report(0, 4)]),
        "commit": lambda: job.commit(expected_version=1, ack_ids=batch.ids[2:]),
        "read_reports": lambda: job.read_reports(CONSUMER),
        "open": lambda: store.job(JOB),
    }
    for what, attempt in attempts.items():
        connects.clear()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as e:
            attempt()
        elapsed = time.monotonic() - start
        assert connects.count(private_server.socket_path) == 3, what
        assert _BACKOFF_2 * 0.9 <= elapsed < 5, what
        message = str(e.value)
        assert f"Redis at {private_server.url} is unreachable after 2 retries" in message
        assert "Check that it runs" in message and "TAUTUNE_REDIS_URL" in message

    # Back up on the same data: none of the failed calls wrote anything. (Reloading the
    # append-only file rebuilds the consumer group with new delivery times, so compare the
    # readable copies: entries, group, pending list and every other value.)
    private_server.start()
    after = snapshot(store)
    assert {k: (v[0], v[2]) for k, v in after.items()} == {
        k: (v[0], v[2]) for k, v in before.items()
    }
    assert job.append_reports([_report(0, 4)]).written == 1
    store.close()


# -- rewriting a started stage ---------------------------------------------------------


def test_rewriting_a_started_stage_is_refused(store: Store, populated: Populated) -> None:
    job = populated.job
    before = snapshot(store)
    new_state = {"lr": {"stage": 0, "mu": [-7.0], "n_obs": 16, "best": 1e-3}}
    for from_step, until_step in ((20, 40), (30, 40), (39, 60)):
        rewrite = Decision(
            stage=0, kind=DecisionKind.COMMIT, from_step=from_step, until_step=until_step, lr=1e-3
        )
        with pytest.raises(DecisionConflictError) as e:
            job.commit(
                expected_version=1, decision=rewrite, states=new_state, ack_ids=populated.pending
            )
        message = str(e.value)
        assert f"job {JOB!r}: workers were already answered up to step 39" in message
        assert "must start after it. Nothing was written." in message
        assert_unchanged(store, before)

    # A head that read an older version loses, carrying its state and acks with it.
    later = Decision(stage=1, kind=DecisionKind.COMMIT, from_step=40, until_step=60, lr=1e-4)
    with pytest.raises(DecisionConflictError) as e:
        job.commit(expected_version=0, decision=later, states=new_state, ack_ids=populated.pending)
    assert f"job {JOB!r}: another writer committed decision version 1 first" in str(e.value)
    assert "Nothing was written" in str(e.value)
    assert_unchanged(store, before)
    assert job.load_state("lr") == {"stage": 0, "mu": [-8.1, -8.3], "n_obs": 14, "best": 3e-4}

    # The first step after the promise is free, and that commit is visible in the snapshot.
    stored = job.commit(expected_version=1, decision=later, states=new_state, ack_ids=[])
    assert stored is not None and stored.version == 2
    assert snapshot(store) != before
