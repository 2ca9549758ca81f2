"""What one Bayesian-optimization decision costs the head, against the observations made.

An :class:`~tuner.bo.surrogate.LRSurrogate` keeps its ``window`` newest observations, so a
decision (one ``observe`` and a ``suggest``, which refits the GP, or a ``best_lr``) costs
at most a fit on ``window`` points however long the run. This measures it at growing
observation counts, and, for contrast, a surrogate whose window holds every observation.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

BOUNDS = (1e-4, 1.0)


@dataclass(frozen=True)
class BOConfig:
    """Settings of :func:`measure_bo_cost`.

    Attributes:
        observations: Observation counts to measure at.
        reps: Decisions timed at each count (each adds one observation first).
        unbounded_max: Also time a surrogate whose window holds every observation, up to
            this many (0: skip); its cost grows with the count.
        bounded_ratio: The cost counts as bounded while the window caps the points kept and
            the median at the largest count stays within this factor of the median of all
            the other timings with a full window (GP fits vary a lot from one data set to
            the next, so the tolerance is wide; the unbounded rows show real growth).
    """

    observations: tuple[int, ...] = (8, 32, 128, 512, 2048)
    reps: int = 3
    unbounded_max: int = 512
    bounded_ratio: float = 3.0


def _loss(rng: random.Random, lr: float) -> float:
    """A noisy loss with its minimum near lr = 1e-2 in log space."""
    x = math.log10(lr) + 2.0
    return 1.0 + 0.3 * x * x + rng.gauss(0.0, 0.05)


def _time_at(n: int, window: int | None, reps: int, seed: int) -> dict[str, Any]:
    from tuner.bo.surrogate import LRSurrogate

    rng = random.Random(seed)
    default = LRSurrogate(BOUNDS).window
    s = LRSurrogate(BOUNDS, seed=seed, window=default if window is None else window)
    for _ in range(n):
        lr = 10 ** rng.uniform(-4.0, 0.0)
        s.observe(lr, _loss(rng, lr))
    timings: list[float] = []
    best: list[float] = []
    for _ in range(reps):
        lr = 10 ** rng.uniform(-4.0, 0.0)
        t0 = time.perf_counter()
        s.observe(lr, _loss(rng, lr))
        s.suggest()
        t1 = time.perf_counter()
        s.best_lr()  # on the GP fit by suggest: the posterior-mean grid only
        t2 = time.perf_counter()
        timings.append(t1 - t0)
        best.append(t2 - t1)
    return {
        "observations": n,
        "kept": len(s),  # after the timed decisions added theirs
        "window": s.window,
        "observe_suggest_ms": round(1e3 * statistics.median(timings), 2),
        "observe_suggest_ms_max": round(1e3 * max(timings), 2),
        "observe_suggest_ms_all": [round(1e3 * t, 2) for t in timings],
        "best_lr_ms": round(1e3 * statistics.median(best), 2),
    }


def measure_bo_cost(cfg: BOConfig) -> dict[str, Any]:
    """Median time of ``observe`` + ``suggest`` and of ``best_lr`` at each observation
    count, with the default window and (up to ``unbounded_max``) an unbounded one."""
    import torch

    from tuner.bo.surrogate import LRSurrogate

    window = LRSurrogate(BOUNDS).window
    _time_at(4, None, 1, seed=99)  # first use: lazy imports and first-call setup, untimed
    bounded = [_time_at(n, None, cfg.reps, seed=i) for i, n in enumerate(cfg.observations)]
    unbounded = [
        _time_at(n, max(n + cfg.reps, 2), cfg.reps, seed=i)
        for i, n in enumerate(cfg.observations)
        if n <= cfg.unbounded_max
    ]
    full = [r for r in bounded if r["observations"] >= window]
    others = [t for r in full[:-1] for t in r["observe_suggest_ms_all"]]
    ratio = full[-1]["observe_suggest_ms"] / statistics.median(others) if others else None
    return {
        "config": asdict(cfg),
        "default_window": window,
        "torch_threads": torch.get_num_threads(),
        "bounded": bounded,
        "unbounded": unbounded,
        "largest_over_other_full_windows": round(ratio, 3) if ratio is not None else None,
        "bounded_ok": bool(
            all(r["kept"] <= window for r in bounded)
            and (ratio is None or ratio <= cfg.bounded_ratio)
        ),
    }
