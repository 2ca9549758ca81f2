"""Noticing, from reports, that a rank's training state left the line an exploration stage
shares.

Candidates of a stage are comparable only while every rank trains them from the stage's
snapshot. A rank whose process restarts resumes from its own checkpoint (it reports an
earlier step under a higher ``attempt``, :class:`~tuner.records.Report`) and holds none of
the stage's snapshots; when a decision asks it to restore one it trains on from where it is
and says so (:data:`~tuner.records.RESTORE_MISSED_METRIC`). Either way, what its reports say
from then on is not a candidate's curve, and the steps it trains again are reported twice.
A controller counts such events with :class:`RestartWatch` and gives up the stage when one
comes while it explores. Pure logic: no Ray, no Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuner.errors import ConfigError
from tuner.records import RESTORE_MISSED_METRIC, Report


class RestartWatch:
    """Counts restarts and missed restores among the reports it is shown.

    A restart is a report whose ``attempt`` is above the one its rank reported before (a
    rank's first report sets its attempt, whatever it is). A missed restore is a new value of
    :data:`~tuner.records.RESTORE_MISSED_METRIC`, which an agent reports with every report
    after the miss.
    """

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}
        self.missed: float | None = None
        self.count = 0
        self.last: dict[str, Any] | None = None  # {"rank", "step", "why"} of the last event

    def observe(self, reports: Sequence[Report]) -> None:
        for r in reports:
            seen = self.attempts.get(r.rank)
            if seen is None or r.attempt > seen:
                self.attempts[r.rank] = r.attempt
            if seen is not None and r.attempt > seen:
                self._event(r.rank, r.step, f"restarted (attempt {r.attempt})")
            missed = r.metrics.get(RESTORE_MISSED_METRIC)
            if missed is not None and missed != self.missed:
                self.missed = missed
                self._event(r.rank, int(missed), "found no snapshot to restore")

    def _event(self, rank: int, step: int, why: str) -> None:
        self.count += 1
        self.last = {"rank": rank, "step": step, "why": why}

    def state_dict(self) -> dict[str, Any]:
        return {
            "attempts": {str(k): v for k, v in self.attempts.items()},
            "missed": self.missed,
            "count": self.count,
            "last": self.last,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Load what :meth:`state_dict` saved; ``None`` (a state stored before restarts were
        watched) starts afresh."""
        if state is None:
            self.__init__()  # type: ignore[misc]
            return
        try:
            self.attempts = {int(k): int(v) for k, v in state["attempts"].items()}
            missed = state["missed"]
            self.missed = None if missed is None else float(missed)
            self.count = int(state["count"])
            last = state["last"]
            self.last = None if last is None else dict(last)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"RestartWatch state is malformed: {e!r}") from None
