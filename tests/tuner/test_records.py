"""Metric values as training loops hand them over: tensors, NumPy scalars, plain floats."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from tuner.errors import InvalidMetricError
from tuner.records import Decision, DecisionKind, Report
from workers.divergence import diverged_if_not_finite


def test_a_loss_tensor_that_requires_grad_is_taken_as_its_value_without_a_warning() -> None:
    w = torch.tensor([1.5], requires_grad=True)
    loss = (w * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float() of such a tensor warns; item() does not
        report = Report(
            rank=0,
            step=3,
            metrics={
                "loss": loss,
                "bf16": torch.tensor(0.25, dtype=torch.bfloat16),
                "np": np.float32(0.5),
                "count": 7,
            },
        )
    assert dict(report.metrics) == {"loss": 3.0, "bf16": 0.25, "np": 0.5, "count": 7.0}
    assert all(type(v) is float for v in report.metrics.values())


@pytest.mark.parametrize(
    "value",
    [torch.ones(2), np.ones(3), "abc", None, [1.0]],
    ids=["tensor", "array", "str", "none", "list"],
)
def test_a_metric_of_several_values_or_none_is_refused_by_name(value: Any) -> None:
    with pytest.raises(
        InvalidMetricError, match=r"metric 'loss' at step 4 \(rank 1\) is not a number"
    ):
        Report(rank=1, step=4, metrics={"loss": value})


def test_a_nan_tensor_is_a_divergence_where_the_rank_can_roll_back() -> None:
    kept = diverged_if_not_finite(
        {"loss": torch.tensor(float("nan"), requires_grad=True), "acc": 0.5}
    )
    assert kept == {"acc": 0.5, "diverged": 1.0}
    with pytest.raises(InvalidMetricError, match="is nan"):
        Report(rank=0, step=0, metrics={"loss": torch.tensor(float("nan"))})


def test_a_decision_reads_as_one_line_in_the_head_log() -> None:
    probe = Decision(
        stage=2,
        kind=DecisionKind.EXPLORE,
        from_step=44,
        until_step=52,
        lr=0.01,
        restore_from=32,
        version=3,
        info={"segment": {"role": "probe", "cand": 1, "scores": {"0": 0.7}}},
    )
    assert (
        probe.brief() == "v3 stage 2 explore steps 44-52 lr 0.01, restore 32 (probe, candidate 1)"
    )
    final = Decision(
        stage=6,
        kind=DecisionKind.COMMIT,
        from_step=68,
        until_step=400,
        lr=0.00762,
        lr_end=0.0,
        version=7,
        mixture={"code": 0.25, "prose": 0.75},
        info={"phase": "anneal", "final": True},
    )
    assert final.brief() == (
        "v7 stage 6 commit steps 68-400 lr 0.00762 -> 0 mixture code=0.25 prose=0.75 "
        "(anneal) [final]"
    )
    hold = Decision(stage=1, kind=DecisionKind.HOLD, from_step=10, snapshot=True, publish=True)
    assert hold.brief() == "v0 stage 1 hold from step 10, snapshot, publish"
