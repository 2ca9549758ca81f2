"""The noisy quadratic model: exact moments, sampled runs, checkpoints, the optimal schedule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tuner.bench.nqm import (
    NQM,
    NQMConfig,
    OptimalSchedule,
    _loss_and_grad,
    best_cosine,
    cosine_schedule,
    expected_curve,
    expected_loss_of_schedule,
    optimal_schedule,
)
from tuner.errors import ConfigError

SMALL = NQMConfig(dim=20, batch_size=10.0)


def _schedule(steps: int, seed: int, top: float = 1.9) -> np.ndarray:
    """A rough schedule: random LRs in [0, top), decaying on average."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, top, steps) * np.linspace(1.0, 0.05, steps)


def test_config_curvatures_and_validation() -> None:
    h = NQMConfig().curvatures()
    assert h.dtype == np.float64 and h.shape == (100,)
    assert h[0] == 1.0 and h[-1] == pytest.approx(0.01)
    assert NQMConfig().max_stable_lr() == 2.0
    h2 = NQMConfig(dim=10, power=2.0).curvatures()
    assert h2[-1] == pytest.approx(0.01) and h2[0] / h2[-1] == pytest.approx(100.0)
    assert NQMConfig(dim=5, power=-1.0).max_stable_lr() == pytest.approx(0.4)
    for bad in (
        {"dim": 0},
        {"dim": 2.5},
        {"power": math.nan},
        {"batch_size": 0.0},
        {"batch_size": math.inf},
        {"init_var": -1.0},
    ):
        with pytest.raises(ConfigError):
            NQMConfig(**bad)


def test_one_step_and_constant_lr_closed_forms() -> None:
    cfg = NQMConfig(dim=30, power=1.5, batch_size=4.0, init_var=2.0)
    h = cfg.curvatures()
    eta = 0.7
    one = 0.5 * h @ ((1 - eta * h) ** 2 * 2.0 + eta**2 * h / 4.0)
    assert expected_loss_of_schedule(cfg, [eta]) == pytest.approx(one, rel=1e-13)
    # Constant LR: m_T = a^T m_0 + b (1 - a^T) / (1 - a), a geometric series.
    steps, a, b = 500, (1 - eta * h) ** 2, eta**2 * h / 4.0
    m_t = a**steps * 2.0 + b * (1 - a**steps) / (1 - a)
    assert expected_loss_of_schedule(cfg, np.full(steps, eta)) == pytest.approx(
        0.5 * h @ m_t, rel=1e-10
    )


def test_moments_match_monte_carlo() -> None:
    """4000 SGD trajectories, vectorised: E[θ_i²] per coordinate agrees with the recursion."""
    cfg, n = SMALL, 4000
    h = cfg.curvatures()
    lrs = _schedule(200, seed=1)
    rng = np.random.default_rng(123)
    theta = rng.standard_normal((n, cfg.dim)) * math.sqrt(cfg.init_var)
    run = NQM(cfg)
    for t, lr in enumerate(lrs):
        noise = rng.standard_normal((n, cfg.dim)) * np.sqrt(h / cfg.batch_size)
        theta = theta - lr * (h * theta + noise)
        run.step(float(lr))
        if t in (0, 9, 49, 199):
            m = np.array(run.state_dict()["moments"])
            mc = np.mean(theta**2, axis=0)
            # θ_i is a zero-mean Gaussian, so Var(θ_i²) = 2 m_i².
            assert np.all(np.abs(mc - m) <= 5 * m * math.sqrt(2 / n)), (t, mc / m)
            loss_mc = 0.5 * (theta**2) @ h
            se = loss_mc.std() / math.sqrt(n)
            assert abs(loss_mc.mean() - run.expected_loss()) <= 5 * se


def test_reported_losses_average_to_expected_loss() -> None:
    """step() reports the sampled loss before the update; over seeds it averages to E[L]."""
    cfg, runs, lrs = NQMConfig(dim=10, batch_size=2.0), 400, _schedule(60, seed=2)
    assert len({NQM(cfg, seed=s).step(0.1) for s in range(3)}) == 3  # seeds differ
    losses = np.empty((runs, lrs.size))
    for s in range(runs):
        run = NQM(cfg, seed=s)
        losses[s] = [run.step(float(lr)) for lr in lrs]
    before = np.concatenate(
        [[0.5 * cfg.init_var * cfg.curvatures().sum()], expected_curve(cfg, lrs)]
    )
    se = losses.std(axis=0) / math.sqrt(runs)
    assert np.all(np.abs(losses.mean(axis=0) - before[:-1]) <= 5 * se)
    run = NQM(cfg, seed=0)
    assert [run.step(float(lr)) for lr in lrs] == losses[0].tolist()  # deterministic per seed


def test_schedule_functions_match_stepping() -> None:
    cfg = NQMConfig(dim=50, power=0.8, batch_size=3.0, init_var=0.5)
    lrs = _schedule(300, seed=3, top=cfg.max_stable_lr())
    run = NQM(cfg, seed=7)
    assert run.expected_loss() == pytest.approx(0.25 * cfg.curvatures().sum(), rel=1e-14)
    stepped = []
    for lr in lrs:
        run.step(float(lr))
        stepped.append(run.expected_loss())
    assert run.steps == 300
    curve = expected_curve(cfg, lrs)
    assert curve.shape == (300,)
    np.testing.assert_allclose(curve, stepped, rtol=1e-12)
    assert expected_loss_of_schedule(cfg, list(lrs)) == pytest.approx(stepped[-1], rel=1e-12)


def test_state_dict_restore_is_bit_exact() -> None:
    cfg = NQMConfig(dim=40, batch_size=5.0)
    lrs = [float(x) for x in _schedule(80, seed=4)]
    run = NQM(cfg, seed=11)
    for lr in lrs[:50]:
        run.step(lr)
    state = run.state_dict()
    snapshot = json.dumps(state)
    expected = [(run.step(lr), run.expected_loss()) for lr in lrs[50:]]
    assert json.dumps(state) == snapshot  # a copy: stepping on did not change it
    for restored_from in (state, json.loads(snapshot)):
        other = NQM(cfg, seed=999)
        other.load_state_dict(restored_from)
        assert other.steps == 50
        assert [(other.step(lr), other.expected_loss()) for lr in lrs[50:]] == expected
    state["theta"][0] += 1.0  # mutating the dict does not reach a run loaded from it
    other = NQM(cfg, seed=999)
    other.load_state_dict(json.loads(snapshot))
    assert other.step(lrs[50]) == expected[0][0]


def test_load_state_dict_rejects_bad_states() -> None:
    run = NQM(SMALL)
    good = run.state_dict()
    bad_states = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "rng"},
        NQM(NQMConfig(dim=20, batch_size=11.0)).state_dict(),
        {**good, "theta": good["theta"][:-1]},
        {**good, "steps": -1},
        {**good, "rng": {"bit_generator": "nope"}},
        {**good, "moments": ["a"] * 20},
        {**good, "config": "SMALL"},
    ]
    for bad in bad_states:
        with pytest.raises(ConfigError):
            run.load_state_dict(bad)
    assert run.state_dict() == good  # a rejected state changes nothing


def test_bad_arguments_raise_config_error() -> None:
    run = NQM(SMALL)
    for lr in (-0.1, math.nan, math.inf):
        with pytest.raises(ConfigError):
            run.step(lr)
    assert run.steps == 0
    run.step(0.0)  # zero is a valid LR
    for lrs in ([], [0.1, -0.1], [0.1, math.nan], [[0.1, 0.2]]):
        with pytest.raises(ConfigError):
            expected_loss_of_schedule(SMALL, lrs)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            expected_curve(SMALL, lrs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        optimal_schedule(SMALL, 0)
    with pytest.raises(ConfigError):
        optimal_schedule(SMALL, 10, iters=0)
    with pytest.raises(ConfigError):
        best_cosine(SMALL, 0)
    with pytest.raises(ConfigError):
        best_cosine(SMALL, 10, peaks=[0.1, -1.0])
    with pytest.raises(ConfigError):
        NQM(SMALL, seed=-1)


def test_adjoint_gradient_matches_finite_differences() -> None:
    cfg = NQMConfig(dim=30, batch_size=3.0)
    z = np.log(_schedule(60, seed=5) + 0.01)
    loss, grad = _loss_and_grad(z, cfg)
    assert loss == pytest.approx(expected_loss_of_schedule(cfg, np.exp(z)), rel=1e-12)
    eps = 1e-6
    for t in (0, 1, 17, 40, 59):
        dz = np.zeros_like(z)
        dz[t] = eps
        fd = (_loss_and_grad(z + dz, cfg)[0] - _loss_and_grad(z - dz, cfg)[0]) / (2 * eps)
        assert grad[t] == pytest.approx(fd, rel=1e-5, abs=1e-12 * loss)


@pytest.fixture(scope="module")
def opt() -> OptimalSchedule:
    return optimal_schedule(NQMConfig(), 2000)


def _perturbations(lrs: np.ndarray, top: float) -> list[np.ndarray]:
    """Raise or lower each twentieth of the schedule by 5%, and ten random ±2% jitters."""
    rng = np.random.default_rng(6)
    out = []
    for block in np.array_split(np.arange(lrs.size), 20):
        for factor in (0.95, 1.05):
            p = lrs.copy()
            p[block] *= factor
            out.append(p)
    out += [lrs * np.exp(0.02 * rng.standard_normal(lrs.size)) for _ in range(10)]
    return [np.minimum(p, top) for p in out]


def test_optimal_schedule_beats_constant_and_cosine(opt: OptimalSchedule) -> None:
    cfg, steps = NQMConfig(), 2000
    assert opt.lrs.shape == (steps,)
    assert np.all(opt.lrs > 0) and np.all(opt.lrs < cfg.max_stable_lr())
    assert opt.final_loss == pytest.approx(expected_loss_of_schedule(cfg, opt.lrs), rel=1e-12)
    # The best constant LR is what it says: exact loss, and no better constant nearby.
    const = expected_loss_of_schedule(cfg, np.full(steps, opt.best_constant_lr))
    assert opt.best_constant_loss == const
    for factor in (0.99, 1.01):
        near = expected_loss_of_schedule(cfg, np.full(steps, opt.best_constant_lr * factor))
        assert near > opt.best_constant_loss
    peak, cos_loss = best_cosine(cfg, steps)
    assert cos_loss == pytest.approx(expected_loss_of_schedule(cfg, cosine_schedule(peak, steps)))
    # The documented defaults: noise matters, so the optimum is far below a constant LR.
    assert opt.final_loss * 2 <= opt.best_constant_loss
    assert opt.final_loss < cos_loss * 0.9
    # "High, then decay": at the stability edge at first, a hundred times lower at the end.
    assert np.all(opt.lrs[:40] > 0.99 * cfg.max_stable_lr())
    assert opt.lrs[-1] < opt.lrs[0] / 100
    assert np.all(np.diff(opt.lrs[100:]) <= 1e-12)


def test_optimal_schedule_is_locally_optimal(opt: OptimalSchedule) -> None:
    cfg = NQMConfig()
    top = float(opt.lrs.max())
    losses = [expected_loss_of_schedule(cfg, p) for p in _perturbations(opt.lrs, top)]
    assert min(losses) >= opt.final_loss * (1 - 1e-3)
    # The same perturbations do improve a good but suboptimal schedule: the check has teeth.
    peak, cos_loss = best_cosine(cfg, 2000)
    cosine = cosine_schedule(peak, 2000)
    cos_losses = [expected_loss_of_schedule(cfg, p) for p in _perturbations(cosine, top)]
    assert min(cos_losses) < cos_loss * (1 - 1e-3)


@pytest.mark.parametrize("steps", [1, 3])
def test_optimal_schedule_tiny_horizons(steps: int) -> None:
    """For one step the optimum is the best constant; brute force agrees for a few steps."""
    cfg = NQMConfig(dim=8, batch_size=5.0)
    res = optimal_schedule(cfg, steps)
    assert res.final_loss <= res.best_constant_loss * (1 + 1e-9)
    grid = np.linspace(0.01, cfg.max_stable_lr() * 0.999, 60)
    mesh = np.stack(np.meshgrid(*[grid] * steps, indexing="ij"), -1).reshape(-1, steps)
    brute = min(expected_loss_of_schedule(cfg, row) for row in mesh[:: max(1, len(mesh) // 4000)])
    assert res.final_loss <= brute * (1 + 1e-9)
