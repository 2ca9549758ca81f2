"""How the ``explore`` controller scores one stage's candidates from the loss curve: the
cooled-down loss, the blow-up and dominance tests that cut a probe, and the parabola that
refines the winner's LR. Pure functions of a :class:`~tuner.controllers.curves.StepCurve`
and the stage's candidates (``{"lr", "probe": [from, until], "tail": [from, until],
"pruned": {"ref", "gap", "t"}, ...}``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

from tuner.controllers.curves import StepCurve

Candidate = dict[str, Any]

BLOW_UP = 0.5
"""A probe whose last third averages this fraction of ``|start|`` above the stage's start
loss has blown up (if batch noise cannot explain it: :func:`beyond_noise`)."""
NOISE_Z = 3.0
"""Standard errors by which a probe's end must exceed the loss before the stage to count
as a blow-up."""


def start_loss(curve: StepCurve, cands: Sequence[Candidate]) -> float | None:
    """The loss at the stage's snapshot: the first reported step of the first probe that
    has one (every probe starts from the snapshot; the first one run may have diverged),
    within its first two steps, or its first quarter where workers report less often."""
    for cand in cands:
        probe = cand.get("probe")
        if probe is not None:
            _, values = curve.window(probe[0], probe[0] + max(2, (probe[1] - probe[0]) // 4))
            if values:
                return values[0]
    return None


MIN_SCORED = 4
"""Reports of the metric a probe and its cool-down need at the least to be scored."""

PAIRED_RTOL = 1e-4
"""Relative difference beyond which a candidate's first loss is not the stage's start loss
(the same weights on the same batch give the same loss; summing ranks in another order, or
a nondeterministic kernel, moves only the last digits)."""


def unpaired(curve: StepCurve, cands: Sequence[Candidate]) -> dict[str, float]:
    """``{candidate: its first loss}`` for the candidates after the first whose first
    reported loss (at the offset the start loss was reported at) is not the stage's start
    loss. Every candidate starts from the stage's snapshot on the same batch, so these
    losses are equal unless the batches are not restored with the model, or the reported
    metric carries state of its own across steps (a running average)."""
    probed = [(j, c["probe"][0]) for j, c in enumerate(cands) if c.get("probe") is not None]
    if len(probed) < 2:
        return {}
    first = probed[0][1]
    steps, values = curve.window(
        first, first + max(2, (cands[probed[0][0]]["probe"][1] - first) // 4)
    )
    if not values:
        return {}
    offset, start = steps[0] - first, values[0]
    out: dict[str, float] = {}
    for j, lo in probed[1:]:
        _, own = curve.window(lo + offset, lo + offset + 1)
        if own and abs(own[0] - start) > PAIRED_RTOL * max(abs(start), 1e-12):
            out[str(j)] = own[0]
    return out


def blew_up(curve: StepCurve, cands: Sequence[Candidate], j: int) -> bool:
    """Whether candidate ``j`` diverged (a worker said so, in its probe or tail) or its
    probe ended half again above the stage's start loss, by more than batch noise explains
    (:func:`beyond_noise`).

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
    if start is None or score is None or score <= start + BLOW_UP * abs(start):
        return False
    first = next(c["probe"][0] for c in cands if c.get("probe") is not None)
    return beyond_noise(curve, first, probe[0], probe[1])


def beyond_noise(curve: StepCurve, stage: int, lo: int, hi: int) -> bool:
    """Whether the last third of the values in ``[lo, hi)`` average above the ones reported
    just before the stage's first step ``stage`` (as many as the probe holds, at least 4)
    by more than :data:`NOISE_Z` standard errors of the difference, with the spread of
    those before the stage; true when fewer than two were reported before it.

    The stage's start loss is one batch's: where batch losses scatter widely (a small
    regression's squared error ranged 0.08 to 0.98 from batch to batch at one point of
    training), a probe's last four steps averaged half again above it on every candidate
    of a population's stage, none of which had blown up, and the stage fell back to
    ``init_lr``. A real blow-up leaves the loss before the stage far behind.
    """
    _, values = curve.window(lo, hi)
    if not values:
        return False
    end = values[-max(2, math.ceil(len(values) / 3)) :]
    _, before = curve.window(stage - 4 * max(hi - lo, 1), stage)
    before = before[-max(4, len(values)) :]
    if len(before) < 2:
        return True
    mean = sum(before) / len(before)
    var = sum((v - mean) ** 2 for v in before) / (len(before) - 1)
    se = math.sqrt(var * (1 / len(end) + 1 / len(before)))
    return sum(end) / len(end) > mean + NOISE_Z * se


def measured(curve: StepCurve, cands: Sequence[Candidate], j: int) -> bool:
    """Whether the stage's start loss and the end of candidate ``j``'s probe were reported."""
    probe = cands[j].get("probe")
    if probe is None or start_loss(curve, cands) is None:
        return False
    return curve.tail_mean(probe[0], probe[1], 1 / 3) is not None


def cooled_scores(curve: StepCurve, cands: Sequence[Candidate]) -> dict[str, float]:
    """Score of every candidate whose tail ended: the mean of the last quarter of its
    cool-down. A candidate cut for being dominated (``"pruned"``) scores its reference's
    score plus the raw gap that cut it: a lower bound, since its cool-down would have
    gained less than the larger reference's. Any other candidate that was probed but has no
    finite tail (it blew up, or its tail diverged) scores a little worse than the worst."""
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
    for j, cand in enumerate(cands):
        cut = cand.get("pruned")
        if cut and str(cut["ref"]) in out and cands[int(cut["ref"])].get("tail") is not None:
            out[str(j)] = out[str(cut["ref"])] + float(cut["gap"])
    worst = max(out.values())
    for j, cand in enumerate(cands):
        if str(j) not in out and cand.get("probe") is not None:
            out[str(j)] = worst + max(abs(worst) * 0.05, 1e-6)
    return out


def winner(cands: Sequence[Candidate], scores: dict[str, float]) -> int | None:
    """The best-scored candidate that has a cool-down (its pre-tail snapshot is kept)."""
    scored = [(v, int(j)) for j, v in scores.items() if cands[int(j)].get("tail") is not None]
    return min(scored)[1] if scored else None


def stand_ins(curve: StepCurve, cands: Sequence[Candidate]) -> set[int]:
    """Candidates that count as unboundedly bad: probed, not cut for being dominated, and
    with no finite cool-down (they blew up, or their tail diverged), or :func:`stalled`."""
    return {
        j
        for j, cand in enumerate(cands)
        if cand.get("probe") is not None
        and not cand.get("pruned")
        and (cand.get("tail") is None or curve.diverged(cand["tail"][0], cand["tail"][1]))
    } | stalled(curve, cands)


def stalled(curve: StepCurve, cands: Sequence[Candidate]) -> set[int]:
    """Candidates that cooled down and still ended no lower than the stage's start loss,
    while another candidate ended below it: over a whole probe and cool-down they made no
    progress where a neighbour did. Early in training the start loss is near chance, so an
    LR past the edge of stability can thrash around it without ever reaching the blow-up
    test's "half again above the start" (a CNN on digits at 0.48: 2.35 from a start of
    about 2); it is as unusable as one that diverged."""
    start = start_loss(curve, cands)
    if start is None:
        return set()
    ends = {
        j: curve.tail_mean(cand["tail"][0], cand["tail"][1], 1 / 4)
        for j, cand in enumerate(cands)
        if cand.get("tail") is not None and not cand.get("pruned")
    }
    done = {j: v for j, v in ends.items() if v is not None and math.isfinite(v)}
    if not any(v < start for v in done.values()):
        return set()
    return {j for j, v in done.items() if v >= start}


def parabola_lr(
    lrs: Sequence[float], scores: dict[str, float], win: int, unbounded: Collection[int] = ()
) -> float:
    """The winner's LR moved to the vertex of a parabola in log-LR through the winner and
    its scored neighbours, within their midpoints; the winner's own LR when it is at an
    edge or a neighbour is unscored. Two candidates that tie put the LR between them
    rather than on a coin flip.

    A neighbour in ``unbounded`` (it blew up) counts as infinitely bad: the limit of the
    parabola is then the midpoint between the winner and its other neighbour, so an LR
    next to one that blew up is hedged away from it. The edge of stability moves down as
    training goes on (sharpness rises: Cohen et al., ICLR 2021), so an LR that is only
    just stable in an early probe is the likeliest to be too large for the rest of the run.
    """
    lr = lrs[win]
    order = sorted(range(len(lrs)), key=lrs.__getitem__)
    pos = order.index(win)
    if not 0 < pos < len(order) - 1:
        return lr
    trio = (order[pos - 1], win, order[pos + 1])
    if any(str(j) not in scores for j in trio):
        return lr
    x = [math.log(lrs[j]) for j in trio]
    lo, hi = (x[0] + x[1]) / 2, (x[1] + x[2]) / 2
    low_bad, high_bad = trio[0] in unbounded, trio[2] in unbounded
    if low_bad or high_bad:
        return lr if low_bad and high_bad else math.exp(lo if high_bad else hi)
    y = [scores[str(j)] for j in trio]
    num = (x[1] - x[0]) ** 2 * (y[1] - y[2]) - (x[1] - x[2]) ** 2 * (y[1] - y[0])
    den = (x[1] - x[0]) * (y[1] - y[2]) - (x[1] - x[2]) * (y[1] - y[0])
    if den == 0 or not math.isfinite(num / den):
        return lr
    vertex = x[1] - 0.5 * num / den
    return math.exp(min(max(vertex, lo), hi))


def paired_t(curve: StepCurve, cands: Sequence[Candidate], a: int, b: int) -> float | None:
    """t statistic of candidate ``a``'s loss minus ``b``'s over the last half of their
    cool-downs, step by step: candidates restore the same snapshot, so the same offset is
    the same batch and the batch's own difficulty cancels. Negative: ``a`` is lower.
    ``None`` when either has no tail of at least 3 reported steps."""
    ta, tb = cands[a].get("tail"), cands[b].get("tail")
    if ta is None or tb is None:
        return None
    return window_t(curve, ta, curve, tb)


def window_t(
    curve_a: StepCurve, window_a: Sequence[int], curve_b: StepCurve, window_b: Sequence[int]
) -> float | None:
    """t statistic of ``curve_a``'s loss over ``window_a`` minus ``curve_b``'s over
    ``window_b``, paired by offset from each window's start, over the last half of
    ``window_a``'s length: windows that start from one state see the same batches at the
    same offset, whether they are one trial's candidates or two trials'. Negative: ``a``
    is lower. ``None`` when fewer than 3 offsets were reported by both."""
    paired = _paired(curve_a, window_a, curve_b, window_b, window_a[1] - window_a[0])
    return None if paired is None else paired[0]


def probe_gap(
    curve: StepCurve, cands: Sequence[Candidate], a: int, b: int
) -> tuple[float, float] | None:
    """``(t, mean)`` of candidate ``a``'s raw probe loss minus ``b``'s over the last half of
    ``a``'s probe so far, paired by offset from each probe's start (the same batches).
    ``None`` when fewer than 3 offsets were reported by both."""
    pa, pb = cands[a].get("probe"), cands[b].get("probe")
    if pa is None or pb is None:
        return None
    return _paired(curve, pa, curve, pb, pa[1] - pa[0])


def reference(cands: Sequence[Candidate], scores: dict[str, float], lr: float) -> int | None:
    """The best-scored candidate above ``lr`` that cooled down: what a probe at ``lr`` is
    checked against halfway; ``None`` when there is none."""
    above = [
        (v, int(j))
        for j, v in scores.items()
        if cands[int(j)].get("tail") is not None and cands[int(j)]["lr"] > lr
    ]
    return min(above)[1] if above else None


def dominated(
    curve: StepCurve, cands: Sequence[Candidate], j: int, ref: int, min_t: float
) -> dict[str, Any] | None:
    """``{"ref", "gap", "t"}`` when candidate ``j``'s raw probe loss so far is above the
    larger candidate ``ref``'s at the same offsets by a paired t of at least ``min_t``;
    else ``None``.

    A smaller LR's cool-down gains less than a larger one's (its noise floor is lower
    already), so a smaller LR that is behind before cooling stays behind after it: the cut
    is one-sided for that reason, and ``ref`` must be the larger LR. ``t`` is ``None`` when
    infinite (a constant gap), which strict JSON cannot hold.
    """
    gap = probe_gap(curve, cands, j, ref)
    if gap is None or gap[1] <= 0 or gap[0] < min_t:
        return None
    return {"ref": ref, "gap": gap[1], "t": gap[0] if math.isfinite(gap[0]) else None}


def with_cut(cands: Sequence[Candidate], cut: dict[str, Any]) -> list[Candidate]:
    """``cands`` with a cut (``{"cand", "ref", "gap", "t"}``) applied to a copy of its
    candidate: what a decision made before the cut is accepted must see."""
    out = list(cands)
    out[cut["cand"]] = {**out[cut["cand"]], "pruned": {k: cut[k] for k in ("ref", "gap", "t")}}
    return out


def clear_top(
    curve: StepCurve, cands: Sequence[Candidate], scores: dict[str, float], min_t: float
) -> bool:
    """Whether the largest candidate that cooled down is the best scored and clearly beat
    the next largest probed one: that one was cut for being dominated by it, or their
    cool-downs differ by a paired t of at least ``min_t`` (0 takes any lead). Probes go
    largest first, so the candidates still to probe are all smaller: with the score
    unimodal in log-LR they cannot win, and they would not be the winner's neighbours in
    the parabola either."""
    probed = sorted(
        (j for j, cand in enumerate(cands) if str(j) in scores and cand.get("probe")),
        key=lambda j: -float(cands[j]["lr"]),
    )
    if len(probed) < 2 or cands[probed[0]].get("tail") is None:
        return False
    top, second = probed[0], probed[1]
    if winner(cands, scores) != top:
        return False
    cut = cands[second].get("pruned")
    if cut:
        return int(cut["ref"]) == top
    t = paired_t(curve, cands, top, second)
    return t is not None and t <= -min_t


def tie(
    curve: StepCurve,
    cands: Sequence[Candidate],
    win: int,
    max_t: float,
    init_lr: float | None = None,
) -> tuple[int | None, float | None]:
    """The candidate the winner ``win`` ties with (their cool-downs' paired |t| is below
    ``max_t``; ``max_t`` 0 turns ties off), or None, and the last t computed. Two pairs are
    tested, in order:

    - with ``init_lr`` given, a winner smaller than it against the ``init_lr`` candidate.
      Short probes are biased towards small LRs (Wu et al., ICLR 2018), so a smaller LR has
      to win by more than noise to replace the user's; a larger winner needs no such
      margin, the bias works against it already;
    - a winner at the edge of the LRs tried against its nearest neighbour that cooled
      down: the optimum is between them, and no probe beyond the edge is needed.
    """
    if max_t <= 0:
        return None, None
    lrs = [float(cand["lr"]) for cand in cands]
    cooled = [j for j, cand in enumerate(cands) if cand.get("tail") is not None and j != win]
    pairs: list[int] = []
    if init_lr is not None and lrs[win] < init_lr:
        pairs += [j for j in cooled if math.isclose(lrs[j], init_lr, rel_tol=1e-9)][:1]
    if cooled and lrs[win] in (min(lrs), max(lrs)):
        pairs.append(min(cooled, key=lambda j: abs(math.log(lrs[j] / lrs[win]))))
    t = None
    for other in pairs:
        t = paired_t(curve, cands, win, other)
        if t is not None and abs(t) < max_t:
            return other, t
    return None, t


def _paired(
    ca: StepCurve, wa: Sequence[int], cb: StepCurve, wb: Sequence[int], length: int
) -> tuple[float, float] | None:
    """``(t, mean)`` of the paired differences over the last half of the first ``length``
    offsets of two windows (of curves ``ca`` and ``cb``); ``t`` is ±inf for a constant
    non-zero difference."""
    sa, va = ca.window(wa[0], wa[0] + length)
    sb, vb = cb.window(wb[0], wb[0] + length)
    other = {s - wb[0]: v for s, v in zip(sb, vb, strict=True)}
    both = [(s - wa[0], v) for s, v in zip(sa, va, strict=True) if s - wa[0] in other]
    n = len(both)
    if n < 3:
        return None
    k = max(3, n // 2)
    d = [v - other[off] for off, v in both[n - k :]]
    mean = sum(d) / k
    var = sum((x - mean) ** 2 for x in d) / (k - 1)
    if var == 0:
        return (0.0 if mean == 0 else math.copysign(math.inf, mean)), mean
    return mean / math.sqrt(var / k), mean
