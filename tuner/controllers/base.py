"""The controller contract, written once.

A controller is pure: it sees frozen :class:`~tuner.records.Report` records, returns
:class:`~tuner.records.Decision` records, and imports neither ``redis`` nor ``ray``. The
head drives it like this, one thread at a time (controllers need not be thread-safe)::

    controller.load_state_dict(stored_state)           # if any
    controller.observe(reports)                        # every new report, exactly once
    plan = controller.propose(Plan(horizon=..., last_step=...))
    if plan is not None:
        controller.accept(store.commit(plan, state=controller.state_dict()))

``propose`` must not change the controller; ``accept`` records that the decision was stored
(with its version). Whatever a controller learned must be in ``state_dict()``, which is
JSON data: a head that restarts from it and is fed the reports not yet acknowledged ends in
the same state as one that never stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuner.records import Decision, Report


def decide_at(start: int, until: int, lead: int, total_steps: int | None) -> int | None:
    """:attr:`Decision.decide_at` of a stage ``[start, until)`` whose successor is proposed
    once a report reaches ``lead`` steps before ``until``; ``None`` for the run's last stage."""
    if total_steps is not None and until >= total_steps:
        return None
    return max(start, until - lead)


@dataclass(frozen=True)
class Plan:
    """What the head knows when it asks for a decision.

    Attributes:
        horizon: Last step workers were already answered for; a new decision must start
            after it.
        last_step: Largest step in any report observed so far (-1 before any).
        next_stage: Lowest stage index a new decision may use (decisions written by others,
            such as the hold a detach leaves, take stage indices too).
        peers_horizon: Population jobs: every trial's ``horizon``, by trial.
        peers_last_step: Population jobs: every trial's ``last_step``, by trial.
    """

    horizon: int
    last_step: int
    next_stage: int = 0
    peers_horizon: tuple[int, ...] = ()
    peers_last_step: tuple[int, ...] = ()


class Controller(ABC):
    """Base of every controller."""

    name: str = "controller"
    """Key under which the head stores this controller's state (``ctl:<name>``)."""

    @abstractmethod
    def observe(self, reports: Sequence[Report]) -> None:
        """Take in new reports (in stream order). Each report is passed exactly once."""

    @abstractmethod
    def propose(self, plan: Plan) -> Decision | None:
        """The next decision to write, or ``None`` if none is due. Must not mutate."""

    @abstractmethod
    def accept(self, decision: Decision) -> None:
        """Record that ``decision`` was stored (it carries its version)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything learned so far, as JSON data."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""

    def summary(self) -> dict[str, Any]:
        """A few numbers for ``tautune status``."""
        return {}

    @property
    def done(self) -> bool:
        """True once the controller will make no more decisions."""
        return False

    def metrics(self) -> tuple[str, ...]:
        """Metrics this controller learns from; the head warns when reports carry none."""
        return ()

    def advice(self) -> str | None:
        """Something wrong in how the workers train that the user should fix (the head logs
        it once and ``tautune status`` shows it), or ``None``."""
        return None

    def detach_decision(self, plan: Plan) -> Decision | None:
        """The decision to leave in force when the head detaches now, or ``None`` for the
        default: hold the last decision's final LR.

        A controller whose last decision is a candidate it will throw away (a probe that
        a snapshot undoes) overrides this; the head commits the result like a proposal,
        so :meth:`accept` sees it.
        """
        return None


class LRController(Controller):
    """Decides the learning rate (``Decision.lr`` / ``lr_end``) stage by stage."""

    name = "lr"


class MixtureController(Controller):
    """Decides the data mixture (``Decision.mixture``) stage by stage."""

    name = "mixture"


class PopulationController(ABC):
    """Decides for the P trials of a population job, sharing what it learns across them.

    The same contract as :class:`Controller`, with the trial (``0 <= trial < P``) named in
    each call: reports of each trial are passed exactly once, ``propose`` must not mutate,
    and ``state_dict()`` (JSON data) holds everything learned from every trial.
    """

    name: str = "lr"

    @abstractmethod
    def observe(self, trial: int, reports: Sequence[Report]) -> None:
        """Take in new reports of ``trial`` (in stream order)."""

    @abstractmethod
    def propose(self, trial: int, plan: Plan) -> Decision | None:
        """The next decision for ``trial``, or ``None`` if none is due. Must not mutate."""

    @abstractmethod
    def accept(self, trial: int, decision: Decision) -> None:
        """Record that ``decision`` was stored for ``trial``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything learned so far, as JSON data."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""

    def summary(self) -> dict[str, Any]:
        return {}

    @property
    def done(self) -> bool:
        return False

    def advice(self) -> str | None:
        """As :meth:`Controller.advice`."""
        return None

    def detach_decision(self, trial: int, plan: Plan) -> Decision | None:
        """What to leave in force for ``trial`` when the head detaches now, or ``None``
        for the default (hold the last decision's final LR); see
        :meth:`Controller.detach_decision`. The head commits it like a proposal."""
        return None
