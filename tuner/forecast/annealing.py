"""The LR-annealing scaling law as a loss forecaster (Tissue et al., 2024).

``L(s) = L0 + A·S1(s)^(−α) − C·S2(s)``, where, for a per-step LR schedule ``η_0, η_1, …``:

- ``S1(s) = Σ_{i≤s} η_i`` is the forward area: the sum of the LRs through step ``s``;
- ``S2(s) = Σ_{i≤s} m_i`` is the annealing area, with the momentum form of the paper
  ``m_i = λ·m_{i−1} + (η_{i−1} − η_i)``, ``m_0 = 0`` (``η_{−1} = η_0``), ``λ`` ≈ 0.999.

Unlike the exponential forecaster, this one sees the LR schedule, so it can answer "what
will the loss be at step ``s`` if the LR follows *this* schedule from now on" — e.g. anneal
now against keep the LR — which is what counters the short-horizon bias of ranking LRs by
their short-run loss (Wu et al., ICLR 2018). A rising LR (warmup, a re-warm) gives negative
``m_i``, i.e. a loss *penalty*, as in the paper; pass the post-warmup history if the warmup
should not count.

Fitting: ``(L0, A, C)`` enter linearly, so for each ``α`` on a grid over ``(0, 2)`` a bounded
linear least squares (``A, C ≥ 0``) gives the best ``(L0, A, C)``; the best grid point starts
a bounded nonlinear least squares (``scipy.optimize.least_squares``) over all four. With no LR
change in the history, ``S2 ≡ 0`` and ``C`` is unidentified: it is fixed to 0 and the fit says
so (``c_identified=False``), so it predicts no gain from annealing rather than a made-up one.

Steps are optimizer steps, 0-based indices into the schedule; losses are plain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares, lsq_linear
from scipy.signal import lfilter

from tuner.errors import ConfigError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.integer[Any]]

MIN_POINTS = 5
"""Fewest loss points an annealing fit accepts: four parameters and one degree of freedom."""

DEFAULT_LAMBDA = 0.999
_ALPHA_LO, _ALPHA_HI = 1e-3, 2.0 - 1e-3


def annealing_areas(
    lrs: Sequence[float] | FloatArray, lam: float = DEFAULT_LAMBDA
) -> tuple[FloatArray, FloatArray]:
    """``(S1, S2)``, each ``n`` values for an ``n``-step LR schedule (module docstring)."""
    eta = _check_lrs(lrs)
    if not 0.0 <= lam < 1.0:
        raise ConfigError(f"lam must be in [0, 1), got {lam=}")
    drop = np.zeros_like(eta)
    drop[1:] = eta[:-1] - eta[1:]
    m: FloatArray = np.asarray(lfilter([1.0], [1.0, -lam], drop), dtype=np.float64)
    return np.cumsum(eta), np.cumsum(m)


@dataclass(frozen=True)
class AnnealingFit:
    """Fitted ``L(s) = l0 + a·S1^(−alpha) − c·S2`` with momentum ``lam``.

    ``rmse`` is over the ``n`` fitted points. ``c_identified`` is False when the history held
    no LR change, so ``c`` was fixed to 0.
    """

    l0: float
    a: float
    alpha: float
    c: float
    lam: float
    rmse: float
    n: int
    c_identified: bool = True

    def predict(
        self, lrs_full_schedule: Sequence[float] | FloatArray, at_steps: Sequence[int] | IntArray
    ) -> FloatArray:
        """Losses at ``at_steps`` (``k`` 0-based steps) under the ``N``-step schedule.

        ``lrs_full_schedule`` is the whole schedule from step 0: the history the fit saw
        followed by any hypothetical future. Returns ``k`` losses.
        """
        s1, s2 = annealing_areas(lrs_full_schedule, self.lam)
        idx = np.asarray(at_steps)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ConfigError(f"at_steps must be a 1-d sequence of ints, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= s1.shape[0]):
            raise ConfigError(
                f"at_steps must lie in [0, N) for the N={s1.shape[0]}-step schedule,"
                f" got min={idx.min()}, max={idx.max()}"
            )
        out: FloatArray = self.l0 + self.a * s1[idx] ** (-self.alpha) - self.c * s2[idx]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnealingFit:
        try:
            return cls(
                l0=float(d["l0"]),
                a=float(d["a"]),
                alpha=float(d["alpha"]),
                c=float(d["c"]),
                lam=float(d["lam"]),
                rmse=float(d["rmse"]),
                n=int(d["n"]),
                c_identified=bool(d.get("c_identified", True)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not an AnnealingFit dict: {d!r} ({e})") from e


class AnnealingForecaster:
    """Fits the LR-annealing scaling law to an (LR schedule, loss curve) history.

    Args:
        lam: momentum of the annealing area, in [0, 1); the paper uses 0.999.
        alpha_grid: number of ``α`` values on the starting grid over ``(0, 2)``.
        l0_min: lower bound of ``L0``; 0 suits losses that cannot go negative (cross-entropy)
            and stops short, late curves from trading ``α → 0`` for a huge ``A`` and a very
            negative ``L0``. ``None`` leaves ``L0`` free.
    """

    def __init__(
        self, lam: float = DEFAULT_LAMBDA, alpha_grid: int = 40, l0_min: float | None = 0.0
    ) -> None:
        if not 0.0 <= lam < 1.0:
            raise ConfigError(f"lam must be in [0, 1), got {lam=}")
        if alpha_grid < 2:
            raise ConfigError(f"alpha_grid must be >= 2 points, got {alpha_grid=}")
        self.lam = lam
        self.alphas = np.linspace(0.02, 1.98, alpha_grid)
        self.l0_min = -np.inf if l0_min is None else float(l0_min)

    def fit(
        self,
        lrs: Sequence[float],
        losses: Sequence[float],
        steps: Sequence[int] | None = None,
    ) -> AnnealingFit:
        """Fit ``n`` losses measured at ``steps`` of the ``N``-step schedule ``lrs``.

        ``lrs[i]`` is the LR of optimizer step ``i``; ``losses[j]`` the loss at step
        ``steps[j]`` (0-based, strictly increasing, < N). ``steps=None`` means one loss per
        step from step 0 (``n <= N``).

        Raises:
            ConfigError: a negative or non-finite LR, a zero first LR, fewer than 5 losses,
                non-finite losses, or steps out of range / not increasing.
        """
        s1_all, s2_all = annealing_areas(lrs, self.lam)
        y = np.asarray(losses, dtype=np.float64)
        if y.ndim != 1:
            raise ConfigError(f"losses must be 1-d (`n`), got shape {y.shape}")
        idx = _check_steps(steps, y.shape[0], s1_all.shape[0])
        if y.shape[0] < MIN_POINTS:
            raise ConfigError(
                f"an annealing fit needs n >= {MIN_POINTS} losses, got n={y.shape[0]}"
            )
        if not np.all(np.isfinite(y)):
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ConfigError(f"non-finite loss at index {i} of n={y.shape[0]}: {y[i]}")
        s1, s2 = s1_all[idx], s2_all[idx]
        c_identified = bool(np.ptp(s2) > 1e-12 * max(1.0, float(np.abs(s2).max())))
        x0 = self._grid_start(s1, s2, y, c_identified)
        if c_identified:
            params = self._refine(s1, s2, y, x0)
        else:
            params = self._refine(s1, np.zeros_like(s2), y, x0)
            params[3] = 0.0
        l0, a, alpha, c = (float(v) for v in params)
        pred = l0 + a * s1 ** (-alpha) - c * s2
        rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
        return AnnealingFit(l0, a, alpha, c, self.lam, rmse, int(y.shape[0]), c_identified)

    def _grid_start(self, s1: FloatArray, s2: FloatArray, y: FloatArray, use_c: bool) -> FloatArray:
        """Best ``(L0, A, α, C)`` over the ``α`` grid, ``(L0, A, C)`` by bounded linear LSQ."""
        best_sse, best = np.inf, np.zeros(4)
        for alpha in self.alphas:
            cols = [np.ones_like(s1), s1 ** (-alpha)] + ([-s2] if use_c else [])
            design = np.column_stack(cols)
            scale = np.maximum(np.abs(design).max(axis=0), 1e-300)
            lb = np.array([self.l0_min * scale[0]] + [0.0] * (len(cols) - 1))
            res = lsq_linear(design / scale, y, bounds=(lb, np.inf))
            coef = res.x / scale
            sse = float(np.sum((design @ coef - y) ** 2))
            if sse < best_sse:
                c = float(coef[2]) if use_c else 0.0
                best_sse, best = sse, np.array([coef[0], coef[1], alpha, c])
        return best

    def _refine(self, s1: FloatArray, s2: FloatArray, y: FloatArray, x0: FloatArray) -> FloatArray:
        log_s1 = np.log(s1)

        def resid(x: FloatArray) -> FloatArray:
            out: FloatArray = x[0] + x[1] * s1 ** (-x[2]) - x[3] * s2 - y
            return out

        def jac(x: FloatArray) -> FloatArray:
            p = s1 ** (-x[2])
            return np.column_stack([np.ones_like(s1), p, -x[1] * log_s1 * p, -s2])

        lb = np.array([self.l0_min, 0.0, _ALPHA_LO, 0.0])
        ub = np.array([np.inf, np.inf, _ALPHA_HI, np.inf])
        start = np.clip(x0, lb + 1e-12, ub - 1e-12)
        start[1] = max(start[1], 1e-12)
        start[3] = max(start[3], 1e-12)
        res = least_squares(resid, start, jac=jac, bounds=(lb, ub), x_scale="jac", max_nfev=2000)
        x: FloatArray = np.asarray(res.x, dtype=np.float64)
        if float(np.sum(resid(x) ** 2)) > float(np.sum(resid(x0) ** 2)):
            return np.asarray(x0, dtype=np.float64)
        return x


def _check_lrs(lrs: Sequence[float] | FloatArray) -> FloatArray:
    eta = np.asarray(lrs, dtype=np.float64)
    if eta.ndim != 1 or eta.shape[0] == 0:
        raise ConfigError(
            f"lrs must be a non-empty 1-d schedule (`N` steps), got shape {eta.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(eta) | (eta < 0))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(f"LRs must be finite and >= 0, got lrs[{i}]={eta[i]} of N={eta.shape[0]}")
    if eta[0] <= 0:
        raise ConfigError(f"the first LR must be > 0 so that S1 > 0, got lrs[0]={eta[0]}")
    return eta


def _check_steps(steps: Sequence[int] | None, n: int, n_sched: int) -> NDArray[np.intp]:
    if steps is None:
        if n > n_sched:
            raise ConfigError(
                f"with steps=None there is one loss per step from 0, so n={n} losses need"
                f" N >= n LRs, got N={n_sched}"
            )
        return np.arange(n)
    idx = np.asarray(steps)
    if idx.shape != (n,):
        raise ConfigError(f"steps must have shape ({n},) like losses, got {idx.shape}")
    if n and not np.issubdtype(idx.dtype, np.integer):
        raise ConfigError(f"steps must be ints (optimizer steps), got dtype {idx.dtype}")
    if n and (idx.min() < 0 or idx.max() >= n_sched or np.any(np.diff(idx) <= 0)):
        raise ConfigError(
            f"steps must be strictly increasing in [0, N) for the N={n_sched}-step schedule,"
            f" got min={idx.min()}, max={idx.max()}"
        )
    return idx.astype(np.intp)
