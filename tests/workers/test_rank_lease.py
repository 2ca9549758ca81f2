"""Two processes attached as one rank are refused while the first runs (a real second
process holding the lease, real Redis); a dead holder's lease does not block a restart,
and a holder on another host is a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.errors import ConfigError
from workers.agent import Agent

HOLD = """
import sys, time
from workers.agent import Agent
agent = Agent.attach("dup", sys.argv[1], rank=0)
agent.report(0, loss=1.0)
agent.flush()
print("held", flush=True)
time.sleep(60)
"""


def test_a_rank_held_by_a_running_process_is_refused(
    redis_server: EmbeddedRedis, store: Store
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, redis_server.url], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=r"rank 0 of job 'dup' is held by a running"):
            Agent.attach("dup", redis_server.url, rank=0)
        Agent.attach("dup", redis_server.url, rank=1).close()  # another rank is free
    finally:
        holder.kill()
        holder.wait(10)
    assert 0 in store.job("dup").alive_workers()  # its lease outlives it a while...
    again = Agent.attach("dup", redis_server.url, rank=0)  # ...and does not block a restart
    assert again.attempt == 1
    again.close()


def test_a_rank_held_from_another_host_is_a_warning(
    store: Store, redis_server: EmbeddedRedis
) -> None:
    job = store.job("far")
    job.heartbeat(0, ttl_s=30.0, info={"host": "elsewhere", "pid": 1, "ts": time.time()})
    with pytest.warns(UserWarning, match="reported by pid 1 on elsewhere"):
        Agent.attach("far", redis_server.url, rank=0).close()
