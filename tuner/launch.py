"""The entrypoint ``tautune submit`` gives a Ray job: start the head, run the command.

    python -m tuner.launch --job J [--lr SPEC_JSON] [--population P] -- python train.py ...

Runs on the cluster as the job's driver: connects to Ray (``RAY_ADDRESS``, set by the Jobs
API), starts the job's head actor (when an LR spec is given), runs the user's command with
``TAUTUNE_JOB`` and ``TAUTUNE_REDIS_URL`` in its environment, and stops the head (after a
last checkpoint) when the command ends, fails or is stopped. Exits with the command's code.

With ``--population P`` the head decides for P trials (:mod:`tuner.population_head`) and
the command runs P times at once, trial ``i`` with ``TAUTUNE_TRIAL=i`` and its output lines
behind ``[trial i]``; the exit code is the first failing trial's, else 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from trials.store import Store, resolve_url

TRIAL_ENV = "TAUTUNE_TRIAL"  # as workers.agent reads it (not imported: it loads torch)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.launch", description=__doc__)
    parser.add_argument("--job", required=True)
    parser.add_argument("--lr", default=None, help="controller spec as JSON")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--population", type=int, default=None, help="trials (>= 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    if args.population is not None and (args.population < 2 or not args.lr):
        parser.error("--population needs at least 2 trials and an --lr spec")
    url = resolve_url(args.redis)
    if url is None:
        parser.error("no Redis URL: pass --redis or set TAUTUNE_REDIS_URL")
    env = {**os.environ, "TAUTUNE_JOB": args.job, "TAUTUNE_REDIS_URL": url}
    spec = json.loads(args.lr) if args.lr else None
    cwd = os.getcwd()  # the job's working dir; ray.init() may change the process's

    import ray

    from tuner.head import start_head, stop_head

    if not ray.is_initialized():
        ray.init(log_to_driver=False, logging_level=logging.ERROR)
    if spec is not None:
        start_head(args.job, url, spec, trials=args.population)
        began = time.monotonic()
        up = Store.connect(url).job(args.job).wait_for_head(HEAD_WAIT_S)
        waited = time.monotonic() - began
        print(
            f"tautune: head for job {args.job} started ({waited:.0f} s)"
            if up
            else f"tautune: head for job {args.job} not up after {waited:.0f} s; starting anyway",
            flush=True,
        )
    trials = [None] if args.population is None else list(range(args.population))
    children = [_start(command, env, cwd, t) for t in trials]
    pumps = [
        _prefix_lines(child, f"[trial {t}] ")
        for child, t in zip(children, trials, strict=True)
        if t is not None
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
        for pump in pumps:
            pump.join(timeout=5.0)
        for t, c in zip(trials, codes, strict=True):
            if c != 0 and t is not None:
                print(f"tautune: trial {t} exited with code {c}", flush=True)
        code = next((c for c in codes if c != 0), 0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if spec is not None:
            final = stop_head(args.job)
            if final is not None:
                print(
                    f"tautune: head stopped after {final['decisions_committed']} decisions "
                    f"(this run of the head)",
                    flush=True,
                )
    return code


def _start(
    command: Sequence[str], env: dict[str, str], cwd: str | None, trial: int | None
) -> subprocess.Popen[Any]:
    """The command as it is, or as trial ``trial`` of a population, whose output comes
    through a pipe (line-buffered, for :func:`_prefix_lines`)."""
    if trial is None:
        return subprocess.Popen(command, env=env, cwd=cwd)
    return subprocess.Popen(
        command,
        env={**env, TRIAL_ENV: str(trial), "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )


def _prefix_lines(child: subprocess.Popen[Any], prefix: str) -> threading.Thread:
    """Copy ``child``'s output here, each line behind ``prefix``: the trials of a
    population print at once, and their lines would be told apart by nothing."""

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    thread = threading.Thread(target=pump, name=f"tautune-{prefix.strip()}", daemon=True)
    thread.start()
    return thread


HEAD_WAIT_S = 120.0
"""How long the command waits for the head to take its lease (it loads torch and botorch
as it starts): a stage it would miss the start of is a stage lost. Then it starts anyway,
on its base schedule until the head comes."""


if __name__ == "__main__":
    sys.exit(main())
