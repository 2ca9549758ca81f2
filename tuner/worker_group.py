"""N data-parallel training workers as Ray actors, with torch.distributed set up.

Each worker is an actor pinned to ``resources_per_worker``. Rank 0 picks the rendezvous
address; every worker then gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``, ``TAUTUNE_JOB`` and ``TAUTUNE_REDIS_URL`` in its environment and joins the
default process group (gloo on CPU, nccl when it has a GPU) before ``train_fn`` runs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from tuner.errors import ConfigError

log = logging.getLogger(__name__)


class TrainWorker:
    """One rank. Created through Ray by :class:`WorkerGroup`."""

    def address(self) -> tuple[str, int]:
        import ray

        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        return ip, port

    def setup(self, env: Mapping[str, str], backend: str | None) -> str:
        import torch
        import torch.distributed as dist

        os.environ.update(env)
        world = int(env["WORLD_SIZE"])
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray exposes only this worker's GPU(s)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend, rank=int(env["RANK"]), world_size=world)
        return backend

    def run(self, train_fn: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> Any:
        return train_fn(config)

    def teardown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def worker_resources(resources_per_worker: Mapping[str, float] | None) -> dict[str, float]:
    """What one worker asks Ray for: ``{"CPU": 1}`` unless said otherwise."""
    resources = dict(resources_per_worker or {"CPU": 1})
    resources.setdefault("CPU", 1)
    return {k: float(v) for k, v in resources.items() if v}


def check_resources(
    workers: int, resources_per_worker: Mapping[str, float] | None, *, local: bool
) -> None:
    """Say now what the connected Ray cannot give ``workers`` workers, rather than wait.

    Raises:
        ConfigError: ``local`` (a Ray started for this call, which no autoscaler grows) and
            one worker asks for more of a resource than the whole cluster has, such as a
            GPU on a machine without one, or all ``workers`` together do (every worker
            starts before any trains, so they must fit at once); on a cluster that is only
            a warning.
    """
    import ray

    have: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    need = worker_resources(resources_per_worker)
    missing = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
    holds = ", ".join(f"{k} {have.get(k, 0.0):g}" for k in sorted(need))
    if missing:
        what = (
            f"each worker asks for {need}, more {sorted(missing)} than this Ray cluster "
            f"has ({holds})"
        )
        if local:
            raise ConfigError(
                f"{what}: no worker can start. Ask for less in resources_per_worker, or "
                "connect to a cluster that has it (ray_address=)"
            )
        log.warning("tautune: %s; waiting for the cluster to grow", what)
        return
    short = sorted(k for k, v in need.items() if have.get(k, 0.0) < workers * v)
    if not short:
        return
    what = (
        f"{workers} workers asking for {need} each need more {short} than this Ray cluster "
        f"has ({holds}), and every worker must start before any trains (a trial's ranks "
        "train together, a population's trials explore together)"
    )
    share = {k: round(have.get(k, 0.0) / workers, 3) for k in short}
    if local:
        raise ConfigError(
            f"{what}: they would wait forever. Ask for a share that fits, e.g. "
            f"resources_per_worker={share}, or connect to a larger cluster (ray_address=)"
        )
    log.warning("tautune: %s; waiting for the cluster to grow (or ask for %s)", what, share)


class WorkerGroup:
    """Start ``num_workers`` :class:`TrainWorker` actors and run a function on all of them.

    Args:
        resources_per_worker: Ray resources of one worker, e.g. ``{"CPU": 1}`` or
            ``{"GPU": 1}`` (then CPU defaults to 1 as well).
        env: Extra environment for every worker (the job and Redis URL).
        wait: Return once every worker has joined the process group. ``False`` returns
            as soon as the actors are asked for, so that several groups start at once;
            :meth:`submit` waits first.
    """

    def __init__(
        self,
        num_workers: int,
        resources_per_worker: Mapping[str, float] | None,
        env: Mapping[str, str],
        *,
        backend: str | None = None,
        wait: bool = True,
    ) -> None:
        import ray

        resources = worker_resources(resources_per_worker)
        num_cpus = resources.pop("CPU", 0)
        num_gpus = resources.pop("GPU", 0)
        actor = ray.remote(TrainWorker).options(  # type: ignore[attr-defined]
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or None
        )
        self.workers: list[Any] = [actor.remote() for _ in range(num_workers)]
        self.backend: str | None = None
        self._env = dict(env)
        self._backend_arg = backend
        self._address = self.workers[0].address.remote()
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every worker has joined the process group (once)."""
        import ray

        if self.backend is not None:
            return
        ip, port = ray.get(self._address)
        envs = [
            {
                **self._env,
                "RANK": str(r),
                "WORLD_SIZE": str(len(self.workers)),
                "LOCAL_RANK": "0",
                "MASTER_ADDR": ip,
                "MASTER_PORT": str(port),
            }
            for r in range(len(self.workers))
        ]
        setups = [
            w.setup.remote(e, self._backend_arg) for w, e in zip(self.workers, envs, strict=True)
        ]
        self.backend = ray.get(setups)[0]

    def submit(
        self, train_fn: Callable[[dict[str, Any]], Any], config: dict[str, Any]
    ) -> list[Any]:
        """Start ``train_fn(config)`` on every rank; Ray object refs in rank order."""
        self.wait()
        return [w.run.remote(train_fn, config) for w in self.workers]

    def run(self, train_fn: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> list[Any]:
        """``train_fn(config)`` on every rank; the return values in rank order."""
        import ray

        return list(ray.get(self.submit(train_fn, config)))

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
