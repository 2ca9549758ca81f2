"""Where tautune's state and head live: a Redis URL and a Ray, local ones by default.

With no Redis URL (neither argument nor ``$TAUTUNE_REDIS_URL``), a private redis-server is
started on a unix socket and stopped on exit. With no Ray address, ``ray.init()`` starts a
local Ray (token authentication left on) that is shut down on exit. Pointing both at a
cluster changes nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from trials.embedded import EmbeddedRedis
from trials.store import Store, resolve_url


@dataclass(frozen=True)
class Runtime:
    redis_url: str
    store: Store
    embedded: EmbeddedRedis | None
    ray_started: bool = False
    """Whether this runtime started its own local Ray (no cluster to grow)."""


@contextlib.contextmanager
def local_runtime(
    redis_url: str | None = None,
    ray_address: str | None = None,
    *,
    state_dir: str | None = None,
    start_ray: bool = True,
    log_to_driver: bool = False,
) -> Iterator[Runtime]:
    """Connect to (or start) Redis and Ray for the duration of the block; a Ray started here
    prints its workers' output (``print``, warnings, tracebacks) only with ``log_to_driver``."""
    url = resolve_url(redis_url)
    embedded: EmbeddedRedis | None = None
    ray_started = False
    try:
        if url is None:
            embedded = EmbeddedRedis(state_dir).start()
            url = embedded.url
        store = Store.connect(url)
        if start_ray:
            import ray

            if not ray.is_initialized():
                os.environ.setdefault("RAY_DEDUP_LOGS", "1")
                ray.init(
                    address=ray_address,
                    include_dashboard=False,
                    log_to_driver=log_to_driver,
                    logging_level=logging.WARNING,
                )
                ray_started = True
        yield Runtime(url, store, embedded, ray_started)
    finally:
        if ray_started:
            import ray

            ray.shutdown()
        if embedded is not None:
            embedded.stop()
