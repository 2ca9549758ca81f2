"""The population ``explore``'s pick when two candidates' cool-downs tie (pure logic)."""

from __future__ import annotations

import math
import random

import pytest

from tuner.controllers.curves import StepCurve
from tuner.controllers.explore_config import ExploreConfig
from tuner.controllers.population_rounds import pick, score_rounds
from tuner.records import Report

LRS = [0.25, 1.0, 4.0]  # init_lr ×{¼, 1, 4}
ROUNDS = [{"from": 0, "tail": 10, "until": 20, "cands": LRS}]


def _curves(ends: list[float], wobble: float) -> list[StepCurve]:
    """Three trials from one state (start loss 2.0): the same batches give every trial the
    same batch noise at the same offset. Trial j's cool-down (steps 10..19) ends at
    ``ends[j]`` plus that noise; at steps 15 and 16 each trial also moves by ``±wobble`` of
    its own (signs alternating by trial), which the paired t sees and the score (the mean
    of the last quarter, steps 17..19) does not."""
    rng = random.Random(0)
    shared = [rng.gauss(0, 0.2) for _ in range(20)]
    curves = []
    for j, end in enumerate(ends):
        sign = 1 if j % 2 == 0 else -1
        own = {15: sign * wobble, 16: -sign * wobble}
        values = [2.0] + [1.5 + shared[s] for s in range(1, 10)]
        values += [end + shared[s] + own.get(s, 0.0) for s in range(10, 20)]
        curve = StepCurve()
        curve.add([Report(rank=0, step=s, metrics={"loss": v}) for s, v in enumerate(values)])
        curves.append(curve)
    return curves


def _config(tie_t: float = 2.0) -> ExploreConfig:
    return ExploreConfig(init_lr=1.0, lr_min=1e-3, lr_max=1e3, total_steps=1000, tie_t=tie_t)


def _pick(curves: list[StepCurve], tie_t: float = 2.0) -> dict:
    chosen = pick(curves, ROUNDS, score_rounds(curves, ROUNDS, [False] * 3), _config(tie_t))
    assert chosen is not None
    return chosen


def test_a_small_lr_that_beats_init_lr_by_noise_ties_with_it() -> None:
    # 0.25 ends lowest by 0.002, well within the trials' own noise: a tie with init_lr's
    chosen = _pick(_curves([0.998, 1.0, 1.3], wobble=0.1))
    assert chosen["best"] == 0 and chosen["tie"] == 1
    assert chosen["tie_t"] is not None and abs(chosen["tie_t"]) < 2
    assert chosen["lr"] == pytest.approx(math.sqrt(0.25 * 1.0))
    assert chosen["win"] == 1  # trained on from the larger one's steps


def test_a_clear_winner_does_not_tie() -> None:
    chosen = _pick(_curves([0.8, 1.0, 1.3], wobble=0.001))
    assert chosen["best"] == chosen["win"] == 0 and chosen["tie"] is None
    assert chosen["tie_t"] is not None and chosen["tie_t"] < -2
    assert chosen["lr"] == pytest.approx(0.25)  # at the edge: its own LR


def test_an_edge_winner_that_ties_its_neighbour_goes_between_them() -> None:
    chosen = _pick(_curves([1.3, 1.0, 0.998], wobble=0.1))
    assert chosen["best"] == 2 and chosen["tie"] == 1 and chosen["win"] == 2
    assert chosen["lr"] == pytest.approx(2.0)


def test_tie_t_zero_turns_ties_off() -> None:
    chosen = _pick(_curves([0.998, 1.0, 1.3], wobble=0.1), tie_t=0)
    assert chosen["tie"] is None and chosen["tie_t"] is None and chosen["win"] == 0


def test_a_candidate_that_blew_up_is_never_a_tie_partner() -> None:
    # the middle candidate's loss reads level with the edge winner's, but a worker said it
    # diverged: the winner is paired with the other one instead, which it beats clearly
    curves = _curves([1.3, 0.999, 0.998], wobble=0.1)
    curves[1].add([Report(rank=0, step=12, metrics={"diverged": 1.0})])
    chosen = _pick(curves)
    assert chosen["best"] == chosen["win"] == 2 and chosen["tie"] is None


def test_batch_noise_above_a_lucky_start_is_no_blow_up_and_the_stage_still_picks() -> None:
    # Batch losses scatter widely before the stage (0.1 to 0.95) and the stage starts on
    # a lucky batch (0.12): every trial's probe ends "half again above" it, as the noise
    # puts it, and before, every candidate counted as blown up and the stage picked none.
    rng = random.Random(3)
    before = [rng.choice([0.1, 0.15, 0.2, 0.25, 0.95]) for _ in range(40)]
    rounds = [{"from": 40, "tail": 52, "until": 58, "cands": LRS}]
    probe = [0.12, 0.08, 0.3, 0.06, 0.08, 0.13, 0.78, 0.35, 0.46, 0.09, 0.56, 0.17]
    curves = []
    for end in (0.16, 0.15, 0.17):
        values = before + probe + [end] * 6
        curve = StepCurve()
        curve.add([Report(rank=0, step=s, metrics={"loss": v}) for s, v in enumerate(values)])
        curves.append(curve)
    scored = score_rounds(curves, rounds, [False] * 3)
    assert scored[2] == set()  # nothing blew up
    chosen = pick(curves, rounds, scored, _config())
    assert chosen is not None and chosen["best"] == 1
    # the same probe ends far above everything before the stage: all three blew up
    blown = []
    for _ in range(3):
        curve = StepCurve()
        values = before + probe[:8] + [3.0] * 4 + [0.2] * 6
        curve.add([Report(rank=0, step=s, metrics={"loss": v}) for s, v in enumerate(values)])
        blown.append(curve)
    assert score_rounds(blown, rounds, [False] * 3)[2] == {0, 1, 2}
