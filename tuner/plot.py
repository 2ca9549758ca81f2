"""PNG plots of a tuned run: LR and loss against optimizer step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def smooth(values: Sequence[float], window: int = 25) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)  # type: ignore[no-any-return]


def plot_runs(
    path: str | Path,
    runs: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str = "",
    boundaries: Sequence[int] = (),
) -> Path:
    """Write a two-panel PNG: LR (log scale) over loss, for each named run.

    Args:
        runs: Run name -> ``{"step": [...], "lr": [...], "loss": [...]}``; equal lengths.
        boundaries: Steps at which stages begin, drawn as faint vertical lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for name, run in runs.items():
        ax_lr.plot(run["step"], run["lr"], label=name, linewidth=1.5)
        ax_loss.plot(run["step"], smooth(run["loss"]), label=name, linewidth=1.2)
    for b in boundaries:
        ax_lr.axvline(b, color="0.85", linewidth=0.6, zorder=0)
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(loc="best")
    ax_loss.set_ylabel("training loss (moving average)")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
