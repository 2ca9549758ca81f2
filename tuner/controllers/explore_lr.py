"""tautune's ``explore`` LR controller: paired candidates from a snapshot, scored after a
cool-down, then a linear decay to zero.

The run (``total_steps`` of work, exploration included) is laid out as: the base schedule
until ``first_stage`` (its warmup, or ``explore_at`` of the run), ``stages`` exploration
stages, and the decay. With the default ``shape="linear"`` the last stage's commit decays
linearly to ``final_lr`` at ``total_steps`` (linear decay to zero is the strongest simple
shape at a fixed budget: Bergsma et al., 2025); ``shape="wsd"`` holds each stage's LR and
decays over the last ``anneal_fraction``. Each stage:

1. **Snapshot** at the stage's first step (every rank, in memory: :mod:`workers.explore`).
2. **Probe** each candidate LR, in ascending order, for ``c`` steps from that snapshot. The
   snapshot restores the RNG and sampler, so every candidate trains on the same batches:
   candidates are compared on paired data, and the noise they share cancels.
3. **Cool down** each surviving candidate for ``a = tail_fraction * c`` steps, decaying
   linearly to ``tail_end_ratio`` of its LR, after snapshotting its pre-tail state. The score
   is the loss at the end of the tail. Raw short-horizon losses favour small LRs (their
   noise floor is low now; Wu et al., ICLR 2018); a cooled-down loss measures the progress
   an LR made, which the final decay cashes in (the split the LR-annealing scaling law of
   Tissue et al., 2024, makes between its two terms).
4. **Bracket**: when the best candidate is the smallest or the largest tried, one more is
   probed ×/÷4 beyond it (twice at most), so the optimum is bracketed.
5. **Commit**: the LR is the vertex of a parabola in log-LR through the best candidate and
   its neighbours (within their midpoints). Training restores the best candidate's
   pre-tail snapshot, so its ``c`` probe steps are kept, and goes on at that LR.

Early stop: a candidate whose probe ends above the stage's starting loss, or that diverged
(a worker reported ``diverged``, or the loss rose by half), gets no tail and is scored
worst; since candidates run in ascending order, every larger candidate is skipped.

Stage 0 tries ``init_lr`` ×{¼, 1, 4}. Later stages (``stages > 1``) take candidates from
one botorch GP over (log-LR, progress) carried across stages
(:class:`~tuner.bo.surrogate.LRSurrogate`), fit on scores centred per stage: the previous
LR's neighbours (×½, ×2), the GP's best LR at the new progress and the rest from LogEI, in
a trust region of ×/÷ ``trust``. In our benchmarks later stages did not pay for
themselves (short probes late in a run keep preferring the smallest candidate), so one
stage is the default.

Budget: the steps thrown away, ``(k-1)(c+a) + a`` per stage of ``k`` candidates, add up
to ``explore_budget`` of ``total_steps``; ``c`` follows from it. Without ``total_steps``
the stages repeat every ``stage_steps`` and nothing decays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuner.bo.surrogate import LRSurrogate
from tuner.controllers.base import Plan
from tuner.controllers.staged import StagedLRController
from tuner.errors import ConfigError
from tuner.records import RESTORABLE_METRIC, Decision, DecisionKind, Report

FIRST_STAGE_FACTORS = (1 / 4, 1.0, 4.0)
EXTEND = 4.0  # factor of a candidate added beyond the best one at the edge
MAX_EXTENSIONS = 2
MIN_PROBE = 6


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
        candidates: Candidates per stage after the first (the first has five).
        anneal_fraction: Final fraction of the run that decays linearly to ``final_lr``.
        final_lr: LR at the end of the run.
        tail_fraction: Cool-down length as a fraction of the probe length.
        tail_end_ratio: Where the cool-down ends, as a fraction of the candidate's LR.
        trust: Candidates of a stage lie within ``winner / trust`` and ``winner * trust``.
        min_decay: A commit decays linearly by the ratio of the last two stages' LRs,
            at most down to this fraction (1 keeps commits constant).
        stage_steps: Stage length when ``total_steps`` is not known.
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

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init_lr) and self.init_lr > 0):
            raise ConfigError(f"init_lr must be a finite LR > 0, got {self.init_lr=}")
        lo, hi = self.bounds
        if not 0 < lo <= self.init_lr <= hi:
            raise ConfigError(f"need 0 < lr_min <= init_lr <= lr_max, got {lo=}, {hi=}")
        if not 0 <= self.explore_at < 1:
            raise ConfigError(f"explore_at must be in [0, 1), got {self.explore_at=}")
        if not 0 < self.explore_budget < 1:
            raise ConfigError(f"explore_budget must be in (0, 1), got {self.explore_budget=}")
        if self.stages < 1 or self.candidates < 2:
            raise ConfigError(f"need stages >= 1 and candidates >= 2, got {self}")
        if not 0 <= self.anneal_fraction < 1 or not 0 < self.tail_fraction <= 2:
            raise ConfigError("anneal_fraction must be in [0, 1) and tail_fraction in (0, 2]")
        if not 0 <= self.tail_end_ratio <= 1 or self.trust <= 1 or self.final_lr < 0:
            raise ConfigError("need 0 <= tail_end_ratio <= 1, trust > 1 and final_lr >= 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps=}")
        if self.shape not in ("linear", "wsd"):
            raise ConfigError(f"shape must be 'linear' or 'wsd', got {self.shape=}")
        if self.total_steps is not None and self.probe_steps * 4 > self.stage_span:
            raise ConfigError(
                f"total_steps={self.total_steps} is too short for {self.stages} stages of "
                f"{self.candidates} candidates (probes of {self.probe_steps} steps); lower "
                "stages or candidates"
            )

    @property
    def bounds(self) -> tuple[float, float]:
        lo = self.lr_min if self.lr_min is not None else self.init_lr / 100
        hi = self.lr_max if self.lr_max is not None else self.init_lr * 100
        return lo, hi

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
    def tail_steps(self) -> int:
        return max(2, round(self.tail_fraction * self.probe_steps))


class ExploreLR(StagedLRController):
    """The default LR controller; see the module docstring for the method."""

    lr_now: float

    def __init__(self, config: ExploreConfig) -> None:
        super().__init__(config.metric, config.init_lr)
        self.config = config
        self.gp = LRSurrogate(config.bounds, use_progress=True, window=48, seed=config.seed)
        self.restorable: bool | None = None

    # -- contract -----------------------------------------------------------------------

    def observe(self, reports: Sequence[Report]) -> None:
        for r in reports:
            flag = r.metrics.get(RESTORABLE_METRIC, 0.0) > 0
            self.restorable = flag if self.restorable is None else self.restorable and flag
        super().observe(reports)

    def propose(self, plan: Plan) -> Decision | None:
        if self.finished:
            return None
        seg = self._next(plan)
        if seg is None:
            return None
        return self._decision(seg, plan)

    def accept(self, decision: Decision) -> None:
        seg = dict(decision.info["segment"])
        seg["from"], seg["until"] = decision.from_step, decision.until_step
        role = seg["role"]
        if role == "probe" and seg["cand"] == 0:
            self.stage, self.stage_start = seg["stage"], decision.from_step
            self.cands = [{"lr": lr, "status": "pending"} for lr in seg["cands"]]
        if role == "probe" and seg["cand"] == len(self.cands):
            self.cands.append({"lr": seg["lr"], "status": "pending", "added": True})
        if role in ("probe", "tail"):
            cand = self.cands[seg["cand"]]
            cand["status"] = role
            cand[role] = [decision.from_step, decision.until_step]
        self._record_scores(seg.get("scores", {}))
        if role == "commit":
            self._finish_stage(seg)
            self.finished = bool(seg.get("final"))
        if role == "anneal" or (role == "hold" and seg.get("final")):
            self.finished = True
        self.last = seg
        self.lr_now = decision.lr if decision.lr is not None else self.lr_now

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            **self._staged_state(),
            "gp": self.gp.state_dict(),
            "restorable": self.restorable,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_staged_state(state)
        try:
            self.gp.load_state_dict(state["gp"])
            self.restorable = state["restorable"]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"ExploreLR state is malformed: {e!r}") from None

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "lr": self.lr_now,
            "probe_steps": self.config.probe_steps,
            "winners": [s["lr"] for s in self.stages],
        }

    # -- planning -----------------------------------------------------------------------

    def _next(self, plan: Plan) -> dict[str, Any] | None:
        """The next segment to write, or None if it is not due yet."""
        c = self.config
        last = self.last
        if last is None:
            if self.restorable is None:
                return None  # wait for a first report: can the workers restore?
            start = max(c.first_stage, plan.horizon + 1)
            if self._base_in_trouble(plan):
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
            if plan.last_step < until - max(1, c.probe_steps):
                return None
            return self._stage_start(self.stage + 1, until, plan)
        if plan.last_step < until - 1:
            return None  # the next segment depends on this one's result
        scores = self._scores()
        j = last["cand"]
        if role == "probe" and not self._hopeless(j):
            return {"role": "tail", "cand": j, "scores": scores}
        nxt = j + 1
        stop = self._stop_after(j, scores)
        if nxt < len(self.cands) and not stop:
            return {"role": "probe", "cand": nxt, "scores": scores}
        extra = self._extension(scores, stop)
        if extra is not None:
            return {"role": "probe", "cand": len(self.cands), "lr": extra, "scores": scores}
        return {"role": "commit", "scores": scores}

    def _extension(self, scores: dict[str, float], blew_up: bool) -> float | None:
        """An LR beyond the edge when the best candidate is the smallest or the largest one
        tried (the optimum is not bracketed yet), at most ``MAX_EXTENSIONS`` per stage."""
        added = sum(1 for cand in self.cands if cand.get("added"))
        if added >= MAX_EXTENSIONS:
            return None
        win = self._winner_from(scores)
        if win is None:
            return None
        lo, hi = self.config.bounds
        lrs = [float(cand["lr"]) for cand in self.cands]
        if lrs[win] == min(lrs) and min(lrs) / EXTEND >= lo:
            return min(lrs) / EXTEND
        if lrs[win] == max(lrs) and not blew_up and max(lrs) * EXTEND <= hi:
            return max(lrs) * EXTEND
        return None

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
        if c.anneal_start is not None and start + 2 * c.probe_steps > c.anneal_start:
            return {"role": "anneal", "from": start}
        if self.restorable is False:
            return {"role": "hold", "from": start}
        cands = self._candidates(stage)
        return {"role": "probe", "cand": 0, "from": start, "stage": stage, "cands": cands}

    def _candidates(self, stage: int) -> list[float]:
        c = self.config
        lo, hi = c.bounds
        if stage == 0 or not self.stages:
            raw = [c.init_lr * f for f in FIRST_STAGE_FACTORS]
        else:
            last = self.stages[-1]
            win = float(last["lr"])
            box = (max(lo, win / c.trust), min(hi, win * c.trust))
            p = self._progress(stage)
            picks = [win / 2, win * 2]
            if len(self.gp) >= 4:
                picks.append(self.gp.best_lr(progress=p, bounds=box))
                extra = c.candidates - len(picks)
                if extra > 0 and box[0] < box[1]:
                    picks += self.gp.suggest(extra, progress=p, bounds=box)
            else:
                picks.append(win)
            raw = picks
        return _spread(sorted(min(max(x, lo), hi) for x in raw))

    def _progress(self, stage: int) -> float:
        return min(1.0, stage / max(1, self.config.stages))

    # -- scoring ------------------------------------------------------------------------

    def _start_loss(self) -> float | None:
        probe = self.cands[0].get("probe") if self.cands else None
        if probe is None:
            return None
        _, values = self.curve.window(probe[0], probe[0] + 2)
        return values[0] if values else None

    def _probe_score(self, j: int) -> float | None:
        probe = self.cands[j].get("probe")
        if probe is None:
            return None
        return self.curve.tail_mean(probe[0], probe[1], 1 / 3)

    def _hopeless(self, j: int) -> bool:
        probe = self.cands[j]["probe"]
        if self.curve.diverged(probe[0], probe[1]):
            return True
        start, score = self._start_loss(), self._probe_score(j)
        if start is None or score is None:
            return True
        return score > start + 0.5 * abs(start) or (j > 0 and score > start)

    def _scores(self) -> dict[str, float]:
        """Score of every candidate whose tail ended (or that was cut): the cooled-down loss."""
        out: dict[str, float] = {}
        finite: list[float] = []
        for j, cand in enumerate(self.cands):
            tail = cand.get("tail")
            if tail is None or self.curve.diverged(tail[0], tail[1]):
                continue
            value = self.curve.tail_mean(tail[0], tail[1], 1 / 4)
            if value is not None and math.isfinite(value):
                out[str(j)] = value
                finite.append(value)
        worst = max(finite) if finite else None
        for j, cand in enumerate(self.cands):
            if str(j) not in out and cand.get("probe") is not None and worst is not None:
                out[str(j)] = worst + max(abs(worst) * 0.05, 1e-6)  # cut: scored worst
        return out

    def _stop_after(self, j: int, scores: dict[str, float]) -> bool:
        """Candidates run in ascending LR: a larger one is pointless after a blow-up."""
        probe = self.cands[j].get("probe")
        tail = self.cands[j].get("tail")
        blew = probe is not None and self.curve.diverged(probe[0], (tail or probe)[1])
        if blew:
            return True
        start, score = self._start_loss(), self._probe_score(j)
        return start is not None and score is not None and score > start + 0.5 * abs(start)

    def _record_scores(self, scores: dict[str, float]) -> None:
        for key, value in scores.items():
            self.cands[int(key)]["score"] = value

    def _finish_stage(self, seg: dict[str, Any]) -> None:
        scores = [c["score"] for c in self.cands if "score" in c]
        if scores:
            mid = sum(scores) / len(scores)
            spread = (max(scores) - min(scores)) or 1.0
            p = self._progress(self.stage)
            for cand in self.cands:
                if "score" in cand:
                    self.gp.observe(cand["lr"], (cand["score"] - mid) / spread, progress=p)
        self.stages.append(
            {
                "stage": self.stage,
                "from": self.stage_start,
                "lr": seg["lr"],
                "lr_end": seg.get("lr_end"),
                "candidates": [c["lr"] for c in self.cands],
                "scores": [c.get("score") for c in self.cands],
            }
        )
        self.stages = self.stages[-64:]
        self.curve.prune(seg["from"])

    # -- decisions ----------------------------------------------------------------------

    def _decision(self, seg: dict[str, Any], plan: Plan) -> Decision:
        c = self.config
        role = seg["role"]
        start = seg.get("from")
        if start is None:
            assert self.last is not None and self.last["until"] is not None
            start = self.last["until"]
        info: dict[str, Any] = {"segment": seg}
        kw: dict[str, Any] = {}
        if role == "anneal":
            until = c.total_steps
            if until is None or until <= start + 1:
                until = None
            kind, lr = DecisionKind.COMMIT, self.lr_now
            kw["lr_end"] = c.final_lr if until is not None else None
            info["final"] = True
        elif role == "hold":  # workers that cannot restore: decay linearly, explore nothing
            kind, lr, until = DecisionKind.COMMIT, self.lr_now, c.total_steps
            if until is not None and until > start + 1:
                kw["lr_end"], info["final"], seg["final"] = c.final_lr, True, True
            else:
                until = None
        elif role == "probe":
            cands = seg["cands"] if seg["cand"] == 0 else [x["lr"] for x in self.cands]
            j = seg["cand"]
            lr = cands[j] if j < len(cands) else seg["lr"]
            kind, until = DecisionKind.EXPLORE, start + c.probe_steps
            if seg["cand"] == 0:
                kw["snapshot"] = True
            else:
                kw["restore_from"] = self.stage_start
        elif role == "tail":
            lr = self.cands[seg["cand"]]["lr"]
            kind, until = DecisionKind.EXPLORE, start + c.tail_steps
            kw["lr_end"], kw["snapshot"] = lr * c.tail_end_ratio, True
        else:  # commit
            win = self._winner_from(seg["scores"])
            if win is None:
                kind, lr = DecisionKind.COMMIT, self.lr_now
                kw["restore_from"] = self.stage_start
            else:
                kind, lr = DecisionKind.COMMIT, self._refined_lr(win, seg["scores"])
                kw["restore_from"] = self.cands[win]["tail"][0]
            seg["lr"] = lr
            nominal = c.first_stage + (self.stage + 1) * c.stage_span
            until = max(nominal, start + c.probe_steps)
            if c.anneal_start is not None and until + 2 * c.probe_steps > c.anneal_start:
                until = c.anneal_start
            kw["lr_end"] = seg["lr_end"] = lr * self._decay(lr)
            if c.shape == "linear" and c.total_steps is not None and self.stage + 1 >= c.stages:
                until, seg["final"] = c.total_steps, True
                kw["lr_end"] = seg["lr_end"] = c.final_lr
                info["final"] = True
        return Decision(
            stage=plan.next_stage,
            kind=kind,
            from_step=start,
            until_step=until,
            lr=lr,
            controller="explore",
            info=info,
            **kw,
        )

    def _decay(self, lr: float) -> float:
        """Ratio the commit decays by over its stage: the last ratio between stage winners
        (the LR the stages pick falls as training goes on), within [``min_decay``, 1]."""
        c = self.config
        if not self.stages or c.min_decay >= 1:
            return 1.0
        prev = float(self.stages[-1]["lr"])
        return min(1.0, max(c.min_decay, lr / prev))

    def _refined_lr(self, win: int, scores: dict[str, float]) -> float:
        """The winner's LR moved to the vertex of a parabola in log-LR through the winner
        and its scored neighbours, within their range: two candidates that tie put the
        stage's LR between them rather than on a coin flip. Training continues from the
        winner's kept steps at that LR."""
        lrs = [float(c["lr"]) for c in self.cands]
        lr = lrs[win]
        order = sorted(range(len(lrs)), key=lrs.__getitem__)
        pos = order.index(win)
        if not 0 < pos < len(order) - 1:
            return lr
        trio = (order[pos - 1], win, order[pos + 1])
        if any(str(j) not in scores for j in trio):
            return lr
        x = [math.log(lrs[j]) for j in trio]
        y = [scores[str(j)] for j in trio]
        num = (x[1] - x[0]) ** 2 * (y[1] - y[2]) - (x[1] - x[2]) ** 2 * (y[1] - y[0])
        den = (x[1] - x[0]) * (y[1] - y[2]) - (x[1] - x[2]) * (y[1] - y[0])
        if den == 0 or not math.isfinite(num / den):
            return lr
        vertex = x[1] - 0.5 * num / den
        lo, hi = (x[0] + x[1]) / 2, (x[1] + x[2]) / 2
        return math.exp(min(max(vertex, lo), hi))

    def _winner_from(self, scores: dict[str, float]) -> int | None:
        scored = [
            (v, int(j)) for j, v in scores.items() if self.cands[int(j)].get("tail") is not None
        ]
        return min(scored)[1] if scored else None


def _spread(lrs: Sequence[float], factor: float = 1.25) -> list[float]:
    """Ascending LRs with near-duplicates (within ``factor``) dropped."""
    out: list[float] = []
    for lr in sorted(lrs):
        if not out or lr > out[-1] * factor:
            out.append(lr)
    return out
