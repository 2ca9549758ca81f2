"""tautune's ``explore`` LR controller: paired candidates from a snapshot, scored after a
cool-down, then a linear decay to zero.

The run (``total_steps`` of work, exploration included) is laid out as: the base schedule
until ``first_stage`` (its warmup, or ``explore_at`` of the run), ``stages`` exploration
stages, and the decay. With the default ``shape="linear"`` the last stage's commit decays
linearly to ``final_lr`` at ``total_steps`` (linear decay to zero is the strongest simple
shape at a fixed budget: Bergsma et al., 2025); ``shape="wsd"`` holds each stage's LR and
decays over the last ``anneal_fraction``. Each stage:

1. **Snapshot** at the stage's first step (every rank, in memory: :mod:`workers.explore`).
2. **Probe** each candidate LR, in descending order, for ``c`` steps from that snapshot. The
   snapshot restores the RNG and sampler, so every candidate trains on the same batches:
   candidates are compared on paired data, and the noise they share cancels. Halfway
   through, a probe stops if a worker reported a divergence, or if it is *dominated*: its
   raw loss is above that of a larger candidate already scored by a paired t of
   ``prune_t`` (3). The cut is sound one way only: a smaller LR gains less from a
   cool-down (its noise floor is lower already), so a smaller LR that is behind before
   cooling stays behind after it. Going down from the largest candidate gives every later
   one a reference. And once the largest has clearly beaten the next one (their
   cool-downs differ by a paired t of ``tie_t``, or the next one was cut against it), the
   smaller ones are not probed at all: with the score unimodal in log-LR they could not
   win, nor be the winner's neighbours in the parabola.
3. **Cool down** each surviving candidate for ``a = tail_fraction * c`` steps, decaying
   linearly to ``tail_end_ratio`` of its LR, after snapshotting its pre-tail state. The score
   is the loss at the end of the tail. Raw short-horizon losses favour small LRs (their
   noise floor is low now; Wu et al., ICLR 2018); a cooled-down loss measures the progress
   an LR made, which the final decay cashes in (the split the LR-annealing scaling law of
   Tissue et al., 2024, makes between its two terms).
4. **Bracket**: when the best candidate is the smallest or the largest tried, one more is
   probed ×/÷4 beyond it (twice at most), so the optimum is bracketed, unless the best
   ties with its nearest neighbour (below).
5. **Commit**: the LR is the vertex of a parabola in log-LR through the best candidate and
   its neighbours (within their midpoints; a neighbour that blew up, or that cooled down
   no lower than the stage's start loss while another got below it, counts as infinitely
   bad, which puts the LR halfway to the other one). Training restores the best
   candidate's pre-tail snapshot, so its ``c`` probe steps are kept, and goes on at that
   LR. **Ties**: when the end of two candidates' cool-downs, which ran on the same
   batches, differ by a paired t below ``tie_t`` (2), training goes on halfway between
   them in log-LR, from the larger one's steps. Two pairs are tested: in stage 0 a winner
   smaller than ``init_lr`` against ``init_lr`` (short probes favour small LRs, so a small
   winner by a noise-sized margin is the likeliest wrong pick: charlm seed 11 picked
   4.3e-4 on a 0.007 lead and ended at 2.32), and a winner at the edge against its
   nearest neighbour. Keeping ``init_lr`` outright instead only paid when it was good:
   from 4x the centre LR it kept 6.9e-3 in 5 of 10 charlm seeds (median 2.173, against
   2.147 for the ties as they are).

Early stop: a candidate that diverged (a worker reported ``diverged``, or the end of its
probe is half again above the stage's starting loss, and above the losses reported before
the stage by more than their batch-to-batch scatter explains: 3 standard errors) gets no
tail and is scored worst; a dominated one gets no tail and scores its reference's score plus
the raw gap that cut it (a lower bound on its cooled score). A probe that only ends a little
above the start is not cut: the start is one batch's loss, and a language model's loss bumps
for a few steps after an LR jump that its cool-down recovers (charlm, seed 12: cutting them
picked 4.3e-4 and ended at 2.400; without the cut it picked 3.6e-3 and ended at 2.138).

The first stage waits for the base schedule's warmup: while the LR the workers report
(the agent adds it) still rises from one report to the next, it does not start (for a
quarter of the run at most), whether or not ``warmup_steps`` says so.

Stage 0 tries ``init_lr`` ×{¼, 1, 4}. Later stages (``stages > 1``) take candidates from
one botorch GP over (log-LR, progress) carried across stages
(:class:`~tuner.bo.surrogate.LRSurrogate`), fit on scores centred per stage: the previous
LR's neighbours (×½, ×2), the GP's best LR at the new progress and the rest from LogEI, in
a trust region of ×/÷ ``trust``. In our benchmarks later stages did not pay for
themselves (short probes late in a run keep preferring the smallest candidate), so one
stage is the default.

Restarts: a rank that restarts mid-stage resumes from its own checkpoint and holds none of
the stage's snapshots; the first restore it cannot do takes the snapshot from its current
state instead, and it says so (:mod:`workers.explore`). Its curve is no candidate's any
more, so once a restart or a missed restore is reported
(:class:`~tuner.controllers.restarts.RestartWatch`) the stage ends at its current segment:
every rank goes back to the stage's snapshot (the restarted one to its state at that first
miss) and decays from the best candidate scored before, as a commit does.

What one stage cannot fix: a probe of ``c + a`` steps answers "which LR is best for a run
this short", and that answer is biased in a direction that depends on the task. Measured
on held-out seeds: shorter probes, longer cool-downs and a denser first grid all raise the
pick; on the byte-level LM (AdamW) that helped (its short probes sometimes pick 3x too
low), on digits (SGD) and the NQM it hurt (their early probes pick about 2x too high). A
second stage a quarter into the run that lowers the LR on paired evidence took the NQM
from 1.97x to 1.24x the optimum and made both real tasks worse. So the defaults stay as
they are; see the benchmarks page. The decay shape has the same conflict: a fixed
inverse-time factor, ``η (1 - f) / (1 + f / d)`` over the fraction ``f`` of the decay,
takes the NQM's best peak from 1.41x the optimum (linear) to 1.29x (``d = 1``) and 1.16x
(``d = 1/4``), but costs charlm 0.023 to 0.064 nats and digits 0.003 to 0.005 at their
best peaks (medians of 10 and 12 held-out seeds), so linear stays.

Budget: the steps thrown away, at most ``(k-1)(c+a) + a`` per stage of ``k`` candidates,
add up to ``explore_budget`` of ``total_steps``; ``c`` follows from it. A cut candidate
throws away ``c/2`` steps instead of ``c+a``, so a stage usually spends less. Without
``total_steps`` the stages repeat every ``stage_steps`` and nothing decays.

Workers that report every N steps (a loop that logs every 10): a stage measures the gap
between the reports it has seen and makes its probes hold 8 reports, its halves and
cool-downs 4, in multiples of N so every candidate is reported at the same offsets
(:meth:`ExploreConfig.lengths`), over the budget where it must be. When it learns the
gap only from its first probe (no reports before the stage), it starts again from the
same snapshot with those lengths; when they do not fit the run, it gives up exploring
and decays from ``init_lr``, restored to the stage's snapshot. A stage none of whose
candidates could be scored does the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from tuner.bo.surrogate import LRSurrogate
from tuner.controllers import candidate_scores as scoring
from tuner.controllers.advice import sparse_advice, unpaired_advice
from tuner.controllers.base import Plan
from tuner.controllers.explore_config import ExploreConfig, report_interval
from tuner.controllers.explore_segments import (
    extension,
    finish_stage,
    segment_decision,
    sparse_restart,
    stage_candidates,
    stage_lr,
)
from tuner.controllers.staged import StagedLRController
from tuner.errors import ConfigError
from tuner.records import RESTORABLE_METRIC, Decision, Report

__all__ = ["ExploreConfig", "ExploreLR"]


class ExploreLR(StagedLRController):
    """The default LR controller; see the module docstring for the method."""

    method = "explore"
    lr_now: float

    def __init__(self, config: ExploreConfig) -> None:
        super().__init__(config.metric, config.init_lr)
        self.config = config
        self.gp = LRSurrogate(config.bounds, use_progress=True, window=48, seed=config.seed)
        self.restorable: bool | None = None
        self.every = 1  # how often workers report, as this stage's lengths assume
        self.base_lr: list[float] | None = None  # [step, lr] the base schedule last set
        # whether that LR was above the one reported before it (None: not compared yet)
        self.warming_up: bool | None = None

    # -- contract -----------------------------------------------------------------------

    def observe(self, reports: Sequence[Report]) -> None:
        for r in reports:
            flag = r.metrics.get(RESTORABLE_METRIC, 0.0) > 0
            self.restorable = flag if self.restorable is None else self.restorable and flag
            lr = r.metrics.get("lr")  # the agent adds the LR it applied at the step
            if self.last is None and lr is not None:
                if self.base_lr is not None and r.step > self.base_lr[0]:
                    self.warming_up = lr > self.base_lr[1] * (1 + 1e-9)
                if self.base_lr is None or r.step > self.base_lr[0]:
                    self.base_lr = [r.step, lr]
        super().observe(reports)

    def propose(self, plan: Plan) -> Decision | None:
        if self.finished:
            return None
        seg = self._next(plan)
        if seg is None:
            return None
        return segment_decision(self, seg, plan)

    def detach_decision(self, plan: Plan) -> Decision | None:
        """Mid-stage, the candidate in force would be thrown away: commit the best one
        cooled down so far as the stage's commit would (its steps kept, then the decay),
        or, with none yet, restore the stage's snapshot and go on at the LR the stage
        started from. Either way the decision is final."""
        last = self.last
        if last is None or last["role"] not in ("probe", "tail") or last["until"] is None:
            return None
        start = max(int(last["until"]), plan.horizon + 1)
        scores = self._scores()
        if scoring.winner(self.cands, scores) is not None:
            seg = {"role": "commit", "from": start, "scores": scores, "final": True}
            decision = segment_decision(self, seg, plan)
            info = {**decision.info, "final": True, "detached": True}
            if decision.until_step == self.config.total_steps:  # the run's last commit
                return replace(decision, info=info)
            seg["lr_end"] = None  # an earlier stage's commit: hold its LR from here on
            return replace(decision, until_step=None, lr_end=None, info=info)
        lr = stage_lr(self) if self.stages else None  # stage 0: the base schedule
        return self._rewind_hold(plan, start, lr, {"role": "detach", "from": start})

    def accept(self, decision: Decision) -> None:
        seg = dict(decision.info["segment"])
        seg["from"], seg["until"] = decision.from_step, decision.until_step
        role = seg["role"]
        if role == "probe" and seg["cand"] == 0 and seg.get("part") != 2:
            if not seg.get("restart"):  # a restart goes back to the same snapshot
                self._begin_stage(seg["stage"], decision.from_step)
            self.every = seg.get("every", self.every)
            self.cands = [{"lr": lr, "status": "pending"} for lr in seg["cands"]]
        if role == "probe" and seg["cand"] == len(self.cands) and seg.get("part") != 2:
            self.cands.append({"lr": seg["lr"], "status": "pending", "added": True})
        for k in seg.get("skipped", ()):
            self.cands[k]["status"] = "skipped"
        if "cut" in seg:
            cut = seg["cut"]
            self.cands[cut["cand"]]["pruned"] = {k: cut[k] for k in ("ref", "gap", "t")}
        if role in ("probe", "tail"):
            cand = self.cands[seg["cand"]]
            cand["status"] = role
            if seg.get("part") == 2:  # the second half of a probe: its window grows
                cand["probe"] = [cand["probe"][0], decision.until_step]
            else:
                cand[role] = [decision.from_step, decision.until_step]
        self._record_scores(seg.get("scores", {}))
        if role == "commit":
            finish_stage(self, seg)
            self.finished = bool(seg.get("final"))
        if role in ("anneal", "detach") or (role == "hold" and seg.get("final")):
            self.finished = True
        self.last = seg
        self.lr_now = decision.lr if decision.lr is not None else self.lr_now

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            **self._staged_state(),
            "gp": self.gp.state_dict(),
            "restorable": self.restorable,
            "every": self.every,
            "base_lr": self.base_lr,
            "warming_up": self.warming_up,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_staged_state(state)
        try:
            self.gp.load_state_dict(state["gp"])
            self.restorable = state["restorable"]
            # absent from states written before they existed
            self.every = int(state.get("every", 1))
            if self.every < 1:
                raise ValueError(f"every must be >= 1, got {self.every}")
            base = state.get("base_lr")
            self.base_lr = None if base is None else [int(base[0]), float(base[1])]
            rising = state.get("warming_up")
            self.warming_up = None if rising is None else bool(rising)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"ExploreLR state is malformed: {e!r}") from None

    def advice(self) -> str | None:
        """What the last stage that scored nothing for want of reports, or whose candidates
        did not start alike (their first losses differ from the stage's start loss), says
        about the workers."""
        sparse = next((s for s in reversed(self.stages) if s.get("too_sparse")), None)
        if sparse is not None:
            return sparse_advice(sparse, self.config.metric)
        stage = next((s for s in reversed(self.stages) if s.get("unpaired")), None)
        if stage is None:
            return None
        return unpaired_advice(
            f"stage {stage['stage']}: candidates restored to the stage's snapshot began at "
            f"another loss than the stage's start ({stage['start_loss']:.6g})",
            stage["candidates"],
            stage["unpaired"],
        )

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "lr": self.lr_now,
            "probe_steps": self.config.lengths(self.every)[0],
            "report_every": self.every,
            "winners": [s["lr"] for s in self.stages],
            "restarts": self.restarts.count,  # rank restarts and missed restores seen
        }

    # -- planning -----------------------------------------------------------------------

    def _next(self, plan: Plan) -> dict[str, Any] | None:
        """The next segment to write, or None if it is not due yet."""
        c = self.config
        last = self.last
        if last is None:
            if self.restorable is None:
                return None  # wait for a first report: can the workers restore?
            trouble = self._base_in_trouble(plan)
            # the base schedule's LR is still rising (its warmup is not over), or only one
            # report has said what it is
            rising = self.warming_up or (self.warming_up is None and self.base_lr is not None)
            if rising and not trouble and plan.last_step < self._warmup_cap():
                return None
            # the metric comes with fewer reports than the others (a validation loss every
            # N steps): wait until two say how often, or probes would be too short to hold it
            seen = self.curve.window(0, plan.last_step + 1)[0]
            sparse = len(seen) < 2 and plan.last_step > (seen[-1] if seen else -1)
            if sparse and not trouble and plan.last_step < self._warmup_cap():
                return None
            start = max(c.first_stage, plan.horizon + 1)
            if trouble:
                start = plan.horizon + 1  # do not wait for explore_at: rescue the run now
            return self._stage_start(0, start, plan)
        until = last["until"]
        if until is None or plan.horizon >= until:
            # Workers went past the segment without the next decision (a head outage):
            # what they did meanwhile is unknown, so start a fresh stage.
            if last["role"] == "anneal":
                return None
            return self._stage_start(self.stage + 1, plan.horizon + 1, plan)
        role = last["role"]
        if role in ("commit", "hold"):
            if plan.last_step < until - max(1, c.lengths(self.every)[0]):
                return None
            return self._stage_start(self.stage + 1, until, plan)
        if plan.last_step < until - 1:
            return None  # the next segment depends on this one's result
        if self._left_stage():
            # a rank restarted, or restored no snapshot, since the stage began: its reports
            # are no candidate's curve now, so the stage ends here (segment_decision)
            return {"role": "commit", "scores": self._recorded(), "abandoned": self.restarts.last}
        j, cut = last["cand"], None
        if role == "probe" and j == 0 and last.get("part") == 1 and not last.get("restart"):
            again = sparse_restart(self, last, until)
            if again is not None:
                return again
        if role == "probe" and last.get("part") == 1:
            # halfway: stop only on a reported divergence or dominance; the blow-up test
            # waits for the whole probe (an early bump after an LR jump often recovers)
            if not self.curve.diverged(last["from"], until):
                cut = self._dominated(j, last.get("ref"))
                if cut is None:
                    return {"role": "probe", "cand": j, "part": 2, "scores": self._scores()}
        elif role == "probe" and not self._hopeless(j):
            return {"role": "tail", "cand": j, "scores": self._scores()}
        cands = self.cands if cut is None else scoring.with_cut(self.cands, cut)
        scores = scoring.cooled_scores(self.curve, cands)
        nxt: dict[str, Any] = {"scores": scores} if cut is None else {"scores": scores, "cut": cut}
        if j + 1 < len(self.cands):
            if not scoring.clear_top(self.curve, cands, scores, self.config.tie_t):
                return {"role": "probe", "cand": j + 1, **nxt}
            nxt["skipped"] = list(range(j + 1, len(self.cands)))
        extra = extension(self, cands, scores)
        if extra is not None:
            return {"role": "probe", "cand": len(self.cands), "lr": extra, **nxt}
        return {"role": "commit", **nxt}

    def _warmup_cap(self) -> float:
        """The last step to wait for the base schedule's warmup at: a quarter of the run."""
        total = self.config.total_steps
        return total / 4 if total is not None else math.inf

    def _base_in_trouble(self, plan: Plan) -> bool:
        """Whether training on the base schedule, before the first stage, diverged or its
        loss rose by half over its first value."""
        if plan.last_step < 0:
            return False
        if self.curve.diverged(0, plan.last_step + 1):
            return True
        _, values = self.curve.window(0, plan.last_step + 1)
        if len(values) < 4:
            return False
        recent = sum(values[-3:]) / 3
        return recent > values[0] + 0.5 * abs(values[0])

    def _stage_start(self, stage: int, start: int, plan: Plan) -> dict[str, Any]:
        c = self.config
        every = report_interval(self.curve.window(0, start)[0])
        if c.anneal_start is not None and start + 2 * c.lengths(every)[0] > c.anneal_start:
            return {"role": "anneal", "from": start}
        if self.restorable is False:
            return {"role": "hold", "from": start}
        cands = stage_candidates(self, stage)
        seg = {"role": "probe", "cand": 0, "from": start, "stage": stage, "cands": cands}
        return seg if every == 1 else {**seg, "every": every}

    def _progress(self, stage: int) -> float:
        return min(1.0, stage / max(1, self.config.stages))

    # -- scoring (tuner.controllers.candidate_scores) ------------------------------------

    def _scores(self) -> dict[str, float]:
        return scoring.cooled_scores(self.curve, self.cands)

    def _reference(self, lr: float) -> int | None:
        if self.config.prune_t <= 0:
            return None
        return scoring.reference(self.cands, self._scores(), lr)

    def _dominated(self, j: int, ref: int | None) -> dict[str, Any] | None:
        if ref is None:
            return None
        cut = scoring.dominated(self.curve, self.cands, j, ref, self.config.prune_t)
        return None if cut is None else {"cand": j, **cut}

    def _hopeless(self, j: int) -> bool:
        """Whether candidate ``j`` gets no cool-down: it blew up or was not measured."""
        return scoring.blew_up(self.curve, self.cands, j) or not scoring.measured(
            self.curve, self.cands, j
        )

    def _tie(self, cands: list[dict[str, Any]], win: int) -> tuple[int | None, float | None]:
        """:func:`~tuner.controllers.candidate_scores.tie`, with ``init_lr`` in stage 0."""
        c = self.config
        init = c.init_lr if self.stage == 0 else None
        return scoring.tie(self.curve, cands, win, c.tie_t, init)

    def _recorded(self) -> dict[str, float]:
        """The scores recorded before the segment under way: none of its steps counted."""
        return {str(j): c["score"] for j, c in enumerate(self.cands) if "score" in c}

    def _record_scores(self, scores: dict[str, float]) -> None:
        for key, value in scores.items():
            self.cands[int(key)]["score"] = value
