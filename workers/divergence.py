"""What a rank does with a metric that is NaN or infinite: on a rank that can roll the
candidate back it is a divergence (reported as ``diverged=1``); elsewhere an error whose
message says what LR was in force and how to make the rank restorable."""

from __future__ import annotations

import logging
import math
from typing import Any

from tuner.records import DIVERGED_METRIC, RESTORABLE_METRIC, metric_float

log = logging.getLogger(__name__)


def divergence_hint(applied: dict[str, float]) -> str:
    """What a non-finite metric means given what the scheduler applied at its step."""
    if "lr" not in applied:
        return ""
    hint = f" The LR in force was {applied['lr']:.4g}"
    version = int(applied.get("decision_version", 0))
    hint += f" (tautune decision v{version})." if version else " (the base schedule)."
    if version and not applied.get(RESTORABLE_METRIC):
        hint += (
            " This rank cannot roll a diverged LR back: pass model= to agent.lr_scheduler() "
            "so the default LR method explores from snapshots, or lower the LR bounds."
        )
    return hint


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite number; a 0-d tensor or a NumPy float counts as one,
    anything that is not a number at all is left for :class:`Report` to refuse."""
    try:
        return math.isfinite(metric_float(value))
    except (TypeError, ValueError, RuntimeError):
        return True


def diverged_if_not_finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` without its NaN/infinite floats and with ``diverged=1``, if it has any."""
    bad = [k for k, v in metrics.items() if not _finite(v)]
    if not bad:
        return metrics
    log.info("tautune: candidate diverged (%s not finite); reporting diverged=1", bad)
    kept = {k: v for k, v in metrics.items() if k not in bad}
    kept[DIVERGED_METRIC] = 1.0
    return kept
