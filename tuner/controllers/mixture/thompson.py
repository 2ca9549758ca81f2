"""Discounted Thompson sampling with Gaussian rewards (discounting as in Raj and Kalyani, 2017).

Each arm's mean reward has a Gaussian prior ``N(prior_mean, prior_std^2)``; a stage's reward
is taken as a draw around it with standard deviation ``noise_std`` per uniform-stage
observation. Evidence decays by ``discount`` every scored stage, as in discounted UCB
(``N_a <- g N_a + n_a``, ``S_a <- g S_a + n_a r_a``, ``n_a = K * share_a``), so the
posterior ``N(m_a, v_a)``, ``1 / v_a = 1 / prior_std^2 + N_a / noise_std^2``,
``m_a = v_a (prior_mean / prior_std^2 + S_a / noise_std^2)``, widens again for arms the
mixture leaves at the floor.

Thompson sampling plays arm ``a`` with the posterior probability that it is the best, so
the mixture is that probability, estimated from ``draws`` joint posterior samples. The
samples come from ``numpy.random.default_rng([seed, stage])``: the same state and stage
give the same mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig, integer, number
from tuner.controllers.mixture.ucb import check_counts, discounted_update


@dataclass(frozen=True)
class DiscountedTSConfig(MixtureConfig):
    """:class:`MixtureConfig` plus discounted Thompson sampling's settings.

    Attributes:
        discount: Factor ``g`` in ``(0, 1]`` applied to the evidence every scored stage.
        prior_mean, prior_std: Gaussian prior of each arm's mean reward (reward units).
        noise_std: Standard deviation of a stage reward around the arm's mean.
        draws: Posterior samples the probabilities of being best are estimated from.
    """

    discount: float = 0.8
    prior_mean: float = 0.5
    prior_std: float = 0.5
    noise_std: float = 0.1
    draws: int = 2000

    def _check_params(self) -> None:
        number("discount", self.discount, lo=0.0, hi=1.0, lo_open=True)
        number("prior_mean", self.prior_mean)
        number("prior_std", self.prior_std, lo=0.0, lo_open=True)
        number("noise_std", self.noise_std, lo=0.0, lo_open=True)
        integer("draws", self.draws, lo=1)


class DiscountedTS(BanditMixture):
    """Discounted Gaussian Thompson sampling; see the module docstring."""

    algorithm = "dts"
    config_type = DiscountedTSConfig
    vector_names = ("n", "s")
    config: DiscountedTSConfig

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        discounted_update(self.vectors, rewards, shares, self.config.discount)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and standard deviations of the free arms' mean rewards."""
        c = self.config
        precision = 1 / c.prior_std**2 + self.vectors["n"] / c.noise_std**2
        mean = (c.prior_mean / c.prior_std**2 + self.vectors["s"] / c.noise_std**2) / precision
        return mean, 1 / np.sqrt(precision)

    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        mean, std = self.posterior()
        samples = rng.normal(mean, std, size=(self.config.draws, len(mean)))
        wins = np.bincount(np.argmax(samples, axis=1), minlength=len(mean))
        return np.asarray(wins / self.config.draws, dtype=float)

    def _check_vectors(self, config: MixtureConfig, vectors: dict[str, np.ndarray]) -> None:
        check_counts(vectors)
