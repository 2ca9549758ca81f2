"""Controller specs: plain JSON data that names a controller and its settings.

Specs cross process boundaries (to the Ray head, into Redis), so they are dicts of JSON
values, never pickled objects: ``{"method": "stagewise", "init_lr": 1e-3, "tau": 100}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tuner.controllers.base import Controller
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
from tuner.errors import ConfigError

LR_METHODS = ("stagewise",)


def build_controller(spec: Mapping[str, Any]) -> Controller:
    """The controller a spec names, or :class:`ConfigError` saying what is wrong."""
    settings = dict(spec)
    method = settings.pop("method", "stagewise")
    if method == "stagewise":
        known = {f.name for f in dataclasses.fields(StagewiseConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown} for LR method 'stagewise'; known: {sorted(known)}"
            )
        if "init_lr" not in settings:
            raise ConfigError("LR method 'stagewise' needs init_lr (the LR the search starts at)")
        return StagewiseLR(StagewiseConfig(**settings))
    raise ConfigError(f"unknown LR method {method!r}; choose one of {list(LR_METHODS)}")
