"""Settings of the ``explore`` LR controller (:mod:`tuner.controllers.explore_lr`) and the
lengths that follow from them: where exploration starts, probe and tail steps."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.controllers.lr_search import lr_bounds
from tuner.errors import ConfigError

FIRST_STAGE_FACTORS = (1 / 4, 1.0, 4.0)
EXTEND = 4.0  # factor of a candidate added beyond the best one at the edge
MAX_EXTENSIONS = 2
MIN_PROBE = 6
MIN_REPORTS = 8
"""Reports a probe holds at least when workers report sparser than every step: 4 in each
half (the paired tests need 3) and, at half the probe, 4 in the cool-down."""


@dataclass(frozen=True)
class ExploreConfig:
    """Settings of :class:`ExploreLR`.

    Attributes:
        init_lr: Centre of the first stage's candidates.
        lr_min, lr_max: Search bounds; default ``init_lr/100`` and ``init_lr*100``.
        total_steps: Work steps of the run, exploration included.
        warmup_steps: Steps left to the base schedule (its warmup) before the first stage.
        explore_at: Fraction of ``total_steps`` trained on the base schedule before the
            first stage (at least ``warmup_steps``).
        explore_budget: Fraction of ``total_steps`` spent on steps that are not kept.
        stages: Exploration stages.
        shape: ``"linear"``: the last stage's commit decays linearly to ``final_lr`` at
            ``total_steps``; ``"wsd"``: stages hold their LR (decaying by the ratio of the
            last two winners, see ``min_decay``) and the last ``anneal_fraction`` decays.
        candidates: Candidates per stage after the first (the first has three).
        anneal_fraction: Final fraction of the run that decays linearly to ``final_lr``.
        final_lr: LR at the end of the run.
        tail_fraction: Cool-down length as a fraction of the probe length.
        tail_end_ratio: Where the cool-down ends, as a fraction of the candidate's LR.
        trust: Candidates of a stage lie within ``winner / trust`` and ``winner * trust``.
        min_decay: A commit decays linearly by the ratio of the last two stages' LRs,
            at most down to this fraction (1 keeps commits constant).
        stage_steps: Stage length when ``total_steps`` is not known.
        tie_t: Two candidates whose cool-downs differ by a paired t below this tie, and
            training goes on halfway between them (in log-LR), from the larger one's
            steps. Tested: in stage 0 a winner smaller than ``init_lr`` against
            ``init_lr`` (short probes favour small LRs), and a winner at the edge of the
            LRs tried against its nearest neighbour (then no LR beyond the edge is
            probed). A lead of at least this is clear: when the largest candidate leads
            the next one so, the smaller ones are not probed. 0 turns ties off (any lead
            is clear).
        prune_t: A candidate smaller than the best one scored so far stops halfway through
            its probe, with no cool-down, when its raw loss is above that candidate's by a
            paired t of at least this: a smaller LR gains less from a cool-down, so it
            cannot catch up. 0 turns the cut off.
        metric: Reported metric to minimize.
        seed: Seed of the GP fits and acquisition.
    """

    init_lr: float
    lr_min: float | None = None
    lr_max: float | None = None
    total_steps: int | None = None
    warmup_steps: int = 0
    explore_at: float = 0.0
    explore_budget: float = 0.1
    stages: int = 1
    shape: str = "linear"
    candidates: int = 4
    anneal_fraction: float = 0.2
    final_lr: float = 0.0
    tail_fraction: float = 0.5
    tail_end_ratio: float = 0.0
    trust: float = 4.0
    stage_steps: int = 1000
    min_decay: float = 0.25
    metric: str = "loss"
    seed: int = 0
    tie_t: float = 2.0
    prune_t: float = 3.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init_lr) and self.init_lr > 0):
            raise ConfigError(f"init_lr must be a finite LR > 0, got init_lr={self.init_lr}")
        lo, hi = self.bounds
        if not 0 < lo <= self.init_lr <= hi:
            raise ConfigError(f"need 0 < lr_min <= init_lr <= lr_max, got lr_min={lo}, lr_max={hi}")
        if not 0 <= self.explore_at < 1:
            raise ConfigError(f"explore_at must be in [0, 1), got explore_at={self.explore_at}")
        if not 0 < self.explore_budget < 1:
            raise ConfigError(
                f"explore_budget must be in (0, 1), got explore_budget={self.explore_budget}"
            )
        if self.stages < 1 or self.candidates < 2:
            raise ConfigError(f"need stages >= 1 and candidates >= 2, got {self}")
        if not 0 <= self.anneal_fraction < 1 or not 0 < self.tail_fraction <= 2:
            raise ConfigError("anneal_fraction must be in [0, 1) and tail_fraction in (0, 2]")
        if not 0 <= self.tail_end_ratio <= 1 or self.trust <= 1 or self.final_lr < 0:
            raise ConfigError("need 0 <= tail_end_ratio <= 1, trust > 1 and final_lr >= 0")
        if not 0 <= self.tie_t < math.inf:
            raise ConfigError(f"tie_t must be a finite t >= 0, got tie_t={self.tie_t}")
        if not 0 <= self.prune_t < math.inf:
            raise ConfigError(f"prune_t must be a finite t >= 0, got prune_t={self.prune_t}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got warmup_steps={self.warmup_steps}")
        if self.shape not in ("linear", "wsd"):
            raise ConfigError(f"shape must be 'linear' or 'wsd', got shape={self.shape}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got total_steps={self.total_steps}")
        if self.total_steps is not None and self.first_stage >= self.total_steps:
            raise ConfigError(
                f"warmup_steps={self.warmup_steps} and explore_at={self.explore_at} leave no "
                f"steps of total_steps={self.total_steps} to explore"
            )
        if self.total_steps is not None and self.probe_steps * 4 > self.stage_span:
            raise ConfigError(
                f"total_steps={self.total_steps} is too short for {self.stages} stages of "
                f"{self.candidates} candidates (probes of {self.probe_steps} steps); lower "
                "stages or candidates"
            )

    @property
    def bounds(self) -> tuple[float, float]:
        return lr_bounds(self.init_lr, self.lr_min, self.lr_max)

    @property
    def first_stage(self) -> int:
        """Where the first exploration stage starts."""
        late = round(self.explore_at * self.total_steps) if self.total_steps else 0
        return max(self.warmup_steps, late)

    @property
    def anneal_start(self) -> int | None:
        if self.total_steps is None:
            return None
        if self.shape == "linear":
            return self.total_steps
        return self.total_steps - round(self.anneal_fraction * self.total_steps)

    @property
    def stage_span(self) -> int:
        """Nominal work steps of one stage."""
        if self.total_steps is None or self.anneal_start is None:
            return self.stage_steps
        return (self.anneal_start - self.first_stage) // self.stages

    @property
    def probe_steps(self) -> int:
        """``c``: solves ``sum over stages of ((k-1)(1+f) + f) c = budget`` (f: tail)."""
        f = self.tail_fraction
        per_c = [
            (k - 1) * (1 + f) + f
            for k in [len(FIRST_STAGE_FACTORS) + 1] + [self.candidates] * (self.stages - 1)
        ]
        if self.total_steps is None:
            return max(MIN_PROBE, int(self.explore_budget * self.stage_steps / per_c[-1]))
        return max(MIN_PROBE, int(self.explore_budget * self.total_steps / sum(per_c)))

    @property
    def first_half(self) -> int:
        """Steps of a probe before the blow-up and dominance checks; the whole probe when
        halves would be shorter than ``MIN_PROBE``."""
        c = self.probe_steps
        return c // 2 if c >= 2 * MIN_PROBE else c

    @property
    def tail_steps(self) -> int:
        return max(2, round(self.tail_fraction * self.probe_steps))

    def lengths(self, every: int = 1) -> tuple[int, int, int]:
        """``(probe, first half, tail)`` steps when workers report every ``every`` steps.

        Every step (1): the budget's lengths. Sparser: at least :data:`MIN_REPORTS`
        reports per probe, and multiples of ``every``, so that every candidate is
        reported at the same offsets from the snapshot (on the same batches) and the
        paired tests have pairs. The budget is then exceeded where it must be.
        """
        if every <= 1:
            return self.probe_steps, self.first_half, self.tail_steps
        n = max(MIN_REPORTS, math.ceil(self.probe_steps / every))
        tail = max(MIN_REPORTS // 2, round(self.tail_fraction * n))
        return every * n, every * (n // 2), every * tail


def report_interval(steps: Sequence[int]) -> int:
    """How often workers report: the median gap between the last 17 reported steps
    (ascending, distinct); 1 with fewer than two."""
    recent = list(steps)[-17:]
    gaps = sorted(b - a for a, b in itertools.pairwise(recent) if b > a)
    return max(1, gaps[len(gaps) // 2]) if gaps else 1
