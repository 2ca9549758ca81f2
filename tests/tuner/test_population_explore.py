"""The population ``explore`` controller, driven in-process on the NQM (no Ray, no Redis)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tuner.bench.lr import BenchConfig, make_trainable, schedule_fn
from tuner.bench.lr_population import run_population
from tuner.controllers.base import Plan, PopulationController
from tuner.controllers.curves import StepCurve
from tuner.controllers.explore_config import ExploreConfig
from tuner.controllers.population_explore import PopulationExplore
from tuner.controllers.population_rounds import beyond, first_round, score_rounds
from tuner.errors import ConfigError
from tuner.records import Decision, Report
from tuner.specs import build_population_controller

TOTAL = 600


def _config(init_lr: float | None = None) -> ExploreConfig:
    t = BenchConfig(task="nqm").spec
    return ExploreConfig(
        init_lr=init_lr or t.centre,
        lr_min=t.grid[0] / 4,
        lr_max=t.grid[-1] * 4,
        total_steps=TOTAL,
        explore_budget=0.2,
    )


class Recorder(PopulationController):
    """Passes everything to ``inner`` and keeps every trial's decisions; at report
    ``restart_at`` it replaces ``inner`` by a fresh controller loaded from its state, as a
    head that restarts does."""

    def __init__(self, inner: PopulationExplore, restart_at: int | None = None) -> None:
        self.inner = inner
        self.decisions: dict[int, list[Decision]] = {}
        self.seen = 0
        self.restart_at = restart_at

    def observe(self, trial: int, reports: Sequence[Report]) -> None:
        self.seen += len(reports)
        if self.seen == self.restart_at:
            fresh = PopulationExplore(self.inner.config, self.inner.trials)
            fresh.load_state_dict(json.loads(json.dumps(self.inner.state_dict())))
            self.inner = fresh
        self.inner.observe(trial, reports)

    def propose(self, trial: int, plan: Plan) -> Decision | None:
        return self.inner.propose(trial, plan)

    def accept(self, trial: int, decision: Decision) -> None:
        self.decisions.setdefault(trial, []).append(decision)
        self.inner.accept(trial, decision)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def summary(self) -> dict[str, Any]:
        return self.inner.summary()


def _run(
    ctl: PopulationController,
    trials: int,
    seeds: Sequence[int],
    init_lr: float,
    wrap: Callable[[Any, int], Any] = lambda run, seed: run,
) -> Any:
    runs = [wrap(make_trainable("nqm", s), s) for s in seeds]
    result = run_population(
        "pop",
        runs,
        ctl,
        schedule_fn("constant", init_lr, TOTAL, 0),
        total_steps=TOTAL,
        eval_every=50,
        seed=0,
    )
    return result, runs


def test_first_round_spreads_candidates_evenly_in_log_lr() -> None:
    assert first_round(1.0, 3, (1e-3, 1e3)) == pytest.approx([0.25, 1.0, 4.0])
    assert first_round(1.0, 2, (1e-3, 1e3)) == pytest.approx([0.5, 2.0])
    assert first_round(1.0, 5, (1e-3, 1e3)) == pytest.approx([1 / 16, 0.25, 1, 4, 16])
    assert first_round(1.0, 9, (1e-3, 1e3))[4:6] == pytest.approx([1.0, 2.0])
    assert first_round(1.0, 3, (0.5, 2.0)) == pytest.approx([0.5, 1.0, 2.0])  # clipped
    assert beyond(4.0, 4.0, 3, (1e-3, 100.0)) == pytest.approx([16.0, 64.0, 100.0])


def test_rounds_score_the_cool_down_and_flag_blow_ups_and_stalls() -> None:
    curves = [StepCurve() for _ in range(3)]
    # steps 0..9 probe, 10..13 cool down; the start loss is 1.0 for every trial
    paths = {
        0: [1.0] * 10 + [0.8, 0.7, 0.6, 0.5],  # fine: cools to 0.5
        1: [1.0] + [2.0] * 9 + [0.9, 0.9, 0.9, 0.9],  # blew up in its probe
        2: [1.0] * 10 + [1.2, 1.2, 1.2, 1.2],  # cooled down no lower than the start
    }
    for j, values in paths.items():
        curves[j].add([Report(rank=0, step=s, metrics={"loss": v}) for s, v in enumerate(values)])
    rounds = [{"from": 0, "tail": 10, "until": 14, "cands": [0.1, 1.0, 0.01]}]
    lrs, scores, bad = score_rounds(curves, rounds, [False] * 3)
    assert lrs == [0.1, 1.0, 0.01]
    assert scores["0"] == pytest.approx(0.55) and bad == {1, 2}  # the last two steps
    assert min(scores, key=scores.__getitem__) == "0"
    _, scores, bad = score_rounds(curves, rounds, [False, False, True])  # trial 2 lost
    assert "2" not in scores and bad == {1}
    curves[0].add([Report(rank=0, step=14, metrics={"diverged": 1.0})])
    rounds[0]["until"] = 15
    _, _, bad = score_rounds(curves, rounds, [False] * 3)
    assert 0 in bad


def test_trials_start_from_one_state_and_all_go_on_from_the_winners() -> None:
    init = _config().init_lr
    rec = Recorder(PopulationExplore(_config(), 3))
    result, runs = _run(rec, 3, seeds=(0, 1, 2), init_lr=init)
    d0, d1, d2 = (rec.decisions[i] for i in range(3))
    first = next(d for d in d0 if d.info["segment"]["role"] == "probe")
    start = first.from_step
    # round 0: trial 0 publishes its state, the others load it
    assert first.publish and first.snapshot and first.restore_peer is None
    for d in (d1[0], d2[0]):
        assert (d.from_step, d.restore_peer, d.snapshot) == (start, 0, True)
    lrs = [d.lr for d in (first, d1[0], d2[0])]
    assert lrs == pytest.approx(first_round(init, 3, _config().bounds))
    # the commit: the winner restores its pre-cool-down snapshot and publishes it
    commits = [ds[-1] for ds in (d0, d1, d2)]
    assert all(c.info["segment"]["role"] == "commit" and c.info["final"] for c in commits)
    assert len({(c.from_step, c.lr, c.lr_end, c.until_step) for c in commits}) == 1
    r, win = commits[0].info["segment"]["winner"]
    assert commits[win].publish and commits[win].restore_from is not None
    assert all(c.restore_peer == win for j, c in enumerate(commits) if j != win)
    # every trial ends in the same state, though they trained apart before the stage
    finals = {run.evaluate() for run in runs}
    assert len(finals) == 1 and result.final_loss in finals
    assert rec.inner.done and rec.inner.summary()["winner"] == [r, win]
    assert rec.inner.advice() is None  # every trial began the stage at trial 0's loss
    # one trial's timeline threw away the cool-downs (and whole rounds when bracketing)
    probe = first.until_step - start
    tail = d0[1].until_step - d0[1].from_step
    rounds = len(rec.inner.rounds)
    assert result.exploration_steps == tail + (rounds - 1) * (probe + tail)


def test_a_winner_at_the_edge_is_bracketed_by_another_round() -> None:
    low = _config().init_lr / 16  # far too small: the largest candidate wins round 0
    rec = Recorder(PopulationExplore(_config(low), 3))
    _run(rec, 3, seeds=(0, 0, 0), init_lr=low)
    rounds = rec.inner.rounds
    assert len(rounds) >= 2
    assert min(rounds[1]["cands"]) > max(rounds[0]["cands"])
    second = next(d for d in rec.decisions[1] if d.info["segment"].get("round") == 1)
    assert second.restore_from == rounds[0]["from"]  # back to the stage's start
    assert rec.inner.result is not None and rec.inner.result["lr"] > max(rounds[0]["cands"])


def test_a_head_restarted_mid_stage_decides_exactly_as_one_that_was_not() -> None:
    def decisions(restart_at: int | None) -> list[tuple[Any, ...]]:
        rec = Recorder(PopulationExplore(_config(), 3), restart_at=restart_at)
        _run(rec, 3, seeds=(0, 1, 2), init_lr=_config().init_lr)
        return [
            (i, d.from_step, d.until_step, d.lr, d.lr_end, d.restore_from, d.restore_peer)
            for i in range(3)
            for d in rec.decisions[i]
        ]

    assert decisions(None) == decisions(3 * 70 + 1)  # inside the first round


class Detacher(Recorder):
    """Detaches every trial at step ``at``: from then on it proposes only what
    ``detach_decision`` says, as the population head does."""

    def __init__(self, inner: PopulationExplore, at: int) -> None:
        super().__init__(inner)
        self.at = at
        self.detached: set[int] = set()

    def propose(self, trial: int, plan: Plan) -> Decision | None:
        if plan.horizon + 1 < self.at:
            return self.inner.propose(trial, plan)
        if trial in self.detached:
            return None
        self.detached.add(trial)
        return self.inner.detach_decision(trial, plan)


@pytest.mark.parametrize("rounds_done", [0, 1])
def test_a_detach_mid_stage_leaves_every_trial_one_commit(rounds_done: int) -> None:
    cfg = _config()
    probe, _, tail = cfg.lengths()
    start = 33  # the first stage: the first horizon plus the sync margin
    at = start + 2 if rounds_done == 0 else start + probe + tail + 2
    rec = Detacher(PopulationExplore(cfg, 3), at)
    _, runs = _run(rec, 3, seeds=(0, 1, 2), init_lr=cfg.init_lr)
    commits = [rec.decisions[i][-1] for i in range(3)]
    assert all(c.info["segment"]["detached"] and c.info["final"] for c in commits)
    assert len({(c.from_step, c.lr, c.lr_end, c.until_step) for c in commits}) == 1
    assert commits[0].from_step >= at
    win = commits[0].info["segment"]["winner"]
    if rounds_done == 0:  # nothing scored: back to the stage's start, at init_lr
        assert win is None and commits[0].lr == cfg.init_lr
        assert all(c.restore_from == start for c in commits)
    else:
        _, j = win
        assert commits[j].publish and commits[j].restore_from == start + probe
        assert all(c.restore_peer == j for k, c in enumerate(commits) if k != j)
    assert len({run.evaluate() for run in runs}) == 1  # one state, one schedule
    assert rec.inner.done


def _plan(horizons: tuple[int, ...], reported: tuple[int, ...], trial: int) -> Plan:
    return Plan(horizons[trial], reported[trial], 0, horizons, reported)


def _report(ctl: PopulationExplore, trial: int, step: int, restorable: float = 1.0) -> None:
    ctl.observe(trial, [Report(rank=0, step=step, metrics={"loss": 1.0, "restorable": restorable})])


def test_a_trial_that_went_past_its_decision_leaves_the_stage_to_the_others() -> None:
    ctl = PopulationExplore(_config(), 3)
    for t in range(3):
        _report(ctl, t, 0)
    h = (0, 0, 0)
    d0 = ctl.propose(0, _plan(h, h, 0))
    assert d0 is not None
    ctl.accept(0, d0.with_version(1))
    d1 = ctl.propose(1, _plan(h, h, 1))
    assert d1 is not None and d1.from_step == d0.from_step
    ctl.accept(1, d1.with_version(1))
    late = (0, 0, d0.from_step + 3)  # trial 2 trained past the stage's start meanwhile
    lost = ctl.propose(2, _plan(late, late, 2))
    assert lost is not None and lost.from_step == d0.from_step + 4 and lost.info["final"]
    assert lost.restore_peer is None and not lost.moves_state
    ctl.accept(2, lost.with_version(1))
    assert ctl.lost == [False, False, True]
    assert ctl.propose(2, _plan(late, late, 2)) is None
    tail = ctl.propose(0, _plan(h, h, 0))  # the others go on with the stage
    assert tail is not None and tail.info["segment"]["role"] == "tail"


def test_trials_that_cannot_restore_get_init_lr_decayed_to_the_end() -> None:
    ctl = PopulationExplore(_config(), 2)
    for t in range(2):
        _report(ctl, t, 0, restorable=0.0)
    h = (0, 0)
    d = ctl.propose(1, _plan(h, h, 1))
    assert d is not None and not d.moves_state
    assert (d.lr, d.lr_end, d.until_step) == (_config().init_lr, 0.0, TOTAL)


def test_trials_too_far_in_for_a_stage_are_told_why_nothing_was_explored() -> None:
    ctl = PopulationExplore(_config(), 2)
    for t in range(2):
        _report(ctl, t, 0)
    assert ctl.advice() is None
    far = (TOTAL - 5, 0)  # trial 0 was promised nearly the whole run before trial 1 reported
    d = ctl.propose(1, _plan(far, (0, 0), 1))
    assert d is not None and d.from_step > TOTAL - 5 and not d.moves_state
    ctl.accept(1, d.with_version(1))
    advice = ctl.advice()
    assert advice is not None and advice.startswith("no exploration: when all 2 trials")
    assert f"through {TOTAL - 5}" in advice and f"total_steps {TOTAL}" in advice
    # workers that cannot restore are no such case (and get init_lr decayed instead)
    other = PopulationExplore(_config(), 2)
    for t in range(2):
        _report(other, t, 0, restorable=0.0)
    d = other.propose(1, _plan(far, (0, 0), 1))
    assert d is not None
    other.accept(1, d.with_version(1))
    assert other.advice() is None


def test_no_decision_before_every_trial_has_reported() -> None:
    ctl = PopulationExplore(_config(), 2)
    _report(ctl, 0, 0)
    assert ctl.propose(0, _plan((0, -1), (0, -1), 0)) is None


def test_the_spec_picks_population_explore_and_checks_its_settings() -> None:
    ctl = build_population_controller({"method": "explore", "init_lr": 0.1, "total_steps": 500}, 4)
    assert isinstance(ctl, PopulationExplore) and ctl.trials == 4
    with pytest.raises(ConfigError, match="unknown setting"):
        build_population_controller({"method": "explore", "init_lr": 0.1, "tau": 5}, 2)
    with pytest.raises(ConfigError, match="at least 2 trials"):
        PopulationExplore(_config(), 1)
    with pytest.raises(ConfigError, match="malformed"):
        PopulationExplore(_config(), 2).load_state_dict({"trials": 2})
    with pytest.raises(ConfigError, match="not one of"):
        PopulationExplore(_config(), 2).observe(2, [])


def test_the_population_benchmark_pairs_each_seed_with_explore_and_writes_its_page() -> None:
    from tuner.bench.population import PopulationBench, page, run

    lines: list[str] = []
    doc = run(PopulationBench(tasks=("nqm",), seeds=(0, 1), trials=(3,)), lines.append)
    assert len(doc["results"]) == 4 and len(lines) == 2
    seq, pop = doc["summary"]
    assert (seq["method"], pop["method"]) == ("tautune", "tautune-population-3")
    # on the NQM both searches pick the same LR from the same state: equal to the bit
    assert pop["equal"] == 2 and pop["paired_diff_median"] == 0
    assert pop["trained_steps"] == 3 * seq["trained_steps"]
    text = page(doc, "tautune bench population --json x.json")
    assert "| nqm | tautune-population-3 |" in text and "equal on 2 of 2" in text


def test_a_trial_that_restarts_mid_stage_is_not_scored_and_rejoins_at_the_commit() -> None:
    ctl = PopulationExplore(_config(), 5)
    for t in range(5):
        _report(ctl, t, 0)
    h = (0,) * 5
    for phase in ("probe", "tail"):  # a probe's cool-down is planned with it
        for t in range(5):
            d = ctl.propose(t, _plan(h, h, t))
            assert d is not None and d.info["segment"]["role"] == phase
            ctl.accept(t, d.with_version(1 if phase == "probe" else 2))
    start, tail, end = (ctl.rounds[0][k] for k in ("from", "tail", "until"))

    def run(t: int, steps: range, attempt: int = 0) -> None:
        # the middle candidate (trial 2) cools down lowest; the restarted trial 4's replay
        # would look best of all if it were scored
        cooled = {0: 0.9, 1: 0.6, 2: 0.3, 3: 0.5, 4: 0.01}[t]
        metrics = [{"loss": cooled if s >= tail else 1.0, "restorable": 1.0} for s in steps]
        ctl.observe(
            t,
            [
                Report(rank=0, step=s, metrics=m, attempt=attempt)
                for s, m in zip(steps, metrics, strict=True)
            ],
        )

    for t in range(5):
        run(t, range(start, start + 6))
    run(4, range(start + 2, start + 4), attempt=1)  # restarted from its checkpoint, replaying
    assert ctl.summary()["unscored"] == [4] and not any(ctl.lost)
    for t in range(4):
        run(t, range(start + 6, end))
    done = (end - 1,) * 4 + (start + 3,)  # the others do not wait for trial 4's replay
    commits = [ctl.propose(t, _plan(done, done, t)) for t in range(5)]
    assert all(d is not None and d.info["segment"]["role"] == "commit" for d in commits)
    assert commits[0].info["segment"]["winner"] == [0, 2]  # type: ignore[union-attr]
    assert ctl.summary()["scores"][4] is None  # the restarted trial's candidate: unscored
    assert commits[2].publish  # type: ignore[union-attr]
    assert [d.restore_peer for d in commits] == [2, 2, None, 2, 2]  # type: ignore[union-attr]
    # trial 4 loads the winner's state with the others: it rejoins the population exactly


def test_a_restart_before_the_stage_does_not_count_against_it() -> None:
    fresh = PopulationExplore(_config(), 2)
    _report(fresh, 0, 0)
    fresh.observe(1, [Report(rank=0, step=3, metrics={"loss": 1.0, "restorable": 1.0})])
    fresh.observe(1, [Report(rank=0, step=1, metrics={"loss": 1.0, "restorable": 1.0}, attempt=1)])
    h2 = (3, 3)
    for t in range(2):
        d = fresh.propose(t, _plan(h2, h2, t))
        assert d is not None and d.info["segment"]["role"] == "probe"
        fresh.accept(t, d.with_version(1))
    assert fresh.summary()["unscored"] == []  # the count at the stage's start is the baseline


class _BatchesNotShared:
    """A trial whose batch noise comes from an RNG its state leaves out: trials that load
    trial 0's state still train on batches of their own."""

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner, self.rng = inner, random.Random(seed)

    def step(self, lr: float) -> float:
        return float(self.inner.step(lr)) * (1 + 0.05 * self.rng.gauss(0, 1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_trials_that_began_the_stage_at_other_losses_get_advice() -> None:
    ctl = PopulationExplore(_config(), 3)
    _run(ctl, 3, seeds=(0, 1, 2), init_lr=_config().init_lr, wrap=_BatchesNotShared)
    assert ctl.done and ctl.result is not None
    assert {"1", "2"} <= set(ctl.result["unpaired"])
    advice = ctl.advice()
    assert advice is not None and advice.startswith("candidates did not begin at the loss trial 0")
    assert "extra_state=" in advice
