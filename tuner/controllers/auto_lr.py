"""tautune's default LR method, ``auto``: ``explore`` where the workers can restore a
snapshot, ``stagewise`` where they cannot.

``explore`` (:mod:`tuner.controllers.explore_lr`) ended lower than ``stagewise`` on the
NQM and on every language model of the benchmarks, where ``stagewise`` once diverged
(README, "LR controllers"); ``stagewise`` did better on the small digits classifiers. But
``explore`` rewinds the model, so it needs every worker to hand its state to the
scheduler (``agent.lr_scheduler(optimizer, model=model)``). A worker says whether it can
in every report (:data:`~tuner.records.RESTORABLE_METRIC`). ``auto`` waits for the first
reports, picks ``explore`` when all of them can restore and ``stagewise``, which never
rewinds, otherwise, and from then on is the controller it picked: same decisions, same
state, same summary (plus ``"method"``).

Both controllers' settings are checked when ``auto`` is built, and the one picked is built
at the first report: a setting only one of them knows goes to that one (``tau`` to
``stagewise``; ``explore_budget`` to ``explore``), so one spec serves whichever the
workers allow. Building ``auto`` imports neither torch nor botorch (``explore`` does, when
it is picked), so a job driver can check a spec safely (see :mod:`tuner.specs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.controllers.base import LRController, Plan
from tuner.controllers.explore_config import ExploreConfig
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR
from tuner.errors import ConfigError
from tuner.records import RESTORABLE_METRIC, Decision, Report
from tuner.settings import typed_settings

__all__ = ["AUTO_SETTINGS", "AutoLR", "method_of_state"]

_CONFIGS: dict[str, Any] = {"explore": ExploreConfig, "stagewise": StagewiseConfig}
AUTO_SETTINGS = frozenset(f.name for cls in _CONFIGS.values() for f in dataclasses.fields(cls))
"""The settings ``auto`` knows: those of ``explore`` and of ``stagewise``."""


class AutoLR(LRController):
    """``explore`` if every worker can restore, else ``stagewise``; see the module doc.

    ``explore=False`` makes it ``stagewise`` whatever the workers can do (in a composite
    with a mixture controller, which does not rewind).

    Attributes:
        choice: ``"explore"``, ``"stagewise"``, or ``None`` before the first report.
    """

    def __init__(self, settings: Mapping[str, Any], *, explore: bool = True) -> None:
        unknown = sorted(set(settings) - AUTO_SETTINGS)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown} for LR method 'auto'; known: {sorted(AUTO_SETTINGS)}"
            )
        self.may_explore = explore
        self.configs = {method: _config(method, settings) for method in _CONFIGS}
        self.choice: str | None = None
        self.chosen: LRController | None = None

    # -- contract -----------------------------------------------------------------------

    def observe(self, reports: Sequence[Report]) -> None:
        if not reports:
            return
        if self.chosen is None:
            can = all(r.metrics.get(RESTORABLE_METRIC, 0.0) > 0 for r in reports)
            self.choice = "explore" if can and self.may_explore else "stagewise"
            self.chosen = _build(self.choice, self.configs[self.choice])
        self.chosen.observe(reports)

    def propose(self, plan: Plan) -> Decision | None:
        chosen = self.chosen
        return None if chosen is None else chosen.propose(plan)

    def metrics(self) -> tuple[str, ...]:
        return (self.configs["stagewise"].metric,)  # one spec: both methods share it

    def advice(self) -> str | None:
        return self.chosen.advice() if self.chosen is not None else None

    def detach_decision(self, plan: Plan) -> Decision | None:
        chosen = self.chosen
        return None if chosen is None else chosen.detach_decision(plan)

    def accept(self, decision: Decision) -> None:
        chosen = self.chosen
        if chosen is None:
            raise ConfigError("the auto LR method accepted a decision before choosing")
        chosen.accept(decision)

    def state_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "choice": self.choice,
            "inner": None if chosen is None else chosen.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, or the bare state of a ``stagewise`` or
        ``explore`` controller (a job whose head ran one of them by name, or ran before
        ``auto`` was the default, goes on with it)."""
        if isinstance(state, dict) and "choice" not in state:
            bare = method_of_state(state)
            if bare in _CONFIGS:
                state = {"choice": bare, "inner": state}
        try:
            choice, inner = state["choice"], state["inner"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"AutoLR state is malformed: {e!r}") from None
        if choice is None:
            self.choice, self.chosen = None, None
            return
        if choice not in _CONFIGS or not isinstance(inner, dict):
            raise ConfigError(f"AutoLR state is malformed: choice={choice!r}")
        if choice == "explore" and not self.may_explore:
            raise ConfigError("the stored AutoLR state chose explore, which is not allowed here")
        controller = _build(choice, self.configs[choice])
        controller.load_state_dict(inner)
        self.choice, self.chosen = choice, controller

    def summary(self) -> dict[str, Any]:
        chosen = self.chosen
        if chosen is None:
            return {"method": "auto (waiting for the first report)"}
        return {"method": self.choice, **chosen.summary()}

    @property
    def done(self) -> bool:
        chosen = self.chosen
        return chosen is not None and chosen.done


def method_of_state(state: Mapping[str, Any]) -> str | None:
    """Which LR controller wrote ``state`` (``"stagewise"``, ``"explore"``, ``"autolrs"``),
    from the keys their states differ in; ``None`` for another controller's."""
    if "mu" in state:
        return "stagewise"
    if "cands" in state:
        return "explore" if "gp" in state else "autolrs" if "tau" in state else None
    return None


def _config(method: str, settings: Mapping[str, Any]) -> Any:
    cls = _CONFIGS[method]
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        own = {k: v for k, v in settings.items() if k in known}
        return cls(**typed_settings(cls, own, ""))
    except (TypeError, ConfigError) as e:
        other = "stagewise" if method == "explore" else "explore"
        raise ConfigError(
            f"LR method 'auto', as {method}: {e} (auto checks the settings of both methods "
            f"it may pick; name method={other!r} to use only that one)"
        ) from None


def _build(method: str, config: Any) -> LRController:
    if method == "explore":
        from tuner.controllers.explore_lr import ExploreLR  # torch and botorch

        return ExploreLR(config)
    return StagewiseLR(config)
