"""How reports carry per-arm signals, and how a stage sums them up.

Workers report flat metrics (``Report.metrics`` maps a name to a float), so per-arm
signals travel under ``<signal>/<arm>`` names, for the arms of the batch the report is
about (an arm the batch did not draw is simply absent):

- ``arm_count/<a>``: examples of arm ``a`` in the batch (weights the means below; a
  report without it counts once);
- ``arm_loss/<a>``: mean training loss of those examples;
- ``arm_adv/<a>``: their mean |advantage| (RL post-training);
- ``arm_success/<a>``: their success rate, in ``[0, 1]`` (difficulty buckets);
- ``mixture_version``: version of the mixture decision the batch was drawn under.

Arm names may contain ``/`` (the name is split at the first one); names of arms the
controller does not know are ignored. Signals are attributed to the stage whose decision
has the report's ``mixture_version`` (the async sampler may still draw from the previous
mixture after a boundary), or, for reports without one, to the stage covering the step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tuner.controllers.rewards import ArmStats
from tuner.records import Report

COUNT, LOSS, ADV, SUCCESS = "arm_count", "arm_loss", "arm_adv", "arm_success"
VERSION = "mixture_version"
SIGNALS = (COUNT, LOSS, ADV, SUCCESS)

# One arm's running sums in a stage, as a JSON list of floats, in this order:
SLOTS = (
    "samples",
    "loss_w",
    "loss_sum",
    "early_w",
    "early_sum",
    "late_w",
    "late_sum",
    "adv_w",
    "adv_sum",
    "success_w",
    "success_sum",
)
_AT = {name: i for i, name in enumerate(SLOTS)}


def report_version(report: Report) -> int | None:
    """The mixture version a report's batch was drawn under, or ``None`` if not said."""
    value: Any = getattr(report, "mixture_version", None)  # a future Report field
    if value is None:
        value = report.metrics.get(VERSION)
    if value is None or not float(value).is_integer():
        return None
    return int(value)


def arm_signals(metrics: Mapping[str, float], arms: Collection[str]) -> dict[str, dict[str, float]]:
    """``{arm: {signal: value}}`` for the known arms the metrics name."""
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        signal, sep, arm = name.partition("/")
        if sep and signal in SIGNALS and arm in arms:
            out.setdefault(arm, {})[signal] = value
    return out


def accumulate(
    acc: dict[str, list[float]], signals: Mapping[str, Mapping[str, float]], *, late: bool
) -> None:
    """Add one report's signals to a stage's sums (``late``: second half of the window)."""
    for arm, values in signals.items():
        weight = values.get(COUNT, 1.0)
        if weight <= 0:
            continue
        sums = acc.setdefault(arm, [0.0] * len(SLOTS))
        if COUNT in values:
            sums[_AT["samples"]] += weight
        if LOSS in values:
            loss = values[LOSS]
            sums[_AT["loss_w"]] += weight
            sums[_AT["loss_sum"]] += weight * loss
            half = "late" if late else "early"
            sums[_AT[f"{half}_w"]] += weight
            sums[_AT[f"{half}_sum"]] += weight * loss
        if ADV in values:
            sums[_AT["adv_w"]] += weight
            sums[_AT["adv_sum"]] += weight * values[ADV]
        if SUCCESS in values:
            sums[_AT["success_w"]] += weight
            sums[_AT["success_sum"]] += weight * values[SUCCESS]


def stats(acc: Mapping[str, list[float]]) -> dict[str, ArmStats]:
    """The :class:`ArmStats` of each arm a stage has sums for."""

    def mean(sums: list[float], name: str) -> float | None:
        w = sums[_AT[f"{name}_w"]]
        return sums[_AT[f"{name}_sum"]] / w if w > 0 else None

    return {
        arm: ArmStats(
            samples=sums[_AT["samples"]],
            loss=mean(sums, "loss"),
            loss_early=mean(sums, "early"),
            loss_late=mean(sums, "late"),
            advantage=mean(sums, "adv"),
            success=mean(sums, "success"),
        )
        for arm, sums in acc.items()
    }
