"""Trials of a population exchanging training states through a real Redis: the bytes, the
store's keys, and the directives a StateMover carries out."""

from __future__ import annotations

import fractions
import io
import random
import time

import numpy as np
import pytest
import torch

from trials.store import Store
from tuner.errors import ConfigError, StoreError
from tuner.records import Decision, DecisionKind, Report
from workers.explore import StateMover
from workers.peers import StorePeers
from workers.snapshot import Snapshot, wire


class Run:
    """A small model, its optimizer and its batch generator, seeded by ``seed``."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(6, 12), torch.nn.BatchNorm1d(12), torch.nn.Linear(12, 1)
        )
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.gen = torch.Generator().manual_seed(100 + seed)

    def step(self) -> float:
        # the global RNGs too, which a snapshot carries
        x = torch.randn(16, 6, generator=self.gen) * (1 + np.random.rand() + random.random())
        loss = self.model(x).pow(2).mean() + 0.01 * torch.randn(())
        self.opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt.step()
        return float(loss.item())

    def mover(self, peers: StorePeers | None) -> StateMover:
        return StateMover(self.model, self.opt, extra={"gen": self.gen}, peers=peers)


LOAD_TRIAL_0_AT_5 = Decision(
    stage=0,
    kind=DecisionKind.EXPLORE,
    from_step=5,
    lr=0.1,
    version=1,
    restore_peer=0,
    snapshot=True,
)
"""Go on from trial 0's state at step 5, and snapshot it to come back to."""


def test_a_snapshot_survives_bytes_bit_exactly() -> None:
    run = Run(0)
    for _ in range(3):
        run.step()
    snap = Snapshot.take(run.model, run.opt, extra={"gen": run.gen.get_state()}, step=3)
    blob = wire.to_bytes(snap)
    after = [run.step() for _ in range(5)]
    back = wire.from_bytes(blob, "test")
    assert back.step == 3 and back.optimizer_type == "AdamW"
    back.restore(run.model, run.opt)
    extra = back.extra
    assert extra is not None
    run.gen.set_state(extra["gen"])
    assert [run.step() for _ in range(5)] == after


def test_bytes_that_are_not_a_state_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="from trial 7"):
        wire.from_bytes(b"not a torch file", "from trial 7")

    buf = io.BytesIO()  # a pickle global that weights_only loading must not build
    torch.save({"format": 1, "x": fractions.Fraction(1, 3)}, buf)
    with pytest.raises(ConfigError, match="not a training state tautune can load"):
        wire.from_bytes(buf.getvalue(), "trial 1's state")
    buf = io.BytesIO()
    torch.save({"format": 99}, buf)
    with pytest.raises(ConfigError, match="format 1, found 99"):
        wire.from_bytes(buf.getvalue(), "trial 1's state")


def test_a_trial_loads_the_state_another_trial_published(store: Store) -> None:
    """Trial 1 starts elsewhere; after loading trial 0's state at step 5 it trains the
    same steps as trial 0, bit for bit: same weights, optimizer, batches and RNGs."""
    a, b = Run(0), Run(1)
    peers_a = StorePeers(store.job("pop", 0), rank=0, timeout_s=5)
    peers_b = StorePeers(store.job("pop", 1), rank=0, timeout_s=5)
    mover_a, mover_b = a.mover(peers_a), b.mover(peers_b)
    for _ in range(5):
        a.step()
        b.step()
    publish = Decision(
        stage=0,
        kind=DecisionKind.EXPLORE,
        from_step=5,
        lr=0.1,
        version=1,
        snapshot=True,
        publish=True,
    )
    load = LOAD_TRIAL_0_AT_5
    assert not mover_a.apply(5, publish)
    after_a = [a.step() for _ in range(4)]  # one process: the global RNGs are shared
    assert mover_b.apply(5, load)
    assert (mover_a.published, mover_b.peer_loads) == (1, 1)
    assert 5 in mover_b.store  # it snapshots what it loaded, to come back to it
    assert [b.step() for _ in range(4)] == after_a
    keys = sorted(k.decode() for k in store.client.keys("*peer*"))
    base = "tt:{pop}:v1:peer:0:0"
    assert keys == [f"{base}:5", f"{base}:5:part:0", f"{base}:index"]
    assert all(store.client.pttl(k) > 0 for k in keys)  # every one expires


def test_a_state_larger_than_a_part_goes_in_parts(store: Store) -> None:
    job = store.job("parts", 0)
    blob = bytes(range(256)) * 40  # 10,240 bytes in parts of 1,000
    job.publish_state(1, 7, blob, part_bytes=1000)
    assert len(store.client.keys("*peer:0:1:7:part:*")) == 11
    assert job.peer_state(0, 1, 7) == blob
    assert store.job("parts", 3).peer_state(0, 1, 7) == blob  # what another trial reads
    assert job.peer_state(0, 1, 8) is None and job.peer_state(0, 0, 7) is None
    store.client.delete("tt:{parts}:v1:peer:0:1:7:part:4")
    assert job.peer_state(0, 1, 7) is None  # a part gone is the state gone, not a torn one


def test_a_rank_keeps_its_newest_states_only(store: Store) -> None:
    job = store.job("keep", 2)
    for step in (10, 20, 30, 40):
        job.publish_state(0, step, b"s%d" % step * 700, part_bytes=1000)
    assert [job.peer_state(2, 0, s) for s in (10, 20)] == [None, None]
    assert job.peer_state(2, 0, 30) == b"s30" * 700
    assert job.peer_state(2, 0, 40) == b"s40" * 700
    left = sorted(k.decode().split(":peer:")[1] for k in store.client.keys("*peer*"))
    assert left == [
        "2:0:30",
        "2:0:30:part:0",
        "2:0:30:part:1",
        "2:0:30:part:2",
        "2:0:40",
        "2:0:40:part:0",
        "2:0:40:part:1",
        "2:0:40:part:2",
        "2:0:index",
    ]
    # a rank that restarted publishes an older step again: that one is now its newest
    job.publish_state(0, 20, b"again" * 300, part_bytes=1000)
    assert job.peer_state(2, 0, 20) == b"again" * 300
    assert job.peer_state(2, 0, 30) is None and job.peer_state(2, 0, 40) is not None
    assert not store.client.keys("*peer:2:0:30*")
    job.publish_state(1, 10, b"other rank")  # ranks are kept apart
    assert job.peer_state(2, 1, 10) == b"other rank" and job.peer_state(2, 0, 20) is not None


def test_a_foreign_value_under_a_state_key_is_refused_by_name(store: Store) -> None:
    store.client.set("tt:{odd}:v1:peer:0:0:5", b"raw bytes of an older tautune")
    with pytest.raises(StoreError, match=r"peer:0:0:5 holds no peer state of format"):
        store.job("odd", 1).peer_state(0, 0, 5)


def test_a_state_gone_for_good_is_not_waited_for(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Trial 0 published at step 5 and trained on (it reported step 6); its state has
    # expired. Trial 1 restarted and replays the decision that loads it: it trains on from
    # its own state at once and says so, instead of waiting for the timeout.
    store.job("gone", 0).append_reports([Report(rank=0, step=6, metrics={"loss": 1.0})])
    run = Run(1)
    mover = run.mover(StorePeers(store.job("gone", 1), rank=0, timeout_s=30))
    before = [p.detach().clone() for p in run.model.parameters()]
    load = LOAD_TRIAL_0_AT_5
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="workers.explore"):
        assert not mover.apply(5, load)
    assert time.monotonic() - start < 5
    assert "published at step 5, which is gone" in caplog.text
    assert mover.missed == 5 and mover.peer_loads == 0
    assert all(torch.equal(a, b) for a, b in zip(run.model.parameters(), before, strict=True))
    assert 5 in mover.store  # later restores of the stage come back to this state


def test_a_peer_state_that_never_comes_is_a_clear_error(store: Store) -> None:
    run = Run(0)
    mover = run.mover(StorePeers(store.job("pop", 1), rank=0, timeout_s=0.2))
    load = Decision(
        stage=0, kind=DecisionKind.EXPLORE, from_step=0, lr=0.1, version=1, restore_peer=2
    )
    with pytest.raises(ConfigError, match="state rank 0 of trial 2 publishes"):
        mover.apply(0, load)


def test_exchanging_states_outside_a_population_is_refused(store: Store) -> None:
    run = Run(0)
    with pytest.raises(ConfigError, match="not a trial"):
        run.mover(None).apply(
            0,
            Decision(stage=0, kind=DecisionKind.EXPLORE, from_step=0, lr=0.1, publish=True),
        )
    with pytest.raises(ConfigError, match="one trial"):
        StorePeers(store.job("solo"), rank=0)
    with pytest.raises(ConfigError, match="only the trials"):
        store.job("solo").publish_state(0, 0, b"x")


def test_decisions_keep_their_peer_directives_through_the_store(store: Store) -> None:
    job = store.job("pop", 2)
    d = Decision(stage=0, kind=DecisionKind.COMMIT, from_step=9, lr=0.1, restore_peer=1)
    job.commit(expected_version=0, decision=d)
    job.commit(
        expected_version=1,
        decision=Decision(stage=1, kind=DecisionKind.COMMIT, from_step=20, lr=0.1, publish=True),
    )
    first, second = job.decisions()
    assert (first.restore_peer, first.publish, first.moves_state) == (1, False, True)
    assert (second.restore_peer, second.publish, second.moves_state) == (None, True, True)
    with pytest.raises(ConfigError, match="trial index"):
        Decision(stage=0, kind=DecisionKind.COMMIT, from_step=0, restore_peer=-1)
