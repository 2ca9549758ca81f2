"""The ``tautune`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tuner.errors import TautuneError


def _demo(args: argparse.Namespace) -> int:
    from tuner.demo import run_demo

    run_demo(
        steps=args.steps,
        tau=args.tau,
        lr=args.lr,
        seed=args.seed,
        out_dir=args.out,
        redis_url=args.redis,
        ray_address=args.address,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tautune",
        description=(
            "Tune a training run while it runs: every tau optimizer steps a controller on "
            "the Ray head decides the learning rate for the next stage, the training "
            "workers apply it, and Redis holds the shared state."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="tune a small language model on this machine next to a constant-LR run",
        description=(
            "Start an embedded Redis and a local Ray, train a byte-level language model on the "
            "Python standard library's source with tautune deciding the LR every tau steps, "
            "train it again at the constant starting LR, print both results and write a PNG "
            "plot. Needs no network and no GPU; about a minute on 2 CPU cores."
        ),
    )
    demo.add_argument(
        "--steps", type=int, default=2000, help="optimizer steps per run (default 2000)"
    )
    demo.add_argument(
        "--tau", type=int, default=100, help="stage length in optimizer steps (default 100)"
    )
    demo.add_argument(
        "--lr", type=float, default=1e-3, help="starting and constant-run LR (default 1e-3)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of model init and data order")
    demo.add_argument(
        "--out", default="tautune-out", help="directory for demo.png and summary.json"
    )
    demo.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="Redis URL (default: $TAUTUNE_REDIS_URL, else an embedded server)",
    )
    demo.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except TautuneError as e:
        print(f"tautune: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tautune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
