"""RestorableSampler: a DataLoader's shuffled order that snapshots rewind with the model."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind
from workers.explore import StateMover
from workers.restorable_sampler import RestorableSampler


def test_each_epoch_is_a_new_permutation_the_same_for_the_same_seed() -> None:
    a, b = RestorableSampler(10, seed=3), RestorableSampler(10, seed=3)
    first, second = list(a), list(a)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert [list(b), list(b)] == [first, second]
    assert list(RestorableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "drop_last", "per_rank"), [(10, False, 4), (10, True, 3)])
def test_ranks_split_an_epoch_as_a_distributed_sampler_does(
    n: int, drop_last: bool, per_rank: int
) -> None:
    ranks = [
        RestorableSampler(n, seed=1, num_replicas=3, rank=r, drop_last=drop_last) for r in range(3)
    ]
    epochs = [list(s) for s in ranks]
    assert all(len(e) == len(s) == per_rank for e, s in zip(epochs, ranks, strict=True))
    seen = list(itertools.chain(*epochs))
    if drop_last:
        assert len(set(seen)) == len(seen) == 9  # disjoint, one item left out
    else:
        assert set(seen) == set(range(n)) and len(seen) == 12  # padded by wrapping around


def test_a_restore_takes_a_live_iterator_back() -> None:
    sampler = RestorableSampler(50, seed=0)
    live = iter(sampler)
    _ = [next(live) for _ in range(5)]
    saved = sampler.state_dict()
    after = [next(live) for _ in range(7)]
    sampler.load_state_dict(saved)
    assert [next(live) for _ in range(7)] == after
    # ... also into an epoch the iterator had already left
    rest = list(live)
    assert len(rest) == 50 - 12 and sampler.epoch == 1
    sampler.load_state_dict(saved)
    assert list(itertools.islice(iter(sampler), 7)) == after


def test_set_epoch_starts_a_new_epoch_only() -> None:
    sampler = RestorableSampler(8, seed=0)
    live = iter(sampler)
    next(live)
    sampler.set_epoch(0)  # the epoch it is in: no restart
    assert sampler.position == 1
    sampler.set_epoch(2)
    assert (sampler.epoch, sampler.position) == (2, 0)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"epoch": 0, "position": 99, "seed": 0},
        {"epoch": "x", "position": 0, "seed": 0},
    ],
)
def test_a_state_that_does_not_fit_is_refused(state: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="RestorableSampler state"):
        RestorableSampler(8, seed=0).load_state_dict(state)


def test_a_state_from_another_seed_brings_its_order_along() -> None:
    # a population's trial loads trial 0's state: it goes on with trial 0's batches
    trial0, trial1 = RestorableSampler(30, seed=0), RestorableSampler(30, seed=1)
    next(iter(trial0))
    trial1.load_state_dict(trial0.state_dict())
    assert list(trial1) == list(trial0) and trial1.seed == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="rank"):
        RestorableSampler(8, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="cannot give each"):
        RestorableSampler(2, num_replicas=3, drop_last=True)


def _decision(step: int, version: int, **kw: Any) -> Decision:
    return Decision(
        stage=version,
        kind=DecisionKind.EXPLORE,
        from_step=step,
        until_step=step + 5,
        lr=0.1,
        version=version,
        **kw,
    )


def test_through_a_dataloader_a_restored_candidate_trains_on_the_snapshots_batches() -> None:
    data = TensorDataset(torch.arange(40.0).unsqueeze(1))
    sampler = RestorableSampler(len(data), seed=0)
    loader = DataLoader(data, batch_size=4, sampler=sampler)  # 10 batches an epoch
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mover = StateMover(model, opt, sampler=sampler)
    seen: dict[int, list[float]] = {}
    batches = iter(loader)
    # snapshot at step 8, restore to it at step 14: the epoch turned over in between
    plan = {8: _decision(8, 1, snapshot=True), 14: _decision(14, 2, restore_from=8)}
    for step in range(20):
        mover.apply(step, plan.get(step))  # what scheduler.step() does before the batch
        try:
            (x,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (x,) = next(batches)
        seen[step] = x.flatten().tolist()
    assert seen[14] == seen[8] and seen[15] == seen[9]
    assert seen[16] == seen[10] and seen[16] != seen[0]  # the next epoch, as from step 8
