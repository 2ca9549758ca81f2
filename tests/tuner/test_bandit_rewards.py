"""Rewards by name, the per-arm report convention, and the floor/pinned weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.controllers.mixture import SECConfig
from tuner.controllers.mixture.signals import accumulate, arm_signals, report_version, stats
from tuner.controllers.mixture.weights import mixture, softmax, with_floor
from tuner.controllers.rewards import (
    REWARDS,
    ArmStats,
    absolute_progress,
    absolute_progress_per_sample,
    domain_loss,
    get_reward,
    intermediate_difficulty,
    learning_progress,
    mean_abs_advantage,
    signed_progress,
)
from tuner.errors import ConfigError
from tuner.records import Report

# -- rewards ------------------------------------------------------------------------------


def test_learning_progress_is_the_normalised_relative_decrease() -> None:
    rewards = learning_progress(
        {
            "a": ArmStats(loss_early=2.0, loss_late=1.8),  # d = 0.10, the largest
            "b": ArmStats(loss_early=1.0, loss_late=0.98),  # d = 0.02
            "c": ArmStats(loss_early=1.0, loss_late=1.05),  # d = -0.05: forgetting
            "d": ArmStats(loss_early=1.0),  # no second half: no reward
            "e": ArmStats(loss=1.0),
        }
    )
    assert rewards == pytest.approx({"a": 1.0, "b": 0.6, "c": 0.25})


def test_learning_progress_is_scale_free_and_flat_without_change() -> None:
    small = learning_progress(
        {
            "a": ArmStats(loss_early=1, loss_late=0.999),
            "b": ArmStats(loss_early=1, loss_late=0.9995),
        }
    )
    large = learning_progress(
        {"a": ArmStats(loss_early=1, loss_late=0.9), "b": ArmStats(loss_early=1, loss_late=0.95)}
    )
    assert small == pytest.approx({"a": 1.0, "b": 0.75})
    assert large == pytest.approx({"a": 1.0, "b": 0.75})
    flat = {"a": ArmStats(loss_early=2.0, loss_late=2.0), "b": ArmStats(loss_early=0, loss_late=0)}
    assert learning_progress(flat) == {"a": 0.5, "b": 0.5}
    assert learning_progress({}) == {}


def test_absolute_progress_counts_learning_and_forgetting_in_loss_units() -> None:
    stats = {
        "a": ArmStats(loss_early=2.0, loss_late=1.8),  # falls by 0.2: the most
        "b": ArmStats(loss_early=1.0, loss_late=0.95),  # falls by 0.05 (5%, as much as a)
        "c": ArmStats(loss_early=1.0, loss_late=1.1),  # rises by 0.1: forgotten
        "d": ArmStats(loss_early=4.2, loss_late=4.2),  # flat: junk at its entropy
        "e": ArmStats(loss_early=1.0),
    }
    assert absolute_progress(stats) == pytest.approx({"a": 1.0, "b": 0.25, "c": 0.5, "d": 0.0})
    assert signed_progress(stats) == pytest.approx({"a": 1.0, "b": 0.625, "c": 0.25, "d": 0.5})
    flat = {"a": ArmStats(loss_early=1, loss_late=1), "b": ArmStats(loss_early=2, loss_late=2)}
    assert absolute_progress(flat) == {"a": 0.5, "b": 0.5} == signed_progress(flat)
    assert absolute_progress({}) == {}


def test_absolute_progress_per_sample_is_the_value_of_one_more_example() -> None:
    stats = {
        "a": ArmStats(samples=90, loss_early=2.0, loss_late=1.8),  # 0.2 / 0.9
        "b": ArmStats(samples=10, loss_early=1.0, loss_late=0.95),  # 0.05 / 0.1: more per sample
        "c": ArmStats(samples=0, loss_early=1.0, loss_late=1.0),
    }
    assert absolute_progress_per_sample(stats) == pytest.approx({"a": 0.4444444, "b": 1.0, "c": 0})
    assert absolute_progress_per_sample({"a": ArmStats(loss_early=1, loss_late=0.5)}) == {}


def test_domain_loss_is_the_mean_loss() -> None:
    assert domain_loss({"a": ArmStats(loss=3.5), "b": ArmStats(advantage=0.2)}) == {"a": 3.5}


def test_advantage_reward_is_the_mean_absolute_advantage() -> None:
    got = mean_abs_advantage(
        {"a": ArmStats(advantage=0.3), "b": ArmStats(advantage=-0.2), "c": ArmStats(loss=1.0)}
    )
    assert got == {"a": 0.3, "b": 0.2}


@pytest.mark.parametrize(
    ("success", "reward"),
    [
        (0.5, 1.0),
        (0.0, 0.0),
        (1.0, 0.0),
        (0.25, 0.75),
        (0.75, 0.75),
        (0.1, 0.36),
        (1.3, 0.0),
        (-0.2, 0.0),
    ],
)
def test_intermediate_difficulty_prefers_success_near_half(success: float, reward: float) -> None:
    assert intermediate_difficulty({"x": ArmStats(success=success)}) == {"x": pytest.approx(reward)}


def test_intermediate_difficulty_skips_arms_without_a_rate() -> None:
    assert intermediate_difficulty({"x": ArmStats(loss=1.0)}) == {}


def test_rewards_by_name() -> None:
    assert set(REWARDS) == {
        "learning_progress",
        "absolute_progress",
        "absolute_progress_per_sample",
        "signed_progress",
        "loss",
        "advantage",
        "intermediate_difficulty",
    }
    assert get_reward("advantage").metric == "arm_adv"
    assert get_reward("loss")({"a": ArmStats(loss=2.0)}) == {"a": 2.0}
    with pytest.raises(ConfigError, match=r"'progress'.*choose one of"):
        get_reward("progress")


# -- the report convention ----------------------------------------------------------------


def test_arm_signals_parse_the_naming_convention() -> None:
    metrics = {
        "loss": 2.0,
        "arm_loss/web": 2.5,
        "arm_count/web": 12.0,
        "arm_adv/code/py": 0.3,  # an arm name with a slash
        "arm_loss/unknown": 9.0,  # not an arm of this controller
        "arm_weird/web": 1.0,  # not a signal
        "arm_loss": 1.0,
        "mixture_version": 3.0,
    }
    assert arm_signals(metrics, ("web", "code/py", "math")) == {
        "web": {"arm_loss": 2.5, "arm_count": 12.0},
        "code/py": {"arm_adv": 0.3},
    }


def test_accumulate_weights_by_count_and_splits_the_halves() -> None:
    acc: dict[str, list[float]] = {}
    accumulate(acc, {"a": {"arm_count": 3, "arm_loss": 2.0, "arm_adv": 0.5}}, late=False)
    accumulate(acc, {"a": {"arm_count": 1, "arm_loss": 1.0, "arm_success": 0.25}}, late=True)
    accumulate(acc, {"a": {"arm_loss": 4.0}}, late=True)  # no count: counts once
    accumulate(acc, {"a": {"arm_count": 0, "arm_loss": 100.0}}, late=True)  # drew nothing
    accumulate(acc, {"b": {"arm_success": 1.0}}, late=False)
    got = stats(acc)
    assert got["a"] == ArmStats(
        samples=4.0,
        loss=pytest.approx((3 * 2.0 + 1.0 + 4.0) / 5),
        loss_early=pytest.approx(2.0),
        loss_late=pytest.approx(2.5),
        advantage=pytest.approx(0.5),
        success=pytest.approx(0.25),
    )
    assert got["b"] == ArmStats(success=1.0)


@pytest.mark.parametrize(
    ("metrics", "version"),
    [({"mixture_version": 3.0}, 3), ({"mixture_version": 2.5}, None), ({"loss": 1.0}, None)],
)
def test_report_version(metrics: dict[str, float], version: int | None) -> None:
    assert report_version(Report(rank=0, step=1, metrics=metrics, ts=0.0)) == version


# -- weights ------------------------------------------------------------------------------


def test_with_floor_leaves_preferences_that_respect_it() -> None:
    prefs = np.array([0.4, 0.3, 0.2, 0.1])
    assert with_floor(prefs, 1.0, 0.05) == pytest.approx(prefs)
    assert with_floor(prefs, 0.5, 0.05) == pytest.approx(prefs / 2)


def test_with_floor_raises_small_arms_and_scales_the_rest() -> None:
    out = with_floor(np.array([1.0, 0.0, 0.0, 0.0]), 1.0, 0.025)
    assert out == pytest.approx([0.925, 0.025, 0.025, 0.025])
    out = with_floor(np.array([0.6, 0.39, 0.01]), 1.0, 0.1)
    assert out[2] == pytest.approx(0.1) and out[0] / out[1] == pytest.approx(0.6 / 0.39)
    assert math.fsum(out) == pytest.approx(1.0, abs=1e-12)
    assert with_floor(np.array([0.5, 0.5]), 1.0, 0.5) == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("prefs", [[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [-1.0, 1.0, 1.0]])
def test_with_floor_falls_back_to_even_shares(prefs: list[float]) -> None:
    assert with_floor(np.array(prefs), 0.9, 0.01) == pytest.approx([0.3, 0.3, 0.3])


def test_mixture_sets_pinned_arms_exactly() -> None:
    config = SECConfig(arms=("a", "b", "c", "d"), pinned={"b": 0.3, "d": 0.1})
    out = mixture(config, np.array([1.0, 0.0]))  # over the free arms a, c
    assert list(out) == ["a", "b", "c", "d"]
    assert out["b"] == 0.3 and out["d"] == 0.1
    assert out["c"] == pytest.approx(config.floor_weight) == pytest.approx(0.1 * 0.6 / 2)
    assert math.fsum(out.values()) == pytest.approx(1.0, abs=1e-12)
    everything = SECConfig(arms=("a", "b"), pinned={"a": 0.25, "b": 0.75})
    assert mixture(everything, np.array([])) == {"a": 0.25, "b": 0.75}


def test_softmax_does_not_overflow() -> None:
    assert softmax(np.array([1000.0, 1000.0, -1000.0])) == pytest.approx([0.5, 0.5, 0.0])
