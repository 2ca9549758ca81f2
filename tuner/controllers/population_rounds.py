"""The rounds of a population ``explore`` stage: which LRs each round probes, and how its
candidates score (:mod:`tuner.controllers.population_explore`). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.controllers import candidate_scores as scoring
from tuner.controllers.curves import StepCurve

SPAN = 4.0
"""Spacing of the first round's candidates for three trials (``init_lr`` ×{¼, 1, 4}, as
``explore``'s first stage); more trials widen the round up to ``init_lr`` ×/÷ ``SPAN**2``,
then space it closer."""


def first_round(init_lr: float, trials: int, bounds: tuple[float, float]) -> list[float]:
    """``trials`` LRs evenly spaced in log-LR around ``init_lr`` over ``SPAN**-m .. SPAN**m``
    with ``m = min((trials - 1) / 2, 2)``, clipped to ``bounds``; ascending. Two trials:
    ×{½, 2}; three: ×{¼, 1, 4}; five: ×{1/16, ¼, 1, 4, 16}; nine: twofold steps over the same."""
    half = min((trials - 1) / 2, 2.0) * math.log(SPAN)
    lo, hi = bounds
    return [
        min(max(init_lr * math.exp(half * (-1 + 2 * i / (trials - 1))), lo), hi)
        for i in range(trials)
    ]


def beyond(edge: float, ratio: float, trials: int, bounds: tuple[float, float]) -> list[float]:
    """``trials`` LRs past ``edge``, each ``ratio`` (``< 1``: downwards) from the one before,
    clipped to ``bounds``."""
    lo, hi = bounds
    return [min(max(edge * ratio ** (k + 1), lo), hi) for k in range(trials)]


def score_rounds(
    curves: Sequence[StepCurve], rounds: Sequence[dict[str, Any]], lost: Sequence[bool]
) -> tuple[list[float], dict[str, float], set[int]]:
    """Every candidate of the stage (round by round, trial by trial: candidate ``k`` is
    trial ``k % P`` of round ``k // P``), the scores of those that cooled down (the mean of
    the last quarter of the cool-down, as ``explore`` scores), and the ones that count as
    unboundedly bad: diverged, blown up (the probe's last third half again above the
    stage's start loss) or stalled (cooled down no lower than the start while another got
    below it). Those score a little worse than the worst. A lost trial's are not scored."""
    lrs: list[float] = []
    ends: dict[int, float] = {}
    bad: set[int] = set()
    start = None
    if rounds:
        r0 = rounds[0]
        probe = r0["tail"] - r0["from"]
        _, values = curves[0].window(r0["from"], r0["from"] + max(2, probe // 4))
        start = values[0] if values else None
    for rnd in rounds:
        for j, lr in enumerate(rnd["cands"]):
            k = len(lrs)
            lrs.append(float(lr))
            if rnd["until"] is None or lost[j]:
                continue
            curve = curves[j]
            if curve.diverged(rnd["from"], rnd["until"]):
                bad.add(k)
                continue
            end = curve.tail_mean(rnd["tail"], rnd["until"], 1 / 4)
            raw = curve.tail_mean(rnd["from"], rnd["tail"], 1 / 3)
            if start is not None and raw is not None and raw > start + scoring.BLOW_UP * abs(start):
                bad.add(k)
            if end is not None and math.isfinite(end):
                ends[k] = end
    if start is not None and any(v < start for v in ends.values()):
        bad |= {k for k, v in ends.items() if v >= start}  # stalled
    scores = {str(k): v for k, v in ends.items()}
    if scores:
        worst = max(scores.values())
        for k in bad:
            scores.setdefault(str(k), worst + max(abs(worst) * 0.05, 1e-6))
    return lrs, scores, bad
