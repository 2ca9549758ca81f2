"""In-memory snapshots: restore is bit-exact (same losses, same parameters), with torch and
tautune schedulers and the mixture sampler; the store's eviction and memory accounting;
errors on a model of another shape. Pure torch, no Redis, no Ray."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tuner.errors import ConfigError
from workers.batch_sampler import MixtureBatchSampler
from workers.scheduler import TautuneLR
from workers.snapshot import Snapshot, SnapshotNotFoundError, SnapshotStore, restore_all_ranks

DIM, HIDDEN = 8, 32


def mlp(hidden: int = HIDDEN) -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 1))


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: MixtureBatchSampler | None = None
    data: torch.Tensor | None = None

    def train(self, steps: int) -> list[float]:
        """``steps`` optimizer steps; batches come from torch's RNG (or the sampler), the
        targets add numpy and ``random`` noise so every global RNG matters."""
        losses = []
        self.model.train()
        for _ in range(steps):
            if self.sampler is not None and self.data is not None:
                idx = [i.idx for i in next(iter(self.sampler))]
                x = self.data[idx]
            else:
                x = torch.randn(16, DIM)
            noise = float(np.random.normal()) * 0.01 + random.random() * 0.01
            y = x.sum(dim=1, keepdim=True).sin() + noise
            loss = nn.functional.mse_loss(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            losses.append(loss.item())
        return losses


def make_run(scheduler: str = "torch", sampler: bool = False) -> Run:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched: Any
    if scheduler == "torch":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    elif scheduler == "tautune":
        sched = TautuneLR(opt, None, base="warmup=10+cosine", total_steps=60)
    else:
        sched = None
    run = Run(model, opt, sched)
    if sampler:
        run.data = torch.randn(200, DIM)
        run.sampler = MixtureBatchSampler(
            {"a": range(0, 120), "b": range(120, 200)},
            batch_size=16,
            initial_weights={"a": 0.7, "b": 0.3},
            seed=3,
        )
    return run


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def assert_restore_is_bit_exact(run: Run, k: int = 15, n: int = 20, **take: Any) -> Snapshot:
    run.train(k)
    held = [p for g in run.optimizer.param_groups for p in g["params"]]
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler, run.sampler, step=k, **take)
    first = run.train(n)
    after_first = params(run.model)
    lr_first = run.optimizer.param_groups[0]["lr"]
    for _ in range(2):  # a snapshot restores any number of times
        snap.restore(run.model, run.optimizer, run.scheduler, run.sampler)
        again = run.train(n)
        assert again == first  # exact float equality, step by step
        assert all(torch.equal(a, b) for a, b in zip(params(run.model), after_first, strict=True))
        assert run.optimizer.param_groups[0]["lr"] == lr_first
    # the optimizer still updates the parameters the training loop holds
    assert [p for g in run.optimizer.param_groups for p in g["params"]] == held
    assert all(a is b for a, b in zip(held, run.model.parameters(), strict=True))
    return snap


def test_restore_repeats_the_loss_trajectory_bit_for_bit() -> None:
    snap = assert_restore_is_bit_exact(make_run("torch"))
    n_params = sum(p.numel() for p in mlp().parameters())
    # model + AdamW's exp_avg and exp_avg_sq, float32, plus RNG states
    assert snap.nbytes >= 3 * 4 * n_params
    assert snap.nbytes < 3 * 4 * n_params + 20_000


def test_restore_is_bit_exact_with_the_tautune_scheduler() -> None:
    run = make_run("tautune")
    assert_restore_is_bit_exact(run, k=5, n=12)  # crosses the end of the 10-step warmup


def test_restore_is_bit_exact_with_the_mixture_sampler() -> None:
    run = make_run("tautune", sampler=True)
    assert run.sampler is not None
    before = run.sampler.next_batch
    assert_restore_is_bit_exact(run)
    assert run.sampler.next_batch == before + 15 + 20


def test_snapshot_in_host_memory_restores_bit_exact() -> None:
    snap = assert_restore_is_bit_exact(make_run("torch"), device="cpu")
    assert snap.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in snap.model.values())


def _state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


def test_restore_copies_into_the_optimizers_own_state() -> None:
    # No second copy of the optimizer's state is built (on a GPU, twice the weights of
    # free memory for AdamW): the tensors it holds get the snapshot's values.
    run = make_run("torch")
    run.train(4)
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler)
    held = _state_tensors(run.optimizer)
    first = run.train(6)
    snap.restore(run.model, run.optimizer, run.scheduler)
    assert all(a is b for a, b in zip(_state_tensors(run.optimizer), held, strict=True))
    assert run.train(6) == first


def test_a_tensor_lr_stays_the_optimizers_own_tensor() -> None:
    # torch.compile'd optimizers take the LR as a tensor so that changing it does not
    # recompile; a restore must put the value in that tensor, not a new one.
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(0.01))
    sched = TautuneLR(opt, None, base="warmup=5+cosine", total_steps=20)
    lr = opt.param_groups[0]["lr"]
    for _ in range(3):
        opt.step()
        sched.step()
    snap = Snapshot.take(model, opt, sched)
    at_snapshot = float(lr)
    for _ in range(3):
        opt.step()
        sched.step()
    assert float(lr) != at_snapshot
    snap.restore(model, opt, sched)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == at_snapshot


def test_restore_into_an_optimizer_without_state_yet() -> None:
    run = make_run("torch")
    run.train(4)
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler)
    first = run.train(6)
    fresh = torch.optim.AdamW(run.model.parameters(), lr=1.0)  # no step taken: no state
    sched = torch.optim.lr_scheduler.StepLR(fresh, step_size=7, gamma=0.5)
    snap.restore(run.model, fresh, sched)
    run.optimizer, run.scheduler = fresh, sched
    assert run.train(6) == first


class _Counting(torch.optim.SGD):
    """SGD that keeps a list in its state, which restores must not share with the snapshot."""

    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        for p in self.param_groups[0]["params"]:
            self.state[p].setdefault("seen", []).append(1)
        return out


def test_restored_state_that_is_not_a_tensor_is_a_copy() -> None:
    run = make_run(None)
    run.optimizer = _Counting(run.model.parameters(), lr=0.01, momentum=0.9)
    run.train(2)
    snap = Snapshot.take(run.model, run.optimizer)
    first = run.train(3)
    for _ in range(2):
        snap.restore(run.model, run.optimizer)
        assert {len(st["seen"]) for st in run.optimizer.state.values()} == {2}
        assert run.train(3) == first  # which appends to the restored lists, not the snapshot's


def test_training_after_take_does_not_change_the_snapshot() -> None:
    run = make_run("torch")
    run.train(3)
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler, extra={"seen": [1, 2]})
    frozen = [t.clone() for t in snap.model.values()]
    state = snap.optimizer["state"][0]["exp_avg"].clone()
    run.train(3)
    assert all(torch.equal(a, b) for a, b in zip(snap.model.values(), frozen, strict=True))
    assert torch.equal(snap.optimizer["state"][0]["exp_avg"], state)
    extra = snap.extra
    assert extra == {"seen": [1, 2]}
    extra["seen"].append(3)
    assert snap.extra == {"seen": [1, 2]}


def test_restoring_into_a_model_of_another_shape_names_the_tensors() -> None:
    run = make_run("torch")
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler)
    other = mlp(hidden=16)
    opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7)
    before = params(other)
    with pytest.raises(ConfigError, match=r"0\.weight: snapshot 32x8 torch\.float32, model 16x8"):
        snap.restore(other, opt, sched)
    assert all(torch.equal(a, b) for a, b in zip(params(other), before, strict=True))
    with pytest.raises(ConfigError, match="keys missing from the model"):
        snap.restore(nn.Sequential(nn.Linear(DIM, 1)), opt, sched)


def test_restoring_with_other_optimizer_or_scheduler_is_refused() -> None:
    run = make_run("torch")
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler)
    sgd = torch.optim.SGD(run.model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="holds AdamW state, got a SGD optimizer"):
        snap.restore(run.model, sgd, run.scheduler)
    with pytest.raises(ConfigError, match="pass a scheduler exactly when"):
        snap.restore(run.model, run.optimizer)
    with pytest.raises(ConfigError, match="step must be an int"):
        Snapshot.take(run.model, run.optimizer, step=1.5)  # type: ignore[arg-type]


def test_a_sampler_without_state_dict_is_skipped_with_a_warning() -> None:
    run = make_run(None)
    rs = torch.utils.data.RandomSampler(range(10))
    with pytest.warns(UserWarning, match="RandomSampler has no state_dict"):
        snap = Snapshot.take(run.model, run.optimizer, sampler=rs)
    snap.restore(run.model, run.optimizer, sampler=rs)


def fake_snapshot(tensor_bytes: int) -> Snapshot:
    model = nn.Linear(tensor_bytes // 4, 1, bias=False)
    return Snapshot.take(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_store_evicts_the_oldest_under_its_memory_cap() -> None:
    one = fake_snapshot(4000).nbytes
    store = SnapshotStore(max_bytes=int(2.5 * one))
    assert store.put(100, fake_snapshot(4000)) == []
    assert store.put(200, fake_snapshot(4000)) == []
    assert store.nbytes == 2 * one
    assert store.put(300, fake_snapshot(4000)) == [100]
    assert store.keys() == [200, 300] and store.nbytes == 2 * one
    assert 200 in store and 100 not in store and len(store) == 2
    with pytest.raises(SnapshotNotFoundError, match=r"no snapshot 100 .* kept: \[200, 300\]"):
        store.get(100)
    store.put(200, fake_snapshot(4000))  # putting again makes it the newest
    assert store.put(400, fake_snapshot(4000)) == [300]
    store.discard(200)
    assert store.keys() == [400] and store.nbytes == one
    with pytest.raises(ConfigError, match="more than the store's max_bytes"):
        store.put(500, fake_snapshot(40_000))
    counted = SnapshotStore(max_count=1)
    counted.put("a", fake_snapshot(400))
    assert counted.put("b", fake_snapshot(400)) == ["a"]
    counted.clear()
    assert counted.nbytes == 0 and len(counted) == 0
    with pytest.raises(ConfigError, match="max_bytes must be an int"):
        SnapshotStore(max_bytes=0)


def test_store_lookup_restores_the_named_step() -> None:
    run = make_run("tautune")
    store = SnapshotStore(max_count=4)
    trajectories: dict[int, list[float]] = {}
    for step in (0, 10, 20):
        store.put(step, Snapshot.take(run.model, run.optimizer, run.scheduler, step=step))
        trajectories[step] = run.train(10)
    store.get(10).restore(run.model, run.optimizer, run.scheduler)
    assert run.train(10) == trajectories[10]


def _with_process_group(tmp_path: Path, fn: Callable[[], None]) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        fn()
    finally:
        dist.destroy_process_group()


def test_restore_all_ranks_restores_with_and_without_a_process_group(tmp_path: Path) -> None:
    run = make_run("torch")
    snap = Snapshot.take(run.model, run.optimizer, run.scheduler, step=0)
    first = run.train(5)
    restore_all_ranks(snap, run.model, run.optimizer, run.scheduler)
    assert run.train(5) == first

    def under_group() -> None:
        restore_all_ranks(snap, run.model, run.optimizer, run.scheduler)
        assert run.train(5) == first

    _with_process_group(tmp_path, under_group)
