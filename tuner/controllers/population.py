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

from tuner.controllers.base import Plan, PopulationController
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report


@dataclass(frozen=True)
class PopulationConfig:
    """Settings of :class:`PopulationLR` (steps are optimizer steps, LRs plain)."""

    init_lr: float
    trials: int = 4
    lr_min: float | None = None
    lr_max: float | None = None
    tau: int = 100
    total_steps: int | None = None
    warmup_steps: int = 0
    anneal_fraction: float = 0.2
    final_lr: float = 0.0
    step_factor: float = 2.0
    min_step_factor: float = 1.15
    window: int = 4
    metric: str = "loss"

    def __post_init__(self) -> None:
        if not math.isfinite(self.init_lr) or self.init_lr <= 0:
            raise ConfigError(f"init_lr must be a finite LR > 0, got {self.init_lr=}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 2:
            raise ConfigError(f"a population needs at least 2 trials, got {self.trials=}")
        if not isinstance(self.tau, int) or self.tau < 4:
            raise ConfigError(f"tau must be an int of at least 4 steps, got {self.tau=}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ConfigError(f"total_steps must exceed warmup_steps, got {self.total_steps=}")
        if not 0 <= self.anneal_fraction < 1:
            raise ConfigError(f"anneal_fraction must be in [0, 1), got {self.anneal_fraction=}")
        if not (self.step_factor > 1 and self.min_step_factor > 1):
            raise ConfigError(
                f"step factors must be > 1, got {self.step_factor=}, {self.min_step_factor=}"
            )
        if self.window < 1:
            raise ConfigError(f"window must be >= 1 stage, got {self.window=}")
        lo, hi = self.bounds
        if not 0 < lo <= self.init_lr <= hi:
            raise ConfigError(
                f"need 0 < lr_min <= init_lr <= lr_max, got {lo=}, {self.init_lr=}, {hi=}"
            )

    @property
    def bounds(self) -> tuple[float, float]:
        lo = self.lr_min if self.lr_min is not None else self.init_lr / 100
        hi = self.lr_max if self.lr_max is not None else self.init_lr * 100
        return lo, hi

    @property
    def lead(self) -> int:
        return max(1, self.tau // 4)

    @property
    def anneal_start(self) -> int | None:
        if self.total_steps is None or self.anneal_fraction == 0:
            return None
        return self.total_steps - round(self.anneal_fraction * self.total_steps)

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
                del t["pre"][: -self.config.lead * 4]
        self._score(trial)

    def propose(self, trial: int, plan: Plan) -> Decision | None:
        c = self.config
        t = self.trial_state[self._check(trial)]
        if t["finished"]:
            return None
        last = t["stages"][-1] if t["stages"] else None
        if last is not None and max(plan.last_step, t["last_step"]) < last["until"] - c.lead:
            return None
        start = last["until"] if last is not None else max(c.warmup_steps, plan.last_step + 1)
        start = max(start, plan.horizon + 1)
        if c.total_steps is not None and start >= c.total_steps:
            return None
        index = max(last["stage"] + 1 if last is not None else 0, plan.next_stage)
        lo, hi = c.bounds
        anneal = c.anneal_start
        if anneal is not None and start >= anneal and c.total_steps is not None:
            lr = min(max(math.exp(self.mu), lo), hi)
            return Decision(
                stage=index,
                kind=DecisionKind.COMMIT,
                from_step=start,
                until_step=c.total_steps,
                lr=lr,
                lr_end=min(c.final_lr, lr),
                controller="population",
                info={"phase": "anneal", "center_lr": lr, "trial": trial, "final": True},
            )
        lr = min(max(math.exp(self.mu + self.delta * c.offset(trial)), lo), hi)
        until = start + c.tau
        for cap in (anneal, c.total_steps):
            if cap is not None:
                until = min(until, cap)
        return Decision(
            stage=index,
            kind=DecisionKind.EXPLORE,
            from_step=start,
            until_step=until,
            lr=lr,
            controller="population",
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
                "tail_until": until - self.config.lead,
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
