"""EXP3 and EXP3.S over stages: exponential weights with a uniform mix, and weight sharing.

EXP3 (Auer et al., 2002) keeps a log-weight per arm, ``log w += eta * x_hat``, and plays
``p = (1 - gamma) * w / sum(w) + gamma / K``. With a single pull per round, ``x_hat`` is the
reward divided by the probability of the arm pulled, which makes it unbiased. A mixture
draws every arm in every stage, about ``p_a * n`` times out of ``n``; the importance-weighted
sum over the stage's draws divided by ``n`` is then the arm's mean reward, so here
``x_hat`` is the arm's stage reward itself: the feedback is full-information and EXP3
becomes exponential weights (Hedge) with the ``gamma`` mix. For the same reason the learning
rate ``eta`` is set on its own rather than tied to ``gamma / K``. An arm without data in a
stage moves with the mean update of the others (its share is kept).

EXP3.S adds weight sharing (Auer et al.'s fixed share, Herbster and Warmuth's tracking of
the best expert): after each update ``w <- (1 - share) * w + share * sum(w) / K``. No arm's
weight falls below ``share / K`` of the total, so when the best arm changes the new one
overtakes within about ``ln(K / share) / (eta * gap)`` stages instead of however long the
old one led.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig, number
from tuner.controllers.mixture.weights import softmax


@dataclass(frozen=True)
class EXP3Config(MixtureConfig):
    """:class:`MixtureConfig` plus EXP3's settings.

    Attributes:
        eta: Learning rate per stage, per unit of reward.
        gamma: Uniform exploration mixed into the policy, in ``[0, 1]``.
    """

    eta: float = 2.0
    gamma: float = 0.05

    def _check_params(self) -> None:
        number("eta", self.eta, lo=0.0, lo_open=True)
        number("gamma", self.gamma, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class EXP3SConfig(EXP3Config):
    """:class:`EXP3Config` plus the share of weight spread evenly after each stage.

    Attributes:
        share: Fraction of the total weight spread evenly after each update, in ``(0, 1)``.
    """

    share: float = 0.1

    def _check_params(self) -> None:
        super()._check_params()
        number("share", self.share, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


class EXP3(BanditMixture):
    """EXP3 with stage rewards (exponential weights); see the module docstring."""

    algorithm = "exp3"
    config_type = EXP3Config
    vector_names = ("log_w",)
    config: EXP3Config

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        seen = ~np.isnan(rewards)
        w = shares[seen] if shares[seen].sum() > 0 else None
        x = np.where(seen, rewards, np.average(rewards[seen], weights=w))
        log_w = self.vectors["log_w"] + self.config.eta * x
        self.vectors["log_w"] = log_w - log_w.max()  # only differences matter

    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        g = self.config.gamma
        return (1 - g) * softmax(self.vectors["log_w"]) + g / len(self.vectors["log_w"])


class EXP3S(EXP3):
    """EXP3.S: EXP3 with weight sharing, to follow a best arm that changes."""

    algorithm = "exp3s"
    config_type = EXP3SConfig
    config: EXP3SConfig

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        super()._update(rewards, shares)
        a = self.config.share
        w = (1 - a) * softmax(self.vectors["log_w"]) + a / len(rewards)
        log_w = np.log(w)
        self.vectors["log_w"] = log_w - log_w.max()
