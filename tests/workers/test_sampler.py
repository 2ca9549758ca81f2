"""The mixture sampler: lazy draws, rank determinism, prefetch tags, resume, frequencies,
per-arm losses, the stream form, and the errors a user gets. Pure torch, no Redis."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from scipy.stats import chi2
from torch.utils.data import DataLoader

from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind
from workers.sampler import (
    MIXTURE_VERSION,
    MixtureBatch,
    MixtureBatchSampler,
    MixtureCollate,
    MixtureDataset,
    MixtureIndex,
    MixtureSample,
    MixtureStream,
    arm_metrics,
    decision_weights,
    mixture_sampler,
    split_loss_by_arm,
)

Weights = tuple[int, Mapping[str, float]] | None


def arm_data(name: str, n: int) -> list[tuple[str, int]]:
    """An arm's items name their arm and position, so tests can check what was read."""
    return [(name, i) for i in range(n)]


def draw(sampler: MixtureBatchSampler, n: int) -> list[list[MixtureIndex]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def switch_at(step: int, new: Weights) -> Any:
    def weights_for(s: int) -> Weights:
        return new if s >= step else None

    return weights_for


# --- laziness: a new weight vector applies from the next batch ------------------------------


def test_weight_change_applies_at_the_step_it_covers() -> None:
    asked: list[int] = []

    def weights_for(step: int) -> Weights:
        asked.append(step)
        return (7, {"b": 1.0}) if step >= 5 else (3, {"a": 0.5, "b": 0.5})

    sampler = mixture_sampler(
        {"a": arm_data("a", 50), "b": arm_data("b", 50)}, 16, weights_for, seed=1
    )
    it = iter(sampler)
    first = [next(it) for _ in range(3)]
    assert asked == [0, 1, 2], "weights are asked for once per batch, when it is drawn"
    batches = first + [next(it) for _ in range(5)]
    for b, batch in enumerate(batches):
        assert {slot.batch for slot in batch} == {b} and {slot.step for slot in batch} == {b}
        arms = {slot.arm for slot in batch}
        if b < 5:
            assert {slot.version for slot in batch} == {3}
            assert arms == {0, 1}  # 16 fair coin flips: both arms (fixed seed)
        else:
            assert {slot.version for slot in batch} == {7}
            assert arms == {1}
    assert sampler.version == 7 and sampler.weights == {"a": 0.0, "b": 1.0}


def test_latest_weights_reach_the_very_next_batch() -> None:
    # What WeightedRandomSampler cannot do: weights changed between two next() calls.
    current: dict[str, Weights] = {"w": (1, {"a": 1.0})}
    sampler = MixtureBatchSampler(
        {"a": range(0, 40), "b": range(40, 80)}, 8, lambda step: current["w"]
    )
    it = iter(sampler)
    seen = []
    for b in range(6):
        if b == 3:
            current["w"] = (2, {"b": 1.0})
        batch = next(it)
        seen.append(({s.version for s in batch}, {s.arm for s in batch}))
    assert seen == [({1}, {0})] * 3 + [({2}, {1})] * 3


def test_none_keeps_the_weights_in_force_and_lag_and_accumulation_shift_the_step() -> None:
    asked: list[int] = []

    def weights_for(step: int) -> Weights:
        asked.append(step)
        return (4, {"b": 1.0}) if step == 2 else None  # a decision that names a mixture once

    sampler = MixtureBatchSampler(
        {"a": range(10), "b": range(10, 20)},
        4,
        weights_for,
        batches_per_step=2,
        weights_lag=1,
        start_step=1,
    )
    batches = draw(sampler, 8)
    assert [b[0].step for b in batches] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert asked == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [b[0].version for b in batches] == [0, 0, 0, 0, 4, 4, 4, 4]
    assert all(s.arm == 1 for b in batches[4:] for s in b)


def test_decision_weights_reads_a_decisions_mixture_and_keeps_it_through_lr_only_ones() -> None:
    decisions = [
        Decision(0, DecisionKind.COMMIT, 0, 4, mixture={"a": 1.0, "b": 0.0}, version=1),
        Decision(1, DecisionKind.COMMIT, 4, 8, lr=0.1, version=2),  # leaves the mixture
        Decision(2, DecisionKind.COMMIT, 8, None, mixture={"a": 0.0, "b": 1.0}, version=3),
    ]

    def decision_for(step: int) -> Decision | None:
        return next((d for d in decisions if d.covers(step)), None)

    sampler = MixtureBatchSampler(
        {"a": range(5), "b": range(5, 10)}, 4, decision_weights(decision_for)
    )
    batches = draw(sampler, 10)
    assert [b[0].version for b in batches] == [1] * 8 + [3] * 2
    assert all(s.arm == 0 for b in batches[:8] for s in b)
    assert all(s.arm == 1 for b in batches[8:] for s in b)


# --- data-parallel ranks ------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_the_same_arms_and_read_disjoint_items(world_size: int) -> None:
    sizes = {"a": 11, "b": 6, "c": 7}
    weights_for = switch_at(10, (5, {"a": 0.2, "b": 0.5, "c": 0.3}))
    samplers = [
        MixtureBatchSampler(
            {n: range(k) for n, k in sizes.items()},
            8,
            weights_for,
            seed=9,
            rank=r,
            world_size=world_size,
        )
        for r in range(world_size)
    ]
    runs = [draw(s, 40) for s in samplers]
    tags = [[[(s.arm, s.version, s.step, s.batch) for s in b] for b in run] for run in runs]
    assert all(t == tags[0] for t in tags[1:]), "every rank draws the same arm sequence"
    assert {s.version for b in runs[0] for s in b} == {0, 5}
    for arm, name in enumerate(sizes):
        read = [[s.idx for b in run for s in b if s.arm == arm] for run in runs]
        for r in range(world_size):
            shard = set(range(sizes[name]))
            shard = {i for i in shard if i % world_size == r}
            assert set(read[r]) == shard, f"rank {r} reads exactly its shard of {name}"
            # a shard is read once per epoch, in a new order each epoch
            n = len(shard)
            epochs = [read[r][i : i + n] for i in range(0, len(read[r]) - n + 1, n)]
            assert len(epochs) >= 2
            assert all(sorted(e) == sorted(shard) for e in epochs)
        for r1 in range(world_size):
            for r2 in range(r1 + 1, world_size):
                assert not set(read[r1]) & set(read[r2]), "ranks read disjoint items"


def test_the_seed_and_the_version_key_the_draws() -> None:
    def arms_of(seed: int, version: int) -> list[int]:
        s = MixtureBatchSampler(
            {"a": range(10), "b": range(10, 20)},
            32,
            lambda step: (version, {"a": 1, "b": 1}),
            seed=seed,
        )
        return [slot.arm for slot in next(iter(s))]

    assert arms_of(0, 1) == arms_of(0, 1)
    assert arms_of(0, 1) != arms_of(1, 1)
    assert arms_of(0, 1) != arms_of(0, 2)


# --- DataLoader workers and prefetch ------------------------------------------------------


def test_prefetched_batches_keep_the_version_they_were_drawn_under() -> None:
    # Items are their own "loss": arm a's items are < 1000, arm b's >= 1000.
    data = {
        "a": [torch.tensor(float(i)) for i in range(64)],
        "b": [torch.tensor(1000.0 + i) for i in range(64)],
    }
    current: dict[str, Weights] = {"w": (1, {"a": 0.5, "b": 0.5})}
    sampler = mixture_sampler(data, 8, lambda step: current["w"], seed=4, num_batches=20)
    loader = sampler.loader(num_workers=2, prefetch_factor=2)
    versions: list[int] = []
    for i, batch in enumerate(loader):
        assert isinstance(batch, MixtureBatch) and batch.batch == i and batch.step == i
        versions.append(batch.version)
        origin = (batch.data >= 1000).long()  # the arm each item really came from
        assert torch.equal(batch.arms, origin), "every item is attributed to its arm"
        loss, count = split_loss_by_arm(batch.data, batch.arms, sampler.arm_names)
        for arm, name in enumerate(sampler.arm_names):
            mine = batch.data[origin == arm]
            assert count.get(name, 0) == len(mine)
            if len(mine):
                assert loss[name] == pytest.approx(mine.mean().item())
            else:
                assert name not in loss
        if batch.version == 2:
            assert count == {"b": 8}
        if i == 3:  # the head decides while batches 4.. are already drawn
            current["w"] = (2, {"b": 1.0})
    assert versions[:4] == [1] * 4
    old_after_switch = versions[4:].count(1)
    assert 1 <= old_after_switch <= 2 * 2, "batches prefetched under v1 say v1"
    assert versions[4:] == [1] * old_after_switch + [2] * (16 - old_after_switch)


def test_dataloader_workers_yield_the_same_batches_as_the_main_process() -> None:
    def run(num_workers: int) -> list[tuple[list[int], list[int], int]]:
        sampler = mixture_sampler(
            {"a": list(range(100)), "b": list(range(100, 130))},
            6,
            switch_at(3, (2, {"a": 0.1, "b": 0.9})),
            seed=2,
            num_batches=8,
        )
        kwargs: dict[str, Any] = {"num_workers": num_workers}
        if num_workers:
            kwargs["prefetch_factor"] = 2
        return [(b.data.tolist(), b.arms.tolist(), b.version) for b in sampler.loader(**kwargs)]

    assert run(0) == run(2)


# --- state_dict ----------------------------------------------------------------------------


def make_resumable(rank: int = 0, world_size: int = 1) -> MixtureBatchSampler:
    return MixtureBatchSampler(
        {"a": range(0, 9), "b": range(9, 14), "c": range(14, 40)},
        5,
        switch_at(6, (3, {"a": 0.6, "b": 0.4})),  # names a mixture once, then keeps it
        seed=11,
        rank=rank,
        world_size=world_size,
    )


def test_state_dict_restore_resumes_the_identical_sequence() -> None:
    first = make_resumable()
    draw(first, 8)
    state = json.loads(json.dumps(first.state_dict()))
    reference = draw(first, 12)

    resumed = make_resumable()
    resumed.load_state_dict(state)
    assert draw(resumed, 12) == reference
    assert resumed.version == 3


def test_state_after_a_consumed_batch_skips_nothing_prefetched() -> None:
    run = make_resumable()
    batches = draw(run, 12)  # as if batches 8..11 were prefetched but not trained on
    state = json.loads(json.dumps(run.state_dict(after_batch=7)))
    resumed = make_resumable()
    resumed.load_state_dict(state)
    assert draw(resumed, 4) == batches[8:12]


def test_one_ranks_state_restores_every_rank() -> None:
    straight = draw(make_resumable(rank=1, world_size=2), 15)
    rank0 = make_resumable(rank=0, world_size=2)
    draw(rank0, 6)
    rank1 = make_resumable(rank=1, world_size=2)
    rank1.load_state_dict(rank0.state_dict())
    assert draw(rank1, 9) == straight[6:]


def test_load_state_dict_refuses_another_samplers_state() -> None:
    state = make_resumable().state_dict()
    other_arms = MixtureBatchSampler(
        {"b": range(5), "a": range(5, 10), "c": range(10, 20)}, 5, seed=11
    )
    with pytest.raises(ConfigError, match="same order"):
        other_arms.load_state_dict(state)
    other_seed = MixtureBatchSampler(
        {"a": range(9), "b": range(9, 14), "c": range(14, 40)}, 5, seed=12
    )
    with pytest.raises(ConfigError, match="seed"):
        other_seed.load_state_dict(state)
    with pytest.raises(ConfigError, match="weight of arm 'a'"):
        make_resumable().load_state_dict({**state, "weights": {"a": -1.0, "b": 1.0, "c": 0.0}})
    with pytest.raises(ConfigError, match="format"):
        make_resumable().load_state_dict({**state, "format": 99})
    sampler = make_resumable()
    draw(sampler, 3)
    with pytest.raises(ConfigError, match="not among the last batches drawn"):
        sampler.state_dict(after_batch=7)


# --- frequencies ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arm_frequencies_match_the_weights(seed: int) -> None:
    weights = {"a": 0.5, "b": 0.3, "c": 0.2, "z": 0.0}
    sampler = MixtureBatchSampler(
        {name: range(i * 100, i * 100 + 100) for i, name in enumerate(weights)},
        64,
        lambda step: (1, weights),
        seed=seed,
    )
    counts = Counter(s.arm for b in draw(sampler, 300) for s in b)
    n = 300 * 64
    assert counts[3] == 0, "an arm of weight 0 is never drawn"
    stat = sum((counts[i] - n * w) ** 2 / (n * w) for i, w in enumerate([0.5, 0.3, 0.2]))
    assert stat < chi2.ppf(0.999, df=2), f"chi-square {stat:.1f} for counts {dict(counts)}"


def test_initial_weights_default_uniform_or_by_size() -> None:
    arms = {"a": range(0, 100), "b": range(100, 400), "c": range(400, 1000)}
    for spec, expected in (("uniform", [1 / 3] * 3), ("size", [0.1, 0.3, 0.6])):
        sampler = MixtureBatchSampler(arms, 100, initial_weights=spec, seed=5)
        assert sampler.version == 0
        assert list(sampler.weights.values()) == pytest.approx(expected)
        counts = Counter(s.arm for b in draw(sampler, 100) for s in b)
        stat = sum((counts[i] - 1e4 * w) ** 2 / (1e4 * w) for i, w in enumerate(expected))
        assert stat < chi2.ppf(0.999, df=2)


# --- per-arm losses ------------------------------------------------------------------------


def test_split_loss_by_arm_and_the_report_metrics() -> None:
    loss = torch.tensor([1.0, 2.0, 3.0, 5.0], requires_grad=True)
    arm_loss, arm_count = split_loss_by_arm(loss, [2, 0, 2, 2], ["web", "code", "math"])
    assert arm_loss == {"web": 2.0, "math": 3.0}
    assert arm_count == {"web": 1, "math": 3}, "an arm the batch did not draw is absent"
    flat = arm_metrics(arm_loss, arm_count, 6, arm_adv={"math": 0.5})
    assert flat == {
        "arm_loss/web": 2.0,
        "arm_loss/math": 3.0,
        "arm_count/web": 1.0,
        "arm_count/math": 3.0,
        "arm_adv/math": 0.5,
        MIXTURE_VERSION: 6.0,
    }
    with pytest.raises(ConfigError, match="version"):
        arm_metrics(arm_loss, arm_count, -1)


def test_split_loss_by_arm_refuses_mismatched_input() -> None:
    with pytest.raises(ConfigError, match=r"\(4, 2\)"):
        split_loss_by_arm(torch.ones(4, 2), [0, 0, 0, 0], ["a"])
    with pytest.raises(ConfigError, match=r"arms \(3,\)"):
        split_loss_by_arm(torch.ones(4), [0, 0, 0], ["a"])
    with pytest.raises(ConfigError, match=r"\[0, 2\)"):
        split_loss_by_arm(torch.ones(2), torch.tensor([0, 2]), ["a", "b"])


# --- streams -------------------------------------------------------------------------------


def streams(sizes: Mapping[str, int]) -> dict[str, range]:
    out, offset = {}, 0
    for name, n in sizes.items():
        out[name] = range(offset, offset + n)
        offset += n
    return out


def test_stream_draws_the_same_arm_sequence_as_the_batch_sampler() -> None:
    weights_for = switch_at(4, (2, {"a": 0.3, "b": 0.7}))
    sampler = MixtureBatchSampler(streams({"a": 50, "b": 50}), 8, weights_for, seed=3)
    stream = MixtureStream(streams({"a": 50, "b": 50}), 8, weights_for, seed=3, num_batches=10)
    expected = [(s.arm, s.version, s.step, s.batch) for b in draw(sampler, 10) for s in b]
    got = list(stream)
    assert [(s.arm, s.version, s.step, s.batch) for s in got] == expected
    assert all(isinstance(s, MixtureSample) for s in got)
    assert [s.item for s in got if s.arm == 0] == list(range(sum(1 for e in expected if e[0] == 0)))


def test_stream_workers_and_ranks_split_the_data_and_keep_the_order() -> None:
    sizes = {"a": 400, "b": 400}
    weights_for = switch_at(5, (9, {"a": 0.25, "b": 0.75}))

    def run(rank: int, num_workers: int) -> list[MixtureBatch]:
        stream = MixtureStream(
            streams(sizes), 6, weights_for, seed=8, rank=rank, world_size=2, num_batches=12
        )
        return list(stream.loader(num_workers=num_workers))

    alone = run(0, 0)
    ranks = [run(0, 2), run(1, 2)]
    tags = [[(b.arms.tolist(), b.version, b.step, b.batch) for b in r] for r in [alone, *ranks]]
    assert tags[0] == tags[1] == tags[2], "same batches, in order, whatever the workers and rank"
    assert [t[3] for t in tags[0]] == list(range(12))
    items = [[i for b in r for i in b.data.tolist()] for r in ranks]
    assert len(set(items[0])) == len(items[0]) == 72, "no item twice within a pass"
    assert not set(items[0]) & set(items[1]), "ranks read disjoint items"


def test_stream_factories_open_their_own_shard_and_one_shot_generators_run_out() -> None:
    opened: list[tuple[int, int]] = []

    def factory(shard: int, num_shards: int) -> Iterator[int]:
        opened.append((shard, num_shards))
        return iter(range(shard, 3, num_shards))  # 2 items for shard 0 of 2

    stream = MixtureStream({"a": factory}, 5, rank=0, world_size=2, num_batches=1)
    assert [s.item for s in stream] == [0, 2, 0, 2, 0]
    assert opened == [(0, 2)] * 3, "a used-up shard is reopened as the arm's next epoch"

    one_shot = MixtureStream({"a": (i for i in range(3))}, 4, num_batches=1)
    with pytest.raises(ConfigError, match="one-shot generator"):
        list(one_shot)


def test_collate_refuses_a_dataloader_batch_spanning_two_mixture_batches() -> None:
    stream = MixtureStream(streams({"a": 20}), 4, num_batches=2)
    with pytest.raises(ConfigError, match="batch_size"):
        list(DataLoader(stream, batch_size=8, collate_fn=MixtureCollate()))
    with pytest.raises(ConfigError, match="batch_size"):
        stream.loader(batch_size=8)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"a": -0.5, "b": 1.0}, r"arm 'a' must be finite and >= 0, got -0.5"),
        ({"a": math.nan, "b": 1.0}, r"arm 'a' must be finite and >= 0, got nan"),
        ({"a": 1.0, "b": math.inf}, r"arm 'b' must be finite and >= 0, got inf"),
        ({"a": 0.5, "c": 0.5}, r"unknown arms \['c'\]"),
        ({"a": 0.0, "b": 0.0}, "positive sum"),
        ({"a": "heavy"}, r"arm 'a' is not a number: 'heavy'"),
        ([0.5, 0.5], "must be a mapping"),
    ],
)
def test_bad_weights_name_the_arm_and_value(weights: Any, match: str) -> None:
    arms = {"a": range(4), "b": range(4, 8)}
    with pytest.raises(ConfigError, match=match):
        MixtureBatchSampler(arms, 2, initial_weights=weights)
    # the same weights from the controller fail at the batch that would use them
    sampler = MixtureBatchSampler(arms, 2, switch_at(2, (1, weights)))
    it = iter(sampler)
    next(it), next(it)
    with pytest.raises(ConfigError, match=match):
        next(it)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"rank": 2, "world_size": 2}, r"rank must be in \[0, world_size\)"),
        ({"world_size": 5}, "arm 'b' has 4 items, fewer than world_size=5"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"initial_weights": "natural"}, "'uniform' or 'size'"),
        ({"batches_per_step": 0}, "batches_per_step"),
        ({"weights_lag": -1}, "weights_lag"),
    ],
)
def test_bad_sampler_arguments(kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(ConfigError, match=match):
        MixtureBatchSampler({"a": range(8), "b": range(8, 12)}, **kwargs)


def test_bad_inputs_elsewhere() -> None:
    with pytest.raises(ConfigError, match="at least one arm"):
        MixtureBatchSampler({}, 2)
    with pytest.raises(ConfigError, match="must return"):
        next(iter(MixtureBatchSampler({"a": range(3)}, 2, lambda step: {"a": 1.0})))  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="version"):
        next(iter(MixtureBatchSampler({"a": range(3)}, 2, lambda step: (-1, {"a": 1.0}))))
    with pytest.raises(ConfigError, match=r"indices must lie in \[0, 5\)"):
        mixture_sampler(list(range(5)), 2, arms={"a": range(3), "b": range(3, 6)})
    with pytest.raises(ConfigError, match="arms=\\{arm: indices\\}"):
        mixture_sampler(list(range(5)), 2)
    with pytest.raises(ConfigError, match="no len"):
        MixtureDataset({"a": iter(range(3))})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="MixtureIndex"):
        MixtureDataset({"a": [1, 2]})[0]  # type: ignore[index]
    with pytest.raises(ConfigError, match="'size'"):
        MixtureStream({"a": range(3)}, 2, initial_weights="size")
    with pytest.raises(TypeError, match="num_batches"):
        len(MixtureBatchSampler({"a": range(3)}, 2))


def test_index_ranges_of_one_dataset() -> None:
    base = [f"item{i}" for i in range(30)]
    sampler = mixture_sampler(
        base, 4, arms={"easy": range(0, 10), "hard": [29, 28, 27]}, initial_weights="size", seed=1
    )
    batch = next(iter(sampler.loader(collate_fn=list)))
    for item, arm in zip(batch.data, batch.arms.tolist(), strict=True):
        index = int(item[4:])
        assert (index < 10) if arm == 0 else (index >= 27)
