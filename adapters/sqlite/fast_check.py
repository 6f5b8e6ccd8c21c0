"""Checking rows of whole aggregates against the recorded log chain (`verify`'s workers).

The rules are `domain.chain`'s, the only copy: this is the loop that feeds
them the rows a worker reads. A conservative verdict: anything unexpected
counts as unsound, and the one-pass check (`domain.chain.LogVerifier`) then
says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

from trainledger.adapters.canonical_json import orjson_canonical_json
from trainledger.domain.chain import LOG_GENESIS, AggregateChains, log_link

LinkedRow = tuple[int, str, int, str, bytes, str | None, str | None]
"""A stored event as the fast check reads it: position, id (32 hex digits), version,
topic, state, and the log chain links recorded at the position before and at its own."""

_STORED_ID = re.compile("[0-9a-f]{32}")
"""An aggregate's id as the events table holds it (`UUID.hex`)."""


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
        self._chains = AggregateChains(orjson_canonical_json)
        self._ids: dict[str, str] = {}  # 32 hex digits: the id as the log chain covers it
        self.checked = 0
        """How many rows passed so far."""

    def check(self, rows: Iterable[LinkedRow]) -> int | None:
        """The position of the first row that does not pass, or None."""
        for position, hex_id, version, topic, raw_state, link_before, link in rows:
            before = LOG_GENESIS if position == 1 else link_before
            if type(raw_state) is not bytes or before is None:
                return position
            try:
                aggregate_id = self._ids.get(hex_id) or self._aggregate_id(hex_id)
                if log_link(before, position, aggregate_id, version, topic, raw_state) != link:
                    return position
                state = orjson.loads(raw_state)
            except (ValueError, TypeError):
                return position
            if not isinstance(state, dict):
                return position
            if self._chains.check(aggregate_id, version, topic, state) is not None:
                return position
            self.checked += 1
        return None

    def _aggregate_id(self, hex_id: str) -> str:
        """The id as the log chain and the hash chain cover it: the UUID's string form."""
        # Only the form the recorder writes: a row with any other names another id.
        if not _STORED_ID.fullmatch(hex_id):
            raise ValueError(f"{hex_id!r} is not an id as stored")
        aggregate_id = f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
        self._ids[hex_id] = aggregate_id
        return aggregate_id
