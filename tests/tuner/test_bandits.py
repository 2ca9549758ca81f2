"""The shared suite every mixture bandit passes, on a synthetic non-stationary bandit.

No redis, ray or torch: :class:`Env` stands in for the training workers. There are four arms;
each has a true value ``mu`` per phase, and the best arm changes at 1/3 and 2/3 of the run
(:data:`MEANS`: ``a`` is best, then ``d``, which was the worst, then ``b``). Each step, each
of two ranks draws a batch of :data:`BATCH` examples from the mixture in force
(multinomial), and reports, for every arm it drew, ``arm_count/<arm>`` and the signal the
controller's reward reads, with noise shrinking like ``1/sqrt(count)``:

- ``advantage``: ``arm_adv = mu + noise``;
- ``loss`` (ODM): ``arm_loss = 2 + 2 mu + noise``, a language-model-like loss scale;
- ``learning_progress`` (and the other progress rewards): ``arm_loss`` follows a level
  that decays at a rate ``∝ mu`` (for ``absolute_progress_per_sample``, ``∝ mu`` times the
  arm's share over an even share: its progress comes from its own examples);
- ``intermediate_difficulty``: ``arm_success`` is a binomial rate ``s`` with ``4s(1-s) = mu``.

plus ``mixture_version``, the version of the decision the batch was drawn under. The head
is mimicked as in ``test_stagewise``: before each step it asks ``propose`` with the horizon
at the last trained step, versions and accepts what it gets; reports reach the controller
in batches of :data:`FLUSH` steps.

Regret is measured per step on the mixture's expected value, ``max(mu) - w·mu``, summed over
the run, and compared with the uniform mixture's; claims are on the median over
:data:`SEEDS`. The bounds (:data:`REGRET_BOUND`, :data:`LAG_BOUND`) are the measured values
plus a margin; SEC at ``T = 1`` and ODM are soft by design (SEC's Boltzmann policy over
rewards in ``[0, 1]`` puts at most ``e`` times more weight on the best arm than on the
worst; ODM's ``1/pi`` factor and its exploration ``eps_t`` keep the mixture near uniform), so
their bounds are close to 1; they still fail for a controller that does not learn.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import statistics
from typing import Any

import numpy as np
import pytest

from tuner.controllers.base import Plan
from tuner.controllers.mixture import ALGORITHMS, DEFAULT_MIXTURE, BanditMixture
from tuner.controllers.rewards import REWARDS
from tuner.records import Decision, DecisionKind, Report

ARMS = ("a", "b", "c", "d")
MEANS = (
    (0.8, 0.5, 0.35, 0.2),
    (0.35, 0.2, 0.5, 0.8),
    (0.5, 0.8, 0.2, 0.35),
)
TAU = 20
PHASE_STAGES = 12
STEPS = TAU * PHASE_STAGES * len(MEANS)
RANKS = 2
BATCH = 16  # examples per rank per step
FLUSH = 4  # steps per batch of reports
SEEDS = range(5)

# case -> (algorithm, config overrides). SEC runs at both of the paper's temperatures.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sec": ("sec", {}),
    "sec-T0.4": ("sec", {"temperature": 0.4}),
    "exp3": ("exp3", {}),
    "exp3s": ("exp3s", {}),
    "odm": ("odm", {}),
    "ducb": ("ducb", {}),
    "dts": ("dts", {}),
    # tautune's default (DEFAULT_MIXTURE): its last quarter plays the run's average mixture,
    # which costs regret here, where the best arm changes at two thirds of the run
    "default": ("exp3s", {k: v for k, v in DEFAULT_MIXTURE.items() if k != "method"}),
}
# Median over SEEDS of regret / uniform regret must be at most this (measured, then rounded
# up with a margin: sec 0.887, sec-T0.4 0.715, exp3 0.858, exp3s 0.660, odm 0.971,
# ducb 0.377, dts 0.400, default 0.636).
REGRET_BOUND = {
    "sec": 0.92,
    "sec-T0.4": 0.78,
    "exp3": 0.92,
    "exp3s": 0.75,
    "odm": 0.985,
    "ducb": 0.5,
    "dts": 0.5,
    "default": 0.72,
}
# After each switch, the new best arm has the largest weight in one of the first LAG_BOUND
# stages that start after it, in every seed (measured maxima: sec 2, sec-T0.4 2, exp3s 7,
# odm 1, ducb 3, dts 5). EXP3 does not track (see test_exp3s_tracks_where_exp3_does_not).
LAG_BOUND = {"sec": 3, "sec-T0.4": 3, "exp3s": 8, "odm": 2, "ducb": 5, "dts": 7}


class Env:
    """The synthetic workers of the module docstring."""

    def __init__(self, seed: int, signal: str, noise: float = 0.3) -> None:
        self.rng = np.random.default_rng(1000 + seed)
        self.signal = signal
        self.noise = noise
        self.level = np.full(len(ARMS), 3.0)

    @staticmethod
    def means(step: int) -> np.ndarray:
        return np.asarray(MEANS[min(step * len(MEANS) // STEPS, len(MEANS) - 1)])

    def batch(self, step: int, weights: np.ndarray, rank: int) -> dict[str, float]:
        mu = self.means(step)
        if rank == 0:
            # per-sample progress only means something where the arm's own examples drive
            # its progress: there, the level falls with the arm's share (as much as in the
            # other envs at an even share)
            drive = len(ARMS) * weights if self.signal.endswith("per_sample") else 1.0
            self.level *= np.exp(-0.003 * mu * drive)
        counts = self.rng.multinomial(BATCH, weights)
        out: dict[str, float] = {}
        for i, arm in enumerate(ARMS):
            n = int(counts[i])
            if n == 0:
                continue
            out[f"arm_count/{arm}"] = n
            z = float(self.rng.standard_normal()) / math.sqrt(n)
            if self.signal == "advantage":
                out[f"arm_adv/{arm}"] = max(mu[i] + self.noise * z, 0.0)
            elif self.signal == "loss":
                out[f"arm_loss/{arm}"] = 2 + 2 * mu[i] + self.noise * z
            elif self.signal.endswith("progress") or self.signal.endswith("per_sample"):
                out[f"arm_loss/{arm}"] = self.level[i] * (1 + 0.02 * z)
            elif self.signal == "intermediate_difficulty":
                rate = 0.5 * (1 - math.sqrt(1 - mu[i]))
                out[f"arm_success/{arm}"] = self.rng.binomial(n, rate) / n
            else:
                raise AssertionError(f"no signal for reward {self.signal!r}")
        return out


def _snapshot(ctl: BanditMixture) -> str:
    return json.dumps(ctl.state_dict(), sort_keys=True, allow_nan=False)


class Run:
    """One run with the controller in the loop, step by step, like the head."""

    def __init__(self, ctl: BanditMixture, env: Env, *, check_pure: bool = False) -> None:
        self.ctl, self.env, self.check_pure = ctl, env, check_pure
        self.decisions: list[Decision] = []
        self.buffer: list[Report] = []
        self.last_reported = -1
        self.regret = 0.0
        self.uniform_regret = 0.0
        self.step = 0

    def mixture_at(self, step: int) -> tuple[np.ndarray, int]:
        for d in reversed(self.decisions):
            if d.covers(step) and d.mixture is not None:
                return np.array([d.mixture[a] for a in ARMS]), d.version
        return np.full(len(ARMS), 1 / len(ARMS)), 0  # the base mixture, version 0

    def advance(self, steps: int) -> None:
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
            weights, version = self.mixture_at(s)
            mu = self.env.means(s)
            self.regret += float(mu.max() - weights @ mu)
            self.uniform_regret += float(mu.max() - mu.mean())
            for rank in range(RANKS):
                metrics = self.env.batch(s, weights, rank)
                metrics["mixture_version"] = version
                self.buffer.append(Report(rank=rank, step=s, metrics=metrics, ts=0.0))
            if (s + 1) % FLUSH == 0:
                self.flush()
            self.step += 1

    def fork(self, ctl: BanditMixture) -> Run:
        """A copy of this run (same workers, same unsent reports) driving ``ctl``."""
        other = Run(ctl, copy.deepcopy(self.env), check_pure=self.check_pure)
        other.decisions = list(self.decisions)
        other.buffer = list(self.buffer)
        other.last_reported, other.step = self.last_reported, self.step
        other.regret, other.uniform_regret = self.regret, self.uniform_regret
        return other

    def flush(self) -> None:
        if self.buffer:
            self.ctl.observe(self.buffer)
            self.last_reported = self.buffer[-1].step
            self.buffer = []


def _controller(case: str, seed: int, **overrides: Any) -> BanditMixture:
    algorithm, settings = CASES[case]
    cls = ALGORITHMS[algorithm]
    settings = {"arms": ARMS, "tau": TAU, "total_steps": STEPS, "seed": seed, **settings}
    return cls(cls.config_type(**{**settings, **overrides}))


def _run(
    case: str, seed: int, steps: int = STEPS, *, check_pure: bool = False, **overrides: Any
) -> Run:
    ctl = _controller(case, seed, **overrides)
    run = Run(ctl, Env(seed, ctl.config.reward), check_pure=check_pure)
    run.advance(steps)
    return run


@functools.cache
def _full_run(case: str, seed: int) -> Run:
    return _run(case, seed)


def _lags(run: Run, arms: tuple[str, ...] = ARMS) -> list[int | None]:
    """Per switch: decisions after it until the new best arm (of ``arms``) leads, or None."""
    lags: list[int | None] = []
    for phase in range(1, len(MEANS)):
        mu = dict(zip(ARMS, MEANS[phase], strict=True))
        best = max(arms, key=mu.__getitem__)
        start, end = phase * STEPS // len(MEANS), (phase + 1) * STEPS // len(MEANS)
        after = [d for d in run.decisions if start <= d.from_step < end]
        leads = [
            i for i, d in enumerate(after) if d.mixture and max(arms, key=d.mixture.get) == best
        ]
        lags.append(leads[0] if leads else None)
    return lags


def _ratio(run: Run) -> float:
    return run.regret / run.uniform_regret


def test_every_algorithm_is_covered() -> None:
    assert {algorithm for algorithm, _ in CASES.values()} == set(ALGORITHMS)


@pytest.mark.parametrize("case", CASES)
def test_regret_is_below_uniform(case: str) -> None:
    ratios = [_ratio(_full_run(case, seed)) for seed in SEEDS]
    assert statistics.median(ratios) <= REGRET_BOUND[case], ratios
    assert max(ratios) < 1.0, ratios


@pytest.mark.parametrize("case", CASES)
def test_weights_are_valid_at_every_decision(case: str) -> None:
    for seed in SEEDS:
        run = _full_run(case, seed)
        floor = run.ctl.config.floor_weight
        assert floor == pytest.approx(0.1 / len(ARMS))
        assert len(run.decisions) == STEPS // TAU and run.ctl.done
        for i, d in enumerate(run.decisions):
            assert d.kind is DecisionKind.COMMIT and d.lr is None and d.lr_end is None
            assert d.stage == i and d.controller == CASES[case][0]
            assert d.from_step == i * TAU and d.until_step == (i + 1) * TAU
            assert d.mixture is not None and list(d.mixture) == list(ARMS)
            weights = np.array(list(d.mixture.values()))
            assert np.all(np.isfinite(weights)), d.mixture
            assert np.all(weights >= floor - 1e-12), d.mixture
            assert abs(weights.sum() - 1.0) <= 1e-9, d.mixture
            json.dumps(dict(d.info), allow_nan=False)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            marks=pytest.mark.xfail(
                strict=True,
                reason="EXP3 competes with the best fixed arm; following a best arm that "
                "changes is what EXP3.S's weight sharing adds",
            ),
        )
        if case == "exp3"
        else case
        for case in CASES
    ],
)
def test_new_best_arm_leads_soon_after_each_switch(case: str) -> None:
    bound = LAG_BOUND.get(case, PHASE_STAGES // 2)
    for seed in SEEDS:
        lags = _tracked(case, _lags(_full_run(case, seed)))
        assert all(lag is not None and lag <= bound for lag in lags), (seed, lags)


def _tracked(case: str, lags: list[int | None]) -> list[int | None]:
    """The lags a case is held to: the default plays the run's average mixture from 3/4 of
    the run, so the switch at 2/3 is followed by averaged stages, not tracked (by design;
    ``test_bandit_mechanics`` checks the average)."""
    return lags[:1] if case == "default" else lags


def test_exp3s_tracks_where_exp3_does_not() -> None:
    for seed in SEEDS:
        exp3 = [PHASE_STAGES if lag is None else lag for lag in _lags(_full_run("exp3", seed))]
        exp3s = _lags(_full_run("exp3s", seed))
        assert all(s is not None and s < e for s, e in zip(exp3s, exp3, strict=True))


@pytest.mark.parametrize("case", CASES)
def test_pinned_arms_keep_exactly_their_weight(case: str) -> None:
    pinned = {"c": 0.2}
    run = _run(case, 0, pinned=pinned)
    free = ("a", "b", "d")
    floor = run.ctl.config.floor_weight
    assert floor == pytest.approx(0.1 * 0.8 / 3)
    for d in run.decisions:
        assert d.mixture is not None
        assert d.mixture["c"] == 0.2  # exactly, not approximately
        assert all(d.mixture[a] >= floor - 1e-12 for a in free), d.mixture
        assert abs(sum(d.mixture.values()) - 1.0) <= 1e-9
    if case != "exp3":  # the free arms are still learned about
        lags = _tracked(case, _lags(run, free))
        assert all(lag is not None for lag in lags), lags


@pytest.mark.parametrize("case", CASES)
def test_propose_does_not_mutate(case: str) -> None:
    run = _run(case, 1, steps=STEPS // 3, check_pure=True)
    assert len(run.decisions) == PHASE_STAGES + 1  # the next one is proposed before the end


@pytest.mark.parametrize("case", CASES)
def test_state_round_trip_mid_run_gives_identical_future(case: str) -> None:
    first = _run(case, 2, steps=5 * TAU + 9)  # mid-stage, with a stage partly summed
    restored = _controller(case, seed=99)  # another seed: the state must bring its own
    restored.load_state_dict(json.loads(_snapshot(first.ctl)))
    second = first.fork(restored)
    assert _snapshot(second.ctl) == _snapshot(first.ctl)
    first.advance(STEPS - first.step)
    second.advance(STEPS - second.step)
    assert second.decisions == first.decisions
    assert _snapshot(second.ctl) == _snapshot(first.ctl)
    assert second.regret == first.regret


@pytest.mark.parametrize("reward", sorted(REWARDS))
@pytest.mark.parametrize("algorithm", ["exp3s", "ducb"])
def test_every_reward_drives_a_controller(algorithm: str, reward: str) -> None:
    case = algorithm
    overrides: dict[str, Any] = {"reward": reward}
    if reward == "loss":
        overrides["reward_scale"] = 0.5  # arm_loss = 2 + 2 mu: gaps of order 1 after scaling
    ratios = [_ratio(_run(case, seed, **overrides)) for seed in range(3)]
    # Per-sample progress moves examples off an arm as its level falls (equal marginal
    # value per example), which regret on mu alone counts against it: measured 0.80-0.85.
    bound = 0.9 if reward.endswith("per_sample") else 0.8
    assert statistics.median(ratios) < bound, ratios
