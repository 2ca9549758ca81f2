"""Markdown and PNGs from the peers benchmark's JSON (:func:`write_peers_docs`).

Every number on the page is read from the document ``tautune bench peers --json PATH``
wrote; the prose says how to read the numbers, never what they show. Regenerate with
``python -m tuner.bench.peers_docs docs/bench-peers.json --out docs/benchmarks-peers.md``.
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
    num_text,
    rows_of,
    save_figure,
    seeds_of,
    value_text,
    write_and_list,
)
from tuner.bench.lr_docs import grid_note
from tuner.errors import ConfigError

COLUMNS = """\
- **final loss**: the loss at the end of the run (PBT/PB2: the best member's), median over
  seeds [min–max].
- **steps to target**: the first measured step at which a kept state's loss is at or below
  the task's target loss (`cosine-grid-best`'s median final loss), counting the method's
  own steps (exploration included; PBT/PB2: population steps, below); median, then per
  seed ({dash}: never).
- **compute to target**: steps to target plus the tuning the method needed first (the
  grid's `6 T` for methods that use its peak; `cosine-grid-best` counts its whole grid);
  median, then per seed.
- **total compute**: every step the method trained, tuning included (median).
- **exploration steps**: steps not in the final state's lineage (median).
- **wall s**: median wall-clock seconds of one run (PBT/PB2: the whole `Tuner.fit` of the
  population, Ray's start-up of trial processes included; Ray's own start is not)."""

POPULATION_NOTE = """\
PBT and PB2 count **population steps**: each report of a member says how many steps it
trained since its previous report, and the driver receives the reports in order, so the
population steps at a report are everything the four members had finished when that
loss arrived. The population is stopped when they reach the grid's `6 T` (about `1.5 T`
a member; the last report can overshoot by less than one report interval). The best
member's lineage (the states its final state descends from, across exploits) is plotted
and scored in population steps; an exploiting member restarts from the donor's
checkpoint, so members end at different state steps, listed below each table."""


METHODS_NOTE = """\
The methods:

- `tautune`, `cosine-grid-best` and `linear` run exactly as on the
  [LR benchmark page](benchmarks.md): tautune's `ExploreLR` starts at the grid's geometric
  centre and searches the grid's range widened 4x each way; `cosine-grid-best` is the best
  peak of a 6-point log grid of cosine runs (best by median final loss); `linear` decays
  linearly from that peak.
- `pbt` and `pb2`: Ray Tune's `PopulationBasedTraining` and `PB2` (asynchronous, their
  default settings otherwise), a population of 4 whose starting LRs are drawn
  log-uniformly within tautune's bounds, perturbing about every `T/10` of a member's steps.
  PBT resamples `lr` log-uniformly or multiplies it by 0.8 or 1.2 (clipped to the bounds);
  PB2 explores `log_lr` within the bounds. Every member uses the same model seed and
  batch order as the other methods, and the task's warmup.
- `schedulefree`: `schedulefree.AdamWScheduleFree` on AdamW tasks, `SGDScheduleFree` on SGD
  tasks, at a constant LR with its own `warmup_steps` set to the task's warmup, evaluated
  in `optimizer.eval()` mode. `schedulefree` uses the grid's centre (the prior tautune
  starts from), `schedulefree@grid-peak` `cosine-grid-best`'s peak, and on SGD tasks
  `schedulefree@10x-grid-peak` ten times that peak, because the optimizer's authors advise
  SGD learning rates 10x-50x the classical ones; the last two are charged the grid.
- `prodigy`: `prodigyopt.Prodigy` with `lr=1.0`, a cosine decay of that multiplier after
  the task's warmup (`safeguard_warmup=True` where there is one), weight decay 0.01 on
  AdamW tasks and 0 on SGD tasks."""


def load_suite(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a peers document and check its shape.

    Raises:
        ConfigError: The file is missing, not JSON, or not a peers document.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; write it with `tautune bench peers --json {p}`"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: cannot read a JSON document: {e}") from None
    if not isinstance(doc, dict) or doc.get("benchmark") != "peers":
        raise ConfigError(f"{p}: not a peers benchmark document (no benchmark: peers)")
    if not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise ConfigError(f"{p}: 'tasks' must be a non-empty list of task documents")
    for i, task in enumerate(doc["tasks"]):
        if not isinstance(task, dict) or not {"task", "results", "summary"} <= task.keys():
            raise ConfigError(f"{p}: tasks[{i}] lacks 'task', 'results' or 'summary'")
    return doc


def plot_filename(task: str) -> str:
    """File name of ``task``'s figure (``bench-peers-<task>.png``)."""
    return f"bench-peers-{task}.png"


def _name(doc: Mapping[str, Any], method: str) -> str:
    rows = rows_of(doc, method)
    info = [r.get("info") or {} for r in rows]
    values = {i.get("peak", i.get("lr")) for i in info} - {None}
    if method in ("pbt", "pb2", "prodigy") or len(values) != 1:
        return method
    label = "peak" if method in ("cosine-grid-best", "linear") else "lr"
    return f"{method} ({label} {num_text(values.pop())})"


def _spread(row: Mapping[str, Any]) -> str:
    lo, hi = num_text(row.get("final_loss_min")), num_text(row.get("final_loss_max"))
    return f"{num_text(row.get('final_loss_median'))} [{lo}–{hi}]"


def _table(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        "| method | final loss | steps to target | compute to target | total compute "
        "| exploration steps | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in doc["summary"]:
        method = row["method"]
        runs = rows_of(doc, method)
        stt = ", ".join(num_text(r.get("steps_to_target")) for r in runs)
        ctt = ", ".join(num_text(r.get("compute_to_target")) for r in runs)
        cells = [
            _name(doc, method),
            _spread(row),
            f"{num_text(row.get('steps_to_target_median'))} ({stt})",
            f"{num_text(row.get('compute_to_target_median'))} ({ctt})",
            num_text(row.get("total_compute_median")),
            num_text(row.get("exploration_steps_median")),
            num_text(row.get("wall_s_median"), 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for na in doc.get("not_applicable") or []:
        lines.append(f"| {na['method']} | not applicable (below) |" + " |" * 5)
    return lines


def _not_applicable(doc: Mapping[str, Any]) -> list[str]:
    """The reasons methods did not run, each reason once."""
    by_reason: dict[str, list[str]] = {}
    for na in doc.get("not_applicable") or []:
        by_reason.setdefault(str(na["reason"]), []).append(f"`{na['method']}`")
    return [
        f"**Not applicable:** {', '.join(methods)}: {reason}."
        for reason, methods in by_reason.items()
    ] + ([""] if by_reason else [])


def _population_notes(doc: Mapping[str, Any]) -> list[str]:
    """One bullet per PBT/PB2 run: population steps, members' finals and state steps."""
    out = []
    for method in ("pbt", "pb2"):
        for r in rows_of(doc, method):
            info = r.get("info") or {}
            members = ", ".join(num_text(x) for x in info.get("member_final_losses", []))
            out.append(
                f"- `{method}` seed {r['seed']}: {num_text(r.get('total_steps'))} population "
                f"steps; members' final losses {members}; members' state steps "
                f"{value_text(info.get('member_state_steps'))}; the lineage changed member "
                f"{num_text(info.get('lineage_member_switches'))} times; initial LRs "
                f"{value_text(info.get('initial_lrs'))}."
            )
    return [*out, ""] if out else []


def _config_line(doc: Mapping[str, Any]) -> str:
    cfg = doc.get("config") or {}
    parts = [f"{key_text(k)} {value_text(v)}" for k, v in cfg.items() if v is not None]
    return "**Config:** " + "; ".join([*parts, f"target loss {num_text(doc.get('target_loss'))}"])


def _task_section(doc: Mapping[str, Any], link: str) -> list[str]:
    task, seeds = doc["task"], seeds_of(doc)
    out = [f"## `{task}`", ""]
    if doc.get("text"):
        out += [str(doc["text"]), ""]
    out += [_config_line(doc) + ".", "", *_table(doc), ""]
    out += _not_applicable(doc)
    out += grid_note(doc)
    out += _population_notes(doc)
    load = (doc.get("machine") or {}).get("load_avg_at_start")
    out += [
        f"Task wall time {num_text(doc.get('bench_wall_s'))} s"
        + (f" (Ray started in {num_text(doc['ray_init_s'])} s)" if doc.get("ray_init_s") else "")
        + f"; load average at its start {value_text(load)}, at its end "
        f"{value_text(doc.get('load_avg_at_end'))}.",
        "",
    ]
    out += [
        f"![{task}: loss against total steps, seed {seeds[0] if seeds else '?'}]({link})",
        "",
        "Left: loss against the steps each method counts (PBT/PB2: the best member's lineage "
        "in population steps), first seed, log scale; dotted: the target loss. Right: the "
        "LR each trained with by step of its own run (PBT/PB2: the lineage's LR by state "
        "step; schedule-free: the LR passed, its built-in warmup not drawn; Prodigy is left "
        "out: its LR is a multiplier of its own estimate).",
        "",
    ]
    return out


def render(suite: Mapping[str, Any], plot_dir_rel: str = ".", regenerate: str | None = None) -> str:
    """The peers page as markdown (intro, columns, machine, one section per task)."""
    how = f"`{regenerate}`" if regenerate else "`python -m tuner.bench.peers_docs`"
    prefix = "" if plot_dir_rel in ("", ".") else plot_dir_rel.rstrip("/") + "/"
    lines = [
        "# Peer methods on the learning-rate benchmarks",
        "",
        f"Generated by {how} from the JSON that `{suite.get('command', '?')}` wrote "
        f"(suite wall time {num_text(suite.get('bench_wall_s'))} s); every number and figure "
        "comes from that file.",
        "",
        "Every method trains the task's model from the same seeds on the same machine, "
        "with the same per-run step budget `T`; what differs is how the learning rate is "
        "chosen and which optimizer applies it.",
        "",
        COLUMNS.format(dash=DASH),
        "",
        METHODS_NOTE,
        "",
        POPULATION_NOTE,
        "",
        *machine_section(suite.get("machine") or {}),
    ]
    for doc in suite["tasks"]:
        lines += _task_section(doc, prefix + plot_filename(doc["task"]))
    return "\n".join(lines)


def plot_task(doc: Mapping[str, Any], path: Path) -> Path:
    """Write ``doc``'s figure: loss by counted steps and LR by step, first seed."""
    seed, rows = first_seed_rows(doc)
    fig, loss_ax, lr_ax = loss_lr_figure(figsize=(12, 4.5))
    losses: list[float] = []
    for i, method, row in rows:
        style = {"ls": "--" if method in ("pbt", "pb2") else "-", "color": f"C{i % 10}"}
        x, y = curve_xy(row.get("curve"))
        loss_ax.plot(x, y, label=method, lw=1.2, **style)
        losses += [v for v in y if math.isfinite(v) and v > 0]
        if method != "prodigy":
            x, y = curve_xy(row.get("schedule"))
            lr_ax.step(x, y, where="post", label=method, lw=1.2, **style)
    target = doc.get("target_loss")
    if isinstance(target, int | float):
        loss_ax.axhline(target, color="k", ls=":", lw=0.8)
    if losses:
        loss_ax.set_yscale("log")
    lr_ax.set_yscale("log")
    bounds = (doc.get("config") or {}).get("lr_bounds")
    if bounds and lr_ax.lines:  # cosine's last steps would stretch the axis to ~0
        lr_ax.set_ylim(bottom=float(bounds[0]) / 10)
    task = doc["task"]
    loss_ax.set(title=f"{task}: loss (seed {seed})", xlabel="steps counted", ylabel="loss")
    lr_ax.set(title=f"{task}: learning rate (seed {seed})", xlabel="step of the run", ylabel="LR")
    return save_figure(fig, path)


def write_peers_docs(
    suite: Mapping[str, Any],
    out_md: Path,
    plot_dir: Path | None = None,
    regenerate: str | None = None,
) -> list[Path]:
    """Write the peers page and one figure per task.

    Args:
        suite: The document :func:`tuner.bench.peers.run_peers` returned.
        out_md: The markdown file (e.g. ``docs/benchmarks-peers.md``).
        plot_dir: Folder of the figures (default: ``out_md``'s folder).
        regenerate: The command that rewrites the page, named on it if given.

    Returns:
        The markdown path, then the figures' paths in task order.
    """
    plot_dir = plot_dir or out_md.parent
    rel = Path(os.path.relpath(plot_dir.resolve(), out_md.resolve().parent)).as_posix()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(suite, rel, regenerate))
    pngs = [plot_task(d, plot_dir / plot_filename(d["task"])) for d in suite["tasks"]]
    return [out_md, *pngs]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.bench.peers_docs JSON [--out MD] [--plots DIR]``."""
    parser = docs_parser(
        "tuner.bench.peers_docs",
        "Write the peers benchmark page and figures from its JSON.",
        Path("docs/benchmarks-peers.md"),
    )
    parser.add_argument("json", help="the file `tautune bench peers --json PATH` wrote")
    args = parser.parse_args(argv)

    def write(command: str) -> list[Path]:
        return write_peers_docs(load_suite(args.json), args.out, args.plots, command)

    return write_and_list("tuner.bench.peers_docs", argv, write)


if __name__ == "__main__":
    sys.exit(main())
