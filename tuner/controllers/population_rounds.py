"""The rounds of a population ``explore`` stage: which LRs each round probes, how its
candidates score, and the decision each trial gets for a phase
(:mod:`tuner.controllers.population_explore`). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.controllers import candidate_scores as scoring
from tuner.controllers.base import Plan
from tuner.controllers.curves import StepCurve
from tuner.controllers.explore_config import ExploreConfig
from tuner.records import Decision, DecisionKind

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
    stage's start loss, beyond the batch noise before the stage:
    :func:`~tuner.controllers.candidate_scores.beyond_noise`) or stalled (cooled down no
    lower than the start while another got below it). Those score a little worse than the
    worst. A lost trial's are not scored."""
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
            if (
                start is not None
                and raw is not None
                and raw > start + scoring.BLOW_UP * abs(start)
                and scoring.beyond_noise(curve, rounds[0]["from"], rnd["from"], rnd["tail"])
            ):
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


def unpaired_trials(
    curves: Sequence[StepCurve], rounds: Sequence[dict[str, Any]], lost: Sequence[bool]
) -> dict[str, float]:
    """``{candidate: its first loss}`` for the candidates (``k = round * P + trial``) whose
    first loss is not trial 0's first loss of the stage: every trial starts each round from
    one state on the same batches (trial 0's, loaded at the stage's start), so these are
    equal unless the batches are not part of the state the trials exchange, or the reported
    metric carries state of its own (a running average). Lost trials are left out."""
    if not rounds:
        return {}
    r0 = rounds[0]
    steps, values = curves[0].window(
        r0["from"], r0["from"] + max(2, (r0["tail"] - r0["from"]) // 4)
    )
    if not values:
        return {}
    offset, start = steps[0] - r0["from"], values[0]
    out: dict[str, float] = {}
    for n, rnd in enumerate(rounds):
        for j in range(len(rnd["cands"])):
            if lost[j] or (n == 0 and j == 0):
                continue
            _, own = curves[j].window(rnd["from"] + offset, rnd["from"] + offset + 1)
            if own and abs(own[0] - start) > scoring.PAIRED_RTOL * max(abs(start), 1e-12):
                out[str(n * len(rnd["cands"]) + j)] = own[0]
    return out


def pick(
    curves: Sequence[StepCurve],
    rounds: Sequence[dict[str, Any]],
    scored: tuple[list[float], dict[str, float], set[int]],
    config: ExploreConfig,
) -> dict[str, Any] | None:
    """The stage's pick from its scored candidates (:func:`score_rounds`), or None when
    none is usable: ``{"best", "win", "lr", "tie", "tie_t"}``. ``best`` is the best-scored
    candidate; ``lr`` the vertex of the parabola through it and its neighbours, or, when it
    ties with another (:func:`tie`), halfway between the two in log-LR, trained on from the
    larger one's steps (``win``), as ``explore`` does."""
    lrs, scores, unbounded = scored
    fair = [k for k in range(len(lrs)) if k not in unbounded and str(k) in scores]
    if not fair:
        return None
    best = min(fair, key=lambda k: scores[str(k)])
    other, t = tie(curves, rounds, scored, best, config)
    out = {"best": best, "win": best, "tie": other, "tie_t": t}
    out["lr"] = scoring.parabola_lr(lrs, scores, best, unbounded)
    if other is not None:
        out["lr"] = math.sqrt(lrs[best] * lrs[other])
        out["win"] = best if lrs[best] > lrs[other] else other
    if t is not None and not math.isfinite(t):
        out["tie_t"] = None  # strict JSON holds no infinity
    return out


def tie(
    curves: Sequence[StepCurve],
    rounds: Sequence[dict[str, Any]],
    scored: tuple[list[float], dict[str, float], set[int]],
    best: int,
    config: ExploreConfig,
) -> tuple[int | None, float | None]:
    """The candidate the best one ties with, or None, and the last t computed: ``explore``'s
    two rules (:func:`~tuner.controllers.candidate_scores.tie`) across trials. Their
    cool-downs ran from one state on the same batches, so their losses pair by offset, and
    two whose paired |t| is below ``tie_t`` tie. Tested in order: a best candidate smaller
    than ``init_lr`` against ``init_lr``'s (short probes favour small LRs, so a small LR
    must win by more than noise to replace the user's), and a best candidate at the edge
    of the LRs tried against its nearest neighbour (the optimum is between them: no round
    beyond the edge is needed)."""
    lrs, scores, unbounded = scored
    if config.tie_t <= 0:
        return None, None
    p = len(curves)
    cooled = [k for k in range(len(lrs)) if k != best and str(k) in scores and k not in unbounded]
    pairs: list[int] = []
    if lrs[best] < config.init_lr:
        pairs += [k for k in cooled if math.isclose(lrs[k], config.init_lr, rel_tol=1e-9)][:1]
    if cooled and lrs[best] in (min(lrs), max(lrs)):
        pairs.append(min(cooled, key=lambda k: abs(math.log(lrs[k] / lrs[best]))))

    def tail(k: int) -> tuple[StepCurve, tuple[int, int]]:
        r, j = divmod(k, p)
        return curves[j], (rounds[r]["tail"], rounds[r]["until"])

    t = None
    for other in pairs:
        t = scoring.window_t(*tail(best), *tail(other))
        if t is not None and abs(t) < config.tie_t:
            return other, t
    return None, t


def phase_decision(
    c: ExploreConfig,
    rounds: Sequence[dict[str, Any]],
    trial: int,
    seg: dict[str, Any],
    plan: Plan,
) -> Decision:
    """The decision ``trial`` gets for phase ``seg`` (a round's probe or cool-down, the
    commit, or the hold): its LR and the directives that move states between trials."""
    role = seg["role"]
    kw: dict[str, Any] = {}
    info: dict[str, Any] = {"segment": seg, "trial": trial}
    kind = DecisionKind.EXPLORE
    until = seg.get("until")
    lr = float(seg["cands"][trial]) if role == "probe" else 0.0
    if role == "probe":
        if seg["round"] == 0 and trial == 0:
            kw["snapshot"] = kw["publish"] = True
        elif seg["round"] == 0:
            kw["restore_peer"], kw["snapshot"] = 0, True
        else:
            kw["restore_from"] = rounds[0]["from"] if rounds else seg["from"]
    elif role == "tail":
        lr = float(rounds[-1]["cands"][trial]) if rounds else c.init_lr
        kw["lr_end"], kw["snapshot"] = lr * c.tail_end_ratio, True
    else:  # commit or hold: the rest of the run
        kind, lr, until = DecisionKind.COMMIT, float(seg["lr"]), c.total_steps
        info["final"] = True
        if until is not None and until > seg["from"] + 1:
            kw["lr_end"] = c.final_lr
        else:
            until = None
        win = seg.get("winner")
        if role == "commit" and win is None:
            kw["restore_from"] = rounds[0]["from"] if rounds else None
        elif role == "commit":
            r, j = seg["winner"]
            if trial == j:
                kw["restore_from"], kw["publish"] = rounds[r]["tail"], True
            else:
                kw["restore_peer"] = j
    return Decision(
        stage=plan.next_stage,
        kind=kind,
        from_step=seg["from"],
        until_step=until,
        lr=lr,
        controller="explore",
        info=info,
        **kw,
    )


def lost_decision(c: ExploreConfig, phase_id: int, lr: float, trial: int, plan: Plan) -> Decision:
    """For a trial that trained past the start of a phase it was not given yet (it
    waited longer than its ``sync_timeout_s``): the rest of its run from its own state at
    ``lr`` (the stage's committed LR, or ``init_lr``), and no part in the stage."""
    start = plan.horizon + 1
    until = c.total_steps if c.total_steps is not None and c.total_steps > start + 1 else None
    return Decision(
        stage=plan.next_stage,
        kind=DecisionKind.COMMIT,
        from_step=start,
        until_step=until,
        lr=lr,
        lr_end=c.final_lr if until is not None else None,
        controller="explore",
        info={
            "segment": {"id": phase_id, "role": "lost", "from": start},
            "trial": trial,
            "final": True,
        },
    )
