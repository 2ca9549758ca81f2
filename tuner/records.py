"""Typed records that cross process boundaries: reports in, decisions out.

Both are frozen: once built they are never mutated, and the store serializes them as JSON
(never pickle). Steps are optimizer steps, counted from 0. Learning rates are plain (not
log) here; controllers work in log space internally.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tuner.errors import ConfigError, InvalidMetricError

RESTORABLE_METRIC = "restorable"
"""Metric a worker reports as 1.0 when it carries out snapshot/restore directives."""

RESTORE_MISSED_METRIC = "restore_missed"
"""Reported by a worker from the step a decision asked it to restore a snapshot it does not
hold (its process restarted mid-stage and resumed from a checkpoint, or the snapshot was
evicted): the step, as a float. It took that snapshot from its own state at that step
instead, so the candidates it trains from then on did not start where the stage's others
did (:mod:`workers.explore`)."""

DIVERGED_METRIC = "diverged"
"""Reported as 1.0 (instead of the loss) by a worker whose loss was NaN or infinite while it
trained a candidate it will be restored from (an ``explore`` decision)."""


class DecisionKind(StrEnum):
    """What a decision asks the workers to do over its step range."""

    EXPLORE = "explore"
    """Train a candidate setting, to be scored against others."""
    COMMIT = "commit"
    """Train with the chosen setting."""
    HOLD = "hold"
    """Keep the base schedule (nothing learned yet, or the controller holds back)."""


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


def metric_float(value: Any) -> float:
    """``value`` as a float; a one-element tensor or array through its ``item()``, which
    neither copies a graph nor warns about one (``float()`` of a tensor that requires grad
    does). Raises ``TypeError``, ``ValueError`` or, from a tensor of several elements,
    ``RuntimeError``."""
    item = getattr(value, "item", None)
    return float(item() if callable(item) else value)


@dataclass(frozen=True)
class Report:
    """What one rank measured at one optimizer step.

    Reports are idempotent by ``(rank, step, attempt)``: the same triple written twice is
    stored once. ``attempt`` counts restarts of the rank's process, so a rank that resumes
    from a checkpoint may report an earlier step under a higher attempt.

    Attributes:
        rank: Data-parallel rank, ``>= 0``.
        step: Optimizer step the metrics were measured at, ``>= 0``.
        metrics: Metric name to finite float, e.g. ``{"loss": 2.31}``.
        attempt: Restart counter of this rank, ``>= 0``.
        ts: Wall-clock seconds since the epoch when the report was made.
    """

    rank: int
    step: int
    metrics: Mapping[str, float]
    attempt: int = 0
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        for field_name, field_value in (
            ("rank", self.rank),
            ("step", self.step),
            ("attempt", self.attempt),
        ):
            if isinstance(field_value, bool) or not isinstance(field_value, int) or field_value < 0:
                raise ConfigError(
                    f"Report.{field_name} must be an int >= 0, got {field_name}={field_value!r}"
                )
        clean: dict[str, float] = {}
        for name, value in self.metrics.items():
            if type(value) is float and type(name) is str and name and math.isfinite(value):
                clean[name] = value  # the common case, checked without a conversion
                continue
            if not isinstance(name, str) or not name:
                raise InvalidMetricError(
                    f"metric names must be non-empty strings, got {name!r} "
                    f"(rank {self.rank}, step {self.step})"
                )
            try:
                number = metric_float(value)
            except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several
                raise InvalidMetricError(
                    f"metric {name!r} at step {self.step} (rank {self.rank}) is not a number: "
                    f"{value!r}"
                ) from None
            if not math.isfinite(number):
                raise InvalidMetricError(
                    f"metric {name!r} at step {self.step} (rank {self.rank}) is {number}; "
                    "tautune stores finite metrics only. Skip the report, or check the run "
                    "for divergence."
                )
            clean[name] = number
        object.__setattr__(self, "metrics", MappingProxyType(clean))

    @property
    def key(self) -> tuple[int, int, int]:
        """The idempotency key ``(rank, step, attempt)``."""
        return (self.rank, self.step, self.attempt)


@dataclass(frozen=True)
class Decision:
    """What the workers apply over the step range ``[from_step, until_step)``.

    A decision is immutable once written. A newer ``version`` for a stage that has not
    started supersedes an older one; a started stage is never rewritten.

    Attributes:
        stage: Stage index, from 0.
        kind: Explore, commit or hold.
        from_step: First optimizer step the decision covers.
        until_step: First step after the range, or ``None`` for open-ended.
        lr: Learning rate at ``from_step``; ``None`` keeps the base schedule.
        lr_end: Learning rate at ``until_step`` (linear in between); ``None`` is constant.
        mixture: Arm name to weight (weights sum to 1), or ``None`` to leave the mixture.
        version: Set by the store when written; monotonically increasing per job.
        controller: Name of the controller that made the decision.
        info: Free-form JSON-able notes (scores, candidates) for status and plots.
        snapshot: At ``from_step``, before training that step, every rank saves its
            training state (model, optimizer, sampler, RNG) under the key ``from_step``.
        restore_from: At ``from_step`` (after the snapshot, if any), every rank restores the
            state it saved at that step. Steps keep counting up: a step is one optimizer
            step of work, so exploration is counted and reports never go backwards.
        restore_peer: Population jobs: at ``from_step``, before anything else, every rank
            loads the state that the same rank of trial ``restore_peer`` published at
            ``from_step`` (waiting for it), so the trials go on from one state.
        publish: Population jobs: at ``from_step``, after the other directives, every rank
            publishes its state for the other trials (see ``restore_peer``).
        decide_at: The step whose report lets the head propose the next decision (a
            controller that decides ``lead`` steps before ``until_step``): a worker sends
            its buffered reports as soon as it reports that step, so the next decision is
            in the store before the boundary. ``None``: the next decision is made at
            ``until_step`` (a worker waiting there sends its reports first) or never.
    """

    stage: int
    kind: DecisionKind
    from_step: int
    until_step: int | None = None
    lr: float | None = None
    lr_end: float | None = None
    mixture: Mapping[str, float] | None = None
    version: int = 0
    controller: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)
    snapshot: bool = False
    restore_from: int | None = None
    restore_peer: int | None = None
    publish: bool = False
    decide_at: int | None = None

    def __post_init__(self) -> None:
        if self.decide_at is not None and not (
            isinstance(self.decide_at, int)
            and not isinstance(self.decide_at, bool)
            and self.from_step <= self.decide_at
            and (self.until_step is None or self.decide_at < self.until_step)
        ):
            raise ConfigError(
                "Decision.decide_at must be a step in [from_step, until_step), got "
                f"decide_at={self.decide_at!r}, from_step={self.from_step}, "
                f"until_step={self.until_step}"
            )
        if self.restore_peer is not None and (
            isinstance(self.restore_peer, bool)
            or not isinstance(self.restore_peer, int)
            or self.restore_peer < 0
        ):
            raise ConfigError(
                f"Decision.restore_peer must be a trial index >= 0, got {self.restore_peer!r}"
            )
        if self.restore_from is not None and not (
            isinstance(self.restore_from, int)
            and not isinstance(self.restore_from, bool)
            and 0 <= self.restore_from <= self.from_step
        ):
            raise ConfigError(
                "Decision.restore_from must be a step in [0, from_step] whose snapshot was "
                f"taken, got restore_from={self.restore_from!r}, from_step={self.from_step}"
            )
        if self.stage < 0 or self.from_step < 0:
            raise ConfigError(
                f"stage and from_step must be >= 0, got stage={self.stage}, "
                f"from_step={self.from_step}"
            )
        if self.until_step is not None and self.until_step <= self.from_step:
            raise ConfigError(
                f"until_step must be after from_step, got from_step={self.from_step}, "
                f"until_step={self.until_step}"
            )
        for name, value in (("lr", self.lr), ("lr_end", self.lr_end)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"Decision.{name} must be finite and >= 0, got {value!r}")
        if self.lr_end is not None and (self.lr is None or self.until_step is None):
            raise ConfigError("Decision.lr_end needs both lr and until_step")
        if self.mixture is not None:
            weights = dict(self.mixture)
            if not weights or any(not math.isfinite(w) or w < 0 for w in weights.values()):
                raise ConfigError(f"mixture weights must be finite and >= 0, got {weights}")
            if abs(sum(weights.values()) - 1.0) > 1e-6:
                raise ConfigError(f"mixture weights must sum to 1, got {sum(weights.values())}")
            object.__setattr__(self, "mixture", _frozen(weights))
        object.__setattr__(self, "kind", DecisionKind(self.kind))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def moves_state(self) -> bool:
        """Whether workers snapshot, restore or publish their state at ``from_step``."""
        return (
            self.snapshot
            or self.publish
            or self.restore_from is not None
            or self.restore_peer is not None
        )

    def covers(self, step: int) -> bool:
        """Whether ``step`` lies in ``[from_step, until_step)``."""
        return step >= self.from_step and (self.until_step is None or step < self.until_step)

    def lr_at(self, step: int) -> float | None:
        """The learning rate this decision sets at ``step``, or ``None`` to keep the base."""
        if self.lr is None:
            return None
        if self.lr_end is None or self.until_step is None:
            return self.lr
        span = self.until_step - self.from_step
        frac = min(max((step - self.from_step) / span, 0.0), 1.0)
        return self.lr + (self.lr_end - self.lr) * frac

    def brief(self) -> str:
        """One line for a log: version, stage, kind, steps, LR, what moves and the role,
        e.g. ``v3 stage 2 explore steps 44-52 lr 0.01, restore 32 (probe, candidate 1)``."""
        span = (
            f"from step {self.from_step}"
            if self.until_step is None
            else f"steps {self.from_step}-{self.until_step}"
        )
        parts = [f"v{self.version} stage {self.stage} {self.kind.value} {span}"]
        if self.lr is not None:
            decay = "" if self.lr_end is None else f" -> {self.lr_end:.3g}"
            parts.append(f" lr {self.lr:.3g}{decay}")
        if self.mixture is not None:
            parts.append(" mixture " + " ".join(f"{a}={w:.2f}" for a, w in self.mixture.items()))
        moves = [
            name for name, on in (("snapshot", self.snapshot), ("publish", self.publish)) if on
        ]
        if self.restore_from is not None:
            moves.append(f"restore {self.restore_from}")
        if self.restore_peer is not None:
            moves.append(f"load trial {self.restore_peer}")
        if moves:
            parts.append(", " + ", ".join(moves))
        seg = self.info.get("segment")
        role = seg.get("role") if isinstance(seg, Mapping) else self.info.get("phase")
        if role:
            cand = seg.get("cand") if isinstance(seg, Mapping) else None
            parts.append(f" ({role}" + (f", candidate {cand})" if cand is not None else ")"))
        if self.info.get("final"):
            parts.append(" [final]")
        return "".join(parts)

    def with_version(self, version: int) -> Decision:
        """A copy carrying the version the store assigned."""
        return replace(self, version=version)
