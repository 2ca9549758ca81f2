"""Forecasters: parameter recovery, anneal effect, cleaning, degenerate inputs, real curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuner.errors import ConfigError
from tuner.forecast import (
    DEFAULT_FORECASTER,
    AnnealingFit,
    AnnealingForecaster,
    CurveShape,
    ExponentialFit,
    ExponentialForecaster,
    annealing_areas,
    compare_on_suffixes,
)

TRUE_EXP = (1.5, -0.03, 2.0)  # a, b, c; t in steps
TRUE_LAW = {"l0": 2.0, "a": 0.5, "alpha": 0.5, "c": 3.0}


def exp_curve(n: int = 100, noise: float = 0.0, seed: int = 0) -> tuple[list[int], list[float]]:
    a, b, c = TRUE_EXP
    t = np.arange(n)
    y = a * np.exp(b * t) + c + np.random.default_rng(seed).normal(0, noise, n)
    return t.tolist(), y.tolist()


def wsd_schedule(n: int = 1000, decay_from: int = 600, peak: float = 1e-3) -> np.ndarray:
    """Constant ``peak`` then linear decay to ``peak/10`` (warmup-stable-decay without warmup)."""
    i = np.arange(n)
    return np.where(i < decay_from, peak, peak - 0.9 * peak * (i - decay_from) / (n - decay_from))


def law_curve(lrs: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    s1, s2 = annealing_areas(lrs)
    y = TRUE_LAW["l0"] + TRUE_LAW["a"] * s1 ** -TRUE_LAW["alpha"] - TRUE_LAW["c"] * s2
    return y + np.random.default_rng(seed).normal(0, noise, lrs.shape[0])


# --- exponential -------------------------------------------------------------------------


def test_exponential_recovers_noise_free_curve() -> None:
    fit = ExponentialForecaster().fit(*exp_curve())
    assert fit.shape is CurveShape.DECAYING and fit.n_outliers == 0
    np.testing.assert_allclose([fit.a, fit.b, fit.c], TRUE_EXP, rtol=1e-5)


def test_exponential_recovers_noisy_curves_median_over_seeds() -> None:
    fits = [ExponentialForecaster().fit(*exp_curve(noise=0.02, seed=s)) for s in range(7)]
    med = np.median([[f.a, f.b, f.c] for f in fits], axis=0)
    np.testing.assert_allclose(med, TRUE_EXP, rtol=0.02)
    assert all(abs(f.b / TRUE_EXP[1] - 1) < 0.1 for f in fits)
    assert np.median([f.rmse for f in fits]) == pytest.approx(0.02, rel=0.25)


def test_exponential_predicts_at_absolute_steps() -> None:
    t, y = exp_curve()
    shifted = [s + 500 for s in t]
    fit = ExponentialForecaster().fit(shifted, y)
    assert fit.t0 == 500
    assert fit.predict(500 + 200) == pytest.approx(1.5 * np.exp(-0.03 * 200) + 2.0, rel=1e-5)
    assert fit.predict(np.array([500.0, 600.0])).shape == (2,)


def test_spike_is_cleaned_and_does_not_wreck_the_fit() -> None:
    t, y = exp_curve(noise=0.01, seed=3)
    y[40] += 3.0
    y[70] += 1.5
    clean = ExponentialForecaster().fit(t, y)
    raw = ExponentialForecaster(clean=False).fit(t, y)
    assert clean.n_outliers >= 2
    np.testing.assert_allclose([clean.a, clean.b, clean.c], TRUE_EXP, rtol=0.03)
    assert abs(raw.c - TRUE_EXP[2]) > 5 * abs(clean.c - TRUE_EXP[2])


def test_constant_curve_gets_flat_fallback() -> None:
    fit = ExponentialForecaster().fit([0, 1, 2, 3, 4], [2.5] * 5)
    assert fit.shape is CurveShape.FLAT
    assert (fit.a, fit.b, fit.c, fit.rmse) == (0.0, 0.0, 2.5, 0.0)
    assert fit.predict(1000) == 2.5


def test_rising_curve_is_marked_and_predicts_higher_loss() -> None:
    t = np.arange(50)
    y = 3.0 - 1.0 * np.exp(-0.05 * t)
    fit = ExponentialForecaster().fit(t.tolist(), y.tolist())
    assert fit.shape is CurveShape.RISING and fit.a < 0
    assert fit.predict(200) > y[-1]
    assert np.isfinite([fit.a, fit.b, fit.c]).all()


@pytest.mark.parametrize(
    ("steps", "losses", "match"),
    [
        ([0, 1, 2], [3.0, 2.0, 1.0], "n >= 4"),
        ([0, 1, 2, 3], [3.0, float("nan"), 2.0, 1.9], "non-finite value at index 1"),
        ([0, 1, 2, 3], [3.0, 2.0, float("inf"), 1.9], "non-finite"),
        ([0, 1, 1, 3], [3.0, 2.0, 1.5, 1.4], "strictly increasing"),
        ([0, 1, 2, 3], [3.0, 2.0, 1.5], r"shapes \(4,\) and \(3,\)"),
    ],
)
def test_exponential_rejects_bad_input(steps: list[int], losses: list[float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExponentialForecaster().fit(steps, losses)


def test_exponential_fit_json_round_trip() -> None:
    fit = ExponentialForecaster().fit(*exp_curve(noise=0.02))
    back = ExponentialFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit
    with pytest.raises(ConfigError, match="not an ExponentialFit"):
        ExponentialFit.from_dict({"a": 1.0})


# --- annealing ---------------------------------------------------------------------------


def test_annealing_areas_follow_the_momentum_recursion() -> None:
    lrs = np.array([1.0, 1.0, 0.5, 0.5, 0.2])
    s1, s2 = annealing_areas(lrs, lam=0.5)
    m = [0.0, 0.0, 0.5, 0.25, 0.425]  # m_i = 0.5·m_{i-1} + (η_{i-1} − η_i)
    np.testing.assert_allclose(s1, np.cumsum(lrs))
    np.testing.assert_allclose(s2, np.cumsum(m))


def test_annealing_recovers_noise_free_law() -> None:
    lrs = wsd_schedule()
    fit = AnnealingForecaster().fit(lrs.tolist(), law_curve(lrs).tolist())
    got = [fit.l0, fit.a, fit.alpha, fit.c]
    np.testing.assert_allclose(got, list(TRUE_LAW.values()), rtol=1e-4)
    assert fit.c_identified and fit.rmse < 1e-8


def test_annealing_recovers_noisy_law_median_over_seeds() -> None:
    lrs = wsd_schedule()
    fits = [AnnealingForecaster().fit(lrs, law_curve(lrs, 0.02, s)) for s in range(5)]
    med = np.median([[f.l0, f.a, f.alpha, f.c] for f in fits], axis=0)
    np.testing.assert_allclose(med, list(TRUE_LAW.values()), rtol=0.05)


def test_annealing_predicts_the_gain_of_annealing_now() -> None:
    # History: 400 constant steps then a first decay; the fit sees 600 steps of it.
    hist = np.r_[np.full(400, 1e-3), np.linspace(1e-3, 5e-4, 200)]
    y = law_curve(hist, noise=0.01, seed=1)
    fit = AnnealingForecaster().fit(hist.tolist(), y.tolist())
    keep = np.r_[hist, np.full(400, 5e-4)]
    anneal = np.r_[hist, np.linspace(5e-4, 5e-5, 400)]
    p_keep, p_anneal = (fit.predict(s, [999])[0] for s in (keep, anneal))
    t_keep, t_anneal = (law_curve(s)[999] for s in (keep, anneal))
    assert t_anneal < t_keep and p_anneal < p_keep
    assert p_anneal == pytest.approx(t_anneal, abs=0.03)
    assert p_keep == pytest.approx(t_keep, abs=0.03)
    assert p_keep - p_anneal == pytest.approx(t_keep - t_anneal, rel=0.15)


def test_annealing_without_lr_change_fixes_c_to_zero() -> None:
    lrs = np.full(300, 1e-3)
    fit = AnnealingForecaster().fit(lrs, law_curve(lrs))
    assert not fit.c_identified and fit.c == 0.0
    assert fit.alpha == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize(
    ("lrs", "losses", "steps", "match"),
    [
        ([1e-3] * 10, [1.0] * 4, None, "n >= 5"),
        ([1e-3] * 4, [1.0] * 5, None, "N >= n"),
        ([0.0] + [1e-3] * 9, [1.0] * 10, None, "first LR must be > 0"),
        ([1e-3, -1e-3] + [1e-3] * 8, [1.0] * 10, None, r"lrs\[1\]"),
        ([1e-3] * 10, [1.0, 2.0, float("nan"), 1.0, 1.0], None, "non-finite loss at index 2"),
        ([1e-3] * 10, [1.0] * 5, [0, 2, 4, 6, 12], r"\[0, N\) for the N=10"),
        ([1e-3] * 10, [1.0] * 5, [0, 2, 2, 6, 8], "strictly increasing"),
        ([1e-3] * 10, [1.0] * 5, [0, 2, 4], r"shape \(5,\)"),
    ],
)
def test_annealing_rejects_bad_input(
    lrs: list[float], losses: list[float], steps: list[int] | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        AnnealingForecaster().fit(lrs, losses, steps)


def test_annealing_fit_json_round_trip_and_predict_range() -> None:
    lrs = wsd_schedule()
    fit = AnnealingForecaster().fit(lrs, law_curve(lrs, 0.02))
    back = AnnealingFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit
    np.testing.assert_array_equal(back.predict(lrs, [10, 999]), fit.predict(lrs, [10, 999]))
    with pytest.raises(ConfigError, match=r"N=1000-step schedule"):
        fit.predict(lrs, [1000])


# --- comparison --------------------------------------------------------------------------


def test_compare_on_synthetic_curves_favours_each_generating_model() -> None:
    flat_lrs = np.full(400, 1e-3)
    exp_curves = [(flat_lrs, np.array(exp_curve(400, 0.01, s)[1])) for s in range(3)]
    law_curves = [(wsd_schedule(), law_curve(wsd_schedule(), 0.01, s)) for s in range(3)]
    on_exp = compare_on_suffixes(exp_curves, 0.6)
    on_law = compare_on_suffixes(law_curves, 0.7)
    # Measured (noise 0.01): exponential curves: exponential 0.0096, annealing 0.164;
    # law curves (the prefix sees 100 decay steps): annealing 0.023, exponential 0.40.
    assert on_exp["exponential"].mean < 0.015 < 0.1 < on_exp["annealing"].mean
    assert on_law["annealing"].mean < 0.035 < 0.3 < on_law["exponential"].mean


def test_compare_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        compare_on_suffixes([], 0.6)
    with pytest.raises(ConfigError, match="prefix_fraction"):
        compare_on_suffixes([([1e-3] * 10, [1.0] * 10)], 1.0)
    with pytest.raises(ConfigError, match=r"\(10,\) and \(9,\)"):
        compare_on_suffixes([([1e-3] * 10, [1.0] * 9)], 0.6)


def charlm_curves() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three 600-step SGD runs of the byte-level LM under LR schedules that change mid-way."""
    torch = pytest.importorskip("torch")
    from workers.tasks.charlm import CharLMConfig, CharLMTask

    task = CharLMTask(CharLMConfig(context=16, embed=16, hidden=64, max_bytes=200_000))
    n, peak, i = 600, 0.1, np.arange(600)
    schedules = [
        np.where(i < 240, peak, peak * (n - i) / (n - 240)),  # constant, then linear to 0
        np.where(i < 200, peak, np.where(i < 400, 0.3 * peak, 0.1 * peak)),  # steps
        0.5 * peak * (1 + np.cos(np.pi * i / n)),  # cosine
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 on a shared 2-core box
    try:
        curves = []
        for lrs in schedules:
            model = task.model(seed=0)
            opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9)
            gen = torch.Generator().manual_seed(0)
            losses = []
            for lr in lrs:
                opt.param_groups[0]["lr"] = float(lr)
                loss = task.loss(model, *task.batch(gen))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            curves.append((lrs, np.array(losses)))
        return curves
    finally:
        torch.set_num_threads(threads)


def test_real_charlm_curves_default_forecaster_is_better_on_suffixes() -> None:
    scores = compare_on_suffixes(charlm_curves(), prefix_fraction=0.6, target_window=25)
    ann, exp = scores["annealing"], scores["exponential"]
    print(f"suffix RMSE: annealing {ann.per_curve} exponential {exp.per_curve}")
    other = "exponential" if DEFAULT_FORECASTER == "annealing" else "annealing"
    assert scores[DEFAULT_FORECASTER].mean < 0.8 * scores[other].mean
    assert sum(a < e for a, e in zip(ann.per_curve, exp.per_curve, strict=True)) >= 2
