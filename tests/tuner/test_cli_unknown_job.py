"""Commands that name a job this Redis does not hold say so and fail, on stderr, whatever
the output format (a mistyped name is not "nothing to do")."""

from __future__ import annotations

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.cli import main
from tuner.records import Report

COMMANDS = [["status", "nosuch"], ["status", "nosuch", "--json"], ["detach", "nosuch"]]


@pytest.mark.parametrize("command", [*COMMANDS, ["stop", "nosuch"]])
def test_a_job_redis_does_not_hold_is_an_error(
    command: list[str],
    redis_server: EmbeddedRedis,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.job("real").append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    assert main([*command, "--redis", redis_server.url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "no job 'nosuch' in Redis at" in err and "`tautune jobs`" in err
    assert main([command[0], "real", *command[2:], "--redis", redis_server.url]) in (0, 1)
    out, err = capsys.readouterr()
    assert "no job" not in err  # the job it holds is found


def test_attach_to_a_job_with_no_workers_yet_says_so(
    redis_server: EmbeddedRedis, store: Store
) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "TAUTUNE_REDIS_URL": redis_server.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", "attach", "later", "--lr", "init_lr=1e-3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not store.job("later").head_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main(["detach", "later", "--redis", redis_server.url]) == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "job 'later' has no workers in this Redis yet" in out, out
