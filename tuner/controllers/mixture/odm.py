"""ODM, Online Data Mixing (Albalak et al., 2023): EXP3 on smoothed, loss-based rewards.

Each domain's reward is its training loss (a domain with a high loss has much left to
learn). ODM keeps a smoothed mean of the importance-weighted reward,
``R_a <- alpha * R_a + (1 - alpha) * r_a / pi_a``, and plays

    pi_a = (1 - K * eps_t) * exp(eps_{t-1} * R_a) / sum_b exp(eps_{t-1} * R_b) + eps_t,
    eps_t = min(1 / K, sqrt(ln K / (K * t))).

ODM updates after every batch, drawn from one domain; here ``t`` counts scored stages and
every arm with data in a stage is updated once, with ``pi_a`` its share of the stage. The
``1 / pi_a`` factor is kept from the paper: it is what makes ODM balance the mixture (a
rarely drawn domain's estimate grows until it is drawn more), so its fixed point is the
paper's. The paper's ``alpha = 0.9`` is per batch; per stage it means a memory of about
ten stages, so the default here is ``0.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig, number
from tuner.controllers.mixture.weights import softmax


@dataclass(frozen=True)
class ODMConfig(MixtureConfig):
    """:class:`MixtureConfig` plus ODM's setting.

    Attributes:
        smoothing: Weight ``alpha`` of the old estimate in the smoothed mean, in ``[0, 1)``.
    """

    reward: str = "loss"
    smoothing: float = 0.5

    def _check_params(self) -> None:
        number("smoothing", self.smoothing, lo=0.0, hi=1.0, hi_open=True)


def exploration(k: int, t: int) -> float:
    """``eps_t = min(1 / K, sqrt(ln K / (K t)))``; ``1 / K`` for ``t <= 0``."""
    if t <= 0:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


class ODM(BanditMixture):
    """Online Data Mixing; see the module docstring."""

    algorithm = "odm"
    config_type = ODMConfig
    vector_names = ("r_hat",)
    config: ODMConfig

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        seen = ~np.isnan(rewards) & (shares > 0)
        a = self.config.smoothing
        r_hat = self.vectors["r_hat"]
        r_hat[seen] = a * r_hat[seen] + (1 - a) * rewards[seen] / shares[seen]

    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        k = len(self.vectors["r_hat"])
        eps, eps_prev = exploration(k, self.updates), exploration(k, self.updates - 1)
        return (1 - k * eps) * softmax(eps_prev * self.vectors["r_hat"]) + eps
