"""A tuned job submitted through Ray's Jobs API to a real two-node Ray cluster.

The cluster (a head node and a worker node, one CPU each, plus a Redis with a password)
is started by ``deploy/local-cluster.sh`` and torn down after the module.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    directory = tempfile.mkdtemp(prefix="ttc-", dir="/tmp")
    env = {**os.environ, "PYTHON": sys.executable}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    try:
        up = subprocess.run(
            ["bash", str(SCRIPT), "up", directory],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        values = {}
        for line in Path(directory, "env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0]
        yield {**env, **values}
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", directory], env=env, timeout=120)
    assert _running_in(directory) == [], "processes left behind by local-cluster.sh down"


def _running_in(directory: str) -> list[str]:
    """Live processes whose command line names ``directory`` or that run in it."""
    home, left = os.path.realpath(directory), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited, not yet reaped
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if directory in cmd or os.path.realpath(f"/proc/{pid}/cwd") == home:
                left.append(f"{pid}: {cmd}")
        except OSError:
            continue
    return left


def _tautune(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submitted_job_with_two_workers_is_tuned(cluster: dict[str, str]) -> None:
    env = cluster
    steps = 240
    submitted = _tautune(
        "submit",
        "--address",
        env["TAUTUNE_DASHBOARD"],
        "--redis",
        env["TAUTUNE_REDIS_URL"],
        "--job",
        "submitted",
        "--working-dir",
        str(ROOT / "examples"),
        "--follow",
        "--lr",
        f"init_lr=1e-3,tau=40,total_steps={steps}",
        "--",
        "python",
        "tune_ddp.py",
        "--workers",
        "2",
        "--steps",
        str(steps),
        env=env,
        timeout=480,
    )
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    assert "tautune-submitted-" in submitted.stdout  # the submission id is printed
    assert "2 decisions" not in output and "decisions, validation loss" in output

    shown = _tautune("status", "submitted", "--redis", env["TAUTUNE_REDIS_URL"], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert len(status["decisions"]) >= 4
    assert status["reports"] == 2 * steps and set(status["last_reports"]) == {"0", "1"}
    assert status["controller"]["reports_seen"] == 2 * steps
    # the default LR method explores: tune_ddp.py hands its model to the scheduler
    assert status["controller"]["method"] == "auto: explore"
    table = _tautune("status", "submitted", "--redis", env["TAUTUNE_REDIS_URL"], env=env)
    assert table.returncode == 0 and "Decisions" in table.stdout and "explore" in table.stdout

    listed = _tautune("jobs", "--redis", env["TAUTUNE_REDIS_URL"], "--json", env=env)
    assert [j["job"] for j in json.loads(listed.stdout)] == ["submitted"]


def _job_status(env: dict[str, str], submission_id: str, wait_terminal: bool = False) -> str:
    """The Jobs API's status of a submission, asked from a fresh process (with the token)."""
    code = (
        "import sys, time\n"
        "from ray.job_submission import JobSubmissionClient\n"
        "c = JobSubmissionClient(sys.argv[1])\n"
        "deadline = time.monotonic() + 120\n"
        "s = c.get_job_status(sys.argv[2])\n"
        "while sys.argv[3] == '1' and not s.is_terminal() and time.monotonic() < deadline:\n"
        "    time.sleep(1)\n"
        "    s = c.get_job_status(sys.argv[2])\n"
        "print(s.value)\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            env["TAUTUNE_DASHBOARD"],
            submission_id,
            "1" if wait_terminal else "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _reports(env: dict[str, str], job: str) -> int:
    listed = _tautune("jobs", "--redis", env["TAUTUNE_REDIS_URL"], "--json", env=env)
    return next((j["reports"] for j in json.loads(listed.stdout) if j["job"] == job), 0)


def _status(env: dict[str, str], job: str) -> dict[str, Any]:
    shown = _tautune("status", job, "--redis", env["TAUTUNE_REDIS_URL"], "--json", env=env)
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_stop_ends_a_submitted_job_and_its_head(cluster: dict[str, str]) -> None:
    env = cluster
    submitted = _tautune(
        "submit",
        "--address",
        env["TAUTUNE_DASHBOARD"],
        "--redis",
        env["TAUTUNE_REDIS_URL"],
        "--job",
        "to-stop",
        "--working-dir",
        str(ROOT / "examples"),
        "--lr",
        "init_lr=1e-3,tau=40,total_steps=100000",
        "--",
        "python",
        "train.py",
        "--steps",
        "100000",
        "--hidden",
        "64",
        env=env,
    )
    assert submitted.returncode == 0, submitted.stderr
    submission_id = submitted.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 120
    while _reports(env, "to-stop") < 50:
        assert time.monotonic() < deadline, "the submitted job never reported"
        time.sleep(1)
    # The head starts beside the training (it loads botorch, seconds on 2 busy cores):
    # stop once it has decided something, so the stop is seen to end a working head.
    while not _status(env, "to-stop")["decisions"]:
        assert time.monotonic() < deadline, "the submitted job's head never decided"
        time.sleep(1)
    stopped = _tautune("stop", "to-stop", "--redis", env["TAUTUNE_REDIS_URL"], env=env)
    assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stdout + stopped.stderr
    assert _job_status(env, submission_id, wait_terminal=True) == "STOPPED"
    status = _status(env, "to-stop")
    assert 50 <= status["reports"] < 100000 and status["decisions"]


def test_a_submitted_population_explores_one_candidate_per_trial(cluster: dict[str, str]) -> None:
    env = cluster
    steps = 400
    submitted = _tautune(
        "submit",
        "--address",
        env["TAUTUNE_DASHBOARD"],
        "--redis",
        env["TAUTUNE_REDIS_URL"],
        "--job",
        "pop-submitted",
        "--working-dir",
        str(ROOT / "examples"),
        "--follow",
        "--population",
        "2",
        "--lr",
        f"method=explore,init_lr=1e-3,total_steps={steps},warmup_steps=20",
        "--",
        "python",
        "train.py",
        "--steps",
        str(steps),
        "--hidden",
        "64",
        "--sleep",
        "0.01",
        env=env,
        timeout=480,
    )
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    assert "(2 trials)" in output and output.count("validation loss") == 2
    status = _status(env, "pop-submitted")
    assert status["controller"]["method"] == "population explore"
    assert [t["reports"] for t in status["trials"]] == [steps, steps]
    for t in status["trials"]:  # both trials end on the stage's commit
        assert t["current"]["info"]["segment"]["role"] == "commit"
    assert status["controller"]["center_lr"] is not None  # the committed LR
