"""What the LR controllers that explore from snapshots (``explore``, ``autolrs``) share:
the loss curve they score candidates on, the ranks that restart under them, and their stage
bookkeeping and its state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuner.controllers.base import LRController, Plan
from tuner.controllers.curves import StepCurve
from tuner.controllers.restarts import RestartWatch
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report


class StagedLRController(LRController):
    """Stages of candidates tried from one snapshot, then a commit.

    Subclasses set ``method``, the name their decisions carry.

    Attributes:
        curve: The scored metric by step, averaged over ranks.
        stage: Index of the stage under way (``-1`` before the first).
        stage_start: Step of the stage's snapshot.
        cands: This stage's candidates (``{"lr", "status", ...}``).
        last: The last decision accepted, as its segment (``None`` before any).
        lr_now: LR of the last decision accepted (or the initial one).
        stages: Finished stages, for status and plots.
        finished: Whether the last decision was final.
        restarts: Rank restarts and missed restores seen in reports.
        stage_restarts: ``restarts.count`` when the stage under way began.
    """

    method = "staged"

    def __init__(self, metric: str, lr_now: float | None) -> None:
        self.curve = StepCurve(metric)
        self.reports_seen = 0
        self.last_step = -1
        self.stage = -1
        self.stage_start = 0
        self.cands: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        self.lr_now = lr_now
        self.stages: list[dict[str, Any]] = []
        self.finished = False
        self.restarts = RestartWatch()
        self.stage_restarts = 0

    def observe(self, reports: Sequence[Report]) -> None:
        for r in reports:
            self.reports_seen += 1
            self.last_step = max(self.last_step, r.step)
        self.restarts.observe(reports)
        self.curve.add(reports)

    def _begin_stage(self, stage: int, start: int) -> None:
        """Bookkeeping of a stage whose snapshot is taken at ``start``."""
        self.stage, self.stage_start = stage, start
        self.stage_restarts = self.restarts.count

    def _left_stage(self) -> bool:
        """Whether a rank restarted, or restored no snapshot, since the stage began: its
        reports are no candidate's curve any more, and no restore brings it back."""
        return self.restarts.count > self.stage_restarts

    @property
    def done(self) -> bool:
        return self.finished

    def metrics(self) -> tuple[str, ...]:
        return (self.curve.metric,)

    def _rewind_hold(
        self, plan: Plan, start: int, lr: float | None, segment: dict[str, Any]
    ) -> Decision:
        """Detached mid-stage: from ``start`` every rank goes back to the stage's snapshot
        and holds ``lr`` (``None``: its base schedule) for good."""
        return Decision(
            stage=plan.next_stage,
            kind=DecisionKind.HOLD,
            from_step=start,
            lr=lr,
            controller=self.method,
            info={"segment": segment, "final": True, "detached": True},
            restore_from=self.stage_start,
        )

    def _staged_state(self) -> dict[str, Any]:
        """The shared part of ``state_dict()``: JSON data."""
        return {
            "curve": self.curve.state_dict(),
            "reports_seen": self.reports_seen,
            "last_step": self.last_step,
            "stage": self.stage,
            "stage_start": self.stage_start,
            "cands": self.cands,
            "last": self.last,
            "lr_now": self.lr_now,
            "stages": self.stages,
            "finished": self.finished,
            "restarts": self.restarts.state_dict(),
            "stage_restarts": self.stage_restarts,
        }

    def _load_staged_state(self, state: dict[str, Any]) -> None:
        """Load what :meth:`_staged_state` saved; :class:`ConfigError` if it is malformed."""
        try:
            self.curve.load_state_dict(state["curve"])
            self.reports_seen = int(state["reports_seen"])
            self.last_step = int(state["last_step"])
            self.stage = int(state["stage"])
            self.stage_start = int(state["stage_start"])
            self.cands = [dict(c) for c in state["cands"]]
            self.last = dict(state["last"]) if state["last"] is not None else None
            self.lr_now = None if state["lr_now"] is None else float(state["lr_now"])
            self.stages = list(state["stages"])
            self.finished = bool(state["finished"])
            # absent from states stored before restarts were watched
            self.restarts.load_state_dict(state.get("restarts"))
            self.stage_restarts = int(state.get("stage_restarts", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{type(self).__name__} state is malformed: {e!r}") from None
