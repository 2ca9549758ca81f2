"""A noisy quadratic model (NQM) for benchmarking learning-rate schedules.

After Zhang et al., "Which algorithmic choices matter at which batch sizes? Insights from
a noisy quadratic model" (NeurIPS 2019). The loss is a diagonal quadratic

    L(θ) = ½ Σ_i h_i θ_i²,    h_i = i^(-power),  i = 1..dim,

so the condition number is ``dim**power`` (100 with the defaults). Training is plain SGD
(no momentum) whose minibatch gradient noise has covariance H / B, B the batch size:

    θ_i ← θ_i − η (h_i θ_i + ε_i),    ε_i ~ N(0, h_i / B),

from θ_i ~ N(0, init_var). Every coordinate stays a zero-mean Gaussian, so its second
moment m_i = E[θ_i²] is all there is, and it follows an exact linear recursion:

    m_i ← (1 − η h_i)² m_i + η² h_i / B,    m_i(0) = init_var,

with expected loss ½ Σ_i h_i m_i. A step is stable in every direction iff
0 ≤ η < 2 / max_i h_i (:meth:`NQMConfig.max_stable_lr`).

The best schedule (:func:`optimal_schedule`) minimises the exact final expected loss over
all per-step LR sequences in (0, max_stable_lr), a smooth problem in ``total_steps``
variables: the gradient comes from the adjoint of the recursion,

    ∂L_T/∂η_t = Σ_i λ_i(t+1) (−2 h_i (1 − η_t h_i) m_i(t) + 2 η_t h_i / B),
    λ_i(t+1) = ½ h_i Π_{s>t} (1 − η_s h_i)²,

and L-BFGS-B works on log η with the stable range as box bounds, from the best constant
LR. Different starts (constant, cosine, very low, very high, random) reach the same loss to
eight digits, and small perturbations never lower it (``tests/tuner/test_nqm.py``).

Defaults: ``dim=100``, ``power=1``, ``init_var=1``, ``batch_size=10``; noise then decides
the schedule. Measured on these defaults (``max_stable_lr`` = 2, initial loss 2.594;
constant LR refined to 0.1%, cosine peak on a log grid of ratio 1.02):

    total_steps   optimal    best constant (lr)     best cosine (peak)
    1000          7.349e-3   2.640e-2  (0.158)      9.675e-3  (0.493)
    2000          3.667e-3   1.494e-2  (0.0928)     5.050e-3  (0.277)
    4000          1.832e-3   8.375e-3  (0.0535)     2.624e-3  (0.156)

The optimum beats the best constant LR by 3.6-4.6x and the best cosine by 1.3-1.4x. Its
shape is "high, then decay": for 2000 steps it sits at the stability edge for the first 47
steps (and presses against it: the gradient there points outwards, so without the bound it
would take larger, individually unstable Chebyshev-like steps), falls to 0.87 by step 100
and 0.14 by step 500, and then decays monotonically to 0.0047 at the last step.
:func:`optimal_schedule` takes 0.5 / 1.3 / 2.7 s for 1000 / 2000 / 4000 steps on 2 CPU
cores; one exact evaluation of a 2000-step schedule takes about 5 ms.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from tuner.errors import ConfigError

Array = NDArray[np.float64]

_STATE_KEYS = frozenset({"config", "moments", "theta", "steps", "rng"})
_EDGE = 1e-9
"""Optimised LRs stay within [max_stable_lr * _EDGE, max_stable_lr * (1 - _EDGE)]."""


@dataclass(frozen=True)
class NQMConfig:
    """The quadratic, its gradient noise and the initial distribution.

    Attributes:
        dim: Number of coordinates.
        power: Curvature spectrum h_i = i^(-power), i = 1..dim.
        batch_size: B in the gradient-noise covariance H / B (any positive real).
        init_var: Variance of each initial coordinate θ_i.
    """

    dim: int = 100
    power: float = 1.0
    batch_size: float = 10.0
    init_var: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"NQMConfig.dim must be an int >= 1, got {self.dim!r}")
        if not math.isfinite(self.power):
            raise ConfigError(f"NQMConfig.power must be finite, got {self.power!r}")
        if not (math.isfinite(self.batch_size) and self.batch_size > 0):
            raise ConfigError(
                f"NQMConfig.batch_size must be finite and > 0, got {self.batch_size!r}"
            )
        if not (math.isfinite(self.init_var) and self.init_var >= 0):
            raise ConfigError(f"NQMConfig.init_var must be finite and >= 0, got {self.init_var!r}")

    def curvatures(self) -> Array:
        """The curvatures h_i = i^(-power), float64 of shape ``(dim,)``."""
        return np.arange(1, self.dim + 1, dtype=np.float64) ** -self.power

    def max_stable_lr(self) -> float:
        """2 / max(h): every direction contracts (in expectation) for LRs below it."""
        return float(2.0 / self.curvatures().max())


def _check_lr(lr: float) -> float:
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"learning rate must be finite and >= 0, got {lr!r}")
    return float(lr)


def _check_lrs(lrs: ArrayLike) -> Array:
    arr = np.asarray(lrs, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"lrs must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        bad = arr[~(np.isfinite(arr) & (arr >= 0))][0]
        raise ConfigError(f"learning rates must be finite and >= 0, got {bad!r}")
    return arr


def _check_steps(total_steps: int) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total_steps must be an int >= 1, got {total_steps!r}")


def _moment_step(m: Array, h: Array, lr: Array | float, batch_size: float) -> Array:
    """One step of the exact recursion m ← (1 − η h)² m + η² h / B."""
    g = 1.0 - lr * h
    return g * g * m + (lr * lr / batch_size) * h


def _moments(cfg: NQMConfig, lrs: Array) -> tuple[Array, Array]:
    """Run the recursion: ``g[t] = 1 − η_t h`` (T, dim) and moments ``m[t]`` before step t
    (T + 1, dim), so ``m[-1]`` is final."""
    h = cfg.curvatures()
    g = 1.0 - np.outer(lrs, h)
    a = g * g
    b = np.outer(lrs * lrs / cfg.batch_size, h)
    m = np.empty((lrs.size + 1, cfg.dim))
    m[0] = cfg.init_var
    for t in range(lrs.size):
        m[t + 1] = a[t] * m[t] + b[t]
    return g, m


def _final_losses(cfg: NQMConfig, lrs: Array) -> Array:
    """Final expected losses of P schedules at once: ``lrs`` (T, P) -> (P,)."""
    h = cfg.curvatures()
    m = np.full((lrs.shape[1], cfg.dim), cfg.init_var)
    for lr in lrs:
        m = _moment_step(m, h, lr[:, None], cfg.batch_size)
    return 0.5 * (m @ h)


class NQM:
    """One training run on the NQM: an exact second-moment state plus one sampled SGD
    trajectory (for noisy reported losses).

    Args:
        cfg: The model; ``None`` for the defaults.
        seed: Seeds the numpy Generator that draws θ(0) and the gradient noise.
    """

    def __init__(self, cfg: NQMConfig | None = None, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
        self.cfg = cfg if cfg is not None else NQMConfig()
        self._h = self.cfg.curvatures()
        self._noise_std = np.sqrt(self._h / self.cfg.batch_size)
        self._rng = np.random.default_rng(seed)
        self._m = np.full(self.cfg.dim, self.cfg.init_var)
        self._theta = self._rng.standard_normal(self.cfg.dim) * math.sqrt(self.cfg.init_var)
        self._steps = 0

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far."""
        return self._steps

    def step(self, lr: float) -> float:
        """Take one SGD step at ``lr``, updating the exact moments and the sampled θ.

        LRs above :meth:`NQMConfig.max_stable_lr` are allowed (the run then diverges).

        Args:
            lr: The learning rate, finite and >= 0.

        Returns:
            The sampled trajectory's loss ½ Σ h_i θ_i² *before* the update, i.e. the loss a
            worker reports for the step it is about to take. Its mean is the expected loss
            before the step (:meth:`expected_loss` read before calling ``step``).

        Raises:
            ConfigError: ``lr`` is negative or not finite.
        """
        lr = _check_lr(lr)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run reaches inf
            return self._step(lr)

    def _step(self, lr: float) -> float:
        loss = 0.5 * float(self._h @ (self._theta * self._theta))
        noise = self._rng.standard_normal(self.cfg.dim) * self._noise_std
        self._theta = self._theta - lr * (self._h * self._theta + noise)
        self._m = _moment_step(self._m, self._h, lr, self.cfg.batch_size)
        self._steps += 1
        return loss

    def expected_loss(self) -> float:
        """The exact expected loss ½ Σ h_i m_i of the current moments."""
        return 0.5 * float(self._m @ self._h)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able deep copy of the run: config, moments, θ, steps and RNG state."""
        return {
            "config": asdict(self.cfg),
            "moments": self._m.tolist(),
            "theta": self._theta.tolist(),
            "steps": self._steps,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly: the same LRs then give identical results.

        Args:
            state: A :meth:`state_dict` of a run with the same config (or its JSON round trip).

        Raises:
            ConfigError: Keys are missing or unknown, the config differs, or a value is
                malformed.
        """
        missing, unknown = sorted(_STATE_KEYS - set(state)), sorted(set(state) - _STATE_KEYS)
        if missing or unknown:
            raise ConfigError(f"NQM state: missing keys {missing}, unknown keys {unknown}")
        config = state["config"]
        if not isinstance(config, Mapping) or dict(config) != asdict(self.cfg):
            raise ConfigError(f"NQM state is for config {config!r}, this run is {self.cfg}")
        steps = state["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"NQM state steps must be an int >= 0, got {steps!r}")
        rng = np.random.default_rng()
        try:
            m = np.array(state["moments"], dtype=np.float64)
            theta = np.array(state["theta"], dtype=np.float64)
            rng.bit_generator.state = copy.deepcopy(dict(state["rng"]))
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"NQM state has a malformed moments, theta or rng: {exc}") from exc
        if m.shape != (self.cfg.dim,) or theta.shape != (self.cfg.dim,):
            raise ConfigError(f"NQM state moments and theta must have shape ({self.cfg.dim},)")
        self._m, self._theta, self._steps, self._rng = m, theta, steps, rng


def expected_curve(cfg: NQMConfig, lrs: Sequence[float] | Array) -> Array:
    """The exact expected loss after each step of training from init with ``lrs``.

    Args:
        cfg: The model.
        lrs: One LR per step, each finite and >= 0.

    Returns:
        float64 array of length ``len(lrs)``; entry t is the expected loss after step t.

    Raises:
        ConfigError: ``lrs`` is empty, not 1-D, or has a negative or non-finite entry.
    """
    _, m = _moments(cfg, _check_lrs(lrs))
    return 0.5 * (m[1:] @ cfg.curvatures())


def expected_loss_of_schedule(cfg: NQMConfig, lrs: Sequence[float] | Array) -> float:
    """The exact final expected loss after training from init with ``lrs[0], lrs[1], ...``.

    Args:
        cfg: The model.
        lrs: One LR per step, each finite and >= 0.

    Raises:
        ConfigError: ``lrs`` is empty, not 1-D, or has a negative or non-finite entry.
    """
    return float(expected_curve(cfg, lrs)[-1])


def cosine_schedule(peak: float, total_steps: int) -> Array:
    """Cosine decay from ``peak`` towards 0: η_t = peak · ½ (1 + cos(π t / T)), t < T."""
    _check_steps(total_steps)
    return peak * 0.5 * (1.0 + np.cos(np.pi * np.arange(total_steps) / total_steps))


def _best_scaled(cfg: NQMConfig, shape: Array, candidates: Array) -> tuple[float, float]:
    """The candidate c minimising the final loss of schedule ``c * shape``, and that loss."""
    finals = _final_losses(cfg, np.outer(shape, candidates))
    best = int(np.argmin(finals))
    return float(candidates[best]), float(finals[best])


def _best_constant(cfg: NQMConfig, total_steps: int) -> tuple[float, float]:
    """Best constant LR: a log grid over the stable range, then two finer grids around it."""
    top = cfg.max_stable_lr()
    ones = np.ones(total_steps)
    coarse = np.geomspace(top * 1e-5, top * (1 - _EDGE), 241)
    lr, _ = _best_scaled(cfg, ones, coarse)
    for width in (0.05, 1e-3):
        fine = np.clip(lr * np.geomspace(1 - width, 1 + width, 101), 0, coarse[-1])
        lr, _ = _best_scaled(cfg, ones, fine)
    return lr, expected_loss_of_schedule(cfg, lr * ones)


def best_cosine(
    cfg: NQMConfig, total_steps: int, peaks: Sequence[float] | Array | None = None
) -> tuple[float, float]:
    """The best peak of :func:`cosine_schedule` among ``peaks``, and its final expected loss.

    Args:
        cfg: The model.
        total_steps: Steps per run.
        peaks: Candidate peaks; ``None``: 481 log-spaced points (ratio 1.02) from
            ``max_stable_lr / 1e4`` to ``max_stable_lr``.

    Raises:
        ConfigError: ``total_steps`` < 1 or a bad peak.
    """
    _check_steps(total_steps)
    top = cfg.max_stable_lr()
    cands = np.geomspace(top * 1e-4, top, 481) if peaks is None else _check_lrs(peaks)
    return _best_scaled(cfg, cosine_schedule(1.0, total_steps), cands)


def _loss_and_grad(log_lrs: Array, cfg: NQMConfig) -> tuple[float, Array]:
    """Final expected loss of ``exp(log_lrs)`` and its gradient in ``log_lrs`` (adjoint)."""
    h = cfg.curvatures()
    lrs = np.exp(log_lrs)
    g, m = _moments(cfg, lrs)
    after = np.ones_like(m)  # after[t] = Π_{s>=t} (1 − η_s h)²
    after[:-1] = np.cumprod((g * g)[::-1], axis=0)[::-1]
    lam = 0.5 * h * after[1:]
    d_lr = np.sum(lam * (-2.0 * h * g * m[:-1] + (2.0 / cfg.batch_size) * np.outer(lrs, h)), 1)
    return 0.5 * float(m[-1] @ h), d_lr * lrs


@dataclass(frozen=True)
class OptimalSchedule:
    """The numerically optimal per-step schedule and the best constant LR it started from.

    Attributes:
        lrs: One LR per step, length ``total_steps``.
        final_loss: Exact final expected loss of ``lrs``.
        best_constant_lr: The best constant LR.
        best_constant_loss: Its exact final expected loss.
    """

    lrs: Array
    final_loss: float
    best_constant_lr: float
    best_constant_loss: float


def optimal_schedule(cfg: NQMConfig, total_steps: int, *, iters: int = 1000) -> OptimalSchedule:
    """The per-step schedule minimising the exact final expected loss.

    Every LR is free within the stable range (0, max_stable_lr). L-BFGS-B on log-LRs with
    the adjoint gradient, from the best constant LR; it usually stops after 30-100 iterations
    when the loss no longer improves at machine precision.

    Args:
        cfg: The model.
        total_steps: Steps per run.
        iters: Most L-BFGS-B iterations.

    Raises:
        ConfigError: ``total_steps`` or ``iters`` < 1.
    """
    _check_steps(total_steps)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"iters must be an int >= 1, got {iters!r}")
    const_lr, const_loss = _best_constant(cfg, total_steps)
    top = cfg.max_stable_lr()
    bounds = [(math.log(top * _EDGE), math.log(top) + math.log1p(-_EDGE))] * total_steps
    scale = const_loss if const_loss > 0 else 1.0

    def objective(z: Array) -> tuple[float, Array]:
        loss, grad = _loss_and_grad(z, cfg)
        return loss / scale, grad / scale

    res = minimize(
        objective,
        np.full(total_steps, math.log(const_lr)),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": iters, "ftol": 1e-15, "gtol": 1e-12},
    )
    lrs = np.exp(np.asarray(res.x, dtype=np.float64))
    return OptimalSchedule(lrs, expected_loss_of_schedule(cfg, lrs), const_lr, const_loss)
