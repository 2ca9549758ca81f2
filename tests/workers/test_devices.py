"""The worker's tensor paths on every device this machine has: snapshots (beside the
tensors and in host memory), a snapshot's bytes restored onto the device, a restore fenced
by a process group (gloo on the CPU, nccl on a GPU), per-arm losses, and exploration end to
end with the training on the device and loss tensors reported as they are.

Each test runs on the CPU, and on CUDA where a GPU is present: CI has none, so its CUDA
cases are skipped there; on a GPU machine run ``pytest tests/workers/test_devices.py``.
The head here is :class:`~tuner.head.HeadLoop` in a thread (what the Ray actor runs), so
the file needs a redis-server but not Ray.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from trials.embedded import EmbeddedRedis
from trials.store import JobStore, Store
from tuner.errors import InvalidMetricError
from tuner.head import HeadLoop
from tuner.records import Decision, DecisionKind
from tuner.specs import build_controller
from workers import distributed
from workers.agent import Agent
from workers.arm_loss import split_loss_by_arm
from workers.explore import StateMover
from workers.snapshot import Snapshot, restore_all_ranks
from workers.snapshot.wire import from_bytes, to_bytes

pytestmark = pytest.mark.filterwarnings("ignore:.*barrier.*:UserWarning")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.01),
    # fused AdamW keeps its step counts on the device, not on the CPU
    "adamw-fused": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.01, fused=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
}


class Run:
    """A small regression net on ``device`` whose batches come from that device's RNG."""

    def __init__(self, device: str, optimizer: str = "adamw", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model = nn.Sequential(
            nn.Linear(8, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 1)
        ).to(self.device)
        self.opt = OPTIMIZERS[optimizer](self.model.parameters())
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=7, gamma=0.7)

    def train(self, steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            x = torch.randn(32, 8, device=self.device)  # the snapshot must rewind this RNG
            y = x.sum(dim=1, keepdim=True).sin()
            loss = nn.functional.mse_loss(self.model(x), y)  # dropout draws from it too
            self.opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt.step()
            self.sched.step()
            losses.append(loss.item())
        return losses

    def take(self, step: int, **kw: Any) -> Snapshot:
        return Snapshot.take(self.model, self.opt, self.sched, step=step, **kw)

    def restore(self, snap: Snapshot) -> None:
        snap.restore(self.model, self.opt, self.sched)

    def params(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("snapshot_device", [None, "cpu"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("device", DEVICES)
def test_restore_on_the_device_is_bit_exact(
    device: str, optimizer: str, snapshot_device: str | None
) -> None:
    run = Run(device, optimizer)
    run.train(10)
    snap = run.take(10, device=snapshot_device)
    held = snapshot_device or device
    assert {t.device.type for t in snap.model.values()} == {held}
    first, after = run.train(15), run.params()
    for _ in range(2):  # any number of times
        run.restore(snap)
        assert run.train(15) == first
        assert _same(run.params(), after)
    # the optimizer's state is back where it lives, on the parameters' device
    for state in run.opt.state.values():
        for name, value in state.items():
            if torch.is_tensor(value) and name != "step":
                assert value.device.type == run.device.type


@pytest.mark.parametrize("device", DEVICES)
def test_a_snapshots_bytes_restore_onto_the_device(device: str) -> None:
    # How a population's trials exchange states: written from the device, read onto the
    # CPU in another process, restored into that process's own model on the device.
    run = Run(device, "adamw-fused")
    run.train(12)
    blob = to_bytes(run.take(12))
    first, after = run.train(10), run.params()
    back = from_bytes(blob, "test")
    assert {t.device.type for t in back.model.values()} == {"cpu"}
    other = Run(device, "adamw-fused", seed=7)  # other weights and no optimizer state yet
    other.restore(back)
    assert other.train(10) == first
    assert _same(other.params(), after)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_state_is_rewound_with_the_model(device: str) -> None:
    # fp16 autocast and a GradScaler whose scale moves (it starts far too high and halves
    # on the overflows), batches from a generator of the device: the scaler and the
    # generator go in extra state, and a candidate restored from the snapshot repeats
    # the steps bit for bit, scale included.
    run = Run(device, "adamw")
    scaler = torch.amp.GradScaler(device, init_scale=2.0**40, growth_interval=3)
    gen = torch.Generator(device=device).manual_seed(5)
    mover = StateMover(run.model, run.opt, extra={"scaler": scaler, "batches": gen})

    def train(steps: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(steps):
            x = torch.randn(32, 8, device=device, generator=gen)
            with torch.autocast(device, dtype=torch.float16):
                loss = nn.functional.mse_loss(run.model(x).float(), x.sum(1, keepdim=True).sin())
            run.opt.zero_grad()
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(run.opt)
            scaler.update()
            out.append((loss.item(), scaler.get_scale()))
        return out

    train(4)
    mover.apply(
        4, Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=4, lr=3e-3, snapshot=True)
    )
    first = train(12)
    assert len({scale for _, scale in first}) > 1  # the scale moved after the snapshot
    assert mover.apply(
        16, Decision(stage=1, kind=DecisionKind.EXPLORE, from_step=16, lr=3e-3, restore_from=4)
    )
    assert train(12) == first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def process_group(request: pytest.FixtureRequest) -> Iterator[str]:
    """A process group of one rank on the test's device: gloo on the CPU, nccl on CUDA."""
    device: str = request.param
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        yield device
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("process_group", DEVICES, indirect=True)
def test_restore_all_ranks_under_the_devices_backend(process_group: str) -> None:
    assert dist.get_backend() == ("nccl" if process_group == "cuda" else "gloo")
    run = Run(process_group)
    # what tune() hands a train_fn: the model on this worker's device (a GPU when there is
    # one, also under gloo), where the batches must then be made
    assert distributed.prepare_model(run.model) is run.model  # one rank: no DDP wrapper
    run.device = next(run.model.parameters()).device
    assert run.device.type == distributed.device().type
    run.train(5)
    snap = run.take(5)
    first = run.train(8)
    restore_all_ranks(snap, run.model, run.opt, run.sched)  # the step check runs on nccl
    assert run.train(8) == first


@pytest.mark.parametrize("device", DEVICES)
def test_per_arm_losses_of_a_batch_on_the_device(device: str) -> None:
    per_sample = torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0], device=device)
    arms = torch.tensor([0, 2, 0, 2, 2], device=device)
    loss, count = split_loss_by_arm(per_sample, arms, ["a", "b", "c"])
    assert loss == {"a": 2.0, "c": 5.0}
    assert count == {"a": 2, "c": 3}


# -- GPU metrics -----------------------------------------------------------------------------


@CUDA
def test_a_gpu_loss_is_reported_without_waiting_for_the_gpu(store: Store) -> None:
    agent = Agent(store.job("gpu-report"), 0, flush_every=1000, flush_interval_s=60.0)
    try:
        losses = [torch.tensor(0.5, device="cuda") * k for k in range(1, 4)]
        torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
        try:
            with pytest.raises(RuntimeError, match="synchroniz"):
                losses[0].item()  # what report() must not do
            for step, loss in enumerate(losses):
                agent.report(step, loss=loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        agent.flush()
        stored = store.job("gpu-report").all_reports()
        assert [r.metrics["loss"] for r in stored] == [0.5, 1.0, 1.5]
    finally:
        agent.close()


@CUDA
def test_gpu_metrics_are_checked_when_read(store: Store) -> None:
    agent = Agent(store.job("gpu-bad"), 0, flush_every=1000, flush_interval_s=60.0)
    try:
        with pytest.raises(InvalidMetricError, match=r"'loss' at step 0 .* shape \(2,\)"):
            agent.report(0, loss=torch.ones(2, device="cuda"))  # the shape needs no read
        agent.report(0, loss=torch.tensor(float("nan"), device="cuda"))  # not read yet
        agent.report(1, loss=torch.tensor(0.25, device="cuda"))
        with pytest.raises(InvalidMetricError, match=r"'loss' at step 0 .* nan"):
            agent.flush()
        assert [r.step for r in store.job("gpu-bad").all_reports()] == [1]
    finally:
        agent.close()


# -- exploration end to end -----------------------------------------------------------------


def _train(job: JobStore, device: str, steps: int) -> tuple[Agent, list[float], Any]:
    """The regression net on ``device`` under the job's LR, on a rank that restores and
    reports each step's loss tensor (no ``item()`` in the loop but the test's own)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(512, 16, device=dev)
    y = x @ torch.randn(16, 1, device=dev) + 0.1 * torch.randn(512, 1, device=dev)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    agent = Agent(job, rank=0, sync_timeout_s=60.0, flush_every=4, flush_interval_s=0.02)
    sched = agent.lr_scheduler(opt, model=model)
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, 512, (32,), device=dev)  # the device's RNG: rewound too
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        agent.report(step, loss=loss.detach())
        losses.append(loss.item())
        sched.step()
        time.sleep(0.001)
    agent.close()
    return agent, losses, sched


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_explore_on_the_device_end_to_end(
    store: Store, redis_server: EmbeddedRedis, device: str
) -> None:
    steps = 400
    spec = {
        "method": "explore",
        "init_lr": 0.01,
        "total_steps": steps,
        "warmup_steps": 20,
        "explore_budget": 0.2,
    }
    job = store.job(f"explore-{device}")
    head = HeadLoop(Store.connect(redis_server.url).job(job.job), build_controller(spec))
    thread = threading.Thread(target=head.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not job.head_alive():
        assert time.monotonic() < deadline and thread.is_alive(), head.error
        time.sleep(0.05)
    try:
        agent, losses, sched = _train(job, device, steps)
    finally:
        head.stop()
        thread.join(timeout=30)
    assert head.error is None
    decisions = sorted(job.stage_decisions(), key=lambda d: d.from_step)
    probes = [
        d
        for d in decisions
        if d.info["segment"]["role"] == "probe" and d.info["segment"].get("part") != 2
    ]
    commits = [d for d in decisions if d.kind == DecisionKind.COMMIT]
    assert len(probes) >= 2 and commits, decisions
    start = probes[0].from_step
    # every candidate began from the snapshot's weights on the snapshot's batch
    for p in probes[1:]:
        assert p.restore_from == start
        assert losses[p.from_step] == losses[start]
    assert losses[commits[0].from_step] == losses[commits[0].restore_from]  # type: ignore[index]
    assert decisions[-1].until_step == steps
    assert job.report_count() == steps
    # the snapshots were kept beside the model, on its device
    kept = [sched.mover.store.get(k) for k in sched.mover.store]
    assert kept and {t.device.type for s in kept for t in s.model.values()} == {device}
    assert agent.stall_s < 30
