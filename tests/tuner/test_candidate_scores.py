"""Scoring of one exploration stage's candidates (tuner.controllers.candidate_scores)."""

from __future__ import annotations

import math
import random

import pytest

from tuner.controllers import candidate_scores as scoring
from tuner.controllers.curves import StepCurve
from tuner.records import DIVERGED_METRIC, Report


def _curve(values: dict[int, float], diverged: tuple[int, ...] = ()) -> StepCurve:
    curve = StepCurve("loss")
    reports = [Report(rank=0, step=s, metrics={"loss": v}) for s, v in values.items()]
    reports += [Report(rank=0, step=s, metrics={DIVERGED_METRIC: 1.0}) for s in diverged]
    curve.add(reports)
    return curve


def _flat(lo: int, hi: int, value: float) -> dict[int, float]:
    return dict.fromkeys(range(lo, hi), value)


def test_parabola_lr_finds_the_vertex_of_a_quadratic_in_log_lr() -> None:
    best = 0.03
    lrs = [0.01, 0.04, 0.16]
    scores = {str(j): 1.0 + (math.log(lr) - math.log(best)) ** 2 for j, lr in enumerate(lrs)}
    assert scoring.parabola_lr(lrs, scores, 1) == pytest.approx(best, rel=1e-9)


def test_parabola_lr_stays_within_the_neighbours_midpoints() -> None:
    lrs = [0.01, 0.04, 0.16]
    # For a best-scored middle candidate the vertex always lies between the midpoints (a
    # parabola's slope at a midpoint is the secant's); when the caller's "winner" is not
    # the lowest, the vertex lies beyond them and is clamped.
    assert scoring.parabola_lr(lrs, {"0": 0.5, "1": 1.0, "2": 3.0}, 1) == pytest.approx(0.02)
    assert scoring.parabola_lr(lrs, {"0": 3.0, "1": 1.0, "2": 0.5}, 1) == pytest.approx(0.08)


def test_parabola_lr_keeps_an_edge_winner_or_one_with_an_unscored_neighbour() -> None:
    lrs = [0.01, 0.04, 0.16]
    assert scoring.parabola_lr(lrs, {"0": 1.0, "1": 2.0, "2": 3.0}, 0) == 0.01
    assert scoring.parabola_lr(lrs, {"1": 1.0, "2": 3.0}, 1) == 0.04


def test_a_blown_up_neighbour_counts_as_infinitely_bad() -> None:
    lrs = [0.03, 0.12, 0.48]
    scores = {"0": 1.35, "1": 1.0, "2": 1.05}  # "2" is a stand-in score: it blew up
    # the limit of the parabola as the neighbour's score grows: the lower midpoint
    assert scoring.parabola_lr(lrs, scores, 1, {2}) == pytest.approx(0.06)
    assert scoring.parabola_lr(lrs, scores, 1) > 0.12  # read as a score, it pulls up
    assert scoring.parabola_lr(lrs, scores, 1, {0}) == pytest.approx(0.24)
    assert scoring.parabola_lr(lrs, scores, 1, {0, 2}) == 0.12


def test_stand_ins_are_probes_with_no_finite_tail_that_were_not_pruned() -> None:
    cands = [
        {"lr": 1.6, "probe": [0, 4], "tail": [4, 8]},
        {"lr": 0.4, "probe": [8, 12], "pruned": {"ref": 0, "gap": 0.2, "t": 5.0}},
        {"lr": 6.4, "probe": [12, 16]},  # blew up
        {"lr": 3.2, "probe": [16, 20], "tail": [20, 24]},  # its tail diverged
        {"lr": 0.1},  # never probed
    ]
    curve = _curve(_flat(0, 24, 1.0), diverged=(22,))
    assert scoring.stand_ins(curve, cands) == {2, 3}


def test_a_candidate_that_made_no_progress_where_another_did_counts_as_blown_up() -> None:
    # From a start of 2.0 (chance-level early in training), 0.12 and 0.03 make progress;
    # 0.48 thrashes at 2.3, short of the blow-up test's 3.0, and ends above the start.
    cands = [
        {"lr": 0.12, "probe": [0, 4], "tail": [4, 8]},
        {"lr": 0.03, "probe": [8, 12], "tail": [12, 16]},
        {"lr": 0.48, "probe": [16, 20], "tail": [20, 24]},
    ]
    values = {**_flat(0, 8, 1.0), **_flat(8, 16, 1.4), **_flat(16, 24, 2.3)}
    values.update({0: 2.0, 8: 2.0, 16: 2.0})  # every probe starts from the snapshot's loss
    curve = _curve(values)
    assert not scoring.blew_up(curve, cands, 2)
    assert scoring.stalled(curve, cands) == {2}
    assert scoring.stand_ins(curve, cands) == {2}
    scores = scoring.cooled_scores(curve, cands)
    lr = scoring.parabola_lr([0.12, 0.03, 0.48], scores, 0, scoring.stand_ins(curve, cands))
    assert lr == pytest.approx(0.06)  # halfway to the neighbour that made progress


def test_nothing_stalls_when_no_candidate_got_below_the_start() -> None:
    cands = [
        {"lr": 0.12, "probe": [0, 4], "tail": [4, 8]},
        {"lr": 0.03, "probe": [8, 12], "tail": [12, 16]},
    ]
    values = {**_flat(0, 8, 2.2), **_flat(8, 16, 2.1), 0: 2.0, 8: 2.0}
    assert scoring.stalled(_curve(values), cands) == set()
    assert scoring.stalled(_curve({}), cands) == set()  # nothing reported: no start loss


def test_clear_top_when_the_largest_wins_by_a_paired_t_or_cut_the_next_one() -> None:
    cands = [
        {"lr": 0.8, "probe": [0, 4], "tail": [4, 10]},
        {"lr": 0.2, "probe": [10, 14], "tail": [14, 20]},
        {"lr": 0.05},  # not probed yet
    ]

    def curve(gap: float, noise: float) -> StepCurve:
        wobble = [noise * (-1) ** k for k in range(6)]
        values = {**_flat(0, 20, 2.0)}
        values.update({4 + k: 1.0 + w for k, w in enumerate(wobble)})
        values.update({14 + k: 1.0 + gap + w * 0.5 for k, w in enumerate(wobble)})
        return _curve(values)

    clear = curve(0.3, 0.01)
    assert scoring.clear_top(clear, cands, scoring.cooled_scores(clear, cands), 2.0)
    close = curve(0.004, 0.01)  # ahead, but by less than the noise: a tie
    assert not scoring.clear_top(close, cands, scoring.cooled_scores(close, cands), 2.0)
    assert scoring.clear_top(close, cands, scoring.cooled_scores(close, cands), 0.0)
    behind = curve(-0.3, 0.01)  # the smaller one won: the next smaller is needed
    assert not scoring.clear_top(behind, cands, scoring.cooled_scores(behind, cands), 2.0)
    # cut halfway against the largest: a clear loss, whatever the t threshold
    cut = [cands[0], {"lr": 0.2, "probe": [10, 12], "pruned": {"ref": 0, "gap": 0.4, "t": 9}}]
    assert scoring.clear_top(close, cut, scoring.cooled_scores(close, cut), 99.0)
    # the largest blew up (no tail): nothing is clear
    blown = [{"lr": 0.8, "probe": [0, 4]}, cands[1]]
    assert not scoring.clear_top(clear, blown, scoring.cooled_scores(clear, blown), 2.0)


def test_a_pruned_candidate_scores_its_reference_plus_the_gap_and_a_blow_up_is_last() -> None:
    cands = [
        {"lr": 1.6, "probe": [0, 8], "tail": [8, 12]},
        {"lr": 0.4, "probe": [12, 16], "pruned": {"ref": 0, "gap": 0.2, "t": 5.0}},
        {"lr": 6.4, "probe": [16, 24]},  # blew up
    ]
    values = {**_flat(0, 24, 5.0), 10: 1.0, 11: 1.0}
    scores = scoring.cooled_scores(_curve(values), cands)
    assert scores["1"] == pytest.approx(1.2)
    assert scores["2"] > scores["1"]  # worse than every score, the pruned one's included
    assert scoring.winner(cands, scores) == 0


def test_probe_gap_pairs_raw_losses_by_offset_from_each_probe_start() -> None:
    # b (probed first, a larger LR) is 0.1 ± 0.01 lower at every offset under shared batch
    # noise of ±0.5; a's step 13 is missing, so pairing by position would misalign.
    noise = [0.0, 0.3, -0.2, 0.5, -0.4, 0.1, 0.2, -0.3, 0.4, -0.1]
    cands = [{"lr": 0.4, "probe": [0, 10]}, {"lr": 0.1, "probe": [10, 20]}]
    values = {s: 1.0 + noise[s] for s in range(10)}
    values |= {10 + s: 1.1 + 0.01 * (-1) ** s + noise[s] for s in range(10) if s != 3}
    gap = scoring.probe_gap(_curve(values), cands, 1, 0)
    assert gap is not None and gap[1] == pytest.approx(0.1, abs=0.01) and gap[0] > 10
    back = scoring.probe_gap(_curve(values), cands, 0, 1)
    assert back is not None and back[0] == pytest.approx(-gap[0])
    assert scoring.probe_gap(_curve(values), [cands[0], {"lr": 0.1}], 0, 1) is None


def test_a_probe_half_again_above_the_start_blew_up_and_a_bump_did_not() -> None:
    cands = [{"lr": 0.1, "probe": [0, 9]}, {"lr": 0.4, "probe": [9, 18]}]
    values = {0: 2.0, **_flat(1, 9, 1.5), **_flat(9, 15, 2.5), **_flat(15, 18, 3.2)}
    curve = _curve(values)
    assert not scoring.blew_up(curve, cands, 0)
    assert scoring.blew_up(curve, cands, 1)  # last third at 3.2 > 2.0 + 0.5 * 2.0
    bump = _curve({**values, **_flat(15, 18, 2.8)})  # 40% above the start
    assert not scoring.blew_up(bump, cands, 1)


def test_a_reported_divergence_anywhere_in_probe_or_tail_blew_up() -> None:
    cands = [{"lr": 0.1, "probe": [0, 9], "tail": [9, 14]}]
    curve = _curve({**_flat(0, 14, 1.0)}, diverged=(12,))
    assert scoring.blew_up(curve, cands, 0)
    assert scoring.measured(curve, cands, 0)


def test_a_probe_without_reports_is_not_measured() -> None:
    cands = [{"lr": 0.1, "probe": [0, 9]}, {"lr": 0.4, "probe": [9, 18]}]
    curve = _curve(_flat(0, 9, 1.0))
    assert scoring.measured(curve, cands, 0)
    assert not scoring.measured(curve, cands, 1)
    assert not scoring.blew_up(curve, cands, 1)


def test_cooled_scores_use_the_end_of_each_tail_and_put_cut_candidates_last() -> None:
    cands = [
        {"lr": 0.1, "probe": [0, 8], "tail": [8, 12]},
        {"lr": 0.4, "probe": [12, 20], "tail": [20, 24]},
        {"lr": 1.6, "probe": [24, 32]},  # cut: no tail
        {"lr": 6.4, "probe": [32, 40], "tail": [40, 44]},  # its tail diverged
    ]
    values = {**_flat(0, 44, 5.0), 10: 1.3, 11: 1.3, 22: 0.9, 23: 0.9}
    scores = scoring.cooled_scores(_curve(values, diverged=(42,)), cands)
    assert scores["0"] == pytest.approx(1.3)
    assert scores["1"] == pytest.approx(0.9)
    assert scores["2"] == scores["3"] > scores["0"]
    assert scoring.winner(cands, scores) == 1


def test_no_scores_until_some_tail_has_ended() -> None:
    cands = [{"lr": 0.1, "probe": [0, 8]}]
    assert scoring.cooled_scores(_curve(_flat(0, 8, 1.0)), cands) == {}
    assert scoring.winner(cands, {}) is None


def test_paired_t_cancels_the_noise_candidates_share() -> None:
    # Both cool-downs see the same batch noise; b is 0.01 lower at every step.
    noise = [0.3, -0.2, 0.5, -0.4, 0.1, 0.2, -0.3, 0.4]
    cands = [{"lr": 0.1, "tail": [0, 8]}, {"lr": 0.4, "tail": [8, 16]}]
    values = {s: 1.0 + noise[s] + (0.001 * s) for s in range(8)}
    values |= {8 + s: 0.99 + noise[s] + (0.002 * s) for s in range(8)}
    t = scoring.paired_t(_curve(values), cands, 1, 0)
    assert t is not None and t < -5  # unpaired, 0.01 against noise of 0.3 would say nothing
    assert scoring.paired_t(_curve(values), cands, 0, 1) == pytest.approx(-t)


def test_paired_t_needs_two_tails_of_three_steps() -> None:
    cands = [{"lr": 0.1, "tail": [0, 2]}, {"lr": 0.4, "tail": [2, 4]}, {"lr": 1.0}]
    curve = _curve(_flat(0, 4, 1.0))
    assert scoring.paired_t(curve, cands, 0, 1) is None
    assert scoring.paired_t(curve, cands, 0, 2) is None


def test_the_reference_is_the_best_cooled_candidate_above_the_lr() -> None:
    cands = [
        {"lr": 6.4, "probe": [0, 4]},  # blew up: a stand-in score, no tail
        {"lr": 1.6, "probe": [4, 8], "tail": [8, 10]},
        {"lr": 0.8, "probe": [10, 14], "tail": [14, 16]},
        {"lr": 0.4, "probe": [16, 20]},
    ]
    scores = {"0": 3.0, "1": 1.2, "2": 1.1}
    assert scoring.reference(cands, scores, 0.4) == 2
    assert scoring.reference(cands, scores, 1.0) == 1  # only larger LRs count
    assert scoring.reference(cands, scores, 1.6) is None  # 6.4 has no cool-down


def test_dominated_needs_a_positive_gap_of_at_least_min_t() -> None:
    noise = [0.0, 0.3, -0.2, 0.5, -0.4, 0.1, 0.2, -0.3]
    cands = [{"lr": 0.4, "probe": [0, 8]}, {"lr": 0.1, "probe": [8, 16]}]

    def curve(gap: float) -> StepCurve:
        values = {s: 1.0 + noise[s] for s in range(8)}
        return _curve(
            values | {8 + s: 1.0 + gap * (1 + 0.1 * (-1) ** s) + noise[s] for s in range(8)}
        )

    cut = scoring.dominated(curve(0.05), cands, 1, 0, min_t=3.0)
    assert cut is not None and cut["ref"] == 0 and cut["gap"] == pytest.approx(0.05, rel=0.1)
    assert cut["t"] is not None and cut["t"] >= 3.0
    assert scoring.dominated(curve(0.05), cands, 1, 0, min_t=1e6) is None
    assert scoring.dominated(curve(-0.05), cands, 1, 0, min_t=0.0) is None  # ahead: kept


def _scattered(lo: int, hi: int, level: float, seed: int) -> dict[int, float]:
    """Batch losses around ``level`` with a heavy upper tail (one batch in six 5x higher),
    as a small regression's squared error scatters."""
    rng = random.Random(seed)
    return {
        s: level * (5.0 if rng.random() < 1 / 6 else rng.uniform(0.5, 1.5)) for s in range(lo, hi)
    }


def test_a_probe_end_that_batch_noise_explains_did_not_blow_up() -> None:
    cands = [{"lr": 0.4, "probe": [100, 112]}]
    before = _scattered(60, 100, 0.2, seed=1)
    # the stage starts on a lucky batch (0.1); the probe's last third, 0.2 to 0.9, is
    # "half again above" it, and no higher than the batches before the stage
    probe = {100: 0.1, **_scattered(101, 108, 0.2, seed=2), 108: 0.2, 109: 0.9, 110: 0.25, 111: 0.2}
    curve = _curve({**before, **probe})
    assert curve.tail_mean(100, 112, 1 / 3) > 0.1 * (1 + scoring.BLOW_UP)  # the old test fired
    assert not scoring.beyond_noise(curve, 100, 100, 112)
    assert not scoring.blew_up(curve, cands, 0)
    # a real blow-up leaves the loss before the stage behind, however it scatters
    blown = _curve({**before, **probe, **_flat(108, 112, 2.0)})
    assert scoring.beyond_noise(blown, 100, 100, 112)
    assert scoring.blew_up(blown, cands, 0)


def test_the_loss_before_the_stage_is_the_stage_starts_not_a_later_candidates() -> None:
    # candidate 1 probes after candidate 0's steps: its reference is the scattered loss
    # before the stage (1.0 and 3.0 in turn), not candidate 0's quiet cool-down (1.0)
    # just before its own probe, against which its end (2.2) would stand far out
    cands = [{"lr": 0.1, "probe": [20, 29], "tail": [29, 34]}, {"lr": 0.4, "probe": [34, 43]}]
    values = {s: 1.0 if s % 2 else 3.0 for s in range(20)}
    values |= {20: 1.0, **_flat(21, 29, 1.8), **_flat(29, 34, 1.0), **_flat(34, 43, 2.2)}
    curve = _curve(values)
    assert scoring.start_loss(curve, cands) == 1.0  # 2.2 is "half again above" it
    assert scoring.beyond_noise(curve, 34, 34, 43)  # against the cool-down before it
    assert not scoring.blew_up(curve, cands, 1)


def test_candidates_that_began_at_another_loss_than_the_stage_are_unpaired() -> None:
    cands = [
        {"lr": 0.4, "probe": [10, 19], "tail": [19, 24]},
        {"lr": 0.1, "probe": [24, 33], "tail": [33, 38]},
        {"lr": 0.025, "probe": [38, 47]},
        {"lr": 1.6, "status": "skipped"},
    ]
    same = {10: 2.0, 24: 2.0 * (1 + 1e-7), 38: 2.0}  # ranks summed in another order
    values = {s: 1.5 for s in range(10, 47)} | same
    assert scoring.unpaired(_curve(values), cands) == {}
    assert scoring.unpaired(_curve(values | {38: 1.7}), cands) == {"2": 1.7}
    # workers that report every 2 steps, from an odd one: compared at the offset the start
    # was reported at
    sparse = {s: 1.5 for s in range(11, 47, 2)} | {11: 2.0, 25: 2.0, 39: 2.3}
    assert scoring.unpaired(_curve(sparse), cands) == {"2": 2.3}
