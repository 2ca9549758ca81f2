"""AutoLRS, the published method (Jin et al., ICLR 2021), as tautune's ``classic`` mode.

Each stage, from a snapshot taken at its first step (in memory here; on disk in AutoLRS,
which changes nothing but speed), the controller tries ``k = 10`` LRs for ``τ' = τ/10``
steps each, restoring the snapshot before each one. A candidate's short curve is fit with
``L(t) = a·exp(b·t) + c`` (:class:`~tuner.forecast.ExponentialForecaster`: Nelder–Mead
over ``log(−b)``, ``a`` and ``c`` by least squares, outliers cleaned first) and read at
``t = τ``. The next candidate is the minimizer of a GP's lower confidence bound with
``κ = 1e6`` over log-LR, rebuilt from this stage's candidates only
(:func:`~tuner.bo.classic.autolrs_classic_suggest`). After ``k`` candidates the snapshot is
restored once more and the stage trains ``τ`` steps at the candidate of least forecast
loss. ``τ`` starts at ``tau`` and doubles each stage up to ``tau_max``. Warmup is the base
schedule's, before ``warmup_steps``.

Deviations, and why:

- ``tau`` defaults to 1000 as in the paper, but the benchmarks scale it to their short
  runs (``tau = total_steps / 16``); ``τ'`` stays ``τ/10`` and ``k`` stays 10.
- AutoLRS switches to validation loss once ``τ`` reaches 8000; tautune's workers report
  training loss and the benchmarks never reach ``τ = 8000``, so the training loss is kept.
- A candidate that diverged (a worker reported ``diverged``) is forecast as the worst loss
  of the stage plus a margin, so the GP still learns the region is bad.
- When ``total_steps`` is known, a stage that would not finish its exploration before the
  end is replaced by training to the end at the last stage's LR.
- A rank that restarts mid-stage (:class:`~tuner.controllers.restarts.RestartWatch`) ends
  the stage: it trains the best of the candidates before the one it left (or the stage's
  starting LR) for ``τ`` from the stage's snapshot, which on the restarted rank is its
  state at its first missed restore (:mod:`workers.explore`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from tuner.bo.classic import autolrs_classic_pick, autolrs_classic_suggest
from tuner.controllers.base import Plan
from tuner.controllers.staged import StagedLRController
from tuner.errors import ConfigError
from tuner.forecast import ExponentialForecaster
from tuner.records import Decision, DecisionKind


@dataclass(frozen=True)
class AutoLRSConfig:
    """Settings of :class:`AutoLRSClassic`; ``lr_min`` and ``lr_max`` are required."""

    lr_min: float
    lr_max: float
    tau: int = 1000
    tau_max: int = 8000
    k: int = 10
    warmup_steps: int = 0
    total_steps: int | None = None
    metric: str = "loss"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr_min) and math.isfinite(self.lr_max)):
            raise ConfigError(
                f"LR bounds must be finite, got lr_min={self.lr_min}, lr_max={self.lr_max}"
            )
        if not 0 < self.lr_min < self.lr_max:
            raise ConfigError(
                f"need 0 < lr_min < lr_max, got lr_min={self.lr_min}, lr_max={self.lr_max}"
            )
        if self.tau < 40 or self.tau_max < self.tau:
            raise ConfigError(f"need tau >= 40 (tau' = tau/10 >= 4) and tau_max >= tau: {self}")
        if self.k < 2 or self.warmup_steps < 0:
            raise ConfigError(f"need k >= 2 and warmup_steps >= 0, got k={self.k}")


class AutoLRSClassic(StagedLRController):
    """AutoLRS; see the module docstring."""

    method = "autolrs"

    def __init__(self, config: AutoLRSConfig) -> None:
        super().__init__(config.metric, None)
        self.config = config
        self.forecaster = ExponentialForecaster()
        self.tau = config.tau

    # -- contract -----------------------------------------------------------------------

    def propose(self, plan: Plan) -> Decision | None:
        if self.finished:
            return None
        c = self.config
        last = self.last
        if last is None or last["until"] is None or plan.horizon >= last["until"]:
            start = max(c.warmup_steps, plan.horizon + 1)
            return self._first_candidate(start, plan)
        until = last["until"]
        if last["role"] == "commit":
            if plan.last_step < until - max(1, self.tau // 10):
                return None
            return self._first_candidate(until, plan)
        if plan.last_step < until - 1:
            return None
        forecasts = self._forecasts()
        lrs = [cand["lr"] for cand in self.cands]
        end = until + self.tau if c.total_steps is None else min(until + self.tau, c.total_steps)
        if self._left_stage():
            # a rank restarted: the best candidate before the one it left, from the stage's
            # snapshot (on the restarted rank, the state of its first missed restore)
            done = forecasts[: len(lrs) - 1]
            best = autolrs_classic_pick(lrs[: len(done)], done) if done else self._fallback()
            return self._decision(plan, "commit", until, end, best, done, restore=True)
        if len(lrs) < c.k:
            lr = autolrs_classic_suggest(
                lrs, forecasts, bounds=(c.lr_min, c.lr_max), seed=c.seed + self.stage
            )
            return self._decision(
                plan, "probe", until, until + self.tau // 10, lr, forecasts, restore=True
            )
        best = autolrs_classic_pick(lrs, forecasts)
        return self._decision(plan, "commit", until, end, best, forecasts, restore=True)

    def detach_decision(self, plan: Plan) -> Decision | None:
        """Mid-stage, the candidate in force would be thrown away: restore the stage's
        snapshot and hold the LR of least forecast loss among the candidates that finished
        (none yet: the LR the stage started from). The decision is final."""
        last = self.last
        if last is None or last["role"] != "probe" or last["until"] is None:
            return None
        start = max(int(last["until"]), plan.horizon + 1)
        done = sum(1 for cand in self.cands if cand["probe"][1] <= self.last_step + 1)
        forecasts = self._forecasts()[:done]
        lr: float | None
        if forecasts:
            lr = autolrs_classic_pick([cand["lr"] for cand in self.cands[:done]], forecasts)
        else:
            lr = self.stages[-1]["lr"] if self.stages else None
        return self._rewind_hold(plan, start, lr, {"role": "final", "forecasts": forecasts})

    def accept(self, decision: Decision) -> None:
        seg = dict(decision.info["segment"])
        seg["until"] = decision.until_step
        if seg["role"] == "probe":
            if decision.snapshot:
                self._begin_stage(self.stage + 1, decision.from_step)
                self.cands = []
                if self.stages:
                    self.tau = min(self.tau * 2, self.config.tau_max)
            self.cands.append(
                {"lr": decision.lr, "probe": [decision.from_step, decision.until_step]}
            )
        elif seg["role"] == "commit":
            self.stages.append(
                {
                    "stage": self.stage,
                    "from": self.stage_start,
                    "tau": self.tau,
                    "lr": decision.lr,
                    "candidates": [cand["lr"] for cand in self.cands],
                    "forecasts": seg["forecasts"],
                }
            )
            self.stages = self.stages[-64:]
            self.curve.prune(decision.from_step)
        elif seg["role"] == "final":
            self.finished = True
        self.lr_now = decision.lr
        self.last = seg

    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), **self._staged_state(), "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_staged_state(state)
        try:
            self.tau = int(state["tau"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"AutoLRSClassic state is malformed: {e!r}") from None

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "tau": self.tau,
            "lr": self.lr_now,
            "restarts": self.restarts.count,
        }

    # -- helpers ------------------------------------------------------------------------

    def _first_candidate(self, start: int, plan: Plan) -> Decision:
        c = self.config
        tau = self.tau if not self.stages else min(self.tau * 2, c.tau_max)
        if c.total_steps is not None and start + c.k * (tau // 10) + tau // 10 > c.total_steps:
            lr = self.lr_now if self.lr_now is not None else math.sqrt(c.lr_min * c.lr_max)
            until = c.total_steps if c.total_steps > start else None
            return self._decision(plan, "final", start, until, lr, [], restore=False)
        lr = autolrs_classic_suggest(
            [], [], bounds=(c.lr_min, c.lr_max), seed=c.seed + self.stage + 1
        )
        decision = self._decision(plan, "probe", start, start + tau // 10, lr, [], restore=False)
        return replace(decision, snapshot=True)

    def _fallback(self) -> float:
        """The LR the stage started from: the last stage's, or the bounds' geometric mean."""
        if self.stages:
            return float(self.stages[-1]["lr"])
        return math.sqrt(self.config.lr_min * self.config.lr_max)

    def _forecasts(self) -> list[float]:
        out: list[float | None] = []
        for cand in self.cands:
            lo, hi = cand["probe"]
            steps, values = self.curve.window(lo, hi)
            if self.curve.diverged(lo, hi) or len(values) < 4:
                out.append(None)
                continue
            try:
                fit = self.forecaster.fit(steps, values)
                value = float(fit.predict(float(lo + self.tau)))  # tau steps after its start
            except ConfigError:
                value = values[-1]
            except OverflowError:
                value = math.inf
            out.append(value if math.isfinite(value) else None)
        finite = [v for v in out if v is not None]
        worst = max(finite) if finite else 0.0
        margin = max(abs(worst) * 0.1, 1e-6)
        return [worst + margin if v is None else v for v in out]

    def _decision(
        self,
        plan: Plan,
        role: str,
        start: int,
        until: int | None,
        lr: float,
        forecasts: list[float],
        *,
        restore: bool,
    ) -> Decision:
        kind = DecisionKind.EXPLORE if role == "probe" else DecisionKind.COMMIT
        info: dict[str, Any] = {"segment": {"role": role, "forecasts": forecasts}}
        if role == "final":
            info["final"] = True
        return Decision(
            stage=plan.next_stage,
            kind=kind,
            from_step=start,
            until_step=until,
            lr=lr,
            controller="autolrs",
            info=info,
            restore_from=self.stage_start if restore else None,
        )
