"""Markdown and PNGs from learning-rate benchmark JSON documents (:func:`write_docs`).

Each document is what ``tautune bench nqm|charlm|digits --json PATH`` wrote for one task.
Every number on the page is read from those documents; the prose around the numbers says
how to read them, never what they show. Regenerate with
``python -m tuner.bench.lr_docs docs/bench-*.json --out docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError

DASH = "–"
REQUIRED: dict[str, type] = {"task": str, "results": list, "summary": list}
"""Top-level keys every document must have, with their JSON types."""

COLUMNS = """\
- **final loss**: the loss at the end of the run, median over seeds [min–max].
- **steps to target**: the first measured step, counting exploration steps, at which a
  run's loss is at or below the task's target loss; median, then per seed ({dash}: never).
- **exploration steps**: steps spent trying learning rates to choose the schedule (median).
- **wall s**: median wall-clock seconds per run.
- **ratio to optimal**: final loss over `optimal`'s, where the task has one."""


def plot_filename(task: str) -> str:
    """File name of ``task``'s figure (``bench-<task>.png``)."""
    return f"bench-{task}.png"


# -- loading ---------------------------------------------------------------------------------


def _check(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    for key, kind in REQUIRED.items():
        if key not in doc:
            raise ConfigError(f"{where}: missing key {key!r}; is this an LR benchmark JSON?")
        if not isinstance(doc[key], kind):
            raise ConfigError(
                f"{where}: {key!r} must be a JSON {kind.__name__}, got {type(doc[key]).__name__}"
            )
    for i, row in enumerate(doc["results"]):
        if not isinstance(row, dict) or not {"method", "seed", "final_loss"} <= row.keys():
            raise ConfigError(
                f"{where}: results[{i}] must be an object with 'method', 'seed' and 'final_loss'"
            )
    return doc


def load_docs(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read benchmark documents, checking their shape.

    Args:
        paths: JSON files written by ``tautune bench TASK --json PATH``.

    Returns:
        The documents, in the order given.

    Raises:
        ConfigError: A file is missing, is not JSON, or lacks ``task``, ``results`` or
            ``summary``; the message names the file.
    """
    docs = []
    for raw in paths:
        path = Path(raw)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no such file; write it with `tautune bench TASK --json {path}`"
            ) from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
        docs.append(_check(doc, str(path)))
    return docs


# -- markdown --------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    """A number for the page: ints as they are, floats to ``digits`` significant digits."""
    if x is None:
        return DASH
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.{digits}g}"


def _value(x: Any, verdict: bool = False) -> str:
    """A config or verdict value: lists joined, dicts as JSON, booleans as yes/no or, in a
    ``verdict``, as met/not met."""
    if isinstance(x, bool):
        if verdict:
            return "met" if x else "not met"
        return "yes" if x else "no"
    if isinstance(x, list | tuple):
        return "[" + ", ".join(_num(v) for v in x) + "]"
    if isinstance(x, dict):
        return f"`{json.dumps(x, sort_keys=True)}`"
    if isinstance(x, str):
        return f"`{x}`"
    return _num(x)


def _words(key: str) -> str:
    return key.replace("_", " ")


def _seeds(doc: Mapping[str, Any]) -> list[Any]:
    seeds = (doc.get("config") or {}).get("seeds")
    if seeds:
        return list(seeds)
    return sorted({r["seed"] for r in doc["results"]}, key=str)


def _rows(doc: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    """``method``'s results ordered by seed as the config lists them."""
    order = {s: i for i, s in enumerate(_seeds(doc))}
    rows = [r for r in doc["results"] if r["method"] == method]
    return sorted(rows, key=lambda r: order.get(r["seed"], len(order)))


def _method_name(doc: Mapping[str, Any], method: str) -> str:
    peaks = {(r.get("info") or {}).get("peak") for r in _rows(doc, method)} - {None}
    if len(peaks) == 1:
        return f"{method} (peak {_num(peaks.pop())})"
    return method


def _table(doc: Mapping[str, Any]) -> list[str]:
    summary = doc["summary"]
    ratio = any(row.get("ratio_to_optimal") is not None for row in summary)
    head = "| method | final loss | steps to target | exploration steps | wall s |"
    rule = "|---|---|---|---|---|"
    if ratio:
        head, rule = head + " ratio to optimal |", rule + "---|"
    lines = [head, rule]
    for row in summary:
        method = row["method"]
        per_seed = ", ".join(_num(r.get("steps_to_target")) for r in _rows(doc, method))
        cells = [
            _method_name(doc, method),
            f"{_num(row.get('final_loss_median'))} "
            f"[{_num(row.get('final_loss_min'))}–{_num(row.get('final_loss_max'))}]",
            f"{_num(row.get('steps_to_target_median'))} ({per_seed})",
            _num(row.get("exploration_steps_median")),
            _num(row.get("wall_s_median"), 3),
        ]
        if ratio:
            cells.append(_num(row.get("ratio_to_optimal")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _peak(key: str) -> str:
    try:
        return _num(float(key), 3)
    except ValueError:
        return key


def _grid_note(doc: Mapping[str, Any]) -> list[str]:
    """What the cosine grid measured, by peak LR, and the peak it chose."""
    rows = [r for r in _rows(doc, "cosine-grid-best") if (r.get("info") or {}).get("grid")]
    if not rows:
        return []
    grids = [r["info"]["grid"] for r in rows]
    shown = (
        [(None, grids[0])]
        if all(g == grids[0] for g in grids)
        else [(r["seed"], g) for r, g in zip(rows, grids, strict=True)]
    )
    out = []
    for seed, grid in shown:
        cells = ", ".join(f"{_peak(k)} → {_num(v)}" for k, v in grid.items())
        whose = "" if seed is None else f" (seed {seed})"
        out.append(f"`cosine-grid-best` grid{whose}, final loss by peak LR: {cells}.")
    peaks = [(r["info"].get("peak"), r["seed"]) for r in rows]
    if len({p for p, _ in peaks}) == 1:
        out.append(f"Chosen peak: {_num(peaks[0][0])}.")
    else:
        out.append("Chosen peaks: " + ", ".join(f"{_num(p)} (seed {s})" for p, s in peaks) + ".")
    cost = rows[0]["info"].get("grid_total_steps")
    if cost is not None:
        out.append(f"Grid total steps: {_num(cost)}.")
    return [" ".join(out), ""]


def _verdict(done: Mapping[str, Any] | None) -> list[str]:
    if not done:
        return ["**Done-when:** no criteria recorded for this task.", ""]
    flags = [v for v in done.values() if isinstance(v, bool)]
    head = f"{sum(flags)} of {len(flags)} met" if flags else "recorded values"
    parts = "; ".join(f"{_words(k)}: {_value(v, verdict=True)}" for k, v in done.items())
    return [f"**Done-when ({head}).** {parts}.", ""]


def _config_line(doc: Mapping[str, Any]) -> str:
    cfg = doc.get("config") or {}
    parts = [f"{_words(k)} {_value(v)}" for k, v in cfg.items()]
    target = f"target loss {_num(doc.get('target_loss'))}"
    if doc.get("target_method"):
        target += f" (from `{doc['target_method']}`)"
    return "**Config:** " + "; ".join([*parts, target]) + "."


def _task_section(doc: Mapping[str, Any], plot_dir_rel: str) -> list[str]:
    task = doc["task"]
    name = plot_filename(task)
    link = name if plot_dir_rel in ("", ".") else f"{plot_dir_rel.rstrip('/')}/{name}"
    seed = _seeds(doc)[0] if _seeds(doc) else None
    out = [f"## `{task}`", ""]
    if doc.get("text"):
        out += [str(doc["text"]), ""]
    out += [_config_line(doc), "", *_table(doc), ""]
    out += _grid_note(doc)
    out += _verdict(doc.get("done_when"))
    out += [
        f"![{task}: loss and learning rate by step, seed {seed}]({link})",
        "",
        f"Left: loss against total steps (exploration included) for every method, seed {seed}, "
        "log scale (dotted: the target loss). Right: the learning rate each method trained "
        "with, same seed, log scale.",
        "",
    ]
    return out


def _machine_text(m: Mapping[str, Any]) -> str:
    known = ("cpu", "cpu_count", "platform", "python", "torch", "load_avg_at_start")
    text = (
        f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} logical CPUs, "
        f"{m.get('platform', '?')}, Python {m.get('python', '?')}, torch {m.get('torch', '?')}"
    )
    extra = [f"{_words(k)} {_value(v)}" for k, v in m.items() if k not in known]
    return "; ".join([text, *extra])


def _machine(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    machines = [d.get("machine") or {} for d in docs]
    out = ["## Machine", ""]
    if not machines[0]:
        return [*out, "Not recorded in the JSON.", ""]
    out += [_machine_text(machines[0]) + ".", ""]
    loads = ", ".join(
        f"`{d['task']}` {_value(m.get('load_avg_at_start'))}"
        for d, m in zip(docs, machines, strict=True)
    )
    out += [f"Load average at the start of each benchmark: {loads}.", ""]
    same = [_machine_text(m) == _machine_text(machines[0]) for m in machines]
    if not all(same):
        out += ["**The documents disagree on the machine:**", ""]
        out += [
            f"- `{d['task']}`: {_machine_text(m)}"
            for d, m, ok in zip(docs, machines, same, strict=True)
            if not ok
        ]
        out.append("")
    return out


def _unique_tasks(docs: Sequence[Mapping[str, Any]]) -> None:
    if not docs:
        raise ConfigError("no benchmark documents given; pass at least one JSON file")
    tasks = [d["task"] for d in docs]
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ConfigError(f"more than one document for task(s) {dupes}; pass one per task")


def render(
    docs: Sequence[Mapping[str, Any]], plot_dir_rel: str = ".", regenerate: str | None = None
) -> str:
    """The benchmark page as markdown.

    Args:
        docs: One benchmark document per task (see :func:`load_docs`).
        plot_dir_rel: Folder of the figures, relative to the markdown file.
        regenerate: The command that rewrites this page from the JSON, if known.

    Returns:
        The page: intro, machine, then one section per task with its config, table,
        done-when verdict and figure.
    """
    _unique_tasks(docs)
    how = f"`{regenerate}`" if regenerate else "`python -m tuner.bench.lr_docs`"
    lines = [
        "# Learning-rate schedule benchmarks",
        "",
        f"Generated by {how} from the JSON each benchmark wrote; every number and figure "
        "comes from those files and none is edited by hand. The JSON came from:",
        "",
        *[f"- `{d['task']}`: `{d.get('command', 'command not recorded')}`" for d in docs],
        "",
        "Each method trains the same model for the task with the same seeds; only the "
        "learning-rate schedule differs.",
        "",
        COLUMNS.format(dash=DASH),
        "",
        *_machine(docs),
    ]
    for doc in docs:
        lines += _task_section(doc, plot_dir_rel)
    return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------


def _xy(points: Any) -> tuple[list[float], list[float]]:
    pairs = [(float(p[0]), math.nan if p[1] is None else float(p[1])) for p in points or []]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_task(doc: Mapping[str, Any], path: Path) -> Path:
    """Write ``doc``'s figure to ``path``: loss and LR schedule by step, one line per method.

    Both panels show the first seed: the left one each method's ``curve`` (loss against
    total steps), the right one its ``schedule`` (learning rate by step); both log y.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = _seeds(doc)
    seed = seeds[0] if seeds else None
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
    losses: list[float] = []
    for method in dict.fromkeys(r["method"] for r in doc["results"]):
        row = next((r for r in _rows(doc, method) if r["seed"] == seed), None)
        if row is None:
            continue
        x, y = _xy(row.get("curve"))
        if x:
            loss_ax.plot(x, y, label=method, lw=1.2)
            losses += [v for v in y if math.isfinite(v)]
        x, y = _xy(row.get("schedule"))
        if x:
            lr_ax.step(x, y, where="post", label=method, lw=1.2)
    target = doc.get("target_loss")
    if isinstance(target, int | float) and not isinstance(target, bool):
        loss_ax.axhline(target, color="k", ls=":", lw=0.8)
        losses.append(float(target))
    if losses and min(losses) > 0:
        loss_ax.set_yscale("log")
    if lr_ax.lines and all(v > 0 for ln in lr_ax.lines for v in ln.get_ydata() if v == v):
        lr_ax.set_yscale("log")
    task = doc["task"]
    loss_ax.set(title=f"{task}: loss (seed {seed})", xlabel="total steps", ylabel="loss")
    lr_ax.set(title=f"{task}: learning rate (seed {seed})", xlabel="step", ylabel="LR")
    for ax in (loss_ax, lr_ax):
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_docs(
    docs: Sequence[Mapping[str, Any]],
    out_md: Path,
    plot_dir: Path,
    regenerate: str | None = None,
) -> list[Path]:
    """Write the markdown page and one figure per task.

    Args:
        docs: One benchmark document per task.
        out_md: The markdown file to write (e.g. ``docs/benchmarks.md``).
        plot_dir: Folder for the figures (``bench-<task>.png``).
        regenerate: The command that rewrites them, named on the page if given.

    Returns:
        The written paths: the markdown first, then the figures in ``docs`` order.
    """
    _unique_tasks(docs)
    rel = Path(os.path.relpath(plot_dir.resolve(), out_md.resolve().parent)).as_posix()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    from tuner.bench.docs_index import other_pages_section

    text = render(docs, rel, regenerate).rstrip("\n") + "\n"
    others = other_pages_section(out_md.parent)
    if others:
        text += "\n" + "\n".join(others)
    out_md.write_text(text)
    pngs = [plot_task(doc, plot_dir / plot_filename(doc["task"])) for doc in docs]
    return [out_md, *pngs]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.bench.lr_docs JSON... [--out MD] [--plots DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tuner.bench.lr_docs",
        description="Write the LR benchmark page and figures from benchmark JSON files.",
    )
    parser.add_argument("json", nargs="+", help="files from `tautune bench TASK --json PATH`")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--plots", type=Path, default=None, help="default: the page's folder")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "tuner.bench.lr_docs", *(argv or sys.argv[1:])])
    try:
        docs = load_docs(args.json)
        written = write_docs(docs, args.out, args.plots or args.out.parent, command)
    except ConfigError as e:
        print(f"lr_docs: error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
