"""The stage-wise LR controller, driven the way the head drives it, on a synthetic run.

No redis, ray or torch: a small simulator stands in for training. Its loss is

    L_t = base + floor_t + gap_t

where ``floor_t`` relaxes within a few steps towards ``k * lr`` (a higher LR raises the
noise floor at once, and an anneal takes it back), and the ``gap`` closes like a power law,
``gap -= p(lr) * gap**2`` with ``p(lr) = c * lr / (1 + (lr / GOOD_LR)**2)``: the progress per
step is largest at ``GOOD_LR`` and falls off on both sides. Above ``LR_DIV`` the run
diverges (the gap grows 5% a step). Reported losses carry multiplicative Gaussian noise
from a fixed seed. With an anneal at the end the floor is paid back, so the best peak LR is
``GOOD_LR``; the simulator checks that about itself below.

Claims about tuning are made on the median over several seeds, never on one run.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tuner.controllers import Plan, StagewiseConfig, StagewiseLR
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

GOOD_LR = 0.1
LR_DIV = 5.0
SEEDS = range(5)
TAU = 50
BATCH = 8  # reports reach the controller in batches, as from the workers' buffers


class Sim:
    """The noise-floor / power-law-gap model of the module docstring."""

    def __init__(
        self,
        seed: int,
        *,
        base: float = 0.5,
        k: float = 1.0,
        c: float = 0.05,
        gap0: float = 2.0,
        noise: float = 0.03,
        relax: float = 0.2,
    ) -> None:
        self.base, self.k, self.c, self.relax, self.noise = base, k, c, relax, noise
        self.gap = gap0
        self.floor = 0.0
        self.rng = np.random.default_rng(seed)

    @property
    def expected(self) -> float:
        """The noise-free loss now."""
        return self.base + self.floor + self.gap

    def step(self, lr: float) -> float:
        """Train one step at ``lr``; return the loss a worker would report."""
        if lr > LR_DIV:
            self.gap = min(self.gap * 1.05, 1e6)
        else:
            progress = self.c * lr / (1 + (lr / GOOD_LR) ** 2)
            self.gap = max(self.gap - progress * self.gap * self.gap, 0.0)
        self.floor += self.relax * (self.k * lr - self.floor)
        return self.expected * math.exp(self.noise * float(self.rng.standard_normal()))


class Scripted:
    """A 'simulator' whose loss is a given function of (step, lr)."""

    def __init__(self, loss: Callable[[int, float], float]) -> None:
        self.loss = loss
        self.t = 0

    @property
    def expected(self) -> float:
        return float("nan")

    def step(self, lr: float) -> float:
        value = self.loss(self.t, lr)
        self.t += 1
        return value


def _snapshot(ctl: StagewiseLR) -> str:
    return json.dumps(ctl.state_dict(), sort_keys=True)


class Run:
    """One training run with the controller in the loop, step by step, like the head.

    At each step, before training it, the head asks ``propose`` with the horizon at the last
    step already trained; a decision it gets is versioned and accepted. The worker trains the
    step with the LR of the newest decision covering it (the initial LR if none does), and
    its report reaches the controller with the next full batch.
    """

    def __init__(
        self,
        ctl: StagewiseLR,
        sim: Sim | Scripted,
        *,
        check_pure: bool = False,
    ) -> None:
        self.ctl = ctl
        self.sim = sim
        self.check_pure = check_pure
        self.init_lr = ctl.config.init_lr
        self.decisions: list[Decision] = []
        self.centers: list[float] = []  # summary()["center_lr"] after each accept
        self.accepted_at: list[int] = []  # the step at which each decision was accepted
        self.buffer: list[Report] = []
        self.last_reported = -1
        self.step = 0
        self.uncovered = 0  # steps after the first decision that no decision covered
        self.lrs: list[float] = []

    def lr_at(self, step: int) -> float | None:
        for d in reversed(self.decisions):
            if d.covers(step):
                return d.lr_at(step)
        return None

    def advance(self, steps: int = 1) -> None:
        for _ in range(steps):
            s = self.step
            plan = Plan(horizon=s - 1, last_step=self.last_reported)
            before = _snapshot(self.ctl) if self.check_pure else ""
            decision = self.ctl.propose(plan)
            if self.check_pure:
                assert _snapshot(self.ctl) == before, f"propose changed the controller at {s}"
                assert self.ctl.propose(plan) == decision, "propose is not repeatable"
            if decision is not None:
                decision = decision.with_version(len(self.decisions) + 1)
                self.ctl.accept(decision)
                self.decisions.append(decision)
                self.centers.append(self.ctl.summary()["center_lr"])
                self.accepted_at.append(s)
            lr = self.lr_at(s)
            if lr is None:
                self.uncovered += bool(self.decisions)
                lr = self.init_lr
            self.lrs.append(lr)
            loss = min(self.sim.step(lr), 1e12)
            self.buffer.append(Report(rank=0, step=s, metrics={"loss": loss}, ts=0.0))
            if len(self.buffer) >= BATCH:
                self.flush()
            self.step += 1

    def flush(self) -> None:
        if self.buffer:
            self.ctl.observe(self.buffer)
            self.last_reported = self.buffer[-1].step
            self.buffer = []


def _config(init_lr: float, **kw: Any) -> StagewiseConfig:
    settings: dict[str, Any] = {"lr_min": 1e-4, "lr_max": 10.0, "tau": TAU}
    settings.update(kw)
    return StagewiseConfig(init_lr=init_lr, **settings)


def _simulate(config: StagewiseConfig, seed: int, steps: int, **sim_kw: Any) -> Run:
    run = Run(StagewiseLR(config), Sim(seed, **sim_kw))
    run.advance(steps)
    run.flush()
    return run


def _constant(lr: float, seed: int, steps: int) -> float:
    sim = Sim(seed)
    for _ in range(steps):
        sim.step(lr)
    return sim.expected


def _annealed(peak: float, steps: int, fraction: float) -> float:
    """Noise-free final loss of the hand-made schedule: ``peak``, then linear to 0."""
    sim = Sim(0)
    start = steps - round(fraction * steps)
    for t in range(steps):
        sim.step(peak if t < start else peak * (steps - t) / (steps - start))
    return sim.expected


def _geo_ratio(a: float, b: float) -> float:
    return math.exp(abs(math.log(a / b)))


# -- the simulator is what the tests say it is ------------------------------------------


def test_simulator_best_annealed_peak_is_good_lr() -> None:
    grid = [GOOD_LR * 2 ** (i / 2) for i in range(-10, 11)]
    finals = {lr: _annealed(lr, 3000, 0.2) for lr in grid}
    best = min(finals, key=finals.__getitem__)
    assert _geo_ratio(best, GOOD_LR) < 1.5, f"best annealed peak {best:.3g}, {finals}"
    # ... and a higher LR does raise the loss at once (the noise floor), so the greedy,
    # one-stage view of the LR is biased low.
    low, high = Sim(0), Sim(0)
    for _ in range(500):
        low.step(GOOD_LR)
        high.step(GOOD_LR)
    for _ in range(20):
        low.step(GOOD_LR / 2)
        high.step(GOOD_LR * 2)
    assert high.expected > low.expected


# -- 1. the center moves towards a good LR, inside the bounds ----------------------------


@pytest.mark.parametrize("direction", ["up", "down"])
def test_center_moves_towards_good_lr(direction: str) -> None:
    factor = 1 / 30 if direction == "up" else 30.0
    init = GOOD_LR * factor
    within = 24  # stages
    runs = [_simulate(_config(init), seed, 60 * TAU) for seed in SEEDS]
    for run in runs:
        lo, hi = run.ctl.config.bounds
        assert all(lo <= d.lr <= hi for d in run.decisions if d.lr is not None)
    moved = [_geo_ratio(run.centers[within], init) for run in runs]
    went_right_way = [(run.centers[within] > init) == (direction == "up") for run in runs]
    finals = [run.ctl.summary()["center_lr"] for run in runs]
    report = (
        f"start {init:.3g}, center after {within} stages "
        f"{[round(r.centers[within], 4) for r in runs]}, final centers "
        f"{[round(f, 4) for f in finals]}, good LR {GOOD_LR}"
    )
    assert sum(went_right_way) >= 4, report
    assert statistics.median(moved) >= 10, report
    # The center settles near the good LR instead of running on to a bound.
    assert _geo_ratio(statistics.median(finals), GOOD_LR) < 3, report


@pytest.mark.parametrize(
    ("init", "bounds", "edge"),
    [
        (0.0033, (1e-3, 0.04), "max"),  # the good LR lies above lr_max
        (3.0, (0.35, 10.0), "min"),  # the good LR lies below lr_min
    ],
)
def test_never_proposes_outside_the_bounds(
    init: float, bounds: tuple[float, float], edge: str
) -> None:
    # exp(log(0.04)) > 0.04 and exp(log(0.35)) < 0.35: a clamp in log space alone misses.
    lo, hi = bounds
    config = _config(init, lr_min=lo, lr_max=hi, total_steps=40 * TAU)
    for seed in range(3):
        run = _simulate(config, seed, 40 * TAU)
        lrs = [d.lr for d in run.decisions if d.lr is not None]
        assert all(lo <= lr <= hi for lr in lrs), (min(lrs), max(lrs))
        assert all(lo <= c <= hi for c in run.centers)
        # The search did press against the bound (so the check above had work to do).
        assert (hi if edge == "max" else lo) in lrs


# -- 2. tuning beats the constant, poor initial LR ----------------------------------------


@pytest.mark.parametrize("factor", [1 / 30, 30.0])
def test_tuned_run_ends_lower_than_constant_init_lr(factor: float) -> None:
    steps = 60 * TAU
    init = GOOD_LR * factor
    config = _config(init, total_steps=steps, anneal_fraction=0.2, final_lr=0.0)
    tuned = [_simulate(config, seed, steps).sim.expected for seed in SEEDS]
    constant = [_constant(init, seed, steps) for seed in SEEDS]
    best = _annealed(GOOD_LR, steps, 0.2)
    t, c = statistics.median(tuned), statistics.median(constant)
    report = (
        f"init {init:.3g}: tuned median {t:.4f} {[round(x, 4) for x in tuned]}, "
        f"constant median {c:.4f}, hand-tuned anneal at the good LR {best:.4f}"
    )
    assert t < c, report
    # Most of the way from the constant run to the hand-tuned schedule.
    assert t - best < 0.25 * (c - best), report


# -- 3. resumption through JSON equals an uninterrupted run -------------------------------


def _key(d: Decision) -> tuple[Any, ...]:
    return (d.stage, d.kind, d.from_step, d.until_step, d.lr, d.lr_end, d.version)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resume_from_json_state_gives_the_same_decisions(seed: int) -> None:
    steps = 40 * TAU
    config = _config(GOOD_LR / 30, total_steps=steps, warmup_steps=30)
    whole = _simulate(config, seed, steps)
    assert whole.ctl.done and len(whole.decisions) > 30
    rng = random.Random(seed)
    splits = [rng.randrange(1, steps) for _ in range(3)]
    # ...and splits just before and just after a decision is accepted, and after a batch.
    middle = whole.accepted_at[len(whole.accepted_at) // 2]
    splits += [middle, middle + 1, BATCH * rng.randrange(1, steps // BATCH)]
    for split in splits:
        run = Run(StagewiseLR(config), Sim(seed))
        run.advance(split)
        state = json.loads(json.dumps(run.ctl.state_dict()))
        fresh = StagewiseLR(StagewiseConfig(init_lr=1.0))  # its own config is replaced
        fresh.load_state_dict(state)
        assert _snapshot(fresh) == _snapshot(run.ctl)
        run.ctl = fresh
        run.advance(steps - split)
        run.flush()
        after = [_key(d) for d in run.decisions if d.from_step >= split]
        expected = [_key(d) for d in whole.decisions if d.from_step >= split]
        assert after == expected, f"split at step {split}"
        assert [_key(d) for d in run.decisions] == [_key(d) for d in whole.decisions]
        assert _snapshot(run.ctl) == _snapshot(whole.ctl)


def test_state_dict_is_a_snapshot() -> None:
    run = Run(StagewiseLR(_config(0.01)), Sim(0))
    run.advance(5 * TAU)
    state = run.ctl.state_dict()
    frozen = json.dumps(state, sort_keys=True)
    run.advance(5 * TAU)
    assert json.dumps(state, sort_keys=True) == frozen
    assert _snapshot(run.ctl) != frozen
    # Loading does not tie the controller to the caller's dict either.
    other = StagewiseLR(_config(0.01))
    other.load_state_dict(state)
    state["stages"].clear()
    state["history"].clear()
    assert _snapshot(other) == frozen


def test_rollback_after_a_failed_commit_restores_the_state() -> None:
    # The head keeps state_dict() from before accept and loads it back when the commit fails.
    run = Run(StagewiseLR(_config(0.01)), Sim(0))
    run.advance(140)  # stage 2 is [100, 150): the next decision is due from step 138
    run.flush()
    plan = Plan(horizon=run.step - 1, last_step=run.last_reported)
    decision = run.ctl.propose(plan)
    assert decision is not None
    frozen = _snapshot(run.ctl)
    before = run.ctl.state_dict()
    run.ctl.accept(decision.with_version(99))
    assert _snapshot(run.ctl) != frozen
    run.ctl.load_state_dict(before)
    assert _snapshot(run.ctl) == frozen
    assert run.ctl.propose(plan) == decision


# -- 4. propose: pure, timed by the lead, contiguous, after the horizon --------------------


def test_propose_is_pure_and_decisions_are_contiguous() -> None:
    steps = 30 * TAU
    config = _config(0.01, total_steps=steps)
    run = Run(StagewiseLR(config), Sim(3), check_pure=True)
    run.advance(steps)
    ds = run.decisions
    assert ds[0].from_step == 0
    assert [d.stage for d in ds] == list(range(len(ds)))
    for prev, nxt in itertools.pairwise(ds):
        assert nxt.from_step == prev.until_step, (prev, nxt)
    assert ds[-1].until_step == steps
    assert run.uncovered == 0


def _feed(ctl: StagewiseLR, steps: range, loss: Callable[[int], float]) -> None:
    ctl.observe([Report(rank=0, step=s, metrics={"loss": loss(s)}, ts=0.0) for s in steps])


def test_propose_waits_for_the_lead_point() -> None:
    config = StagewiseConfig(init_lr=0.01, tau=40)  # lead 10
    ctl = StagewiseLR(config)
    first = ctl.propose(Plan(horizon=-1, last_step=-1))
    assert first is not None and (first.from_step, first.until_step) == (0, 40)
    ctl.accept(first.with_version(1))
    answered = []
    for s in range(60):
        _feed(ctl, range(s, s + 1), lambda t: 2.0 - 0.01 * t)
        before = _snapshot(ctl)
        d = ctl.propose(Plan(horizon=min(s, 39), last_step=s))
        assert _snapshot(ctl) == before
        if d is not None:
            answered.append((s, d))
    # Due at step until - lead = 30, and from then on until accepted; the decision told the
    # workers so (they send the report of that step at once).
    assert [s for s, _ in answered] == list(range(30, 60))
    assert first.decide_at == 30 and answered[0][1].decide_at == 70
    assert {(d.stage, d.from_step, d.until_step) for _, d in answered} == {(1, 40, 80)}
    # Plans of every shape leave the controller as it was, however far ahead they are.
    before = _snapshot(ctl)
    for plan in (Plan(-1, -1), Plan(100, 59), Plan(500, 500), Plan(10**6, 10**6)):
        ctl.propose(plan)
        assert _snapshot(ctl) == before, plan


def test_next_decision_starts_after_the_horizon() -> None:
    config = StagewiseConfig(init_lr=0.01, tau=40, warmup_steps=20)
    ctl = StagewiseLR(config)
    # Before anything: the first decision starts after warmup, or after the horizon.
    d0 = ctl.propose(Plan(horizon=-1, last_step=-1))
    assert d0 is not None and d0.from_step == 20
    late = ctl.propose(Plan(horizon=25, last_step=25))
    assert late is not None and (late.from_step, late.until_step) == (26, 66)
    ctl.accept(late.with_version(1))
    _feed(ctl, range(26, 55), lambda t: 2.0)
    assert ctl.propose(Plan(horizon=54, last_step=54)) is None  # due at 66 - lead = 56
    _feed(ctl, range(55, 57), lambda t: 2.0)
    on_time = ctl.propose(Plan(horizon=56, last_step=56))
    assert on_time is not None and on_time.from_step == 66
    behind = ctl.propose(Plan(horizon=70, last_step=56))
    assert behind is not None and (behind.from_step, behind.until_step) == (71, 111)
    ctl.accept(behind.with_version(2))
    _feed(ctl, range(57, 101), lambda t: 2.0)
    assert ctl.propose(Plan(horizon=100, last_step=100)) is None  # due at 111 - 10
    _feed(ctl, range(101, 102), lambda t: 2.0)
    nxt = ctl.propose(Plan(horizon=101, last_step=101))
    assert nxt is not None and nxt.from_step == 111


# -- 5. the anneal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "fraction", "tau", "warmup"),
    [(1000, 0.25, 50, 0), (1000, 0.2, 60, 100), (1200, 0.5, 40, 30)],
)
def test_anneal_covers_the_end_of_the_run(
    total: int, fraction: float, tau: int, warmup: int
) -> None:
    final_lr = 1e-5
    config = _config(
        0.05,
        tau=tau,
        total_steps=total,
        anneal_fraction=fraction,
        final_lr=final_lr,
        warmup_steps=warmup,
    )
    run = Run(StagewiseLR(config), Sim(1))
    run.advance(total)
    run.flush()
    start = total - round(fraction * total)
    *search, last = run.decisions
    assert search[0].from_step == warmup
    assert (last.from_step, last.until_step) == (start, total)
    assert last.kind is DecisionKind.COMMIT and last.info["phase"] == "anneal"
    assert last.lr_end == final_lr
    assert last.lr == pytest.approx(run.centers[-1], rel=1e-12)
    assert last.lr_at(total - 1) == pytest.approx(final_lr + (last.lr - final_lr) / (total - start))
    assert all(d.until_step is not None and d.until_step <= start for d in search)
    assert search[-1].until_step == start
    assert run.ctl.done
    for plan in (Plan(horizon=start, last_step=start), Plan(horizon=total + 5, last_step=total)):
        assert run.ctl.propose(plan) is None


def test_without_anneal_the_search_runs_to_total_steps_and_is_done() -> None:
    config = _config(0.05, tau=50, total_steps=520, anneal_fraction=0.0)
    run = Run(StagewiseLR(config), Sim(1))
    run.advance(519)
    assert run.decisions[-1].until_step == 520
    assert run.decisions[-1].info["phase"] == "search"
    assert run.ctl.done
    assert run.ctl.propose(Plan(horizon=519, last_step=519)) is None


def test_done_only_after_the_anneal_is_accepted() -> None:
    config = StagewiseConfig(init_lr=0.01, tau=40, total_steps=100, anneal_fraction=0.5)
    ctl = StagewiseLR(config)
    d = ctl.propose(Plan(horizon=-1, last_step=-1))
    assert d is not None and (d.from_step, d.until_step) == (0, 40)
    ctl.accept(d.with_version(1))
    assert not ctl.done
    _feed(ctl, range(0, 40), lambda t: 1.0)
    d = ctl.propose(Plan(horizon=39, last_step=39))
    assert d is not None and (d.from_step, d.until_step) == (40, 50)
    ctl.accept(d.with_version(2))
    assert not ctl.done
    d = ctl.propose(Plan(horizon=40, last_step=40))
    assert d is not None and (d.from_step, d.until_step, d.lr_end) == (50, 100, 0.0)
    assert not ctl.done  # proposing is not accepting
    ctl.accept(d.with_version(3))
    assert ctl.done and ctl.summary()["finished"]


# -- 6. a blow-up backs off at once -------------------------------------------------------


def _blowup_run(spike: bool) -> Run:
    config = StagewiseConfig(init_lr=0.01, tau=40)  # lead 10; tails [from+20, from+30)

    def loss(step: int, lr: float) -> float:
        value = 2.0 / (1 + 0.01 * step)
        if spike and 210 <= step < 240:  # stage 5 = [200, 240), probe index 1
            value *= 2.0
        return value

    run = Run(StagewiseLR(config), Scripted(loss))
    run.advance(400)
    return run


def test_loss_blowup_drops_the_center_immediately() -> None:
    calm, spiked = _blowup_run(False), _blowup_run(True)
    assert calm.decisions[5].from_step == spiked.decisions[5].from_step == 200
    assert calm.decisions[5].stage % 4 == 1  # not a block end: no regular update there
    before = spiked.centers[5]
    assert calm.centers[6] == calm.centers[5] == before
    # The next decision, made at step 230, already has the lower center.
    assert spiked.centers[6] < before / 1.5, spiked.centers[4:8]
    assert spiked.decisions[6].info["center_lr"] < before / 1.5
    assert spiked.decisions[6].lr is not None and spiked.decisions[5].lr is not None
    assert spiked.decisions[6].lr < spiked.decisions[5].lr


def _noisy_blowup_run(seed: int) -> Run:
    """LR-independent loss with 1% noise, and one stage (5) whose loss doubles."""
    rng = np.random.default_rng(seed)

    def loss(step: int, lr: float) -> float:
        value = 2.0 / (1 + 0.01 * step) * math.exp(0.01 * float(rng.standard_normal()))
        return value * 2.0 if 210 <= step < 240 else value

    run = Run(StagewiseLR(StagewiseConfig(init_lr=0.01, tau=40)), Scripted(loss))
    run.advance(40 * 20)
    return run


def test_one_blowup_backs_off_once_not_in_a_cascade() -> None:
    # The blown-up stage must not stay in the fit and drag the center down block after
    # block once the LR no longer matters.
    ratios = []
    for seed in SEEDS:
        run = _noisy_blowup_run(seed)
        after = run.centers[6]
        assert after < run.centers[5] / 1.5
        ratios.append(min(run.centers[6:18]) / after)
    assert statistics.median(ratios) > 1 / 1.5, ratios


def test_probes_stay_within_step_factor_of_the_center() -> None:
    # Moves may speed up across decades; a probe never multiplies the LR by more than
    # step_factor, so the search never tries 8x the LR it trusts in a live run.
    config = _config(GOOD_LR * 30, total_steps=40 * TAU)
    run = _simulate(config, 0, 40 * TAU)
    factors = [d.info["step_factor"] for d in run.decisions if d.info["phase"] == "search"]
    assert max(factors) > config.step_factor  # moves did grow past the probe size
    for d in run.decisions:
        if d.info["phase"] == "search":
            assert d.lr is not None
            ratio = d.lr / d.info["center_lr"]
            assert 1 / config.step_factor - 1e-12 <= ratio <= config.step_factor + 1e-12, d


def test_divergent_start_recovers() -> None:
    init = 2 * LR_DIV
    steps = 60 * TAU
    config = _config(init, lr_max=100.0, total_steps=steps)
    runs = [_simulate(config, seed, steps) for seed in SEEDS]
    first_safe = [next(i for i, c in enumerate(r.centers) if c < LR_DIV) for r in runs]
    finals = [r.sim.expected for r in runs]
    best = _annealed(GOOD_LR, steps, 0.2)
    assert max(first_safe) <= 8, first_safe
    assert statistics.median(finals) < best + 0.25 * (_annealed(init, steps, 0.2) - best)
    assert statistics.median(finals) < 1.0, finals


# -- 7. validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"init_lr": 0.0}, "init_lr=0.0"),
        ({"init_lr": -1e-3}, "init_lr=-0.001"),
        ({"init_lr": float("nan")}, "init_lr=nan"),
        ({"init_lr": 0.5, "lr_min": 1.0, "lr_max": 10.0}, "init_lr=0.5"),
        ({"init_lr": 20.0, "lr_min": 1.0, "lr_max": 10.0}, "init_lr=20.0"),
        ({"init_lr": 1e-3, "lr_min": 0.0, "lr_max": 1.0}, "lr_min=0.0"),
        ({"init_lr": 1e-3, "tau": 3}, "tau=3"),
        ({"init_lr": 1e-3, "tau": 2.5}, "tau=2.5"),
        ({"init_lr": 1e-3, "anneal_fraction": 1.0}, "anneal_fraction=1.0"),
        ({"init_lr": 1e-3, "anneal_fraction": -0.1}, "anneal_fraction=-0.1"),
        ({"init_lr": 1e-3, "step_factor": 1.0}, "step_factor=1.0"),
        ({"init_lr": 1e-3, "step_factor": float("nan")}, "step_factor=nan"),
        ({"init_lr": 1e-3, "min_step_factor": 0.9}, "min_step_factor=0.9"),
        ({"init_lr": 1e-3, "window": 3}, "window=3"),
        ({"init_lr": 1e-3, "tau": 40, "lead": 20}, "lead=20"),
        ({"init_lr": 1e-3, "lead": 0}, "lead=0"),
        ({"init_lr": 1e-3, "total_steps": 50, "warmup_steps": 50}, "total_steps=50"),
        ({"init_lr": 1e-3, "warmup_steps": -1}, "warmup_steps=-1"),
        ({"init_lr": 1e-3, "tau": 5000, "total_steps": 1000}, "tau=5000 is longer than the run"),
        ({"init_lr": 1e-3, "final_lr": -1e-4}, "final_lr=-0.0001"),
        ({"init_lr": 1e-3, "final_lr": float("inf")}, "final_lr=inf"),
    ],
)
def test_config_errors_name_the_bad_value(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        StagewiseConfig(**settings)


def test_good_config_is_accepted() -> None:
    config = StagewiseConfig(init_lr=3e-4, tau=4, total_steps=10, warmup_steps=9, lead=1)
    assert config.bounds == pytest.approx((3e-6, 3e-2))
    assert StagewiseConfig(init_lr=3e-4, tau=100).lead_steps == 25


def _valid_state() -> dict[str, Any]:
    run = Run(StagewiseLR(_config(0.01)), Sim(0))
    run.advance(6 * TAU)
    state = json.loads(json.dumps(run.ctl.state_dict()))
    assert state["stages"] and state["history"]
    return state


def _with(**changes: Any) -> dict[str, Any]:
    state = _valid_state()
    state.update(changes)
    return state


def _without(key: str) -> dict[str, Any]:
    state = _valid_state()
    del state[key]
    return state


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "state",
        [],
        {},
        {"config": 5},
        {"config": {"init_lr": 0.01, "nope": 1}},
        _without("mu"),
        _without("stages"),
        _with(mu="high"),
        _with(mu=float("nan")),
        _with(delta=None),
        _with(last_move=2),
        _with(reports_seen=1.5),
        _with(finished="yes"),
        _with(prev_tail="x"),
        _with(stages="none"),
        _with(stages=[{"stage": 0}]),
        _with(history=[[1.0, 2.0]]),
        _with(history=[[1.0, 2.0, 3.0, "x"]]),
        _with(pre={"0": 1.0}),
    ],
)
def test_load_state_dict_rejects_garbage(garbage: Any) -> None:
    ctl = StagewiseLR(_config(0.02))
    before = _snapshot(ctl)
    with pytest.raises(ConfigError):
        ctl.load_state_dict(garbage)
    assert _snapshot(ctl) == before  # a failed load changes nothing


def test_load_state_dict_rejects_a_bad_stored_config_by_name() -> None:
    state = _valid_state()
    state["config"]["tau"] = 2
    with pytest.raises(ConfigError, match=re.escape("tau=2")):
        StagewiseLR(_config(0.02)).load_state_dict(state)


def test_decisions_are_json_data() -> None:
    run = _simulate(_config(0.01, total_steps=20 * TAU), 0, 20 * TAU)
    for d in run.decisions:
        json.dumps(dict(d.info))
        assert replace(d, version=0) == replace(run.decisions[d.stage], version=0)
