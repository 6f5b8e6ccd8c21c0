"""The views split into shares of the aggregates, for `verify`'s worker processes.

Every row of every view table is made by the events of one aggregate: a run's
row and its checkpoint links by the run's, a checkpoint's row, its evals and
its deployability changes by the checkpoint's. So the views a replay of the
whole log makes are the union of what replays of each share of the
aggregates make, and a worker that reads a share of the log to check its
hash chains can replay that share too (`ShareReplay`) and compare it with
the same share of the live views (`live_rows`), read in the same
transaction: both in log order, the order the views write their rows in, so
they compare without sorting (`same_views`; sorted where the orders differ).
The parent then compares rows in full only when some share differs, to say
how.

Aggregates are shared out by ranges of their ids (`share_of`), which SQLite
tells from a comparison of the id column (`share_condition`), scanning a
table in order or walking an index of the column: the first four hex digits
split as evenly as they go.
"""

from __future__ import annotations

import bisect
import functools
import sqlite3
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from trainledger.adapters.memory.deployment_view import DeploymentTables
from trainledger.adapters.sqlite.view_schema import DUMP_TABLES, SELECT_POSITION
from trainledger.domain.errors import CorruptStoreError
from trainledger.projections.facts import PageFacts, ViewDump
from trainledger.projections.projection import (
    READ_VERSIONS,
    EventRecord,
    stored_class_version,
    translate_into,
)

HEX_DIGITS = "0123456789abcdef"

OWNER_COLUMN: dict[str, int] = {
    "runs": 0,  # run_id
    "links": 0,  # run_id
    "checkpoints": 0,  # checkpoint_id
    "evals": 1,  # checkpoint_id (the eval's own id comes first)
    "deployability": 0,  # checkpoint_id
    "promotions": 0,  # promotion_id
    "slot_events": 0,  # slot_id
    "shadow": 0,  # observation_id
}
"""For each table of a `ViewDump`, the column holding the id of the aggregate that made the row."""

ORDER: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "runs": itemgetter(0),
    "links": itemgetter(0, 1),  # run_id, run_version
    "checkpoints": itemgetter(0),
    "evals": itemgetter(0),
    "deployability": itemgetter(0, 1),  # checkpoint_id, checkpoint_version
    "promotions": itemgetter(0, 2),  # promotion_id, promotion_version
    "slot_events": itemgetter(0, 2),  # slot_id, slot_version
    "shadow": itemgetter(0),
}
"""How both sides sort a share's rows: by each table's key (cheaper than whole rows).

Rows with equal keys (only in views gone wrong) may then keep different
orders on the two sides: they compare as different, and the parent's full
comparison, which sorts whole rows, says whether they are."""


IN_LOG_ORDER = frozenset({"runs", "links", "checkpoints", "evals", "deployability"})
"""The tables whose rows the views append as they apply the log (their rowid order is
log order) and a replay makes in log order too; the few rows of the others (SPEC §9)
are compared sorted."""


ID_SPACE = len(HEX_DIGITS) ** 4
"""Shares are ranges of the first four hex digits of the ids: at most this many."""


@functools.cache
def _bounds(parts: int) -> tuple[str, ...]:
    """Where shares 1.. of `parts` begin: four hex digits each."""
    if not 1 <= parts <= ID_SPACE:
        raise ValueError(f"between 1 and {ID_SPACE} shares, not {parts}")
    return tuple(f"{ID_SPACE * part // parts:04x}" for part in range(1, parts))


def share_of(aggregate_id: str, parts: int) -> int:
    """Which of `parts` shares an aggregate (32 hex digits) belongs to.

    Any string belongs to exactly one share, as with `share_condition`.
    """
    return bisect.bisect_right(_bounds(parts), aggregate_id)


def share_condition(
    column: str, part: int, parts: int, *, scan: bool = True
) -> tuple[str, tuple[str, ...]]:
    """An SQL condition (and its parameters) true for the rows of one share.

    With `scan` the column is compared as `+column`, so that SQLite scans
    the table in rowid order rather than walk an index of it (cheaper when
    the share is a large part of the table); without, it walks the index.
    """
    bounds = _bounds(parts)
    operand = f"+{column}" if scan else column
    conditions, params = [], []
    if part > 0:
        conditions.append(f"{operand} >= ?")
        params.append(bounds[part - 1])
    if part < parts - 1:
        conditions.append(f"{operand} < ?")
        params.append(bounds[part])
    return " AND ".join(conditions) or "1", tuple(params)


def live_share(cursor: sqlite3.Cursor, part: int, parts: int, *, scan: bool = True) -> ViewDump:
    """One share of the SQLite views, each table's rows in `ORDER`.

    `scan` as for `share_condition` (every owner column has an index).
    """
    rows = live_rows(cursor, part, parts, scan=scan)
    return {table: sorted(found, key=ORDER[table]) for table, found in rows.items()}


def live_rows(cursor: sqlite3.Cursor, part: int, parts: int, *, scan: bool = True) -> ViewDump:
    """One share of the SQLite views, each table's rows in the order they were written.

    Views apply the log in order, so that is the order a replay makes them
    in (`ShareReplay.rows`), and `same_views` compares the two without
    sorting. `scan` as for `share_condition`.
    """
    dump: ViewDump = {}
    for table, (name, columns) in DUMP_TABLES.items():
        owner = columns.split(", ")[OWNER_COLUMN[table]]
        condition, params = share_condition(owner, part, parts, scan=scan)
        order = " ORDER BY rowid" if table in IN_LOG_ORDER else ""
        select = f"SELECT {columns} FROM {name} WHERE {condition}{order}"
        dump[table] = cursor.execute(select, params).fetchall()
    return dump


def same_views(live: ViewDump, replayed: ViewDump) -> bool:
    """Whether two shares of the views hold the same rows, in whatever order each has them.

    Tables whose rows are not in the same order are compared sorted in
    `ORDER`; rows with equal keys (only in views gone wrong) may then keep
    different orders on the two sides and compare as different, which the
    parent's full comparison settles.
    """
    if live.keys() != replayed.keys():
        return False
    for table, rows in live.items():
        other = replayed[table]
        if rows != other and (
            len(rows) != len(other)
            or sorted(rows, key=ORDER[table]) != sorted(other, key=ORDER[table])
        ):
            return False
    return True


def tracked_position(cursor: sqlite3.Cursor, application_name: str) -> int:
    """The position of the last event the SQLite views applied (0: none)."""
    select = SELECT_POSITION.format(tracking="tracking")
    row = cursor.execute(select, (application_name,)).fetchone()
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
        try:
            for record in records:
                needed = read_versions.get(record.topic, 1)
                if needed > 1 and stored_class_version(record.state) < needed:
                    self._incomplete = True
                    return
            translate_into(self._page, records)
        except (CorruptStoreError, ValueError):
            self._incomplete = True

    def dump(self) -> ViewDump | None:
        """The share's rows of every view table, in `ORDER`."""
        tables = self.rows()
        if tables is None:
            return None
        return {table: sorted(rows, key=ORDER[table]) for table, rows in tables.items()}

    def rows(self) -> ViewDump | None:
        """The share's rows of every view table, as the views write them: in log order.

        (The SPEC §9 tables, which are few, in the order of their rows.)
        """
        if self._incomplete:
            return None
        batch = self._page.finished()
        # Updates of rows outside the share (left in the batch) change no
        # row here, as in any view.
        tables: dict[str, list[Any]] = {
            "runs": batch.runs,
            "links": batch.links,
            "checkpoints": batch.checkpoints,
            "evals": batch.evals,
            "deployability": batch.deployability,
        }
        # An observation and its settlement are one aggregate's: in the same share.
        deployment = DeploymentTables()
        deployment.apply(batch)
        tables.update(deployment.dump())
        return tables
