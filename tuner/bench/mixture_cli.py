"""Command line of the mixture benchmarks: ``tautune bench mixture|curriculum`` and
``python -m tuner.bench.mixture ...`` (``... docs A.json B.json`` regenerates the page)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError

# Light at import: ``tautune --help`` builds this parser without importing torch; the
# benchmark's modules are imported when a command runs.


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _spec(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, body = text.partition("=")
    try:
        spec = json.loads(body) if sep else None
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--spec {name}: not JSON: {e}") from None
    if not name or not isinstance(spec, dict) or "method" not in spec:
        raise argparse.ArgumentTypeError(
            f'expected NAME={{"method": ...}} (a mixture controller spec), got {text!r}'
        )
    return name, spec


def _run(args: argparse.Namespace) -> int:
    from tuner.bench.mixture import (
        FULL_SEEDS,
        FULL_STEPS,
        QUICK_SEEDS,
        QUICK_STEPS,
        BenchConfig,
        cached_task,
        default_methods,
        run_bench,
        run_specs,
    )
    from tuner.bench.mixture_docs import write_docs

    task = args.bench_task
    cfg = BenchConfig(
        task=task,
        seeds=args.seeds or (QUICK_SEEDS if args.quick else FULL_SEEDS),
        steps=args.steps or (QUICK_STEPS if args.quick else FULL_STEPS[task]),
        tau=args.tau,
        quick=args.quick,
        jobs=args.jobs,
        methods=tuple(args.methods.split(",")) if args.methods else default_methods(task),
        extra=dict(args.spec or []),
    )
    total = len(run_specs(cfg, cached_task(task, cfg.quick)))
    done = 0

    def progress(run: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        print(
            f"[{done}/{total}] {run['method']} seed={run['seed']} {run['wall_s']:.0f}s", flush=True
        )

    doc = run_bench(cfg, progress)
    json_path = Path(args.json or f"bench-{task}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {json_path}")
    for row in doc["summary"]:
        print(
            f"  {row['method']:<18} final {row['final_loss_median']:.4f}  "
            f"steps_to_target {row['steps_to_target_median']}  speedup {row['speedup_median']}"
        )
    if args.out:
        md, png = write_docs(
            [doc], Path(args.out) / f"benchmarks-{task}.md", Path(args.out) / f"{task}-weights.png"
        )
        print(f"wrote {md} and {png}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``mixture`` and ``curriculum`` under ``tautune bench``'s subparsers."""
    for task, text in (
        ("mixture", "five byte-level LM domains (code, prose, arithmetic, base64 junk)"),
        ("curriculum", "four buckets of zero-padded sums, target the hardest"),
    ):
        p = subparsers.add_parser(
            task,
            help=f"data-mixture methods on {text}",
            description=(
                f"Train uniform, static-grid-best, odm, sec, exp3s and tautune on {text}, "
                "over several seeds, and write the steps each needs to reach uniform's final "
                "target validation loss as JSON. CPU only; see docs/benchmarks-mixture.md."
            ),
        )
        p.add_argument("--json", metavar="PATH", help=f"JSON output (default bench-{task}.json)")
        p.add_argument("--seeds", type=_ints, help="comma-separated seeds (default 0,1,2)")
        p.add_argument("--steps", type=int, help="optimizer steps per run")
        p.add_argument("--tau", type=int, help="bandit stage length (default steps // 20)")
        p.add_argument("--quick", action="store_true", help="CI size: 2 seeds, 300 steps")
        p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
        p.add_argument("--methods", help="comma-separated subset of the methods")
        p.add_argument(
            "--spec",
            action="append",
            type=_spec,
            metavar="NAME=JSON",
            help='add a controller method, e.g. dts=\'{"method": "dts"}\' (repeatable)',
        )
        p.add_argument("--out", metavar="DIR", help="also write the markdown report and plot")
        p.set_defaults(func=_run, bench_task=task)


def docs_main(argv: Sequence[str]) -> int:
    """``python -m tuner.bench.mixture docs A.json [B.json] --md M --png P``."""
    from tuner.bench.mixture_docs import write_docs

    p = argparse.ArgumentParser(prog="python -m tuner.bench.mixture docs")
    p.add_argument("json", nargs="+")
    p.add_argument("--md", default="docs/benchmarks-mixture.md")
    p.add_argument("--png", default="docs/mixture-weights.png")
    p.add_argument("--selection", nargs="*", default=[], help="JSON of the default's selection")
    args = p.parse_args(argv)
    docs = [json.loads(Path(j).read_text()) for j in args.json]
    selection = [json.loads(Path(j).read_text()) for j in args.selection]
    command = " ".join(
        ["python -m tuner.bench.mixture docs", *args.json, "--md", args.md, "--png", args.png]
        + (["--selection", *args.selection] if args.selection else [])
    )
    md, png = write_docs(docs, Path(args.md), Path(args.png), selection, command)
    print(f"wrote {md} and {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["docs"]:
        return docs_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tuner.bench.mixture")
    add_parser(parser.add_subparsers(dest="bench_task", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"tautune: error: {e}", file=sys.stderr)
        return 1
