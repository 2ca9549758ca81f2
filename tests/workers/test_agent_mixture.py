"""agent.mixture_sampler against a real Redis: the job's mixture decisions drive the draws."""

from __future__ import annotations

import itertools

from trials.store import Store
from tuner.records import Decision, DecisionKind
from workers.agent import Agent


def test_mixture_decisions_reach_the_sampler_at_their_step_on_every_rank(store: Store) -> None:
    job = store.job("mix")
    data = {"a": list(range(100)), "b": list(range(100, 200))}
    job.commit(
        expected_version=0,
        decision=Decision(
            stage=0,
            kind=DecisionKind.COMMIT,
            from_step=5,
            until_step=50,
            mixture={"a": 0.0, "b": 1.0},
        ),
    )
    agents = [Agent(job, rank=r, sync=False, flush_every=1000) for r in (0, 1)]
    try:
        samplers = [a.mixture_sampler(data, 8, world_size=2, seed=3) for a in agents]
        batches = [list(itertools.islice(iter(s), 10)) for s in samplers]
    finally:
        for a in agents:
            a.close()
    for rank_batches in batches:
        for step, batch in enumerate(rank_batches):
            assert {slot.step for slot in batch} == {step}
            version = {slot.version for slot in batch}
            assert version == ({1} if step >= 5 else {0}), (step, version)
            if step >= 5:  # all weight on arm b from the decision's first step on
                assert {slot.arm for slot in batch} == {1}
    # Both ranks draw the same arm for every slot, and read different items.
    arms = [[[slot.arm for slot in b] for b in rb] for rb in batches]
    assert arms[0] == arms[1]
    items = [{slot.idx for b in rb for slot in b} for rb in batches]
    assert not items[0] & items[1]
