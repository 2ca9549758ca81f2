"""Rewards for the mixture bandits, by name: per-arm stage statistics in, per-arm rewards out.

A mixture controller sums what the workers reported about each arm over a stage into an
:class:`ArmStats` (how the reports carry per-arm signals is described in
:mod:`tuner.controllers.mixture`), then a reward turns the stats of all arms into one number
per arm, higher meaning "draw more of this arm". An arm the stage has no data on for the
reward's metric gets no reward (it is left out of the returned dict), never a made-up one.

- ``learning_progress`` (reads ``arm_loss``): relative decrease of the arm's loss from the
  first to the second half of the stage's window, ``d_a = (early - late) / |early|``,
  normalised over the arms of the stage to ``0.5 + 0.5 d_a / max_b |d_b|``, in ``[0, 1]``
  (0.5: no change, 1: the most progress of any arm).
- ``absolute_progress`` (reads ``arm_loss``): ``|early - late|`` in loss units over the
  largest among the arms, in ``[0, 1]`` (absolute learning progress: learning or
  forgetting; the reward of tautune's default mixture controller).
- ``absolute_progress_per_sample``: the same divided by the arm's share of the stage's
  samples (the marginal value of its data), in ``[0, 1]``.
- ``signed_progress``: ``learning_progress`` in loss units rather than relative ones.
- ``loss`` (reads ``arm_loss``): the arm's mean loss (ODM, Albalak et al. 2023: a domain
  with a high loss has much left to learn); in loss units, not bounded.
- ``advantage`` (reads ``arm_adv``): the arm's mean absolute advantage (SEC, Chen et al.
  2025, for RL post-training); ``>= 0``, in ``[0, 1]`` for rewards in ``[0, 1]``.
- ``intermediate_difficulty`` (reads ``arm_success``): ``4 s (1 - s)`` for success rate
  ``s``: 1 at ``s = 0.5``, 0 for buckets always or never solved (as in Prompt Curriculum
  Learning, which prefers prompts of intermediate difficulty); in ``[0, 1]``.

The bandits' default hyperparameters assume rewards of order 1; a controller's
``reward_scale`` multiplies the rewards before they reach the algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tuner.errors import ConfigError


@dataclass(frozen=True)
class ArmStats:
    """What one stage's reports say about one arm. ``None``: no report carried the metric.

    Means are weighted by the sample counts the reports carried (one per report without a
    count).

    Attributes:
        samples: Examples of the arm drawn in the stage's window (sum of ``arm_count``).
        loss: Mean of ``arm_loss`` over the window.
        loss_early: Mean of ``arm_loss`` over the first half of the window.
        loss_late: Mean of ``arm_loss`` over the second half of the window.
        advantage: Mean of ``arm_adv`` (mean |advantage| of the arm's samples).
        success: Mean of ``arm_success`` (success rate of the arm's samples, in ``[0, 1]``).
    """

    samples: float = 0.0
    loss: float | None = None
    loss_early: float | None = None
    loss_late: float | None = None
    advantage: float | None = None
    success: float | None = None


RewardFn = Callable[[Mapping[str, ArmStats]], dict[str, float]]


@dataclass(frozen=True)
class Reward:
    """A named reward: the function, and the report metric prefix it reads."""

    name: str
    fn: RewardFn
    metric: str

    def __call__(self, stats: Mapping[str, ArmStats]) -> dict[str, float]:
        return self.fn(stats)


def learning_progress(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """Normalised decrease of each arm's loss over the stage, in ``[0, 1]``.

    ``d_a = (early - late) / max(|early|, 1e-12)``; the rewards are ``0.5 + 0.5 d_a / D``
    with ``D = max_b |d_b|`` over the arms with both halves reported (all 0.5 if ``D = 0``).
    The normalisation makes the reward scale-free: the loss slows down over a run, and the
    bandit compares arms, not stages.
    """
    rel = {
        arm: (s.loss_early - s.loss_late) / max(abs(s.loss_early), 1e-12)
        for arm, s in stats.items()
        if s.loss_early is not None and s.loss_late is not None
    }
    scale = max((abs(d) for d in rel.values()), default=0.0)
    if scale == 0.0 or not math.isfinite(scale):
        return {arm: 0.5 for arm in rel}
    return {arm: 0.5 + 0.5 * d / scale for arm, d in rel.items()}


def absolute_progress(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """How much each arm's loss moved over the stage, either way, in loss units, in ``[0, 1]``.

    ``|early - late|`` over ``max_b |early_b - late_b|`` (all 0.5 if nothing moved). This
    is absolute learning progress (ALP; Portelas et al., CoRL 2019; Kanitscheider et al.,
    2021): a loss that falls is being learned, and one that rises is being forgotten, and
    both call for the arm. Loss units, not relative ones, because a target that averages
    domain losses gains from an arm in those units; an arm whose loss has flattened (junk
    at its entropy, or a domain already learned) earns nothing, however low its loss.
    """
    moved = {arm: abs(d) for arm, d in _changes(stats).items()}
    return _over_max(moved)


def absolute_progress_per_sample(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """:func:`absolute_progress` per unit of the arm's share of the stage's samples, in
    ``[0, 1]``: the marginal value of one more example of the arm. Shares below 1e-3 count
    as 1e-3, which bounds how much a rarely drawn arm's noise is amplified."""
    total = math.fsum(s.samples for s in stats.values())
    if total <= 0:
        return {}
    moved = {
        arm: abs(d) / max(stats[arm].samples / total, 1e-3) for arm, d in _changes(stats).items()
    }
    return _over_max(moved)


def signed_progress(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """:func:`learning_progress` in loss units: ``0.5 + 0.5 (early - late) / max_b |...|``,
    in ``[0, 1]``; a rising loss scores below 0.5."""
    change = _changes(stats)
    scale = max((abs(d) for d in change.values()), default=0.0)
    if scale == 0.0 or not math.isfinite(scale):
        return {arm: 0.5 for arm in change}
    return {arm: 0.5 + 0.5 * d / scale for arm, d in change.items()}


def _changes(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """``early - late`` loss of each arm with both halves of the stage reported."""
    return {
        arm: s.loss_early - s.loss_late
        for arm, s in stats.items()
        if s.loss_early is not None and s.loss_late is not None
    }


def _over_max(values: Mapping[str, float]) -> dict[str, float]:
    scale = max(values.values(), default=0.0)
    if scale == 0.0 or not math.isfinite(scale):
        return {arm: 0.5 for arm in values}
    return {arm: v / scale for arm, v in values.items()}


def domain_loss(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """Each arm's mean loss over the stage (ODM's reward), in loss units."""
    return {arm: s.loss for arm, s in stats.items() if s.loss is not None}


def mean_abs_advantage(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """Each arm's mean absolute advantage over the stage (SEC's reward), ``>= 0``."""
    return {arm: abs(s.advantage) for arm, s in stats.items() if s.advantage is not None}


def intermediate_difficulty(stats: Mapping[str, ArmStats]) -> dict[str, float]:
    """``4 s (1 - s)`` of each arm's success rate ``s`` (clipped to ``[0, 1]``), in ``[0, 1]``."""
    out = {}
    for arm, s in stats.items():
        if s.success is not None:
            rate = min(max(s.success, 0.0), 1.0)
            out[arm] = 4.0 * rate * (1.0 - rate)
    return out


REWARDS: Mapping[str, Reward] = {
    r.name: r
    for r in (
        Reward("learning_progress", learning_progress, "arm_loss"),
        Reward("loss", domain_loss, "arm_loss"),
        Reward("absolute_progress", absolute_progress, "arm_loss"),
        Reward("signed_progress", signed_progress, "arm_loss"),
        Reward("absolute_progress_per_sample", absolute_progress_per_sample, "arm_loss"),
        Reward("advantage", mean_abs_advantage, "arm_adv"),
        Reward("intermediate_difficulty", intermediate_difficulty, "arm_success"),
    )
}


def get_reward(name: str) -> Reward:
    """The reward called ``name``, or :class:`ConfigError` listing the known ones."""
    try:
        return REWARDS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}") from None
