"""The trial store: every read and write of tautune's shared state goes through here.

Only this package imports ``redis``. A :class:`~trials.connection.Store` is a connection to
one Redis (re-exported here); a :class:`JobStore` is one job's view of it, with its leases
and metadata from :class:`~trials.job_meta.JobMeta`. Writes that must agree (a decision, the
controller state that produced it, and the acknowledgement of the reports it consumed)
go through one Lua script, so they land together or not at all. Each script also trims what
it made unnecessary, within the bounds of the job's :class:`~trials.retention.Retention`, so
a long job does not grow Redis without bound.

Thread-safety: redis-py clients are thread-safe; a ``JobStore`` may be shared by threads.
Pickling (for Ray): only the URL travels; the copy reconnects on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis

from trials import keys as K
from trials.connection import URL_ENV as URL_ENV
from trials.connection import Store as Store
from trials.connection import redact as redact
from trials.connection import resolve_url as resolve_url
from trials.job_meta import JobMeta
from trials.peer_states import PeerStates
from trials.results import AppendResult as AppendResult
from trials.results import Claim as Claim
from trials.results import ReadBatch as ReadBatch
from trials.retention import DEFAULT_RETENTION, Retention
from trials.script_errors import schema_error, script_error
from trials.serialize import (
    decision_from_entry,
    decision_from_json,
    decision_to_json,
    report_from_entry,
    report_to_json,
    state_from_json,
    state_to_json,
)
from tuner.errors import (
    ConfigError,
    InvalidMetricError,
    MalformedEntryError,
    SchemaVersionError,
    StoreError,
)
from tuner.records import Decision, Report


@functools.cache
def _script(name: str) -> str:
    return resources.files("trials").joinpath("lua").joinpath(name).read_text()


class JobStore(JobMeta, PeerStates):
    """One job's reports, decisions, controller states and leases.

    Args:
        retention: How much history to keep (default :data:`~trials.retention.DEFAULT_RETENTION`).
            It applies to what this view writes; every writer of a job should use the same.
    """

    def __init__(
        self,
        store: Store,
        job: str,
        trial: int | None = None,
        *,
        retention: Retention = DEFAULT_RETENTION,
    ) -> None:
        self.store = store
        self.keys = K.JobKeys(job, trial)
        self.retention = retention
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
        return JobStore(self.store, self.job, trial, retention=self.retention)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.store, self.job, self.trial, self.retention))

    def exists(self) -> bool:
        """Whether this Redis holds the job (a worker or head has written to it)."""
        return bool(self.store.call(lambda c: c.exists(self.keys.schema)))

    def require(self) -> JobStore:
        """This job store, or :class:`~tuner.errors.ConfigError` when Redis does not hold
        the job (a name mistyped, or another Redis)."""
        if not self.exists() and not self.head_alive():
            raise ConfigError(
                f"no job {self.job!r} in Redis at {redact(self.store.url)}; `tautune jobs` "
                "lists the jobs it holds"
            )
        return self

    def check_schema(self) -> None:
        """Raise :class:`SchemaVersionError` if this job was written under another version."""
        found = self.store.call(lambda c: c.get(self.keys.schema))
        if found is not None and found.decode() != str(K.SCHEMA_VERSION):
            raise self._schema_error(found.decode())

    def _schema_error(self, found: str) -> SchemaVersionError:
        return schema_error(self.job, self.store.url, found)

    def _script_error(self, e: redis.ResponseError, claimed: int | None = None) -> Exception:
        return script_error(self.job, self.store.url, str(e), claimed)

    # -- reports -----------------------------------------------------------------------

    def append_reports(self, reports: Sequence[Report]) -> AppendResult:
        """Store ``reports`` all or nothing; duplicates of stored ``(rank, step, attempt)``
        are skipped.

        A duplicate is recognised among the newest ``retention.seen_per_rank`` reports of its
        rank (what an agent resends after a lost reply); an older one is refused like any
        step at or below the rank's last (see :mod:`trials.retention`).

        Raises:
            StepRegressionError: a report is not after its rank's last stored step.
            SchemaVersionError: the job was written under another schema.
        """
        if not reports:
            return AppendResult(0, 0)
        args: list[Any] = [K.SCHEMA_VERSION, self.retention.seen_per_rank, len(reports)]
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
                    keys=[k.schema, k.progress, k.seen, k.reports, k.workers, k.legacy_seen],
                    args=args,
                    client=c,
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
        """How many reports were ever written, trimmed ones included."""

        def count(c: Any) -> tuple[int, bytes | None]:
            pipe = c.pipeline(transaction=True)
            pipe.xlen(self.keys.reports)
            pipe.get(self.keys.reports_trimmed)
            length, trimmed = pipe.execute()
            return int(length), trimmed

        length, trimmed = self.store.call(count)
        return length + (int(trimmed) if trimmed is not None else 0)

    def all_reports(self) -> list[Report]:
        """The reports still in the stream, in stream order (for status, plots and tests):
        every one the head has not acknowledged and at least the newest
        ``retention.report_tail`` acknowledged ones; all of them while fewer were written."""
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

        Acknowledged reports beyond the retention's tail are trimmed from each stream, and a
        decision may trim the oldest decisions and stages (see :mod:`trials.retention`).

        Args:
            other_acks: Trial -> report ids to acknowledge in that trial's stream too (a
                population head's state covers every trial's reports).

        Returns:
            The decision as stored (with its version), or ``None`` when none was given.

        Raises:
            DecisionConflictError: another writer moved the version, or ``decision`` starts at
                or before a step workers were already answered for. Nothing was written.
        """
        k, keep = self.keys, self.retention
        states = dict(states or {})
        acks: dict[K.JobKeys, list[str]] = {k: list(ack_ids)}
        for trial, ids in (other_acks or {}).items():
            acks.setdefault(k.for_trial(trial), []).extend(ids)
        stored = decision.with_version(expected_version + 1) if decision is not None else None
        script_keys = [k.schema, k.version, k.stages, k.latest, k.horizon, k.decisions]
        script_keys.append(k.stages_trimmed)
        for acked in acks:
            script_keys += [acked.reports, acked.reports_trimmed]
        script_keys += [k.ctl(name) for name in states]
        args: list[Any] = [
            K.SCHEMA_VERSION,
            expected_version,
            K.HEAD_GROUP,
            decision_to_json(stored) if stored is not None else "",
            stored.from_step if stored is not None else -1,
            keep.report_tail,
            keep.trim_every,
            keep.decision_tail,
            keep.stage_tail,
            keep.stage_margin,
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

        Raises:
            StoreError: the stage covering ``step`` was trimmed (it ended at least
                ``retention.stage_margin`` steps before the horizon).
        """
        k = self.keys
        try:
            raw, valid_until, head_alive = self.store.call(
                lambda c: self._claim(
                    keys=[k.stages, k.latest, k.horizon, k.head_lease, k.schema, k.stages_trimmed],
                    args=[step, lookahead, 1 if promise_if_none else 0, K.SCHEMA_VERSION],
                    client=c,
                )
            )
        except redis.ResponseError as e:
            raise self._script_error(e, claimed=step) from None
        decision = decision_from_json(raw, f"{k.latest} stage at step {step}") if raw else None
        return Claim(decision, int(valid_until), bool(head_alive))

    def decisions(self) -> list[Decision]:
        """The newest ``retention.decision_tail`` decisions written (all of them while fewer
        were), oldest first."""
        stream = self.keys.decisions
        entries = self.store.call(lambda c: c.xrange(stream))
        return [decision_from_entry(stream, i.decode(), f) for i, f in entries]

    def stage_decisions(self) -> list[Decision]:
        """The newest decision of every kept stage, by from_step."""
        raw = self.store.call(lambda c: c.hgetall(self.keys.latest))
        out = [decision_from_json(v, f"{self.keys.latest}[{f.decode()}]") for f, v in raw.items()]
        return sorted(out, key=lambda d: d.from_step)

    # -- controller state ----------------------------------------------------------------

    def load_state(self, name: str) -> dict[str, Any] | None:
        key = self.keys.ctl(name)
        raw = self.store.call(lambda c: c.get(key))
        return state_from_json(raw, key) if raw is not None else None

    # -- footprint ---------------------------------------------------------------------

    def memory_by_key(self) -> dict[str, int]:
        """Bytes Redis uses for each key of this view (``MEMORY USAGE``, every element
        counted): the whole job's, its trials' included, for the job's own view; only the
        trial's own keys for a trial's view. Scans the keyspace: for measurements, not for
        a hot path."""
        pattern = f"{self.keys.tag}:*" if self.trial is None else f"{self.keys.base}:*"

        def measure(c: Any) -> dict[str, int]:
            out = {}
            for raw in c.scan_iter(match=pattern, count=1000):
                used = c.memory_usage(raw, samples=0)
                if used is not None:  # gone since the scan (an expired lease)
                    out[raw.decode()] = int(used)
            return out

        return self.store.call(measure)

    def memory_usage(self) -> int:
        """Bytes Redis uses for this view's keys, summed (see :meth:`memory_by_key`)."""
        return sum(self.memory_by_key().values())


def _reopen(store: Store, job: str, trial: int | None, retention: Retention) -> JobStore:
    """Unpickle a :class:`JobStore` (its retention is keyword-only)."""
    return JobStore(store, job, trial, retention=retention)
