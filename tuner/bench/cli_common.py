"""What the benchmarks' command lines share: comma-separated ints, and running one
``tautune bench`` subcommand as ``python -m tuner.bench.<name>_cli``.

Light at import, as the parsers are: ``tautune --help`` builds them without torch or Ray.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


def comma_ints(text: str) -> tuple[int, ...]:
    """An argparse ``type``: ``"0,1,2"`` as ``(0, 1, 2)``; empty items are skipped."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def run_subcommand(
    module: str,
    command: str,
    add_parser: Callable[[Any], None],
    argv: Sequence[str] | None,
    errors: type[Exception],
) -> int:
    """``python -m <module> ARGS`` as ``tautune bench <command> ARGS``.

    Args:
        module: The module run, named in the usage line.
        command: The subcommand ``add_parser`` registers.
        add_parser: Registers ``command`` (with ``func``) under the subparsers it is given.
        argv: The arguments after the module (default ``sys.argv[1:]``).
        errors: What to print as ``tautune: error: ...`` and exit 1 on, not raise.

    Returns:
        The exit status ``func`` returned, or 1 after one of ``errors``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    add_parser(parser.add_subparsers(dest="bench_task", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except errors as e:
        print(f"tautune: error: {e}", file=sys.stderr)
        return 1
