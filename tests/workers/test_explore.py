"""Snapshot and restore directives, carried out by the agent's scheduler on a real Redis."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from trials.store import JobStore, Store
from tuner.errors import ConfigError, InvalidMetricError
from tuner.records import Decision, DecisionKind
from workers.agent import Agent
from workers.explore import StateMover


@pytest.fixture
def job(store: Store) -> JobStore:
    return store.job("explore-worker")


@pytest.fixture
def agent(job: JobStore) -> Iterator[Agent]:
    a = Agent(job, rank=0, sync=False, flush_every=4)
    yield a
    a.close()


def _commit(job: JobStore, decisions: list[Decision]) -> None:
    for d in decisions:
        job.commit(expected_version=job.version(), decision=d)


def _problem() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, x, y


def _train(
    agent: Agent, steps: int, *, sgd: bool = False, restorable: bool = True, tensors: bool = False
) -> tuple[list[float], list[float], StateMover | None]:
    """Train with random batches from the global RNG (AdamW, or plain SGD at 1e-3); per-step
    losses and LRs, and the scheduler's state mover. ``tensors``: report every other loss
    as a 0-d tensor."""
    model, opt, x, y = _problem()
    if sgd:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = agent.lr_scheduler(opt, model=model if restorable else None)
    losses, lrs = [], []
    for step in range(steps):
        idx = torch.randint(0, 512, (32,))
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
        agent.report(step, loss=loss.detach() if tensors and step % 2 == 0 else loss.item())
        sched.step()
    return losses, lrs, sched.mover


def test_restore_repeats_the_candidate_bit_for_bit(job: JobStore, agent: Agent) -> None:
    # steps 10-19 and 20-29 train the same LR from the same snapshot: identical losses
    _commit(
        job,
        [
            Decision(
                stage=0,
                kind=DecisionKind.EXPLORE,
                from_step=10,
                until_step=20,
                lr=3e-2,
                snapshot=True,
            ),
            Decision(
                stage=1,
                kind=DecisionKind.EXPLORE,
                from_step=20,
                until_step=30,
                lr=3e-2,
                restore_from=10,
            ),
            Decision(
                stage=2,
                kind=DecisionKind.COMMIT,
                from_step=30,
                until_step=40,
                lr=1e-3,
                restore_from=10,
            ),
        ],
    )
    losses, lrs, mover = _train(agent, 40)
    assert losses[10:20] == losses[20:30]  # bit-exact, not approximately
    assert lrs[10:30] == [3e-2] * 20
    # the commit restarts from the same state with another LR: same first loss, then not
    assert losses[30] == losses[10] and losses[31] != losses[11]
    assert mover is not None and mover.snapshots_taken == 1 and mover.restores == 2
    # steps kept counting up through the restores, and the reports say so
    agent.flush()
    assert agent.reports_sent == 40


def test_a_worker_that_cannot_restore_says_why(job: JobStore, agent: Agent) -> None:
    _commit(
        job,
        [
            Decision(
                stage=0,
                kind=DecisionKind.EXPLORE,
                from_step=3,
                until_step=6,
                lr=0.1,
                snapshot=True,
            )
        ],
    )
    _, opt, _, _ = _problem()
    sched = agent.lr_scheduler(opt)  # no model=: cannot restore
    sched.step()
    sched.step()
    with pytest.raises(ConfigError, match="pass model="):
        sched.step()


def test_a_restore_of_a_snapshot_this_rank_never_took_takes_it_from_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, opt, x, y = _problem()
    here = [p.detach().clone() for p in model.parameters()]
    mover = StateMover(model, opt)
    d = Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=5, lr=0.1, restore_from=2)
    with caplog.at_level("WARNING", logger="workers.explore"):
        assert not mover.apply(5, d)
    assert mover.missed == 5 and mover.restores == 0 and mover.store.keys() == [2]
    assert "snapshot of step 2 at step 5" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(here, model.parameters(), strict=True))
    loss = torch.nn.functional.mse_loss(model(x[:32]), y[:32])  # a candidate trains on
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    again = Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=9, lr=0.1, restore_from=2)
    assert mover.apply(9, again.with_version(2))  # the next candidate starts where it missed
    assert all(torch.equal(a, b) for a, b in zip(here, model.parameters(), strict=True))
    assert mover.missed == 5


def test_a_rank_restarted_mid_stage_trains_on_and_reports_the_miss(job: JobStore) -> None:
    # the stage snapshots at step 2 and its second candidate restores it at step 6; the
    # rank's process restarts and resumes at step 4, so it holds no snapshot
    first = Decision(
        stage=0, kind=DecisionKind.EXPLORE, from_step=2, until_step=6, lr=0.01, snapshot=True
    )
    second = Decision(
        stage=1, kind=DecisionKind.EXPLORE, from_step=6, until_step=10, lr=0.001, restore_from=2
    )
    _commit(job, [first, second])
    agent = Agent(job, rank=0, sync=False, flush_every=1, attempt=1)
    try:
        model, opt, x, y = _problem()
        opt.param_groups[0]["initial_lr"] = 1e-2
        sched = agent.lr_scheduler(opt, model=model, last_epoch=3)  # resumed: next is step 4
        for step in range(4, 9):
            loss = torch.nn.functional.mse_loss(model(x[:32]), y[:32])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            agent.report(step, loss=loss.item())
            sched.step()
        agent.flush()
    finally:
        agent.close()
    job.ensure_group()
    reports = {r.step: r for _, r in job.read_reports("test").reports}
    assert sched.mover is not None and sched.mover.missed == 6
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)  # the candidate's LR all the same
    assert reports[4].attempt == 1 and "restore_missed" not in reports[5].metrics
    assert all(reports[s].metrics["restore_missed"] == 6.0 for s in (6, 7, 8))


def test_directives_run_once_per_decision_and_old_snapshots_are_dropped() -> None:
    model, opt, _, _ = _problem()
    mover = StateMover(model, opt)
    take = Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=0, lr=0.1, snapshot=True)
    assert not mover.apply(0, take) and not mover.apply(0, take)
    assert mover.snapshots_taken == 1
    later = Decision(
        stage=1, kind=DecisionKind.EXPLORE, from_step=5, lr=0.1, snapshot=True, restore_from=0
    ).with_version(2)
    assert mover.apply(5, later)
    again = Decision(
        stage=2, kind=DecisionKind.COMMIT, from_step=9, lr=0.1, restore_from=5
    ).with_version(3)
    assert mover.apply(9, again)
    assert mover.store.keys() == [5]  # the snapshot of step 0 is older than any restore to come


def test_agent_reports_that_it_can_restore(job: JobStore, agent: Agent) -> None:
    _train(agent, 3)
    agent.flush()
    job.ensure_group()
    reports = [r for _, r in job.read_reports("test").reports]
    assert reports and all(r.metrics.get("restorable") == 1.0 for r in reports)


def test_a_candidate_that_blows_up_reports_diverged_and_is_restored(
    job: JobStore, agent: Agent
) -> None:
    # steps 5-9 try an LR that sends the weights to inf; step 10 restores the snapshot of 5
    _commit(
        job,
        [
            Decision(
                stage=0,
                kind=DecisionKind.EXPLORE,
                from_step=5,
                until_step=10,
                lr=1e30,
                snapshot=True,
            ),
            Decision(stage=1, kind=DecisionKind.COMMIT, from_step=10, lr=1e-3, restore_from=5),
        ],
    )
    # NaN/inf during the candidate: no error, whether as a float or a 0-d tensor
    losses, _, _ = _train(agent, 14, sgd=True, tensors=True)
    agent.flush()
    job.ensure_group()
    by_step = {r.step: r.metrics for _, r in job.read_reports("test").reports}
    blown = [s for s in range(5, 10) if not math.isfinite(losses[s])]
    assert blown, "the candidate was meant to blow up"
    for s in blown:
        assert by_step[s]["diverged"] == 1.0 and "loss" not in by_step[s]
    assert all("diverged" not in by_step[s] for s in range(5) if s not in blown)
    assert losses[10] == losses[5]  # restored: the same weights and batch as step 5
    assert all(math.isfinite(v) for v in losses[10:])


def test_a_nan_loss_outside_exploration_is_still_an_error(job: JobStore, agent: Agent) -> None:
    model, opt, _, _ = _problem()
    agent.lr_scheduler(opt, model=model)
    with pytest.raises(InvalidMetricError, match="loss"):
        agent.report(0, loss=math.nan)


@pytest.mark.parametrize("model", [True, False], ids=["restorable", "not-restorable"])
def test_a_blow_up_no_snapshot_can_undo_is_an_error_naming_the_lr(
    job: JobStore, agent: Agent, model: bool
) -> None:
    # A rank that restores must not report a stagewise probe's NaN as a candidate that
    # diverged: nothing will restore it, and training would go on from NaN weights.
    _commit(
        job,
        [Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=3, until_step=10, lr=1e30)],
    )
    expected = r"LR in force was 1e\+30 \(tautune decision v1\)"
    with pytest.raises(InvalidMetricError, match=expected) as e:
        _train(agent, 10, sgd=True, restorable=model)  # an EXPLORE decision, no snapshot
    assert ("pass model=" in str(e.value)) is not model
    agent.flush()
    job.ensure_group()
    reports = [r for _, r in job.read_reports("test").reports]
    assert reports and all("diverged" not in r.metrics for r in reports)
    assert all(math.isfinite(v) for r in reports for v in r.metrics.values())


def test_a_snapshot_that_does_not_fit_beside_the_tensors_goes_to_host_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # On a GPU near full, cloning the state there raises CUDA's out-of-memory error; the
    # mover keeps that snapshot and the later ones in host memory instead of failing the
    # step. (The error is raised here by hand: this machine has no GPU to fill.)
    from workers.snapshot import Snapshot

    model, opt, _, _ = _problem()
    real_take = Snapshot.take
    asked: list[object] = []

    def take(*args: object, device: object = None, **kw: object) -> Snapshot:
        asked.append(device)
        if device is None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.70 GiB")
        return real_take(*args, device=device, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Snapshot, "take", staticmethod(take))
    mover = StateMover(model, opt)
    snap = Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=3, lr=0.1, snapshot=True)
    with caplog.at_level("WARNING", logger="workers.explore"):
        mover.apply(3, snap)
    assert "does not fit in the accelerator's memory" in caplog.text
    assert mover.device == "cpu" and mover.store.keys() == [3]
    mover.apply(5, Decision(stage=1, kind=DecisionKind.EXPLORE, from_step=5, lr=0.1, snapshot=True))
    assert asked == [None, "cpu", "cpu"]  # later snapshots go to the host at once

    def host_full(*args: object, **kw: object) -> Snapshot:
        raise torch.OutOfMemoryError("host")

    monkeypatch.setattr(Snapshot, "take", staticmethod(host_full))
    host = StateMover(model, opt, device="cpu")  # already in host memory: nothing to try
    with pytest.raises(torch.OutOfMemoryError):
        host.apply(3, snap)


def test_a_sharded_model_is_refused_by_name() -> None:
    # FSDP2 on one gloo rank (the CPU): the parameters become DTensors, whose state dict
    # is the rank's shard, which a snapshot cannot put back whole.
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ConfigError, match=r"model is sharded \(FSDPSequential is FSDP\)"):
            StateMover(model, opt)
    finally:
        dist.destroy_process_group()
