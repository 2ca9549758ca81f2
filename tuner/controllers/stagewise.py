"""Stage-wise search over log-LR, with a tuned peak and a final anneal.

Every τ steps the LR changes. During the search phase the stages probe around a center
``mu`` (log-LR) in ABBA blocks: ``mu+δ, mu−δ, mu−δ, mu+δ``. Each stage is scored by the
relative decrease of the metric (default ``loss``) from the previous stage's tail to its
own tail (the second half of the stage, minus ``lead`` steps). After each block a weighted
least-squares fit of ``score ~ 1 + x_k + x_{k−1} + t`` over the last ``window`` stages
(``x`` = log-LR, ``t`` = stage index) estimates whether a larger LR helps: the ABBA order
makes ``x_k`` and ``x_{k−1}`` orthogonal and cancels linear trends in ``t``, so the
carry-over of the previous LR and the natural slow-down of training do not masquerade as
an LR effect. The LR effect that counts is the sustained one, the sum of the ``x_k`` and
``x_{k−1}`` slopes: a higher LR raises the loss at once (its noise floor) and pays most of
that back in the next stage, so the ``x_k`` slope alone is the short-horizon (greedy) view
that walks the LR down to its lower bound. ``mu`` moves by ``δ`` when that effect's
t-statistic exceeds 1, else ``δ`` shrinks; moves grow while they keep their direction, the
probes stay within ``step_factor``. A stage whose loss rises by half backs off at once and
starts the fit afresh. When ``total_steps`` is known,
the last ``anneal_fraction`` of the run decays linearly from ``exp(mu)`` to ``final_lr``.

This is the skeleton's controller; the AutoLRS-style Bayesian optimizer builds on the same
contract.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuner.controllers.base import LRController, Plan, decide_at
from tuner.controllers.lr_search import LRSearchConfig, anneal_decision, next_start, stage_until
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

ABBA = (1.0, -1.0, -1.0, 1.0)


@dataclass(frozen=True)
class StagewiseConfig(LRSearchConfig):
    """Settings of :class:`StagewiseLR` (see :class:`LRSearchConfig`); ``window`` is the
    stages kept for the regression, at least 4."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 4:
            raise ConfigError(f"window must hold at least 4 stages, got window={self.window}")


class StagewiseLR(LRController):
    """Stage-wise log-LR search; see the module docstring for the method."""

    def __init__(self, config: StagewiseConfig) -> None:
        self.config = config
        self.mu = math.log(config.init_lr)
        self.delta = math.log(config.step_factor)
        self.last_move = 0
        self.reports_seen = 0
        self.last_step = -1
        self.stages: list[dict[str, Any]] = []  # committed stages, oldest first (bounded)
        self.history: list[list[float]] = []  # [x_k, x_prev, t_k, score]
        self.pre: list[list[float]] = []  # (step, value) before the first stage
        self.prev_tail: float | None = None
        self.prev_x: float | None = None
        self.finished = False

    # -- contract -----------------------------------------------------------------------

    def observe(self, reports: Sequence[Report]) -> None:
        c = self.config
        for r in reports:
            self.reports_seen += 1
            self.last_step = max(self.last_step, r.step)
            value = r.metrics.get(c.metric)
            if value is None:
                continue
            if not self.stages:
                self.pre.append([r.step, value])
                del self.pre[: -4 * c.lead_steps]
                continue
            for s in self.stages:
                if s["tail_from"] <= r.step < s["tail_until"]:
                    s["sum"] += value
                    s["count"] += 1
        self._score_ready()

    def propose(self, plan: Plan) -> Decision | None:
        c = self.config
        if self.finished:
            return None
        last = self.stages[-1] if self.stages else None
        start = next_start(c, last, plan, self.last_step)
        if start is None:
            return None
        lo, hi = (math.log(b) for b in c.bounds)
        index = max(last["stage"] + 1 if last is not None else 0, plan.next_stage)
        anneal = anneal_decision(c, index, start, self._center_lr(), "stagewise")
        if anneal is not None:
            return anneal
        z = ABBA[index % len(ABBA)]
        probe = min(self.delta, math.log(c.step_factor))  # moves may grow; probes do not
        lr = c.clamp(math.exp(min(max(self.mu + probe * z, lo), hi)))
        until = stage_until(c, start)
        return Decision(
            stage=index,
            kind=DecisionKind.EXPLORE,
            from_step=start,
            until_step=until,
            lr=lr,
            controller="stagewise",
            decide_at=decide_at(start, until, c.lead_steps, c.total_steps),
            info={
                "phase": "search",
                "center_lr": self._center_lr(),
                "probe": z,
                "step_factor": math.exp(self.delta),
            },
        )

    def accept(self, decision: Decision) -> None:
        c = self.config
        if decision.info.get("phase") == "anneal" or (
            c.total_steps is not None
            and decision.until_step is not None
            and decision.until_step >= c.total_steps
        ):
            self.finished = True  # the run is covered to its end: nothing left to decide
        if self.prev_tail is None and not self.stages and self.pre:
            recent = [v for s, v in self.pre if s >= decision.from_step - c.tau // 2]
            self.prev_tail = float(np.mean(recent or [v for _, v in self.pre]))
        until = (
            decision.until_step if decision.until_step is not None else decision.from_step + c.tau
        )
        self.stages.append(
            {
                "stage": decision.stage,
                "from": decision.from_step,
                "until": until,
                "x": math.log(decision.lr) if decision.lr else self.mu,
                "probe_index": decision.stage % len(ABBA),
                "phase": decision.info.get("phase", "search"),
                "tail_from": decision.from_step + (until - decision.from_step) // 2,
                "tail_until": until - c.lead_steps,
                "sum": 0.0,
                "count": 0,
                "version": decision.version,
            }
        )
        self.pre = []
        self._score_ready()

    def _center_lr(self) -> float:
        lo, hi = self.config.bounds
        return min(max(math.exp(self.mu), lo), hi)  # exp(log(b)) may miss b by an ulp

    @property
    def done(self) -> bool:
        return self.finished

    def metrics(self) -> tuple[str, ...]:
        return (self.config.metric,)

    def summary(self) -> dict[str, Any]:
        return {
            "center_lr": self._center_lr(),
            "step_factor": math.exp(self.delta),
            "stages": len(self.stages),
            "reports_seen": self.reports_seen,
            "finished": self.finished,
        }

    def state_dict(self) -> dict[str, Any]:
        # A deep copy: the snapshot must not change as the controller goes on learning.
        return copy.deepcopy(self._state())

    def _state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "mu": self.mu,
            "delta": self.delta,
            "last_move": self.last_move,
            "reports_seen": self.reports_seen,
            "last_step": self.last_step,
            "stages": self.stages,
            "history": self.history,
            "pre": self.pre,
            "prev_tail": self.prev_tail,
            "prev_x": self.prev_x,
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Check everything before changing anything: a bad state leaves the controller as it was.
        try:
            config = StagewiseConfig(**state["config"])
            loaded = {name: copy.deepcopy(state[name]) for name in _FIELDS}
            _check_state(loaded)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"not a StagewiseLR state: {e!r}") from None
        self.config = config
        for name, value in loaded.items():
            setattr(self, name, value)

    # -- the search ---------------------------------------------------------------------

    def _score_ready(self) -> None:
        """Score every stage whose tail window has been fully reported, oldest first."""
        while True:
            s = next((s for s in self.stages if "score" not in s), None)
            if s is None or self.last_step < s["tail_until"]:
                return
            tail = s["sum"] / s["count"] if s["count"] else None
            score = None
            if tail is not None and self.prev_tail is not None and self.prev_tail != 0:
                score = (self.prev_tail - tail) / abs(self.prev_tail)
            s["score"] = score
            if score is not None and s["phase"] == "search":
                prev_x = self.prev_x if self.prev_x is not None else s["x"]
                self.history.append([s["x"], prev_x, float(s["stage"]), score])
                del self.history[: -self.config.window]
                if score < -0.5:  # the loss rose by half: back off now
                    self._move(-1)
                    # The blow-up is an outlier at a setting left behind: fit afresh, and
                    # do not score the recovery that follows against the blown-up tail.
                    self.history = []
                    tail = None
                    self.prev_tail = None
                elif s["probe_index"] == len(ABBA) - 1:
                    self._update()
            if tail is not None:
                self.prev_tail = tail
            self.prev_x = s["x"]
            while len(self.stages) > 3 and "score" in self.stages[0]:
                del self.stages[0]

    def _update(self) -> None:
        """Fit the window and move ``mu`` by ``δ`` if the LR slope is significant."""
        h = np.asarray(self.history, dtype=float)
        if len(h) < 4:
            return
        t = (h[:, 2] - h[:, 2].mean()) / max(h[:, 2].std(), 1.0)
        columns = [np.ones(len(h)), h[:, 0] - self.mu, h[:, 1] - self.mu]
        if len(h) >= 6:
            columns.append(t)
        X = np.stack(columns, axis=1)
        y = h[:, 3]
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        dof = len(h) - X.shape[1]
        if dof < 1:
            return
        resid = y - X @ coef
        sigma2 = float(resid @ resid) / dof
        cov = sigma2 * np.linalg.pinv(X.T @ X)
        se = math.sqrt(max(float(cov[1, 1] + cov[2, 2] + 2 * cov[1, 2]), 1e-30))
        tstat = float(coef[1] + coef[2]) / se
        if tstat > 1.0:
            self._move(+1)
        elif tstat < -1.0:
            self._move(-1)
        else:
            self.delta = max(self.delta * 0.7, math.log(self.config.min_step_factor))
            self.last_move = 0

    def _move(self, direction: int) -> None:
        lo, hi = (math.log(b) for b in self.config.bounds)
        self.mu = min(max(self.mu + direction * self.delta, lo), hi)
        if direction == self.last_move:
            self.delta = min(self.delta * 1.5, math.log(8.0))
        self.last_move = direction


_FIELDS = (
    "mu",
    "delta",
    "last_move",
    "reports_seen",
    "last_step",
    "stages",
    "history",
    "pre",
    "prev_tail",
    "prev_x",
    "finished",
)
_STAGE_KEYS = (
    "stage",
    "from",
    "until",
    "x",
    "probe_index",
    "phase",
    "tail_from",
    "tail_until",
    "sum",
    "count",
)


def _check_state(state: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` unless ``state`` has the shape ``StagewiseLR._state`` gives."""

    def bad(what: str) -> ConfigError:
        return ConfigError(f"not a StagewiseLR state: {what}")

    def number(name: str, value: Any, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"{name} must be a finite number, got {value!r}")
        if not math.isfinite(value):
            raise bad(f"{name} must be a finite number, got {value!r}")

    def integer(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"{name} must be an int, got {value!r}")

    for name in ("mu", "delta"):
        number(name, state[name])
    for name in ("prev_tail", "prev_x"):
        number(name, state[name], optional=True)
    for name in ("last_move", "reports_seen", "last_step"):
        integer(name, state[name])
    if state["last_move"] not in (-1, 0, 1):
        raise bad(f"last_move must be -1, 0 or 1, got {state['last_move']!r}")
    if not isinstance(state["finished"], bool):
        raise bad(f"finished must be a bool, got {state['finished']!r}")
    for name, width in (("history", 4), ("pre", 2)):
        rows = state[name]
        if not isinstance(rows, list) or any(
            not isinstance(row, list) or len(row) != width for row in rows
        ):
            raise bad(f"{name} must be a list of {width}-item lists, got {rows!r:.200}")
        for row in rows:
            for value in row:
                number(name, value)
    stages = state["stages"]
    if not isinstance(stages, list) or any(
        not isinstance(s, dict) or any(k not in s for k in _STAGE_KEYS) for s in stages
    ):
        raise bad(f"stages must be a list of stage records, got {stages!r:.200}")
