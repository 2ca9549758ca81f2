"""One job, two controllers: the LR and the data mixture decided on one stage grid.

A decision covers both: its ``lr``/``lr_end`` come from the LR controller and its
``mixture`` from the mixture controller. Whenever either proposes a stage, the composite
writes one decision from that step; the part the other controller did not propose is
carried from its decision in force (an LR segment is cut to the stage, so a long anneal
stays exactly linear across mixture stages), so a new stage never resets the other's
setting. Each controller is told only of its own decisions, exactly as it proposed them
(they travel in ``info["parts"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from tuner.controllers.base import Controller, LRController, MixtureController, Plan
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

PARTS = ("lr", "mixture")


def _to_dict(d: Decision) -> dict[str, Any]:
    return {
        "stage": d.stage,
        "kind": d.kind.value,
        "from_step": d.from_step,
        "until_step": d.until_step,
        "lr": d.lr,
        "lr_end": d.lr_end,
        "mixture": dict(d.mixture) if d.mixture is not None else None,
        "controller": d.controller,
        "info": copy.deepcopy(dict(d.info)),
        "decide_at": d.decide_at,
    }


def _from_dict(raw: dict[str, Any], version: int) -> Decision:
    return Decision(
        stage=raw["stage"],
        kind=DecisionKind(raw["kind"]),
        from_step=raw["from_step"],
        until_step=raw["until_step"],
        lr=raw["lr"],
        lr_end=raw["lr_end"],
        mixture=raw["mixture"],
        version=version,
        controller=raw["controller"],
        info=raw["info"],
        decide_at=raw.get("decide_at"),  # absent from states written before it existed
    )


class Composite(Controller):
    """An :class:`LRController` and a :class:`MixtureController` of one job."""

    name = "composite"

    def __init__(self, lr: LRController, mixture: MixtureController) -> None:
        self.parts: dict[str, Controller] = {"lr": lr, "mixture": mixture}
        self.current: dict[str, dict[str, Any] | None] = {"lr": None, "mixture": None}

    def observe(self, reports: Sequence[Report]) -> None:
        for part in self.parts.values():
            part.observe(reports)

    def propose(self, plan: Plan) -> Decision | None:
        proposals: dict[str, Decision] = {}
        for name, part in self.parts.items():
            d = part.propose(plan) if not part.done else None
            if d is not None:
                proposals[name] = d
        if not proposals:
            return None
        start = min(d.from_step for d in proposals.values())
        own = {n: d for n, d in proposals.items() if d.from_step == start}
        ends = [d.until_step for d in own.values() if d.until_step is not None]
        later = [d.from_step for d in proposals.values() if d.from_step > start]
        for name, current in self.current.items():  # a carried part ends where it ends
            if name not in own and current is not None and not self.parts[name].done:
                end = current["until_step"]
                if end is not None and end > start:
                    later.append(end)
        until = min(ends + later) if ends or later else None
        lr, lr_end = self._lr(own.get("lr"), start, until)
        mix = own["mixture"].mixture if "mixture" in own else self._carried_mixture()
        kinds = [d.kind for d in own.values()]
        kind = DecisionKind.EXPLORE if DecisionKind.EXPLORE in kinds else kinds[0]
        # Each part proposes again once a report reaches its own point; the reports up to
        # the last of them let the head write the next stage, both parts, before the end.
        wanted = [d.decide_at for d in own.values()] + [
            c.get("decide_at") for n, c in self.current.items() if n not in own and c is not None
        ]
        decide = [
            w for w in wanted if w is not None and w >= start and (until is None or w < until)
        ]
        final = all(d.info.get("final") for d in own.values()) and len(own) == len(
            [p for p in self.parts.values() if not p.done]
        )
        return Decision(
            stage=max(max(d.stage for d in own.values()), plan.next_stage),
            kind=kind,
            from_step=start,
            until_step=until,
            lr=lr,
            lr_end=lr_end,
            mixture=mix,
            controller="composite",
            decide_at=max(decide) if decide else None,
            info={
                "parts": {n: _to_dict(d) for n, d in own.items()},
                "final": final,
                "phase": (own.get("lr") or next(iter(own.values()))).info.get("phase", ""),
            },
        )

    def _lr(
        self, proposed: Decision | None, start: int, until: int | None
    ) -> tuple[float | None, float | None]:
        source = proposed
        if source is None and self.current["lr"] is not None:
            source = _from_dict(self.current["lr"], 0)
            if not source.covers(start):
                return None, None
        if source is None or source.lr is None:
            return None, None
        if source.lr_end is None or until is None:
            return source.lr, None
        return source.lr_at(start), source.lr_at(until)

    def _carried_mixture(self) -> dict[str, float] | None:
        current = self.current["mixture"]
        return dict(current["mixture"]) if current is not None and current["mixture"] else None

    def accept(self, decision: Decision) -> None:
        parts = decision.info.get("parts", {})
        for name, raw in parts.items():
            if name not in self.parts:
                raise ConfigError(f"composite decision names an unknown part {name!r}")
            raw = dict(raw)
            raw["stage"] = decision.stage
            self.parts[name].accept(_from_dict(raw, decision.version))
            self.current[name] = raw

    @property
    def done(self) -> bool:
        return all(p.done for p in self.parts.values())

    def metrics(self) -> tuple[str, ...]:
        return tuple(m for p in self.parts.values() for m in p.metrics())

    def summary(self) -> dict[str, Any]:
        return {n: p.summary() for n, p in self.parts.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "parts": {n: p.state_dict() for n, p in self.parts.items()},
            "current": copy.deepcopy(self.current),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            parts, current = state["parts"], state["current"]
            if set(parts) != set(PARTS) or set(current) != set(PARTS):
                raise KeyError(f"parts must be {PARTS}")
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a Composite state: {e}") from None
        before = self.state_dict()
        try:
            for name, part in self.parts.items():
                part.load_state_dict(parts[name])
        except ConfigError:
            for name, part in self.parts.items():
                part.load_state_dict(before["parts"][name])
            raise
        self.current = copy.deepcopy(current)
