"""The head tells the user when ``explore``'s candidates were not compared on the same
batches: each one restored to the stage's snapshot must begin at the stage's start loss."""

from __future__ import annotations

import random
from typing import Any

from tuner.bench.lr import NQMTrainable
from tuner.bench.lr_run import run_controller
from tuner.bench.nqm import NQM
from tuner.controllers.explore_lr import ExploreConfig, ExploreLR

STEPS = 1200


class BatchesNotRestored(NQMTrainable):
    """The NQM with a batch noise drawn from an RNG the snapshots leave out: a restored
    candidate goes on with other batches than the stage's first ones."""

    def __init__(self, nqm: Any) -> None:
        super().__init__(nqm)
        self.rng = random.Random(0)

    def step(self, lr: float) -> float:
        return super().step(lr) * (1 + 0.05 * self.rng.gauss(0, 1))


def _run(trainable: NQMTrainable) -> ExploreLR:
    cfg = ExploreConfig(init_lr=0.2, lr_min=0.005, lr_max=2.0, total_steps=STEPS, seed=0)
    ctl = ExploreLR(cfg)
    run_controller(
        "explore", trainable, ctl, lambda s: 0.2, total_steps=STEPS, eval_every=100, seed=0
    )
    return ctl


def test_candidates_on_the_same_batches_give_no_advice() -> None:
    ctl = _run(NQMTrainable(NQM(seed=0)))
    assert ctl.stages and "unpaired" not in ctl.stages[0]
    assert ctl.advice() is None


def test_candidates_on_other_batches_are_named_with_what_to_do() -> None:
    ctl = _run(BatchesNotRestored(NQM(seed=0)))
    stage = ctl.stages[0]
    assert set(stage["unpaired"]) == {str(j) for j in range(1, len(stage["candidates"]))} - {
        str(j) for j in stage["skipped"]
    }
    advice = ctl.advice()
    assert advice is not None and advice.startswith("stage 0: candidates restored")
    assert "sampler=" in advice and "extra_state=" in advice and "running average" in advice
    assert "RestorableSampler" in advice
    again = ExploreLR(ctl.config)
    again.load_state_dict(ctl.state_dict())  # a restarted head says it again
    assert again.advice() == advice
