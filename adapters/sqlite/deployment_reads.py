"""Reads of the SPEC §9 view tables, in portable SQL (part of `SQLFactReader`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainledger.adapters.sqlite.deployment_schema import (
    PROMOTION_COLUMNS,
    PROMOTIONS,
    SHADOW,
    SLOT_COLUMNS,
    SLOT_EVENTS,
)
from trainledger.adapters.sqlite.shadow_hours import hours_shadow_counts
from trainledger.domain.shadow_stats import ShadowCounts
from trainledger.projections.deployment_facts import PromotionFact, SlotFact

NEVER = 2**63 - 1
"""A moment after every event (microseconds): `as_of` None."""

_SETTLED = "settled_at <= ?"
_OPEN = "(settled_at IS NULL OR settled_at > ?)"

SHADOW_COUNTS = (
    "SELECT "
    + ", ".join(
        f"COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)"
        for condition in (
            _SETTLED,
            f"{_SETTLED} AND outcome = 'accepted'",
            f"{_SETTLED} AND outcome = 'rejected'",
            f"{_SETTLED} AND outcome = 'escalated'",
            f"{_SETTLED} AND timed_out = 1",
            f"{_SETTLED} AND threw_exception = 1",
            f"{_SETTLED} AND invalid_output = 1",
            f"{_SETTLED} AND profile_rejected = 1",
            f"{_OPEN} AND routed_at <= ?",
            f"{_OPEN} AND routed_at > ?",
        )
    )
    + f" FROM {SHADOW} WHERE checkpoint_id = ? AND routed_at >= ? AND routed_at <= ?"
)
"""`ShadowCounts` of one checkpoint's observations routed in [?, ?] (the last two), as at
the window's end."""

# The latest decision (slot event) of each checkpoint (profile) at a moment, if it is
# in the state (kind) asked for.
PROMOTABLE_AT = (
    f"SELECT COUNT(*) FROM {PROMOTIONS} p WHERE p.state = 'promotable' AND p.decided_at <= ? "
    f"AND NOT EXISTS (SELECT 1 FROM {PROMOTIONS} q WHERE q.promotion_id = p.promotion_id "
    "AND q.promotion_version > p.promotion_version AND q.decided_at <= ?)"
)
ROUTED_AT = (
    f"SELECT COUNT(*) FROM {SLOT_EVENTS} s WHERE s.kind = 'enable-routing' "
    f"AND s.happened_at <= ? AND NOT EXISTS (SELECT 1 FROM {SLOT_EVENTS} t "
    "WHERE t.slot_id = s.slot_id AND t.slot_version > s.slot_version AND t.happened_at <= ?)"
)


class DeploymentReads:
    """The reads of promotions, slots and observations; mixed into `SQLFactReader`."""

    shadow_hours: bool = False
    """Whether the view keeps counters by hour (`adapters.sqlite.shadow_hours`)."""
    postgres: bool = False

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def promotion_decisions(
        self, checkpoint_ids: Sequence[str] | None, as_of: int | None
    ) -> list[PromotionFact]:
        sql = f"SELECT {PROMOTION_COLUMNS} FROM {PROMOTIONS} WHERE decided_at <= ?"
        params: list[Any] = [NEVER if as_of is None else as_of]
        if checkpoint_ids is not None:
            if not checkpoint_ids:
                return []
            sql += f" AND checkpoint_id IN ({', '.join('?' for _ in checkpoint_ids)})"
            params.extend(checkpoint_ids)
        rows = self._rows(sql + " ORDER BY checkpoint_id, promotion_version", params)
        return [PromotionFact(*row) for row in rows]

    def slot_events(
        self,
        *,
        profiles: Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        as_of: int | None = None,
    ) -> list[SlotFact]:
        sql = f"SELECT {SLOT_COLUMNS} FROM {SLOT_EVENTS} WHERE happened_at <= ?"
        params: list[Any] = [NEVER if as_of is None else as_of]
        if profiles is not None:
            if not profiles:
                return []
            sql += f" AND profile IN ({', '.join('?' for _ in profiles)})"
            params.extend(profiles)
        if checkpoint_id is not None:
            sql += " AND (checkpoint_id = ? OR previous_checkpoint_id = ?)"
            params += [checkpoint_id, checkpoint_id]
        rows = self._rows(sql + " ORDER BY profile, slot_version", params)
        return [SlotFact(*row) for row in rows]

    def shadow_counts(
        self, checkpoint_id: str, window_start: int, window_end: int, cutoff: int
    ) -> ShadowCounts:
        def plain_count(first: int, last: int) -> tuple[str, list[Any]]:
            """The rows routed in [first, last], one by one, as at the window's end."""
            end = window_end
            return SHADOW_COUNTS, [end] * 8 + [end, cutoff, end, cutoff, checkpoint_id, first, last]

        if self.shadow_hours:
            return hours_shadow_counts(
                self._rows,
                plain_count,
                checkpoint_id,
                window_start,
                window_end,
                cutoff,
                postgres=self.postgres,
            )
        (row,) = self._rows(*plain_count(window_start, window_end))
        return ShadowCounts(*(int(value) for value in row))

    def deployment_counts(self, as_of: int | None) -> tuple[int, int]:
        """(promotable checkpoints, routed profiles) at a moment."""
        at = NEVER if as_of is None else as_of
        promotable = self._rows(PROMOTABLE_AT, (at, at))[0][0]
        routed = self._rows(ROUTED_AT, (at, at))[0][0]
        return int(promotable), int(routed)
