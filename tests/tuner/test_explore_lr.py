"""The default LR controller (explore from snapshots), driven in-process on the NQM."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import pytest

from tuner.bench.lr import NQMTrainable
from tuner.bench.lr_run import run_controller
from tuner.bench.nqm import NQM
from tuner.controllers import candidate_scores as scoring
from tuner.controllers.base import Plan
from tuner.controllers.explore_lr import ExploreConfig, ExploreLR
from tuner.controllers.explore_segments import extension, segment_decision
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

STEPS = 1200


class Recorder(ExploreLR):
    """Keeps every decision accepted, to check the protocol."""

    def __init__(self, config: ExploreConfig) -> None:
        super().__init__(config)
        self.accepted: list[Decision] = []

    def accept(self, decision: Decision) -> None:
        self.accepted.append(decision)
        super().accept(decision)


def _run(make: Any = Recorder, **kw: Any) -> tuple[Any, Any]:
    """``make(config)``'s run on the NQM from init 0.2."""
    cfg = ExploreConfig(init_lr=0.2, lr_min=0.005, lr_max=2.0, total_steps=STEPS, seed=0, **kw)
    ctl = make(cfg)
    result = run_controller(
        "explore",
        NQMTrainable(NQM(seed=0)),
        ctl,
        lambda s: 0.2,
        total_steps=STEPS,
        eval_every=100,
        seed=0,
    )
    return ctl, result


def _role(d: Decision) -> str:
    return str(d.info["segment"]["role"])


def test_a_stage_snapshots_probes_cools_down_and_keeps_the_winners_steps() -> None:
    ctl, result = _run(prune_t=0.0)
    d = ctl.accepted
    probes = [x for x in d if _role(x) == "probe" and x.info["segment"].get("part") != 2]
    tails = [x for x in d if _role(x) == "tail"]
    commits = [x for x in d if x.kind == DecisionKind.COMMIT]
    assert probes[0].snapshot and probes[0].restore_from is None
    stage_start = probes[0].from_step
    # every later probe restarts from the stage's snapshot, in descending LR order
    assert all(p.restore_from == stage_start for p in probes[1:])
    lrs = [p.lr for p in probes]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == len(lrs)
    # a probe runs in two halves (checked for a blow-up in between); the second goes on
    # from the first, at the same LR, with no snapshot or restore
    for first, second in itertools.pairwise(d):
        if _role(second) == "probe" and second.info["segment"].get("part") == 2:
            assert first.info["segment"].get("part") == 1 and second.lr == first.lr
            assert not second.snapshot and second.restore_from is None
    # a tail snapshots the candidate's pre-tail state and decays its LR
    for t in tails:
        assert t.snapshot and t.lr_end is not None and t.lr is not None and t.lr_end < t.lr
    assert len(tails) == len(probes)  # nothing blew up or was cut: every one cooled down
    # 0.8 beat 0.2 clearly, so 0.05 (smaller still) is not probed; 0.8 is at lr_max's edge
    assert lrs == [0.8, 0.2] and ctl.stages[0]["skipped"] == [2]
    # the commit restores one candidate's pre-tail snapshot: its probe steps are kept
    commit = commits[0]
    assert commit.restore_from in {t.from_step for t in tails}
    # decisions tile the run with no gap or overlap, up to the last step
    for a, b in itertools.pairwise(d):
        assert a.until_step == b.from_step
    assert d[-1].until_step == STEPS and ctl.done
    # the commit decays linearly to 0 at the end (default shape)
    assert d[-1].lr_end == 0.0
    # thrown away: the loser's probe and tail, and the winner's tail; within the budget
    c, a = ctl.config.probe_steps, ctl.config.tail_steps
    assert result.exploration_steps == (len(probes) - 1) * (c + a) + a
    assert result.exploration_steps <= ctl.config.explore_budget * STEPS


def test_a_smaller_candidate_behind_a_larger_one_is_cut_halfway() -> None:
    # On the NQM from init 0.2, 0.8 is far ahead of 0.2 and 0.05 after a few steps.
    full, full_result = _run(prune_t=0.0)
    cut, cut_result = _run()
    assert full.stages[0]["pruned"] == [] and cut.stages[0]["pruned"] == [1]
    probes = [x for x in cut.accepted if _role(x) == "probe"]
    halves = {x.lr: x.info["segment"].get("part") for x in probes}
    assert halves == {0.8: 2, 0.2: 1}  # only the largest ran its second half
    assert [x.lr for x in cut.accepted if _role(x) == "tail"] == [0.8]
    # the cut one scores its reference's score plus the raw gap: still behind it; and a
    # candidate cut against the largest is a clear loss, so 0.05 is skipped
    scores = cut.stages[0]["scores"]
    assert scores[0] < scores[1] and scores[2] is None and cut.stages[0]["skipped"] == [2]
    assert cut.stages[0]["lr"] == full.stages[0]["lr"]  # the same pick...
    c = cut.config
    assert cut_result.exploration_steps == c.first_half + c.tail_steps  # ...for less
    assert cut_result.exploration_steps < full_result.exploration_steps


def test_the_chosen_lr_is_between_the_best_candidates_neighbours() -> None:
    ctl, _ = _run(prune_t=0.0)
    stage = ctl.stages[0]
    scored = [(x, y) for x, y in zip(stage["candidates"], stage["scores"], strict=True) if y]
    ranked = sorted(scored)
    best = min(range(len(ranked)), key=lambda j: ranked[j][1])
    lo = ranked[max(best - 1, 0)][0]
    hi = ranked[min(best + 1, len(ranked) - 1)][0]
    assert lo <= stage["lr"] <= hi


def test_a_candidate_that_blew_up_gets_no_cool_down_and_the_smaller_ones_still_run() -> None:
    # On the NQM an LR above 2/max(h) = 2 diverges. Candidates are 12, 3 and 0.75.
    cfg = ExploreConfig(init_lr=3.0, lr_min=0.01, lr_max=64.0, total_steps=STEPS)
    ctl = Recorder(cfg)
    run_controller(
        "explore",
        NQMTrainable(NQM(seed=1)),
        ctl,
        lambda s: 0.5,
        total_steps=STEPS,
        eval_every=100,
        seed=1,
    )
    probes = [x.lr for x in ctl.accepted if _role(x) == "probe"]
    assert list(dict.fromkeys(probes))[:3] == [12.0, 3.0, 0.75]  # descending
    tails = [x.lr for x in ctl.accepted if _role(x) == "tail"]
    assert 12.0 not in tails and 3.0 not in tails  # the unstable ones got no cool-down
    assert ctl.stages[0]["lr"] < 2.0  # the stage trains at a stable LR


class _Exploding:
    """A run whose loss is NaN at LRs above 1 and falls slowly otherwise."""

    def __init__(self) -> None:
        self.loss = 2.0

    def step(self, lr: float) -> float:
        if lr > 1.0:
            return math.nan
        self.loss -= 0.001 * lr
        return self.loss

    def evaluate(self) -> float:
        return self.loss

    def save(self) -> float:
        return self.loss

    def load(self, state: Any) -> None:
        self.loss = float(state)


def test_a_probe_that_reports_a_divergence_stops_halfway() -> None:
    cfg = ExploreConfig(init_lr=0.5, lr_min=0.01, lr_max=8.0, total_steps=STEPS)
    ctl = Recorder(cfg)
    run_controller(
        "explore", _Exploding(), ctl, lambda s: 0.5, total_steps=STEPS, eval_every=100, seed=0
    )
    probes = [x for x in ctl.accepted if _role(x) == "probe"]
    parts = {x.lr: x.info["segment"].get("part") for x in probes}
    assert parts[2.0] == 1  # NaN from its first step: the second half never ran
    assert [x.lr for x in ctl.accepted if _role(x) == "tail"] == [0.5]
    # 0.125 is measured against the loss the stage started from, although the first probe
    # reported none, and is behind 0.5 halfway: cut too
    assert parts[0.125] == 1 and ctl.stages[0]["pruned"] == [2]
    # 0.5 won next to one that blew up: the LR goes halfway (in log) to its other neighbour
    assert ctl.stages[0]["lr"] == pytest.approx(0.25)


@pytest.mark.parametrize("split", [6, 18, 30, 45])  # in either half of a probe, in a tail
def test_state_round_trip_mid_stage_gives_the_same_decisions(split: int) -> None:
    cfg = ExploreConfig(init_lr=0.2, lr_min=0.005, lr_max=2.0, total_steps=STEPS, seed=3)
    a = ExploreLR(cfg)
    b: ExploreLR | None = None
    made: dict[str, list[Decision]] = {"a": [], "b": []}
    nqm = NQM(seed=3)
    for step in range(400):
        if step == split:
            b = ExploreLR(cfg)
            b.load_state_dict(a.state_dict())
        for name, ctl in (("a", a), ("b", b)):
            if ctl is None:
                continue
            while (d := ctl.propose(Plan(horizon=step - 1, last_step=step - 1))) is not None:
                stored = d.with_version(len(made[name]) + 1)
                made[name].append(stored)
                ctl.accept(stored)
        report = Report(rank=0, step=step, metrics={"loss": nqm.step(0.1), "restorable": 1.0})
        a.observe([report])
        if b is not None:
            b.observe([report])
    assert b is not None and b.reports_seen == a.reports_seen == 400
    after = [d for d in made["a"] if d.from_step >= split]
    assert len(after) >= 3  # the rest of the stage was decided after the split
    strip = [dataclasses.replace(d, version=0) for d in after]
    assert [dataclasses.replace(d, version=0) for d in made["b"]] == strip
    assert b.state_dict() == a.state_dict()


def test_waits_for_a_first_report_and_holds_without_restorable_workers() -> None:
    ctl = ExploreLR(ExploreConfig(init_lr=0.1, total_steps=1000))
    assert ctl.propose(Plan(horizon=-1, last_step=-1)) is None
    ctl.observe([Report(rank=0, step=0, metrics={"loss": 1.0})])  # no "restorable"
    d = ctl.propose(Plan(horizon=0, last_step=0))
    assert d is not None and not d.moves_state and d.kind == DecisionKind.COMMIT
    assert (d.lr, d.lr_end, d.until_step) == (0.1, 0.0, 1000)  # a plain linear decay
    ctl.accept(d.with_version(1))
    assert ctl.done and ctl.propose(Plan(horizon=5, last_step=5)) is None


@pytest.mark.parametrize(
    "kw",
    [
        {"init_lr": 0.0},
        {"init_lr": 1.0, "lr_min": 2.0},
        {"init_lr": 1.0, "explore_budget": 1.5},
        {"init_lr": 1.0, "shape": "cosine"},
        {"init_lr": 1.0, "total_steps": 50, "stages": 4},
        {"init_lr": 1.0, "tie_t": -1.0},
        {"init_lr": 1.0, "tie_t": float("nan")},
        {"init_lr": 1.0, "prune_t": -1.0},
        {"init_lr": 1.0, "prune_t": float("inf")},
    ],
)
def test_bad_settings_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ExploreConfig(**kw)


def test_malformed_state_is_refused() -> None:
    ctl = ExploreLR(ExploreConfig(init_lr=0.1, total_steps=1000))
    state = ctl.state_dict()
    del state["cands"]
    with pytest.raises(ConfigError, match="malformed"):
        ExploreLR(ExploreConfig(init_lr=0.1, total_steps=1000)).load_state_dict(state)


def test_a_diverging_base_schedule_starts_exploring_at_once() -> None:
    cfg = ExploreConfig(init_lr=0.1, total_steps=2000, explore_at=0.25)
    calm, troubled = ExploreLR(cfg), ExploreLR(cfg)
    for step in range(10):
        calm.observe(
            [Report(rank=0, step=step, metrics={"loss": 2.0 - 0.01 * step, "restorable": 1.0})]
        )
        troubled.observe(
            [Report(rank=0, step=step, metrics={"loss": 2.0 * 1.2**step, "restorable": 1.0})]
        )
    plan = Plan(horizon=9, last_step=9)
    waiting, rescue = calm.propose(plan), troubled.propose(plan)
    assert waiting is not None and waiting.from_step == 500  # explore_at * total_steps
    assert rescue is not None and rescue.from_step == 10 and rescue.snapshot


def _stage0(init_lr: float, tails: dict[float, list[float]]) -> ExploreLR:
    """An ExploreLR in stage 0 whose candidates' cool-downs reported ``tails``."""
    ctl = ExploreLR(ExploreConfig(init_lr=init_lr, total_steps=STEPS))
    ctl.stage, step = 0, 0
    for lr, values in tails.items():
        probe = [step, step + 4]
        tail = [probe[1], probe[1] + len(values)]
        ctl.cands.append({"lr": lr, "probe": probe, "tail": tail})
        reports = [Report(rank=0, step=s, metrics={"loss": 3.0}) for s in range(*probe)]
        reports += [
            Report(rank=0, step=tail[0] + k, metrics={"loss": v}) for k, v in enumerate(values)
        ]
        ctl.observe(reports)
        step = tail[1]
    return ctl


WOBBLE = [0.0, 0.04, -0.04, 0.03, -0.03, 0.02, -0.02, 0.01]
INIT_TAIL = [2.0 + w for w in WOBBLE]
# Lower at the end (the score) by 0.005, but the paired difference swings by 0.06: a tie.
SWING = [0.01, -0.02, 0.03, -0.04, 0.03, -0.04, 0.025, -0.035]
TIED_TAIL = [v + d for v, d in zip(INIT_TAIL, SWING, strict=True)]


WORSE_TAIL = [v + 0.3 for v in INIT_TAIL]
CLEAR_TAIL = [v - 0.05 for v in INIT_TAIL]  # 0.05 lower at every step: a clear win


def test_a_smaller_lr_must_beat_init_by_more_than_noise_to_replace_it() -> None:
    # 0.025 wins between 0.006 and init: only the init test applies
    ctl = _stage0(0.1, {0.006: WORSE_TAIL, 0.025: TIED_TAIL, 0.1: INIT_TAIL})
    other, t = ctl._tie(ctl.cands, 1)
    assert other == 2 and t is not None and abs(t) < 2
    ctl = _stage0(0.1, {0.006: WORSE_TAIL, 0.025: CLEAR_TAIL, 0.1: INIT_TAIL})
    other, t = ctl._tie(ctl.cands, 1)
    assert other is None and t is not None and t < -2


def test_a_larger_winner_a_later_stage_or_tie_t_0_needs_no_margin() -> None:
    ctl = _stage0(0.1, {0.1: INIT_TAIL, 0.4: TIED_TAIL, 1.6: WORSE_TAIL})
    assert ctl._tie(ctl.cands, 1) == (None, None)  # larger than init: the bias is against it
    ctl = _stage0(0.1, {0.006: WORSE_TAIL, 0.025: TIED_TAIL, 0.1: INIT_TAIL})
    ctl.stage = 1
    assert ctl._tie(ctl.cands, 1) == (None, None)
    off = ExploreLR(ExploreConfig(init_lr=0.1, total_steps=STEPS, tie_t=0.0))
    off.stage, off.cands, off.curve = 0, ctl.cands, ctl.curve
    assert off._tie(off.cands, 1) == (None, None)


def test_an_edge_winner_tied_with_its_neighbour_needs_no_probe_beyond_the_edge() -> None:
    tied = _stage0(0.1, {0.1: INIT_TAIL, 0.4: TIED_TAIL})
    scores = scoring.cooled_scores(tied.curve, tied.cands)
    assert scoring.winner(tied.cands, scores) == 1 and tied._tie(tied.cands, 1)[0] == 0
    assert extension(tied, tied.cands, scores) is None
    clear = _stage0(0.1, {0.1: INIT_TAIL, 0.4: CLEAR_TAIL})
    scores = scoring.cooled_scores(clear.curve, clear.cands)
    assert clear._tie(clear.cands, 1)[0] is None
    assert extension(clear, clear.cands, scores) == pytest.approx(1.6)


def test_a_tie_with_init_trains_halfway_between_from_inits_steps() -> None:
    ctl = _stage0(0.1, {0.006: WORSE_TAIL, 0.025: TIED_TAIL, 0.1: INIT_TAIL})
    end = ctl.cands[-1]["tail"][1]
    seg = {"role": "commit", "from": end, "scores": scoring.cooled_scores(ctl.curve, ctl.cands)}
    assert scoring.winner(ctl.cands, seg["scores"]) == 1  # 0.025 scores lower...
    d = segment_decision(ctl, seg, Plan(horizon=end - 1, last_step=end - 1))
    assert d.lr == pytest.approx(0.05)  # ...but ties with init: halfway, in log-LR
    assert d.restore_from == ctl.cands[2]["tail"][0]  # from init's kept probe steps
    assert seg["tie_lr"] == 0.1


def test_detach_in_a_later_stage_holds_its_best_candidate_or_the_previous_commit(
    drive_nqm: Any,
) -> None:
    cfg = ExploreConfig(init_lr=0.2, lr_min=0.005, lr_max=2.0, total_steps=STEPS, stages=3)

    def in_stage_1(role: str) -> Any:
        return lambda c: c.stage == 1 and c.last is not None and c.last["role"] == role

    # before any candidate of stage 1 cooled down: back to its snapshot, at the LR stage 0's
    # commit ended with
    ctl = ExploreLR(cfg)
    plan = drive_nqm(ctl, in_stage_1("probe"))
    hold = ctl.detach_decision(plan)
    assert hold is not None and hold.kind is DecisionKind.HOLD and hold.info["final"]
    assert hold.restore_from == ctl.stage_start and hold.until_step is None
    assert hold.lr == ctl.stages[0]["lr_end"] and hold.from_step == ctl.last["until"]
    ctl.accept(hold.with_version(99))
    assert ctl.done and ctl.propose(plan) is None
    # after one cooled down: commit it from its pre-tail state, held (stage 1 of 3 is not
    # the run's last commit, which would decay to the end)
    ctl = ExploreLR(cfg)
    plan = drive_nqm(ctl, lambda c: in_stage_1("probe")(c) and c.last["cand"] == 1)
    cooled = ctl.cands[0]["tail"][0]
    commit = ctl.detach_decision(plan)
    assert commit is not None and commit.kind is DecisionKind.COMMIT and commit.info["final"]
    assert commit.restore_from == cooled and commit.until_step is None and commit.lr_end is None
    ctl.accept(commit.with_version(99))
    assert ctl.done and ctl.stages[-1]["stage"] == 1 and ctl.stages[-1]["lr"] == commit.lr
    # at a stage boundary (a commit in force) there is nothing to undo: the default hold
    ctl = ExploreLR(cfg)
    plan = drive_nqm(ctl, lambda c: c.last is not None and c.last["role"] == "commit")
    assert ctl.detach_decision(plan) is None


class SparseRecorder(Recorder):
    """Sees a report only every ``every`` steps, as from a loop that logs every N steps."""

    def __init__(self, config: ExploreConfig, every: int) -> None:
        super().__init__(config)
        self.report_every = every

    def observe(self, reports: Any) -> None:
        super().observe([r for r in reports if r.step % self.report_every == 0])


def _run_sparse(every: int) -> SparseRecorder:
    ctl, _ = _run(lambda cfg: SparseRecorder(cfg, every))
    assert isinstance(ctl, SparseRecorder)
    return ctl


def test_sparse_reports_restart_the_stage_with_probes_long_enough_to_score() -> None:
    # Reports every 10 steps, probes of 24 (the budget's): too few reports to score or to
    # pair. Before, nothing was scored and the commit took the last (smallest) candidate.
    ctl = _run_sparse(10)
    d = ctl.accepted
    first = d[0]
    assert first.snapshot and _role(first) == "probe"
    restart = next(x for x in d if x.info["segment"].get("restart"))
    assert restart.restore_from == first.from_step and not restart.snapshot
    assert restart.from_step == first.until_step  # after the first half of the first probe
    later = d[d.index(restart) :]
    probes = [x for x in later if _role(x) == "probe" and x.info["segment"].get("part") != 2]
    tails = [x for x in later if _role(x) == "tail"]
    assert all(p.restore_from == first.from_step for p in probes)  # the same snapshot
    spans = {(x.until_step or 0) - x.from_step for x in later if _role(x) in ("probe", "tail")}
    assert all(s % 10 == 0 and s >= 40 for s in spans)  # 4+ reports each, same offsets
    assert tails and ctl.summary()["report_every"] == 10
    stage = ctl.stages[0]
    scored = [s for s in stage["scores"] if s is not None]
    # as with a report every step: 0.8 cools down, 0.2 is cut behind it, 0.05 is skipped
    assert len(scored) == 2 and stage["lr"] == 0.8 and stage["pruned"] == [1]
    assert d[-1].until_step == STEPS and d[-1].lr_end == 0.0 and ctl.done
    twin = ExploreLR(ctl.config)
    twin.load_state_dict(ctl.state_dict())
    assert twin.every == 10 and twin.state_dict() == ctl.state_dict()


def test_a_metric_sparser_than_the_reports_is_waited_for_and_probed_long_enough() -> None:
    # val_loss every 10 steps, loss every step: once the reports are past the only val_loss
    # so far, the first stage waits for the second one (the interval), so that its probes
    # hold enough of them (before, they had the every-step length and held one or none)
    cfg = ExploreConfig(init_lr=0.2, total_steps=STEPS, metric="val_loss")
    ctl = ExploreLR(cfg)

    def report(step: int) -> None:
        metrics = {"loss": 1.0, "restorable": 1.0} | ({"val_loss": 1.0} if step % 10 == 0 else {})
        ctl.observe([Report(rank=0, step=step, metrics=metrics)])

    for step in range(6):
        report(step)
    assert ctl.propose(Plan(horizon=5, last_step=5, next_stage=0)) is None
    for step in range(6, 11):
        report(step)
    first = ctl.propose(Plan(horizon=10, last_step=10, next_stage=0))
    assert first is not None and first.from_step == 11 and _role(first) == "probe"
    assert first.info["segment"]["every"] == 10
    assert first.until_step is not None and (first.until_step - first.from_step) % 10 == 0
    # a metric on every report is not waited for: the stage starts at the first one
    every_step = ExploreLR(ExploreConfig(init_lr=0.2, total_steps=STEPS))
    every_step.observe([Report(rank=0, step=0, metrics={"loss": 1.0, "restorable": 1.0})])
    assert every_step.propose(Plan(horizon=0, last_step=0, next_stage=0)) is not None


def test_reports_too_sparse_for_the_run_give_up_back_at_init_lr() -> None:
    # Every 100 steps: 8 reports per probe would not fit; the stage is abandoned, back at
    # its snapshot and init_lr, decaying to the end (what the run would have done untuned).
    ctl = _run_sparse(100)
    first, commit = ctl.accepted[0], ctl.accepted[-1]
    assert commit.kind is DecisionKind.COMMIT and commit.restore_from == first.from_step
    assert commit.lr == 0.2 and commit.until_step == STEPS and commit.lr_end == 0.0
    advice = ctl.advice()  # the head logs it and `tautune status` shows it
    assert advice is not None and "stage 0: no candidate could be scored: 'loss' came at" in advice
    assert "Report 'loss' more often" in advice


def test_a_state_from_before_report_intervals_loads_as_every_step() -> None:
    ctl, _ = _run()
    state = ctl.state_dict()
    del state["every"]
    twin = ExploreLR(ctl.config)
    twin.load_state_dict(state)
    assert twin.every == 1
    with pytest.raises(ConfigError, match="every"):
        twin.load_state_dict({**state, "every": 0})


@pytest.mark.parametrize("warmup", [0, 50])
def test_the_first_stage_waits_for_the_base_schedules_warmup(warmup: int) -> None:
    # The spec says nothing of a warmup; the LR the agent reports with each step does.
    cfg = ExploreConfig(init_lr=0.2, total_steps=STEPS)
    ctl = ExploreLR(cfg)
    nqm = NQM(seed=0)
    first: Decision | None = None
    for step in range(200):
        plan = Plan(horizon=step - 1, last_step=step - 1)
        if first is None and (d := ctl.propose(plan)) is not None:
            first = d
            ctl.accept(d.with_version(1))
        lr = 0.2 * min(1.0, (step + 1) / warmup) if warmup else 0.2
        metrics = {"loss": nqm.step(lr), "restorable": 1.0, "lr": lr}
        ctl.observe([Report(rank=0, step=step, metrics=metrics)])
    assert first is not None
    assert first.from_step == (warmup + 1 if warmup else 2)  # 2: two reports show the LR flat
    twin = ExploreLR(cfg)
    twin.load_state_dict(ctl.state_dict())
    assert twin.state_dict() == ctl.state_dict()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"total_steps": -10}, "total_steps must be >= 1, got total_steps=-10"),
        ({"total_steps": 1000, "warmup_steps": 2000}, "warmup_steps=2000 and explore_at=0.0"),
        ({"explore_budget": 1.5}, "got explore_budget=1.5"),
    ],
)
def test_explore_config_errors_name_the_setting(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ExploreConfig(init_lr=1e-3, **settings)
