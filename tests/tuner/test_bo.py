"""The BO core over log-LR: finds a known optimum in a stated number of evaluations, q-batch
and progress inputs, argument errors, JSON state round trip, the bounded window, and the
classic AutoLRS choice. Pure torch/botorch: no Redis, no Ray."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from tuner.bo import Acquisition, LRSurrogate, autolrs_classic_pick, autolrs_classic_suggest
from tuner.errors import ConfigError

LR_STAR = 3e-3
BOUNDS = (1e-5, 1.0)
MAX_EVALS = 12  # evaluations allowed to land within FACTOR of LR_STAR (median over seeds)
FACTOR = 1.5
SEEDS = (1, 2, 3)  # seed 0's first quasi-random point lands near LR_STAR by chance


def bowl(lr: float, rng: np.random.Generator | None = None) -> float:
    """Loss of a 1-D function of log-LR: a quadratic bowl with its minimum at LR_STAR,
    plus N(0, 0.01) noise (about the loss gap between LR_STAR and LR_STAR * 1.5)."""
    noise = 0.0 if rng is None else float(rng.normal(0.0, 0.01))
    return 2.0 + 0.5 * math.log10(lr / LR_STAR) ** 2 + noise


def near(lr: float, target: float = LR_STAR, factor: float = FACTOR) -> bool:
    return max(lr / target, target / lr) <= factor


def evaluations_to_optimum(acquisition: Acquisition, seed: int) -> int:
    """Sequential suggest/observe until an evaluated LR is within FACTOR of LR_STAR."""
    rng = np.random.default_rng(seed)
    surrogate = LRSurrogate(BOUNDS, seed=seed)
    for n in range(1, MAX_EVALS + 4):
        (lr,) = surrogate.suggest(1, acquisition=acquisition)
        assert BOUNDS[0] <= lr <= BOUNDS[1]
        if near(lr):
            return n
        surrogate.observe(lr, bowl(lr, rng))
    return MAX_EVALS + 4  # not found


@pytest.mark.parametrize("acquisition", ["logei", "ucb"])
def test_sequential_suggestions_find_the_optimum_within_max_evals(acquisition: Acquisition) -> None:
    # measured: logei 8, 5, 4 and ucb 6, 7, 5 evaluations for seeds 1, 2, 3
    counts = [evaluations_to_optimum(acquisition, seed) for seed in SEEDS]
    assert statistics.median(counts) <= MAX_EVALS, counts
    assert max(counts) <= MAX_EVALS + 3, counts


def test_best_lr_is_the_minimum_of_the_posterior_mean() -> None:
    surrogate = LRSurrogate(BOUNDS)
    lrs = [10.0**e for e in np.linspace(-5, 0, 9)]
    rng = np.random.default_rng(0)
    surrogate.fit([[lr] for lr in lrs], [bowl(lr, rng) for lr in lrs])
    assert near(surrogate.best_lr())
    mean, std = surrogate.predict([LR_STAR, 1e-5])
    assert mean[0] == pytest.approx(2.0, abs=0.05) and mean[1] > mean[0] + 1
    assert all(s > 0 for s in std)
    assert near(surrogate.best_lr(bounds=(1e-2, 1.0)), 1e-2, 1.01)  # the edge nearest LR_STAR


@pytest.mark.parametrize("acquisition", ["logei", "ucb"])
def test_a_q_batch_is_k_distinct_lrs_in_the_bounds(acquisition: Acquisition) -> None:
    surrogate = LRSurrogate(BOUNDS, seed=1)
    for lr in (1e-4, 1e-3, 1e-2, 1e-1):
        surrogate.observe(lr, bowl(lr))
    lrs = surrogate.suggest(4, acquisition=acquisition, bounds=(1e-4, 1e-1))
    assert len(lrs) == 4 and lrs == sorted(lrs)
    assert all(1e-4 * (1 - 1e-9) <= lr <= 1e-1 * (1 + 1e-9) for lr in lrs)
    assert len({round(math.log(lr), 3) for lr in lrs}) == 4


def test_cold_start_is_a_seeded_sobol_sequence_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, other = LRSurrogate(BOUNDS, seed=5), LRSurrogate(BOUNDS, seed=5), LRSurrogate(BOUNDS)
    first = a.suggest(2)
    assert first == b.suggest(2) and first != other.suggest(2)
    a.observe(first[0], bowl(first[0]))
    assert a.suggest(1) == [b.suggest(2)[1]]  # the sequence continues where it was
    assert torch.equal(torch.get_rng_state(), state)


def test_progress_is_a_second_input_fixed_at_suggestion() -> None:
    surrogate = LRSurrogate(BOUNDS, use_progress=True, seed=0)
    X, y = [], []
    for progress in (0.1, 0.4):
        for lr in (1e-4, 1e-3, 1e-2, 1e-1):
            X.append([lr, progress])
            y.append(bowl(lr) - progress)  # loss falls as training goes on
    surrogate.fit(X, y)
    (lr,) = surrogate.suggest(1, progress=0.7)
    assert BOUNDS[0] <= lr <= BOUNDS[1]
    assert near(surrogate.best_lr(progress=0.7), LR_STAR, 2.0)
    mean_early, _ = surrogate.predict([1e-3], progress=0.1)
    mean_late, _ = surrogate.predict([1e-3], progress=0.4)
    assert mean_late[0] < mean_early[0]
    with pytest.raises(ConfigError, match="progress must be in"):
        surrogate.suggest(1)
    with pytest.raises(ConfigError, match="pass observe"):
        surrogate.observe(1e-3, 2.0)
    with pytest.raises(ConfigError, match=r"progress \(X\[:, 1\]\) must lie in \[0, 1\]"):
        surrogate.fit([[1e-3, 1.5]], [2.0])


def test_bad_shapes_and_arguments_are_named() -> None:
    surrogate = LRSurrogate(BOUNDS)
    with pytest.raises(ConfigError, match=r"X must be `n x d` with d=1 \(lr\), got shape `5 x 3`"):
        surrogate.fit(torch.ones(5, 3), torch.ones(5))
    with pytest.raises(ConfigError, match=r"y must be `n` with n=5 .* got shape `5 x 1`"):
        surrogate.fit(torch.ones(5, 1), torch.ones(5, 1))
    with pytest.raises(ConfigError, match="must be > 0"):
        surrogate.fit([[0.0]], [1.0])
    with pytest.raises(ConfigError, match="must be finite"):
        surrogate.fit([[1e-3]], [math.nan])
    with pytest.raises(ConfigError, match="without use_progress"):
        surrogate.observe(1e-3, 1.0, progress=0.5)
    with pytest.raises(ConfigError, match="no observations"):
        surrogate.best_lr()
    with pytest.raises(ConfigError, match="k must be an int >= 1, got k=0"):
        surrogate.suggest(0)
    with pytest.raises(ConfigError, match="acquisition must be one of"):
        surrogate.suggest(1, acquisition="ei")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="kappa must be finite and >= 0"):
        surrogate.suggest(1, acquisition="ucb", kappa=-1.0)
    with pytest.raises(ConfigError, match="must lie within the surrogate's"):
        surrogate.suggest(1, bounds=(1e-6, 1e-3))
    for bounds in ((1.0, 1e-5), (0.0, 1.0), (1e-5,)):
        with pytest.raises(ConfigError, match="bounds must be"):
            LRSurrogate(bounds)
    with pytest.raises(ConfigError, match="window must be an int >= 2"):
        LRSurrogate(BOUNDS, window=1)


@pytest.mark.parametrize("acquisition", ["logei", "ucb"])
def test_state_round_trip_gives_identical_next_suggestions(acquisition: Acquisition) -> None:
    surrogate = LRSurrogate(BOUNDS, seed=3)
    rng = np.random.default_rng(3)
    for lr in (2e-5, 1e-3, 0.3, 5e-2, 2e-4):
        surrogate.observe(lr, bowl(lr, rng))
    state = json.loads(json.dumps(surrogate.state_dict()))
    resumed = LRSurrogate(BOUNDS, seed=3)
    resumed.load_state_dict(state)
    assert resumed.observations() == surrogate.observations()
    assert resumed.total_observed == surrogate.total_observed == 5
    expected = surrogate.suggest(1, acquisition=acquisition)
    assert resumed.suggest(1, acquisition=acquisition) == expected
    with pytest.raises(ConfigError, match="state has seed=3, this one 0"):
        LRSurrogate(BOUNDS).load_state_dict(state)
    with pytest.raises(ConfigError, match="state format"):
        resumed.load_state_dict({**state, "format": 99})


def test_the_window_bounds_the_data_each_fit_sees() -> None:
    window = 8
    bounded, unbounded = LRSurrogate(BOUNDS, window=window), LRSurrogate(BOUNDS, window=1000)
    lrs = [10.0**e for e in np.linspace(-5, 0, 5 * window)]
    for i, lr in enumerate(lrs):
        bounded.observe(lr, bowl(lr))
        unbounded.observe(lr, bowl(lr))
        assert len(bounded) == min(i + 1, window)
    assert bounded.total_observed == 5 * window and len(unbounded) == 5 * window
    assert bounded.observations()[0] == lrs[-window:]  # the most recent ones
    bounded.best_lr()  # fits
    unbounded.best_lr()
    assert bounded._fitted().train_inputs[0].shape == (window, 1)
    assert unbounded._fitted().train_inputs[0].shape == (5 * window, 1)


def test_classic_autolrs_choice_fills_space_whatever_the_losses() -> None:
    lrs = [1e-5, 1.0]
    for losses in ([1.0, 9.0], [9.0, 1.0]):  # the mean does not matter at kappa = 1e6
        nxt = autolrs_classic_suggest(lrs, losses, bounds=BOUNDS)
        assert near(nxt, math.sqrt(1e-5 * 1.0), 1.3)  # the middle of the log range
    first = autolrs_classic_suggest([], [], bounds=BOUNDS, seed=2)
    assert first == autolrs_classic_suggest([], [], bounds=BOUNDS, seed=2)
    assert autolrs_classic_pick([1e-3, 1e-2, 1e-1], [2.0, 1.5, 3.0]) == 1e-2
    with pytest.raises(ConfigError, match="same length"):
        autolrs_classic_suggest([1e-3], [], bounds=BOUNDS)
    with pytest.raises(ConfigError, match="at least one candidate"):
        autolrs_classic_pick([], [])
