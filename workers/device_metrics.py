"""Metrics still on the accelerator, read in the agent's background thread.

``agent.report(step, loss=loss)`` with a CUDA tensor must not make the training loop wait
for the GPU: reading a value (``item()``) blocks until every kernel queued before it has
run, so a loop that does it every step keeps the GPU from running ahead of Python. The
agent keeps such a tensor (detached, with the stream it was made on) in a
:class:`PendingReport`; the reporter reads every value of a batch with one copy per stream
when it sends the batch (:func:`resolve`). A value that turns out NaN or infinite is dealt
with as ``report()`` deals with a float: a diverged candidate on a rank that is exploring
from a snapshot, otherwise an :class:`~tuner.errors.InvalidMetricError`, raised in the
training thread at its next call and naming the step; the report is dropped.

Metrics on the CPU (floats, CPU tensors, NumPy values) are read at once, as before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from tuner.errors import InvalidMetricError
from tuner.records import Report
from workers.divergence import diverged_if_not_finite, divergence_hint


def on_device(value: Any) -> bool:
    """Whether ``value`` is a tensor whose value must be copied off an accelerator."""
    return isinstance(value, torch.Tensor) and value.device.type != "cpu"


@dataclass(frozen=True)
class PendingReport:
    """A report whose metrics include tensors on an accelerator, not yet read.

    Attributes:
        divergence: The rank was exploring from a snapshot at ``step``: a non-finite value
            becomes ``diverged=1`` instead of an error.
        applied: What the scheduler applied at ``step`` (named in an error's message).
    """

    rank: int
    step: int
    attempt: int
    metrics: Mapping[str, Any]
    divergence: bool
    applied: Mapping[str, float] = field(default_factory=dict)
    streams: Mapping[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        rank: int,
        step: int,
        attempt: int,
        metrics: Mapping[str, Any],
        divergence: bool,
        applied: Mapping[str, float],
    ) -> PendingReport | None:
        """The pending report of ``metrics``, or ``None`` when none is on an accelerator.

        Raises:
            InvalidMetricError: a tensor on an accelerator holds other than one element
                (its shape is known without reading it).
        """
        names = [k for k, v in metrics.items() if on_device(v)]
        if not names:
            return None
        kept: dict[str, Any] = dict(metrics)
        streams: dict[str, Any] = {}
        for name in names:
            t: torch.Tensor = metrics[name]
            if t.numel() != 1:
                raise InvalidMetricError(
                    f"metric {name!r} at step {step} (rank {rank}) is a tensor of shape "
                    f"{tuple(t.shape)}; report one number (e.g. loss.mean())"
                )
            kept[name] = t.detach()
            if t.device.type == "cuda":
                streams[name] = torch.cuda.current_stream(t.device)
        return cls(rank, step, attempt, kept, divergence, applied, streams)

    def report(self, values: Mapping[str, float]) -> Report:
        """The report with the device values read (``values``), checked as ``report()``
        checks floats."""
        metrics = {**self.metrics, **values}
        if self.divergence:
            metrics = diverged_if_not_finite(metrics)
        try:
            return Report(
                rank=self.rank,
                step=self.step,
                metrics=metrics,
                attempt=self.attempt,
                ts=self.ts,
            )
        except InvalidMetricError as e:
            raise InvalidMetricError(f"{e}{divergence_hint(dict(self.applied))}") from None


def resolve(
    batch: Sequence[Report | PendingReport],
) -> tuple[list[Report], list[InvalidMetricError]]:
    """``batch`` with the tensors of its pending reports read: one copy per device and
    stream for the whole batch. Reports whose values are refused are left out, and their
    errors returned."""
    groups: dict[tuple[torch.device, Any], list[tuple[int, str]]] = {}
    for i, item in enumerate(batch):
        if isinstance(item, PendingReport):
            for name, value in item.metrics.items():
                if isinstance(value, torch.Tensor):
                    key = (value.device, item.streams.get(name))
                    groups.setdefault(key, []).append((i, name))
    read: dict[int, dict[str, float]] = {}
    unread: set[int] = set()
    errors: list[InvalidMetricError] = []
    for (device, stream), where in groups.items():
        tensors = [cast(torch.Tensor, batch[i].metrics[name]) for i, name in where]
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                # after the kernels that made them, on the stream that made them
                values = torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist()
        except RuntimeError as e:  # e.g. an earlier kernel's CUDA error, surfacing here
            steps = sorted({batch[i].step for i, _ in where})
            errors.append(
                InvalidMetricError(
                    f"metrics of steps {steps[0]}..{steps[-1]} (rank {batch[0].rank}) could "
                    f"not be read from {device}: {str(e).splitlines()[0]}"
                )
            )
            unread.update(i for i, _ in where)
            continue
        for (i, name), value in zip(where, values, strict=True):
            read.setdefault(i, {})[name] = value
    reports: list[Report] = []
    for i, item in enumerate(batch):
        if isinstance(item, Report):
            reports.append(item)
        elif i not in unread:
            try:
                reports.append(item.report(read.get(i, {})))
            except InvalidMetricError as e:
                errors.append(e)
    return reports, errors
