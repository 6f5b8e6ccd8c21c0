"""Checking rows of whole aggregates against the recorded log chain (`verify`'s workers).

The rules are `domain.chain`'s, the only copy: this is the loop that feeds
them the rows a worker reads. A conservative verdict: anything unexpected
counts as unsound, and the one-pass check (`domain.chain.LogVerifier`) then
says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import orjson

from trainledger.domain.chain import LOG_GENESIS, AggregateChains, log_link

LinkedRow = tuple[int, str, int, str, bytes, str | None, str | None]
"""A stored event as the fast check reads it: position, id (32 hex digits), version,
topic, state, and the log chain links recorded at the position before and at its own."""


class FastLogCheck:
    """Check rows of whole aggregates against the recorded log chain.

    Fed the rows of some set of aggregates, in log order (in as many calls as
    suits), it checks that each row has the link the recorder wrote at its
    position, recomputed (`log_link`) from the link at the position before,
    and that it extends its aggregate's chain (`AggregateChains.check`).
    Unlike `LogVerifier` it needs no other row of the log, so the log can be
    checked in parts, one per share of the aggregates.
    """

    def __init__(self) -> None:
        self._chains = AggregateChains()
        self._ids: dict[str, str] = {}  # 32 hex digits: the id as the log chain covers it
        self.checked = 0
        """How many rows passed so far."""

    def check(self, rows: Iterable[LinkedRow]) -> int | None:
        """The position of the first row that does not pass, or None."""
        for row in rows:
            if not self._passes(*row):
                return row[0]
            self.checked += 1
        return None

    def _passes(
        self,
        position: int,
        hex_id: str,
        version: int,
        topic: str,
        raw_state: bytes,
        link_before: str | None,
        link: str | None,
    ) -> bool:
        before = LOG_GENESIS if position == 1 else link_before
        if type(raw_state) is not bytes or before is None:
            return False
        try:
            aggregate_id = self._ids.get(hex_id) or self._aggregate_id(hex_id)
            if log_link(before, position, aggregate_id, version, topic, raw_state) != link:
                return False
            state = orjson.loads(raw_state)
        except (ValueError, TypeError, AttributeError):
            return False
        if not isinstance(state, dict):
            return False
        return self._chains.check(aggregate_id, version, topic, state) is None

    def _aggregate_id(self, hex_id: str) -> str:
        aggregate_id = UUID(hex=hex_id)
        # Only the form the recorder writes: a row in any other names another id.
        if aggregate_id.hex != hex_id:
            raise ValueError(f"{hex_id!r} is not an id as stored")
        self._ids[hex_id] = str(aggregate_id)
        return self._ids[hex_id]
