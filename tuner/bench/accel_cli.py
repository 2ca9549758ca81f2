"""Command line of the accelerator benchmark: ``tautune bench accel --json PATH``.

``tautune bench accel --json docs/bench-accel.json --docs docs/benchmarks-accel.md`` on a
machine with a CUDA GPU writes the figures and the page; ``--quick`` runs a tiny model on
whatever device there is (the CPU in CI) to check that the benchmark itself works.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from tuner.bench.cli_common import run_subcommand

# Light at import: ``tautune --help`` builds this parser without importing torch.


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def page(doc: dict[str, Any], command: str) -> str:
    """The markdown page of a document :func:`~tuner.bench.accel.run_accel` wrote."""
    lines = [
        "# tautune on an accelerator: step overhead and snapshots",
        "",
        f"Device: **{doc['device']}**, torch {doc['torch']}. Generated from the JSON by "
        f"`{command}`; rerun the benchmark with `tautune bench accel --json PATH --docs PATH`.",
        "",
        "## Step overhead",
        "",
        "Median milliseconds per training step over "
        f"{doc['config']['reps']} blocks of {doc['config']['steps']} steps of each variant, "
        "the blocks of the variants alternating, each timed from a synchronized device to a "
        "synchronized device; the last column is against `bare` of the same model. `bare`: "
        "no tautune, the loss never read. `bare+item`: `loss.item()` every step. "
        "`tautune+item`: `agent.report(step, loss=loss.item())` and `sched.step()`. "
        "`tautune+tensor`: `agent.report(step, loss=loss.detach())` and `sched.step()`.",
        "",
        "| model | parameters | variant | ms / step | vs bare |",
        "|---|---:|---|---:|---:|",
    ]
    for section in doc["step_overhead"]:
        for r in section["rows"]:
            lines.append(
                f"| {r['model']} | {r['params']:,} | `{r['variant']}` | {r['step_ms']:.3f} | "
                f"{r['over_bare_pct']:+.1f}% |"
            )
    lines += [
        "",
        "## Snapshots",
        "",
        "Median milliseconds of taking and restoring a snapshot of the model and its AdamW "
        f"state ({doc['config']['snapshot_reps']} of each), and of writing the state as "
        "bytes and reading and restoring those (what a population's trials exchange "
        "through Redis, without the network).",
        "",
        "| model | where | MB | take ms | restore ms |",
        "|---|---|---:|---:|---:|",
    ]
    for r in doc["snapshot"]:
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['bytes'] / 1e6:.1f} | {r['take_ms']:.2f} | "
            f"{r['restore_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    from tuner.bench.accel import AccelConfig, run_accel

    cfg = AccelConfig.quick() if args.quick else AccelConfig()
    changes = {"models": args.models, "reps": args.reps, "steps": args.steps}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    doc = run_accel(cfg, lambda line: print(line, flush=True))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path} ({doc['bench_wall_s']} s on {doc['device']})")
    for section in doc["step_overhead"]:
        for r in section["rows"]:
            print(
                f"  {r['model']:<7} {r['variant']:<15} {r['step_ms']:9.3f} ms/step  "
                f"{r['over_bare_pct']:+6.1f}% vs bare"
            )
    for r in doc["snapshot"]:
        print(
            f"  {r['model']:<7} {r['kind']:<38} {r['bytes'] / 1e6:8.1f} MB  take "
            f"{r['take_ms']:8.2f} ms  restore {r['restore_ms']:8.2f} ms"
        )
    if args.docs:
        command = f"python -m tuner.bench.accel_cli --page {shlex.quote(str(path))}"
        Path(args.docs).write_text(page(doc, command))
        print(f"wrote {args.docs}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``accel`` under ``tautune bench``."""
    p = subparsers.add_parser(
        "accel",
        help="what tautune costs a training step on a GPU, and what its snapshots cost",
        description=(
            "On the first CUDA device (the CPU where there is none): time a byte "
            "transformer's training steps without tautune, with loss.item() each step, and "
            "with the tautune agent and scheduler reporting the loss as a float or as a "
            "tensor, in alternating blocks; time snapshots beside the tensors, in host "
            "memory and as bytes. Starts a private redis-server; no Ray."
        ),
    )
    p.add_argument("--json", metavar="PATH", required=True, help="JSON output file")
    p.add_argument("--quick", action="store_true", help="a tiny model, 2 short blocks (smoke)")
    p.add_argument(
        "--models", type=_names, help="comma-separated: small, base, medium, large, tiny"
    )
    p.add_argument("--reps", type=int, help="rounds of one block of every variant (default 16)")
    p.add_argument("--steps", type=int, help="steps per timed block (default 40)")
    p.add_argument("--docs", metavar="MD", help="also write this markdown page")
    p.set_defaults(func=_run, bench_task="accel")


def main(argv: list[str] | None = None) -> int:
    """``python -m tuner.bench.accel_cli [ARGS]``: the same as ``tautune bench accel``;
    ``--page JSON`` prints the markdown page of a document already written."""
    from tuner.errors import TautuneError

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--page"] and len(args) == 2:
        print(
            page(
                json.loads(Path(args[1]).read_text()),
                f"python -m tuner.bench.accel_cli --page {shlex.quote(args[1])}",
            ),
            end="",
        )
        return 0
    return run_subcommand("tuner.bench.accel_cli", "accel", add_parser, args, TautuneError)


if __name__ == "__main__":
    sys.exit(main())
