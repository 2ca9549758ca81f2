"""The population head against a real Redis: a crash loses nothing and counts nothing twice."""

from __future__ import annotations

from trials.store import Store
from tuner.controllers.population import PopulationConfig, PopulationLR
from tuner.population_head import PopulationLoop
from tuner.records import Report


def _loop(store: Store) -> PopulationLoop:
    ctl = PopulationLR(PopulationConfig(init_lr=0.01, trials=2, tau=10, total_steps=200))
    loop = PopulationLoop(store.job("pop"), ctl, 2, checkpoint_every_s=1e9, poll_s=0.0)
    loop.resync()
    return loop


def test_crashed_population_head_replays_exactly_the_unacknowledged_reports(store: Store) -> None:
    trials = [store.job("pop", t) for t in (0, 1)]
    loop = _loop(store)
    for step in range(120):
        for t, job in enumerate(trials):
            job.append_reports([Report(rank=0, step=step, metrics={"loss": 1.0 / (step + 1 + t)})])
        loop.step()
        if step == 57:  # the head dies: whatever it observed but did not commit is gone
            loop = _loop(store)
            assert loop.restored
    loop.step()
    loop._commit(0, None)
    state = store.job("pop").load_state("lr")
    assert state is not None
    assert [t["reports"] for t in state["trial_state"]] == [120, 120]
    for job in trials:
        versions = [d.version for d in job.decisions()]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 8
        assert not job.read_reports("head", pending=True).reports  # all acknowledged


def test_trial_keys_share_the_jobs_hash_tag(store: Store) -> None:
    store.job("pop", 1).append_reports([Report(rank=0, step=0, metrics={"loss": 1.0})])
    keys = sorted(k.decode() for k in store.client.keys("*"))
    assert keys and all(k.startswith("tt:{pop}:") for k in keys)
    assert any(":v1:trial:1:reports" in k for k in keys)
    assert store.jobs() == ["pop"]
