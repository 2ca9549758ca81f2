"""Controller specs: plain JSON data that names a controller and its settings.

Specs cross process boundaries (to the Ray head, into Redis), so they are dicts of JSON
values, never pickled objects: ``{"method": "auto", "init_lr": 1e-3, "tau": 100}``.
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
from tuner.settings import typed_settings

LR_METHODS = ("auto", "stagewise", "explore", "autolrs")
DEFAULT_LR_METHOD = "auto"
RESTORING_LR_METHODS = ("explore", "autolrs")
"""LR methods that rewind the model to snapshots (the workers pass ``model=``)."""


def build_controller(spec: Mapping[str, Any]) -> Controller:
    """The controller a spec names, or :class:`ConfigError` saying what is wrong.

    ``{"method": "composite", "lr": {...}, "mixture": {...}}`` tunes both in one job.
    """
    controller = _from_spec(spec, build=True)
    assert controller is not None
    return controller


def check_spec(spec: Mapping[str, Any]) -> None:
    """Raise what :func:`build_controller` would raise for ``spec``, without building an LR
    controller: nothing here imports torch or botorch, so a process that already holds
    Ray's libraries (a job driver) can check a spec; loading scipy's and torch's libraries
    into such a process can leave no room for torch's thread-local storage ("Intel oneMKL
    FATAL ERROR: Cannot load libtorch_cpu.so"). The head builds the controller in its own
    actor."""
    _from_spec(spec, build=False)


def _from_spec(spec: Mapping[str, Any], *, build: bool) -> Controller | None:
    settings = dict(spec)
    method = settings.pop("method", DEFAULT_LR_METHOD)
    if method == "composite":
        unknown = sorted(set(settings) - {"lr", "mixture"})
        if unknown or "lr" not in settings or "mixture" not in settings:
            raise ConfigError(
                f"a composite spec needs exactly 'lr' and 'mixture', got {sorted(spec)}"
            )
        lr, mix = settings["lr"], settings["mixture"]
        if not isinstance(lr, Mapping) or not isinstance(mix, Mapping):
            raise ConfigError("a composite's 'lr' and 'mixture' must be specs (objects)")
        lr_method = lr.get("method", DEFAULT_LR_METHOD)
        if lr_method not in LR_METHODS or mix.get("method") not in MIXTURE_METHODS:
            raise ConfigError(
                "a composite needs an LR method under 'lr' and a mixture under 'mixture'"
            )
        if lr_method in RESTORING_LR_METHODS:
            raise ConfigError(
                f"LR method {lr_method!r} rewinds the model to snapshots, which a composite "
                "with a mixture controller does not support (the bandit would learn from "
                "steps that are thrown away); use 'auto', which is 'stagewise' in a "
                "composite, or 'stagewise'"
            )
        lr_values = {k: v for k, v in lr.items() if k != "method"}
        lr_part = _build_lr(lr_method, lr_values, build=build, restores=False)
        mix_part = _from_spec(mix, build=build)
        if not build:
            return None
        from tuner.controllers.base import LRController, MixtureController
        from tuner.controllers.composite import Composite

        assert isinstance(lr_part, LRController) and isinstance(mix_part, MixtureController)
        return Composite(lr_part, mix_part)
    if method in MIXTURE_METHODS:
        return build_mixture({"method": method, **settings})
    if method in LR_METHODS:
        return _build_lr(method, settings, build=build)
    raise ConfigError(
        f"unknown method {method!r}; LR methods: {list(LR_METHODS)}, mixture methods: "
        f"{list(MIXTURE_METHODS)}, or 'composite'"
    )


def _lr_config(method: str) -> tuple[Any, tuple[str, ...]]:
    """``(config class, required settings)`` of LR method ``method``.

    Each method's module is imported only when it is asked for: ``explore`` and
    ``autolrs`` bring in botorch and scipy (see :func:`check_spec`).
    """
    if method == "stagewise":
        return StagewiseConfig, ("init_lr",)
    if method == "explore":
        from tuner.controllers.explore_config import ExploreConfig

        return ExploreConfig, ("init_lr",)
    if method == "autolrs":
        from tuner.controllers.autolrs import AutoLRSConfig

        return AutoLRSConfig, ("lr_min", "lr_max")
    raise ConfigError(f"unknown LR method {method!r}; LR methods: {list(LR_METHODS)}")


def _lr_controller(method: str, config: Any) -> Controller:
    if method == "explore":
        from tuner.controllers.explore_lr import ExploreLR

        return ExploreLR(config)
    if method == "autolrs":
        from tuner.controllers.autolrs import AutoLRSClassic

        return AutoLRSClassic(config)
    return StagewiseLR(config)


def lr_settings(method: str) -> set[str]:
    """The settings LR method ``method`` knows."""
    if method == "auto":
        from tuner.controllers.auto_lr import AUTO_SETTINGS

        return set(AUTO_SETTINGS)
    return {f.name for f in dataclasses.fields(_lr_config(method)[0])}


def _build_lr(
    method: str, settings: dict[str, Any], *, build: bool, restores: bool = True
) -> Controller | None:
    """``auto`` (the default: ``explore`` if the workers can restore, else ``stagewise``),
    ``stagewise`` (the skeleton's search, no restores), ``explore`` (candidates from
    snapshots; workers pass ``model=`` to ``agent.lr_scheduler``) or ``autolrs`` (AutoLRS
    as published; needs ``lr_min`` and ``lr_max``). Without ``restores`` (in a composite),
    ``auto`` is always ``stagewise``."""
    if method == "auto":
        from tuner.controllers.auto_lr import AutoLR

        if "init_lr" not in settings:
            raise ConfigError("LR method 'auto' needs init_lr")
        auto = AutoLR(settings, explore=restores)  # checks both methods' settings
        if build and restores:
            # Load explore's modules (botorch: seconds) now, in the head as it starts: at
            # the first report, which picks the method, the workers are already training.
            import tuner.controllers.explore_lr  # noqa: F401
        return auto if build else None
    config = _build_config(method, settings)
    return _lr_controller(method, config) if build else None


def _build_config(method: str, settings: dict[str, Any]) -> Any:
    """LR method ``method``'s config from ``settings``, checked."""
    config_cls, required = _lr_config(method)
    known = lr_settings(method)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for LR method {method!r}; known: {sorted(known)}"
        )
    missing = [name for name in required if name not in settings]
    if missing:
        raise ConfigError(f"LR method {method!r} needs {', '.join(missing)}")
    settings = typed_settings(config_cls, settings, f"LR method {method!r}")
    try:
        return config_cls(**settings)
    except TypeError as e:
        raise ConfigError(f"LR method {method!r}: {e}") from None


def build_population_controller(spec: Mapping[str, Any], trials: int) -> PopulationController:
    """The population controller for ``trials`` trials, from an LR spec.

    ``method="explore"``: :class:`~tuner.controllers.population_explore.PopulationExplore`,
    one candidate per trial from a shared state and every trial on from the winner's (the
    workers pass ``model=`` to ``agent.lr_scheduler``; the settings are ``explore``'s). Any
    other method (``auto`` included, since workers that cannot restore must still be
    tuned): :class:`~tuner.controllers.population.PopulationLR`, which searches around a
    centre LR without exchanging weights (``init_lr``, ``tau``, ``total_steps``, bounds...).
    """
    from tuner.controllers.population import PopulationConfig, PopulationLR

    settings = {k: v for k, v in spec.items() if k != "method"}
    if spec.get("method") == "explore":
        from tuner.controllers.population_explore import PopulationExplore

        config = _build_config("explore", settings)
        return PopulationExplore(config, trials)
    settings["trials"] = trials
    known = {f.name for f in dataclasses.fields(PopulationConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for a population; known: {sorted(known)}")
    if "init_lr" not in settings:
        raise ConfigError("a population needs init_lr (the LR the search starts at)")
    settings = typed_settings(PopulationConfig, settings, "population")
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
    check_spec(spec)
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
    """``"init_lr=1e-3,tau=100,total_steps=5000"`` (optionally ``method=explore``) -> spec.

    Also accepts a JSON object. The spec is checked as :func:`check_spec` does.
    """
    spec = _parse_pairs(text, "--lr", "init_lr=1e-3,tau=100,total_steps=5000")
    check_spec(spec)
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
