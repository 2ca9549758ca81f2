"""``explore`` for a population: one candidate per trial, at once, then every trial goes on
from the winner's state.

A population job runs P trials of the same training (``tune(population=P)``). Where
:class:`~tuner.controllers.explore_lr.ExploreLR` probes its candidates one after another
from one snapshot, this controller gives each trial one candidate for the same steps:

1. **Sync.** At the stage's first step trial 0 publishes its state and every other trial
   loads it (:attr:`~tuner.records.Decision.restore_peer`), so all trials start the stage
   from one state, RNG and data position included: the candidates are compared on the
   same batches, as the sequential probes are.
2. **Round.** Trial ``i`` probes candidate ``i`` for ``c`` steps, snapshots, and cools down
   for ``a`` steps (the lengths of :class:`~tuner.controllers.explore_config.ExploreConfig`,
   from the same budget). The first round's candidates are spaced evenly in log-LR around
   ``init_lr`` (:func:`first_round`: ×{¼, 1, 4} for three trials, ×{1/16 … 16} for five).
3. **Score** each candidate as ``explore`` does: the mean of the last quarter of its
   cool-down; a candidate that diverged, blew up (its probe ended half again above the
   stage's start loss, beyond the batch noise before the stage) or stalled (cooled down
   no lower than the start while another got below it) counts as unboundedly bad.
4. **Bracket.** When the best is the smallest or largest LR tried, every trial restores the
   stage's snapshot and another round probes P candidates beyond it (twice at most),
   unless it ties with its nearest neighbour (below).
5. **Commit.** The LR is the vertex of the parabola through the best candidate and its
   neighbours (:func:`~tuner.controllers.candidate_scores.parabola_lr`). **Ties**, as in
   ``explore``: two candidates whose cool-downs, paired step by step across their trials,
   differ by a t below ``tie_t`` put the LR halfway between them in log-LR, trained on
   from the larger one's steps. Two pairs are tested: a best candidate below ``init_lr``
   against ``init_lr``'s, and one at the edge against its nearest neighbour
   (:func:`~tuner.controllers.population_rounds.tie`). The winning trial
   restores its own pre-cool-down snapshot and publishes it; every other trial loads it.
   All trials then train the winner's ``c`` probe steps on, at that LR, decaying linearly
   to ``final_lr`` at ``total_steps``.

So a stage costs each trial ``c + a`` steps per round, of which ``a`` (the cool-down) are
thrown away on the winner's line; ``explore`` on one trial spends ``(k - 1)(c + a) + a``
for ``k`` candidates. The trials' total compute is larger, not smaller: what parallel
exploration buys is time, and more candidates per round.

Every trial must report: a round is scored once every trial has reported its last step,
so a trial that stops stalls the stage (its peers wait at the boundary, then train on
their base schedules). A trial one of whose ranks restarts during the rounds, or finds no
snapshot to restore (:class:`~tuner.controllers.restarts.RestartWatch`), has none of its
candidates scored from then on; it keeps getting the stage's phases (it replays the steps
it trains again, then goes on) and at the commit loads the winner's state like every other
trial, so it rejoins the population exactly. Workers that cannot restore get ``init_lr``
decayed linearly to the end, as ``explore`` does. States travel through Redis
(:mod:`trials.peer_states`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from tuner.controllers.advice import late_advice, unpaired_advice
from tuner.controllers.base import Plan, PopulationController
from tuner.controllers.curves import StepCurve
from tuner.controllers.explore_config import ExploreConfig, report_interval
from tuner.controllers.population_rounds import (
    beyond,
    first_round,
    lost_decision,
    phase_decision,
    pick,
    score_rounds,
    unpaired_trials,
)
from tuner.controllers.restarts import RestartWatch
from tuner.errors import ConfigError
from tuner.records import RESTORABLE_METRIC, Decision, Report

MAX_ROUNDS = 3
"""Rounds per stage at most: the first and two that bracket past an edge."""
SYNC_MARGIN = 32
"""Steps past the furthest trial's horizon at which the stage starts: trials that have no
decision yet keep claiming steps ahead while the head writes the stage's first decisions.
(In-process, where nothing claims ahead, the benchmark passes 0.)"""


class PopulationExplore(PopulationController):
    """See the module docstring."""

    name = "lr"

    def __init__(
        self, config: ExploreConfig, trials: int, *, sync_margin: int = SYNC_MARGIN
    ) -> None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
            raise ConfigError(f"a population needs at least 2 trials, got {trials=}")
        if sync_margin < 0:
            raise ConfigError(f"sync_margin must be >= 0 steps, got {sync_margin=}")
        self.config = config
        self.trials = trials
        self.sync_margin = sync_margin
        self.curves = [StepCurve(config.metric) for _ in range(trials)]
        self.restorable: list[bool | None] = [None] * trials
        self.base_lr: list[float] | None = None  # trial 0's [step, lr] before the stage
        self.warming_up: bool | None = None
        self.phase: dict[str, Any] | None = None  # what every trial is being given
        self.given = [0] * trials  # id of the last phase each trial's decision was stored
        self.rounds: list[dict[str, Any]] = []  # {"from", "tail", "until", "cands"}
        self.result: dict[str, Any] | None = None
        self.finished = False
        self.lost = [False] * trials  # went past a phase's start before it was given it
        self.restarts = [RestartWatch() for _ in range(trials)]
        self.stage_restarts = [0] * trials  # each watch's count when the stage began

    # -- contract -----------------------------------------------------------------------

    def observe(self, trial: int, reports: Sequence[Report]) -> None:
        self._check(trial)
        for r in reports:
            flag = r.metrics.get(RESTORABLE_METRIC, 0.0) > 0
            was = self.restorable[trial]
            self.restorable[trial] = flag if was is None else was and flag
            lr = r.metrics.get("lr")
            if trial == 0 and self.phase is None and lr is not None:
                if self.base_lr is not None and r.step > self.base_lr[0]:
                    self.warming_up = lr > self.base_lr[1] * (1 + 1e-9)
                if self.base_lr is None or r.step > self.base_lr[0]:
                    self.base_lr = [r.step, lr]
        self.restarts[trial].observe(reports)
        self.curves[trial].add(reports)

    def propose(self, trial: int, plan: Plan) -> Decision | None:
        self._check(trial)
        if self.lost[trial]:
            return None
        if self.phase is not None and self.given[trial] < self.phase["id"]:
            if plan.horizon >= self.phase["from"]:
                return self._lost_decision(trial, plan)
            return self._decision(trial, self.phase, plan)
        live = [g for g, lost in zip(self.given, self.lost, strict=True) if not lost]
        if self.finished or not live or (self.phase is not None and min(live) < self.phase["id"]):
            return None
        nxt = self._next(plan)
        return None if nxt is None else self._decision(trial, nxt, plan)

    def accept(self, trial: int, decision: Decision) -> None:
        self._check(trial)
        seg = dict(decision.info["segment"])
        if seg["role"] == "lost":
            self.lost[trial] = True
        elif self.phase is None or seg["id"] > self.phase["id"]:
            self.phase = seg
            if seg["id"] == 1:
                self.stage_restarts = [w.count for w in self.restarts]
            if seg["role"] == "probe":
                self.rounds.append(
                    {
                        "from": seg["from"],
                        "tail": seg["until"],
                        "until": None,
                        "cands": seg["cands"],
                    }
                )
            elif seg["role"] == "tail":
                self.rounds[-1]["until"] = seg["until"]
            else:
                self.result = {
                    k: seg.get(k) for k in ("lr", "lr_end", "winner", "scores", "tie", "tie_t")
                }
                unpaired = unpaired_trials(self.curves, self.rounds, self._unscored())
                if unpaired:
                    self.result["unpaired"] = unpaired
                self.finished = True
                for curve in self.curves:
                    curve.prune(seg["from"])
        self.given[trial] = seg["id"]

    def detach_decision(self, trial: int, plan: Plan) -> Decision | None:
        """Mid-stage, the candidate in force would be thrown away: commit the best
        candidate of the rounds every trial has finished (the winner publishes its state
        before its cool-down, the others load it), or, with none, send every trial back to
        the stage's start at ``init_lr``; either way decaying to the end, as the stage's
        commit would. Every trial gets the same commit, from the same step."""
        if self.phase is None or self.lost[trial]:
            return None
        if self.phase.get("detached"):  # the commit was decided for another trial
            return (
                self._decision(trial, self.phase, plan)
                if self.given[trial] < self.phase["id"]
                else None
            )
        if self.finished:
            return None
        through = self._live_through(plan)
        done = [r for r in self.rounds if r["until"] is not None and through >= r["until"] - 1]
        start = max(max(plan.peers_horizon or (plan.horizon,)) + 1, self.phase["until"] or 0)
        scored = score_rounds(self.curves, done, self._unscored())
        chosen = pick(self.curves, done, scored, self.config)
        seg: dict[str, Any] = {
            "id": self.phase["id"] + 1,
            "role": "commit",
            "from": start,
            "round": self.phase["round"],
            "every": self._every(),
            "scores": scored[1],
            "detached": True,
        }
        if chosen is not None:
            seg.update(self._picked(chosen))
        else:
            seg["lr"], seg["winner"] = self.config.init_lr, None
        return self._decision(trial, seg, plan)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "trials": self.trials,
            "curves": [c.state_dict() for c in self.curves],
            "restorable": self.restorable,
            "base_lr": self.base_lr,
            "warming_up": self.warming_up,
            "phase": self.phase,
            "given": self.given,
            "rounds": self.rounds,
            "result": self.result,
            "finished": self.finished,
            "lost": self.lost,
            "restarts": [w.state_dict() for w in self.restarts],
            "stage_restarts": self.stage_restarts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            if int(state["trials"]) != self.trials:
                raise ValueError(f"state of {state['trials']} trials, this job has {self.trials}")
            for curve, saved in zip(self.curves, state["curves"], strict=True):
                curve.load_state_dict(saved)
            self.restorable = [None if r is None else bool(r) for r in state["restorable"]]
            self.base_lr = state["base_lr"]
            self.warming_up = state["warming_up"]
            self.phase = state["phase"]
            self.given = [int(g) for g in state["given"]]
            self.rounds = list(state["rounds"])
            self.result = state["result"]
            self.finished = bool(state["finished"])
            self.lost = [bool(x) for x in state["lost"]]
            saved = state.get("restarts") or [None] * self.trials
            for watch, one in zip(self.restarts, saved, strict=True):
                watch.load_state_dict(one)
            self.stage_restarts = [int(x) for x in state.get("stage_restarts", [0] * self.trials)]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"PopulationExplore state is malformed: {e!r}") from None

    def summary(self) -> dict[str, Any]:
        lrs, scores, _ = self._scored()
        if self.result is not None and self.result.get("scores") is not None:
            scores = self.result["scores"]  # the curves are pruned once the stage is done
        return {
            "method": "explore",
            "trials": self.trials,
            "rounds": len(self.rounds),
            "candidates": lrs,
            "scores": [scores.get(str(j)) for j in range(len(lrs))],
            "lr": None if self.result is None else self.result["lr"],
            "winner": None if self.result is None else self.result["winner"],
            "tie": None if self.result is None else self.result.get("tie"),
            "lost": [j for j, lost in enumerate(self.lost) if lost],
            "unscored": [j for j, out in enumerate(self._unscored()) if out],
            "probe_steps": self.config.lengths(self._every())[0],
        }

    def advice(self) -> str | None:
        """What the stage says about the trials: that it could not start before the run's
        end, or that candidates did not begin at trial 0's loss at the stage's start
        (:func:`unpaired_trials`)."""
        late = None if self.phase is None else self.phase.get("late")
        if self.phase is not None and late is not None:
            c = self.config
            return late_advice(self.trials, late, self.phase["from"], c.total_steps, c.init_lr)
        unpaired = None if self.result is None else self.result.get("unpaired")
        if not unpaired:
            return None
        lrs = [float(x) for rnd in self.rounds for x in rnd["cands"]]
        what = "candidates did not begin at the loss trial 0 began the stage with"
        return unpaired_advice(what, lrs, unpaired, peers=True)

    @property
    def done(self) -> bool:
        return self.finished

    # -- planning -----------------------------------------------------------------------

    def _check(self, trial: int) -> int:
        if not 0 <= trial < self.trials:
            raise ConfigError(f"trial {trial} is not one of this job's {self.trials} trials")
        return trial

    def _live_through(self, plan: Plan) -> int:
        """The last step every trial whose candidates count has reported through: a lost
        trial is not waited for, nor is a restarted one, which may take minutes to come
        back and replay; it is given the phases it reaches, the commit included."""
        reported = plan.peers_last_step or (plan.last_step,)
        live = [r for r, out in zip(reported, self._unscored(), strict=False) if not out]
        return min(live) if live else max(reported)

    def _unscored(self) -> list[bool]:
        """Trials whose candidates do not count: lost ones, and those a rank of which
        restarted, or restored no snapshot, since the stage began
        (:class:`~tuner.controllers.restarts.RestartWatch`): their curves are no
        candidate's. A restarted trial still gets every phase (it replays, then goes on)
        and at the commit loads the winner's state, so it rejoins the others exactly."""
        started = self.phase is not None
        return [
            lost or (started and watch.count > began)
            for lost, watch, began in zip(
                self.lost, self.restarts, self.stage_restarts, strict=True
            )
        ]

    def _every(self) -> int:
        return int(self.phase.get("every", 1)) if self.phase is not None else 1

    def _next(self, plan: Plan) -> dict[str, Any] | None:
        """The phase after the current one, or None if it is not due yet."""
        c = self.config
        last = self.phase
        reported = plan.peers_last_step or (plan.last_step,)
        if last is None:
            if any(r is None for r in self.restorable) or len(reported) < self.trials:
                return None  # every trial must have reported: can they all restore?
            rising = self.warming_up or (self.warming_up is None and self.base_lr is not None)
            cap = c.total_steps / 4 if c.total_steps is not None else math.inf
            if rising and max(reported) < cap:
                return None
            ahead = max(plan.peers_horizon or (plan.horizon,))
            start = max(c.first_stage, ahead + 1 + self.sync_margin)
            every = report_interval(self.curves[0].window(0, start)[0])
            probe, _, tail = c.lengths(every)
            fits = c.total_steps is None or start + 2 * (probe + tail) <= c.total_steps
            if not all(self.restorable) or not fits:
                why = {"late": ahead} if all(self.restorable) else {}
                return {"id": 1, "role": "hold", "from": start, "lr": c.init_lr, **why}
            cands = first_round(c.init_lr, self.trials, c.bounds)
            return self._round(1, start, cands, every)
        if last["role"] == "probe":
            _, _, tail = c.lengths(self._every())
            return {
                **self._base(last),
                "role": "tail",
                "from": last["until"],
                "until": last["until"] + tail,
            }
        if last["role"] != "tail" or self._live_through(plan) < last["until"] - 1:
            return None
        return self._after_round(last)

    def _base(self, last: dict[str, Any]) -> dict[str, Any]:
        return {"id": last["id"] + 1, "round": last["round"], "every": last.get("every", 1)}

    def _round(self, pid: int, start: int, cands: list[float], every: int) -> dict[str, Any]:
        probe, _, _ = self.config.lengths(every)
        n = len(self.rounds)
        return {
            "id": pid,
            "role": "probe",
            "round": n,
            "from": start,
            "until": start + probe,
            "cands": cands,
            "every": every,
        }

    def _after_round(self, last: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        scored = self._scored()
        lrs, scores, _ = scored
        start = last["until"]
        chosen = pick(self.curves, self.rounds, scored, c)
        commit = {**self._base(last), "role": "commit", "from": start, "scores": scores}
        if chosen is None:  # nothing usable: every trial back to the stage's start, at init_lr
            return {**commit, "lr": c.init_lr, "winner": None}
        best = chosen["best"]
        order = sorted(range(len(lrs)), key=lrs.__getitem__)
        lo, hi = c.bounds
        edge = best in (order[0], order[-1]) and lrs[best] not in (lo, hi)
        probe, _, tail = c.lengths(self._every())
        room = c.total_steps is None or start + 2 * (probe + tail) <= c.total_steps
        if edge and chosen["tie"] is None and len(self.rounds) < MAX_ROUNDS and room:
            first = self.rounds[0]["cands"]
            ratio = (first[-1] / first[0]) ** (1 / (len(first) - 1))
            up = best == order[-1]
            cands = beyond(lrs[best], ratio if up else 1 / ratio, self.trials, c.bounds)
            return self._round(last["id"] + 1, start, sorted(cands), self._every())
        return {**commit, **self._picked(chosen)}

    def _picked(self, chosen: dict[str, Any]) -> dict[str, Any]:
        """The commit's fields for :func:`pick`'s result."""
        tied = chosen["tie"]
        return {
            "lr": chosen["lr"],
            "winner": list(divmod(chosen["win"], self.trials)),
            "tie": None if tied is None else list(divmod(tied, self.trials)),
            "tie_t": chosen["tie_t"],
        }

    def _scored(self) -> tuple[list[float], dict[str, float], set[int]]:
        return score_rounds(self.curves, self.rounds, self._unscored())

    def _lost_decision(self, trial: int, plan: Plan) -> Decision:
        assert self.phase is not None
        lr = float(self.result["lr"]) if self.result is not None else self.config.init_lr
        return lost_decision(self.config, self.phase["id"], lr, trial, plan)

    def _decision(self, trial: int, seg: dict[str, Any], plan: Plan) -> Decision:
        return phase_decision(self.config, self.rounds, trial, seg, plan)
