"""Validation of a stored mixture-controller state, before any of it is loaded."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.controllers.mixture.config import MixtureConfig
from tuner.controllers.mixture.signals import SLOTS
from tuner.errors import ConfigError

if TYPE_CHECKING:
    from tuner.controllers.mixture.base import BanditMixture

FIELDS = (
    "updates",
    "reports_seen",
    "last_step",
    "late_reports",
    "unattributed",
    "last_rewards",
    "finished",
)
STAGE_KEYS = ("stage", "version", "from", "until", "window_end", "weights", "sums", "scored")


def check_state(ctl: BanditMixture, state: Any) -> tuple[MixtureConfig, dict[str, Any]]:
    """The config and attributes ``state`` holds for ``ctl``, or :class:`ConfigError`.

    Nothing of ``ctl`` is changed; the returned values share nothing with ``state``.
    """
    try:
        return _check(ctl, state)
    except ConfigError as e:
        raise ConfigError(f"not a {type(ctl).__name__} state: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"not a {type(ctl).__name__} state: {e!r}") from None


def _check(ctl: BanditMixture, state: Any) -> tuple[MixtureConfig, dict[str, Any]]:
    if not isinstance(state, dict):
        raise ConfigError(f"expected a dict, got {type(state).__name__}")
    if state["algorithm"] != ctl.algorithm:
        raise ConfigError(
            f"it was written by algorithm {state['algorithm']!r}, not {ctl.algorithm!r}"
        )
    if not isinstance(state["config"], dict):
        raise ConfigError(f"config must be a dict, got {state['config']!r:.200}")
    config = ctl.config_type(**state["config"])
    loaded = {f: copy.deepcopy(state[f]) for f in FIELDS}
    loaded["played"] = copy.deepcopy(state.get("played", {}))  # absent before final_average
    vectors = _vectors(ctl, config, state["vectors"])
    stages = copy.deepcopy(state["stages"])
    for f in ("updates", "reports_seen", "late_reports", "unattributed"):
        _integer(f, loaded[f], 0)
    _integer("last_step", loaded["last_step"], -1)
    if not isinstance(loaded["finished"], bool):
        raise ConfigError(f"finished must be a bool, got {loaded['finished']!r}")
    _floats("last_rewards", loaded["last_rewards"], config.arms)
    _floats("played", loaded["played"], config.arms)
    if any(v < 0 for v in loaded["played"].values()):
        raise ConfigError(f"played must be >= 0 per arm, got {loaded['played']!r:.200}")
    _check_stages(stages, config)
    ctl._check_vectors(config, vectors)
    loaded["vectors"] = vectors
    loaded["stages"] = stages
    return config, loaded


def _vectors(ctl: BanditMixture, config: MixtureConfig, raw: Any) -> dict[str, np.ndarray]:
    if not isinstance(raw, dict) or set(raw) != set(ctl.vector_names):
        raise ConfigError(
            f"vectors must be a dict with keys {list(ctl.vector_names)}, got {raw!r:.200}"
        )
    k = len(config.free_arms)
    out = {}
    for key, values in raw.items():
        if not isinstance(values, list) or len(values) != k:
            raise ConfigError(f"vector {key!r} must be a list of {k} numbers, got {values!r:.200}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"vector {key!r} must hold finite numbers, got {v!r}")
        out[key] = np.array(values, dtype=float)
    return out


def _check_stages(stages: Any, config: MixtureConfig) -> None:
    if not isinstance(stages, list):
        raise ConfigError(f"stages must be a list, got {stages!r:.200}")
    for s in stages:
        if not isinstance(s, dict) or set(s) != set(STAGE_KEYS):
            raise ConfigError(f"a stage record must have keys {list(STAGE_KEYS)}, got {s!r:.200}")
        for key in ("stage", "version", "from"):
            _integer(f"stage {key}", s[key], 0)
        for key in ("until", "window_end"):
            _integer(f"stage {key}", s[key], s["from"] + 1)
        if not isinstance(s["scored"], bool):
            raise ConfigError(f"stage scored must be a bool, got {s['scored']!r}")
        _floats("stage weights", s["weights"], config.arms)
        sums = s["sums"]
        if not isinstance(sums, dict) or any(a not in config.arms for a in sums):
            raise ConfigError(f"stage sums must map arms to lists, got {sums!r:.200}")
        for row in sums.values():
            if not isinstance(row, list) or len(row) != len(SLOTS):
                raise ConfigError(
                    f"stage sums must be lists of {len(SLOTS)} numbers, got {row!r:.200}"
                )
            for v in row:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise ConfigError(f"stage sums must hold finite numbers, got {v!r}")
    if [s["stage"] for s in stages] != sorted({s["stage"] for s in stages}):
        raise ConfigError("stage records must be in increasing stage order")


def _integer(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be an int >= {lo}, got {value!r}")


def _floats(name: str, value: Any, arms: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a dict of arm to number, got {value!r:.200}")
    for arm, v in value.items():
        if arm not in arms:
            raise ConfigError(f"{name} names an unknown arm {arm!r}")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{name}[{arm!r}] must be a finite number, got {v!r}")
