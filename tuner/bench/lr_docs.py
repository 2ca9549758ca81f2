"""Markdown and PNGs from learning-rate benchmark JSON documents (:func:`write_docs`).

Each document is what ``tautune bench nqm|charlm|digits --json PATH`` wrote for one task.
Every number on the page is read from those documents; the prose around the numbers says
how to read them, never what they show. Regenerate with
``python -m tuner.bench.lr_docs docs/bench-*.json --out docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.bench.docs_common import (
    DASH,
    curve_xy,
    docs_parser,
    first_seed_rows,
    key_text,
    loss_lr_figure,
    machine_section,
    machine_text,
    num_text,
    rows_of,
    save_figure,
    seeds_of,
    value_text,
    write_and_list,
)
from tuner.errors import ConfigError

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


def _method_name(doc: Mapping[str, Any], method: str) -> str:
    peaks = {(r.get("info") or {}).get("peak") for r in rows_of(doc, method)} - {None}
    if len(peaks) == 1:
        return f"{method} (peak {num_text(peaks.pop())})"
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
        per_seed = ", ".join(num_text(r.get("steps_to_target")) for r in rows_of(doc, method))
        cells = [
            _method_name(doc, method),
            f"{num_text(row.get('final_loss_median'))} "
            f"[{num_text(row.get('final_loss_min'))}–{num_text(row.get('final_loss_max'))}]",
            f"{num_text(row.get('steps_to_target_median'))} ({per_seed})",
            num_text(row.get("exploration_steps_median")),
            num_text(row.get("wall_s_median"), 3),
        ]
        if ratio:
            cells.append(num_text(row.get("ratio_to_optimal")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _peak(key: str) -> str:
    try:
        return num_text(float(key), 3)
    except ValueError:
        return key


def grid_note(doc: Mapping[str, Any]) -> list[str]:
    """What the cosine grid measured, by peak LR, and the peak it chose."""
    rows = [r for r in rows_of(doc, "cosine-grid-best") if (r.get("info") or {}).get("grid")]
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
        cells = ", ".join(f"{_peak(k)} → {num_text(v)}" for k, v in grid.items())
        whose = "" if seed is None else f" (seed {seed})"
        out.append(f"`cosine-grid-best` grid{whose}, final loss by peak LR: {cells}.")
    peaks = [(r["info"].get("peak"), r["seed"]) for r in rows]
    if len({p for p, _ in peaks}) == 1:
        out.append(f"Chosen peak: {num_text(peaks[0][0])}.")
    else:
        out.append(
            "Chosen peaks: " + ", ".join(f"{num_text(p)} (seed {s})" for p, s in peaks) + "."
        )
    cost = rows[0]["info"].get("grid_total_steps")
    if cost is not None:
        out.append(f"Grid total steps: {num_text(cost)}.")
    return [" ".join(out), ""]


def _verdict(done: Mapping[str, Any] | None) -> list[str]:
    if not done:
        return ["**Done-when:** no criteria recorded for this task.", ""]
    flags = [v for v in done.values() if isinstance(v, bool)]
    head = f"{sum(flags)} of {len(flags)} met" if flags else "recorded values"
    parts = "; ".join(f"{key_text(k)}: {value_text(v, verdict=True)}" for k, v in done.items())
    return [f"**Done-when ({head}).** {parts}.", ""]


def _config_line(doc: Mapping[str, Any]) -> str:
    cfg = doc.get("config") or {}
    parts = [f"{key_text(k)} {value_text(v)}" for k, v in cfg.items()]
    target = f"target loss {num_text(doc.get('target_loss'))}"
    if doc.get("target_method"):
        target += f" (from `{doc['target_method']}`)"
    return "**Config:** " + "; ".join([*parts, target]) + "."


def _task_section(doc: Mapping[str, Any], plot_dir_rel: str) -> list[str]:
    task = doc["task"]
    name = plot_filename(task)
    link = name if plot_dir_rel in ("", ".") else f"{plot_dir_rel.rstrip('/')}/{name}"
    seed = seeds_of(doc)[0] if seeds_of(doc) else None
    out = [f"## `{task}`", ""]
    if doc.get("text"):
        out += [str(doc["text"]), ""]
    out += [_config_line(doc), "", *_table(doc), ""]
    out += grid_note(doc)
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


def _machine(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    machines = [d.get("machine") or {} for d in docs]
    if not machines[0]:
        return ["## Machine", "", "Not recorded in the JSON.", ""]
    out = machine_section(machines[0])
    loads = ", ".join(
        f"`{d['task']}` {value_text(m.get('load_avg_at_start'))}"
        for d, m in zip(docs, machines, strict=True)
    )
    out += [f"Load average at the start of each benchmark: {loads}.", ""]
    same = [machine_text(m) == machine_text(machines[0]) for m in machines]
    if not all(same):
        out += ["**The documents disagree on the machine:**", ""]
        out += [
            f"- `{d['task']}`: {machine_text(m)}"
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


HELD_OUT_INTRO = (
    "These tasks are held out: they were added after tautune's defaults had been chosen on "
    "nqm, charlm and digits ([the main page](benchmarks.md)), to measure it on training it "
    "was not designed on. Each changes one thing about a main task: the model (a CNN for "
    "the digits MLP, a small transformer for the byte-level MLP), or the optimizer (AdamW "
    "for SGD, SGD for AdamW)."
)


def render(
    docs: Sequence[Mapping[str, Any]],
    plot_dir_rel: str = ".",
    regenerate: str | None = None,
    held_out: bool = False,
) -> str:
    """The benchmark page as markdown.

    Args:
        docs: One benchmark document per task (see :func:`load_docs`).
        plot_dir_rel: Folder of the figures, relative to the markdown file.
        regenerate: The command that rewrites this page from the JSON, if known.
        held_out: The page of the held-out tasks: its own title and a paragraph on what
            held out means.

    Returns:
        The page: intro, machine, then one section per task with its config, table,
        done-when verdict and figure.
    """
    _unique_tasks(docs)
    how = f"`{regenerate}`" if regenerate else "`python -m tuner.bench.lr_docs`"
    title = "held-out tasks" if held_out else "benchmarks"
    lines = [
        f"# Learning-rate schedule {title}",
        "",
        *([HELD_OUT_INTRO, ""] if held_out else []),
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


def plot_task(doc: Mapping[str, Any], path: Path) -> Path:
    """Write ``doc``'s figure to ``path``: loss and LR schedule by step, one line per method.

    Both panels show the first seed: the left one each method's ``curve`` (loss against
    total steps), the right one its ``schedule`` (learning rate by step); both log y.

    Returns:
        ``path``.
    """
    seed, rows = first_seed_rows(doc)
    fig, loss_ax, lr_ax = loss_lr_figure(figsize=(11, 4))
    losses: list[float] = []
    for _, method, row in rows:
        x, y = curve_xy(row.get("curve"))
        if x:
            loss_ax.plot(x, y, label=method, lw=1.2)
            losses += [v for v in y if math.isfinite(v)]
        x, y = curve_xy(row.get("schedule"))
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
    return save_figure(fig, path)


def write_docs(
    docs: Sequence[Mapping[str, Any]],
    out_md: Path,
    plot_dir: Path,
    regenerate: str | None = None,
    held_out: bool = False,
) -> list[Path]:
    """Write the markdown page and one figure per task.

    Args:
        docs: One benchmark document per task.
        out_md: The markdown file to write (e.g. ``docs/benchmarks.md``).
        plot_dir: Folder for the figures (``bench-<task>.png``).
        regenerate: The command that rewrites them, named on the page if given.
        held_out: The held-out tasks' page (see :func:`render`).

    Returns:
        The written paths: the markdown first, then the figures in ``docs`` order.
    """
    _unique_tasks(docs)
    rel = Path(os.path.relpath(plot_dir.resolve(), out_md.resolve().parent)).as_posix()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    from tuner.bench.docs_index import other_pages_section

    text = render(docs, rel, regenerate, held_out).rstrip("\n") + "\n"
    others = other_pages_section(out_md.parent, but=out_md.name)
    if others:
        text += "\n" + "\n".join(others)
    out_md.write_text(text)
    pngs = [plot_task(doc, plot_dir / plot_filename(doc["task"])) for doc in docs]
    return [out_md, *pngs]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.bench.lr_docs JSON... [--out MD] [--plots DIR]``."""
    parser = docs_parser(
        "tuner.bench.lr_docs",
        "Write the LR benchmark page and figures from benchmark JSON files.",
        Path("docs/benchmarks.md"),
    )
    parser.add_argument("json", nargs="+", help="files from `tautune bench TASK --json PATH`")
    parser.add_argument(
        "--held-out", action="store_true", help="the held-out tasks' page (its title and intro)"
    )
    args = parser.parse_args(argv)

    def write(command: str) -> list[Path]:
        docs = load_docs(args.json)
        plots = args.plots or args.out.parent
        return write_docs(docs, args.out, plots, command, held_out=args.held_out)

    return write_and_list("tuner.bench.lr_docs", argv, write)


if __name__ == "__main__":
    sys.exit(main())
