"""AutoLRS's short-curve forecaster: ``L(t) = a·exp(b·t) + c`` with ``b < 0``.

AutoLRS (Jin et al., ICLR 2021) trains each LR candidate for τ' optimizer steps, fits this
curve to the candidate's losses and reads the fit at τ to rank the candidates. The fit here
follows the paper: Nelder–Mead over ``log(−b)``; for each ``b`` the curve is linear in
``(a, c)``, which linear least squares solves exactly (variable projection), so the search is
one-dimensional. A coarse grid over ``log(−b)`` picks Nelder–Mead's starting point, so a
poor start cannot trap it in a shallow local minimum.

Outlier cleaning. AutoLRS removes loss spikes from the short curve with a moving window
before fitting. A running median is a poor reference on these curves: on a monotone stretch
the point itself is its window's median, so about half the residuals are exactly zero and
the median absolute deviation (MAD) collapses, flagging ordinary noise. Here the reference
is the fitted curve itself: fit, take the residuals, and call a point an outlier when its
residual is more than ``threshold`` robust standard deviations (``1.4826·MAD``) from the
median residual; refit without the outliers, and repeat (at most ``rounds`` times, until no
new point is flagged). At most a quarter of the points are dropped, largest residuals first,
and never so many that fewer than 4 remain.

Times ``t`` are optimizer steps counted from the curve's first step; losses are plain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from tuner.errors import ConfigError

FloatArray = NDArray[np.float64]

MIN_POINTS = 4
"""Fewest points an exponential fit accepts: three parameters and one degree of freedom."""

# Search range of -b·T, T the curve's span in steps: from almost linear (0.01: the curve
# bends by 1% over the observed span) to a curve that is flat after its first 1/200.
_BT_LO, _BT_HI = 1e-2, 2e2


class CurveShape(Enum):
    """What the fitted curve does over the observed span."""

    DECAYING = "decaying"
    """``a > 0``: the loss falls towards ``c``; the usual case."""
    RISING = "rising"
    """``a < 0``: the loss rises towards ``c`` (a diverging or overshooting LR). The fit is
    still the least-squares one with ``b < 0``, so it predicts a higher loss later; a caller
    that wants to reject such candidates checks ``shape``."""
    FLAT = "flat"
    """The cleaned losses are constant: ``a = b = 0`` and ``c`` is their value."""


@dataclass(frozen=True)
class ExponentialFit:
    """A fitted ``L(t) = a·exp(b·t) + c``, ``t`` in optimizer steps after ``t0``.

    ``rmse`` is over the ``n`` points kept after outlier cleaning; ``n_outliers`` were dropped.
    """

    a: float
    b: float
    c: float
    rmse: float
    n: int
    t0: int = 0
    n_outliers: int = 0
    shape: CurveShape = CurveShape.DECAYING

    @overload
    def predict(self, t: float) -> float: ...
    @overload
    def predict(self, t: Sequence[float] | FloatArray) -> FloatArray: ...
    def predict(self, t: float | Sequence[float] | FloatArray) -> float | FloatArray:
        """The loss at absolute step(s) ``t`` (same step numbering as ``fit``'s ``steps``)."""
        if isinstance(t, int | float):
            return float(self.a * math.exp(self.b * (t - self.t0)) + self.c)
        arr = np.asarray(t, dtype=np.float64)
        out: FloatArray = self.a * np.exp(self.b * (arr - self.t0)) + self.c
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters; :meth:`from_dict` inverts it."""
        return {
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "rmse": self.rmse,
            "n": self.n,
            "t0": self.t0,
            "n_outliers": self.n_outliers,
            "shape": self.shape.value,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExponentialFit:
        try:
            return cls(
                a=float(d["a"]),
                b=float(d["b"]),
                c=float(d["c"]),
                rmse=float(d["rmse"]),
                n=int(d["n"]),
                t0=int(d.get("t0", 0)),
                n_outliers=int(d.get("n_outliers", 0)),
                shape=CurveShape(d.get("shape", "decaying")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not an ExponentialFit dict: {d!r} ({e})") from e


def outlier_mask(
    resid: FloatArray, threshold: float = 3.5, floor: float = 0.0
) -> NDArray[np.bool_]:
    """``n`` booleans, True where ``resid[i]`` (residual from a fit) marks an outlier.

    ``floor`` is the least robust standard deviation assumed, so that round-off on an
    exactly smooth curve is never called an outlier.
    """
    n = resid.shape[0]
    dev = np.abs(resid - np.median(resid))
    scale = max(1.4826 * float(np.median(dev)), floor, 1e-300)
    flagged = np.flatnonzero(dev > threshold * scale)
    keep_at_most = max(0, min(n // 4, n - MIN_POINTS))
    if flagged.size > keep_at_most:
        flagged = flagged[np.argsort(dev[flagged])[::-1][:keep_at_most]]
    mask = np.zeros(n, dtype=bool)
    mask[flagged] = True
    return mask


def _profile(t: FloatArray, y: FloatArray, b: float) -> tuple[float, float, float]:
    """``(sse, a, c)`` of the least-squares ``(a, c)`` for a fixed ``b``."""
    design = np.column_stack([np.exp(b * t), np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = design @ coef - y
    return float(resid @ resid), float(coef[0]), float(coef[1])


class ExponentialForecaster:
    """Fits ``L(t) = a·exp(b·t) + c``, ``b < 0``, to a short loss curve (AutoLRS).

    Args:
        clean: drop outliers before the final fit (module docstring).
        threshold: outlier cut, in robust standard deviations of the fit's residuals.
        rounds: most fit-and-drop rounds of cleaning.
    """

    def __init__(self, clean: bool = True, threshold: float = 3.5, rounds: int = 3) -> None:
        if not threshold > 0:
            raise ConfigError(f"threshold must be > 0 robust standard deviations, got {threshold=}")
        if rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {rounds=}")
        self.clean = clean
        self.threshold = threshold
        self.rounds = rounds

    def fit(self, steps: Sequence[int], losses: Sequence[float]) -> ExponentialFit:
        """Fit ``n`` (step, loss) points; steps strictly increasing optimizer steps.

        A constant curve gets the flat fit ``a = b = 0`` (``shape=FLAT``); a rising one the
        least-squares fit with ``a < 0`` (``shape=RISING``).

        Raises:
            ConfigError: lengths differ, fewer than 4 points, a non-finite step or loss, or
                steps not strictly increasing. A NaN loss usually means divergence; the
                caller decides what that candidate is worth.
        """
        s, y = check_curve(steps, losses)
        t0 = int(s[0])
        t = s - t0
        keep = np.ones(y.shape[0], dtype=bool)
        floor = 1e-9 * max(1.0, float(np.abs(y).max()))
        a, b, c = _fit_abc(t, y)
        for _ in range(self.rounds if self.clean else 0):
            resid = a * np.exp(b * t) + c - y
            new = ~outlier_mask(resid, self.threshold, floor)
            if np.array_equal(new, keep):
                break
            keep = new
            a, b, c = _fit_abc(t[keep], y[keep])
        tk, yk = t[keep], y[keep]
        rmse = float(np.sqrt(np.mean((a * np.exp(b * tk) + c - yk) ** 2)))
        if b == 0.0:
            shape = CurveShape.FLAT
        elif a > 0:
            shape = CurveShape.DECAYING
        else:
            shape = CurveShape.RISING
        n = int(keep.sum())
        return ExponentialFit(a, b, c, rmse, n, t0, y.shape[0] - n, shape)


def _fit_abc(t: FloatArray, y: FloatArray) -> tuple[float, float, float]:
    """``(a, b, c)``: Nelder–Mead over ``log(−b)`` from the best of a grid; ``(0, 0, mean)``
    for a constant curve."""
    if float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return 0.0, 0.0, float(y.mean())
    span = float(t[-1] - t[0])
    # u = log(-b), searched where -b·span is in [_BT_LO, _BT_HI].
    lo, hi = math.log(_BT_LO / span), math.log(_BT_HI / span)

    def objective(x: FloatArray) -> float:
        return _profile(t, y, -math.exp(float(np.clip(x[0], lo, hi))))[0]

    grid = np.linspace(lo, hi, 41)
    u0 = float(grid[int(np.argmin([objective(np.array([g])) for g in grid]))])
    res = minimize(
        objective,
        np.array([u0]),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-14 * max(1.0, float(y @ y)), "maxiter": 400},
    )
    u = float(np.clip(res.x[0], lo, hi))
    if objective(np.array([u])) > objective(np.array([u0])):
        u = u0
    b = -math.exp(u)
    _, a, c = _profile(t, y, b)
    return a, b, c


def check_curve(
    steps: Sequence[int] | FloatArray, losses: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(steps, losses)`` as float arrays, or :class:`ConfigError` saying what is wrong."""
    s = np.asarray(steps, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ConfigError(
            f"steps and losses must be 1-d of equal length `n`, got shapes {s.shape} and {y.shape}"
        )
    if y.shape[0] < MIN_POINTS:
        raise ConfigError(f"an exponential fit needs n >= {MIN_POINTS} points, got n={y.shape[0]}")
    bad = np.flatnonzero(~np.isfinite(y) | ~np.isfinite(s))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"non-finite value at index {i} of n={y.shape[0]} points: step={s[i]}, loss={y[i]}"
            " (a diverged run? drop it or treat the candidate as failed)"
        )
    if np.any(np.diff(s) <= 0):
        i = int(np.flatnonzero(np.diff(s) <= 0)[0])
        raise ConfigError(
            f"steps must be strictly increasing, got steps[{i}]={s[i]:g} then {s[i + 1]:g}"
        )
    return s, y
