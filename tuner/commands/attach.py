"""``tautune attach`` and ``tautune detach``: controllers for a job that is already running."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from rich.console import Console

from trials.store import Store
from tuner.commands.submit import check_population
from tuner.errors import ConfigError, StoreUnavailableError
from tuner.head import HeadLoop, find_head, start_head
from tuner.population_head import PopulationLoop
from tuner.records import Decision
from tuner.specs import build_controller, build_population_controller


def attach(
    job: str,
    redis_url: str,
    spec: dict[str, object],
    *,
    ray_address: str | None = None,
    population: int | None = None,
    console: Console | None = None,
) -> int:
    """Start the job's head. With a Ray address it runs there as a detached actor and this
    returns at once; without, it runs here in the foreground until Ctrl-C, SIGTERM or
    ``tautune detach``. ``population``: the job's trials, for one head deciding for all."""
    console = console or Console()
    if population is not None:
        check_population(spec, population)
    job_store = Store.connect(redis_url).job(job)
    if job_store.head_alive():
        raise ConfigError(f"job {job!r} already has a live head; `tautune detach {job}` first")
    if ray_address is not None:
        import ray

        ray.init(address=ray_address, log_to_driver=False, logging_level=logging.ERROR)
        start_head(job, redis_url, spec, trials=population)
        console.print(f"attached: head actor for job [bold]{job}[/] runs on the Ray cluster")
        return 0
    loop: HeadLoop | PopulationLoop
    if population is None:
        loop = HeadLoop(job_store, build_controller(spec))
    else:
        loop = PopulationLoop(job_store, build_population_controller(spec, population), population)
    stores = [job_store] if population is None else loop.trials  # type: ignore[union-attr]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        loop.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = [len(s.decisions()) for s in stores]  # before the head writes any
    known = job_store.exists()
    thread = threading.Thread(target=loop.run, name="tautune-head", daemon=True)
    thread.start()
    console.print(f"attached to job [bold]{job}[/]; the head runs here (Ctrl-C to stop)")
    if not known:  # a head may come first; a mistyped name looks the same
        console.print(
            f"job {job!r} has no workers in this Redis yet: the head decides once they report "
            f"(TAUTUNE_JOB={job}; `tautune jobs` lists the jobs it holds)"
        )
    committed = 0
    announced = False
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
            if loop.restored and not announced:
                summary = loop.controller.summary()
                console.print(
                    "resumed stored controller state: "
                    + ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in summary.items()
                    )
                )
                announced = True
            if loop.committed == committed:
                continue  # nothing new written: no need to read the decisions again
            committed = loop.committed
            for i, store in enumerate(stores):
                try:
                    decisions = store.decisions()
                except StoreUnavailableError:  # the head says so and retries; so do we
                    committed = -1
                    break
                for d in decisions[seen[i] :]:
                    lr = f"{d.lr:.3g}" if d.lr is not None else "base"
                    end = f"{d.until_step}" if d.until_step is not None else "on"
                    who = f"trial {i} " if population is not None else ""
                    mix = " ".join(f"{a}={w:.2f}" for a, w in (d.mixture or {}).items())
                    console.print(
                        f"  {who}v{d.version} stage {d.stage} {d.kind.value} "
                        f"steps {d.from_step}-{end}: lr {lr}" + (f", mixture {mix}" if mix else "")
                    )
                seen[i] = len(decisions)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if loop.error:
        console.print(f"[red]head stopped: {loop.error}[/]")
        return 1
    how = "detached" if loop.detached else "stopped"
    console.print(f"{how}: {loop.committed} decisions written; state stored for the next attach")
    return 0


def detach(
    job: str,
    redis_url: str,
    *,
    ray_address: str | None = None,
    timeout_s: float = 30.0,
    console: Console | None = None,
) -> int:
    """Ask the job's head to leave the last decision in force and stop; wait for it."""
    console = console or Console()
    job_store = Store.connect(redis_url).job(job).require()
    if not job_store.head_alive():
        console.print(f"job {job!r} has no live head; nothing to detach")
        return 0
    job_store.request_detach()
    deadline = time.monotonic() + timeout_s
    while job_store.head_alive():
        if time.monotonic() > deadline:
            console.print(f"[red]the head of {job!r} did not stop within {timeout_s:.0f}s[/]")
            return 1
        time.sleep(0.1)
    if ray_address is not None:
        import ray

        ray.init(address=ray_address, log_to_driver=False, logging_level=logging.ERROR)
        actor = find_head(job)
        if actor is not None:
            ray.kill(actor, no_restart=True)
    stages = job_store.stage_decisions()
    last = stages[-1] if stages else None
    if last is not None:
        last_step = max((step for _, step in job_store.progress().values()), default=-1)
        console.print(f"detached from {job!r}: {in_force(last, last_step)}")
    else:
        console.print(
            f"detached from {job!r}: no decision was written; workers keep their base schedule"
        )
    return 0


def in_force(decision: Decision, last_step: int) -> str:
    """What ``decision``, the last one written, leaves the workers doing, in words;
    ``last_step`` is the last step reported (a restore already done is not news)."""
    start = f"from step {decision.from_step}"
    if decision.lr is None:
        what = f"{start} on, workers keep their base schedule"
    elif decision.lr_end is not None and decision.until_step is not None:
        what = (
            f"{start}, lr {decision.lr:.3g} decays linearly to {decision.lr_end:.3g} at step "
            f"{decision.until_step}"
        )
    else:
        what = f"{start} on, lr {decision.lr:.3g} stays in force"
    if decision.restore_from is not None and decision.from_step > last_step:
        what += f", after every rank goes back to its snapshot of step {decision.restore_from}"
    if decision.info.get("detached"):
        what += " (the exploration stage under way was cut short)"
    return what
