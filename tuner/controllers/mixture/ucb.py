"""Discounted UCB (Garivier and Moulines, 2011), allocating a stage's draws by index.

Counts and reward sums decay by ``discount`` every scored stage, so old evidence fades and
a change of the best arm is noticed: ``N_a <- g N_a + n_a``, ``S_a <- g S_a + n_a r_a`` with
``n_a = K * share_a`` (a stage at uniform weights adds one observation per arm; an arm at
the floor adds little, and its uncertainty stays high). The index is

    mean_a + bonus * sqrt(ln(max(N, e)) / N_a),    N = sum_b N_b,

infinite while ``N_a = 0``. UCB plays one arm per round; a stage is many draws, so the
mixture allocates them in :data:`SLOTS` slices, each to the arm of largest index, counting
each slice as an observation (of the arm's current mean) before choosing the next. An arm
far ahead gets the whole stage; arms whose bonus makes them close get a share each.
Deterministic: no randomness is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig, number
from tuner.errors import ConfigError

SLOTS = 100
"""Slices a stage's draws are allocated in (the mixture's resolution before the floor)."""


@dataclass(frozen=True)
class DiscountedUCBConfig(MixtureConfig):
    """:class:`MixtureConfig` plus discounted UCB's settings.

    Attributes:
        discount: Factor ``g`` in ``(0, 1]`` applied to the evidence every scored stage;
            ``1 / (1 - g)`` is the memory in stages.
        bonus: Width of the confidence bonus, in reward units (Garivier and Moulines use
            ``2 B sqrt(xi)`` for rewards in ``[0, B]``; smaller explores less).
    """

    discount: float = 0.8
    bonus: float = 0.2

    def _check_params(self) -> None:
        number("discount", self.discount, lo=0.0, hi=1.0, lo_open=True)
        number("bonus", self.bonus, lo=0.0)


class DiscountedUCB(BanditMixture):
    """Discounted UCB; see the module docstring."""

    algorithm = "ducb"
    config_type = DiscountedUCBConfig
    vector_names = ("n", "s")
    config: DiscountedUCBConfig

    def _update(self, rewards: np.ndarray, shares: np.ndarray) -> None:
        discounted_update(self.vectors, rewards, shares, self.config.discount)

    def _preferences(self, rng: np.random.Generator) -> np.ndarray:
        n = self.vectors["n"].copy()
        s = self.vectors["s"]
        k = len(n)
        mean = np.divide(s, n, out=np.zeros(k), where=n > 0)
        slots = np.zeros(k)
        for _ in range(SLOTS):
            log_total = math.log(max(n.sum(), math.e))
            width = self.config.bonus * np.sqrt(log_total / np.maximum(n, 1e-12))
            index = np.where(n > 0, mean + width, np.inf)
            best = int(np.argmax(index))
            slots[best] += 1
            n[best] += k / SLOTS
        return slots / SLOTS

    def _check_vectors(self, config: MixtureConfig, vectors: dict[str, np.ndarray]) -> None:
        check_counts(vectors)


def discounted_update(
    vectors: dict[str, np.ndarray], rewards: np.ndarray, shares: np.ndarray, discount: float
) -> None:
    """``N <- g N + n``, ``S <- g S + n r`` with ``n = K * share`` for arms with a reward."""
    seen = ~np.isnan(rewards)
    n = len(rewards) * shares
    vectors["n"] = discount * vectors["n"] + np.where(seen, n, 0.0)
    vectors["s"] = discount * vectors["s"] + np.where(seen, n * np.nan_to_num(rewards), 0.0)


def check_counts(vectors: dict[str, np.ndarray]) -> None:
    if np.any(vectors["n"] < 0):
        raise ConfigError(f"discounted counts must be >= 0, got n={vectors['n'].tolist()}")
