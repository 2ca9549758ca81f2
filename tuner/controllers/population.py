"""Population LR search: P trials explore P learning rates around one center in parallel.

Trial ``i`` of ``P`` trains every stage at ``exp(mu + δ·z_i)`` with ``z`` spread evenly over
``[-1, 1]``, so each stage yields P scores at once instead of one. A trial keeps its offset,
so its score (the relative decrease of its loss from the previous stage's tail to this
one's) measures the sustained effect of its LR, carry-over included. After every stage the
scores of the last ``window`` stages are centred within each stage (removing what all
trials share: the stage's place in training) and regressed on log-LR; ``mu`` moves by ``δ``
towards the better side when the slope's t-statistic exceeds 1, else ``δ`` shrinks. When
``total_steps`` is known every trial anneals from ``exp(mu)`` to ``final_lr`` over the last
``anneal_fraction`` of the run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuner.controllers.base import Plan, PopulationController, decide_at
from tuner.controllers.lr_search import LRSearchConfig, anneal_decision, next_start, stage_until
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report


@dataclass(frozen=True)
class PopulationConfig(LRSearchConfig):
    """Settings of :class:`PopulationLR` (see :class:`LRSearchConfig`).

    Attributes:
        trials: P, the number of trials, at least 2.
        window: Stages (proposed around the current center) whose scores are averaged.
    """

    trials: int = 4
    window: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 2:
            raise ConfigError(f"a population needs at least 2 trials, got trials={self.trials}")
        if self.window < 1:
            raise ConfigError(f"window must be >= 1 stage, got window={self.window}")

    def offset(self, trial: int) -> float:
        """``z_trial`` in ``[-1, 1]``."""
        return -1.0 + 2.0 * trial / (self.trials - 1)


class PopulationLR(PopulationController):
    """See the module docstring."""

    def __init__(self, config: PopulationConfig) -> None:
        self.config = config
        self.mu = math.log(config.init_lr)
        self.delta = math.log(config.step_factor)
        self.moves: list[int] = []
        self.rows: list[list[Any]] = []  # [stage, trial, mu, z, score or None]
        self.trial_state: list[dict[str, Any]] = [
            {"stages": [], "prev_tail": None, "last_step": -1, "reports": 0, "finished": False}
            for _ in range(config.trials)
        ]
        self.updated_through = -1  # last stage whose scores moved the center

    # -- contract -----------------------------------------------------------------------

    def observe(self, trial: int, reports: Sequence[Report]) -> None:
        t = self.trial_state[self._check(trial)]
        for r in reports:
            t["reports"] += 1
            t["last_step"] = max(t["last_step"], r.step)
            value = r.metrics.get(self.config.metric)
            if value is None:
                continue
            for s in t["stages"]:
                if s["tail_from"] <= r.step < s["tail_until"]:
                    s["sum"] += value
                    s["count"] += 1
            if not t["stages"]:
                t.setdefault("pre", []).append(value)
                del t["pre"][: -self.config.lead_steps * 4]
        self._score(trial)

    def propose(self, trial: int, plan: Plan) -> Decision | None:
        c = self.config
        t = self.trial_state[self._check(trial)]
        if t["finished"]:
            return None
        last = t["stages"][-1] if t["stages"] else None
        start = next_start(c, last, plan, t["last_step"])
        if start is None:
            return None
        index = max(last["stage"] + 1 if last is not None else 0, plan.next_stage)
        anneal = anneal_decision(c, index, start, math.exp(self.mu), "population", trial=trial)
        if anneal is not None:
            return anneal
        lr = c.clamp(math.exp(self.mu + self.delta * c.offset(trial)))
        until = stage_until(c, start)
        return Decision(
            stage=index,
            kind=DecisionKind.EXPLORE,
            from_step=start,
            until_step=until,
            lr=lr,
            controller="population",
            decide_at=decide_at(start, until, c.lead_steps, c.total_steps),
            info={
                "phase": "search",
                "center_lr": math.exp(self.mu),
                "trial": trial,
                "offset": c.offset(trial),
                "step_factor": math.exp(self.delta),
            },
        )

    def accept(self, trial: int, decision: Decision) -> None:
        t = self.trial_state[self._check(trial)]
        if decision.info.get("phase") == "anneal":
            t["finished"] = True
        until = (
            decision.until_step
            if decision.until_step is not None
            else decision.from_step + self.config.tau
        )
        if t["prev_tail"] is None and t.get("pre"):
            t["prev_tail"] = float(np.mean(t["pre"]))
        t.pop("pre", None)
        t["stages"].append(
            {
                "stage": decision.stage,
                "from": decision.from_step,
                "until": until,
                "x": math.log(decision.lr) if decision.lr else self.mu,
                "mu": self.mu,
                "z": self.config.offset(trial),
                "phase": decision.info.get("phase", "search"),
                "tail_from": decision.from_step + (until - decision.from_step) // 2,
                "tail_until": until - self.config.lead_steps,
                "sum": 0.0,
                "count": 0,
            }
        )
        self._score(trial)

    @property
    def done(self) -> bool:
        return all(t["finished"] for t in self.trial_state)

    def summary(self) -> dict[str, Any]:
        return {
            "center_lr": math.exp(self.mu),
            "step_factor": math.exp(self.delta),
            "trials": self.config.trials,
            "reports_seen": sum(t["reports"] for t in self.trial_state),
            "finished": self.done,
        }

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "config": asdict(self.config),
                "mu": self.mu,
                "delta": self.delta,
                "moves": self.moves,
                "rows": self.rows,
                "trial_state": self.trial_state,
                "updated_through": self.updated_through,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            config = PopulationConfig(**state["config"])
            values = {
                k: copy.deepcopy(state[k])
                for k in ("mu", "delta", "moves", "rows", "trial_state", "updated_through")
            }
            if len(values["trial_state"]) != config.trials:
                raise ValueError("one state per trial expected")
            if not all(math.isfinite(float(values[k])) for k in ("mu", "delta")):
                raise ValueError("mu and delta must be finite")
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a PopulationLR state: {e}") from None
        self.config = config
        for k, v in values.items():
            setattr(self, k, v)

    # -- the search ---------------------------------------------------------------------

    def _check(self, trial: int) -> int:
        if not 0 <= trial < self.config.trials:
            raise ConfigError(f"trial must be in [0, {self.config.trials}), got {trial=}")
        return trial

    def _score(self, trial: int) -> None:
        t = self.trial_state[trial]
        for s in t["stages"]:
            if "score" in s or t["last_step"] < s["tail_until"]:
                continue
            tail = s["sum"] / s["count"] if s["count"] else None
            s["score"] = -tail if tail is not None else None  # lower loss is better
            if s["phase"] == "search":  # a None score: scored, but without a usable tail
                self.rows.append([s["stage"], trial, s["mu"], s["z"], s["score"]])
            if tail is not None:
                t["prev_tail"] = tail
        while len(t["stages"]) > 2 and "score" in t["stages"][0]:
            del t["stages"][0]
        self._update()

    def _update(self) -> None:
        """Move the center once every trial has scored a stage proposed around it.

        Scores are centred within each stage (removing what all trials share), averaged
        per trial over up to ``window`` such stages, and the center moves to the best
        trial's LR. A best trial at the edge of the spread keeps the step (and grows it if
        the move repeats the last direction); an interior best, or a reversal, shrinks it.
        """
        P = self.config.trials
        self.rows = [r for r in self.rows if r[2] == self.mu]  # only comparisons around mu
        by_stage: dict[int, dict[int, float]] = {}
        for stage, trial, _mu, _z, score in self.rows:
            if score is not None:
                by_stage.setdefault(int(stage), {})[int(trial)] = float(score)
        complete = sorted(k for k, v in by_stage.items() if len(v) == P)
        fresh = [k for k in complete if k > self.updated_through]
        if not fresh:
            return
        self.updated_through = fresh[-1]
        use = complete[-self.config.window :]
        centred = np.zeros(P)
        for stage in use:
            scores = np.asarray([by_stage[stage][i] for i in range(P)])
            centred += scores - scores.mean()
        best = int(np.argmax(centred))
        z = self.config.offset(best)
        if abs(z) < 1e-12:
            self.delta = max(self.delta * 0.7, math.log(self.config.min_step_factor))
            self.moves.append(0)
        else:
            direction = 1 if z > 0 else -1
            last = next((m for m in reversed(self.moves) if m != 0), 0)
            if last == -direction or abs(z) < 1.0:
                self.delta = max(self.delta * 0.7, math.log(self.config.min_step_factor))
            elif self.moves and self.moves[-1] == direction:
                self.delta = min(self.delta * 1.5, math.log(4.0))
            lo, hi = (math.log(b) for b in self.config.bounds)
            step = self.delta if abs(z) >= 1.0 else self.delta * abs(z)
            self.mu = min(max(self.mu + direction * step, lo), hi)
            self.moves.append(direction)
        del self.moves[:-4]
        self.rows = [r for r in self.rows if r[2] == self.mu]
