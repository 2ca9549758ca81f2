"""Attach to a training process that is already running, detach, re-attach (CLI, real Redis)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import JobStore, Store
from tuner.records import DecisionKind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def _last_step(job: JobStore) -> int:
    return max((s for _, s in job.progress().values()), default=-1)


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_attach_detach_reattach_on_a_running_job(redis_server: EmbeddedRedis, store: Store) -> None:
    job_name = "running"
    env = {**os.environ, "TAUTUNE_JOB": job_name, "TAUTUNE_REDIS_URL": redis_server.url}
    steps, base_lr = 2400, 1e-3
    train = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "train.py"),
            "--steps",
            str(steps),
            "--sleep",
            "0.01",
            "--hidden",
            "64",
            "--no-restore",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: job_name in store.jobs(), 60, "the training process to report")
        job = store.job(job_name)
        _wait(lambda: _last_step(job) >= 200, 60, "some stages on the base schedule")
        lr = "init_lr=1e-3,tau=50,total_steps=2400"

        first = _cli("attach", job_name, "--lr", lr, env=env)
        attached_at = _last_step(job)
        _wait(lambda: job.version() >= 4, 60, "four decisions from the first attach")
        assert _cli("detach", job_name, env=env).wait(timeout=60) == 0
        out1, _ = first.communicate(timeout=30)
        assert first.returncode == 0 and "detached" in out1, out1
        assert "  v1 stage " in out1, out1  # every decision it wrote, the first one too
        stored1 = job.load_state("lr")
        # the default method, auto, picked stagewise: with --no-restore, train.py cannot restore
        assert stored1 is not None and stored1["choice"] == "stagewise"
        state1 = stored1["inner"]
        hold = job.stage_decisions()[-1]
        assert hold.kind is DecisionKind.HOLD and hold.until_step is None
        detached_version = job.version()

        _wait(lambda: _last_step(job) >= hold.from_step + 100, 60, "training under the hold")
        second = _cli("attach", job_name, "--lr", lr, env=env)
        _wait(lambda: job.version() >= detached_version + 3, 60, "decisions after re-attach")
        assert _cli("detach", job_name, env=env).wait(timeout=60) == 0
        out2, _ = second.communicate(timeout=30)
        assert second.returncode == 0 and "resumed stored controller state" in out2, out2
        assert train.wait(timeout=120) == 0
    finally:
        train.kill()

    reports = {r.step: r.metrics for r in job.all_reports()}
    assert len(reports) == steps
    stages = job.stage_decisions()
    first_decision = stages[0]
    # Nothing attached: the base LR. The first decision starts after the attach, and from
    # that boundary on every step ran exactly the LR of the decision covering it.
    assert first_decision.from_step > attached_at
    for step, metrics in reports.items():
        covering = [d for d in stages if d.from_step <= step]
        expected = covering[-1].lr_at(step) if covering else base_lr
        assert math.isclose(metrics["lr"], expected, rel_tol=1e-9), (step, metrics, expected)
    assert all(reports[s]["lr"] == base_lr for s in range(first_decision.from_step))
    assert reports[first_decision.from_step]["lr"] != base_lr or first_decision.lr == base_lr
    # Detach left the last LR in force: the hold continues the last stage's final LR.
    before_hold = [d for d in stages if d.from_step < hold.from_step][-1]
    assert before_hold.until_step == hold.from_step
    assert hold.lr == before_hold.lr_at(hold.from_step - 1)
    # Re-attach resumed the stored controller: same center, stage numbers continue, and the
    # reports it had counted were not counted again.
    after = [d for d in stages if d.from_step > hold.from_step]
    assert after, "the re-attached head should have written decisions"
    assert after[0].stage == hold.stage + 1
    stored2 = job.load_state("lr")
    assert stored2 is not None and stored2["choice"] == "stagewise"
    state2 = stored2["inner"]
    assert state1["reports_seen"] < state2["reports_seen"] <= steps
    # What the first attach learned is still there: its scored stages start the history.
    window = state2["config"]["window"]
    assert state1["history"], "the first attach should have scored stages"
    if len(state2["history"]) < window:
        assert state2["history"][: len(state1["history"])] == state1["history"]
    assert [d.version for d in job.decisions()] == list(range(1, job.version() + 1))


def test_detach_says_what_it_left_in_force() -> None:
    from tuner.commands.attach import in_force
    from tuner.records import Decision

    hold = Decision(stage=3, kind=DecisionKind.HOLD, from_step=40, lr=2e-3)
    assert in_force(hold, 30) == "from step 40 on, lr 0.002 stays in force"
    base = Decision(
        stage=3,
        kind=DecisionKind.HOLD,
        from_step=40,
        restore_from=10,
        info={"final": True, "detached": True},
    )
    assert in_force(base, 39) == (
        "from step 40 on, workers keep their base schedule, after every rank goes back to "
        "its snapshot of step 10 (the exploration stage under way was cut short)"
    )
    decay = Decision(
        stage=3,
        kind=DecisionKind.COMMIT,
        from_step=40,
        until_step=900,
        lr=0.01,
        lr_end=0.0,
        restore_from=25,
    )
    # a restore the workers made already is not news
    assert in_force(decay, 41) == "from step 40, lr 0.01 decays linearly to 0 at step 900"
