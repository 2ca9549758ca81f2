"""Held-out suffix error of the forecasters: fit on a curve's prefix, score on the rest.

Each curve is ``(lrs, losses)``: the LR of every optimizer step and the loss at every step,
both ``N`` long. Both forecasters fit the first ``round(prefix_fraction·N)`` points (after
skipping the first ``skip_fraction·N``, an optional early transient); the annealing
forecaster then predicts the suffix under the curve's *actual* full schedule, the exponential
one by extrapolating in steps (it cannot see the schedule, as in AutoLRS). The score is the
RMSE of predicted against actual losses over the suffix, so it includes the curve's own
step-to-step noise, which is the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tuner.errors import ConfigError
from tuner.forecast.annealing import AnnealingForecaster
from tuner.forecast.exponential import ExponentialForecaster

Curve = tuple[Sequence[float], Sequence[float]]
"""``(lrs, losses)``: ``N`` per-step LRs and the ``N`` losses at steps ``0..N-1``."""


@dataclass(frozen=True)
class SuffixScore:
    """Suffix RMSE of one forecaster: one value per curve, and their mean and median."""

    per_curve: tuple[float, ...]
    mean: float
    median: float


def compare_on_suffixes(
    curves: Sequence[Curve],
    prefix_fraction: float = 0.6,
    skip_fraction: float = 0.0,
    target_window: int = 1,
    exponential: ExponentialForecaster | None = None,
    annealing: AnnealingForecaster | None = None,
) -> dict[str, SuffixScore]:
    """``{"exponential": SuffixScore, "annealing": SuffixScore}`` over ``curves``.

    ``target_window`` > 1 scores against a centred moving average of the actual losses over
    that many steps (shrunk at the curve's end), which removes most of the batch-to-batch
    noise both forecasters would otherwise share.

    Raises:
        ConfigError: no curves, a ``target_window`` < 1, fractions outside (0, 1), a
            curve whose ``lrs`` and ``losses`` differ in length, or a prefix/suffix too
            short to fit or score.
    """
    if not curves:
        raise ConfigError("compare_on_suffixes needs at least one (lrs, losses) curve, got 0")
    if not 0.0 < prefix_fraction < 1.0:
        raise ConfigError(f"prefix_fraction must be in (0, 1), got {prefix_fraction=}")
    if not 0.0 <= skip_fraction < prefix_fraction:
        raise ConfigError(f"skip_fraction must be in [0, prefix_fraction), got {skip_fraction=}")
    if target_window < 1:
        raise ConfigError(f"target_window must be >= 1 steps, got {target_window=}")
    exp_f = exponential or ExponentialForecaster()
    ann_f = annealing or AnnealingForecaster()
    scores: dict[str, list[float]] = {"exponential": [], "annealing": []}
    for k, (lrs, losses) in enumerate(curves):
        eta = np.asarray(lrs, dtype=np.float64)
        y = np.asarray(losses, dtype=np.float64)
        if eta.shape != y.shape or eta.ndim != 1:
            raise ConfigError(
                f"curve {k}: lrs and losses must both be `N` long, got {eta.shape} and {y.shape}"
            )
        n = y.shape[0]
        lo, cut = round(skip_fraction * n), round(prefix_fraction * n)
        if cut >= n:
            raise ConfigError(f"curve {k}: prefix {cut} of N={n} steps leaves no suffix to score")
        steps = np.arange(n)
        fit_steps = steps[lo:cut]
        suffix = steps[cut:]
        e = exp_f.fit(fit_steps.tolist(), y[lo:cut].tolist())
        a = ann_f.fit(eta.tolist(), y[lo:cut].tolist(), fit_steps.tolist())
        actual = _moving_average(y, target_window)[cut:]
        scores["exponential"].append(_rmse(e.predict(suffix.astype(np.float64)), actual))
        scores["annealing"].append(_rmse(a.predict(eta, suffix), actual))
    return {
        name: SuffixScore(tuple(v), float(np.mean(v)), float(np.median(v)))
        for name, v in scores.items()
    }


def _rmse(pred: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - actual) ** 2)))


def _moving_average(y: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Centred ``window``-step mean of ``y``, over the steps that exist near the ends."""
    if window == 1:
        return y
    kernel = np.ones(window)
    total = np.convolve(y, kernel, mode="same")
    count = np.convolve(np.ones_like(y), kernel, mode="same")
    out: NDArray[np.float64] = total / count
    return out
