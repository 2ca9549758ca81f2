"""From an algorithm's preferences over the free arms to the mixture a decision carries."""

from __future__ import annotations

import numpy as np

from tuner.controllers.mixture.config import MixtureConfig


def with_floor(prefs: np.ndarray, mass: float, floor: float) -> np.ndarray:
    """Scale ``prefs`` (``K``, >= 0, not all 0) to sum to ``mass`` with every entry >= ``floor``.

    Arms whose proportional share would fall below the floor are raised to it and the rest
    share what is left in proportion to ``prefs`` (water-filling), so preferences that
    already respect the floor pass unchanged. Needs ``K * floor <= mass``.
    """
    p = np.asarray(prefs, dtype=float)
    k = len(p)
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        p = np.ones(k)  # a broken preference vector: fall back to even shares
    clamped = np.zeros(k, dtype=bool)
    while True:
        rest = mass - floor * clamped.sum()
        total = p[~clamped].sum()
        if total <= 0:  # only arms with no preference left: they share evenly
            out = np.where(clamped, floor, rest / max((~clamped).sum(), 1))
            break
        out = np.where(clamped, floor, p * (rest / total))
        low = ~clamped & (out < floor)
        if not low.any():
            break
        clamped |= low
    return np.asarray(out, dtype=float)


def mixture(config: MixtureConfig, prefs: np.ndarray) -> dict[str, float]:
    """The decision's weights: pinned arms exactly as pinned, free arms by ``prefs``.

    ``prefs`` is over ``config.free_arms``, in that order; the result is over
    ``config.arms``, in that order, and sums to 1 up to rounding.
    """
    free = config.free_arms
    weights = dict(config.pinned)
    if free:
        shares = with_floor(prefs, config.free_mass, config.floor_weight)
        weights.update(zip(free, (float(w) for w in shares), strict=True))
    return {arm: weights[arm] for arm in config.arms}


def softmax(x: np.ndarray) -> np.ndarray:
    """``exp(x) / sum(exp(x))``, computed without overflow."""
    z = np.exp(x - np.max(x))
    return np.asarray(z / z.sum(), dtype=float)
