"""Shared fixtures: a real redis-server per test session, a clean database per test, and
the fields every benchmark result row carries."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import Store


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
