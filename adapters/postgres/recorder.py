"""The PostgreSQL store: the library's recorder plus the ledger's needs.

- Events are inserted the library's way: one transaction that takes an
  EXCLUSIVE lock on the events table, so notification ids are issued in
  commit order and a reader tailing the log never passes over a gap that is
  filled later.
- Reservations (idempotency keys, evalIds) are inserted in that same
  transaction, with the log chain's links and the reservations' seals
  (adapters/postgres/append.py: two waits for the server, the second the
  commit): a duplicate key is an IntegrityError, exactly like a concurrent
  append to the same aggregate, and nothing of the command is kept.
- Opening the store first makes one plain connection, so a wrong host,
  password or database name fails at once with the server's one-line reason
  (never the password) instead of a pool timeout.
- Tables are created once, under an advisory lock: concurrent first opens of
  a fresh database would otherwise race on PostgreSQL's catalogs. Triggers
  refuse UPDATE, DELETE and TRUNCATE on events and reservations, as on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import Environment, retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from trainledger.adapters.postgres.append import PostgresAppend
from trainledger.domain.errors import NoLedgerError
from trainledger.service.ports import UNCHANGED, LogCheck, Reservation, Seal

PROBE_TIMEOUT_ENV = "POSTGRES_CONNECT_TIMEOUT"
CREATE_ENV = "TRAINLEDGER_CREATE_STORE"
RESERVATIONS_TABLE = "ledger_reservations"
SCAN_PLANS = (
    # through the heap only, then through the primary key index only
    {"enable_seqscan": "on", "enable_indexscan": "off", "enable_indexonlyscan": "off",
     "enable_bitmapscan": "off"},
    {"enable_seqscan": "off", "enable_indexscan": "on", "enable_indexonlyscan": "on",
     "enable_bitmapscan": "off"},
)  # fmt: skip
LOG_CHAIN_TABLE = "ledger_log_chain"
SEALS_TABLE = "ledger_reservation_seals"


def connect(datastore: PostgresDatastore, **options: Any) -> psycopg.Connection[Any]:
    """A connection outside the datastore's pool, with the pool's settings.

    A failure is an `OperationalError` whose message is the server's or
    libpq's reason on one line, with the password scrubbed.
    """
    pool = datastore.pool
    kwargs = dict(pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {})
    if pool.get_password_func is not None:
        kwargs["password"] = pool.get_password_func()
    try:
        return psycopg.connect(autocommit=True, **{**kwargs, **options})
    except psycopg.Error as error:
        message = " ".join(str(error).split())
        if kwargs.get("password"):
            message = message.replace(kwargs["password"], "***")
        raise OperationalError(message) from None


def create_once(
    datastore: PostgresDatastore,
    name: str,
    *,
    regclasses: Sequence[str],
    regtypes: Sequence[str] = (),
    regprocedures: Sequence[str] = (),
    create: Callable[[], None],
) -> None:
    """Run `create` (a recorder's CREATE ... statements) unless all it makes exists.

    Concurrent CREATE TABLE IF NOT EXISTS (and CREATE OR REPLACE FUNCTION)
    in a fresh database fail with catalog conflicts, so the first process to
    open a store creates its schema under an advisory lock and the others
    wait, then find it there. Names are unqualified, in the datastore's schema.
    """

    def exists() -> bool:
        schema = datastore.schema
        checks = [
            *(("to_regclass(%s)", f'"{schema}"."{n}"') for n in regclasses),
            *(("to_regtype(%s)", f'"{schema}"."{n}"') for n in regtypes),
            *(("to_regprocedure(%s)", f'"{schema}".{n}') for n in regprocedures),
        ]
        query = "SELECT " + " AND ".join(f"{check} IS NOT NULL" for check, _ in checks)
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL(query) + SQL(" AS ready"), [n for _, n in checks])
            row = curs.fetchone()
            return bool(row and row["ready"])

    if exists():
        datastore.register_type_adapters()
        return
    # A connection outside the pool holds the lock, so `create` can take
    # pool connections meanwhile.
    lock_key = f"trainledger-schema:{name}"
    with connect(datastore) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_key,))
        try:
            if exists():
                datastore.register_type_adapters()
            else:
                create()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock_key,))


def select_events_query(
    schema: str, table: str, gt: bool, lte: bool, desc: bool, limit: bool
) -> bytes:
    """`PostgresAggregateRecorder.select_events`'s statement, as bytes."""
    query = SQL(
        "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
        "WHERE originator_id = %s"
    ).format(schema=Identifier(schema), table=Identifier(table))
    if gt:
        query += SQL(" AND originator_version > %s")
    if lte:
        query += SQL(" AND originator_version <= %s")
    query += SQL(
        " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC"
    )
    if limit:
        query += SQL(" LIMIT %s")
    return query.as_bytes(None)


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    gap_free_positions = False
    """Sequences skip numbers after failed appends: a gap is not a deleted row."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.reservations_table_name = RESERVATIONS_TABLE
        self.check_identifier_length(self.reservations_table_name)
        schema = Identifier(self.datastore.schema)

        def statement(text: str, table: Identifier) -> Composed:
            """A statement on one of this recorder's tables, in the datastore's schema."""
            return SQL(text).format(schema=schema, table=table)

        events = Identifier(self.events_table_name)
        reservations = Identifier(self.reservations_table_name)
        log_chain = Identifier(LOG_CHAIN_TABLE)
        self.sql_create_statements.append(
            statement(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "kind text NOT NULL, key text NOT NULL, value bytea NOT NULL, "
                "PRIMARY KEY (kind, key))",
                reservations,
            )
        )
        self.sql_create_statements.append(
            statement(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "position bigint PRIMARY KEY, link text NOT NULL)",
                log_chain,
            )
        )
        seals = Identifier(SEALS_TABLE)
        self.sql_create_statements.append(
            statement(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "seq bigint PRIMARY KEY, position bigint NOT NULL, kind text NOT NULL, "
                "key text NOT NULL, value_hash text NOT NULL, link text NOT NULL, "
                "UNIQUE (kind, key))",
                seals,
            )
        )
        # As on SQLite: the ledger only ever appends, so refuse anything else.
        self.append_only_function = f"{self.events_table_name}_append_only"
        self.check_identifier_length(self.append_only_function)
        function = Identifier(self.append_only_function)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'trainledger: % is append-only', TG_TABLE_NAME; END $$"
            ).format(schema=schema, function=function)
        )
        for table in (events, reservations, log_chain, seals):
            self.sql_create_statements.append(
                SQL(
                    "CREATE OR REPLACE TRIGGER append_only "
                    "BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.{table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()"
                ).format(schema=schema, table=table, function=function)
            )
        self.insert_reservation_statement = statement(
            "INSERT INTO {schema}.{table} (kind, key, value) VALUES (%s, %s, %s) RETURNING kind",
            reservations,
        )
        self.select_reservation_statement = statement(
            "SELECT value FROM {schema}.{table} WHERE kind = %s AND key = %s",
            reservations,
        )
        self.select_all_reservations_statement = statement(
            "SELECT kind, key, value FROM {schema}.{table} ORDER BY kind, key",
            reservations,
        )
        self.select_links_statement = statement(
            "SELECT position, link FROM {schema}.{table} WHERE position > %s AND position <= %s",
            log_chain,
        )
        self.select_chain_end_statement = statement(
            "SELECT MAX(position) AS last FROM {schema}.{table}",
            log_chain,
        )
        self.select_seals_statement = statement(
            "SELECT seq, position, kind, key, value_hash, link FROM {schema}.{table} ORDER BY seq",
            seals,
        )
        self.select_sealed_reservations_statement = SQL(
            "SELECT s.seq, s.position, s.kind, s.key, s.value_hash, s.link, r.value "
            "FROM {schema}.{seals} s LEFT JOIN {schema}.{reservations} r "
            "ON r.kind = s.kind AND r.key = s.key WHERE s.seq > %s ORDER BY s.seq LIMIT %s"
        ).format(schema=schema, seals=seals, reservations=reservations)
        self.select_unsealed_reservations_statement = SQL(
            "SELECT kind, key, value FROM {schema}.{reservations} r WHERE NOT EXISTS "
            "(SELECT 1 FROM {schema}.{seals} s WHERE s.kind = r.kind AND s.key = r.key) "
            "ORDER BY kind, key"
        ).format(schema=schema, seals=seals, reservations=reservations)
        self.select_seal_statement = statement(
            "SELECT EXISTS (SELECT 1 FROM {schema}.{table}) AS sealed, "
            "(SELECT value_hash FROM {schema}.{table} WHERE kind = %s AND key = %s) AS value_hash",
            seals,
        )
        self.appender = PostgresAppend(
            schema=self.datastore.schema,
            events=self.events_table_name,
            reservations=self.reservations_table_name,
            log_chain=LOG_CHAIN_TABLE,
            seals=SEALS_TABLE,
            lock_statements=self.lock_table_statements,
            lock_timeout=self.datastore.lock_timeout,
            channel=self.channel_name,
        )
        self.sql_create_statements.append(self.appender.create_function)
        self.select_events_statements: dict[tuple[bool, bool, bool, bool], bytes] = {}
        self.select_positions_statement = statement(
            "SELECT notification_id FROM {schema}.{table} "
            "WHERE originator_id = %s ORDER BY originator_version",
            events,
        )

    # --- schema ---------------------------------------------------------------

    def create_table(self) -> None:
        """Create tables unless they exist, one process at a time."""
        create_once(
            self.datastore,
            f"{self.datastore.schema}.{self.events_table_name}",
            regclasses=(
                self.events_table_name,
                self.notification_id_index_name,
                self.reservations_table_name,
                LOG_CHAIN_TABLE,
                SEALS_TABLE,
                *self.appender.tables(),
            ),
            regtypes=(self.stored_event_type_name,),
            regprocedures=(f"{self.append_only_function}()", *self.appender.routines()),
            create=super().create_table,
        )

    # --- writing --------------------------------------------------------------

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Events, reservations, chain links and seals in one transaction (two waits)."""
        reservations: Sequence[Reservation] = kwargs.get("reservations", ())
        if not stored_events and not reservations:
            return []
        with self.datastore.get_connection() as conn:
            return self.appender.run(
                conn,
                stored_events,
                reservations,
                seal=kwargs.get("seal", True),
                unchanged=kwargs.get(UNCHANGED, ()),
            )

    # --- reading --------------------------------------------------------------

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The library's query (an aggregate's events), its text rendered once per shape:
        every command loads what it changes, and psycopg would compose it again each time."""
        shape = (gt is not None, lte is not None, desc, limit is not None)
        statement = self.select_events_statements.get(shape)
        if statement is None:
            statement = self.select_events_statements[shape] = select_events_query(
                self.datastore.schema, self.events_table_name, *shape
            )
        params = [originator_id, *(v for v in (gt, lte, limit) if v is not None)]
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            # Binary rows: the states as they are, not hex that both sides would convert.
            curs.execute(statement, params, prepare=True, binary=True)
            return [
                StoredEvent(originator_id=i, originator_version=v, topic=t, state=bytes(s))
                for i, v, t, s in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def log_chain(self, after: int, upto: int | None) -> dict[int, str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_links_statement, (after, upto or 2**63 - 1))
            return {int(row["position"]): str(row["link"]) for row in curs.fetchall()}

    def store_problems(self) -> list[str]:
        """Each ledger table counted through its primary key index and through its heap.

        (amcheck would need an extension the ledger's role may not create.) A
        damaged index that lost or gained entries counts differently.
        """
        problems = []
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for table, key in (
                (self.events_table_name, "notification_id"),
                (LOG_CHAIN_TABLE, "position"),
            ):
                name = Identifier(self.datastore.schema, table)
                counts = []
                for plan in SCAN_PLANS:
                    for setting, value in plan.items():
                        curs.execute(SQL("SET LOCAL {} = {}").format(SQL(setting), SQL(value)))
                    curs.execute(
                        SQL("SELECT count(*) AS n FROM {} WHERE {} > -1").format(
                            name, Identifier(key)
                        )
                    )
                    row = curs.fetchone()
                    counts.append(int(row["n"]) if row else -1)
                if counts[0] != counts[1]:
                    problems.append(
                        f"{table}: {counts[0]} rows in the table, {counts[1]} through its index"
                    )
        return problems

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def log_chain_end(self) -> int:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_chain_end_statement)
            row = curs.fetchone()
            return int(row["last"] or 0) if row else 0

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def find_reservation(self, kind: str, key: str) -> bytes | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_reservation_statement, (kind, key), prepare=True)
            row = curs.fetchone()
            return None if row is None else bytes(row["value"])

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def reservations(self) -> list[Reservation]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_all_reservations_statement)
            return [
                Reservation(row["kind"], row["key"], bytes(row["value"])) for row in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def sealed_reservations(self, after_seq: int, limit: int) -> list[tuple[Seal, bytes | None]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_sealed_reservations_statement, (after_seq, limit))
            return [
                (
                    Seal(
                        int(r["seq"]),
                        int(r["position"]),
                        r["kind"],
                        r["key"],
                        r["value_hash"],
                        r["link"],
                    ),
                    None if r["value"] is None else bytes(r["value"]),
                )
                for r in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def unsealed_reservations(self) -> list[Reservation]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_unsealed_reservations_statement)
            return [
                Reservation(row["kind"], row["key"], bytes(row["value"])) for row in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def seals(self) -> list[Seal]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_seals_statement)
            return [
                Seal(
                    int(r["seq"]),
                    int(r["position"]),
                    r["kind"],
                    r["key"],
                    r["value_hash"],
                    r["link"],
                )
                for r in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def seal_of(self, kind: str, key: str) -> tuple[bool, str | None]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_seal_statement, (kind, key))
            row = curs.fetchone()
            return (bool(row["sealed"]), row["value_hash"]) if row else (False, None)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def positions(self, originator_id: UUID) -> list[int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_positions_statement, (originator_id,), prepare=True)
            return [int(row["notification_id"]) for row in curs.fetchall()]

    def start_log_check(
        self, *, digest: str | None, parts: int, minimum: int, application_name: str
    ) -> LogCheck | None:
        """No worker processes here: `verify` checks this log in one pass."""
        return None


class LedgerPostgresFactory(PostgresFactory):
    application_recorder_class = LedgerPostgresRecorder

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        self._probe(create=self.env.get(CREATE_ENV) != "0")

    def _probe(self, *, create: bool) -> None:
        """Connect once, so a bad address or credential fails now, in one line.

        Without `create` (a query), the database must hold a ledger already.
        """
        timeout = int(self.env.get(PROBE_TIMEOUT_ENV) or "10")
        try:
            with connect(self.datastore, connect_timeout=timeout) as connection:
                if not create:
                    events = f"{self.env.name.lower() or 'stored'}_events"
                    table = f'"{self.datastore.schema}"."{events}"'
                    cursor = connection.cursor(row_factory=tuple_row)
                    row = cursor.execute("SELECT to_regclass(%s)", (table,)).fetchone()
                    if row is None or row[0] is None:
                        raise NoLedgerError(
                            f"no ledger in database {self.env.get('POSTGRES_DBNAME')!r} "
                            "(a command that records something creates one)"
                        )
        except (OperationalError, NoLedgerError):
            self.datastore.close()
            raise
