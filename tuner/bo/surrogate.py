"""A GP surrogate of loss over log-LR (and training progress), and the LRs it suggests."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch.quasirandom import SobolEngine

from tuner.bo.acquisition import ACQUISITIONS, Acquisition, make_acquisition, maximize
from tuner.bo.space import (
    DTYPE,
    ArrayLike,
    check_bounds,
    check_data,
    from_unit,
    shape_str,
    to_unit,
)
from tuner.errors import ConfigError

STATE_FORMAT = 1
GRID = 1025  # points of the posterior-mean grid :meth:`LRSurrogate.best_lr` searches


class LRSurrogate:
    """A ``SingleTaskGP`` of loss over normalized log-LR, optionally with a progress input.

    Inputs are ``x = (log lr - log lr_min) / (log lr_max - log lr_min)`` (0 and 1 at the
    search bounds; observations outside them are kept, with ``x`` outside ``[0, 1]``) and,
    with ``use_progress``, the training progress in ``[0, 1]`` (fraction of the run, or the
    stage index scaled by the number of stages) so that one GP is carried across stages.
    Outcomes are the negated losses, standardized (botorch's ``Standardize``), because botorch
    maximizes.

    Window. Only the ``window`` most recent observations are kept (older ones are dropped as
    new ones come in), so one decision costs at most a GP fit on ``window`` points, whatever
    the length of the run; with progress as an input, the points dropped are the stale ones.

    Determinism. Fits and suggestions run under a torch seed derived from ``seed`` and the
    number of observations ever made, inside ``torch.random.fork_rng`` (the global RNG of
    the caller is left as it was), so the same data and seed give the same LRs, after a
    :meth:`state_dict` round trip too.

    Args:
        bounds: ``(lr_min, lr_max)``, plain LRs: the search range.
        use_progress: Model progress as a second input (then ``d = 2``, else ``d = 1``).
        window: Observations kept (at least 2).
        seed: Seed of the initial design, the model fits and the acquisition optimization.
        n_init: While fewer observations than this are kept, suggestions are quasi-random
            (a scrambled Sobol sequence in log-LR) instead of from the GP.
        num_restarts, raw_samples: ``optimize_acqf`` settings (small: the inputs are 1-D).
    """

    def __init__(
        self,
        bounds: Sequence[float],
        *,
        use_progress: bool = False,
        window: int = 64,
        seed: int = 0,
        n_init: int = 2,
        num_restarts: int = 4,
        raw_samples: int = 64,
    ) -> None:
        self.bounds = check_bounds(bounds)
        self.use_progress = bool(use_progress)
        for name, value, low in (
            ("window", window, 2),
            ("seed", seed, 0),
            ("n_init", n_init, 1),
            ("num_restarts", num_restarts, 1),
            ("raw_samples", raw_samples, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {name}={value!r}")
        self.window, self.seed, self.n_init = window, seed, n_init
        self.num_restarts, self.raw_samples = num_restarts, raw_samples
        self._lrs: list[float] = []
        self._losses: list[float] = []
        self._progress: list[float] = []
        self._total = 0  # observations ever made, dropped ones included
        self._model: SingleTaskGP | None = None

    # -- data ---------------------------------------------------------------------------

    @property
    def d(self) -> int:
        """Input dimension: 1 (log-LR), or 2 (log-LR, progress)."""
        return 2 if self.use_progress else 1

    @property
    def total_observed(self) -> int:
        """Observations made since construction, including those the window dropped."""
        return self._total

    def __len__(self) -> int:
        """Observations kept (at most ``window``)."""
        return len(self._lrs)

    def observations(self) -> tuple[list[float], list[float], list[float] | None]:
        """Kept ``(lrs, losses, progress)``, oldest first (``progress`` None without it)."""
        return (
            list(self._lrs),
            list(self._losses),
            (list(self._progress) if self.use_progress else None),
        )

    def observe(self, lr: float, loss: float, *, progress: float | None = None) -> None:
        """Add one observation (the GP is refit at the next suggestion)."""
        row = [lr, progress] if self.use_progress else [lr]
        if self.use_progress and progress is None:
            raise ConfigError("this surrogate models progress: pass observe(..., progress=p)")
        if not self.use_progress and progress is not None:
            raise ConfigError(f"{progress=} given to a surrogate without use_progress")
        X, y = self._check_data(torch.tensor([row], dtype=DTYPE), torch.tensor([loss], dtype=DTYPE))
        self._append(X, y)

    def fit(self, X: ArrayLike, y: ArrayLike) -> None:
        """Replace the observations with ``X``, ``y`` (the last ``window`` rows) and fit.

        Args:
            X: ``n x d``: plain LR in column 0 and, with ``use_progress``, progress in
                ``[0, 1]`` in column 1.
            y: ``n``: the losses.
        """
        X_t, y_t = self._check_data(
            torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
        )
        self._lrs, self._losses, self._progress = [], [], []
        self._append(X_t, y_t)
        self._fitted()

    def _check_data(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return check_data(X, y, use_progress=self.use_progress)

    def _append(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self._lrs.extend(float(v) for v in X[:, 0])
        self._losses.extend(float(v) for v in y)
        if self.use_progress:
            self._progress.extend(float(v) for v in X[:, 1])
        self._total += X.shape[0]
        drop = len(self._lrs) - self.window
        if drop > 0:
            del self._lrs[:drop], self._losses[:drop]
            if self.use_progress:
                del self._progress[:drop]
        self._model = None

    # -- model --------------------------------------------------------------------------

    def to_unit(self, lrs: torch.Tensor) -> torch.Tensor:
        """Plain LRs to normalized log-LR (0 at ``lr_min``, 1 at ``lr_max``)."""
        return to_unit(lrs, self.bounds)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized log-LR back to plain LRs."""
        return from_unit(x, self.bounds)

    def _inputs(self, lrs: torch.Tensor, progress: torch.Tensor | None) -> torch.Tensor:
        x = self.to_unit(lrs).unsqueeze(-1)
        if progress is None:
            return x
        return torch.cat([x, progress.to(DTYPE).unsqueeze(-1)], dim=-1)

    def _seeded(self, salt: int) -> int:
        return (self.seed * 1_000_003 + self._total * 7919 + salt) % (2**63 - 1)

    def _fitted(self) -> SingleTaskGP:
        """The GP on the kept observations, fit (once per change of the data)."""
        if self._model is not None:
            return self._model
        if not self._lrs:
            raise ConfigError("no observations: observe() or fit() before asking the model")
        progress = torch.tensor(self._progress, dtype=DTYPE) if self.use_progress else None
        train_X = self._inputs(torch.tensor(self._lrs, dtype=DTYPE), progress)  # `n x d`
        train_Y = -torch.tensor(self._losses, dtype=DTYPE).unsqueeze(-1)  # `n x 1`
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(self._seeded(0))
            warnings.simplefilter("ignore", InputDataWarning)  # points outside the bounds
            warnings.simplefilter("ignore", OptimizationWarning)
            model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        model.eval()
        self._model = model
        return model

    def _progress_arg(self, progress: float | None) -> float | None:
        if not self.use_progress:
            if progress is not None:
                raise ConfigError(f"{progress=} given to a surrogate without use_progress")
            return None
        if progress is None or not 0 <= float(progress) <= 1:
            raise ConfigError(f"progress must be in [0, 1] for this surrogate, got {progress=}")
        return float(progress)

    def _unit_box(self, bounds: Sequence[float] | None) -> tuple[float, float]:
        if bounds is None:
            return 0.0, 1.0
        lo, hi = check_bounds(bounds, "suggest bounds")
        if lo < self.bounds[0] or hi > self.bounds[1]:
            raise ConfigError(
                f"suggest bounds {bounds!r} must lie within the surrogate's {self.bounds}"
            )
        unit = self.to_unit(torch.tensor([lo, hi], dtype=DTYPE))
        return float(unit[0]), float(unit[1])

    def predict(
        self, lrs: Sequence[float], *, progress: float | None = None
    ) -> tuple[list[float], list[float]]:
        """Posterior mean and standard deviation of the loss at plain ``lrs``."""
        p = self._progress_arg(progress)
        model = self._fitted()
        lr_t = torch.as_tensor(lrs, dtype=DTYPE)
        if lr_t.ndim != 1 or not bool((lr_t > 0).all()):
            raise ConfigError(f"lrs must be `n` LRs > 0, got shape `{shape_str(lr_t)}`")
        X = self._inputs(lr_t, None if p is None else torch.full_like(lr_t, p))
        with torch.no_grad():
            post = model.posterior(X)
        mean = -post.mean.squeeze(-1)
        std = post.variance.clamp_min(0).sqrt().squeeze(-1)
        return [float(v) for v in mean], [float(v) for v in std]

    def best_lr(
        self, *, progress: float | None = None, bounds: Sequence[float] | None = None
    ) -> float:
        """The LR of least predicted loss (posterior mean on a grid over log-LR)."""
        p = self._progress_arg(progress)
        lo, hi = self._unit_box(bounds)
        lrs = self.from_unit(torch.linspace(lo, hi, GRID, dtype=DTYPE))
        mean, _ = self.predict([float(v) for v in lrs], progress=p)
        return float(lrs[int(torch.tensor(mean).argmin())])

    # -- suggestions --------------------------------------------------------------------

    def suggest(
        self,
        k: int = 1,
        *,
        progress: float | None = None,
        acquisition: Acquisition = "logei",
        kappa: float = 2.0,
        bounds: Sequence[float] | None = None,
    ) -> list[float]:
        """``k`` LRs to try next, plain, ascending.

        Args:
            k: How many (a joint q-batch when ``k > 1``).
            progress: Where in training they will run, in ``[0, 1]``; required exactly when
                the surrogate has ``use_progress``.
            acquisition: ``"logei"``: (q)LogExpectedImprovement over the best posterior mean
                at the kept LRs (at ``progress``), robust to noisy losses; ``"ucb"``: (q)UCB
                on the negated loss, i.e. a lower confidence bound ``mean - kappa * std`` of
                the loss.
            kappa: Confidence multiplier of ``"ucb"`` (botorch's ``beta = kappa**2``).
            bounds: ``(lr_min, lr_max)`` within the surrogate's bounds to search in (a trust
                region); default the surrogate's bounds.

        Until ``n_init`` observations are kept the LRs come from a scrambled Sobol sequence
        in log-LR, continuing from where the observations left it. This call does not
        change the surrogate (except that it fits the GP if the data changed).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be an int >= 1, got {k=!r}")
        if acquisition not in ACQUISITIONS:
            raise ConfigError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
        if not (math.isfinite(kappa) and kappa >= 0):
            raise ConfigError(f"kappa must be finite and >= 0, got {kappa=}")
        p = self._progress_arg(progress)
        lo, hi = self._unit_box(bounds)
        if len(self._lrs) < self.n_init:
            sobol = SobolEngine(  # type: ignore[no-untyped-call]
                1, scramble=True, seed=self.seed
            ).draw(self._total + k, dtype=DTYPE)
            x = lo + sobol[self._total :, 0] * (hi - lo)
        else:
            x = self._optimize(k, p, acquisition, kappa, lo, hi)
        lr_lo, lr_hi = (float(b) for b in bounds) if bounds is not None else self.bounds
        # exp(log(.)) can miss a bound by an ulp: keep the LRs inside the box searched
        return sorted(min(max(float(v), lr_lo), lr_hi) for v in self.from_unit(x))

    def _optimize(
        self, k: int, p: float | None, acquisition: str, kappa: float, lo: float, hi: float
    ) -> torch.Tensor:
        model = self._fitted()
        # plug-in incumbent for logei: the best posterior mean at the kept LRs, at progress p
        lrs = torch.tensor(self._lrs, dtype=DTYPE)
        X = self._inputs(lrs, None if p is None else torch.full_like(lrs, p))
        with torch.no_grad():
            best_f = model.posterior(X).mean.max()
        seed = self._seeded(k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            acqf = make_acquisition(model, k, acquisition, kappa=kappa, best_f=best_f, seed=seed)
            return maximize(
                acqf,
                k,
                lo=lo,
                hi=hi,
                progress=p,
                num_restarts=self.num_restarts,
                raw_samples=self.raw_samples,
                seed=seed,
            )

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON data: the settings that shape the data and the kept observations (the GP is
        refit from them on load)."""
        return {
            "format": STATE_FORMAT,
            "bounds": list(self.bounds),
            "use_progress": self.use_progress,
            "seed": self.seed,
            "total": self._total,
            "lrs": list(self._lrs),
            "losses": list(self._losses),
            "progress": list(self._progress) if self.use_progress else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` output; keeps this surrogate's ``window``.

        Raises:
            ConfigError: another format, other bounds, ``use_progress`` or seed, or
                malformed observations.
        """
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(
                f"surrogate state format {state.get('format')!r}, expected {STATE_FORMAT}"
            )
        for key, mine in (
            ("bounds", list(self.bounds)),
            ("use_progress", self.use_progress),
            ("seed", self.seed),
        ):
            if state.get(key) != mine:
                raise ConfigError(
                    f"surrogate state has {key}={state.get(key)!r}, this one {mine!r}"
                )
        total = state.get("total")
        lrs, losses = state.get("lrs"), state.get("losses")
        if not isinstance(lrs, list) or not isinstance(losses, list):
            raise ConfigError("surrogate state needs lists 'lrs' and 'losses'")
        cols = [lrs, state.get("progress")] if self.use_progress else [lrs]
        try:
            X = torch.tensor(cols, dtype=DTYPE).T.reshape(len(lrs), self.d)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(
                "surrogate state's lrs and progress must be equal-length lists of numbers"
            ) from None
        X, y = self._check_data(X, torch.tensor(losses, dtype=DTYPE))
        if isinstance(total, bool) or not isinstance(total, int) or total < len(lrs):
            raise ConfigError(
                f"surrogate state 'total' must be an int >= {len(lrs)}, got {total!r}"
            )
        self._lrs, self._losses, self._progress = [], [], []
        self._append(X, y)
        self._total = total
