"""Which decision covers a step, for one rank of a job.

The answer the store gives is promised until a step (``valid_until``), so it is cached for
that range; the claim for the range after it goes from the agent's background thread
(:meth:`~workers.reporter.Reporter.submit`) a few steps before training gets there. An open
answer (no decision, or one without an end) is promised for ``lookahead_s`` of training at
the measured step rate, and for no more steps than the rank has trained since its first
claim: a head can always place its next decision within the steps trained so far again,
however fast they are (a 400-step run of 0.1 ms steps would otherwise be promised past its
end at its second claim, and nothing tuned). At a sync stage boundary (a decision ended and
the head is alive) training waits for the next decision, for at most ``sync_timeout_s``.

While Redis is unreachable (:class:`~tuner.errors.StoreUnavailableError` from a claim), no
head can write a decision either, so training goes on without blocking: with the decision
it last had wherever that one covers the step, else on the base schedule, while the
background thread keeps the reports and checks, a call at a time, whether Redis is back;
then claims resume at the step training is at.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass

from trials.results import Claim
from trials.store import JobStore
from tuner.errors import ConfigError, StoreUnavailableError
from tuner.records import Decision
from workers.reporter import Reporter


@dataclass
class _Outage:
    """Redis went away when training asked for ``step``'s decision."""

    step: int
    since: float
    check: Future[int] | None = None  # a read sent through the background thread


class DecisionCache:
    """The decisions one rank trains with, looked up by step (the agent's half that reads).

    Args:
        store: The job's store.
        reporter: The agent's background thread (claims ahead, flushes at a boundary).
        rank: Data-parallel rank.
        sync, sync_timeout_s, lookahead, lookahead_s: As for :class:`~workers.agent.Agent`.
        last_reported: The last step the rank reported (a rank that reports every N steps
            says where it waits, at a boundary).
    """

    MAX_LOOKAHEAD = 1024
    """Most steps an open answer is promised for, however fast the steps are."""
    UNATTENDED_FACTOR = 4
    """How much longer an open answer is promised while no head is alive."""
    PREFETCH_STEPS = 4
    """Steps before the end of the cached range at which the next claim is sent."""

    def __init__(
        self,
        store: JobStore,
        reporter: Reporter,
        rank: int,
        *,
        sync: bool,
        sync_timeout_s: float,
        lookahead: int,
        lookahead_s: float,
        last_reported: Callable[[], int],
    ) -> None:
        check_lookahead(lookahead, lookahead_s)
        self.store = store
        self.rank = rank
        self.sync = sync
        self.sync_timeout_s = sync_timeout_s
        self.lookahead = lookahead
        self.lookahead_s = lookahead_s
        self.stall_s = 0.0
        """Seconds spent waiting at sync boundaries."""
        self.decide_at: int | None = None
        """The step whose report the head decides the next stage from (``Decision.decide_at``
        of the decision in force), until the agent has sent it."""
        self._reporter = reporter
        self._last_reported = last_reported
        self._cached: Decision | None = None
        self._cached_from = 0
        self._valid_until = -1
        self._ended_at: int | None = None  # until_step of the last bounded decision applied
        self._prefetch: tuple[int, Future[Claim]] | None = None  # (step, its claim in flight)
        self._rate_mark: tuple[int, float] | None = None  # (step, time) of the last claim
        self._first_claim: int | None = None  # the step of the first claim
        self._head_alive = True  # as the last claim found it
        self._peek: tuple[int, int, Decision | None] = (0, -1, None)
        self._outage: _Outage | None = None

    def decision(self, step: int, *, wait: bool = True) -> Decision | None:
        """The decision covering optimizer ``step``, or ``None`` for the base schedule
        (see :meth:`Agent.decision <workers.agent.Agent.decision>`)."""
        if self._cached_from <= step < self._valid_until:
            if self._prefetch is None and self._valid_until - step <= self.PREFETCH_STEPS and wait:
                self._start_prefetch(self._valid_until, now_at=step)
            return self._cached
        if self._outage is not None and not self._back(step):
            return self._without_store(step)
        try:
            return self._claimed(step, wait=wait)
        except StoreUnavailableError as e:
            self._went_away(step, e)
            return self._without_store(step)

    @property
    def store_down(self) -> bool:
        """Whether Redis was unreachable at the last claim (training goes on without it)."""
        return self._outage is not None

    def _claimed(self, step: int, *, wait: bool) -> Decision | None:
        if not wait:
            lo, hi, cached = self._peek
            if lo <= step < hi:
                return cached
            peek = self.store.claim(step, lookahead=self.lookahead, promise_if_none=True)
            self._peek = (step, peek.valid_until, peek.decision)
            return peek.decision
        # Only at a sync boundary may "no decision yet" be worth waiting for; anywhere else
        # one claim that promises the answer does (one round trip, not two).
        at_boundary = self.sync and self._ended_at == step
        claim = self._prefetched(step)
        if claim is None:
            claim = self.store.claim(
                step, lookahead=self._lookahead(step), promise_if_none=not at_boundary
            )
        if claim.decision is None and at_boundary and claim.head_alive:
            claim = self._wait_at_boundary(step)
        if claim.decision is None and at_boundary:
            claim = self.store.claim(step, lookahead=self.lookahead, promise_if_none=True)
        self._cached = claim.decision
        self._cached_from = step
        self._valid_until = claim.valid_until
        self._head_alive = claim.head_alive
        d = claim.decision
        if d is not None:
            bounded = d.until_step is not None and not d.info.get("final")
            self._ended_at = claim.valid_until if bounded else None
            self.decide_at = d.decide_at if d.decide_at is not None and bounded else None
        return d

    def _lookahead(self, step: int) -> int:
        """Steps an open answer at ``step`` is to be promised for: ``lookahead_s`` (times
        ``UNATTENDED_FACTOR`` while no head is alive) at the step rate since the last claim,
        at most the steps trained since the first claim, within ``[lookahead,
        MAX_LOOKAHEAD]``."""
        now = time.monotonic()
        mark, self._rate_mark = self._rate_mark, (step, now)
        if self._first_claim is None:
            self._first_claim = step
        if mark is None or step <= mark[0] or now <= mark[1]:
            return self.lookahead
        seconds = self.lookahead_s * (1 if self._head_alive else self.UNATTENDED_FACTOR)
        steps = min(seconds * (step - mark[0]) / (now - mark[1]), step - self._first_claim)
        return int(min(max(steps, self.lookahead), self.MAX_LOOKAHEAD))

    def _start_prefetch(self, step: int, *, now_at: int) -> None:
        """Have the background thread claim ``step`` (the first one after the cached range)
        while training is at ``now_at``, with the promise :meth:`decision` would ask for."""
        promise_if_none = not (self.sync and self._ended_at == step)
        lookahead = self._lookahead(now_at)
        future = self._reporter.submit(
            lambda: self.store.claim(step, lookahead=lookahead, promise_if_none=promise_if_none)
        )
        self._prefetch = (step, future)

    def _prefetched(self, step: int) -> Claim | None:
        """The claim sent ahead for ``step``, or ``None`` (none sent, or it failed: the
        caller claims itself, and sees the error if there is one)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is None or prefetch[0] != step:
            return None
        future, deadline = prefetch[1], time.monotonic() + self.sync_timeout_s
        # the thread finds Redis away (its retries done) before the claim queued behind
        # its send fails too: no second round of retries on the training thread
        while not future.done() and not self._reporter.unreachable:
            if time.monotonic() > deadline:
                return None
            wait((future,), timeout=0.05)
        if not future.done():
            raise StoreUnavailableError("Redis is unreachable (the agent's thread found it away)")
        try:
            return future.result()
        except StoreUnavailableError:
            raise  # the thread retried already: no second wait on the training thread
        except Exception:  # the caller's own claim reports it
            return None

    def _went_away(self, step: int, error: StoreUnavailableError) -> None:
        self._outage = _Outage(step, time.monotonic())
        self._prefetch = None
        d = self._cached
        what = (
            f"the decision in force (v{d.version}, until step {d.until_step}), then the base "
            "schedule"
            if d is not None and d.covers(step) and d.until_step is not None
            else "the decision in force"
            if d is not None and d.covers(step)
            else "the base schedule"
        )
        warnings.warn(
            f"tautune: rank {self.rank}: Redis is unreachable at step {step}; training goes on "
            f"with {what}, reports are kept until it is back ({error})",
            stacklevel=5,
        )

    def _without_store(self, step: int) -> Decision | None:
        """What training goes on with while Redis is away: the last decision where it
        covers ``step`` (no head can have replaced it), else the base schedule."""
        d = self._cached
        return d if d is not None and d.covers(step) else None

    def _back(self, step: int) -> bool:
        """Whether Redis answers again; sends one read at a time through the background
        thread (its retries pace them), so the training thread never waits for it."""
        out = self._outage
        assert out is not None
        if out.check is None or (out.check.done() and out.check.exception() is not None):
            out.check = self._reporter.submit(self.store.horizon)
            return False
        if not out.check.done():
            return False
        self._outage = None
        warnings.warn(
            f"tautune: rank {self.rank}: Redis answers again at step {step}, "
            f"{time.monotonic() - out.since:.1f}s after step {out.step}; decisions resume",
            stacklevel=5,
        )
        return True

    def _wait_at_boundary(self, step: int) -> Claim:
        # the head may be waiting for exactly these reports; Redis gone: raises soon
        self._reporter.flush(timeout_s=min(5.0, self.sync_timeout_s))
        if self._last_reported() < step - 1:  # ...or, from a rank that reports every N steps,
            self.store.mark_waiting(self.rank, step)  # for word that no more are coming
        start = time.monotonic()
        delay = 0.002
        while True:
            claim = self.store.claim(step, lookahead=self.lookahead, promise_if_none=False)
            waited = time.monotonic() - start
            if claim.decision is not None or not claim.head_alive:
                break
            if waited > self.sync_timeout_s:
                warnings.warn(
                    f"tautune: rank {self.rank} waited {waited:.1f}s at step {step} for the next "
                    "decision; training on the base schedule until the head catches up",
                    stacklevel=5,
                )
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.stall_s += time.monotonic() - start
        return claim


def check_lookahead(lookahead: int, lookahead_s: float) -> None:
    """Raise :class:`~tuner.errors.ConfigError` for a lookahead no cache can use."""
    if lookahead < 1:
        raise ConfigError(f"lookahead must be >= 1 step, got {lookahead=}")
    if not lookahead_s >= 0:
        raise ConfigError(f"lookahead_s must be >= 0 seconds, got {lookahead_s=}")
