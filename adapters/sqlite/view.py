"""The ledger view in the store's own SQLite file: its schema and its writes.

Tables (`view_*`, `adapters.sqlite.view_schema`) sit next to the events, and
the library's `tracking` table holds the view's position (the view is that
table's only user); `apply` changes both in one transaction, and takes the
write lock with its first statement (the compare-and-set on the position),
so concurrent catch-ups serialise instead of failing. Reads are
`adapters.sqlite.view_reads.SQLFactReader`'s, in the reader's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder

from trainledger.adapters.sqlite.deployment_schema import deployment_inserts, settlement_updates
from trainledger.adapters.sqlite.shadow_hours import (
    drop_shadow_hours,
    ensure_shadow_hours,
    has_shadow_hours,
)
from trainledger.adapters.sqlite.view_counts import drop_counters, ensure_counters, has_counters
from trainledger.adapters.sqlite.view_reads import SQLFactReader
from trainledger.adapters.sqlite.view_schema import (
    CHECKPOINTS,
    CREATE_INDEXES,
    CREATE_KEYS,
    EVALS,
    INDEX_NAMES,
    INSERT_CHECKPOINT,
    INSERT_DEPLOYABILITY,
    INSERT_EVAL,
    INSERT_LINK,
    INSERT_RUN,
    KEY_NAMES,
    MOVE_TRACKING,
    RESET_TRACKING,
    RUNS,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE_TABLES,
    START_TRACKING,
    TABLES,
    UPDATE_COMPLETION_ROW,
    UPDATE_DEPLOYABLE_ROW,
    UPDATE_FAILURE_ROW,
    UPDATE_START_ROW,
    batch_writes,
)
from trainledger.projections.facts import FactBatch
from trainledger.projections.view import FactReader, LedgerView, StaleTrackingError

# The library's tracking table of a SQLite store.
_START_TRACKING = START_TRACKING.format(tracking="tracking")
_MOVE_TRACKING = MOVE_TRACKING.format(tracking="tracking")
_RESET_TRACKING = RESET_TRACKING.format(tracking="tracking")

REBUILD_CACHE_KIB = 256 * 1024
"""The page cache of a rebuild's transactions (at most; SQLite allocates as it goes)."""


class SQLiteLedgerView(SQLiteTrackingRecorder, LedgerView):
    """View tables and the tracking position, in the store's SQLite file."""

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        if not datastore.single_row_tracking:
            raise ValueError("the ledger view needs single-row tracking (SINGLE_ROW_TRACKING)")
        super().__init__(datastore, **kwargs)
        self._rebuilding = False
        self._deferred: DeferredKeys | None = None
        self._counted = False
        """Whether the view's tables keep `stats`' counters (adapters/sqlite/view_counts.py)."""
        self._hours = False
        """Whether they keep shadow statistics' counters (adapters/sqlite/shadow_hours.py)."""
        self.log_table: str | None = None
        """The events table of the log, when the log is in this database (its
        readers then tell whether the view is caught up in their own transaction)."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *SQLITE_TABLES, *CREATE_INDEXES]

    def _create_table(self, c: SQLiteCursor) -> None:
        # Tables of another schema version are dropped, and the view's
        # position with them: the next query rebuilds them from the log.
        c.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA} (version INTEGER NOT NULL)")
        c.execute(f"SELECT version FROM {SCHEMA}")
        row = c.fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            if row is not None:
                for table in TABLES:
                    c.execute(f"DROP TABLE IF EXISTS {table}")
                c.execute(
                    "DELETE FROM tracking WHERE application_name <> ?",
                    (self.table_migration_identifier,),
                )
            c.execute(f"DELETE FROM {SCHEMA}")
            c.execute(f"INSERT INTO {SCHEMA} (version) VALUES (?)", (SCHEMA_VERSION,))
        super()._create_table(c)
        self._create_keys(c)
        ensure_counters(c)
        ensure_shadow_hours(c)

    def _create_keys(self, c: SQLiteCursor) -> None:
        """Make the key indexes a rebuild dropped (if it was interrupted: on the next open).

        Should the rows hold a duplicate id all the same (only another
        process's catch-up during the rebuild could have written one), they
        are dropped with the view's position: the next catch-up applies the
        log again, and refuses the page with the duplicate as it always does.
        """
        c.execute("SAVEPOINT keys")
        try:
            for statement in CREATE_KEYS:
                c.execute(statement)
        except sqlite3.IntegrityError:
            c.execute("ROLLBACK TO keys")
            for table in TABLES:
                c.execute(f"DELETE FROM {table}")
            c.execute(
                "DELETE FROM tracking WHERE application_name <> ?",
                (self.table_migration_identifier,),
            )
            for statement in CREATE_KEYS:
                c.execute(statement)
        c.execute("RELEASE keys")

    @contextmanager
    def _view_transaction(self) -> Iterator[SQLiteCursor]:
        """A write transaction that does not wait for the disk.

        In WAL mode, `synchronous=NORMAL` keeps every commit atomic but may
        lose the last ones on power loss: harmless for a view, whose tracking
        position is lost with them and whose events are applied again. During
        a rebuild, the WAL is not checkpointed after each page either, but
        once at the end, and the page cache is large: rows keyed by random ids
        land all over their tables, and a small cache would write the same
        pages out again and again within one transaction. Deleted view rows
        are not overwritten with zeros (`secure_delete`, on in some builds of
        SQLite): all they held is still in the events. The connection's own
        settings (the store's, for events) are restored after.
        """
        with self.datastore.get_connection(commit=True) as connection:
            cursor = connection.cursor()
            settings = {}
            for pragma in ("synchronous", "wal_autocheckpoint", "cache_size", "secure_delete"):
                cursor.execute(f"PRAGMA {pragma}")
                settings[pragma] = int(cursor.fetchone()[0])
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA secure_delete=FAST")
            if self._rebuilding:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
                cursor.execute(f"PRAGMA cache_size={-REBUILD_CACHE_KIB}")
            try:
                with connection.transaction(commit=True) as c:
                    yield c
            finally:
                for pragma, value in settings.items():
                    # secure_delete reads 2 when FAST, but only takes FAST back
                    restored = "FAST" if pragma == "secure_delete" and value == 2 else value
                    cursor.execute(f"PRAGMA {pragma}={restored}")

    def apply(self, batch: FactBatch, tracking: Tracking, previous: int) -> None:
        deferred = self._deferred
        if deferred is not None:
            self._apply_deferred(deferred, batch, tracking, previous)
            return
        with self._view_transaction() as c:
            self._move_tracking(c, tracking, previous)
            for statement, rows in batch_writes(batch):
                c.executemany(statement, rows)

    def _apply_deferred(
        self, deferred: DeferredKeys, batch: FactBatch, tracking: Tracking, previous: int
    ) -> None:
        """`apply`, during a rebuild that has dropped the key indexes."""
        added: list[tuple[dict[str, int], list[str]]] = []
        try:
            with self._view_transaction() as c:
                self._move_tracking(c, tracking, previous)
                deferred.insert(c, batch, added)
                deferred.update(c, batch)
        except StaleTrackingError:
            # Another process applied pages meanwhile: the ids this one
            # wrote are not all the view's any more. Back to the indexes.
            deferred.forget(added)
            self._deferred = None
            with self._view_transaction() as c:
                for statement in CREATE_KEYS:
                    c.execute(statement)
            raise
        except BaseException:
            deferred.forget(added)
            raise

    @staticmethod
    def _move_tracking(c: SQLiteCursor, tracking: Tracking, previous: int) -> None:
        # A write first: the transaction takes the write lock (waiting its
        # turn) before it reads anything, so the compare-and-set sees the
        # latest position.
        if previous == 0:
            c.execute(_START_TRACKING, (tracking.application_name,))
        c.execute(_MOVE_TRACKING, (tracking.notification_id, tracking.application_name, previous))
        if c.fetchone() is None:
            raise StaleTrackingError(
                f"view is not at position {previous}; another process moved it"
            )

    def reset(self, application_name: str) -> None:
        # The indexes go too: building them once the tables are full is
        # much faster than keeping them up to date row by row. Should the
        # rebuild be interrupted, the next open of the store creates them.
        with self._view_transaction() as c:
            c.execute(_RESET_TRACKING, (application_name,))
            for index in (*INDEX_NAMES, *KEY_NAMES):
                c.execute(f"DROP INDEX IF EXISTS {index}")
            drop_counters(c)
            drop_shadow_hours(c)
            for table in TABLES:
                c.execute(f"DELETE FROM {table}")
        self._rebuilding = True
        self._deferred = DeferredKeys()

    def finish_rebuild(self) -> None:
        # The rows' pages are copied from the WAL into the database file (in
        # another thread, on another connection) while the indexes are made.
        copying = threading.Thread(target=self._checkpoint)
        copying.start()
        try:
            self._deferred = None
            with self._view_transaction() as c:
                for statement in (*CREATE_KEYS, *CREATE_INDEXES):
                    c.execute(statement)
                ensure_counters(c)
                ensure_shadow_hours(c)
        finally:
            self._rebuilding = False
            copying.join()
        self._checkpoint()

    def _checkpoint(self) -> None:
        # A checkpoint does not need the write lock: take a reader's connection.
        with self.datastore.get_connection(commit=False) as connection:
            connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def reader(self) -> Iterator[FactReader]:
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None  # plain tuples: no per-row `sqlite3.Row`
            if not self._counted:
                self._counted = has_counters(c)
            if not self._hours:
                self._hours = has_shadow_hours(c)
            yield SQLFactReader(
                c, log_table=self.log_table, counters=self._counted, shadow_hours=self._hours
            )


class DeferredKeys:
    """The ids a rebuild has written since it dropped the key indexes, and their rows.

    A page whose ids are already there (or twice in the page) is refused as
    the unique indexes would refuse it; the updates of rows written by
    earlier pages find them by rowid: rows take the rowids that follow the
    table's largest (SQLite's rule, and no other writer can insert within
    the write transaction).
    """

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.checkpoints: dict[str, int] = {}
        self.evals: dict[str, int] = {}

    def _tables(self) -> tuple[tuple[str, str, str, dict[str, int]], ...]:
        return (
            (RUNS, "run_id", INSERT_RUN, self.runs),
            (CHECKPOINTS, "checkpoint_id", INSERT_CHECKPOINT, self.checkpoints),
            (EVALS, "eval_id", INSERT_EVAL, self.evals),
        )

    def insert(
        self, c: SQLiteCursor, batch: FactBatch, added: list[tuple[dict[str, int], list[str]]]
    ) -> None:
        """Insert the batch's rows, remembering their ids (and where, in `added`)."""
        keyed: tuple[Sequence[tuple[Any, ...]], ...] = (batch.runs, batch.checkpoints, batch.evals)
        for (table, key, _, known), rows in zip(self._tables(), keyed, strict=True):
            ids = _ids_of(rows)
            if len(set(ids)) != len(ids) or not known.keys().isdisjoint(ids):
                raise sqlite3.IntegrityError(f"UNIQUE constraint failed: {table}.{key}")
        for (table, _, insert, known), rows in zip(self._tables(), keyed, strict=True):
            first = _last_rowid(c, table) + 1
            c.executemany(insert, rows)
            if _last_rowid(c, table) != first + len(rows) - 1:
                raise sqlite3.IntegrityError(f"{table}: rows did not take the next rowids")
            ids = _ids_of(rows)
            known.update(zip(ids, range(first, first + len(rows)), strict=True))
            added.append((known, ids))
        c.executemany(INSERT_LINK, batch.links)
        c.executemany(INSERT_DEPLOYABILITY, batch.deployability)
        for statement, rows in deployment_inserts(
            batch.promotions, batch.slot_events, batch.observations
        ):
            c.executemany(statement, rows)

    def update(self, c: SQLiteCursor, batch: FactBatch) -> None:
        """Apply the batch's updates of rows written by earlier pages."""
        runs, checkpoints = self.runs, self.checkpoints
        for statement, facts in (
            (UPDATE_START_ROW, batch.starts),
            (UPDATE_COMPLETION_ROW, batch.completions),
            (UPDATE_FAILURE_ROW, batch.failures),
        ):
            # A run the view does not hold has no row to update (as `WHERE run_id = ?`).
            c.executemany(
                statement,
                [(*fact[:-1], runs[fact[-1]]) for fact in facts if fact[-1] in runs],
            )
        c.executemany(
            UPDATE_DEPLOYABLE_ROW,
            [
                (
                    d.deployable,
                    d.checkpoint_version,
                    checkpoints[d.checkpoint_id],
                    d.checkpoint_version,
                )
                for d in batch.deployability_updates
                if d.checkpoint_id in checkpoints
            ],
        )
        # Observations keep their primary key through a rebuild: settled by id.
        for statement, rows in settlement_updates(batch.settlements):
            c.executemany(statement, rows)

    @staticmethod
    def forget(added: list[tuple[dict[str, int], list[str]]]) -> None:
        """Forget the ids of rows that were not committed after all."""
        for known, ids in added:
            for key in ids:
                del known[key]


def _ids_of(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """The ids of rows whose first column is their id."""
    return [row[0] for row in rows]


def _last_rowid(c: SQLiteCursor, table: str) -> int:
    c.execute(f"SELECT max(rowid) FROM {table}")
    return int(c.fetchone()[0] or 0)
