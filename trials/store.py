"""The trial store: every read and write of tautune's shared state goes through here.

Only this package imports ``redis``. A :class:`Store` is a connection to one Redis; a
:class:`JobStore` is one job's view of it. Writes that must agree (a decision, the
controller state that produced it, and the acknowledgement of the reports it consumed)
go through one Lua script, so they land together or not at all.

Thread-safety: redis-py clients are thread-safe; a ``JobStore`` may be shared by threads.
Pickling (for Ray): only the URL travels; the copy reconnects on first use.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from trials import keys as K
from trials.serialize import (
    decision_from_entry,
    decision_from_json,
    decision_to_json,
    dumps,
    report_from_entry,
    report_to_json,
    state_from_json,
    state_to_json,
)
from tuner.errors import (
    ConfigError,
    DecisionConflictError,
    InvalidMetricError,
    MalformedEntryError,
    SchemaVersionError,
    StepRegressionError,
    StoreError,
    StoreUnavailableError,
)
from tuner.records import Decision, Report

T = TypeVar("T")

URL_ENV = "TAUTUNE_REDIS_URL"
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)


@functools.cache
def _script(name: str) -> str:
    return resources.files("trials").joinpath("lua").joinpath(name).read_text()


def redact(url: str) -> str:
    """``url`` with any password (user info or ``password=`` query) replaced by ``***``."""
    url = re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def resolve_url(url: str | None) -> str | None:
    """``url`` if given, else ``$TAUTUNE_REDIS_URL``, else ``None`` (embedded server)."""
    return url or os.environ.get(URL_ENV) or None


@dataclass(frozen=True)
class AppendResult:
    written: int
    duplicates: int


@dataclass(frozen=True)
class ReadBatch:
    """Reports read through the head's consumer group.

    Attributes:
        reports: ``(entry_id, report)`` in stream order.
        malformed: ``(entry_id, reason)`` of entries that are not tautune reports. They stay
            in the stream untouched; acknowledge them so they are not delivered again.
    """

    reports: list[tuple[str, Report]]
    malformed: list[tuple[str, str]]
    last_id: str | None = None
    """Id of the last entry read (stream order), or ``None`` when nothing was read."""

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.reports] + [i for i, _ in self.malformed]


@dataclass(frozen=True)
class Claim:
    """The store's answer for a step: the covering decision (or none) until ``valid_until``."""

    decision: Decision | None
    valid_until: int
    head_alive: bool


class Store:
    """A connection to one Redis.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, with ACL user and
            password where the server wants them.
        retries: Connection attempts before :class:`StoreUnavailableError`; backoff doubles
            from 50 ms up to 2 s between them.
    """

    def __init__(self, url: str, *, retries: int = 6, socket_timeout_s: float = 10.0) -> None:
        if not url:
            raise ConfigError("a Redis URL is required (redis://, rediss:// or unix://)")
        self.url = url
        self.retries = retries
        self.socket_timeout_s = socket_timeout_s
        self._client: Any = None

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> Store:
        """Open a store and check that Redis answers (retrying with backoff)."""
        store = cls(url, **kwargs)
        store.call(lambda c: c.ping())
        return store

    @property
    def client(self) -> Any:
        """The redis-py client (typed ``Any``: its reply types depend on decode_responses,
        which tautune leaves off, so replies are bytes)."""
        if self._client is None:
            try:
                self._client = redis.Redis.from_url(
                    self.url,
                    socket_timeout=self.socket_timeout_s,
                    socket_connect_timeout=self.socket_timeout_s,
                    retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), self.retries),
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                )
            except ValueError as e:
                raise ConfigError(f"invalid Redis URL {self.url!r}: {e}") from None
        return self._client

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``, turning connection failures into :class:`StoreUnavailableError`."""
        try:
            return fn(self.client)
        except _CONNECTION_ERRORS as e:
            raise StoreUnavailableError(
                f"Redis at {redact(self.url)} is unreachable after {self.retries} retries with "
                f"backoff ({type(e).__name__}: {e}). Check that it runs and that --redis / "
                f"${URL_ENV} points at it."
            ) from e

    def job(self, job: str, trial: int | None = None) -> JobStore:
        """One job's view (or one trial's, in a population job); raises
        :class:`SchemaVersionError` if it was written by another schema version."""
        return JobStore(self, job, trial)

    def jobs(self) -> list[str]:
        """Names of the jobs this Redis holds, sorted."""
        found = []
        for key in self.call(lambda c: list(c.scan_iter(match="tt:{*}:schema", count=1000))):
            name = K.job_from_schema_key(key.decode())
            if name is not None:
                found.append(name)
        return sorted(found)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "retries": self.retries, "socket_timeout_s": self.socket_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.retries = state["retries"]
        self.socket_timeout_s = state["socket_timeout_s"]
        self._client = None


class JobStore:
    """One job's reports, decisions, controller states and leases."""

    def __init__(self, store: Store, job: str, trial: int | None = None) -> None:
        self.store = store
        self.keys = K.JobKeys(job, trial)
        self._append = store.client.register_script(_script("append_reports.lua"))
        self._commit = store.client.register_script(_script("commit.lua"))
        self._claim = store.client.register_script(_script("claim.lua"))
        self.check_schema()

    @property
    def job(self) -> str:
        return self.keys.job

    @property
    def trial(self) -> int | None:
        return self.keys.trial

    def for_trial(self, trial: int | None) -> JobStore:
        """The same job's view of ``trial`` (``None``: the job itself)."""
        return JobStore(self.store, self.job, trial)

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobStore, (self.store, self.job, self.trial))

    def check_schema(self) -> None:
        """Raise :class:`SchemaVersionError` if this job was written under another version."""
        found = self.store.call(lambda c: c.get(self.keys.schema))
        if found is not None and found.decode() != str(K.SCHEMA_VERSION):
            raise self._schema_error(found.decode())

    def _schema_error(self, found: str) -> SchemaVersionError:
        return SchemaVersionError(
            f"job {self.job!r} in Redis {redact(self.store.url)} was written with tautune schema "
            f"v{found}; this tautune reads v{K.SCHEMA_VERSION}. Use the tautune release that "
            f"wrote it, or start the job under a new name."
        )

    def _script_error(self, e: redis.ResponseError) -> Exception:
        text = str(e)
        parts = text.split()
        if parts and parts[0] == "TT_SCHEMA":
            return self._schema_error(parts[1])
        if parts and parts[0] == "TT_REGRESSION":
            rank, attempt, step, last_attempt, last_step = parts[1:6]
            return StepRegressionError(
                f"job {self.job!r} rank {rank}: step {step} (attempt {attempt}) is not after the "
                f"last stored step {last_step} (attempt {last_attempt}). Steps must increase per "
                f"rank; a restarted rank must report under a higher attempt. Nothing was written."
            )
        if parts and parts[0] == "TT_CONFLICT":
            return DecisionConflictError(
                f"job {self.job!r}: another writer committed decision version {parts[1]} first; "
                f"reload state and decide again. Nothing was written."
            )
        if parts and parts[0] == "TT_STARTED":
            return DecisionConflictError(
                f"job {self.job!r}: workers were already answered up to step {parts[1]}; a "
                f"decision must start after it. Nothing was written."
            )
        return StoreError(f"job {self.job!r}: Redis refused the script: {text}")

    # -- reports -----------------------------------------------------------------------

    def append_reports(self, reports: Sequence[Report]) -> AppendResult:
        """Store ``reports`` all or nothing; duplicates of stored ``(rank, step, attempt)``
        are skipped.

        Raises:
            StepRegressionError: a report is not after its rank's last stored step.
            SchemaVersionError: the job was written under another schema.
        """
        if not reports:
            return AppendResult(0, 0)
        args: list[Any] = [K.SCHEMA_VERSION, len(reports)]
        for r in reports:
            try:
                encoded = report_to_json(r)
            except (InvalidMetricError, ConfigError) as e:
                raise type(e)(f"job {self.job!r}: {e} Nothing was written.") from None
            args += [r.rank, r.attempt, r.step, encoded]
        k = self.keys
        try:
            written, dups = self.store.call(
                lambda c: self._append(
                    keys=[k.schema, k.progress, k.seen, k.reports, k.workers], args=args, client=c
                )
            )
        except redis.ResponseError as e:
            raise self._script_error(e) from None
        return AppendResult(int(written), int(dups))

    def ensure_group(self) -> None:
        """Create the head's consumer group at the start of the stream (idempotent)."""
        try:
            self.store.call(
                lambda c: c.xgroup_create(self.keys.reports, K.HEAD_GROUP, id="0", mkstream=True)
            )
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise StoreError(f"job {self.job!r}: cannot create consumer group: {e}") from e

    def read_reports(
        self,
        consumer: str,
        *,
        count: int = 1000,
        block_ms: int | None = None,
        pending: bool = False,
        after: str = "0",
    ) -> ReadBatch:
        """Read reports through the head's consumer group.

        Args:
            consumer: Name of the reading consumer.
            pending: ``True`` re-reads entries delivered before but never acknowledged (what
                a restarted head must replay); ``False`` reads new entries.
            after: With ``pending``, re-read only entries after this id (to page through).
            block_ms: Wait up to this long for new entries; ``None`` returns at once.
        """
        stream = self.keys.reports
        reply = self.store.call(
            lambda c: c.xreadgroup(
                K.HEAD_GROUP,
                consumer,
                {stream: after if pending else ">"},
                count=count,
                block=None if pending else block_ms,
            )
        )
        reports: list[tuple[str, Report]] = []
        malformed: list[tuple[str, str]] = []
        last_id: str | None = None
        for _name, entries in reply or []:
            for raw_id, fields in entries:
                entry_id = last_id = raw_id.decode()
                if not fields:  # trimmed or deleted while pending
                    malformed.append((entry_id, "entry was deleted"))
                    continue
                try:
                    reports.append((entry_id, report_from_entry(stream, entry_id, fields)))
                except MalformedEntryError as e:
                    malformed.append((entry_id, str(e)))
        return ReadBatch(reports, malformed, last_id)

    def report_count(self) -> int:
        return int(self.store.call(lambda c: c.xlen(self.keys.reports)))

    def all_reports(self) -> list[Report]:
        """Every stored report, in stream order (for status, plots and tests)."""
        stream = self.keys.reports
        entries = self.store.call(lambda c: c.xrange(stream))
        out = []
        for raw_id, fields in entries:
            try:
                out.append(report_from_entry(stream, raw_id.decode(), fields))
            except MalformedEntryError:
                continue
        return out

    def progress(self) -> dict[int, tuple[int, int]]:
        """Rank -> ``(attempt, step)`` of its last stored report."""
        raw = self.store.call(lambda c: c.hgetall(self.keys.progress))
        out = {}
        for rank, value in raw.items():
            attempt, step = value.decode().split(":")
            out[int(rank)] = (int(attempt), int(step))
        return out

    # -- decisions -----------------------------------------------------------------------

    def version(self) -> int:
        raw = self.store.call(lambda c: c.get(self.keys.version))
        return int(raw) if raw is not None else 0

    def horizon(self) -> int:
        """The last step a worker was promised an answer for (-1 before any)."""
        raw = self.store.call(lambda c: c.get(self.keys.horizon))
        return int(raw) if raw is not None else -1

    def commit(
        self,
        *,
        expected_version: int,
        decision: Decision | None = None,
        states: Mapping[str, Mapping[str, Any]] | None = None,
        ack_ids: Iterable[str] = (),
        other_acks: Mapping[int | None, Iterable[str]] | None = None,
    ) -> Decision | None:
        """Atomically write ``decision`` (version ``expected_version + 1``), the controller
        ``states`` and the acknowledgement of ``ack_ids``.

        Args:
            other_acks: Trial -> report ids to acknowledge in that trial's stream too (a
                population head's state covers every trial's reports).

        Returns:
            The decision as stored (with its version), or ``None`` when none was given.

        Raises:
            DecisionConflictError: another writer moved the version, or ``decision`` starts at
                or before a step workers were already answered for. Nothing was written.
        """
        k = self.keys
        states = dict(states or {})
        acks: dict[str, list[str]] = {k.reports: list(ack_ids)}
        for trial, ids in (other_acks or {}).items():
            acks.setdefault(k.for_trial(trial).reports, []).extend(ids)
        stored = decision.with_version(expected_version + 1) if decision is not None else None
        script_keys = [k.schema, k.version, k.stages, k.latest, k.horizon, k.decisions]
        script_keys += list(acks)
        script_keys += [k.ctl(name) for name in states]
        args: list[Any] = [
            K.SCHEMA_VERSION,
            expected_version,
            K.HEAD_GROUP,
            decision_to_json(stored) if stored is not None else "",
            stored.from_step if stored is not None else -1,
            len(acks),
        ]
        for ids in acks.values():
            args += [len(ids), *ids]
        args += [state_to_json(s) for s in states.values()]
        try:
            self.store.call(lambda c: self._commit(keys=script_keys, args=args, client=c))
        except redis.ResponseError as e:
            raise self._script_error(e) from None
        return stored

    def claim(self, step: int, *, lookahead: int = 16, promise_if_none: bool = True) -> Claim:
        """The decision covering ``step``, promised to every rank until ``valid_until``.

        Once answered, no later decision may cover a step in ``[step, valid_until)``, so all
        ranks apply the same thing at the same step whenever each asks. With
        ``promise_if_none=False`` an empty answer promises nothing (a worker waiting at a
        sync boundary polls this way).
        """
        k = self.keys
        try:
            raw, valid_until, head_alive = self.store.call(
                lambda c: self._claim(
                    keys=[k.stages, k.latest, k.horizon, k.head_lease, k.schema],
                    args=[step, lookahead, 1 if promise_if_none else 0, K.SCHEMA_VERSION],
                    client=c,
                )
            )
        except redis.ResponseError as e:
            raise self._script_error(e) from None
        decision = decision_from_json(raw, f"{k.latest} stage at step {step}") if raw else None
        return Claim(decision, int(valid_until), bool(head_alive))

    def decisions(self) -> list[Decision]:
        """Every decision ever written, oldest first."""
        stream = self.keys.decisions
        entries = self.store.call(lambda c: c.xrange(stream))
        return [decision_from_entry(stream, i.decode(), f) for i, f in entries]

    def stage_decisions(self) -> list[Decision]:
        """The newest decision of every stage, by from_step."""
        raw = self.store.call(lambda c: c.hgetall(self.keys.latest))
        out = [decision_from_json(v, f"{self.keys.latest}[{f.decode()}]") for f, v in raw.items()]
        return sorted(out, key=lambda d: d.from_step)

    # -- controller state ----------------------------------------------------------------

    def load_state(self, name: str) -> dict[str, Any] | None:
        key = self.keys.ctl(name)
        raw = self.store.call(lambda c: c.get(key))
        return state_from_json(raw, key) if raw is not None else None

    # -- leases and metadata -------------------------------------------------------------

    def heartbeat(self, rank: int | None, *, ttl_s: float, info: Mapping[str, Any]) -> None:
        """Renew the lease of ``rank`` (``None``: the head) for ``ttl_s`` seconds."""
        key = self.keys.head_lease if rank is None else self.keys.lease(rank)
        ms = max(1, int(ttl_s * 1000))

        def beat(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.set(key, dumps(dict(info)), px=ms)
            if rank is not None:
                pipe.sadd(self.keys.workers, rank)
            pipe.execute()

        self.store.call(beat)

    def release(self, rank: int | None) -> None:
        key = self.keys.head_lease if rank is None else self.keys.lease(rank)
        self.store.call(lambda c: c.delete(key))

    def alive_workers(self) -> dict[int, dict[str, Any]]:
        """Rank -> lease info of every rank whose lease has not expired."""
        ranks = sorted(int(r) for r in self.store.call(lambda c: c.smembers(self.keys.workers)))
        values = (
            self.store.call(lambda c: c.mget([self.keys.lease(r) for r in ranks])) if ranks else []
        )
        return {
            r: state_from_json(v, self.keys.lease(r))
            for r, v in zip(ranks, values, strict=True)
            if v
        }

    def head_alive(self) -> bool:
        return bool(self.store.call(lambda c: c.exists(self.keys.head_lease)))

    def head_info(self) -> dict[str, Any] | None:
        """The live head's lease info (host, pid, ts), or ``None`` when no head is alive."""
        raw = self.store.call(lambda c: c.get(self.keys.head_lease))
        return state_from_json(raw, self.keys.head_lease) if raw is not None else None

    def request_detach(self) -> None:
        """Ask the job's head to leave the last decision in force and stop."""
        self.store.call(lambda c: c.hset(self.keys.control, "detach", dumps(time.time())))

    def detach_requested(self) -> bool:
        return bool(self.store.call(lambda c: c.hexists(self.keys.control, "detach")))

    def clear_detach(self) -> None:
        self.store.call(lambda c: c.hdel(self.keys.control, "detach"))

    def set_meta(self, **fields: Any) -> None:
        encoded = {name: dumps(value) for name, value in fields.items()}
        self.store.call(lambda c: c.hset(self.keys.meta, mapping=encoded))

    def meta(self) -> dict[str, Any]:
        raw = self.store.call(lambda c: c.hgetall(self.keys.meta))
        return {f.decode(): json.loads(v) for f, v in raw.items()}
