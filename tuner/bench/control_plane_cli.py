"""Command line of the control-plane benchmark: ``tautune bench control-plane`` and
``python -m tuner.bench.control_plane_cli``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.bench.cli_common import comma_ints, run_subcommand
from tuner.errors import ConfigError

# Light at import: ``tautune --help`` builds this parser without importing torch; the
# benchmark's modules are imported when the command runs.

SECTIONS = ("agent_overhead", "boundary_stall", "decision_latency", "scale", "bo_cost")


def _ints(text: str) -> tuple[int, ...]:
    values = comma_ints(text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = sorted(set(names) - set(SECTIONS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return names


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~tuner.bench.control_plane.SuiteConfig` the arguments ask for."""
    from tuner.bench.control_plane import SuiteConfig

    cfg = SuiteConfig.quick_config() if args.quick else SuiteConfig.full()
    changes: dict[str, Any] = {}
    if args.sections:
        changes["sections"] = args.sections
    scale: dict[str, Any] = {}
    if args.workers:
        scale["workers"] = args.workers
    if args.seconds is not None:
        scale["seconds"] = args.seconds
    if scale:
        changes["scale"] = dataclasses.replace(cfg.scale, **scale)
    if args.overhead_reps is not None:
        changes["overhead"] = dataclasses.replace(cfg.overhead, reps=args.overhead_reps)
    if args.stall_steps is not None:
        changes["stall"] = dataclasses.replace(cfg.stall, steps=args.stall_steps)
    if args.latency_samples is not None:
        changes["latency"] = dataclasses.replace(cfg.latency, samples=args.latency_samples)
    if args.bo_observations:
        changes["bo"] = dataclasses.replace(cfg.bo, observations=args.bo_observations)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _print_section(section: str, result: dict[str, Any]) -> None:
    if section == "agent_overhead":
        for r in result["results"]:
            print(
                f"  {r['case']:<10} {r['step_kind']:<6} step {r['step_us']:.0f} us  "
                f"added {r['added_us']:+.1f} us ({r['added_pct']:+.2f}%)  "
                f"inline p50 {r['inline_us']['p50']:.1f} us  "
                f"{r['redis_scripts_per_step']:.3f} scripts/step"
            )
    elif section == "boundary_stall":
        for name, r in result["scenarios"].items():
            print(
                f"  {name:<11} boundaries {r['boundaries']:>3}  waited {r['boundaries_waited']:>3}"
                f"  mean stall {r['mean_stall_ms_per_boundary']} ms  "
                f"p99 {r['stall_ms_per_boundary'].get('p99')} ms  late {r['late_boundaries']}"
            )
    elif section == "decision_latency":
        lat = result["latency_ms"]
        print(f"  report -> decision visible: p50 {lat.get('p50')} ms  p99 {lat.get('p99')} ms")
    elif section == "scale":
        for lv in result["levels"]:
            lat, mem = lv["latency_ms"], lv["memory"]
            print(
                f"  {lv['workers']:>6} workers  p50 {lat.get('p50')} ms  p99 {lat.get('p99')} ms"
                f"  redis {lv['redis_cpu']:.2f} cores  generator {lv['generator_cpu']:.2f} cores"
                f"  {mem['per_job_bytes'] / 1024:.0f} KiB/job"
                f"  {'held' if lv['held'] else 'NOT held: ' + ','.join(lv['not_held_because'])}"
            )
        print(f"  largest held: {result['largest_held']} workers")
    elif section == "bo_cost":
        for r in result["bounded"]:
            print(
                f"  n={r['observations']:>5} kept {r['kept']:>3}  observe+suggest "
                f"{r['observe_suggest_ms']:.0f} ms  best_lr {r['best_lr_ms']:.0f} ms"
            )
        for r in result["unbounded"]:
            print(
                f"  n={r['observations']:>5} unbounded window: observe+suggest "
                f"{r['observe_suggest_ms']:.0f} ms"
            )


def _run(args: argparse.Namespace) -> int:
    from tuner.bench.control_plane import run_suite

    cfg = build_config(args)

    def progress(section: str, result: dict[str, Any]) -> None:
        print(f"[{section}]", flush=True)
        _print_section(section, result)

    doc = run_suite(cfg, progress)
    doc["command"] = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path} ({doc['wall_s']:.0f} s)")
    if args.plot and "scale" in doc["results"]:
        from tuner.bench.cp_plot import plot_scale

        cpus = doc["machine"]["cpus_usable"]
        plot_scale(doc["results"]["scale"], Path(args.plot), f"one embedded Redis, {cpus} CPUs")
        print(f"wrote {args.plot}")
    if args.docs:
        from tuner.bench.cp_docs import write_page
        from tuner.bench.docs_index import refresh_index

        page = write_page(doc, Path(args.docs), Path(args.plot) if args.plot else None)
        index = refresh_index(page.parent)
        print(f"wrote {page}" + (f" and {index}" if index else ""))
    print("targets:")
    for name, t in doc["targets"].items():
        numbers = {k: v for k, v in t.items() if k != "met" and not isinstance(v, dict | list)}
        print(f"  {'met ' if t['met'] else 'MISS'} {name}: {json.dumps(numbers)}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``control-plane`` under ``tautune bench``'s subparsers."""
    p = subparsers.add_parser(
        "control-plane",
        help="agent overhead, boundary stall, decision latency, Redis scale and BO cost",
        description=(
            "Measure tautune's control plane on this machine with private embedded "
            "redis-servers: the time the agent adds to a 5 ms training step, the wait at "
            "stage boundaries with an in-process head, report-to-decision latency, many "
            "simulated workers on one Redis, and the cost of a Bayesian-optimization "
            "decision against the observations made. Writes JSON."
        ),
    )
    p.add_argument("--json", metavar="PATH", required=True, help="JSON output")
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--plot", metavar="PNG", help="also plot the scale section")
    p.add_argument("--docs", metavar="MD", help="also write the markdown page")
    p.add_argument("--sections", type=_sections, help=f"subset of {','.join(SECTIONS)}")
    p.add_argument("--workers", type=_ints, help="scale: comma-separated worker counts")
    p.add_argument("--seconds", type=float, help="scale: measured seconds per count")
    p.add_argument("--overhead-reps", type=int, help="agent overhead: block pairs per case")
    p.add_argument("--stall-steps", type=int, help="boundary stall: steps per scenario")
    p.add_argument("--latency-samples", type=int, help="decision latency: decisions timed")
    p.add_argument("--bo-observations", type=_ints, help="BO cost: observation counts")
    p.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.bench.control_plane_cli [--quick] --json PATH ...``."""
    return run_subcommand(
        "tuner.bench.control_plane_cli", "control-plane", add_parser, argv, ConfigError
    )


if __name__ == "__main__":
    sys.exit(main())
