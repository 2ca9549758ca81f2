"""The entrypoint ``tautune submit`` gives a Ray job: start the head, run the command.

    python -m tuner.launch --job J [--lr SPEC_JSON] -- python train.py ...

Runs on the cluster as the job's driver: connects to Ray (``RAY_ADDRESS``, set by the Jobs
API), starts the job's head actor (when an LR spec is given), runs the user's command with
``TAUTUNE_JOB`` and ``TAUTUNE_REDIS_URL`` in its environment, and stops the head (after a
last checkpoint) when the command ends, fails or is stopped. Exits with the command's code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from trials.store import resolve_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.launch", description=__doc__)
    parser.add_argument("--job", required=True)
    parser.add_argument("--lr", default=None, help="controller spec as JSON")
    parser.add_argument("--redis", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    url = resolve_url(args.redis)
    if url is None:
        parser.error("no Redis URL: pass --redis or set TAUTUNE_REDIS_URL")
    env = {**os.environ, "TAUTUNE_JOB": args.job, "TAUTUNE_REDIS_URL": url}
    spec = json.loads(args.lr) if args.lr else None
    cwd = os.getcwd()  # the job's working dir; ray.init() may change the process's

    import ray

    from tuner.head import start_head, stop_head

    ray.init(log_to_driver=False, logging_level=logging.ERROR)
    if spec is not None:
        start_head(args.job, url, spec)
        print(f"tautune: head for job {args.job} started", flush=True)
    child = subprocess.Popen(command, env=env, cwd=cwd)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    try:
        code = child.wait()
    finally:
        if spec is not None:
            final = stop_head(args.job)
            if final is not None:
                print(
                    f"tautune: head stopped after {final['decisions_committed']} decisions "
                    f"(this run of the head)",
                    flush=True,
                )
    return code


if __name__ == "__main__":
    sys.exit(main())
