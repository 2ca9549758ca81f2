"""Worker and head plumbing the control-plane sections share: a real agent's torch
scheduler, an in-process head thread, and Redis command counts."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import torch

from trials.store import JobStore, Store
from tuner.bench.cp_common import redis_info
from tuner.head import HeadLoop
from tuner.specs import build_controller
from workers.agent import Agent
from workers.scheduler import TautuneLR


def loss_at(step: int) -> float:
    """A deterministic, slowly falling training loss."""
    return 1.0 + 1.0 / (1.0 + 0.01 * step)


def torch_scheduler(agent: Agent, lr: float = 0.1) -> TautuneLR:
    """``agent.lr_scheduler`` over an SGD optimizer of one parameter."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = agent.lr_scheduler(opt)
    opt.step()  # torch warns when a scheduler steps before its optimizer ever did
    return sched


def agent_defaults() -> dict[str, Any]:
    """The keyword defaults of :class:`~workers.agent.Agent` (what the sections run with
    unless they say otherwise), read from its signature."""
    params = inspect.signature(Agent.__init__).parameters
    return {
        k: p.default
        for k, p in params.items()
        if k not in ("self", "store", "rank") and p.default is not inspect.Parameter.empty
    }


def redis_calls(store: Store) -> tuple[int, int]:
    """``(scripts, commands)`` Redis has run so far: ``EVALSHA``/``EVAL`` calls, and every
    command including those the scripts ran inside."""
    stats = redis_info(store, "commandstats")
    calls = {k: int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}
    scripts = calls.get("cmdstat_evalsha", 0) + calls.get("cmdstat_eval", 0)
    return scripts, sum(calls.values())


def run_head(job: JobStore, spec: dict[str, Any]) -> tuple[HeadLoop, threading.Thread]:
    """An in-process :class:`HeadLoop` driving ``build_controller(spec)`` in a daemon
    thread, returned once its lease is live."""
    loop = HeadLoop(job, build_controller(spec))
    thread = threading.Thread(target=loop.run, name="cp-head", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not job.head_alive():
        if time.monotonic() > deadline or not thread.is_alive():
            loop.stop()
            raise RuntimeError(f"the in-process head of {job.job!r} did not start: {loop.error}")
        time.sleep(0.005)
    return loop, thread


def stop_head(loop: HeadLoop, thread: threading.Thread) -> None:
    """Stop a head started by :func:`run_head` (it writes a last checkpoint)."""
    loop.stop()
    thread.join(timeout=30.0)
