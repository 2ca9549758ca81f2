"""Bayesian optimization over log-LR: the surrogate the AutoLRS-style LR controllers use.

Pure (no ``redis``, no ``ray``): observations in, LRs out. LRs are plain outside and in log
space inside the GP, normalized to ``[0, 1]`` by the search bounds; losses are minimized.

- :class:`LRSurrogate` — one GP carried across stages (optional progress input), with a
  bounded window of observations, ``logei``/``ucb`` suggestions and JSON state.
- :func:`autolrs_classic_suggest` / :func:`autolrs_classic_pick` — AutoLRS's per-stage
  choice, for the ``classic`` mode.
"""

from __future__ import annotations

from tuner.bo.acquisition import ACQUISITIONS, Acquisition
from tuner.bo.classic import AUTOLRS_KAPPA, autolrs_classic_pick, autolrs_classic_suggest
from tuner.bo.surrogate import STATE_FORMAT, LRSurrogate

__all__ = [
    "ACQUISITIONS",
    "AUTOLRS_KAPPA",
    "STATE_FORMAT",
    "Acquisition",
    "LRSurrogate",
    "autolrs_classic_pick",
    "autolrs_classic_suggest",
]
