"""The ledger view in the store's own PostgreSQL database.

The same tables, statements and reads as the SQLite view's
(`adapters.sqlite.view_schema`, `adapters.sqlite.view_reads`: their SQL is
portable; only the parameter style differs), in the datastore's schema,
next to the events; the library's tracking table (`trainledger_tracking`)
holds the view's position. `apply` moves the position with a compare-and-set
`UPDATE` first, so a concurrent catch-up of the same page waits on that row
and then finds the position moved (`StaleTrackingError`), recording nothing.
Readers see one snapshot (REPEATABLE READ) across all their queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from trainledger.adapters.postgres.recorder import create_once
from trainledger.adapters.postgres.shadow_hours import (
    drop_shadow_hours,
    ensure_shadow_hours,
    has_shadow_hours,
)
from trainledger.adapters.postgres.view_counts import drop_counters, ensure_counters, has_counters
from trainledger.adapters.sqlite.shadow_hours import CREATE_HOURS, HOURS
from trainledger.adapters.sqlite.view_counts import COUNTS, CREATE_COUNTS
from trainledger.adapters.sqlite.view_reads import SQLFactReader
from trainledger.adapters.sqlite.view_schema import (
    CREATE_INDEXES,
    CREATE_TABLES,
    INDEX_NAMES,
    MOVE_TRACKING,
    RESET_TRACKING,
    RUNS,
    START_TRACKING,
    TABLES,
    batch_writes,
)
from trainledger.projections.facts import FactBatch
from trainledger.projections.view import FactReader, LedgerView, StaleTrackingError


def postgres_sql(statement: str) -> SQL:
    """A statement of the portable view SQL (`?` parameters) in psycopg's style (`%s`)."""
    return SQL(statement.replace("%", "%%").replace("?", "%s"))


def postgres_ddl(statement: str) -> SQL:
    """A CREATE statement of the portable view SQL, without SQLite's table options."""
    return postgres_sql(statement.removesuffix(" WITHOUT ROWID"))


ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = ((RUNS, "trainer_result", "TEXT"),)
"""(table, column, type) of the columns added to the view after its first version."""

DROPPED_COLUMNS: tuple[tuple[str, str], ...] = ((RUNS, "spec"),)
"""(table, column) of the columns the view no longer keeps (a run's spec is read from the log)."""


class PostgresLedgerView(PostgresTrackingRecorder, LedgerView):
    """View tables and the tracking position, in the store's PostgreSQL database."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        if not datastore.single_row_tracking:
            raise ValueError("the ledger view needs single-row tracking (SINGLE_ROW_TRACKING)")
        super().__init__(datastore, **kwargs)
        tracking = Identifier(self.datastore.schema, self.tracking_table_name)
        # The view's statements name tables unqualified: in the store's schema.
        self.search_path = SQL("SET LOCAL search_path TO {}").format(
            Identifier(self.datastore.schema)
        )
        self.sql_create_statements = [
            self.search_path,
            *self.sql_create_statements,
            *(
                Composed([postgres_ddl(s)])
                for s in (*CREATE_TABLES, CREATE_COUNTS, CREATE_HOURS, *CREATE_INDEXES)
            ),
        ]
        self.start_tracking = postgres_sql(START_TRACKING).format(tracking=tracking)
        self.move_tracking = postgres_sql(MOVE_TRACKING).format(tracking=tracking)
        self.reset_tracking = postgres_sql(RESET_TRACKING).format(tracking=tracking)
        self.tracking_table = tracking.as_string()
        self._counted = False
        """Whether the view's tables keep `stats`' counters (adapters/postgres/view_counts.py)."""
        self._hours = False
        """Whether they keep shadow statistics' counters (adapters/postgres/shadow_hours.py)."""

    def create_table(self) -> None:
        create_once(
            self.datastore,
            f"{self.datastore.schema}.{self.tracking_table_name}",
            regclasses=(self.tracking_table_name, *TABLES, COUNTS, HOURS, *INDEX_NAMES),
            create=super().create_table,
        )
        self._migrate_columns()
        with self._view_transaction() as c:
            ensure_counters(c, self.datastore.schema)
            ensure_shadow_hours(c, self.datastore.schema)

    def _migrate_columns(self) -> None:
        """Columns added or dropped since a store's views were made (SQLite rebuilds instead).

        NULL is an added column's right value in existing rows: no event
        recorded before the column existed carries what it holds.
        """
        with self.datastore.transaction(commit=True) as curs:

            def exists(table: str, column: str) -> bool:
                curs.execute(
                    "SELECT 1 FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
                    (self.datastore.schema, table, column),
                )
                return curs.fetchone() is not None

            for table, column in DROPPED_COLUMNS:
                if exists(table, column):
                    curs.execute(
                        SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
                            Identifier(self.datastore.schema, table), Identifier(column)
                        )
                    )
            for table, column, kind in ADDED_COLUMNS:
                if not exists(table, column):
                    curs.execute(
                        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            Identifier(self.datastore.schema, table),
                            Identifier(column),
                            SQL(kind),
                        )
                    )

    @contextmanager
    def _view_transaction(self) -> Iterator[Cursor[DictRow]]:
        """A write transaction that does not wait for the disk.

        As with SQLite's view: a commit lost on a crash loses its tracking
        position with it, and the next catch-up applies those events again.
        """
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.search_path)
            curs.execute("SET LOCAL synchronous_commit = off")
            yield curs

    def apply(self, batch: FactBatch, tracking: Tracking, previous: int) -> None:
        with self._view_transaction() as c:
            if previous == 0:
                c.execute(self.start_tracking, (tracking.application_name,))
            c.execute(
                self.move_tracking,
                (tracking.notification_id, tracking.application_name, previous),
            )
            if c.fetchone() is None:
                raise StaleTrackingError(
                    f"view is not at position {previous}; another process moved it"
                )
            for statement, rows in batch_writes(batch):
                if rows:
                    c.executemany(postgres_sql(statement), rows)

    def reset(self, application_name: str) -> None:
        # As on SQLite, indexes go and come back with `finish_rebuild`; an
        # interrupted rebuild gets them back when the store is next opened.
        with self._view_transaction() as c:
            c.execute(self.reset_tracking, (application_name,))
            drop_counters(c)
            drop_shadow_hours(c)
            for table in TABLES:
                c.execute(SQL("DELETE FROM {}").format(Identifier(table)))
            for index in INDEX_NAMES:
                c.execute(SQL("DROP INDEX IF EXISTS {}").format(Identifier(index)))

    def finish_rebuild(self) -> None:
        with self._view_transaction() as c:
            for statement in CREATE_INDEXES:
                c.execute(postgres_ddl(statement))
            ensure_counters(c, self.datastore.schema)
            ensure_shadow_hours(c, self.datastore.schema)

    @contextmanager
    def reader(self) -> Iterator[FactReader]:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(force_rollback=True),
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            curs.execute(self.search_path)
            if not self._counted:
                self._counted = has_counters(curs, self.datastore.schema)
            if not self._hours:
                self._hours = has_shadow_hours(curs, self.datastore.schema)
            yield SQLFactReader(
                curs,
                adapt_sql=postgres_sql,
                tracking_table=self.tracking_table,
                counters=self._counted,
                shadow_hours=self._hours,
                postgres=True,
            )
