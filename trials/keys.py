"""Every Redis key tautune uses, and nothing else.

Keys look like ``tt:{<job>}:v1:<kind>[:<sub>]``. The braces are a Redis Cluster hash tag,
so all of one job's keys live in one slot (Lua scripts may touch them together) while many
jobs spread over a cluster. The schema version is part of every key except
``tt:{<job>}:schema``, which records the version a job was written with so that a tautune
speaking another version can say so instead of misreading the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuner.errors import ConfigError

SCHEMA_VERSION = 1
"""Version of the layout below. Bump it when a key or an encoding changes meaning."""

PREFIX = "tt"
HEAD_GROUP = "head"
"""Consumer group through which the job's head reads reports."""

_JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_job_name(job: str) -> str:
    """Return ``job`` if it is a valid job name, else raise :class:`ConfigError`."""
    if not isinstance(job, str) or not _JOB_RE.match(job):
        raise ConfigError(
            f"job name must be 1-128 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {job!r}"
        )
    return job


@dataclass(frozen=True)
class JobKeys:
    """The keys of one job, or of one trial of a population job.

    A trial's reports, decisions, progress and leases live under
    ``tt:{<job>}:v1:trial:<i>:...``: the same hash tag as the job, so one Lua script may
    write a trial's decision together with the population's shared controller state. The
    schema, metadata, controller states, control requests and the head's lease are the
    job's, shared by its trials.
    """

    job: str
    trial: int | None = None

    def __post_init__(self) -> None:
        check_job_name(self.job)
        if self.trial is not None and (isinstance(self.trial, bool) or self.trial < 0):
            raise ConfigError(f"trial must be an int >= 0, got {self.trial!r}")

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.job}}}"

    @property
    def job_base(self) -> str:
        """Prefix of the keys shared by all trials of the job."""
        return f"{self.tag}:v{SCHEMA_VERSION}"

    @property
    def base(self) -> str:
        """Prefix of this trial's keys (the job's own when it has no trials)."""
        if self.trial is None:
            return self.job_base
        return f"{self.job_base}:trial:{self.trial}"

    def for_trial(self, trial: int | None) -> JobKeys:
        return JobKeys(self.job, trial)

    @property
    def schema(self) -> str:
        """String: the schema version this job was written with (unversioned key)."""
        return f"{self.tag}:schema"

    @property
    def meta(self) -> str:
        """Hash: job metadata (created, config, status)."""
        return f"{self.job_base}:meta"

    @property
    def reports(self) -> str:
        """Stream: one entry per report, field ``r`` holding JSON. Acknowledged entries are
        trimmed beyond a tail (see :mod:`trials.retention`)."""
        return f"{self.base}:reports"

    @property
    def reports_trimmed(self) -> str:
        """String: how many entries were trimmed from :attr:`reports` (absent: none), so
        that the number of reports ever written is ``XLEN`` plus this."""
        return f"{self.base}:reports:trimmed"

    @property
    def seen(self) -> str:
        """Hash: rank -> the idempotency window, the rank's newest stored reports as
        ``,attempt:step,attempt:step,...,`` oldest first (see :mod:`trials.retention`)."""
        return f"{self.base}:reports:recent"

    @property
    def legacy_seen(self) -> str:
        """Set: ``rank:attempt:step`` of every report an earlier tautune stored.

        Never written now. Duplicates of a rank that has no window in :attr:`seen` yet are
        looked up in it; it is deleted once every rank that reported has a window.
        """
        return f"{self.base}:reports:seen"

    @property
    def progress(self) -> str:
        """Hash: rank -> ``attempt:step`` of the rank's last stored report."""
        return f"{self.base}:progress"

    @property
    def waiting(self) -> str:
        """Hash: rank -> the step it last waited at for a decision, its reports before it
        flushed (a rank that reports every N steps is further on than its last report)."""
        return f"{self.base}:waiting"

    @property
    def decisions(self) -> str:
        """Stream: the newest decisions written, field ``d`` holding JSON (the history)."""
        return f"{self.base}:decisions"

    @property
    def stages(self) -> str:
        """Sorted set: from_step of every kept stage, scored by from_step (the index)."""
        return f"{self.base}:dec:stages"

    @property
    def latest(self) -> str:
        """Hash: from_step -> JSON of the newest decision for that stage."""
        return f"{self.base}:dec:latest"

    @property
    def stages_trimmed(self) -> str:
        """String: the step before which stages were dropped from the index (absent: none);
        a claim for an earlier step is refused rather than answered differently."""
        return f"{self.base}:dec:trimmed"

    @property
    def version(self) -> str:
        """String: the newest decision version (0 when none)."""
        return f"{self.base}:dec:version"

    @property
    def horizon(self) -> str:
        """String: the last step any worker was promised an answer for; never rewritten."""
        return f"{self.base}:dec:horizon"

    def ctl(self, name: str) -> str:
        """String: JSON state of controller ``name``."""
        check_job_name(name)
        return f"{self.job_base}:ctl:{name}"

    @property
    def workers(self) -> str:
        """Set: every rank that ever reported or heartbeated."""
        return f"{self.base}:workers"

    def lease(self, rank: int) -> str:
        """String with TTL: the heartbeat of ``rank``."""
        return f"{self.base}:lease:{int(rank)}"

    def peer_state(self, trial: int, rank: int, step: int) -> str:
        """String with TTL: the training state ``rank`` of ``trial`` published at ``step``
        for the other trials of a population job (bytes; :mod:`trials.peer_states`)."""
        return f"{self.job_base}:peer:{int(trial)}:{int(rank)}:{int(step)}"

    def peer_index(self, trial: int, rank: int) -> str:
        """Sorted set with TTL: the steps of the states ``rank`` of ``trial`` has published
        and not yet deleted, scored by when (:mod:`trials.peer_states`)."""
        return f"{self.job_base}:peer:{int(trial)}:{int(rank)}:index"

    @property
    def control(self) -> str:
        """Hash: requests to the head (``detach``: a timestamp) from ``tautune detach``."""
        return f"{self.job_base}:control"

    @property
    def head_lease(self) -> str:
        """String with TTL: the heartbeat of the job's head."""
        return f"{self.job_base}:lease:head"


def job_from_schema_key(key: str) -> str | None:
    """The job name in a ``tt:{<job>}:schema`` key, or ``None`` for any other key."""
    m = re.match(r"^tt:\{(.+)\}:schema$", key)
    return m.group(1) if m else None
