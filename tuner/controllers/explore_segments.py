"""What the ``explore`` controller (:mod:`tuner.controllers.explore_lr`) writes: the
decision a planned segment becomes (probe, tail, commit, anneal, hold), the LRs a stage
tries, the candidate beyond the edge, the restart for sparse reports, the LRs a stage
starts and decays from, and what closing a stage records. Functions of the controller's
state; they change only the segment they are given, except :func:`finish_stage`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuner.controllers import candidate_scores as scoring
from tuner.controllers.base import Plan
from tuner.controllers.explore_config import (
    EXTEND,
    FIRST_STAGE_FACTORS,
    MAX_EXTENSIONS,
    report_interval,
)
from tuner.records import Decision, DecisionKind

if TYPE_CHECKING:
    from tuner.controllers.explore_lr import ExploreLR


def segment_decision(ctl: ExploreLR, seg: dict[str, Any], plan: Plan) -> Decision:
    """The decision ``seg`` becomes; what it settles (a probe's first half, the commit's
    LR and end) is written into ``seg``, which the decision carries."""
    c = ctl.config
    probe_steps, first_half, tail_steps = c.lengths(seg.get("every", ctl.every))
    role = seg["role"]
    start = seg.get("from")
    if start is None:
        assert ctl.last is not None and ctl.last["until"] is not None
        start = ctl.last["until"]
    info: dict[str, Any] = {"segment": seg}
    kw: dict[str, Any] = {}
    if role == "anneal":
        until = c.total_steps
        if until is None or until <= start + 1:
            until = None
        kind, lr = DecisionKind.COMMIT, ctl.lr_now
        kw["lr_end"] = c.final_lr if until is not None else None
        info["final"] = True
    elif role == "hold":  # workers that cannot restore: decay linearly, explore nothing
        kind, lr, until = DecisionKind.COMMIT, ctl.lr_now, c.total_steps
        if until is not None and until > start + 1:
            kw["lr_end"], info["final"], seg["final"] = c.final_lr, True, True
        else:
            until = None
    elif role == "probe" and seg.get("part") == 2:
        lr = ctl.cands[seg["cand"]]["lr"]
        kind, until = DecisionKind.EXPLORE, start + probe_steps - first_half
    elif role == "probe":
        cands = seg["cands"] if seg["cand"] == 0 else [x["lr"] for x in ctl.cands]
        j = seg["cand"]
        lr = cands[j] if j < len(cands) else seg["lr"]
        kind, until = DecisionKind.EXPLORE, start + probe_steps
        if first_half < probe_steps:
            seg["part"], until = 1, start + first_half
            ref = ctl._reference(lr)
            if ref is not None:
                seg["ref"] = ref
        if seg["cand"] == 0 and not seg.get("restart"):
            kw["snapshot"] = True
        else:
            kw["restore_from"] = ctl.stage_start
    elif role == "tail":
        lr = ctl.cands[seg["cand"]]["lr"]
        kind, until = DecisionKind.EXPLORE, start + tail_steps
        kw["lr_end"], kw["snapshot"] = lr * c.tail_end_ratio, True
    else:  # commit
        # the cut this segment carries (the last probe's) is accepted after it is made
        cands = ctl.cands if "cut" not in seg else scoring.with_cut(ctl.cands, seg["cut"])
        win = scoring.winner(cands, seg["scores"])
        # Nothing scored: back to the stage's start, at the LR it started from. Abandoned (a
        # rank left the stage's line: it restarted): a cool-down snapshot it may not hold is
        # not the winner's state on it, so every rank goes back to the stage's start too (on
        # a restarted rank, the state it had at its first missed restore).
        keep = seg.get("abandoned") is None
        kind, lr = DecisionKind.COMMIT, stage_lr(ctl)
        kw["restore_from"] = ctl.stage_start
        if win is not None:
            lr = scoring.parabola_lr(
                [float(x["lr"]) for x in cands],
                seg["scores"],
                win,
                scoring.stand_ins(ctl.curve, cands),
            )
            # ties pair the curve's cool-downs, which a restarted rank's replay blurs
            other, t = ctl._tie(cands, win) if keep else (None, None)
            seg["tie_t"] = t if t is not None and math.isfinite(t) else None
            if other is not None:  # halfway (in log), from the larger one's steps
                lrs = (float(cands[win]["lr"]), float(cands[other]["lr"]))
                lr = math.sqrt(lrs[0] * lrs[1])
                win, seg["tie_lr"] = (win if lrs[0] > lrs[1] else other), lrs[1]
            if keep:
                kw["restore_from"] = ctl.cands[win]["tail"][0]
        seg["lr"] = lr
        nominal = c.first_stage + (ctl.stage + 1) * c.stage_span
        until = max(nominal, start + probe_steps)
        if c.anneal_start is not None and until + 2 * probe_steps > c.anneal_start:
            until = c.anneal_start
        kw["lr_end"] = seg["lr_end"] = lr * commit_decay(ctl, lr)
        if c.shape == "linear" and c.total_steps is not None and ctl.stage + 1 >= c.stages:
            until, seg["final"] = c.total_steps, True
            kw["lr_end"] = seg["lr_end"] = c.final_lr
            info["final"] = True
    return Decision(
        stage=plan.next_stage,
        kind=kind,
        from_step=start,
        until_step=until,
        lr=lr,
        controller="explore",
        info=info,
        **kw,
    )


def stage_lr(ctl: ExploreLR) -> float:
    """The LR the stage under way started from: the last commit's end, or ``init_lr``."""
    if not ctl.stages:
        return ctl.config.init_lr
    prev = ctl.stages[-1]
    return float(prev["lr_end"] if prev.get("lr_end") is not None else prev["lr"])


def commit_decay(ctl: ExploreLR, lr: float) -> float:
    """Ratio the commit decays by over its stage: the last ratio between stage winners
    (the LR the stages pick falls as training goes on), within [``min_decay``, 1]."""
    c = ctl.config
    if not ctl.stages or c.min_decay >= 1:
        return 1.0
    prev = float(ctl.stages[-1]["lr"])
    return min(1.0, max(c.min_decay, lr / prev))


def stage_candidates(ctl: ExploreLR, stage: int) -> list[float]:
    c = ctl.config
    lo, hi = c.bounds
    if stage == 0 or not ctl.stages:
        raw = [c.init_lr * f for f in FIRST_STAGE_FACTORS]
    else:
        last = ctl.stages[-1]
        win = float(last["lr"])
        box = (max(lo, win / c.trust), min(hi, win * c.trust))
        p = ctl._progress(stage)
        picks = [win / 2, win * 2]
        if len(ctl.gp) >= 4:
            picks.append(ctl.gp.best_lr(progress=p, bounds=box))
            extra = c.candidates - len(picks)
            if extra > 0 and box[0] < box[1]:
                picks += ctl.gp.suggest(extra, progress=p, bounds=box)
        else:
            picks.append(win)
        raw = picks
    return _spread(sorted(min(max(x, lo), hi) for x in raw))[::-1]


def extension(
    ctl: ExploreLR, cands: list[dict[str, Any]], scores: dict[str, float]
) -> float | None:
    """An LR beyond the edge when the best candidate is the smallest or the largest one
    tried (the optimum is not bracketed yet), at most ``MAX_EXTENSIONS`` per stage."""
    added = sum(1 for cand in cands if cand.get("added"))
    if added >= MAX_EXTENSIONS:
        return None
    win = scoring.winner(cands, scores)
    if win is None:
        return None
    lo, hi = ctl.config.bounds
    lrs = [float(cand["lr"]) for cand in cands]
    if ctl._tie(cands, win)[0] is not None:
        return None  # tied with its neighbour: the optimum is between them
    if lrs[win] == min(lrs) and min(lrs) / EXTEND >= lo:
        return min(lrs) / EXTEND
    if lrs[win] == max(lrs) and max(lrs) * EXTEND <= hi:
        return max(lrs) * EXTEND
    return None


def sparse_restart(ctl: ExploreLR, first: dict[str, Any], until: int) -> dict[str, Any] | None:
    """The stage again, with probes long enough to be scored, when the first half of
    its first probe shows workers report less often than its lengths assume (they
    report every 10 steps, say, and a probe is 30 long: too few reports to score a
    candidate, or to pair two); ``None`` when they report often enough. When such
    probes do not fit before the decay, a commit that gives up on this stage."""
    steps, _ = ctl.curve.window(first["from"], until)
    if 2 * len(steps) >= until - first["from"]:
        return None
    every = report_interval(ctl.curve.window(0, until)[0])
    if every <= ctl.every:
        return None
    c = ctl.config
    probe, _, tail = c.lengths(every)
    end = c.anneal_start if c.anneal_start is not None else math.inf
    if until + len(ctl.cands) * (probe + tail) + 2 * probe > end:
        return {"role": "commit", "scores": {}, "every": every}
    cands = [float(x["lr"]) for x in ctl.cands if not x.get("added")]
    return {
        "role": "probe",
        "cand": 0,
        "from": until,
        "stage": ctl.stage,
        "cands": cands,
        "restart": True,
        "every": every,
    }


def _spread(lrs: Sequence[float], factor: float = 1.25) -> list[float]:
    """Ascending LRs with near-duplicates (within ``factor``) dropped."""
    out: list[float] = []
    for lr in sorted(lrs):
        if not out or lr > out[-1] * factor:
            out.append(lr)
    return out


def finish_stage(ctl: ExploreLR, seg: dict[str, Any]) -> None:
    """Close the stage ``seg`` commits: its scores go to the GP (centred and scaled per
    stage), its record to ``ctl.stages``, and the curve before the commit is dropped."""
    scores = [c["score"] for c in ctl.cands if "score" in c]
    if scores:
        mid = sum(scores) / len(scores)
        spread = (max(scores) - min(scores)) or 1.0
        p = ctl._progress(ctl.stage)
        for cand in ctl.cands:
            if "score" in cand:
                ctl.gp.observe(cand["lr"], (cand["score"] - mid) / spread, progress=p)
    unpaired = {} if seg.get("abandoned") else scoring.unpaired(ctl.curve, ctl.cands)
    sparse = None  # nothing scored for want of reports of the metric: say how many came
    if not scores and not seg.get("abandoned"):
        got = len(ctl.curve.window(ctl.stage_start, seg["from"])[0])
        if got < scoring.MIN_SCORED * len(ctl.cands):
            span, every = seg["from"] - ctl.stage_start, seg.get("every", ctl.every)
            sparse = {"reports": got, "steps": span, "every": every}
    ctl.stages.append(
        {
            "stage": ctl.stage,
            "from": ctl.stage_start,
            "lr": seg["lr"],
            "lr_end": seg.get("lr_end"),
            "candidates": [c["lr"] for c in ctl.cands],
            "scores": [c.get("score") for c in ctl.cands],
            "tie_t": seg.get("tie_t"),
            "tie_lr": seg.get("tie_lr"),
            "pruned": [j for j, c in enumerate(ctl.cands) if c.get("pruned")],
            "skipped": [j for j, c in enumerate(ctl.cands) if c["status"] == "skipped"],
            **({"abandoned": seg["abandoned"]} if seg.get("abandoned") else {}),
            **({"too_sparse": sparse} if sparse is not None else {}),
            **(
                {"unpaired": unpaired, "start_loss": scoring.start_loss(ctl.curve, ctl.cands)}
                if unpaired
                else {}
            ),
        }
    )
    ctl.stages = ctl.stages[-64:]
    ctl.curve.prune(seg["from"])
