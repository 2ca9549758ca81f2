"""The scale section's load generator: simulated workers, each sending an append and a
claim per tick, pipelined through :class:`~tuner.bench.cp_capture.CommandCapture`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from tuner.bench.cp_capture import CommandCapture
from tuner.records import Report


@dataclass(frozen=True)
class LoadSpec:
    """How the simulated workers send (see :class:`~tuner.bench.cp_scale.ScaleConfig`)."""

    hz: float
    reports_per_tick: int
    max_batch: int
    p99_limit_ms: float


@dataclass
class Sim:
    """One simulated worker: rank ``rank`` of job ``job``, due at ``phase`` (a fraction of
    the tick) in every tick, reporting ``step`` next."""

    job: int
    rank: int
    phase: float
    step: int = 1


@dataclass
class ThreadResult:
    """What one generator thread measured (seconds) and counted."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    ticks_measured: int = 0
    ticks_sent: int = 0
    reports_sent: int = 0
    errors: int = 0
    first_error: str | None = None
    pipelines: int = 0
    crashed: str | None = None


def job_name(index: int) -> str:
    """Name of the ``index``-th simulated job."""
    return f"cp-scale-{index}"


@dataclass(frozen=True)
class Window:
    """``perf_counter`` times: sending starts, measuring starts, the level ends."""

    start: float
    measure: float
    end: float


def drive(url: str, sims: list[Sim], window: Window, cfg: LoadSpec, out: ThreadResult) -> None:
    """Send ``sims``' ticks due in ``window`` over one connection to ``url``, into ``out``.

    Each batch of the workers due goes in one pipeline; latency is from each worker's due
    time to its replies. An exception ends the thread and is kept in ``out.crashed``.
    """
    cap = CommandCapture(url)
    try:
        _drive_loop(cap, sims, window, cfg, out)
    except Exception as e:  # reported with the level, which then counts as not held
        out.crashed = f"{type(e).__name__}: {e}"
    finally:
        cap.close()


def _drive_loop(
    cap: CommandCapture, sims: list[Sim], window: Window, cfg: LoadSpec, out: ThreadResult
) -> None:
    # Ticks still unsent this long after the window would be over the limit anyway: a
    # generator that far behind leaves them (they count as not sent).
    give_up = window.end + cfg.p99_limit_ms / 1e3
    jobs = {j: cap.job(job_name(j)) for j in sorted({s.job for s in sims})}
    client = cap.client
    sims = sorted(sims, key=lambda s: s.phase)
    period = 1.0 / cfg.hz
    k = cfg.reports_per_tick
    index, cycle = 0, 0
    while True:
        now = time.perf_counter()
        if now > give_up:
            return
        batch: list[tuple[Sim, float]] = []
        while len(batch) < cfg.max_batch:
            sim = sims[index]
            due = window.start + (cycle + sim.phase) * period
            if due > now or due >= window.end:
                break
            batch.append((sim, due))
            index += 1
            if index == len(sims):
                index, cycle = 0, cycle + 1
        if not batch:
            due = window.start + (cycle + sims[index].phase) * period
            if due >= window.end:
                return
            time.sleep(min(max(due - now, 0.0), 0.002))
            continue
        measured = batch[0][1] >= window.measure
        if measured:
            out.lags.append(now - batch[0][1])
        pipe = client.pipeline(transaction=False)
        for sim, _due in batch:
            job = jobs[sim.job]
            reports = [
                Report(rank=sim.rank, step=sim.step + i, metrics={"loss": 1.0 / (sim.step + i)})
                for i in range(k)
            ]
            pipe.execute_command(*cap.capture(partial(job.append_reports, reports)))
            nxt = sim.step + k
            pipe.execute_command(*cap.capture(partial(job.claim, nxt)))
            sim.step = nxt
        sent = time.perf_counter()
        replies = pipe.execute(raise_on_error=False)
        done = time.perf_counter()
        out.pipelines += 1
        if measured:
            out.rtts.append(done - sent)
        for reply in replies:
            if isinstance(reply, Exception):
                out.errors += 1
                out.first_error = out.first_error or str(reply)
        out.ticks_sent += len(batch)
        out.reports_sent += k * len(batch)
        for _sim, due in batch:
            if due >= window.measure:
                out.latencies.append(done - due)
                out.ticks_measured += 1
