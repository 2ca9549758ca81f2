"""The store's Lua scripts refuse with a code (``TT_...``); this turns each into the
:mod:`tuner.errors` exception that says what was wrong, where, and what to do."""

from __future__ import annotations

from trials import keys as K
from trials.connection import redact
from tuner.errors import (
    DecisionConflictError,
    SchemaVersionError,
    StepRegressionError,
    StoreError,
    TrimmedHistoryError,
)


def schema_error(job: str, url: str, found: str) -> SchemaVersionError:
    """Job ``job`` in the Redis at ``url`` was written with schema version ``found``."""
    return SchemaVersionError(
        f"job {job!r} in Redis {redact(url)} was written with tautune schema "
        f"v{found}; this tautune reads v{K.SCHEMA_VERSION}. Use the tautune release that "
        f"wrote it, or start the job under a new name."
    )


def script_error(job: str, url: str, text: str, claimed: int | None = None) -> Exception:
    """The exception for a script's error reply ``text`` (``claimed``: the step a claim
    asked about)."""
    parts = text.split()
    code = parts[0] if parts else ""
    if code == "TT_SCHEMA":
        return schema_error(job, url, parts[1])
    if code == "TT_REGRESSION":
        rank, attempt, step, last_attempt, last_step = parts[1:6]
        return StepRegressionError(
            f"job {job!r} rank {rank}: step {step} (attempt {attempt}) is not after the "
            f"last stored step {last_step} (attempt {last_attempt}). Steps must increase per "
            f"rank; a restarted rank must report under a higher attempt. Nothing was written."
        )
    if code == "TT_CONFLICT":
        return DecisionConflictError(
            f"job {job!r}: another writer committed decision version {parts[1]} first; "
            f"reload state and decide again. Nothing was written."
        )
    if code == "TT_TRIMMED":
        return TrimmedHistoryError(
            f"job {job!r}: the decisions covering steps before {parts[1]} were trimmed "
            f"from the store (Retention.stage_tail and stage_margin), so step "
            f"{claimed} cannot be answered. Resume from a later checkpoint, or keep more "
            f"history with a larger Retention.stage_margin."
        )
    if code == "TT_STARTED":
        return DecisionConflictError(
            f"job {job!r}: workers were already answered up to step {parts[1]}; a "
            f"decision must start after it. Nothing was written."
        )
    return StoreError(f"job {job!r}: Redis refused the script: {text}")
