"""What an exploring controller tells the user when its candidates did not start alike:
restored to one state, each must begin at the same loss on the same batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
