"""The metric by step, averaged over ranks: what exploring controllers score candidates on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.errors import ConfigError
from tuner.records import DIVERGED_METRIC, Report

__all__ = ["DIVERGED_METRIC", "StepCurve"]


class StepCurve:
    """Sum and count of one metric per step, over ranks; steps before ``floor`` are dropped.

    A step whose reports carry :data:`DIVERGED_METRIC` is marked diverged. The curve is
    bounded by :meth:`prune`: controllers drop the steps of stages they have scored.
    """

    def __init__(self, metric: str = "loss") -> None:
        self.metric = metric
        self._sum: dict[int, float] = {}
        self._count: dict[int, int] = {}
        self._diverged: set[int] = set()
        self.floor = 0

    def add(self, reports: Sequence[Report]) -> None:
        for r in reports:
            if r.step < self.floor:
                continue
            if r.metrics.get(DIVERGED_METRIC, 0.0) > 0:
                self._diverged.add(r.step)
            value = r.metrics.get(self.metric)
            if value is None:
                continue
            self._sum[r.step] = self._sum.get(r.step, 0.0) + value
            self._count[r.step] = self._count.get(r.step, 0) + 1

    def window(self, lo: int, hi: int) -> tuple[list[int], list[float]]:
        """Steps in ``[lo, hi)`` that have values, and the rank-mean values."""
        steps = sorted(s for s in self._sum if lo <= s < hi)
        return steps, [self._sum[s] / self._count[s] for s in steps]

    def diverged(self, lo: int, hi: int) -> bool:
        """Whether any step in ``[lo, hi)`` was reported diverged."""
        return any(lo <= s < hi for s in self._diverged)

    def tail_mean(self, lo: int, hi: int, fraction: float) -> float | None:
        """Mean of the last ``fraction`` (at least 2 points) of the values in ``[lo, hi)``."""
        _, values = self.window(lo, hi)
        if not values:
            return None
        n = max(2, math.ceil(len(values) * fraction))
        tail = values[-n:]
        return sum(tail) / len(tail)

    def prune(self, before: int) -> None:
        """Forget steps before ``before``; later reports for them are ignored."""
        self.floor = max(self.floor, before)
        for s in [s for s in self._sum if s < before]:
            del self._sum[s], self._count[s]
        self._diverged = {s for s in self._diverged if s >= before}

    def state_dict(self) -> dict[str, Any]:
        steps = sorted(self._sum)
        return {
            "metric": self.metric,
            "floor": self.floor,
            "steps": steps,
            "sum": [self._sum[s] for s in steps],
            "count": [self._count[s] for s in steps],
            "diverged": sorted(self._diverged),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            steps = [int(s) for s in state["steps"]]
            sums = [float(v) for v in state["sum"]]
            counts = [int(c) for c in state["count"]]
            floor = int(state["floor"])
            diverged = {int(s) for s in state["diverged"]}
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"step curve state is malformed: {e!r}") from None
        if not (len(steps) == len(sums) == len(counts)) or any(c < 1 for c in counts):
            raise ConfigError("step curve state: steps, sum and count must align, counts >= 1")
        self.metric = str(state.get("metric", self.metric))
        self.floor = floor
        self._sum = dict(zip(steps, sums, strict=True))
        self._count = dict(zip(steps, counts, strict=True))
        self._diverged = diverged
