"""Command line of the peers benchmark: ``tautune bench peers --json PATH``.

``tautune bench peers --json docs/bench-peers.json --jobs 2 --docs docs/benchmarks-peers.md``
runs the whole suite and writes the page and its figures next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tuner.bench.cli_common import comma_ints, run_subcommand

# Light at import: ``tautune --help`` builds this parser without importing torch or Ray.


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def _progress(run: dict[str, Any]) -> None:
    print(
        f"[peers] {run['method']} seed={run['seed']} final={_fmt(run['final_loss'])} "
        f"steps={run['total_steps']} {run['wall_s']:.1f}s",
        flush=True,
    )


def _run(args: argparse.Namespace) -> int:
    from tuner.bench.peers import PeersConfig, run_peers

    cfg = PeersConfig(
        tasks=args.tasks or (), seeds=args.seeds or (), quick=args.quick, jobs=args.jobs
    )
    suite = run_peers(cfg, _progress, json_path=args.json)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({suite['bench_wall_s']} s)")
    for doc in suite["tasks"]:
        print(f"{doc['task']}: target {_fmt(doc['target_loss'])}")
        for row in doc["summary"]:
            print(
                f"  {row['method']:<24} final {_fmt(row['final_loss_median'])} "
                f"[{_fmt(row['final_loss_min'])}-{_fmt(row['final_loss_max'])}]  "
                f"steps_to_target {_fmt(row['steps_to_target_median'])}  "
                f"compute_to_target {_fmt(row['compute_to_target_median'])}"
            )
        for na in doc["not_applicable"]:
            print(f"  {na['method']:<24} not applicable")
    if args.docs:
        from tuner.bench.peers_docs import write_peers_docs

        command = f"python -m tuner.bench.peers_docs {args.json} --out {args.docs}"
        written = write_peers_docs(suite, Path(args.docs), regenerate=command)
        from tuner.bench.docs_index import refresh_index

        index = refresh_index(Path(args.docs).parent)
        print("wrote " + ", ".join(str(p) for p in [*written, *([index] if index else [])]))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``peers`` under ``tautune bench``."""
    p = subparsers.add_parser(
        "peers",
        help="tautune against PBT, PB2, schedule-free and Prodigy on the LR tasks",
        description=(
            "On each LR task (default: every one, held-out ones included) train tautune, "
            "cosine-grid-best (6-point grid), linear (at its peak), Ray Tune PBT and PB2 "
            "(population 4, the grid's total steps), schedule-free (at the grid's centre "
            "and at its peak) and Prodigy, same steps per run and same seeds; write one "
            "JSON document. Starts a local Ray with 2 CPUs. CPU only."
        ),
    )
    p.add_argument("--json", metavar="PATH", required=True, help="JSON output file")
    p.add_argument("--quick", action="store_true", help="CI size: short runs, 2 seeds, digits+nqm")
    p.add_argument("--tasks", type=_names, help="comma-separated tasks (default: every LR task)")
    p.add_argument("--seeds", type=comma_ints, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=1, help="non-Ray runs in parallel (default 1)")
    p.add_argument("--docs", metavar="MD", help="also write this markdown page and its PNGs")
    p.set_defaults(func=_run, bench_task="peers")


def main(argv: list[str] | None = None) -> int:
    """``python -m tuner.bench.peers_cli [ARGS]``: the same as ``tautune bench peers``."""
    from tuner.errors import TautuneError

    return run_subcommand("tuner.bench.peers_cli", "peers", add_parser, argv, TautuneError)


if __name__ == "__main__":
    sys.exit(main())
