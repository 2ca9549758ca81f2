"""How much history one job keeps in Redis, so that a week-long job stays flat in memory.

Three things would otherwise grow with every report or decision; each is bounded here and
trimmed by the Lua script that writes it, in the same atomic step:

* **Idempotency window** (``append_reports.lua``). A resent report is recognised as a
  duplicate by its ``rank:attempt:step`` among the last :attr:`Retention.seen_per_rank`
  reports stored for its rank. That is enough because of the progress mark: the script
  refuses any triple that is not after its rank's last stored ``(attempt, step)``, so a
  triple can only be a duplicate if it is at or below that mark, and an agent only ever
  resends its own batches that were sent but not confirmed (a reply lost to a dropped
  connection), which are its newest stored reports. The window is per rank, so other ranks
  writing in the meantime cannot push a rank's unconfirmed batch out of it. A triple at or
  below the mark that is not in the window was either never stored or stored so long ago
  that no agent could be resending it; both are refused as a step regression
  (``TT_REGRESSION``), exactly as a never-stored step below the mark was refused before.
* **Reports stream** (``commit.lua``, when the head acknowledges). Entries the head's
  consumer group has acknowledged are needed by nobody: a restarted head replays only the
  pending (delivered, unacknowledged) ones. Each commit that acknowledges reports trims the
  stream to ``XTRIM MINID`` of the oldest entry that some consumer group still has pending
  or has not been delivered yet, but keeps the newest :attr:`Retention.report_tail` entries
  anyway (``tautune status`` and debugging read them). Trimming runs once the stream is
  :attr:`Retention.trim_every` entries over the tail, so its cost is amortised; the number
  of entries trimmed is added to a counter so that the report count stays exact.
* **Decisions** (``commit.lua``, when a decision is written). The history stream keeps the
  newest :attr:`Retention.decision_tail` decisions. The per-stage index (``dec:stages`` and
  ``dec:latest``) keeps the newest :attr:`Retention.stage_tail` stages, and drops an older
  stage only once every step it covers is :attr:`Retention.stage_margin` steps or more
  before the horizon (the last step any worker was promised), so a rank resuming from a
  checkpoint within that margin still gets the very decision the others applied. A claim for
  a step whose stage was dropped is refused (``TT_TRIMMED``), never answered differently.

The defaults keep every decision and stage of any ordinary job (10,000 of each) and bound
an extraordinary one. Memory per job (or trial) is then flat whatever the job's length;
measured with two-metric reports: about 10 bytes per window record (``ranks * 1024``
records), 130 bytes per stream entry (``report_tail`` to ``report_tail + trim_every``
entries), 290 bytes per decision in the history and 420 per stage in the index, so about
1.4 MB for the reports of an 8-rank job and at most about 7 MB more for decisions.

Work per script stays bounded too: a commit trims at most ``10 * trim_every`` report
entries and 16 stages, so a stream an earlier tautune left untrimmed catches up over a few
commits instead of blocking Redis once.

Jobs written by an earlier tautune (same schema version) need nothing done: their stream
and stage index are trimmed from the next commit on, and their set of every stored triple
(:attr:`~trials.keys.JobKeys.legacy_seen`) still answers for a rank until that rank has a
window, and is deleted once every rank that reported has one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tuner.errors import ConfigError


@dataclass(frozen=True)
class Retention:
    """Bounds on one job's history in Redis (see the module docstring for the why).

    Attributes:
        seen_per_rank: Reports per rank remembered for duplicate detection. Must exceed the
            largest batch an agent may resend (its unconfirmed batch: ``flush_every``, 32
            by default, or what it buffered while Redis was unreachable).
        report_tail: Newest report entries kept in the stream even once acknowledged.
        trim_every: Trim the reports stream once it holds this many entries over the tail.
        decision_tail: Newest decisions kept in the history stream.
        stage_tail: Newest stages kept in the per-stage index that claims read.
        stage_margin: An older stage is dropped only once its last covered step is at least
            this many steps before the horizon.
    """

    seen_per_rank: int = 1024
    report_tail: int = 10_000
    trim_every: int = 1_000
    decision_tail: int = 10_000
    stage_tail: int = 10_000
    stage_margin: int = 100_000

    def __post_init__(self) -> None:
        minimum = {"report_tail": 0, "stage_margin": 0}
        for f in fields(self):
            value = getattr(self, f.name)
            least = minimum.get(f.name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"Retention.{f.name} must be an int >= {least}, got {value!r}")


DEFAULT_RETENTION = Retention()
"""What a job keeps unless its :class:`~trials.store.JobStore` is given another bound."""
