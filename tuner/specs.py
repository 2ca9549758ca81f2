"""Controller specs: plain JSON data that names a controller and its settings.

Specs cross process boundaries (to the Ray head, into Redis), so they are dicts of JSON
values, never pickled objects: ``{"method": "stagewise", "init_lr": 1e-3, "tau": 100}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tuner.controllers.base import Controller, PopulationController
from tuner.controllers.mixture import ALGORITHMS as MIXTURE_METHODS
from tuner.controllers.mixture import DEFAULT_MIXTURE, build_mixture
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
from tuner.errors import ConfigError

LR_METHODS = ("stagewise", "explore", "autolrs")


def build_controller(spec: Mapping[str, Any]) -> Controller:
    """The controller a spec names, or :class:`ConfigError` saying what is wrong.

    ``{"method": "composite", "lr": {...}, "mixture": {...}}`` tunes both in one job.
    """
    settings = dict(spec)
    method = settings.pop("method", "stagewise")
    if method == "composite":
        from tuner.controllers.base import LRController, MixtureController
        from tuner.controllers.composite import Composite

        unknown = sorted(set(settings) - {"lr", "mixture"})
        if unknown or "lr" not in settings or "mixture" not in settings:
            raise ConfigError(
                f"a composite spec needs exactly 'lr' and 'mixture', got {sorted(spec)}"
            )
        lr, mix = build_controller(settings["lr"]), build_controller(settings["mixture"])
        if not isinstance(lr, LRController) or not isinstance(mix, MixtureController):
            raise ConfigError(
                "a composite needs an LR method under 'lr' and a mixture under 'mixture'"
            )
        return Composite(lr, mix)
    if method in MIXTURE_METHODS:
        return build_mixture({"method": method, **settings})
    if method in LR_METHODS:
        return _build_lr(method, settings)
    raise ConfigError(
        f"unknown method {method!r}; LR methods: {list(LR_METHODS)}, mixture methods: "
        f"{list(MIXTURE_METHODS)}, or 'composite'"
    )


def _lr_config(method: str) -> tuple[Any, Any, tuple[str, ...]]:
    """``(config class, controller class, required settings)`` of LR method ``method``.

    Each method's module is imported only when it is asked for: ``explore`` and
    ``autolrs`` bring in botorch and scipy, and loading scipy's libraries before torch's in
    a process that already holds Ray's (a job driver) can leave no room for torch's
    thread-local storage ("Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so").
    """
    if method == "stagewise":
        return StagewiseConfig, StagewiseLR, ("init_lr",)
    if method == "explore":
        from tuner.controllers.explore_lr import ExploreConfig, ExploreLR

        return ExploreConfig, ExploreLR, ("init_lr",)
    if method == "autolrs":
        from tuner.controllers.autolrs import AutoLRSClassic, AutoLRSConfig

        return AutoLRSConfig, AutoLRSClassic, ("lr_min", "lr_max")
    raise ConfigError(f"unknown LR method {method!r}; LR methods: {list(LR_METHODS)}")


def lr_settings(method: str) -> set[str]:
    """The settings LR method ``method`` knows."""
    return {f.name for f in dataclasses.fields(_lr_config(method)[0])}


def _build_lr(method: str, settings: dict[str, Any]) -> Controller:
    """``stagewise`` (the skeleton's search, no restores), ``explore`` (candidates from
    snapshots; workers pass ``model=`` to ``agent.lr_scheduler``) or ``autolrs`` (AutoLRS
    as published; needs ``lr_min`` and ``lr_max``)."""
    config_cls, build, required = _lr_config(method)
    known = lr_settings(method)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for LR method {method!r}; known: {sorted(known)}"
        )
    missing = [name for name in required if name not in settings]
    if missing:
        raise ConfigError(f"LR method {method!r} needs {', '.join(missing)}")
    try:
        config = config_cls(**settings)
    except TypeError as e:
        raise ConfigError(f"LR method {method!r}: {e}") from None
    return build(config)  # type: ignore[no-any-return]


def build_population_controller(spec: Mapping[str, Any], trials: int) -> PopulationController:
    """The population controller for ``trials`` trials, from an LR spec (``init_lr``,
    ``tau``, ``total_steps``, bounds...; ``method`` is ignored: populations search with
    :class:`~tuner.controllers.population.PopulationLR`)."""
    from tuner.controllers.population import PopulationConfig, PopulationLR

    settings = {k: v for k, v in spec.items() if k != "method"}
    settings["trials"] = trials
    known = {f.name for f in dataclasses.fields(PopulationConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for a population; known: {sorted(known)}")
    if "init_lr" not in settings:
        raise ConfigError("a population needs init_lr (the LR the search starts at)")
    return PopulationLR(PopulationConfig(**settings))


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_mixture_spec(text: str) -> dict[str, Any]:
    """``"method=ducb,arms=code/prose/math,tau=100"`` (arms separated by ``/``) or JSON;
    without ``method``, tautune's default (:data:`~tuner.controllers.mixture.DEFAULT_MIXTURE`)."""
    spec = _parse_pairs(text, "--mixture", "method=ducb,arms=code/prose/math,tau=100")
    if "method" not in spec:
        spec = {**DEFAULT_MIXTURE, **spec}
    if isinstance(spec.get("arms"), str):
        spec["arms"] = [a for a in str(spec["arms"]).split("/") if a]
    build_controller(spec)
    return spec


def combine_specs(
    lr: Mapping[str, Any] | None, mixture: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The head's spec for an LR spec, a mixture spec, or both (a composite)."""
    if lr is not None and mixture is not None:
        return {"method": "composite", "lr": dict(lr), "mixture": dict(mixture)}
    chosen = lr if lr is not None else mixture
    return dict(chosen) if chosen is not None else None


def parse_lr_spec(text: str) -> dict[str, Any]:
    """``"init_lr=1e-3,tau=100,total_steps=5000"`` (optionally ``method=stagewise``) -> spec.

    Also accepts a JSON object. The spec is validated by building its controller.
    """
    spec = _parse_pairs(text, "--lr", "init_lr=1e-3,tau=100,total_steps=5000")
    build_controller(spec)
    return spec


def _parse_pairs(text: str, flag: str, example: str) -> dict[str, Any]:
    text = text.strip()
    if text.startswith("{"):
        import json

        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{flag} is not valid JSON: {e}") from None
        if not isinstance(spec, dict):
            raise ConfigError(f"{flag} JSON must be an object")
        return spec
    spec = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"{flag} expects name=value pairs separated by commas, got {part!r} "
                f"(e.g. {example})"
            )
        spec[name.strip()] = _number(value.strip())
    return spec
