"""AutoLRS's per-stage LR choice (Jin et al., ICLR 2021), for tautune's ``classic`` mode.

Each stage AutoLRS rebuilds a GP over log-LR from that stage's candidates only (no memory
across stages, no progress input), picks the next candidate as the minimizer of the lower
confidence bound ``mean - kappa * std`` of the (forecast) loss with ``kappa = 1e6``, and, once
its k candidates are tried, trains with the best one. With ``kappa = 1e6`` the mean does not
matter: the LCB's minimizer is where the posterior standard deviation is largest, away
from the LRs already tried, so the candidates are pure space filling over the log-LR range
and the "BO" choice reduces to :func:`autolrs_classic_pick` among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.bo.surrogate import GRID, LRSurrogate
from tuner.errors import ConfigError

AUTOLRS_KAPPA = 1e6


def autolrs_classic_suggest(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    bounds: Sequence[float],
    kappa: float = AUTOLRS_KAPPA,
    seed: int = 0,
) -> float:
    """The next candidate LR of a classic AutoLRS stage, plain.

    Args:
        lrs: This stage's candidates tried so far (plain LRs), ``n``.
        losses: Their (forecast) losses, ``n``.
        bounds: ``(lr_min, lr_max)``.
        kappa: LCB multiplier; AutoLRS's 1e6 makes this space filling.
        seed: Fixes the first candidate (quasi-random) and the acquisition optimization.
    """
    if len(lrs) != len(losses):
        raise ConfigError(
            f"lrs and losses must have the same length, got {len(lrs)} and {len(losses)}"
        )
    surrogate = LRSurrogate(bounds, window=max(len(lrs), 2), seed=seed, n_init=1)
    if not lrs:
        return surrogate.suggest(1)[0]  # the first point of a scrambled Sobol sequence
    surrogate.fit([[float(lr)] for lr in lrs], [float(v) for v in losses])
    # With kappa = 1e6, botorch's acquisition optimizer meets infinite values in its
    # initial-condition sampler; the LCB's minimizer over a dense log-LR grid is the same
    # point without that numerical trouble.
    lo, hi = (math.log(b) for b in surrogate.bounds)
    grid = [math.exp(lo + (hi - lo) * i / (GRID - 1)) for i in range(GRID)]
    mean, std = surrogate.predict(grid)
    lcb = [m - kappa * s for m, s in zip(mean, std, strict=True)]
    return grid[min(range(GRID), key=lcb.__getitem__)]


def autolrs_classic_pick(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The LR a classic stage trains with: the candidate of least (forecast) loss."""
    if not lrs or len(lrs) != len(losses):
        raise ConfigError(
            f"need one loss per candidate and at least one candidate, got {len(lrs)} LRs "
            f"and {len(losses)} losses"
        )
    best = min(range(len(lrs)), key=lambda i: float(losses[i]))
    return float(lrs[best])
