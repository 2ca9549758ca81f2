"""What the store's reads and writes return: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass

from tuner.records import Decision, Report


@dataclass(frozen=True)
class AppendResult:
    written: int
    duplicates: int


@dataclass(frozen=True)
class ReadBatch:
    """Reports read through the head's consumer group.

    Attributes:
        reports: ``(entry_id, report)`` in stream order.
        malformed: ``(entry_id, reason)`` of entries that are not tautune reports. They stay
            in the stream untouched; acknowledge them so they are not delivered again.
    """

    reports: list[tuple[str, Report]]
    malformed: list[tuple[str, str]]
    last_id: str | None = None
    """Id of the last entry read (stream order), or ``None`` when nothing was read."""

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.reports] + [i for i, _ in self.malformed]


@dataclass(frozen=True)
class Claim:
    """The store's answer for a step: the covering decision (or none) until ``valid_until``."""

    decision: Decision | None
    valid_until: int
    head_alive: bool
