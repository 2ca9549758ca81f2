"""Command line of the population benchmark: ``tautune bench population``.

``tautune bench population --json docs/bench-population.json --docs
docs/benchmarks-population.md --jobs 2`` runs every task and writes the page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tuner.bench.cli_common import comma_ints, run_subcommand

# Light at import: ``tautune --help`` builds this parser without importing torch.
DEFAULT_TASKS = "charlm,digits,nqm,digits-cnn,digits-adamw,charlm-sgd"


def _run(args: argparse.Namespace) -> int:
    from tuner.bench.lr_tasks import TASKS
    from tuner.bench.population import PopulationBench, page, run
    from tuner.errors import ConfigError

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; tasks: {sorted(TASKS)}")
    if not args.trials or min(args.trials) < 2:
        raise ConfigError(f"--trials takes population sizes of at least 2, got {args.trials}")
    bench = PopulationBench(tasks=tasks, seeds=args.seeds, trials=args.trials, jobs=args.jobs)
    doc = run(bench, lambda line: print(line, flush=True))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({doc['bench_wall_s']} s)")
    if args.docs:
        command = (
            f"tautune bench population --json {args.json} --docs {args.docs} "
            f"--trials {','.join(map(str, args.trials))} --jobs {args.jobs}"
        )
        Path(args.docs).write_text(page(doc, command))
        print(f"wrote {args.docs}")
        from tuner.bench.docs_index import refresh_index

        index = refresh_index(Path(args.docs).parent)
        if index is not None:
            print(f"wrote {index}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``population`` under ``tautune bench``."""
    p = subparsers.add_parser(
        "population",
        help="explore on one trial against a population exploring one candidate per trial",
        description=(
            "For each task and seed, train tautune (explore, candidates one after another) "
            "and tautune-population-P for each P (P trials, one candidate each, all going "
            "on from the winner's state) in the same process; compare final loss, "
            "exploration steps on one trial's timeline, and steps trained by all trials. "
            "CPU only."
        ),
    )
    p.add_argument("--json", metavar="PATH", required=True, help="JSON output")
    p.add_argument("--docs", metavar="PATH", help="also write the markdown page here")
    p.add_argument(
        "--tasks", default=DEFAULT_TASKS, help=f"comma-separated (default {DEFAULT_TASKS})"
    )
    p.add_argument("--seeds", type=comma_ints, default=(0, 1, 2, 3, 4), help="default 0,1,2,3,4")
    p.add_argument(
        "--trials", type=comma_ints, default=(3, 5), help="population sizes (default 3,5)"
    )
    p.add_argument("--jobs", type=int, default=1, help="task-seed pairs in parallel (default 1)")
    p.set_defaults(func=_run, bench_task="population")


if __name__ == "__main__":
    from tuner.errors import ConfigError

    sys.exit(
        run_subcommand("tuner.bench.population_cli", "population", add_parser, None, ConfigError)
    )
