"""The views split into shares of the aggregates, for `verify`'s worker processes.

Every row of every view table is made by the events of one aggregate: a run's
row and its checkpoint links by the run's, a checkpoint's row, its evals and
its deployability changes by the checkpoint's. So the views a replay of the
whole log makes are the union of what replays of each share of the
aggregates make, and a worker that reads a share of the log to check its
hash chains can replay that share too (`ShareReplay`) and compare it with
the same share of the live views (`live_share`), read in the same
transaction. The parent then compares rows in full only when some share
differs, to say how.

Aggregates are shared out by the first hex digit of their id, as the SQL
`instr('0123456789abcdef', substr(id, 1, 1)) % parts` does (`share_of`).
"""

from __future__ import annotations

import sqlite3

from domain.errors import CorruptStoreError
from projections.facts import PageFacts, ViewDump
from projections.projection import READ_VERSIONS, EventRecord, translate_into
from projections.sqlite_view import (
    CHECKPOINT_COLUMNS,
    CHECKPOINTS,
    DEPLOYABILITY,
    DEPLOYABILITY_COLUMNS,
    EVAL_COLUMNS,
    EVALS,
    LINK_COLUMNS,
    LINKS,
    RUN_COLUMNS,
    RUNS,
)

HEX_DIGITS = "0123456789abcdef"

OWNER_COLUMN: dict[str, int] = {
    "runs": 0,  # run_id
    "links": 0,  # run_id
    "checkpoints": 0,  # checkpoint_id
    "evals": 1,  # checkpoint_id (the eval's own id comes first)
    "deployability": 0,  # checkpoint_id
}
"""For each table of a `ViewDump`, the column holding the id of the aggregate that made the row."""

_SQLITE_TABLES: dict[str, tuple[str, str]] = {
    "runs": (RUNS, RUN_COLUMNS),
    "links": (LINKS, LINK_COLUMNS),
    "checkpoints": (CHECKPOINTS, CHECKPOINT_COLUMNS),
    "evals": (EVALS, EVAL_COLUMNS),
    "deployability": (DEPLOYABILITY, DEPLOYABILITY_COLUMNS),
}
"""Each `ViewDump` table's SQLite table and columns."""


def share_of(aggregate_id: str, parts: int) -> int:
    """Which of `parts` shares an aggregate (32 hex digits) belongs to."""
    return (HEX_DIGITS.find(aggregate_id[:1]) + 1) % parts


def live_share(cursor: sqlite3.Cursor, part: int, parts: int) -> ViewDump:
    """One share of the SQLite views, each table's rows sorted (as `FactReader.dump`)."""
    dump: ViewDump = {}
    for table, (name, columns) in _SQLITE_TABLES.items():
        owner = columns.split(", ")[OWNER_COLUMN[table]]
        rows = cursor.execute(
            f"SELECT {columns} FROM {name} WHERE instr(?, substr({owner}, 1, 1)) % ? = ?",
            (HEX_DIGITS, parts, part),
        ).fetchall()
        rows.sort()
        dump[table] = rows
    return dump


def tracked_position(cursor: sqlite3.Cursor, application_name: str) -> int:
    """The position of the last event the SQLite views applied (0: none)."""
    row = cursor.execute(
        "SELECT notification_id FROM tracking WHERE application_name = ?", (application_name,)
    ).fetchone()
    return int(row[0]) if row else 0


class ShareReplay:
    """The views made by one share of the aggregates, fed their events in log order.

    `dump()` is None when an event would have to be upcast first (the replay
    reads states as stored) or cannot be translated: the caller then
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

    def dump(self) -> ViewDump | None:
        """The share's rows of every view table, sorted (as `FactReader.dump`)."""
        if self._incomplete:
            return None
        batch = self._page.finished()
        # Updates of rows outside the share (left in the batch) change no
        # row here, as in any view.
        return {
            "runs": sorted(batch.runs),
            "links": sorted(batch.links),
            "checkpoints": sorted(batch.checkpoints),
            "evals": sorted(batch.evals),
            "deployability": sorted(batch.deployability),
        }
