"""Command line of the LR benchmarks: ``tautune bench TASK|lr|held-out``.

``tautune bench lr --out docs`` runs the three main tasks and regenerates
docs/benchmarks.md; ``tautune bench held-out --out docs`` runs the held-out ones
(tasks the controller was not designed on) and writes docs/benchmarks-held-out.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tuner.bench.cli_common import comma_ints

# Light at import: ``tautune --help`` builds this parser without importing torch.
from tuner.bench.lr_tasks import HELD_OUT_TASKS, MAIN_TASKS, TASKS

GROUPS = {
    "lr": (MAIN_TASKS, "benchmarks.md", "the three main LR tasks, then the docs page"),
    "held-out": (
        HELD_OUT_TASKS,
        "benchmarks-held-out.md",
        "the held-out LR tasks (not designed on), then their docs page",
    ),
}


def _one(task: str, args: argparse.Namespace) -> dict[str, Any]:
    from tuner.bench.lr import DEFAULT_SEEDS, BenchConfig, run_bench

    cfg = BenchConfig(
        task=task,
        seeds=args.seeds or ((0, 1) if args.quick else DEFAULT_SEEDS),
        quick=args.quick,
        jobs=args.jobs,
        methods=tuple(args.methods.split(",")) if args.methods else (),
        steps=args.steps,
    )
    done = 0

    def progress(run: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        print(
            f"[{task} {done}] {run['method']} seed={run['seed']} final={run['final_loss']:.4f} "
            f"{run['wall_s']:.0f}s",
            flush=True,
        )

    doc = run_bench(cfg, progress)
    path = Path(args.json) if args.json and task == args.bench_task else None
    if path is None:
        base = Path(args.out) if args.out else Path(".")
        path = base / f"bench-{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path}")
    for row in doc["summary"]:
        print(
            f"  {row['method']:<18} final {row['final_loss_median']:.4f}  "
            f"steps_to_target {row['steps_to_target_median']}  reached {row['reached']}"
        )
    if doc.get("done_when"):
        print(f"  done_when: {json.dumps(doc['done_when'])}")
    return doc


def _run(args: argparse.Namespace) -> int:
    group = GROUPS.get(args.bench_task)
    tasks = list(group[0]) if group else [args.bench_task]
    docs = [_one(task, args) for task in tasks]
    if args.out:
        from tuner.bench.lr_docs import write_docs

        out = Path(args.out)
        command = None
        page = "benchmarks.md"
        if group:
            page = group[1]
            command = f"tautune bench {args.bench_task} --out {args.out} --jobs {args.jobs}"
            if args.quick:
                command += " --quick"
        held_out = all(TASKS[task].held_out for task in tasks)
        written = write_docs(docs, out / page, out, regenerate=command, held_out=held_out)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register each LR task, ``lr`` and ``held-out`` under ``tautune bench``."""
    groups = [(name, text) for name, (_, _, text) in GROUPS.items()]
    for task, text in [*((name, t.help) for name, t in TASKS.items()), *groups]:
        p = subparsers.add_parser(
            task,
            help=f"LR schedule methods on {text}",
            description=(
                f"Train tautune, autolrs-classic, cosine-grid-best (6-point peak grid), "
                f"linear and constant (at the grid's best peak), and on nqm the optimal "
                f"schedule, on {text}; same steps and seeds for each. Writes JSON; with "
                "--out also the markdown page and plots. CPU only."
            ),
        )
        p.add_argument("--json", metavar="PATH", help="JSON output (default bench-TASK.json)")
        p.add_argument("--seeds", type=comma_ints, help="comma-separated seeds (default 0,1,2,3,4)")
        p.add_argument("--steps", type=int, help="steps per run (default per task)")
        p.add_argument("--quick", action="store_true", help="CI size: 2 seeds, short runs")
        p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
        p.add_argument("--methods", help="comma-separated subset of the methods")
        p.add_argument("--out", metavar="DIR", help="write JSON, docs and plots into DIR")
        p.set_defaults(func=_run, bench_task=task)
