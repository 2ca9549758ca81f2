"""What the stage-wise LR searches share: their settings and their stage grid.

Steps are optimizer steps; LRs are plain outside and searched in log space. A search runs
stages of ``tau`` steps from ``warmup_steps`` on, proposes the next stage ``lead`` steps
before the current one ends, and, when ``total_steps`` is known, ends with one decision
that decays linearly from the center LR to ``final_lr`` over the last
``anneal_fraction`` of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuner.controllers.base import Plan
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind


@dataclass(frozen=True)
class LRSearchConfig:
    """Settings every LR search has.

    Attributes:
        init_lr: LR the search starts from.
        lr_min, lr_max: Bounds of the search; default ``init_lr/100`` and ``init_lr*100``.
        tau: Stage length.
        total_steps: Length of the run; enables the final anneal.
        warmup_steps: Steps left to the base schedule before the first decision.
        anneal_fraction: Fraction of ``total_steps`` at the end that decays to ``final_lr``.
        final_lr: LR at the end of the anneal.
        step_factor: Initial probe size as a factor (``δ = ln step_factor``).
        min_step_factor: Smallest probe size the search shrinks to.
        window: Stages the search learns from at once.
        metric: Reported metric to minimize.
        lead: Steps before a boundary at which the next decision is made (default τ/4).
    """

    init_lr: float
    lr_min: float | None = None
    lr_max: float | None = None
    tau: int = 100
    total_steps: int | None = None
    warmup_steps: int = 0
    anneal_fraction: float = 0.2
    final_lr: float = 0.0
    step_factor: float = 2.0
    min_step_factor: float = 1.15
    window: int = 12
    metric: str = "loss"
    lead: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.init_lr) or self.init_lr <= 0:
            raise ConfigError(f"init_lr must be a finite LR > 0, got init_lr={self.init_lr}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, int) or self.tau < 4:
            raise ConfigError(f"tau must be at least 4 optimizer steps, got tau={self.tau}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got warmup_steps={self.warmup_steps}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ConfigError(
                "total_steps must exceed warmup_steps, got "
                f"total_steps={self.total_steps}, warmup_steps={self.warmup_steps}"
            )
        if self.total_steps is not None and self.tau > self.total_steps:
            raise ConfigError(
                f"tau={self.tau} is longer than the run (total_steps={self.total_steps}): no "
                "stage would end before the run does; lower tau"
            )
        if not 0 <= self.anneal_fraction < 1:
            raise ConfigError(
                f"anneal_fraction must be in [0, 1), got anneal_fraction={self.anneal_fraction}"
            )
        for name, factor in (
            ("step_factor", self.step_factor),
            ("min_step_factor", self.min_step_factor),
        ):
            if not (math.isfinite(factor) and factor > 1):
                raise ConfigError(f"{name} must be a finite factor > 1, got {name}={factor!r}")
        if not (math.isfinite(self.final_lr) and self.final_lr >= 0):
            raise ConfigError(f"final_lr must be finite and >= 0, got final_lr={self.final_lr}")
        lo, hi = self.bounds
        if not 0 < lo <= self.init_lr <= hi:
            raise ConfigError(
                f"need 0 < lr_min <= init_lr <= lr_max, got lr_min={lo}, init_lr={self.init_lr}, "
                f"lr_max={hi}"
            )
        if self.lead is not None and not 1 <= self.lead < self.tau // 2:
            raise ConfigError(f"lead must be in [1, tau/2), got lead={self.lead}")

    @property
    def bounds(self) -> tuple[float, float]:
        return lr_bounds(self.init_lr, self.lr_min, self.lr_max)

    @property
    def lead_steps(self) -> int:
        return self.lead if self.lead is not None else max(1, self.tau // 4)

    @property
    def anneal_start(self) -> int | None:
        if self.total_steps is None or self.anneal_fraction == 0:
            return None
        return self.total_steps - round(self.anneal_fraction * self.total_steps)

    def clamp(self, lr: float) -> float:
        """``lr`` within the bounds (in plain numbers: ``exp(log(b))`` may miss ``b``)."""
        lo, hi = self.bounds
        return min(max(lr, lo), hi)


def next_start(
    config: LRSearchConfig, last: dict[str, Any] | None, plan: Plan, seen: int
) -> int | None:
    """First step of the next stage, or ``None`` when no decision is due yet or any more.

    Args:
        last: The last accepted stage (``until`` and ``stage``), or ``None``.
        seen: The largest step this controller has seen reported.
    """
    if last is not None and max(plan.last_step, seen) < last["until"] - config.lead_steps:
        return None
    start = last["until"] if last is not None else max(config.warmup_steps, plan.last_step + 1)
    start = max(start, plan.horizon + 1)
    if config.total_steps is not None and start >= config.total_steps:
        return None
    return int(start)


def stage_until(config: LRSearchConfig, start: int) -> int:
    """End of a search stage from ``start``: ``tau`` later, cut at the anneal and the end."""
    until = start + config.tau
    for cap in (config.anneal_start, config.total_steps):
        if cap is not None:
            until = min(until, cap)
    return until


def anneal_decision(
    config: LRSearchConfig, index: int, start: int, center_lr: float, controller: str, **info: Any
) -> Decision | None:
    """The final decay from ``center_lr``, if the stage from ``start`` is in the anneal."""
    anneal = config.anneal_start
    if anneal is None or config.total_steps is None or start < anneal:
        return None
    lr = config.clamp(center_lr)
    return Decision(
        stage=index,
        kind=DecisionKind.COMMIT,
        from_step=start,
        until_step=config.total_steps,
        lr=lr,
        lr_end=min(config.final_lr, lr),
        controller=controller,
        info={"phase": "anneal", "center_lr": lr, "final": True, **info},
    )


def lr_bounds(init_lr: float, lr_min: float | None, lr_max: float | None) -> tuple[float, float]:
    """``(lr_min, lr_max)``; each unset one is a factor of 100 from ``init_lr``."""
    lo = lr_min if lr_min is not None else init_lr / 100
    hi = lr_max if lr_max is not None else init_lr * 100
    return lo, hi
