"""Stage-wise search over log-LR, with a tuned peak and a final anneal.

Every τ steps the LR changes. During the search phase the stages probe around a center
``mu`` (log-LR) in ABBA blocks: ``mu+δ, mu−δ, mu−δ, mu+δ``. Each stage is scored by the
relative decrease of the metric (default ``loss``) from the previous stage's tail to its
own tail (the second half of the stage, minus ``lead`` steps). After each block a weighted
least-squares fit of ``score ~ 1 + x_k + x_{k−1} + t`` over the last ``window`` stages
(``x`` = log-LR, ``t`` = stage index) estimates whether a larger LR helps: the ABBA order
makes ``x_k`` and ``x_{k−1}`` orthogonal and cancels linear trends in ``t``, so the
carry-over of the previous LR and the natural slow-down of training do not masquerade as
an LR effect. ``mu`` moves by ``δ`` when the slope's t-statistic exceeds 1, else ``δ``
shrinks; a stage whose loss rises by half backs off at once. When ``total_steps`` is known,
the last ``anneal_fraction`` of the run decays linearly from ``exp(mu)`` to ``final_lr``.

This is the skeleton's controller; the AutoLRS-style Bayesian optimizer builds on the same
contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuner.controllers.base import LRController, Plan
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

ABBA = (1.0, -1.0, -1.0, 1.0)


@dataclass(frozen=True)
class StagewiseConfig:
    """Settings of :class:`StagewiseLR`.

    Attributes:
        init_lr: LR the search starts from (plain, not log).
        lr_min, lr_max: Bounds of the search; default ``init_lr/100`` and ``init_lr*100``.
        tau: Stage length in optimizer steps.
        total_steps: Length of the run in optimizer steps; enables the final anneal.
        warmup_steps: Steps left to the base schedule before the first decision.
        anneal_fraction: Fraction of ``total_steps`` at the end that decays to ``final_lr``.
        final_lr: LR at the end of the anneal.
        step_factor: Initial probe size as a factor (``δ = ln step_factor``).
        min_step_factor: Smallest probe size the search shrinks to.
        window: Stages kept for the regression.
        metric: Reported metric to minimize.
        lead: Steps before a boundary at which the next decision is made (default τ/4).
    """

    init_lr: float
    lr_min: float | None = None
    lr_max: float | None = None
    tau: int = 100
    total_steps: int | None = None
    warmup_steps: int = 0
    anneal_fraction: float = 0.2
    final_lr: float = 0.0
    step_factor: float = 2.0
    min_step_factor: float = 1.15
    window: int = 12
    metric: str = "loss"
    lead: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.init_lr) or self.init_lr <= 0:
            raise ConfigError(f"init_lr must be a finite LR > 0, got {self.init_lr=}")
        if self.tau < 4:
            raise ConfigError(f"tau must be at least 4 optimizer steps, got {self.tau=}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ConfigError(f"total_steps must exceed warmup_steps, got {self.total_steps=}")
        if not 0 <= self.anneal_fraction < 1:
            raise ConfigError(f"anneal_fraction must be in [0, 1), got {self.anneal_fraction=}")
        if self.step_factor <= 1 or self.min_step_factor <= 1:
            raise ConfigError(f"step factors must be > 1, got {self.step_factor=}")
        if self.window < 4:
            raise ConfigError(f"window must hold at least 4 stages, got {self.window=}")
        lo, hi = self.bounds
        if not 0 < lo <= self.init_lr <= hi:
            raise ConfigError(
                f"need 0 < lr_min <= init_lr <= lr_max, got {lo=}, {self.init_lr=}, {hi=}"
            )
        if self.lead is not None and not 1 <= self.lead < self.tau // 2:
            raise ConfigError(f"lead must be in [1, tau/2), got {self.lead=}")

    @property
    def bounds(self) -> tuple[float, float]:
        lo = self.lr_min if self.lr_min is not None else self.init_lr / 100
        hi = self.lr_max if self.lr_max is not None else self.init_lr * 100
        return lo, hi

    @property
    def lead_steps(self) -> int:
        return self.lead if self.lead is not None else max(1, self.tau // 4)

    @property
    def anneal_start(self) -> int | None:
        if self.total_steps is None or self.anneal_fraction == 0:
            return None
        return self.total_steps - round(self.anneal_fraction * self.total_steps)


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
        if last is not None and max(plan.last_step, self.last_step) < last["until"] - c.lead_steps:
            return None
        start = last["until"] if last is not None else max(c.warmup_steps, plan.last_step + 1)
        start = max(start, plan.horizon + 1)
        if c.total_steps is not None and start >= c.total_steps:
            return None
        lo, hi = (math.log(b) for b in c.bounds)
        anneal = c.anneal_start
        index = last["stage"] + 1 if last is not None else 0
        if anneal is not None and start >= anneal and c.total_steps is not None:
            lr = math.exp(min(max(self.mu, lo), hi))
            return Decision(
                stage=index,
                kind=DecisionKind.COMMIT,
                from_step=start,
                until_step=c.total_steps,
                lr=lr,
                lr_end=min(c.final_lr, lr),
                controller="stagewise",
                info={"phase": "anneal", "center_lr": lr},
            )
        z = ABBA[index % len(ABBA)]
        x = min(max(self.mu + self.delta * z, lo), hi)
        until = start + c.tau
        for cap in (anneal, c.total_steps):
            if cap is not None:
                until = min(until, cap)
        return Decision(
            stage=index,
            kind=DecisionKind.EXPLORE,
            from_step=start,
            until_step=until,
            lr=math.exp(x),
            controller="stagewise",
            info={
                "phase": "search",
                "center_lr": math.exp(self.mu),
                "probe": z,
                "step_factor": math.exp(self.delta),
            },
        )

    def accept(self, decision: Decision) -> None:
        c = self.config
        if decision.info.get("phase") == "anneal":
            self.finished = True
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

    @property
    def done(self) -> bool:
        return self.finished

    def summary(self) -> dict[str, Any]:
        return {
            "center_lr": math.exp(self.mu),
            "step_factor": math.exp(self.delta),
            "stages": len(self.stages),
            "reports_seen": self.reports_seen,
            "finished": self.finished,
        }

    def state_dict(self) -> dict[str, Any]:
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
        try:
            self.config = StagewiseConfig(**state["config"])
            for name in (
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
            ):
                setattr(self, name, state[name])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a StagewiseLR state: {e}") from None

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
        se = math.sqrt(max(float(cov[1, 1]), 1e-30))
        tstat = float(coef[1]) / se
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
