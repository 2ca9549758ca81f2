"""Stage mechanics shared by every mixture bandit: the algorithms only learn and prefer.

Every ``tau`` steps a new stage starts. Its decision is proposed ``lead`` steps before the
current stage ends, once the reports show a step at or past ``until - lead``; the stage is
scored on the reports of its window ``[from_step, until_step - lead)``: the signals of each
arm are summed (:mod:`~tuner.controllers.mixture.signals`), the reward turns them into one
number per arm (:mod:`tuner.controllers.rewards`), and the algorithm updates its estimates
for the free arms (those not pinned). An arm without data in the window is not updated.
The next decision's weights are the algorithm's preferences with the floor applied and the
pinned arms set (:mod:`~tuner.controllers.mixture.weights`). Reports for a stage that come
in after it was scored are counted (``late_reports``) and dropped.

A subclass sets ``algorithm`` and ``config_type``, names its state vectors (one float per
free arm each) and implements :meth:`BanditMixture._update` and
:meth:`BanditMixture._preferences`.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np

from tuner.controllers.base import MixtureController, Plan, decide_at
from tuner.controllers.mixture import signals
from tuner.controllers.mixture.config import MixtureConfig
from tuner.controllers.mixture.state import check_state
from tuner.controllers.mixture.weights import mixture
from tuner.controllers.rewards import get_reward
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

log = logging.getLogger(__name__)

KEEP_STAGES = 4
"""Stage records kept in the state (the open ones and the newest scored ones)."""


class BanditMixture(MixtureController):
    """A mixture controller driven by a non-stationary bandit; see the module docstring."""

    algorithm: ClassVar[str] = ""
    config_type: ClassVar[type[MixtureConfig]] = MixtureConfig
    vector_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MixtureConfig) -> None:
        if type(config) is not self.config_type:
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_type.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.vectors = self._initial_vectors(config)
        self.stages: list[dict[str, Any]] = []  # oldest first, at most KEEP_STAGES
        self.updates = 0  # stages scored with at least one reward
        self.played: dict[str, float] = {}  # arm -> sum of weight x steps over stages played
        self._warned_no_signal = False
        self.reports_seen = 0
        self.last_step = -1
        self.late_reports = 0
        self.unattributed = 0
        self.last_rewards: dict[str, float] = {}
        self.finished = False

    def metrics(self) -> tuple[str, ...]:
        """The per-arm metric its reward reads, under any arm (the head warns when the
        first reports carry none)."""
        return (f"{get_reward(self.config.reward).metric}/*",) if self.config.free_arms else ()

    # -- what an algorithm implements -------------------------------------------------------

    def _initial_vectors(self, config: MixtureConfig) -> dict[str, np.ndarray]:
        """The state before any reward: zeros unless a subclass says otherwise."""
        return {name: np.zeros(len(config.free_arms)) for name in self.vector_names}

    @abstractmethod
    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        """Learn from one scored stage.

        Args:
            rewards: ``K_free`` rewards, NaN for free arms without data in the stage.
            shares: ``K_free`` weights the stage's decision gave the free arms, divided by
                the free mass (they sum to 1).
        """

    @abstractmethod
    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        """``K_free`` preferences (>= 0, sum 1) for the next stage. Must not mutate."""

    def _check_vectors(self, config: MixtureConfig, vectors: dict[str, np.ndarray]) -> None:
        """Raise :class:`ConfigError` if loaded vectors break the algorithm's invariants."""

    # -- contract -------------------------------------------------------------------------

    def observe(self, reports: Sequence[Report]) -> None:
        arms = self.config.arms
        for r in reports:
            self.reports_seen += 1
            self.last_step = max(self.last_step, r.step)
            found = signals.arm_signals(r.metrics, arms)
            if not found:
                continue
            stage = self._stage_of(r)
            if stage is None:
                self.unattributed += 1
            elif stage["scored"] or not stage["from"] <= r.step < stage["window_end"]:
                self.late_reports += 1
            else:
                late = r.step >= (stage["from"] + stage["window_end"]) // 2
                signals.accumulate(stage["sums"], found, late=late)
        self._score_ready()

    def propose(self, plan: Plan) -> Decision | None:
        c = self.config
        if self.finished:
            return None
        seen = max(plan.last_step, self.last_step)
        last = self.stages[-1] if self.stages else None
        if last is not None and seen < last["until"] - c.lead_steps:
            return None
        # Never decide the past: a late head starts the stage after the newest report.
        start = max(last["until"] if last is not None else c.warmup_steps, plan.horizon + 1)
        start = max(start, seen + 1)
        if c.total_steps is not None and start >= c.total_steps:
            return None
        until = start + c.tau
        if c.total_steps is not None:
            until = min(until, c.total_steps)
        index = last["stage"] + 1 if last is not None else 0
        averaging = self._averaging(start)
        if averaging:
            total = math.fsum(self.played.values())
            weights = {a: self.played.get(a, 0.0) / total for a in c.arms}
        elif not c.free_arms:  # every arm pinned: nothing to learn, the pins every stage
            weights = mixture(c, np.zeros(0))
        else:
            weights = mixture(c, self._preferences(np.random.default_rng([c.seed, index])))
        return Decision(
            stage=index,
            kind=DecisionKind.COMMIT,
            from_step=start,
            until_step=until,
            mixture=weights,
            controller=self.algorithm,
            decide_at=decide_at(start, until, c.lead_steps, c.total_steps),
            info={
                "algorithm": self.algorithm,
                "reward": c.reward,
                "scored_stages": self.updates,
                "last_rewards": dict(self.last_rewards),
                **({"averaged": True} if averaging else {}),
                # the run's last stage: workers do not wait for a decision after it
                **({"final": True} if c.total_steps is not None and until >= c.total_steps else {}),
            },
        )

    def _averaging(self, start: int) -> bool:
        """Whether a stage starting at ``start`` plays the average of the mixtures played."""
        c = self.config
        if not c.final_average or c.total_steps is None or not self.played:
            return False
        return start >= (1 - c.final_average) * c.total_steps

    def accept(self, decision: Decision) -> None:
        c = self.config
        if decision.mixture is None:
            raise ConfigError(
                f"a mixture controller cannot accept a decision without a mixture: {decision!r}"
            )
        until = decision.until_step
        if until is None:
            until = decision.from_step + c.tau
        record = {
            "stage": decision.stage,
            "version": decision.version,
            "from": decision.from_step,
            "until": until,
            "window_end": max(until - c.lead_steps, decision.from_step + 1),
            "weights": {a: float(w) for a, w in decision.mixture.items()},
            "sums": {},
            "scored": False,
        }
        # A newer version of a stage that has not started supersedes the older one.
        for old in (s for s in self.stages if s["stage"] >= decision.stage):
            self._play(old, -1.0)
        self.stages = [s for s in self.stages if s["stage"] < decision.stage]
        self.stages.append(record)
        self._play(record, 1.0)
        if c.total_steps is not None and until >= c.total_steps:
            self.finished = True
        self._score_ready()

    def _play(self, stage: dict[str, Any], sign: float) -> None:
        """Add (or take back) a stage's weights times its steps to :attr:`played`."""
        steps = stage["until"] - stage["from"]
        for arm, w in stage["weights"].items():
            self.played[arm] = max(self.played.get(arm, 0.0) + sign * w * steps, 0.0)

    @property
    def done(self) -> bool:
        return self.finished

    def summary(self) -> dict[str, Any]:
        last = self.stages[-1] if self.stages else None
        return {
            "algorithm": self.algorithm,
            "stage": last["stage"] if last is not None else None,
            "weights": dict(last["weights"]) if last is not None else None,
            "scored_stages": self.updates,
            "last_rewards": dict(self.last_rewards),
            "reports_seen": self.reports_seen,
            "late_reports": self.late_reports,
            "unattributed": self.unattributed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "config": _jsonable_config(self.config),
            "vectors": {name: [float(x) for x in v] for name, v in self.vectors.items()},
            "stages": copy.deepcopy(self.stages),
            "updates": self.updates,
            "reports_seen": self.reports_seen,
            "last_step": self.last_step,
            "late_reports": self.late_reports,
            "unattributed": self.unattributed,
            "last_rewards": dict(self.last_rewards),
            "played": dict(self.played),
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Check everything before changing anything: bad state leaves the controller as it was.
        config, loaded = check_state(self, state)
        self.config = config
        for name, value in loaded.items():
            setattr(self, name, value)

    # -- stages ---------------------------------------------------------------------------

    def _stage_of(self, report: Report) -> dict[str, Any] | None:
        version = signals.report_version(report)
        for stage in self.stages[::-1]:
            if version is not None and stage["version"] == version:
                return stage
            if version is None and stage["from"] <= report.step < stage["until"]:
                return stage
        return None

    def _score_ready(self) -> None:
        for s in self.stages:
            if not s["scored"] and self.last_step >= s["window_end"]:
                self._score(s)
        while len(self.stages) > KEEP_STAGES and self.stages[0]["scored"]:
            del self.stages[0]

    def _score(self, stage: dict[str, Any]) -> None:
        c = self.config
        stage["scored"] = True
        reward = get_reward(c.reward)
        raw = reward(signals.stats(stage["sums"]))
        rewards = {a: r * c.reward_scale for a, r in raw.items() if math.isfinite(r)}
        free = c.free_arms
        vec = np.array([rewards.get(a, math.nan) for a in free], dtype=float)
        if not free or np.isnan(vec).all():
            if stage["sums"] and not self._warned_no_signal:
                self._warned_no_signal = True
                log.warning(
                    "tautune %s: stage %s had per-arm reports but no %s/<arm> metric, which "
                    "reward %r reads; the mixture cannot learn. Report %s/<arm> (the sampler's "
                    "metrics() does for losses) or pick the reward your metrics feed "
                    "(arm_adv: advantage; arm_success: intermediate_difficulty).",
                    self.algorithm,
                    stage.get("stage"),
                    reward.metric,
                    c.reward,
                    reward.metric,
                )
            return
        shares = np.array([stage["weights"].get(a, 0.0) for a in free], dtype=float)
        shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(free), 1 / len(free))
        self._update(vec, shares)
        self.updates += 1
        self.last_rewards = rewards


def _jsonable_config(config: MixtureConfig) -> dict[str, Any]:
    out = asdict(config)
    out["arms"] = list(config.arms)
    out["pinned"] = dict(config.pinned)
    return out
