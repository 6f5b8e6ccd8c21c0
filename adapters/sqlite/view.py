"""The ledger view in the store's own SQLite file.

Tables (`view_*`) sit next to the events, and the library's `tracking` table
holds the view's position (the view is that table's only user); `apply`
changes both in one transaction, and takes the write lock with its first
statement (the compare-and-set on the position), so concurrent catch-ups
serialise instead of failing.

The SQL is kept portable: a PostgreSQL view can reuse the table, index and
insert statements and `SQLFactReader` with `%s` for `?` (`STORED` generated
columns, `ON CONFLICT`, `RETURNING` and `COALESCE` are common to both); what
differs is the connection handling and the library's tracking table name.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder

from trainledger.adapters.sqlite.log_workers import SELECT_ROWS
from trainledger.projections.facts import (
    CheckpointRecord,
    Counts,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    LinkFact,
    RunRecord,
    ViewDump,
)
from trainledger.projections.log import StoredRow
from trainledger.projections.view import FactReader, LedgerView, StaleTrackingError

RUNS = "view_runs"
LINKS = "view_checkpoint_links"
CHECKPOINTS = "view_checkpoints"
EVALS = "view_evals"
DEPLOYABILITY = "view_deployability"
TABLES = (RUNS, LINKS, CHECKPOINTS, EVALS, DEPLOYABILITY)
SCHEMA = "view_schema"
SCHEMA_VERSION = 4
"""Bump when the tables change: views of another version are rebuilt.

2: view_runs.trainer_result; 3: ids keyed by unique indexes (`KEYS`); 4: no
view_runs.spec (a run's spec is read from its registration in the log)."""

CREATE_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {RUNS} ("
    "run_id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, family TEXT NOT NULL, "
    "dataset_fingerprint TEXT NOT NULL, sample_count INTEGER, "
    "created_at BIGINT NOT NULL, position BIGINT NOT NULL, "
    "started_at BIGINT, host TEXT, pid INTEGER, trainer_log_path TEXT, "
    "completed_at BIGINT, result_digest TEXT, failed_at BIGINT, failure_reason TEXT, "
    "trainer_result TEXT, "
    "status TEXT GENERATED ALWAYS AS (CASE "
    "WHEN failed_at IS NOT NULL THEN 'failed' "
    "WHEN completed_at IS NOT NULL THEN 'completed' "
    "WHEN started_at IS NOT NULL THEN 'running' "
    "ELSE 'pending' END) STORED)",
    f"CREATE TABLE IF NOT EXISTS {LINKS} ("
    "run_id TEXT NOT NULL, run_version INTEGER NOT NULL, checkpoint_id TEXT NOT NULL, "
    "linked_at BIGINT NOT NULL, PRIMARY KEY (run_id, run_version)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} ("
    "checkpoint_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, family TEXT NOT NULL, "
    "artifact_path TEXT NOT NULL, artifact_digest TEXT, checkpoint_ref TEXT, "
    "metrics TEXT NOT NULL, created_at BIGINT NOT NULL, position BIGINT NOT NULL, "
    "deployable INTEGER NOT NULL DEFAULT 0, "
    "deployability_version INTEGER NOT NULL DEFAULT 0)",
    f"CREATE TABLE IF NOT EXISTS {EVALS} ("
    "eval_id TEXT PRIMARY KEY, checkpoint_id TEXT NOT NULL, "
    "checkpoint_version INTEGER NOT NULL, benchmark_id TEXT NOT NULL, family TEXT NOT NULL, "
    "verdict TEXT NOT NULL, summary TEXT NOT NULL, attached_at BIGINT NOT NULL, "
    "actor TEXT NOT NULL, position BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {DEPLOYABILITY} ("
    "checkpoint_id TEXT NOT NULL, checkpoint_version INTEGER NOT NULL, "
    "deployable INTEGER NOT NULL, changed_at BIGINT NOT NULL, actor TEXT NOT NULL, "
    "eval_id TEXT, reason TEXT, PRIMARY KEY (checkpoint_id, checkpoint_version)) WITHOUT ROWID",
)

KEYS = ((RUNS, "run_id"), (CHECKPOINTS, "checkpoint_id"), (EVALS, "eval_id"))
"""The tables keyed by one id column: `TEXT PRIMARY KEY` in `CREATE_TABLES` (PostgreSQL's)."""

# On SQLite those ids are unique indexes of their own instead, which a rebuild
# drops with the other indexes and makes once at the end (`DeferredKeys`):
# keeping an index of random ids up to date row by row costs more than all
# the rest of writing the row.


def _keyed_by_index(statement: str) -> str:
    for table, key in KEYS:
        statement = statement.replace(
            f"{table} ({key} TEXT PRIMARY KEY,", f"{table} ({key} TEXT NOT NULL,"
        )
    return statement


SQLITE_TABLES = tuple(map(_keyed_by_index, CREATE_TABLES))
KEY_NAMES = tuple(f"{table}_key" for table, _ in KEYS)
CREATE_KEYS = tuple(
    f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table} ({key})"
    for name, (table, key) in zip(KEY_NAMES, KEYS, strict=True)
)

# Each list filter walks one of these newest first and stops at its limit.
CREATE_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {RUNS}_position ON {RUNS} (position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_status ON {RUNS} (status, position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_family ON {RUNS} (family, position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_dataset ON {RUNS} (dataset_fingerprint, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_position ON {CHECKPOINTS} (position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_run ON {CHECKPOINTS} (run_id, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_family ON {CHECKPOINTS} (family, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_deployable ON {CHECKPOINTS} (deployable, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_position ON {EVALS} (position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_checkpoint ON {EVALS} (checkpoint_id, checkpoint_version)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_benchmark ON {EVALS} (benchmark_id, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_verdict ON {EVALS} (verdict, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_family ON {EVALS} (family, position)",
)


INDEX_NAMES = tuple(statement.split()[5] for statement in CREATE_INDEXES)


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


INSERT_RUN = _insert(RUNS, RunRecord._fields)
INSERT_LINK = _insert(LINKS, LinkFact._fields)
INSERT_CHECKPOINT = _insert(CHECKPOINTS, CheckpointRecord._fields)
INSERT_EVAL = _insert(EVALS, EvalFact._fields)
INSERT_DEPLOYABILITY = _insert(DEPLOYABILITY, DeployabilityFact._fields)
UPDATE_START = (
    f"UPDATE {RUNS} SET started_at = ?, host = ?, pid = ?, trainer_log_path = ? WHERE run_id = ?"
)
UPDATE_COMPLETION = (
    f"UPDATE {RUNS} SET completed_at = ?, result_digest = ?, trainer_result = ? WHERE run_id = ?"
)
UPDATE_FAILURE = (
    f"UPDATE {RUNS} SET failed_at = ?, failure_reason = ?, result_digest = ?, "
    "trainer_result = ? WHERE run_id = ?"
)
# Deployability only moves forward in version, whatever order a page applies it in.
UPDATE_DEPLOYABLE = (
    f"UPDATE {CHECKPOINTS} SET deployable = ?, deployability_version = ? "
    "WHERE checkpoint_id = ? AND deployability_version < ?"
)
# During a rebuild, without the key indexes, rows of earlier pages are updated by rowid.
UPDATE_START_ROW = UPDATE_START.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_COMPLETION_ROW = UPDATE_COMPLETION.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_FAILURE_ROW = UPDATE_FAILURE.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_DEPLOYABLE_ROW = UPDATE_DEPLOYABLE.replace("WHERE checkpoint_id = ?", "WHERE rowid = ?")
START_TRACKING = (
    "INSERT INTO tracking (application_name, notification_id) VALUES (?, 0) "
    "ON CONFLICT (application_name) DO NOTHING"
)
MOVE_TRACKING = (
    "UPDATE tracking SET notification_id = ? "
    "WHERE application_name = ? AND notification_id = ? RETURNING notification_id"
)
RESET_TRACKING = (
    "INSERT INTO tracking (application_name, notification_id) VALUES (?, 0) "
    "ON CONFLICT (application_name) DO UPDATE SET notification_id = 0"
)

STATUS_AT = (
    "(CASE WHEN failed_at <= ? THEN 'failed' WHEN completed_at <= ? THEN 'completed' "
    "WHEN started_at <= ? THEN 'running' ELSE 'pending' END)"
)
DEPLOYABLE_AT = (
    f"COALESCE((SELECT d.deployable FROM {DEPLOYABILITY} d "
    f"WHERE d.checkpoint_id = {CHECKPOINTS}.checkpoint_id AND d.changed_at <= ? "
    "ORDER BY d.checkpoint_version DESC LIMIT 1), 0)"
)

RUN_COLUMNS = ", ".join(RunRecord._fields)
CHECKPOINT_COLUMNS = ", ".join(CheckpointRecord._fields)
EVAL_COLUMNS = ", ".join(EvalFact._fields)
LINK_COLUMNS = ", ".join(LinkFact._fields)
DEPLOYABILITY_COLUMNS = ", ".join(DeployabilityFact._fields)

# SQLite allows 32766 parameters a statement; ids go in chunks well below that.
CHUNK = 500


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
            c.executemany(INSERT_RUN, batch.runs)
            c.executemany(INSERT_CHECKPOINT, batch.checkpoints)
            c.executemany(INSERT_LINK, batch.links)
            c.executemany(INSERT_EVAL, batch.evals)
            c.executemany(INSERT_DEPLOYABILITY, batch.deployability)
            c.executemany(UPDATE_START, batch.starts)
            c.executemany(UPDATE_COMPLETION, batch.completions)
            c.executemany(UPDATE_FAILURE, batch.failures)
            c.executemany(
                UPDATE_DEPLOYABLE,
                [
                    (d.deployable, d.checkpoint_version, d.checkpoint_id, d.checkpoint_version)
                    for d in batch.deployability_updates
                ],
            )

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
            c.execute(START_TRACKING, (tracking.application_name,))
        c.execute(MOVE_TRACKING, (tracking.notification_id, tracking.application_name, previous))
        if c.fetchone() is None:
            raise StaleTrackingError(
                f"view is not at position {previous}; another process moved it"
            )

    def reset(self, application_name: str) -> None:
        # The indexes go too: building them once the tables are full is
        # much faster than keeping them up to date row by row. Should the
        # rebuild be interrupted, the next open of the store creates them.
        with self._view_transaction() as c:
            c.execute(RESET_TRACKING, (application_name,))
            for index in (*INDEX_NAMES, *KEY_NAMES):
                c.execute(f"DROP INDEX IF EXISTS {index}")
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
            yield SQLFactReader(c, log_table=self.log_table)


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


class _Select:
    """A SELECT with optional conditions."""

    def __init__(self, head: str) -> None:
        self.head = head
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def where(self, condition: str, *params: Any) -> _Select:
        self.conditions.append(condition)
        self.params.extend(params)
        return self

    def sql(self, tail: str = "") -> str:
        where = f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
        return f"{self.head}{where}{tail}"


def _chunks(ids: Sequence[str] | None) -> list[Sequence[str] | None]:
    if ids is None:
        return [None]
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]


def _among(column: str, ids: Sequence[str]) -> str:
    return f"{column} IN ({', '.join('?' for _ in ids)})"


Row = TypeVar("Row", RunRecord, CheckpointRecord, EvalFact)


class SQLFactReader(FactReader):
    """Reads of the view tables in one transaction, through a DB-API cursor.

    Statements are written with `?` parameters; `placeholder` replaces them
    (`%s` for psycopg), and rows may be tuples, `sqlite3.Row`s or dicts.
    """

    log_table: str | None = None
    """The SQLite events table of the log, when it is in this database."""

    def __init__(
        self,
        cursor: Any,
        *,
        placeholder: str = "?",
        tracking_table: str = "tracking",
        log_table: str | None = None,
    ) -> None:
        self.c = cursor
        self.placeholder = placeholder
        self.tracking_table = tracking_table
        self.log_table = log_table

    def log_position(self) -> int | None:
        if self.log_table is None:
            return None
        rows = self._rows(f"SELECT MAX(rowid) FROM {self.log_table}", ())
        return int(rows[0][0] or 0)

    def stored_events(self, positions: Sequence[int]) -> list[StoredRow] | None:
        if self.log_table is None:
            return None
        wanted = sorted(set(positions))
        rows: list[StoredRow] = []
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            marks = ", ".join("?" for _ in chunk)
            select = SELECT_ROWS.format(table=self.log_table) + f"WHERE rowid IN ({marks})"
            rows.extend(cast("list[StoredRow]", self._rows(select, chunk)))
        return rows

    def position(self, application_name: str) -> int:
        rows = self._rows(
            f"SELECT notification_id FROM {self.tracking_table} WHERE application_name = ?",
            (application_name,),
        )
        return int(rows[0][0]) if rows else 0

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        self.c.execute(sql, params)
        return [
            tuple(row.values()) if isinstance(row, dict) else tuple(row)
            for row in self.c.fetchall()
        ]

    def _newest_first(
        self,
        head: str,
        build: Callable[[_Select, Sequence[str] | None], _Select],
        make: Callable[..., Row],
        ids: Sequence[str] | None,
        limit: int | None,
    ) -> list[Row]:
        found: list[Row] = []
        for chunk in _chunks(ids):
            select = build(_Select(head), chunk)
            tail = " ORDER BY position DESC"
            params = list(select.params)
            if limit is not None:
                tail += " LIMIT ?"
                params.append(limit)
            found.extend(make(*row) for row in self._rows(select.sql(tail), params))
        if ids is not None and len(found) > 1:
            found.sort(key=lambda record: record.position, reverse=True)
        return found if limit is None else found[:limit]

    def runs(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | None = None,
        family: str | None = None,
        dataset_fingerprint: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among("run_id", chunk), *chunk)
            if as_of is not None:
                select.where("created_at <= ?", as_of)
            if status is not None:
                if as_of is None:
                    select.where("status = ?", status)
                else:
                    select.where(f"{STATUS_AT} = ?", as_of, as_of, as_of, status)
            if family is not None:
                select.where("family = ?", family)
            if dataset_fingerprint is not None:
                select.where("dataset_fingerprint = ?", dataset_fingerprint)
            return select

        head = f"SELECT {RUN_COLUMNS} FROM {RUNS}"
        return self._newest_first(head, build, RunRecord, ids, limit)

    def checkpoints(
        self,
        *,
        ids: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        family: str | None = None,
        deployable: bool | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        if ids is not None and run_ids is not None:
            raise ValueError("select checkpoints by ids or by run ids, not both")
        column, keys = ("checkpoint_id", ids) if run_ids is None else ("run_id", run_ids)

        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among(column, chunk), *chunk)
            if as_of is not None:
                select.where("created_at <= ?", as_of)
            if family is not None:
                select.where("family = ?", family)
            if deployable is not None:
                if as_of is None:
                    select.where("deployable = ?", int(deployable))
                else:
                    select.where(f"{DEPLOYABLE_AT} = ?", as_of, int(deployable))
            return select

        head = f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINTS}"
        return self._newest_first(head, build, CheckpointRecord, keys, limit)

    def evals(
        self,
        *,
        checkpoint_ids: Sequence[str] | None = None,
        benchmark_id: str | None = None,
        verdict: str | None = None,
        family: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[EvalFact]:
        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among("checkpoint_id", chunk), *chunk)
            if as_of is not None:
                select.where("attached_at <= ?", as_of)
            if benchmark_id is not None:
                select.where("benchmark_id = ?", benchmark_id)
            if verdict is not None:
                select.where("verdict = ?", verdict)
            if family is not None:
                select.where("family = ?", family)
            return select

        head = f"SELECT {EVAL_COLUMNS} FROM {EVALS}"
        return self._newest_first(head, build, EvalFact, checkpoint_ids, limit)

    def links(self, run_ids: Sequence[str], as_of: int | None) -> list[LinkFact]:
        found: list[LinkFact] = []
        for chunk in _chunks(run_ids):
            assert chunk is not None
            select = _Select(f"SELECT {LINK_COLUMNS} FROM {LINKS}")
            select.where(_among("run_id", chunk), *chunk)
            if as_of is not None:
                select.where("linked_at <= ?", as_of)
            rows = self._rows(select.sql(" ORDER BY run_id, run_version"), select.params)
            found.extend(LinkFact(*row) for row in rows)
        return found

    def deployability(
        self, checkpoint_ids: Sequence[str], as_of: int | None
    ) -> list[DeployabilityFact]:
        found: list[DeployabilityFact] = []
        for chunk in _chunks(checkpoint_ids):
            assert chunk is not None
            select = _Select(f"SELECT {DEPLOYABILITY_COLUMNS} FROM {DEPLOYABILITY}")
            select.where(_among("checkpoint_id", chunk), *chunk)
            if as_of is not None:
                select.where("changed_at <= ?", as_of)
            tail = " ORDER BY checkpoint_id, checkpoint_version"
            found.extend(
                DeployabilityFact(*row) for row in self._rows(select.sql(tail), select.params)
            )
        return found

    def counts(self, as_of: int | None) -> Counts:
        if as_of is None:
            by_status = self._rows(f"SELECT status, COUNT(*) FROM {RUNS} GROUP BY status", ())
            checkpoints = self._rows(
                f"SELECT COUNT(*), COALESCE(SUM(deployable), 0) FROM {CHECKPOINTS}", ()
            )
            by_verdict = self._rows(f"SELECT verdict, COUNT(*) FROM {EVALS} GROUP BY verdict", ())
        else:
            by_status = self._rows(
                f"SELECT {STATUS_AT}, COUNT(*) FROM {RUNS} WHERE created_at <= ? GROUP BY 1",
                (as_of, as_of, as_of, as_of),
            )
            checkpoints = self._rows(
                f"SELECT COUNT(*), COALESCE(SUM({DEPLOYABLE_AT}), 0) FROM {CHECKPOINTS} "
                "WHERE created_at <= ?",
                (as_of, as_of),
            )
            by_verdict = self._rows(
                f"SELECT verdict, COUNT(*) FROM {EVALS} WHERE attached_at <= ? GROUP BY verdict",
                (as_of,),
            )
        total, deployable = checkpoints[0]
        return Counts(
            {row[0]: row[1] for row in by_status},
            int(total),
            int(deployable),
            {row[0]: row[1] for row in by_verdict},
        )

    def dump(self) -> ViewDump:
        def table(columns: str, name: str) -> list[tuple[object, ...]]:
            rows = self._rows(f"SELECT {columns} FROM {name}", ())
            rows.sort()
            return rows

        return {
            "runs": table(RUN_COLUMNS, RUNS),
            "links": table(LINK_COLUMNS, LINKS),
            "checkpoints": table(CHECKPOINT_COLUMNS, CHECKPOINTS),
            "evals": table(EVAL_COLUMNS, EVALS),
            "deployability": table(DEPLOYABILITY_COLUMNS, DEPLOYABILITY),
        }


_SQLiteReader = SQLFactReader  # the name `projections.postgres_view` imports
