"""JSON encodings of reports, decisions and controller states (never pickle).

Parsing is strict: anything this tautune did not write raises
:class:`~tuner.errors.MalformedEntryError` naming the stream and entry it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tuner.errors import ConfigError, InvalidMetricError, MalformedEntryError
from tuner.records import Decision, DecisionKind, Report


def dumps(obj: Any) -> str:
    """Compact JSON; refuses NaN and infinities so nothing non-finite is ever stored."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, sort_keys=True)


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def report_to_json(report: Report) -> str:
    """Encode ``report``; raises :class:`InvalidMetricError` for a non-finite metric and
    :class:`ConfigError` for anything else JSON cannot hold (a report that skipped
    validation)."""
    for name, value in report.metrics.items():
        if _finite(value) is None:
            raise InvalidMetricError(
                f"metric {name!r} at step {report.step} (rank {report.rank}) is {value!r}; "
                "tautune stores finite metrics only."
            )
    try:
        return dumps(
            {
                "rank": report.rank,
                "step": report.step,
                "attempt": report.attempt,
                "metrics": dict(report.metrics),
                "ts": report.ts,
            }
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"report of rank {report.rank} step {report.step} cannot be stored: {e}"
        ) from None


def _where(stream: str, entry_id: str) -> str:
    return f"stream {stream!r} entry {entry_id}"


def _load_object(raw: bytes | str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, too long or too deep
        raise MalformedEntryError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise MalformedEntryError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(fields: Mapping[bytes | str, bytes | str], name: str, where: str) -> bytes | str:
    for key, value in fields.items():
        if (key.decode() if isinstance(key, bytes) else key) == name:
            return value
    names = sorted(k.decode(errors="replace") if isinstance(k, bytes) else k for k in fields)
    raise MalformedEntryError(f"{where}: no field {name!r} (fields: {names}); not a tautune entry")


def _int(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEntryError(f"{where}: {name!r} must be an int >= 0, got {value!r}")
    return value


def report_from_entry(
    stream: str, entry_id: str, fields: Mapping[bytes | str, bytes | str]
) -> Report:
    """Parse one reports-stream entry, or raise :class:`MalformedEntryError`."""
    where = _where(stream, entry_id)
    obj = _load_object(_field(fields, "r", where), where)
    metrics = obj.get("metrics")
    if not isinstance(metrics, dict):
        raise MalformedEntryError(f"{where}: 'metrics' must be an object, got {metrics!r}")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedEntryError(f"{where}: metric {name!r} is not a number: {value!r}")
        if _finite(value) is None:
            raise MalformedEntryError(f"{where}: metric {name!r} is not finite: {value!r}")
    ts = _finite(obj.get("ts", 0.0))
    if ts is None:
        raise MalformedEntryError(f"{where}: 'ts' must be a finite number, got {obj.get('ts')!r}")
    try:
        return Report(
            rank=_int(obj, "rank", where),
            step=_int(obj, "step", where),
            attempt=_int(obj, "attempt", where),
            metrics=metrics,
            ts=ts,
        )
    except (ConfigError, InvalidMetricError) as e:
        raise MalformedEntryError(f"{where}: {e}") from None


def decision_to_json(decision: Decision) -> str:
    return dumps(
        {
            "stage": decision.stage,
            "kind": decision.kind.value,
            "from_step": decision.from_step,
            "until_step": decision.until_step,
            "lr": decision.lr,
            "lr_end": decision.lr_end,
            "mixture": dict(decision.mixture) if decision.mixture is not None else None,
            "version": decision.version,
            "controller": decision.controller,
            "info": dict(decision.info),
            "snapshot": decision.snapshot,
            "restore_from": decision.restore_from,
            "restore_peer": decision.restore_peer,
            "publish": decision.publish,
            "decide_at": decision.decide_at,
        }
    )


def decision_from_json(raw: bytes | str, where: str) -> Decision:
    """Parse a stored decision, or raise :class:`MalformedEntryError` naming ``where``."""
    obj = _load_object(raw, where)
    try:
        return Decision(
            stage=_int(obj, "stage", where),
            kind=DecisionKind(str(obj.get("kind"))),
            from_step=_int(obj, "from_step", where),
            until_step=obj.get("until_step"),
            lr=obj.get("lr"),
            lr_end=obj.get("lr_end"),
            mixture=obj.get("mixture"),
            version=_int(obj, "version", where),
            controller=str(obj.get("controller", "")),
            info=obj.get("info") or {},
            snapshot=bool(obj.get("snapshot", False)),
            restore_from=obj.get("restore_from"),
            restore_peer=obj.get("restore_peer"),
            publish=bool(obj.get("publish", False)),
            decide_at=obj.get("decide_at"),
        )
    except (ConfigError, ValueError, TypeError) as e:
        raise MalformedEntryError(f"{where}: {e}") from None


def decision_from_entry(
    stream: str, entry_id: str, fields: Mapping[bytes | str, bytes | str]
) -> Decision:
    where = _where(stream, entry_id)
    return decision_from_json(_field(fields, "d", where), where)


def state_to_json(state: Mapping[str, Any]) -> str:
    try:
        return dumps(dict(state))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"controller state must be finite JSON data: {e}") from None


def state_from_json(raw: bytes | str, where: str) -> dict[str, Any]:
    return _load_object(raw, where)
