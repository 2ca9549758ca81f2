"""Settings shared by every mixture bandit; each algorithm adds its own in a subclass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.controllers.rewards import get_reward
from tuner.errors import ConfigError

DEFAULT_FLOOR_SHARE = 0.1
"""Default floor, as a fraction of an even share of the free mass: ``0.1 * M / K_free``."""


@dataclass(frozen=True)
class MixtureConfig:
    """Settings of a :class:`~tuner.controllers.mixture.base.BanditMixture`.

    Attributes:
        arms: Names of the arms (domains or difficulty buckets), at least two, unique.
        tau: Stage length in optimizer steps.
        lead: Steps before a boundary at which the next decision is proposed; the stage's
            reports up to there are what it is scored on. Default ``tau // 4``.
        warmup_steps: Steps left to the base mixture before the first decision.
        total_steps: Length of the run in optimizer steps; no decision goes past it.
        floor: Smallest weight of an arm that is not pinned. Default: a tenth of an even
            share of the free mass, ``0.1 * (1 - sum(pinned)) / K_free`` (0.025 for four
            arms), so no arm starves and every arm keeps reporting. ``0`` disables it.
        pinned: Weights the user fixes for some arms; they get exactly these, and the
            other ("free") arms share the rest, ``1 - sum(pinned)``, which must be > 0
            while any arm is free.
        reward: Name of the reward (see :mod:`tuner.controllers.rewards`).
        reward_scale: Factor applied to rewards before the algorithm sees them; the
            algorithms' defaults expect rewards of order 1.
        seed: Seed of the algorithm's randomness (Thompson draws); stage ``k`` draws from
            ``numpy.random.default_rng([seed, k])``, so decisions are reproducible.
        final_average: Fraction of ``total_steps`` at the end of the run over which the
            controller plays the average of the mixtures it played before (weighted by
            their steps) instead of its latest preference, as DoReMi trains its final
            model on averaged weights: the last stages' choices are the noisiest, and what
            training ends on is what the final loss sees. Stages are still scored. ``0``
            (the algorithms' own default) disables it; ignored without ``total_steps``.
    """

    arms: tuple[str, ...]
    tau: int = 100
    lead: int | None = None
    warmup_steps: int = 0
    total_steps: int | None = None
    floor: float | None = None
    pinned: Mapping[str, float] = field(default_factory=dict)
    reward: str = "learning_progress"
    reward_scale: float = 1.0
    seed: int = 0
    final_average: float = 0.0

    def __post_init__(self) -> None:
        arms = self.arms
        if isinstance(arms, str) or not isinstance(arms, list | tuple):
            raise ConfigError(f"arms must be a list of arm names, got arms={arms!r}")
        if len(arms) < 2:
            raise ConfigError(f"a mixture needs at least two arms, got arms={list(arms)!r}")
        for arm in arms:
            if not isinstance(arm, str) or not arm or arm != arm.strip():
                raise ConfigError(f"arm names must be non-empty strings, got {arm!r}")
        if len(set(arms)) != len(arms):
            dupes = sorted({a for a in arms if arms.count(a) > 1})
            raise ConfigError(f"arm names must be unique, got duplicates {dupes}")
        object.__setattr__(self, "arms", tuple(arms))
        integer("tau", self.tau, lo=4)
        if self.lead is not None:
            integer("lead", self.lead, lo=1)
            if self.lead >= self.tau // 2:
                raise ConfigError(
                    f"lead must be in [1, tau/2), got lead={self.lead} (tau={self.tau})"
                )
        integer("warmup_steps", self.warmup_steps, lo=0)
        if self.total_steps is not None:
            integer("total_steps", self.total_steps, lo=self.warmup_steps + 1)
        integer("seed", self.seed, lo=0)
        number("final_average", self.final_average, lo=0.0, hi=1.0, hi_open=True)
        get_reward(self.reward)
        number("reward_scale", self.reward_scale, lo=0.0, lo_open=True)
        self._check_pinned()
        if self.floor is not None:
            number("floor", self.floor, lo=0.0)
            free = len(self.free_arms)
            if free and self.floor * free > self.free_mass * (1 + 1e-12):
                raise ConfigError(
                    f"floor={self.floor!r} is more than the {free} free arms can each get "
                    f"from the free mass {self.free_mass:g}; use floor <= {self.free_mass / free:g}"
                )
        self._check_params()

    def _check_pinned(self) -> None:
        if not isinstance(self.pinned, Mapping):
            raise ConfigError(f"pinned must map arm names to weights, got pinned={self.pinned!r}")
        pinned = {}
        for arm, weight in self.pinned.items():
            if arm not in self.arms:
                raise ConfigError(f"pinned arm {arm!r} is not one of arms={list(self.arms)}")
            number(f"pinned[{arm!r}]", weight, lo=0.0, hi=1.0)
            pinned[arm] = float(weight)
        object.__setattr__(self, "pinned", pinned)
        total = math.fsum(pinned.values())
        if len(pinned) == len(self.arms):
            if abs(total - 1.0) > 1e-9:
                raise ConfigError(f"with every arm pinned the weights must sum to 1, got {total}")
        elif total >= 1.0:
            raise ConfigError(
                f"pinned weights sum to {total}, leaving nothing for the free arms "
                f"{list(self.free_arms)}; pin less, or pin every arm"
            )

    def _check_params(self) -> None:
        """Validate the algorithm's own settings (subclasses)."""

    @property
    def lead_steps(self) -> int:
        return self.lead if self.lead is not None else max(1, self.tau // 4)

    @property
    def free_arms(self) -> tuple[str, ...]:
        """Arms that are not pinned, in ``arms`` order: the ones the bandit learns about."""
        return tuple(a for a in self.arms if a not in self.pinned)

    @property
    def free_mass(self) -> float:
        """Weight the free arms share, ``1 - sum(pinned)``."""
        return 1.0 - math.fsum(self.pinned.values()) if self.free_arms else 0.0

    @property
    def floor_weight(self) -> float:
        """The floor in force (the default if ``floor`` is ``None``)."""
        if self.floor is not None:
            return self.floor
        free = len(self.free_arms)
        return DEFAULT_FLOOR_SHARE * self.free_mass / free if free else 0.0


def number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise :class:`ConfigError` naming ``name=value`` unless it is a finite number in range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {name}={value!r}")
    low = lo is not None and (value <= lo if lo_open else value < lo)
    high = hi is not None and (value >= hi if hi_open else value > hi)
    if low or high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{name} must be in {span}, got {name}={value!r}")


def integer(name: str, value: Any, *, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be an int >= {lo}, got {name}={value!r}")
