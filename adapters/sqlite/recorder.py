"""The embedded SQLite store: the library's recorder plus the ledger's needs.

- `PRAGMA synchronous` is FULL unless the store URL asks for `normal`, so an
  acknowledged command survives power loss by default (WAL is on, as in the
  library).
- Reservations (idempotency keys, evalIds) are inserted in the same
  transaction as the command's events; a duplicate key is an IntegrityError,
  exactly like a concurrent append to the same aggregate.
- A store is created only by a command that writes (`store_file`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTrackingRecorder,
    SQLiteTransaction,
)
from eventsourcing.utils import Environment

from trainledger.adapters.sqlite import write_turns
from trainledger.adapters.sqlite.store_file import (
    database_file,
    prepare_store_file,
    read_only_uri,
)
from trainledger.adapters.sqlite.verify import ParallelLogCheck, snapshot
from trainledger.adapters.workers import usable_cpus
from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, log_links, seal_anchor, seal_links
from trainledger.service.ports import (
    UNCHANGED,
    LogCheck,
    Reservation,
    Seal,
    changed_since_read,
)

SYNCHRONOUS_ENV = "TRAINLEDGER_SQLITE_SYNCHRONOUS"
READ_ONLY_ENV = "TRAINLEDGER_READ_ONLY_STORE"
"""1: open the file read-only (the URL's `?mode=ro`); a file this process cannot write always is."""
CREATE_ENV = "TRAINLEDGER_CREATE_STORE"
"""0: opening must find a ledger there (a query); otherwise an empty one may be created."""
LOG_CHAIN_TABLE = "ledger_log_chain"
SEALS_TABLE = "ledger_reservation_seals"
SYNCHRONOUS_MODES = ("full", "normal", "extra")


class LedgerSQLiteConnectionPool(SQLiteConnectionPool):
    synchronous = "full"

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        return connection


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """Events, reservations, the log chain, and triggers that refuse UPDATE and DELETE."""

    gap_free_positions = True

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS ledger_reservations ("
            "kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
            "PRIMARY KEY (kind, key)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {LOG_CHAIN_TABLE} ("
            "position INTEGER PRIMARY KEY, link TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {SEALS_TABLE} ("
            "seq INTEGER PRIMARY KEY, position INTEGER NOT NULL, kind TEXT NOT NULL, "
            "key TEXT NOT NULL, value_hash TEXT NOT NULL, link TEXT NOT NULL, "
            "UNIQUE (kind, key))",
            *(
                f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{action.lower()} "
                f"BEFORE {action} ON {table} BEGIN "
                f"SELECT RAISE(ABORT, 'trainledger: {table} is append-only'); END"
                for table in self._ledger_tables()
                for action in ("UPDATE", "DELETE")
            ),
        ]

    def create_table(self) -> None:
        """Create what is missing; most opens find everything in place and only read."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT name FROM sqlite_master")
            existing = {row["name"] for row in c.fetchall()}
        if not self.schema_object_names() <= existing:
            super().create_table()

    def _ledger_tables(self) -> tuple[str, ...]:
        return (self.events_table_name, "ledger_reservations", LOG_CHAIN_TABLE, SEALS_TABLE)

    def schema_object_names(self) -> set[str]:
        tables = self._ledger_tables()
        return {
            *tables,
            *(f"{t}_append_only_{a}" for t in tables for a in ("update", "delete")),
        }

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        for aggregate_id, version in kwargs.get(UNCHANGED, ()):
            c.execute(
                f"SELECT 1 FROM {self.events_table_name} "
                "WHERE originator_id=? AND originator_version>? LIMIT 1",
                (aggregate_id.hex, version),
            )
            if c.fetchone() is not None:
                raise IntegrityError(changed_since_read(aggregate_id))
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        assert notification_ids is not None
        if notification_ids:
            rows = [
                (n, s.originator_id, s.originator_version, s.topic, s.state)
                for n, s in zip(notification_ids, stored_events, strict=True)
            ]
            links = log_links(self._last_link(c), rows)
            c.executemany(f"INSERT INTO {LOG_CHAIN_TABLE} (position, link) VALUES (?, ?)", links)
        reservations: Sequence[Reservation] = kwargs.get("reservations", ())
        for r in reservations:
            c.execute(
                "INSERT INTO ledger_reservations (kind, key, value) VALUES (?, ?, ?)",
                (r.kind, r.key, r.value),
            )
        if reservations and kwargs.get("seal", True):
            self._seal(c, list(notification_ids), reservations)
        return notification_ids

    def _seal(
        self, c: SQLiteCursor, positions: list[int], reservations: Sequence[Reservation]
    ) -> None:
        """Seal this append's reservations (under the write lock: in commit order).

        The first seals of a store written before seals existed also seal every
        reservation it already holds.
        """
        c.execute(f"SELECT link FROM {SEALS_TABLE} ORDER BY seq DESC LIMIT 1")
        last = c.fetchone()
        if last is None:
            c.execute("SELECT kind, key, value FROM ledger_reservations")
            existing = {(r["kind"], r["key"]): bytes(r["value"]) for r in c.fetchall()}
            given = {(r.kind, r.key): r.anchor for r in reservations}
            items = [(given.get(k), k[0], k[1], v) for k, v in existing.items()]
        else:
            items = [(r.anchor, r.kind, r.key, r.value) for r in reservations]
        end = positions[-1] if positions else self._log_end(c)
        anchors = [seal_anchor(a, positions, end) for a, _, _, _ in items]
        c.execute(
            f"SELECT position, link FROM {LOG_CHAIN_TABLE} WHERE position IN "
            f"({','.join('?' * len(set(anchors)))})",
            sorted(set(anchors)),
        )
        links = {int(row["position"]): str(row["link"]) for row in c.fetchall()}
        links[0] = LOG_GENESIS
        seals = seal_links(
            SEAL_GENESIS if last is None else str(last["link"]),
            [
                (p, links[p], kind, key, value)
                for p, (_, kind, key, value) in zip(anchors, items, strict=True)
            ],
        )
        c.executemany(
            f"INSERT INTO {SEALS_TABLE} (position, kind, key, value_hash, link) "
            "VALUES (?, ?, ?, ?, ?)",
            seals,
        )

    @staticmethod
    def _log_end(c: SQLiteCursor) -> int:
        c.execute(f"SELECT MAX(position) AS last FROM {LOG_CHAIN_TABLE}")
        return int(c.fetchone()["last"] or 0)

    @staticmethod
    def _last_link(c: SQLiteCursor) -> str:
        """The log chain's last link; the write lock is held, so it is the one to extend."""
        c.execute(f"SELECT link FROM {LOG_CHAIN_TABLE} ORDER BY position DESC LIMIT 1")
        last = c.fetchone()
        return LOG_GENESIS if last is None else str(last["link"])

    def start_log_check(
        self, *, digest: str | None, parts: int, minimum: int, application_name: str
    ) -> LogCheck | None:
        """Start up to `parts` worker processes checking the log, when it has `minimum` rows.

        They also compare the views of `application_name` kept in this file
        with a replay (`ParallelLogCheck.views_match`).

        None when the store cannot be read by other processes (in memory), is
        shorter, its positions are not exactly 1..N (the one-pass check then
        says where), or this process may use only one CPU.
        """
        parts = min(parts, usable_cpus())
        if self.datastore.pool.is_sqlite_memory_mode or parts < 2:
            return None
        with self.datastore.transaction(commit=False) as c:
            log = snapshot(c.sqlite_cursor, self.events_table_name, LOG_CHAIN_TABLE, digest)
        if log is None or log.upto < minimum:
            return None
        return ParallelLogCheck.start(self.datastore.pool.db_name, log, parts, application_name)

    def find_reservation(self, kind: str, key: str) -> bytes | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT value FROM ledger_reservations WHERE kind=? AND key=?", (kind, key))
            row = c.fetchone()
            return None if row is None else bytes(row["value"])

    def reservations(self) -> list[Reservation]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT kind, key, value FROM ledger_reservations ORDER BY kind, key")
            return [Reservation(r["kind"], r["key"], bytes(r["value"])) for r in c.fetchall()]

    def seals(self) -> list[Seal]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT seq, position, kind, key, value_hash, link FROM {SEALS_TABLE} ORDER BY seq"
            )
            return [Seal(*tuple(row)) for row in c.fetchall()]

    def sealed_reservations(self, after_seq: int, limit: int) -> list[tuple[Seal, bytes | None]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT s.seq, s.position, s.kind, s.key, s.value_hash, s.link, r.value "
                f"FROM {SEALS_TABLE} s LEFT JOIN ledger_reservations r "
                "ON r.kind = s.kind AND r.key = s.key WHERE s.seq > ? ORDER BY s.seq LIMIT ?",
                (after_seq, limit),
            )
            return [
                (Seal(*tuple(row)[:6]), None if row[6] is None else bytes(row[6]))
                for row in c.fetchall()
            ]

    def unsealed_reservations(self) -> list[Reservation]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT kind, key, value FROM ledger_reservations r WHERE NOT EXISTS "
                f"(SELECT 1 FROM {SEALS_TABLE} s WHERE s.kind = r.kind AND s.key = r.key) "
                "ORDER BY kind, key"
            )
            return [Reservation(r["kind"], r["key"], bytes(r["value"])) for r in c.fetchall()]

    def seal_of(self, kind: str, key: str) -> tuple[bool, str | None]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT 1 FROM {SEALS_TABLE} LIMIT 1")
            sealed = c.fetchone() is not None
            c.execute(f"SELECT value_hash FROM {SEALS_TABLE} WHERE kind=? AND key=?", (kind, key))
            row = c.fetchone()
            return sealed, None if row is None else str(row["value_hash"])

    def log_chain(self, after: int, upto: int | None) -> dict[int, str]:
        """The log chain links the ledger wrote for positions in (after, upto]."""
        with self.datastore.transaction(commit=False) as c:
            if upto is None:
                c.execute(
                    f"SELECT position, link FROM {LOG_CHAIN_TABLE} WHERE position>?", (after,)
                )
            else:
                c.execute(
                    f"SELECT position, link FROM {LOG_CHAIN_TABLE} "
                    "WHERE position>? AND position<=?",
                    (after, upto),
                )
            return {int(row["position"]): str(row["link"]) for row in c.fetchall()}

    def store_problems(self) -> list[str]:
        """SQLite's `PRAGMA integrity_check`: pages, and every index against its table."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA integrity_check(20)")
            found = [str(row[0]) for row in c.fetchall()]
        return [] if found == ["ok"] else found

    def log_chain_end(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT MAX(position) AS last FROM {LOG_CHAIN_TABLE}")
            row = c.fetchone()
            return int(row["last"] or 0)

    def positions(self, originator_id: UUID) -> list[int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid FROM {self.events_table_name} "
                "WHERE originator_id=? ORDER BY originator_version",
                (originator_id.hex,),
            )
            return [int(row["rowid"]) for row in c.fetchall()]


class ImmediateTransaction(SQLiteTransaction):
    """A write transaction that takes the write lock at BEGIN.

    A deferred transaction that reads first and writes later cannot upgrade
    once another process has committed in between: SQLite refuses at once
    with "database is locked" instead of waiting. Taking the lock up front
    makes every writer wait its turn (up to the lock timeout) instead; past
    it, the library's `OperationalError`, as for any other failed statement.
    The threads of one process first take turns (`write_turns`), so that
    they do not sleep in SQLite's busy handler while the lock is free.
    """

    def __init__(
        self, connection: SQLiteConnection, *, commit: bool, turn: write_turns.Turn, timeout: float
    ) -> None:
        super().__init__(connection, commit=commit)
        self.turn = turn
        self.timeout = timeout

    def __enter__(self) -> SQLiteCursor:
        self.turn.take(self.timeout)
        try:
            cursor = self.connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            self.turn.give_back()
            raise OperationalError(str(error)) from error
        except BaseException:
            self.turn.give_back()
            raise
        return cursor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc_val, exc_tb)
        finally:
            self.turn.give_back()


class LedgerSQLiteDatastore(SQLiteDatastore):
    """The library's datastore with the ledger's connections and write transactions.

    Connections apply the store's `PRAGMA synchronous`; write transactions
    begin IMMEDIATE (`ImmediateTransaction`).
    """

    def __init__(self, *, synchronous: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool.close()
        self.pool = LedgerSQLiteConnectionPool(
            db_name=kwargs["db_name"], lock_timeout=kwargs.get("lock_timeout")
        )
        self.pool.synchronous = synchronous
        self.turn = write_turns.turn_of(kwargs["db_name"])

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[SQLiteCursor]:
        with (
            self.get_connection(commit=commit) as connection,
            self._begin(connection, commit) as cursor,
            cursor,
        ):
            yield cursor

    def _begin(self, connection: SQLiteConnection, commit: bool) -> SQLiteTransaction:
        if not commit:
            return SQLiteTransaction(connection, commit=False)
        timeout = float(self.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT)
        return ImmediateTransaction(connection, commit=True, turn=self.turn, timeout=timeout)


class LedgerSQLiteFactory(SQLiteFactory):
    application_recorder_class = LedgerSQLiteRecorder

    def __init__(self, env: Environment | dict[str, str] | None):
        checked = Environment(env=env) if not isinstance(env, Environment) else env
        db_name = checked.get(self.SQLITE_DBNAME) or ""
        path = database_file(db_name)
        if path is not None:
            read_only = checked.get(READ_ONLY_ENV) == "1" or (
                path.exists() and not os.access(path, os.W_OK)
            )
            prepare_store_file(
                path, create=checked.get(CREATE_ENV) != "0" and not read_only, read_only=read_only
            )
            if read_only:
                db_name = read_only_uri(path)
        super().__init__(env)
        library_datastore = self.datastore
        synchronous = (self.env.get(SYNCHRONOUS_ENV) or "full").lower()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        self.datastore = LedgerSQLiteDatastore(
            synchronous=synchronous,
            db_name=db_name,
            lock_timeout=library_datastore.pool.lock_timeout,
            single_row_tracking=library_datastore.single_row_tracking,
            originator_id_type=library_datastore.originator_id_type,
        )
        library_datastore.close()

    def tracking_recorder(
        self, tracking_recorder_class: type[SQLiteTrackingRecorder] | None = None
    ) -> SQLiteTrackingRecorder:
        """The library's, tolerant of another process creating the table first.

        Processes opening a fresh file at once may all see no tracking table;
        the first creates it with its migration record, and the library's
        check-then-create in the others then fails on that record. Opening
        again finds the table there.
        """
        try:
            return super().tracking_recorder(tracking_recorder_class)
        except IntegrityError:
            return super().tracking_recorder(tracking_recorder_class)
