"""The views split into shares of the aggregates, each summed up by a digest per table.

Every row of every view table is made by the events of one aggregate: a run's
row and its checkpoint links by the run's, a checkpoint's row, its evals and
its deployability changes by the checkpoint's. So the views a replay of the
whole log makes are the union of what replays of each share of the
aggregates make, and `verify`'s worker processes, which read a share of the
log each to check its hash chains, can replay that share too and send back
only a digest per table. The parent compares them with the same digests of
the live views (`share_digests`), and compares rows in full only when some
digest differs, to say how.

Aggregates are shared out by the first hex digit of their id, as the SQL
`instr('0123456789abcdef', substr(id, 1, 1)) % parts` does (`share_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from domain.errors import CorruptStoreError
from projections.facts import PageFacts, ViewDump
from projections.projection import READ_VERSIONS, EventRecord, translate_into

HEX_DIGITS = "0123456789abcdef"

OWNER_COLUMN: dict[str, int] = {
    "runs": 0,  # run_id
    "links": 0,  # run_id
    "checkpoints": 0,  # checkpoint_id
    "evals": 1,  # checkpoint_id (the eval's own id comes first)
    "deployability": 0,  # checkpoint_id
}
"""For each table of a `ViewDump`, the column holding the id of the aggregate that made the row."""

ShareDigests = dict[str, str]
"""A share's digest of each view table."""


def share_of(aggregate_id: str, parts: int) -> int:
    """Which of `parts` shares an aggregate (32 hex digits) belongs to."""
    return (HEX_DIGITS.find(aggregate_id[:1]) + 1) % parts


def table_digest(rows: Iterable[tuple[Any, ...]]) -> str:
    """A digest of a table's rows, in their order: equal for equal rows of equal types."""
    return hashlib.sha256(orjson.dumps(list(rows), default=tuple)).hexdigest()


def share_digests(dump: ViewDump, parts: int) -> list[ShareDigests]:
    """The digests of every share of the views, from a dump of them."""
    shares: list[dict[str, list[tuple[object, ...]]]] = [
        {table: [] for table in dump} for _ in range(parts)
    ]
    for table, rows in dump.items():
        column = OWNER_COLUMN[table]
        tables = [share[table] for share in shares]
        for row in rows:
            owner = row[column]
            tables[share_of(owner if isinstance(owner, str) else "", parts)].append(row)
    return [{table: table_digest(rows) for table, rows in share.items()} for share in shares]


class ShareReplay:
    """The views made by one share of the aggregates, fed their events in log order.

    `digests()` is None when an event would have to be upcast first (the
    replay reads states as stored) or cannot be translated: the caller then
    compares in full, which says why.
    """

    def __init__(self) -> None:
        self._page = PageFacts()
        self._incomplete = False

    def add(self, records: list[EventRecord]) -> None:
        """Translate a stretch of the share's events (in log order)."""
        if self._incomplete:
            return
        read_versions = READ_VERSIONS
        for record in records:
            needed = read_versions.get(record.topic, 1)
            if needed > 1 and record.state.get("class_version", 1) < needed:
                self._incomplete = True
                return
        try:
            translate_into(self._page, records)
        except CorruptStoreError:
            self._incomplete = True

    def digests(self) -> ShareDigests | None:
        if self._incomplete:
            return None
        batch = self._page.finished()
        # As a view is dumped: every row sorted. Updates of rows outside the
        # share (left in the batch) change no row here, as in any view.
        dump: ViewDump = {
            "runs": sorted(batch.runs),
            "links": sorted(batch.links),
            "checkpoints": sorted(batch.checkpoints),
            "evals": sorted(batch.evals),
            "deployability": sorted(batch.deployability),
        }
        return {table: table_digest(rows) for table, rows in dump.items()}
