"""Reports whose values are read in the background (GPU tensors): read in one copy per
batch, checked as floats are (divergence, refusal), and a refusal raised in the training
thread at its next call with the good reports of the batch stored. The pending reports here
hold CPU tensors, built directly, so the logic runs without a GPU; the CUDA path itself
(``PendingReport.of`` a CUDA tensor, no synchronization) is in ``test_devices.py``."""

from __future__ import annotations

import math
import time

import pytest
import torch

from trials.store import Store
from tuner.errors import InvalidMetricError
from tuner.records import DIVERGED_METRIC, Report
from workers.agent import Agent
from workers.device_metrics import PendingReport, on_device, resolve
from workers.reporter import Reporter


def _pending(step: int, loss: float, *, divergence: bool = False, **extra: float) -> PendingReport:
    return PendingReport(
        rank=0,
        step=step,
        attempt=0,
        metrics={
            "loss": torch.tensor(loss),
            "acc": torch.tensor(0.5, dtype=torch.float16),
            **extra,
        },
        divergence=divergence,
        applied={"lr": 0.25, "decision_version": 3.0},
    )


def test_metrics_on_the_cpu_are_not_deferred() -> None:
    assert not on_device(1.0) and not on_device(torch.tensor(1.0))
    assert not on_device(torch.tensor(1.0).numpy())
    metrics = {"loss": torch.tensor(2.0), "lr": 0.1}
    assert PendingReport.of(0, 5, 0, metrics, divergence=False, applied={}) is None


def test_a_batch_is_read_in_order_with_the_reports_around_it() -> None:
    plain = Report(rank=0, step=1, metrics={"loss": 3.0})
    batch = [plain, _pending(2, 2.5, lr=0.1), _pending(3, 2.25)]
    reports, errors = resolve(batch)
    assert errors == []
    assert [r.step for r in reports] == [1, 2, 3]
    assert reports[0] is plain
    assert dict(reports[1].metrics) == {"loss": 2.5, "acc": 0.5, "lr": 0.1}
    assert reports[2].metrics["loss"] == 2.25
    assert all(type(v) is float for r in reports for v in r.metrics.values())
    assert reports[1].ts == batch[1].ts  # when it was reported, not when it was read


def test_a_non_finite_value_of_an_exploring_rank_is_a_divergence() -> None:
    reports, errors = resolve([_pending(7, math.nan, divergence=True)])
    assert errors == []
    assert dict(reports[0].metrics) == {"acc": 0.5, DIVERGED_METRIC: 1.0}


def test_a_non_finite_value_elsewhere_is_refused_and_the_rest_kept() -> None:
    reports, errors = resolve([_pending(7, 1.0), _pending(8, math.inf), _pending(9, 0.5)])
    assert [r.step for r in reports] == [7, 9]
    assert len(errors) == 1
    message = str(errors[0])
    assert "'loss' at step 8" in message and "inf" in message
    assert "LR in force was 0.25 (tautune decision v3)" in message  # what report() says


def test_values_that_cannot_be_read_are_refused_and_the_rest_kept() -> None:
    # Reading fails for a whole copy (on a GPU: an earlier kernel's error surfacing);
    # here a tensor of two elements, which PendingReport.of would have refused up front.
    bad = PendingReport(0, 4, 0, {"loss": torch.ones(2)}, divergence=False)
    reports, errors = resolve([Report(rank=0, step=3, metrics={"loss": 1.0}), bad])
    assert [r.step for r in reports] == [3]
    assert len(errors) == 1 and "steps 4..4 (rank 0) could not be read from cpu" in str(errors[0])


def test_a_refused_value_is_raised_at_the_next_call_and_loses_nothing(store: Store) -> None:
    job = store.job("pending")
    reporter = Reporter(job, 0, flush_every=1000, flush_interval_s=60.0)
    try:
        reporter.add(_pending(0, 1.0))
        reporter.add(_pending(1, math.nan))
        reporter.add(Report(rank=0, step=2, metrics={"loss": 0.75}))
        with pytest.raises(InvalidMetricError, match=r"'loss' at step 1 .* nan"):
            reporter.flush()
        assert [r.step for r in job.all_reports()] == [0, 2]
        reporter.add(_pending(3, 0.5))  # the error was raised once; the rank goes on
        reporter.flush()
        assert [r.step for r in job.all_reports()] == [0, 2, 3]
    finally:
        reporter.close()


def test_close_releases_the_lease_after_a_refused_value(store: Store) -> None:
    job = store.job("pending-close")
    reporter = Reporter(job, 0, flush_every=1000, flush_interval_s=60.0)
    reporter.add(Report(rank=0, step=0, metrics={"loss": 1.0}))
    reporter.flush()
    deadline = time.monotonic() + 10  # the background thread takes the lease as it starts
    while 0 not in job.alive_workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 0 in job.alive_workers()
    reporter.add(_pending(1, math.nan))
    with pytest.raises(InvalidMetricError, match="step 1"):
        reporter.close()
    assert 0 not in job.alive_workers()
    assert [r.step for r in job.all_reports()] == [0]


def test_agent_report_with_cpu_tensors_is_read_at_once(store: Store) -> None:
    agent = Agent(store.job("cpu-tensor"), 0)
    try:
        with pytest.raises(InvalidMetricError, match=r"'loss' at step 0 .* nan"):
            agent.report(0, loss=torch.tensor(math.nan))  # on the CPU: refused here
        agent.report(1, loss=torch.tensor(0.5))
        agent.flush()
        assert [dict(r.metrics) for r in store.job("cpu-tensor").all_reports()] == [{"loss": 0.5}]
    finally:
        agent.close()
