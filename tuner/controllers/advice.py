"""What an exploring controller tells the user: that its candidates did not start alike
(restored to one state, each must begin at the same loss on the same batch), that a stage
had too few reports of its metric to score anything, or that a population's trials ran
too far ahead for a stage to fit."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tuner.records import DIVERGED_METRIC, RESTORABLE_METRIC

AGENT_METRICS = ("lr", "decision_version", RESTORABLE_METRIC, DIVERGED_METRIC)
"""Metrics the agent adds to every report by itself."""

FIX = (
    "Hand the scheduler what the batches come from (agent.lr_scheduler(..., sampler=...): for "
    "a DataLoader, workers.restorable_sampler.RestorableSampler, and the DataLoader wrapped in "
    "workers.restorable_loader.RestorableLoader if it has worker processes; or the generator "
    "they are drawn with in extra_state=){peers}, and report each step's own loss, not a "
    "running average"
)


def unpaired_advice(
    what: str, lrs: Sequence[float], firsts: Mapping[str, float], *, peers: bool = False
) -> str:
    """``what`` (how the candidates failed to start alike), the first loss of each unpaired
    candidate by its LR (``firsts``: candidate index -> loss; ``lrs``: every candidate's LR),
    and the fix; ``peers``: the trials of a population take the state from trial 0."""
    by_lr = ", ".join(f"{lrs[int(j)]:.3g}: {v:.6g}" for j, v in firsts.items())
    take = ": the trials take it with the model from trial 0" if peers else ""
    return (
        f"{what} (by candidate LR {by_lr}), so they were compared on different batches. "
        + FIX.format(peers=take)
    )


def sparse_advice(stage: Mapping[str, Any], metric: str) -> str:
    """A stage that scored no candidate for want of reports of ``metric``
    (``stage["too_sparse"]``: ``{"reports", "steps", "every"}``)."""
    got = stage["too_sparse"]
    every = f" (every {got['every']})" if got["every"] > 1 else ""
    return (
        f"stage {stage['stage']}: no candidate could be scored: {metric!r} came at "
        f"{got['reports']} of the stage's {got['steps']} steps{every}, too few to score a "
        f"probe; training went on at {stage['lr']:.3g}. Report {metric!r} more often (with "
        "the loss of its step), or give the run more steps"
    )


def late_advice(trials: int, promised: int, start: int, total: int | None, lr: float) -> str:
    """A population whose trials were promised steps so far ahead by the time all had
    reported that a stage from ``start`` does not fit in the run."""
    return (
        f"no exploration: when all {trials} trials had reported, one was promised its steps "
        f"through {promised}, and a stage from step {start} does not fit in total_steps "
        f"{total}; every trial trains on untuned (init_lr {lr:.3g}). Trials whose steps take "
        "under a millisecond outrun the head: give the run more steps, or tune one trial "
        "(no population)"
    )


def missing_metrics(wanted: Sequence[str], seen: Collection[str]) -> str | None:
    """What reports carrying the metrics ``seen`` lack of those a controller learns from
    (``wanted``; ``"arm_loss/*"``: any metric under that prefix), and the fix; ``None``
    when nothing is missing."""
    missing = [
        m
        for m in wanted
        if not (any(s.startswith(m[:-1]) for s in seen) if m.endswith("*") else m in seen)
    ]
    if not missing:
        return None
    carried = sorted(set(seen) - set(AGENT_METRICS))
    fix = (
        "Report each arm's loss with the batch's (workers.arm_loss.arm_metrics, split_loss_by_arm)"
        if any(m.endswith("*") for m in missing)
        else "Report it, or name the metric in the spec (--lr metric=NAME, LRSpec(metric=...))"
    )
    return (
        f"carry no {', '.join(map(repr, missing))}, which the controller learns from; they "
        f"carry {carried}. {fix}"
    )
