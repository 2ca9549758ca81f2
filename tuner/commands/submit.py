"""``tautune submit`` and ``tautune stop``: tuned jobs on a Ray cluster via the Jobs API."""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from trials.keys import check_job_name
from trials.store import Store
from tuner.errors import ConfigError

_OVERRIDES = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def _client(address: str) -> Any:
    """A Jobs API client for ``address``. Ray lets ``$RAY_ADDRESS`` (and
    ``$RAY_API_SERVER_ADDRESS``) override the address a client is given, so an explicit
    ``--address`` went to that cluster instead; they are set aside while it connects."""
    from ray.job_submission import JobSubmissionClient

    saved = {k: os.environ.pop(k) for k in _OVERRIDES if k in os.environ}
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"cannot reach the Ray Jobs API at {address} ({e}); pass the dashboard address, "
            "e.g. --address http://HEAD:8265"
        ) from None
    finally:
        os.environ.update(saved)


def submit(
    address: str,
    command: Sequence[str],
    *,
    redis_url: str,
    spec: dict[str, Any] | None,
    job: str | None = None,
    working_dir: str | None = None,
    follow: bool = False,
    population: int | None = None,
    console: Console | None = None,
) -> int:
    """Submit ``command`` as a Ray job tuned by a head; prints the submission id. With
    ``population`` the command runs that many times at once, one trial each
    (``TAUTUNE_TRIAL``), under one population head (:mod:`tuner.launch`)."""
    console = console or Console()
    if not command:
        raise ConfigError("nothing to run: put the command after --, e.g. -- python train.py")
    if population is not None:
        check_population(spec, population)
    job = check_job_name(job or f"job-{uuid.uuid4().hex[:8]}")
    job_store = Store.connect(redis_url).job(job)  # fail here, not on the cluster
    launch = ["python", "-m", "tuner.launch", "--job", job]
    if spec is not None:
        launch += ["--lr", json.dumps(spec)]
    if population is not None:
        launch += ["--population", str(population)]
    launch += ["--", *command]
    runtime_env: dict[str, Any] = {
        "env_vars": {"TAUTUNE_JOB": job, "TAUTUNE_REDIS_URL": redis_url},
    }
    if working_dir is not None:
        runtime_env["working_dir"] = working_dir
    client = _client(address)
    submission_id = f"tautune-{job}-{uuid.uuid4().hex[:6]}"
    _submit_retrying(
        client,
        console,
        entrypoint=shlex.join(launch),
        submission_id=submission_id,
        runtime_env=runtime_env,
        metadata={"tautune_job": job},
    )
    job_store.set_meta(submission_id=submission_id, address=address, command=list(command))
    trials = f" ({population} trials)" if population else ""
    console.print(f"submitted job [bold]{job}[/]{trials} as Ray submission {submission_id}")
    print(submission_id, flush=True)
    if not follow:
        return 0
    shown = job_store.for_trial(0) if population else job_store  # trial 0 stands for all
    return follow_job(client, submission_id, shown, console)


def check_population(spec: dict[str, Any] | None, trials: int) -> None:
    """Refuse a population without an LR spec, or with one its controller rejects."""
    from tuner.specs import build_population_controller

    if spec is None:
        raise ConfigError("a population tunes the LR: give --lr, e.g. --lr method=explore")
    build_population_controller(spec, trials)


AGENT_WAIT_S = 90.0
"""How long a submission waits for the cluster's job agent to come up."""


def _submit_retrying(client: Any, console: Console, **kwargs: Any) -> None:
    """``client.submit_job(**kwargs)``, retried while a freshly started cluster has no job
    agent yet (the Jobs API answers 500 "No available agent" until one registers)."""
    deadline = time.monotonic() + AGENT_WAIT_S
    delay = 1.0
    while True:
        try:
            client.submit_job(**kwargs)
            return
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            console.print(
                f"[dim]tautune: the cluster's job agent is not up yet; retrying in {delay:.0f}s[/]"
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def follow_job(client: Any, submission_id: str, job_store: Any, console: Console) -> int:
    """Tail the job's logs with a status line (stage, LR, step) until it ends."""
    printed = 0
    last_line = ""
    while True:
        status = client.get_job_status(submission_id)
        logs = client.get_job_logs(submission_id)
        if len(logs) > printed:
            console.out(logs[printed:], end="")
            printed = len(logs)
        stages = job_store.stage_decisions()
        progress = job_store.progress()
        step = max((s for _, s in progress.values()), default=-1)
        current = next((d for d in reversed(stages) if d.from_step <= step), None)
        line = f"[{status}] step {step}" + (
            f", stage {current.stage} {current.kind.value}, lr {current.lr_at(step):.3g}"
            if current is not None and current.lr is not None
            else ", base schedule"
        )
        if line != last_line:
            console.print(f"[dim]tautune: {line}[/]")
            last_line = line
        if status.is_terminal():
            return 0 if str(status) == "SUCCEEDED" else 1
        time.sleep(1.0)


def stop(
    job: str, redis_url: str, *, address: str | None = None, console: Console | None = None
) -> int:
    """Stop a submitted job (its head checkpoints and stops with it)."""
    console = console or Console()
    job_store = Store.connect(redis_url).job(job).require()
    meta = job_store.meta()
    submission_id = meta.get("submission_id")
    if submission_id is None:
        raise ConfigError(
            f"job {job!r} was not submitted with `tautune submit`; use `tautune detach`"
        )
    client = _client(address or meta["address"])
    stopped = client.stop_job(submission_id)
    console.print(f"{'stopping' if stopped else 'already finished'}: {job} ({submission_id})")
    return 0
