"""The LR benchmark tasks: what each trains, for how long, and its grid of peak LRs.

The main tasks (nqm, charlm, digits) are the ones tautune's defaults were chosen on; the
held-out ones each change one thing about a main task (the model, or the optimizer) and
were added later, to measure the controller on training it was not designed on. Light to
import: ``tautune --help`` reads the names and help texts from here without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
"""Seeds of a full run: digits' final loss varies by up to 2x between seeds, so medians
of three move with one seed."""

GRID_POINTS = 6


@dataclass(frozen=True)
class LRTask:
    """One benchmark task: what trains, for how long, and the grid of peak LRs; ``text``
    describes it on the docs page, ``help`` in ``tautune bench --help``."""

    name: str
    steps: int
    quick_steps: int
    grid: tuple[float, ...]
    optimizer: str
    warmup_steps: int = 0
    evals: int = 30
    text: str = ""
    help: str = ""
    held_out: bool = False

    @property
    def centre(self) -> float:
        return math.exp(sum(math.log(g) for g in self.grid) / len(self.grid))


def log_grid(lo: float, hi: float) -> tuple[float, ...]:
    """``GRID_POINTS`` peak LRs spaced evenly in log from ``lo`` to ``hi``."""
    return tuple(lo * (hi / lo) ** (i / (GRID_POINTS - 1)) for i in range(GRID_POINTS))


TASKS: dict[str, LRTask] = {
    "nqm": LRTask(
        "nqm",
        2000,
        400,
        log_grid(0.02, 1.6),
        "sgd",
        help="a noisy quadratic model with exact expected loss and an optimal schedule",
        text="Noisy quadratic model (Zhang et al., 2019), plain SGD; the loss is the exact "
        "expected loss.",
    ),
    "charlm": LRTask(
        "charlm",
        1500,
        200,
        log_grid(3e-4, 1e-2),
        "adamw",
        warmup_steps=50,
        help="a byte-level LM on the standard library's source (AdamW)",
        text="Byte-level MLP language model on the standard library's source, AdamW; "
        "the loss is validation cross-entropy (nats/byte).",
    ),
    "digits": LRTask(
        "digits",
        1500,
        200,
        log_grid(3e-3, 0.3),
        "sgd",
        warmup_steps=30,
        help="an MLP on scikit-learn's bundled digits (SGD + Nesterov)",
        text="MLP on scikit-learn's bundled digits, SGD with Nesterov momentum; the loss is "
        "validation cross-entropy.",
    ),
    "digits-cnn": LRTask(
        "digits-cnn",
        1500,
        200,
        log_grid(3e-3, 0.3),
        "sgd",
        warmup_steps=30,
        held_out=True,
        help="a small CNN on the digits (SGD + Nesterov; held out)",
        text="Held out: a small CNN (two 3x3 convolutions) on the same digits, SGD with "
        "Nesterov momentum; validation cross-entropy. Full runs diverge from a peak of "
        "about 0.1, while 45-step probes survive 0.12.",
    ),
    "digits-adamw": LRTask(
        "digits-adamw",
        1500,
        200,
        log_grid(2e-4, 2e-2),
        "adamw",
        warmup_steps=30,
        held_out=True,
        help="the digits MLP under AdamW (held out)",
        text="Held out: the digits MLP under AdamW instead of SGD; validation cross-entropy.",
    ),
    "charlm-sgd": LRTask(
        "charlm-sgd",
        1500,
        200,
        log_grid(0.03, 3.0),
        "sgd",
        warmup_steps=50,
        held_out=True,
        help="the byte-level LM under SGD + Nesterov (held out)",
        text="Held out: the byte-level LM under SGD with Nesterov momentum instead of AdamW; "
        "validation cross-entropy (nats/byte).",
    ),
    "bytegpt": LRTask(
        "bytegpt",
        1500,
        200,
        log_grid(3e-4, 3e-2),
        "adamw",
        warmup_steps=50,
        held_out=True,
        help="a tiny causal transformer on the standard library's bytes (AdamW; held out)",
        text="Held out: a two-layer causal transformer (width 64, four heads) that predicts "
        "every next byte of 32-byte windows of the same source, AdamW; validation "
        "cross-entropy (nats/byte).",
    ),
}
MAIN_TASKS = tuple(name for name, t in TASKS.items() if not t.held_out)
HELD_OUT_TASKS = tuple(name for name, t in TASKS.items() if t.held_out)
