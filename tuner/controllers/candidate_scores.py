"""How the ``explore`` controller scores one stage's candidates from the loss curve: the
cooled-down loss, the blow-up test that cuts a probe, and the parabola that refines the
winner's LR. Pure functions of a :class:`~tuner.controllers.curves.StepCurve` and the
stage's candidates (``{"lr", "probe": [from, until], "tail": [from, until], ...}``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.controllers.curves import StepCurve

Candidate = dict[str, Any]

BLOW_UP = 0.5
"""A probe whose last third averages this fraction of ``|start|`` above the stage's start
loss has blown up."""


def start_loss(curve: StepCurve, cands: Sequence[Candidate]) -> float | None:
    """The loss at the stage's snapshot: the first step of its first probe."""
    probe = cands[0].get("probe") if cands else None
    if probe is None:
        return None
    _, values = curve.window(probe[0], probe[0] + 2)
    return values[0] if values else None


def blew_up(curve: StepCurve, cands: Sequence[Candidate], j: int) -> bool:
    """Whether candidate ``j`` diverged (a worker said so, in its probe or tail) or its
    probe ended half again above the stage's start loss.

    Only a blow-up counts: a probe that merely ends above the start (a single batch's loss)
    may be noise or a transient bump that the cool-down recovers.
    """
    cand = cands[j]
    probe = cand.get("probe")
    if probe is None:
        return False
    end = (cand.get("tail") or probe)[1]
    if curve.diverged(probe[0], end):
        return True
    start = start_loss(curve, cands)
    score = curve.tail_mean(probe[0], probe[1], 1 / 3)
    return start is not None and score is not None and score > start + BLOW_UP * abs(start)


def measured(curve: StepCurve, cands: Sequence[Candidate], j: int) -> bool:
    """Whether the stage's start loss and the end of candidate ``j``'s probe were reported."""
    probe = cands[j].get("probe")
    if probe is None or start_loss(curve, cands) is None:
        return False
    return curve.tail_mean(probe[0], probe[1], 1 / 3) is not None


def cooled_scores(curve: StepCurve, cands: Sequence[Candidate]) -> dict[str, float]:
    """Score of every candidate whose tail ended: the mean of the last quarter of its
    cool-down. A candidate that was probed but has no finite tail (it was cut, or its tail
    diverged) scores a little worse than the worst."""
    out: dict[str, float] = {}
    for j, cand in enumerate(cands):
        tail = cand.get("tail")
        if tail is None or curve.diverged(tail[0], tail[1]):
            continue
        value = curve.tail_mean(tail[0], tail[1], 1 / 4)
        if value is not None and math.isfinite(value):
            out[str(j)] = value
    if not out:
        return out
    worst = max(out.values())
    for j, cand in enumerate(cands):
        if str(j) not in out and cand.get("probe") is not None:
            out[str(j)] = worst + max(abs(worst) * 0.05, 1e-6)
    return out


def winner(cands: Sequence[Candidate], scores: dict[str, float]) -> int | None:
    """The best-scored candidate that has a cool-down (its pre-tail snapshot is kept)."""
    scored = [(v, int(j)) for j, v in scores.items() if cands[int(j)].get("tail") is not None]
    return min(scored)[1] if scored else None


def parabola_lr(lrs: Sequence[float], scores: dict[str, float], win: int) -> float:
    """The winner's LR moved to the vertex of a parabola in log-LR through the winner and
    its scored neighbours, within their midpoints; the winner's own LR when it is at an
    edge or a neighbour is unscored. Two candidates that tie put the LR between them
    rather than on a coin flip."""
    lr = lrs[win]
    order = sorted(range(len(lrs)), key=lrs.__getitem__)
    pos = order.index(win)
    if not 0 < pos < len(order) - 1:
        return lr
    trio = (order[pos - 1], win, order[pos + 1])
    if any(str(j) not in scores for j in trio):
        return lr
    x = [math.log(lrs[j]) for j in trio]
    y = [scores[str(j)] for j in trio]
    num = (x[1] - x[0]) ** 2 * (y[1] - y[2]) - (x[1] - x[2]) ** 2 * (y[1] - y[0])
    den = (x[1] - x[0]) * (y[1] - y[2]) - (x[1] - x[2]) * (y[1] - y[0])
    if den == 0 or not math.isfinite(num / den):
        return lr
    vertex = x[1] - 0.5 * num / den
    lo, hi = (x[0] + x[1]) / 2, (x[1] + x[2]) / 2
    return math.exp(min(max(vertex, lo), hi))


def paired_t(curve: StepCurve, cands: Sequence[Candidate], a: int, b: int) -> float | None:
    """t statistic of candidate ``a``'s loss minus ``b``'s over the last half of their
    cool-downs, step by step: candidates restore the same snapshot, so the same offset is
    the same batch and the batch's own difficulty cancels. Negative: ``a`` is lower.
    ``None`` when either has no tail of at least 3 reported steps."""
    ta, tb = cands[a].get("tail"), cands[b].get("tail")
    if ta is None or tb is None:
        return None
    _, va = curve.window(ta[0], ta[1])
    _, vb = curve.window(tb[0], tb[1])
    n = min(len(va), len(vb))
    if n < 3:
        return None
    k = max(3, n // 2)
    d = [x - y for x, y in zip(va[n - k : n], vb[n - k : n], strict=True)]
    mean = sum(d) / k
    var = sum((x - mean) ** 2 for x in d) / (k - 1)
    if var == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / math.sqrt(var / k)
