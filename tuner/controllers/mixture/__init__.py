"""Mixture controllers: a non-stationary bandit over domains or difficulty buckets.

Every ``tau`` optimizer steps a controller turns what the workers reported about each arm
into a reward per arm, updates its estimates, and decides the next stage's mixture: weights
over the arms that sum to 1, with a floor so no arm starves and exact weights for the arms
the user pins (:mod:`~tuner.controllers.mixture.base` has the stage mechanics).

Reports carry per-arm signals as flat metrics named ``<signal>/<arm>``:

- ``arm_count/<arm>``: examples of the arm in the reported batch (weights the means below;
  a report without it counts once);
- ``arm_loss/<arm>``: their mean loss (rewards ``learning_progress`` and ``loss``);
- ``arm_adv/<arm>``: their mean |advantage| (reward ``advantage``);
- ``arm_success/<arm>``: their success rate, in ``[0, 1]`` (reward
  ``intermediate_difficulty``);
- ``mixture_version``: version of the mixture decision the batch was drawn under.

Signals count for the stage of the decision whose version the report names (by step for
reports without ``mixture_version``); see :mod:`~tuner.controllers.mixture.signals`.

Algorithms, by spec name: ``sec`` (:class:`SEC`), ``exp3`` (:class:`EXP3`), ``exp3s``
(:class:`EXP3S`), ``odm`` (:class:`ODM`), ``ducb`` (:class:`DiscountedUCB`), ``dts``
(:class:`DiscountedTS`). :func:`build_mixture` makes one from a JSON spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tuner.controllers.mixture.base import BanditMixture
from tuner.controllers.mixture.config import MixtureConfig
from tuner.controllers.mixture.exp3 import EXP3, EXP3S, EXP3Config, EXP3SConfig
from tuner.controllers.mixture.odm import ODM, ODMConfig
from tuner.controllers.mixture.sec import SEC, SECConfig
from tuner.controllers.mixture.thompson import DiscountedTS, DiscountedTSConfig
from tuner.controllers.mixture.ucb import DiscountedUCB, DiscountedUCBConfig
from tuner.errors import ConfigError
from tuner.settings import typed_settings

ALGORITHMS: Mapping[str, type[BanditMixture]] = {
    cls.algorithm: cls for cls in (SEC, EXP3, EXP3S, ODM, DiscountedUCB, DiscountedTS)
}
"""Every mixture algorithm, by the name specs and decisions use."""

DEFAULT_MIXTURE: Mapping[str, Any] = {
    "method": "exp3s",
    "reward": "absolute_progress",
    "final_average": 0.25,
}
"""tautune's default mixture controller: EXP3.S on absolute learning progress, playing the
average of its mixtures over the last quarter of the run; chosen on the mixture and
curriculum benchmarks (docs/benchmarks-mixture.md). A spec that names no method gets all
of it; one that names a method gets that algorithm's own defaults."""


def build_mixture(spec: Mapping[str, Any]) -> BanditMixture:
    """The mixture controller a JSON spec names, e.g. ``{"method": "sec", "arms": [...]}``.

    Raises:
        ConfigError: Unknown method or setting, or a setting out of range.
    """
    settings = dict(spec)
    method = settings.pop("method", None)
    if method not in ALGORITHMS:
        raise ConfigError(f"unknown mixture method {method!r}; choose one of {list(ALGORITHMS)}")
    cls = ALGORITHMS[method]
    known = {f.name for f in dataclasses.fields(cls.config_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for mixture method {method!r}; known: {sorted(known)}"
        )
    if "arms" not in settings:
        raise ConfigError(f"mixture method {method!r} needs arms (the names of the arms)")
    settings = typed_settings(cls.config_type, settings, f"mixture method {method!r}")
    return cls(cls.config_type(**settings))


__all__ = [
    "ALGORITHMS",
    "EXP3",
    "EXP3S",
    "ODM",
    "SEC",
    "BanditMixture",
    "DiscountedTS",
    "DiscountedTSConfig",
    "DiscountedUCB",
    "DiscountedUCBConfig",
    "EXP3Config",
    "EXP3SConfig",
    "MixtureConfig",
    "ODMConfig",
    "SECConfig",
    "build_mixture",
]
