"""The search space: plain LRs outside, normalized log-LR inside; input checks with shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import torch

from tuner.errors import ConfigError

DTYPE = torch.float64

ArrayLike: TypeAlias = torch.Tensor | Sequence[float] | Sequence[Sequence[float]]


def check_bounds(bounds: Sequence[float], what: str = "bounds") -> tuple[float, float]:
    """``(lr_min, lr_max)`` as floats with ``0 < lr_min < lr_max``, finite."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be (lr_min, lr_max), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ConfigError(f"{what} must be finite LRs with 0 < lr_min < lr_max, got {bounds!r}")
    return lo, hi


def shape_str(t: torch.Tensor) -> str:
    """``"n x d"``-style shape for messages."""
    return " x ".join(map(str, t.shape)) or "scalar"


def to_unit(lrs: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Plain LRs to normalized log-LR: 0 at ``lr_min``, 1 at ``lr_max``."""
    lo, hi = (math.log(b) for b in bounds)
    return (lrs.to(DTYPE).log() - lo) / (hi - lo)


def from_unit(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Normalized log-LR back to plain LRs."""
    lo, hi = (math.log(b) for b in bounds)
    return (lo + x.to(DTYPE) * (hi - lo)).exp()


def check_data(
    X: torch.Tensor, y: torch.Tensor, *, use_progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check observations: ``X`` is ``n x d`` (plain LR, and progress in ``[0, 1]`` when
    ``use_progress``), ``y`` is ``n`` losses, all finite.

    Raises:
        ConfigError: naming the shape or the values that are wrong.
    """
    d = 2 if use_progress else 1
    cols = "(lr, progress)" if use_progress else "(lr)"
    if X.ndim != 2 or X.shape[-1] != d:
        raise ConfigError(f"X must be `n x d` with d={d} {cols}, got shape `{shape_str(X)}`")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ConfigError(
            f"y must be `n` with n={X.shape[0]} (the rows of X), got shape `{shape_str(y)}`"
        )
    if not bool(torch.isfinite(X).all()) or not bool(torch.isfinite(y).all()):
        raise ConfigError("X and y must be finite (drop diverged runs or clip their loss)")
    if bool((X[:, 0] <= 0).any()):
        raise ConfigError(f"LRs (X[:, 0]) must be > 0, got min {float(X[:, 0].min())}")
    if use_progress and bool(((X[:, 1] < 0) | (X[:, 1] > 1)).any()):
        raise ConfigError(
            f"progress (X[:, 1]) must lie in [0, 1], got "
            f"{float(X[:, 1].min())}..{float(X[:, 1].max())}"
        )
    return X, y
