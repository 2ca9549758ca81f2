"""The ``tautune`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from trials.store import URL_ENV, resolve_url
from tuner.errors import ConfigError, TautuneError

MIXTURE_HELP = (
    "mixture controller spec as name=value pairs, e.g. method=ducb,arms=code/prose/math,tau=100 "
    "(methods ducb, dts, sec, exp3, exp3s, odm; also reward, floor, total_steps) or JSON; "
    "give --lr the same tau to decide both on one grid"
)
LR_HELP = (
    "controller spec as name=value pairs, e.g. init_lr=1e-3,total_steps=5000 "
    "(method=auto, the default: explore when the workers can restore a snapshot, else "
    "stagewise; or method=explore, stagewise, autolrs; also lr_min, lr_max, warmup_steps, "
    "anneal_fraction, final_lr, metric (the reported metric to minimize, default loss), "
    "explore_budget (explore's share of total_steps spent on steps it throws away, default "
    "0.1; it sets the probe lengths), tau (stage length of stagewise and autolrs), tie_t, "
    "prune_t; an unknown name lists every setting) or JSON"
)
JOB_HELP = "job name (`tautune jobs` lists the jobs a Redis holds)"


def _redis(args: argparse.Namespace) -> str:
    url = resolve_url(args.redis)
    if url is None:
        raise ConfigError(f"no Redis URL: pass --redis URL or set ${URL_ENV}")
    return url


def _lr(args: argparse.Namespace) -> dict[str, object] | None:
    """The head's controller spec from --lr and --mixture (both: a composite)."""
    from tuner.specs import combine_specs, parse_lr_spec, parse_mixture_spec

    if getattr(args, "population", None) is not None and getattr(args, "mixture", None):
        raise ConfigError("a population tunes the LR only: drop --mixture")
    lr = parse_lr_spec(args.lr) if args.lr else None
    mixture = parse_mixture_spec(args.mixture) if getattr(args, "mixture", None) else None
    return combine_specs(lr, mixture)


def _demo(args: argparse.Namespace) -> int:
    if args.mixture:
        from tuner.demo_mixture import run_mixture_demo

        run_mixture_demo(
            steps=args.steps if args.steps != 2000 else 1500,
            tau=args.tau,
            lr=args.lr if args.lr != 3e-4 else 1e-3,
            seed=args.seed,
            out_dir=args.out,
            redis_url=args.redis,
            ray_address=args.address,
        )
        return 0
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


def _attach(args: argparse.Namespace) -> int:
    from tuner.commands.attach import attach

    spec = _lr(args)
    if spec is None:
        raise ConfigError(
            "attach needs --lr and/or --mixture, e.g. --lr init_lr=1e-3,tau=100,total_steps=5000"
        )
    return attach(
        args.job, _redis(args), spec, ray_address=args.address, population=args.population
    )


def _detach(args: argparse.Namespace) -> int:
    from tuner.commands.attach import detach

    return detach(args.job, _redis(args), ray_address=args.address, timeout_s=args.timeout)


def _status(args: argparse.Namespace) -> int:
    from tuner.commands.status import status

    return status(args.job, _redis(args), as_json=args.json)


def _jobs(args: argparse.Namespace) -> int:
    from tuner.commands.status import jobs

    return jobs(_redis(args), as_json=args.json)


def _submit(args: argparse.Namespace) -> int:
    from tuner.commands.submit import submit

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.address:
        raise ConfigError(
            "submit needs the Jobs API address: --address http://HEAD:8265 or $TAUTUNE_DASHBOARD"
        )
    return submit(
        args.address,
        command,
        redis_url=_redis(args),
        spec=_lr(args),
        job=args.job,
        working_dir=args.working_dir,
        follow=args.follow,
        population=args.population,
    )


def _stop(args: argparse.Namespace) -> int:
    from tuner.commands.submit import stop

    return stop(args.job, _redis(args), address=args.address)


def _add_population(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--population",
        type=int,
        default=None,
        metavar="P",
        help=(
            f"{what}tuned by one head that compares their LRs (with --lr method=explore: "
            "one candidate per trial, then every trial goes on from the winner's state); "
            "needs --lr, no --mixture"
        ),
    )


def _add_redis(p: argparse.ArgumentParser, default_help: str = f"default: ${URL_ENV}") -> None:
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help=f"Redis URL: redis://, rediss:// (TLS) or unix:// ({default_help})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tautune",
        description=(
            "Tune a training run while it runs: every tau optimizer steps a controller on "
            "the Ray head decides the learning rate for the next stage, the training "
            "workers apply it, and Redis holds the shared state."
        ),
        epilog="`tautune COMMAND --help` explains each command.",
    )
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")

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
        "--lr",
        type=float,
        default=3e-4,
        help="starting LR of the tuned run and LR of the constant run (default 3e-4, a common "
        "conservative AdamW choice; 1e-3 is near the best constant LR for this model)",
    )
    demo.add_argument(
        "--mixture",
        action="store_true",
        help="tune the LR and the data mixture over five domains together (default steps 1500, "
        "lr 1e-3), next to a uniform mixture at constant LR; writes demo-mixture.png",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of model init and data order")
    demo.add_argument(
        "--out", default="tautune-out", help="directory for demo.png and summary.json"
    )
    _add_redis(demo, f"default: ${URL_ENV}, else an embedded server")
    demo.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    demo.set_defaults(func=_demo)

    submit = sub.add_parser(
        "submit",
        help="submit a training command to a Ray cluster, tuned by a head",
        description=(
            "Submit COMMAND through Ray's Jobs API with TAUTUNE_JOB and TAUTUNE_REDIS_URL in its "
            "environment; the job's driver starts the head (with --lr) and stops it when "
            "COMMAND ends. Prints the submission id. The Redis must be reachable from every node."
        ),
    )
    submit.add_argument(
        "--address",
        default=os.environ.get("TAUTUNE_DASHBOARD"),
        help="Ray dashboard / Jobs API, e.g. http://HEAD:8265 (default: $TAUTUNE_DASHBOARD)",
    )
    submit.add_argument(
        "--working-dir", default=None, help="directory uploaded as the job's working dir"
    )
    submit.add_argument("--job", default=None, help="job name (default: job-<random>)")
    submit.add_argument(
        "--lr", default=None, help=LR_HELP + "; without it the job trains on its base schedule"
    )
    submit.add_argument(
        "--follow", action="store_true", help="tail the logs with stage, step and LR until it ends"
    )
    _add_redis(submit)
    submit.add_argument("--mixture", default=None, help=MIXTURE_HELP)
    _add_population(submit, "run COMMAND P times at once, trial i with TAUTUNE_TRIAL=i, ")
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    submit.set_defaults(func=_submit)

    stop = sub.add_parser(
        "stop",
        help="stop a job started with `tautune submit`",
        description=(
            "Stop the Ray job `tautune submit` started for JOB; its head checkpoints the "
            "controller state and stops with it. A job tuned by `tautune attach` is left "
            "with `tautune detach` instead."
        ),
    )
    stop.add_argument("job", help=JOB_HELP)
    stop.add_argument(
        "--address", default=None, help="Jobs API address (default: the one it was submitted to)"
    )
    _add_redis(stop)
    stop.set_defaults(func=_stop)

    attach = sub.add_parser(
        "attach",
        help="start controllers for a job that is already running",
        description=(
            "Start the head of JOB; it takes over at the next stage boundary and resumes from "
            "the controller state stored by an earlier attach. With --address it runs as a "
            "detached actor on that Ray cluster and this command returns; without, it runs "
            "here until Ctrl-C or `tautune detach`."
        ),
    )
    attach.add_argument("job", help="job name, as the workers' TAUTUNE_JOB")
    attach.add_argument("--lr", default=None, help=LR_HELP)
    attach.add_argument("--mixture", default=None, help=MIXTURE_HELP)
    attach.add_argument(
        "--address", default=None, help="Ray cluster to run the head on (default: here)"
    )
    _add_redis(attach)
    _add_population(attach, "the job runs P trials (each with TAUTUNE_TRIAL set): ")
    attach.set_defaults(func=_attach)

    detach = sub.add_parser(
        "detach",
        help="stop a job's controllers, leaving the last decision in force",
        description=(
            "Ask JOB's head to stop and wait for it. The workers keep training: the last "
            "committed LR stays in force (an exploration stage under way is committed to its "
            "best candidate so far, or sent back to its snapshot), and the controller state "
            "stays in Redis for the next `tautune attach`. Prints what it left in force."
        ),
    )
    detach.add_argument("job", help=JOB_HELP)
    detach.add_argument("--address", default=None, help="Ray cluster whose head actor to remove")
    detach.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the head (default 30)"
    )
    _add_redis(detach)
    detach.set_defaults(func=_detach)

    status = sub.add_parser(
        "status",
        help="workers, stage, LR, decisions and last reports of a job",
        description=(
            "Show JOB's head (alive until its lease of a few seconds runs out), live workers, "
            "the stage and LR in force, the controller's summary and warnings, its newest "
            "decisions and each rank's last report (a population: each trial's)."
        ),
    )
    status.add_argument("job", help=JOB_HELP)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_redis(status)
    status.set_defaults(func=_status)

    jobs = sub.add_parser(
        "jobs",
        help="list the jobs a Redis holds",
        description="List the jobs a Redis holds: reports, decisions, head and live workers.",
    )
    jobs.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_redis(jobs)
    jobs.set_defaults(func=_jobs)

    bench = sub.add_parser(
        "bench", help="benchmark methods side by side on a real task and write JSON"
    )
    bench_tasks = bench.add_subparsers(dest="bench_task", metavar="TASK", required=True)
    from tuner.bench.accel_cli import add_parser as add_accel_benchmark
    from tuner.bench.control_plane_cli import add_parser as add_control_plane_benchmark
    from tuner.bench.lr_cli import add_parser as add_lr_benchmarks
    from tuner.bench.mixture_cli import add_parser as add_mixture_benchmarks
    from tuner.bench.peers_cli import add_parser as add_peers_benchmark
    from tuner.bench.population_cli import add_parser as add_population_benchmark

    add_lr_benchmarks(bench_tasks)
    add_mixture_benchmarks(bench_tasks)
    add_peers_benchmark(bench_tasks)
    add_population_benchmark(bench_tasks)
    add_control_plane_benchmark(bench_tasks)
    add_accel_benchmark(bench_tasks)
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
