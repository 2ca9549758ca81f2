"""What tautune costs a training step on an accelerator, and what its snapshots cost there.

On the first CUDA device (on the CPU where there is none, as a smoke check of the code):

- **step overhead**: the byte transformer of :mod:`workers.tasks.bytegpt` (bf16 autocast on
  CUDA, AdamW, random byte windows drawn on the device) trains in blocks of ``steps`` steps,
  one block of each variant in turn, the order rotated every repetition so that drift
  cancels: ``bare`` (no tautune, the loss never read, so the GPU runs ahead of Python),
  ``bare+item`` (the loss read with ``item()`` every step, as most loops log it),
  ``tautune+item`` (``agent.report(step, loss=loss.item())`` and the tautune scheduler) and
  ``tautune+tensor`` (``agent.report(step, loss=loss.detach())``: the agent reads the
  tensor itself). A block is timed from a synchronized device to a synchronized device.
  The agent runs against a private redis-server with decisions covering every step and a
  live head lease (the healthy case of the control-plane benchmark).
- **snapshot**: taking and restoring a snapshot of the model and its AdamW state, beside
  the tensors and in host memory, and the bytes a population's trials exchange
  (:mod:`workers.snapshot.wire`), and those bytes published to and fetched from the
  private redis-server (:mod:`trials.peer_states`).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from tuner.bench.cp_common import private_redis
from tuner.bench.cp_overhead import write_stages
from tuner.errors import ConfigError
from workers.agent import Agent
from workers.snapshot import Snapshot
from workers.snapshot.wire import from_bytes, to_bytes
from workers.tasks.bytegpt import ByteGPT, ByteGPTConfig

SECTIONS = ("overhead", "snapshot")
VARIANTS = ("bare", "bare+item", "tautune+item", "tautune+tensor")

MODELS: dict[str, ByteGPTConfig] = {
    # launch-bound: the GPU finishes a step before Python has launched the next
    "small": ByteGPTConfig(context=64, dim=128, heads=4, layers=2, batch_size=32),
    "base": ByteGPTConfig(context=128, dim=256, heads=4, layers=4, batch_size=32),
    # compute-bound on an H100: Python runs far ahead of the GPU
    "medium": ByteGPTConfig(context=256, dim=512, heads=8, layers=6, batch_size=64),
    # GPU-bound: the GPU's step takes longer than Python's launches
    "large": ByteGPTConfig(context=512, dim=1024, heads=16, layers=12, batch_size=32),
    "tiny": ByteGPTConfig(context=16, dim=32, heads=2, layers=1, batch_size=8),
}


@dataclass(frozen=True)
class AccelConfig:
    """Settings of :func:`run_accel`.

    Attributes:
        models: Names from :data:`MODELS`.
        steps: Steps per timed block.
        reps: Rounds of one block of every variant.
        snapshot_reps: Timed takes and restores per snapshot placement.
        sections: ``"overhead"`` and/or ``"snapshot"``.
    """

    models: tuple[str, ...] = ("small", "base", "medium")
    steps: int = 40
    reps: int = 16
    snapshot_reps: int = 5
    sections: tuple[str, ...] = SECTIONS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ConfigError(f"models are {', '.join(MODELS)}; got {list(self.models)}")
        if not self.sections or set(self.sections) - set(SECTIONS):
            raise ConfigError(f"sections are {', '.join(SECTIONS)}; got {list(self.sections)}")
        if self.steps < 1 or self.reps < 2 or self.snapshot_reps < 1:
            raise ConfigError(f"need steps >= 1, reps >= 2, snapshot_reps >= 1; got {self}")

    @classmethod
    def quick(cls) -> AccelConfig:
        return cls(models=("tiny",), steps=10, reps=2, snapshot_reps=1)


def _device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Loop:
    """One model, optimizer and batch stream on ``device``; :meth:`block` trains ``n`` steps
    of a variant and returns seconds per step."""

    def __init__(self, cfg: ByteGPTConfig, device: torch.device, agent: Agent) -> None:
        torch.manual_seed(0)
        self.cfg, self.device, self.agent = cfg, device, agent
        self.model = ByteGPT(cfg).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=3e-4)
        self.sched = agent.lr_scheduler(self.opt, model=self.model)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.tuned_step = 0  # the steps the tautune scheduler has applied
        self.params = sum(p.numel() for p in self.model.parameters())

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _loss(self) -> torch.Tensor:
        c = self.cfg.context
        window = torch.randint(
            0, 256, (self.cfg.batch_size, c + 1), generator=self.gen, device=self.device
        )
        with self._autocast():
            logits = self.model(window[:, :c])
            return nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), window[:, 1:].flatten()
            )

    def block(self, variant: str, n: int) -> float:
        report: Callable[[int, torch.Tensor], None] | None = None
        if variant == "tautune+item":
            report = lambda s, loss: self.agent.report(s, loss=loss.item())  # noqa: E731
        elif variant == "tautune+tensor":
            report = lambda s, loss: self.agent.report(s, loss=loss)  # noqa: E731
        read = variant == "bare+item"
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            loss = self._loss()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt.step()
            if report is not None:
                report(self.tuned_step, loss)
                self.sched.step()
                self.tuned_step += 1
            elif read:
                loss.item()
        _sync(self.device)
        return (time.perf_counter() - t0) / n


def _overhead(name: str, cfg: AccelConfig, device: torch.device, store: Any) -> dict[str, Any]:
    job = store.job(f"accel-{name}")
    total = (cfg.reps + 1) * len(VARIANTS) * cfg.steps + 1
    write_stages(job, total + 100, 100)
    job.heartbeat(None, ttl_s=3600.0, info={"bench": "accel"})
    agent = Agent(job, 0)
    loop = _Loop(MODELS[name], device, agent)
    for variant in VARIANTS:  # warm-up: kernels compiled, allocator grown, not counted
        loop.block(variant, cfg.steps)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(cfg.reps):
        gc.collect()
        k = rep % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:
            times[variant].append(loop.block(variant, cfg.steps))
    agent.close()
    job.release(None)
    bare = statistics.median(times["bare"])
    rows = []
    for variant in VARIANTS:
        med = statistics.median(times[variant])
        rows.append(
            {
                "model": name,
                "params": loop.params,
                "variant": variant,
                "step_ms": round(med * 1e3, 4),
                "step_ms_reps": [round(t * 1e3, 4) for t in times[variant]],
                "over_bare_pct": round(100 * (med - bare) / bare, 2),
            }
        )
    return {
        "model": name,
        "config": asdict(MODELS[name]),
        "rows": rows,
        "reports_sent": agent.reports_sent,
    }


def _timed(fn: Callable[[], Any], device: torch.device, reps: int) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``reps`` calls (device synchronized), and its last result."""
    out, times = None, []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _through_redis(name: str, blob: bytes, store: Any, reps: int) -> tuple[float, float]:
    """Median seconds to publish ``blob`` as trial 0's state and to fetch it as trial 1."""
    publish, fetch = [], []
    for step in range(reps):
        t0 = time.perf_counter()
        store.job(f"accel-peers-{name}", 0).publish_state(0, step, blob)
        t1 = time.perf_counter()
        got = store.job(f"accel-peers-{name}", 1).peer_state(0, 0, step)
        fetch.append(time.perf_counter() - t1)
        publish.append(t1 - t0)
        if got is None or len(got) != len(blob):
            raise ConfigError("accel bench: the published state did not come back whole")
    return statistics.median(publish), statistics.median(fetch)


def _snapshots(
    name: str, cfg: AccelConfig, device: torch.device, store: Any
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = ByteGPT(MODELS[name]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for p in model.parameters():  # AdamW's state exists from its first step on
        p.grad = torch.zeros_like(p)
    opt.step()
    rows = []
    snap: Snapshot | None = None
    for place in (None, "cpu"):
        take_s, snap = _timed(
            partial(Snapshot.take, model, opt, device=place), device, cfg.snapshot_reps
        )
        restore_s, _ = _timed(partial(snap.restore, model, opt), device, cfg.snapshot_reps)
        rows.append(
            {
                "model": name,
                "kind": f"snapshot on {device.type if place is None else 'host'}",
                "bytes": snap.nbytes,
                "take_ms": round(take_s * 1e3, 3),
                "restore_ms": round(restore_s * 1e3, 3),
            }
        )
    assert snap is not None
    write_s, blob = _timed(partial(to_bytes, snap), device, cfg.snapshot_reps)
    read_s, back = _timed(partial(from_bytes, blob, "bench"), device, cfg.snapshot_reps)
    load_s, _ = _timed(partial(back.restore, model, opt), device, cfg.snapshot_reps)
    rows.append(
        {
            "model": name,
            "kind": "state as bytes (population exchange)",
            "bytes": len(blob),
            "take_ms": round(write_s * 1e3, 3),
            "restore_ms": round((read_s + load_s) * 1e3, 3),
        }
    )
    publish_s, fetch_s = _through_redis(name, blob, store, min(cfg.snapshot_reps, 3))
    rows.append(
        {
            "model": name,
            "kind": "those bytes through Redis (publish, fetch)",
            "bytes": len(blob),
            "take_ms": round(publish_s * 1e3, 3),
            "restore_ms": round(fetch_s * 1e3, 3),
        }
    )
    return rows


def run_accel(cfg: AccelConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Both sections on this machine's accelerator (or CPU); a JSON-ready document."""
    device = _device()
    start = time.perf_counter()
    overhead, snapshots = [], []
    with private_redis() as (_server, store):
        for name in cfg.models if "overhead" in cfg.sections else ():
            progress(f"[accel] step overhead, {name} model on {device}")
            overhead.append(_overhead(name, cfg, device, store))
        for name in cfg.models if "snapshot" in cfg.sections else ():
            progress(f"[accel] snapshots, {name} model")
            snapshots.extend(_snapshots(name, cfg, device, store))
    return {
        "bench": "accel",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "config": asdict(cfg),
        "step_overhead": overhead,
        "snapshot": snapshots,
        "bench_wall_s": round(time.perf_counter() - start, 1),
    }
