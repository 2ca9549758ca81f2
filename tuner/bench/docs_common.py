"""What the LR and peers benchmark pages share: number and value text, a document's seeds
and rows, the machine section, the loss-and-LR figure's frame, and the command line.

The documents are the JSON ``tautune bench`` wrote (see :mod:`tuner.bench.lr_docs` and
:mod:`tuner.bench.peers_docs`); every helper only reads them.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError

DASH = "–"
"""What the pages print for a missing number."""


# -- text ------------------------------------------------------------------------------------


def num_text(x: Any, digits: int = 4) -> str:
    """A number for the page: ints as they are, floats to ``digits`` significant digits."""
    if x is None:
        return DASH
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.{digits}g}"


def value_text(x: Any, verdict: bool = False) -> str:
    """A config or verdict value: lists joined, dicts as JSON, booleans as yes/no or, in a
    ``verdict``, as met/not met."""
    if isinstance(x, bool):
        if verdict:
            return "met" if x else "not met"
        return "yes" if x else "no"
    if isinstance(x, list | tuple):
        return "[" + ", ".join(num_text(v) for v in x) + "]"
    if isinstance(x, dict):
        return f"`{json.dumps(x, sort_keys=True)}`"
    if isinstance(x, str):
        return f"`{x}`"
    return num_text(x)


def key_text(key: str) -> str:
    """A JSON key as words (``steps_to_target`` -> ``steps to target``)."""
    return key.replace("_", " ")


# -- documents -------------------------------------------------------------------------------


def seeds_of(doc: Mapping[str, Any]) -> list[Any]:
    """The document's seeds: as its config lists them, else those of its results."""
    seeds = (doc.get("config") or {}).get("seeds")
    if seeds:
        return list(seeds)
    return sorted({r["seed"] for r in doc["results"]}, key=str)


def rows_of(doc: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    """``method``'s results ordered by seed as the config lists them."""
    order = {s: i for i, s in enumerate(seeds_of(doc))}
    rows = [r for r in doc["results"] if r["method"] == method]
    return sorted(rows, key=lambda r: order.get(r["seed"], len(order)))


def first_seed_rows(doc: Mapping[str, Any]) -> tuple[Any, list[tuple[int, str, Mapping[str, Any]]]]:
    """The first seed (``None`` if there is none), and each method's result for it.

    Returns:
        ``(seed, [(i, method, row), ...])`` in the order the results list the methods;
        ``i`` is the method's place among all of them (a colour that does not move), and a
        method without a result for ``seed`` is left out.
    """
    seeds = seeds_of(doc)
    seed = seeds[0] if seeds else None
    out = []
    for i, method in enumerate(dict.fromkeys(r["method"] for r in doc["results"])):
        row = next((r for r in rows_of(doc, method) if r["seed"] == seed), None)
        if row is not None:
            out.append((i, method, row))
    return seed, out


def machine_text(m: Mapping[str, Any]) -> str:
    """A ``machine`` record in one line: CPU, core count, platform and versions, then any
    other keys it holds."""
    known = ("cpu", "cpu_count", "platform", "python", "torch", "load_avg_at_start")
    text = (
        f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} logical CPUs, "
        f"{m.get('platform', '?')}, Python {m.get('python', '?')}, torch {m.get('torch', '?')}"
    )
    extra = [f"{key_text(k)} {value_text(v)}" for k, v in m.items() if k not in known]
    return "; ".join([text, *extra])


def machine_section(m: Mapping[str, Any]) -> list[str]:
    """The page's ``## Machine`` heading and :func:`machine_text` of ``m``, as lines."""
    return ["## Machine", "", machine_text(m) + ".", ""]


# -- figures ---------------------------------------------------------------------------------


def curve_xy(points: Any) -> tuple[list[float], list[float]]:
    """``[[x, y], ...]`` (``y`` may be ``None``, read as NaN) as the lists ``x`` and ``y``."""
    pairs = [(float(p[0]), math.nan if p[1] is None else float(p[1])) for p in points or []]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_lr_figure(figsize: tuple[float, float]) -> tuple[Any, Any, Any]:
    """A figure of two panels side by side, drawn off-screen: ``(fig, loss_ax, lr_ax)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=figsize)
    return fig, loss_ax, lr_ax


def save_figure(fig: Any, path: Path) -> Path:
    """Give every panel with lines a legend, write ``fig`` to ``path`` (its folder made if
    missing) and close it; returns ``path``."""
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- command line ----------------------------------------------------------------------------


def docs_parser(module: str, description: str, out: Path) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, with ``--out MD`` (default ``out``) and
    ``--plots DIR``; the caller adds the JSON argument."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--plots", type=Path, default=None, help="default: the page's folder")
    return parser


def write_and_list(
    module: str, argv: Sequence[str] | None, write: Callable[[str], list[Path]]
) -> int:
    """Call ``write(command)`` with the command line that reruns ``python -m <module>``, and
    print the paths it wrote; a :class:`ConfigError` is printed to stderr instead.

    Returns:
        The exit status: 0, or 1 after a :class:`ConfigError`.
    """
    command = shlex.join(["python", "-m", module, *(argv or sys.argv[1:])])
    try:
        written = write(command)
    except ConfigError as e:
        print(f"{module.rsplit('.', 1)[-1]}: error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
