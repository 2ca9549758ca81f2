"""SEC, Self-Evolving Curriculum (Chen et al., 2025): TD(0) values and a Boltzmann policy.

Each arm's value moves towards its stage reward, ``Q <- alpha * r + (1 - alpha) * Q`` (arms
without data keep their value), and the mixture is ``p ∝ exp(Q / T)``. SEC's reward is the
mean |advantage| of the arm's samples in RL post-training; the paper uses ``alpha = 0.5``
and ``T`` in ``{1.0, 0.4}``. With rewards in ``[0, 1]``, ``T = 1`` keeps the mixture soft (at
most ``e`` times more of the best arm than of the worst); ``T = 0.4`` sharpens it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig, number
from tuner.controllers.mixture.weights import softmax


@dataclass(frozen=True)
class SECConfig(MixtureConfig):
    """:class:`MixtureConfig` plus SEC's settings.

    Attributes:
        alpha: Step size of the value update, in ``(0, 1]``.
        temperature: Boltzmann temperature ``T > 0``, in reward units.
    """

    reward: str = "advantage"
    alpha: float = 0.5
    temperature: float = 1.0

    def _check_params(self) -> None:
        number("alpha", self.alpha, lo=0.0, hi=1.0, lo_open=True)
        number("temperature", self.temperature, lo=0.0, lo_open=True)


class SEC(BanditMixture):
    """Self-Evolving Curriculum; see the module docstring."""

    algorithm = "sec"
    config_type = SECConfig
    vector_names = ("q",)
    config: SECConfig

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        seen = ~np.isnan(rewards)
        a = self.config.alpha
        self.vectors["q"][seen] = a * rewards[seen] + (1 - a) * self.vectors["q"][seen]

    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        return softmax(self.vectors["q"] / self.config.temperature)
