"""What shadow statistics mean (SPEC §9.2), without the aggregates' models.

A view counts a checkpoint's observations in a window (`ShadowCounts`);
`shadow_statistics` turns the counts into rates. An observation belongs to
the window it was routed in. It is settled once completed, or, while still
pending, once it is older than `SHADOW_TIMEOUT`: it then counts as settled
`timed_out` (outcome rejected, signal timedOut) in every statistic, so
pending work never leaves the denominator. Observations routed less than
`SHADOW_TIMEOUT` before the window's end and not completed are in flight:
counted apart (`pendingCount`), in no rate.

A module of its own, free of pydantic: queries read it (start-up time).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, get_args

ShadowOutcome = Literal["accepted", "rejected", "escalated"]
SHADOW_OUTCOMES: tuple[str, ...] = get_args(ShadowOutcome)
SIGNALS = ("timedOut", "threwException", "invalidOutput", "profileRejected")
"""The signals a completion may carry, as the contract names them."""

SHADOW_TIMEOUT = timedelta(hours=1)
"""A pending observation older than this counts as settled `timed_out`."""
MIN_SETTLED = 5
"""Settled observations needed for shadow evidence to count (`significant`)."""
DEFAULT_WINDOW = timedelta(hours=24)
"""The window the gate reads shadow evidence from, and `shadow stats`' default."""


class ShadowCounts(NamedTuple):
    """A checkpoint's observations routed in a window, as a view counts them at its end.

    `completed_*` count completed observations only; `overdue` the pending
    ones older than `SHADOW_TIMEOUT` at the window's end; `pending` the ones
    still in flight.
    """

    completed: int = 0
    accepted: int = 0
    rejected: int = 0
    escalated: int = 0
    timed_out: int = 0
    threw_exception: int = 0
    invalid_output: int = 0
    profile_rejected: int = 0
    overdue: int = 0
    pending: int = 0


class Observed(Protocol):
    """An observation as a count reads it (times in one unit: micros or datetimes)."""

    @property
    def routed_at(self) -> Any: ...
    @property
    def settled_at(self) -> Any: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def timed_out(self) -> Any: ...
    @property
    def threw_exception(self) -> Any: ...
    @property
    def invalid_output(self) -> Any: ...
    @property
    def profile_rejected(self) -> Any: ...


def count_observations(
    observations: Iterable[Observed], window_start: Any, window_end: Any, cutoff: Any
) -> ShadowCounts:
    """The counts of the observations routed in [window_start, window_end], as they stood
    at window_end (the views' SQL counts the same; the memory view and `import-seed` call
    this)."""
    counts = [0] * len(ShadowCounts._fields)
    for o in observations:
        if not window_start <= o.routed_at <= window_end:
            continue
        if o.settled_at is not None and o.settled_at <= window_end:
            flags = (
                True,
                o.outcome == "accepted",
                o.outcome == "rejected",
                o.outcome == "escalated",
                bool(o.timed_out),
                bool(o.threw_exception),
                bool(o.invalid_output),
                bool(o.profile_rejected),
            )
            for index, flag in enumerate(flags):
                counts[index] += flag
        elif o.routed_at <= cutoff:
            counts[8] += 1
        else:
            counts[9] += 1
    return ShadowCounts(*counts)


def timeout_cutoff(window_end: datetime) -> datetime:
    """Observations routed at or before this moment and not completed by `window_end` are
    settled as timed out."""
    return window_end - SHADOW_TIMEOUT


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def shadow_statistics(
    counts: ShadowCounts, window_start: datetime, window_end: datetime, iso: Any
) -> dict[str, Any]:
    """The `shadow stats` document of these counts (`iso` prints a moment)."""
    total = counts.completed + counts.overdue
    rejected = counts.rejected + counts.overdue
    return {
        "totalCount": total,
        "acceptedCount": counts.accepted,
        "rejectedCount": rejected,
        "escalatedCount": counts.escalated,
        "pendingCount": counts.pending,
        "timedOutCount": counts.timed_out + counts.overdue,
        "rejectRate": _rate(rejected, total),
        "escalationRate": _rate(counts.escalated, total),
        "acceptanceRate": _rate(counts.accepted, total),
        "timedOutRate": _rate(counts.timed_out + counts.overdue, total),
        "threwExceptionRate": _rate(counts.threw_exception, total),
        "invalidOutputRate": _rate(counts.invalid_output, total),
        "profileRejectedRate": _rate(counts.profile_rejected, total),
        "significant": total >= MIN_SETTLED,
        "windowStart": iso(window_start),
        "windowEnd": iso(window_end),
    }


class ShadowEvidence(NamedTuple):
    """What the promotion gate reads of shadow statistics."""

    settled: int
    arbiter_reject_rate: float
    executability_reject_rate: float

    @classmethod
    def of(cls, statistics: dict[str, Any]) -> ShadowEvidence:
        """The gate's rates: arbiter = rejectRate; executability =
        min(1, escalationRate + profileRejectedRate)."""
        return cls(
            statistics["totalCount"],
            statistics["rejectRate"],
            min(1.0, statistics["escalationRate"] + statistics["profileRejectedRate"]),
        )

    @property
    def significant(self) -> bool:
        return self.settled >= MIN_SETTLED
