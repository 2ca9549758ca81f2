"""Shared fixtures: a real redis-server per test session, a clean database per test, the
fields every benchmark result row carries, and a driver of an LR controller on the NQM."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner.controllers.base import Controller, Plan
from tuner.records import Report


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    # A short directory under /tmp keeps the unix socket path under the 107-byte limit.
    state_dir = Path(tempfile.mkdtemp(prefix="tt-test-"))
    with EmbeddedRedis(state_dir) as server:
        yield server


@pytest.fixture
def store(redis_server: EmbeddedRedis) -> Iterator[Store]:
    s = Store.connect(redis_server.url)
    s.client.flushall()
    yield s
    s.close()


@pytest.fixture
def result_keys() -> frozenset[str]:
    """The fields every benchmark's per-run result row carries (LR, peers, mixture)."""
    return frozenset(
        (
            "method",
            "final_loss",
            "steps_to_target",
            "total_steps",
            "exploration_steps",
            "wall_s",
            "seed",
        )
    )


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray (token auth on, as Ray's default) shared by one test module's tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


Drive = Callable[[Controller, Callable[[Controller], bool]], Plan]


@pytest.fixture
def drive_nqm() -> Drive:
    """``drive(ctl, done)``: feed ``ctl`` NQM losses at LR 0.1, from a rank that restores,
    accepting every proposal, until ``done(ctl)``; returns the plan of that moment."""
    from tuner.bench.nqm import NQM

    def drive(ctl: Controller, done: Callable[[Controller], bool]) -> Plan:
        nqm, version = NQM(seed=1), 0
        for step in range(5000):
            plan = Plan(horizon=step - 1, last_step=step - 1, next_stage=version)
            while (d := ctl.propose(plan)) is not None:
                version += 1
                ctl.accept(d.with_version(version))
                plan = Plan(horizon=step - 1, last_step=step - 1, next_stage=version)
            if done(ctl):
                return Plan(horizon=step, last_step=step, next_stage=version)
            loss = nqm.step(0.1)
            ctl.observe([Report(rank=0, step=step, metrics={"loss": loss, "restorable": 1})])
        raise AssertionError("the controller never reached the point asked for")

    return drive
