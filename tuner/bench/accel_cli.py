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


def page(docs: list[dict[str, Any]], command: str) -> str:
    """The markdown page of documents :func:`~tuner.bench.accel.run_accel` wrote (one run
    each: their tables are kept apart, since each ran on a machine of its own)."""
    lines = [
        "# tautune on an accelerator: step overhead and snapshots",
        "",
        f"Generated from the JSON by `{command}`; measure again with "
        "`tautune bench accel --json PATH --docs PATH` on a machine with a CUDA GPU.",
        "",
        "**Step overhead**: median milliseconds per training step of the byte transformer "
        "(`workers/tasks/bytegpt.py`, bf16 autocast, AdamW), over blocks of each variant "
        "that alternate, each block timed from a synchronized device to a synchronized "
        "device; the last column is against `bare` of the same model in the same run. "
        "`bare`: no tautune, the loss never read. `bare+item`: `loss.item()` every step. "
        "`tautune+item`: `agent.report(step, loss=loss.item())` and `sched.step()`. "
        "`tautune+tensor`: `agent.report(step, loss=loss)` and `sched.step()` (the agent's "
        "thread reads the tensor). The agent runs against a private redis-server, with "
        "decisions covering every step and a live head lease.",
        "",
        "**Snapshots**: median milliseconds of taking and restoring a snapshot of the model "
        "and its AdamW state, beside the tensors and in host memory, and of writing the "
        "state as bytes and reading and restoring those (what a population's trials "
        "exchange), and of publishing those bytes to a private redis-server on the same "
        "machine and fetching them back (`take` and `restore` columns).",
    ]
    for n, doc in enumerate(docs, 1):
        cfg = doc["config"]
        lines += [
            "",
            f"## Run {n}: {', '.join(cfg['models'])} on {doc['device']}",
            "",
            f"torch {doc['torch']}; "
            + (
                f"{cfg['reps']} blocks of {cfg['steps']} steps of each variant; "
                if doc["step_overhead"]
                else ""
            )
            + f"{doc['bench_wall_s']} s.",
        ]
        if doc["step_overhead"]:
            lines += [
                "",
                "| model | parameters | variant | ms / step | vs bare | fastest-slowest block |",
                "|---|---:|---|---:|---:|---|",
            ]
        for section in doc["step_overhead"]:
            for r in section["rows"]:
                lo, hi = min(r["step_ms_reps"]), max(r["step_ms_reps"])
                lines.append(
                    f"| {r['model']} | {r['params']:,} | `{r['variant']}` | "
                    f"{r['step_ms']:.2f} | {r['over_bare_pct']:+.1f}% | {lo:.2f}-{hi:.2f} |"
                )
        if doc["snapshot"]:
            lines += [
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
    changes = {
        "models": args.models,
        "reps": args.reps,
        "steps": args.steps,
        "sections": args.sections,
    }
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
        Path(args.docs).write_text(page([doc], command))
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
    p.add_argument("--sections", type=_names, help="overhead, snapshot (default both)")
    p.add_argument("--docs", metavar="MD", help="also write this markdown page")
    p.set_defaults(func=_run, bench_task="accel")


def main(argv: list[str] | None = None) -> int:
    """``python -m tuner.bench.accel_cli [ARGS]``: the same as ``tautune bench accel``;
    ``--page JSON [JSON ...]`` prints the markdown page of documents already written."""
    from tuner.errors import TautuneError

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--page"] and len(args) > 1:
        command = "python -m tuner.bench.accel_cli --page " + " ".join(map(shlex.quote, args[1:]))
        print(page([json.loads(Path(a).read_text()) for a in args[1:]], command), end="")
        return 0
    return run_subcommand("tuner.bench.accel_cli", "accel", add_parser, args, TautuneError)


if __name__ == "__main__":
    sys.exit(main())
