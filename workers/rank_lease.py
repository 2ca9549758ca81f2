"""Whether another live process already reports as a rank: two processes attached as one
rank (a script started twice, or every process of a job without ``$RANK``) interleave
their steps, and the older one fails later on a step that went backwards."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from typing import Any

from trials.store import JobStore
from tuner.errors import ConfigError


def check_rank_free(job_store: JobStore, rank: int) -> None:
    """Raise :class:`~tuner.errors.ConfigError` when ``rank``'s lease is held by another
    process of this host that is still running; warn when it is held from another host
    (a process there may have died within the lease's lifetime, or may not)."""
    held: Mapping[str, Any] | None = job_store.alive_workers().get(rank)
    if not held:
        return
    host, pid = held.get("host"), held.get("pid")
    where = f"pid {pid} on {host}"
    if host == socket.gethostname():
        if not isinstance(pid, int) or pid == os.getpid() or not _running(pid):
            return
        raise ConfigError(
            f"rank {rank} of job {job_store.job!r} is held by a running process ({where}): "
            "two processes would report as one rank. Give each its own rank ($RANK, which "
            "torchrun and tune() set), or let that one end first"
        )
    warnings.warn(
        f"tautune: rank {rank} of job {job_store.job!r} was reported by {where} within its "
        "lease's lifetime; if that process still runs, two processes report as one rank",
        stacklevel=3,
    )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
