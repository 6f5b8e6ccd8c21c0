"""One append on PostgreSQL: one statement and one wait for the server.

The library's append (and the ledger's hooks around it) waited for the
server five to nine times per command: the reservations one by one, the
events, the log chain's last link, the last seal and the links at the seals'
anchors, then the commit; three to seven of them while holding the events
table's EXCLUSIVE lock, which every writer needs, so every other writer
waited for this process to be scheduled again. Now a command's append is
one call of a PL/pgSQL routine, its own transaction: it takes the lock,
confirms that the aggregates the decision only read have no newer event
(`service.ports.UNCHANGED`), inserts the reservations and the events,
computes the log chain's links and the seals in the server (`domain.chain`'s
formulas, with `sha256`; `append_routines.APPLY_FUNCTION`) and commits. The
lock is held by the server alone.

A commit releases the lock only once its WAL is flushed, so writers that
meet at the lock would each wait for the flush of every one before them.
Command appends therefore first take a turn (an advisory lock), and one that
finds the turn taken leaves its command to the writer holding it, which
appends every command left with its own under one commit and one flush
(`COMBINED_PROCEDURE`). A writer alone takes the turn in a plain function
(`TURN_FUNCTION`), and goes through the combining procedure only for
`COMBINE_FOR` seconds after it met another writer there.

An import whose seals name their anchors (or that seals nothing) keeps a
client-side path with two waits: BEGIN, the lock and one statement that
inserts and answers the positions with the chains' last links; then the
links and seals computed here by `domain.chain`, and COMMIT.

The guarantees are the library's and the ledger's as before: positions are
issued and committed in lock order (a reader tailing the log passes no gap
filled later), the log chain grows in commit order in the append's own
transaction, reservations are sealed in it too, and a duplicate reservation
or a concurrent append to the same aggregate is an `IntegrityError` with
nothing of the command kept, whichever writer appended it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from uuid import UUID

from eventsourcing.persistence import ProgrammingError, StoredEvent
from psycopg import Connection, Cursor
from psycopg.abc import Query
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from trainledger.adapters.postgres.append_routines import (
    APPLY_FUNCTION,
    COMBINED_PROCEDURE,
    STAGED_TABLES,
    TURN_FUNCTION,
)
from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, log_links, seal_anchor, seal_links
from trainledger.service.ports import Reservation


class PostgresAppend:
    """The statements of one append, for one recorder's tables."""

    def __init__(
        self,
        *,
        schema: str,
        events: str,
        reservations: str,
        log_chain: str,
        seals: str,
        lock_statements: Sequence[Query],
        lock_timeout: int,
        channel: str,
    ) -> None:
        self.lock_timeout = lock_timeout
        names = {
            "schema": Identifier(schema),
            "events": Identifier(events),
            "reservations": Identifier(reservations),
            "log_chain": Identifier(log_chain),
            "seals": Identifier(seals),
        }
        self.lock_statements = list(lock_statements)
        self.notify = SQL("NOTIFY {}").format(Identifier(channel))
        self.append = SQL(
            "WITH reserved AS ("
            " INSERT INTO {schema}.{reservations} (kind, key, value)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %b::bytea[]) RETURNING 1"
            "), appended AS ("
            " INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::text[], %b::bytea[])"
            " RETURNING notification_id"
            ") SELECT"
            " ARRAY(SELECT notification_id FROM appended ORDER BY notification_id) AS ids,"
            " (SELECT count(*) FROM reserved) AS reserved,"
            " (SELECT position FROM {schema}.{log_chain} ORDER BY position DESC LIMIT 1)"
            " AS chain_end,"
            " (SELECT link FROM {schema}.{log_chain} ORDER BY position DESC LIMIT 1)"
            " AS chain_link,"
            " (SELECT seq FROM {schema}.{seals} ORDER BY seq DESC LIMIT 1) AS seal_seq,"
            " (SELECT link FROM {schema}.{seals} ORDER BY seq DESC LIMIT 1) AS seal_link"
        ).format(**names)
        self.insert_links = SQL(
            "WITH linked AS ("
            " INSERT INTO {schema}.{log_chain} (position, link)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[]) RETURNING 1"
            ") INSERT INTO {schema}.{seals} (seq, position, kind, key, value_hash, link)"
            " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], %s::text[])"
        ).format(**names)
        self.objects = {
            "apply": f"{events}_apply",
            "turn_function": f"{events}_append_turn",
            "procedure": f"{events}_append_combined",
            "staged": f"{events}_staged",
            "results": f"{events}_results",
            "drained": f"{events}_drained",
        }
        combined: dict[str, Identifier | Literal] = {
            key: Identifier(name) for key, name in self.objects.items()
        }
        self.turn_key = f"trainledger-turn:{schema}.{events}"
        """The commands' turn at the lock: the advisory lock of `hashtext` of this."""
        combined["turn_key"] = Literal(self.turn_key)
        self.create_function = SQL(";").join(
            [
                SQL(APPLY_FUNCTION).format(
                    log_genesis=SQL(LOG_GENESIS),  # hex digits only
                    seal_genesis=SQL(SEAL_GENESIS),
                    channel=Identifier(channel),
                    **combined,
                    **names,
                ),
                SQL(TURN_FUNCTION).format(**combined, **names),
                SQL(STAGED_TABLES).format(**combined, **names),
                SQL(COMBINED_PROCEDURE).format(**combined, **names),
            ]
        )
        routines = {
            False: SQL("SELECT * FROM {schema}.{turn_function}(").format(**combined, **names),
            True: SQL("CALL {schema}.{procedure}(NULL, NULL, ").format(**combined, **names),
        }
        self._routines = {combine: r.as_bytes(None).decode() for combine, r in routines.items()}
        self._combine_until = 0.0
        """Until when (`time.monotonic`) this process's appends go through the combining
        procedure: for `COMBINE_FOR` seconds after one met another writer's turn."""
        # Rendered once: psycopg would compose the statement again at every call. The
        # states go in binary (%b): as text, psycopg escapes each element of a bytea
        # array in Python (~20 us a kilobyte) and the server decodes the hex again.
        arrays = (
            "%s::uuid[], %s::integer[], %s::text[], %b::bytea[],"
            " %s::text[], %s::text[], %b::bytea[], %s::uuid[], %s::integer[], %s::text)"
        )
        self.calls = {combine: (r + arrays).encode() for combine, r in self._routines.items()}
        self._calls_of_shape: dict[tuple[tuple[int, int, int], bool], bytes] = {}
        self.select_all_reservations = SQL(
            "SELECT kind, key, value FROM {schema}.{reservations} ORDER BY kind, key"
        ).format(**names)
        self.select_links_at = SQL(
            "SELECT position, link FROM {schema}.{log_chain} WHERE position = ANY(%s)"
        ).format(**names)

    def routines(self) -> tuple[str, ...]:
        """The server's routines of this append, as `to_regprocedure` takes them."""
        arguments = "uuid[],integer[],text[],bytea[],text[],text[],bytea[],uuid[],integer[]"
        return (
            f"{self.objects['apply']}({arguments})",
            f"{self.objects['turn_function']}({arguments},text)",
            f"{self.objects['procedure']}(bigint[],boolean,{arguments},text)",
        )

    def tables(self) -> tuple[str, ...]:
        """The tables of commands left for the writer whose turn it is, their results, and
        the last command taken."""
        return (self.objects["staged"], self.objects["results"], self.objects["drained"])

    def run(
        self,
        conn: Connection[DictRow],
        stored_events: Sequence[StoredEvent],
        reservations: Sequence[Reservation],
        *,
        seal: bool,
        unchanged: Sequence[tuple[UUID, int]] = (),
    ) -> list[int]:
        """Append in one transaction of `conn` (autocommit, from the pool); the positions.

        Refused (`IntegrityError`) if an aggregate in `unchanged` (id, version) has an
        event past that version (`service.ports.UNCHANGED`)."""
        if seal and all(r.anchor is None for r in reservations):
            return self._call(conn, stored_events, reservations, unchanged)
        if unchanged:  # only a command's append confirms what it read
            raise ProgrammingError("an import's append confirms no aggregates it read")
        error: Exception | None = None
        positions: list[int] = []
        # The links and seals go with the COMMIT: the second and last wait.
        with conn.pipeline(), conn.transaction(), conn.cursor() as curs:
            try:
                positions = self._append(curs, stored_events, reservations, seal=seal)
            except Exception as e:  # re-raised outside the pipeline, as the library does
                error = e
        if error is not None:
            raise error
        return positions

    def _call(
        self,
        conn: Connection[DictRow],
        stored_events: Sequence[StoredEvent],
        reservations: Sequence[Reservation],
        unchanged: Sequence[tuple[UUID, int]],
    ) -> list[int]:
        """One statement, its own transaction: one wait, and the lock is held by the server
        alone (never across a wait for this process, which may not get a CPU soon)."""
        columns = (
            *event_columns(stored_events),
            [r.kind for r in reservations],
            [r.key for r in reservations],
            [r.value for r in reservations],
            [aggregate_id for aggregate_id, _ in unchanged],
            [version for _, version in unchanged],
        )
        wait = f"{self.lock_timeout}s"
        shape = (len(stored_events), len(reservations), len(unchanged))
        combine = time.monotonic() < self._combine_until
        with conn.cursor() as curs:
            if max(shape) <= SCALARS_UP_TO:
                # A command's few values one by one: psycopg dumps a list in Python,
                # each time working out its elements' type (~50 us a call in all).
                statement = self._call_of_shape(shape, combine)
                curs.execute(statement, [*itertools.chain(*columns), wait], prepare=True)
            else:
                curs.execute(self.calls[combine], (*columns, wait), prepare=True)
            row = curs.fetchone()
        if row is not None and row["contended"]:
            self._combine_until = time.monotonic() + COMBINE_FOR
        positions = [] if row is None else [int(p) for p in row["ids"]]
        if len(positions) != len(stored_events):
            raise ProgrammingError(f"appended {len(positions)} of {len(stored_events)} events")
        return positions

    def _call_of_shape(self, shape: tuple[int, int, int], combine: bool) -> bytes:
        """`call` with each array built in the server from one parameter per element
        (`shape`: how many events, reservations and aggregates read)."""
        statement = self._calls_of_shape.get((shape, combine))
        if statement is None:
            events, reservations, read = shape
            arrays = [
                _array(events, "%s", "uuid"),
                _array(events, "%s", "integer"),
                _array(events, "%s", "text"),
                _array(events, "%b", "bytea"),
                _array(reservations, "%s", "text"),
                _array(reservations, "%s", "text"),
                _array(reservations, "%b", "bytea"),
                _array(read, "%s", "uuid"),
                _array(read, "%s", "integer"),
            ]
            statement = (self._routines[combine] + ", ".join(arrays) + ", %s::text)").encode()
            self._calls_of_shape[(shape, combine)] = statement
        return statement

    def _append(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        reservations: Sequence[Reservation],
        *,
        seal: bool,
    ) -> list[int]:
        for statement in self.lock_statements:
            curs.execute(statement, prepare=True)
        if stored_events:
            curs.execute(self.notify)
        curs.execute(
            self.append,
            (
                [r.kind for r in reservations],
                [r.key for r in reservations],
                [r.value for r in reservations],
                *event_columns(stored_events),
            ),
            prepare=True,
        )
        row = curs.fetchone()  # the first wait: a duplicate key raises here
        assert row is not None
        positions = [int(p) for p in row["ids"]]
        if len(positions) != len(stored_events) or row["reserved"] != len(reservations):
            raise ProgrammingError(
                f"appended {len(positions)} of {len(stored_events)} events and "
                f"{row['reserved']} of {len(reservations)} reservations"
            )
        previous = LOG_GENESIS if row["chain_link"] is None else str(row["chain_link"])
        links = log_links(
            previous,
            [
                (n, s.originator_id, s.originator_version, s.topic, s.state)
                for n, s in zip(positions, stored_events, strict=True)
            ],
        )
        seals: list[tuple[int, int, str, str, str, str]] = []
        if reservations and seal:
            end = positions[-1] if positions else int(row["chain_end"] or 0)
            known = {0: LOG_GENESIS, **dict(links)}
            if row["chain_end"] is not None:
                known.setdefault(int(row["chain_end"]), previous)
            seals = self._seals(curs, row, positions, end, reservations, known)
        curs.execute(
            self.insert_links,
            (
                [p for p, _ in links],
                [link for _, link in links],
                *([s[i] for s in seals] for i in range(6)),
            ),
            prepare=True,
        )
        return positions

    def _seals(
        self,
        curs: Cursor[DictRow],
        row: DictRow,
        positions: list[int],
        end: int,
        reservations: Sequence[Reservation],
        known: dict[int, str],
    ) -> list[tuple[int, int, str, str, str, str]]:
        """This append's seals (seq, position, kind, key, value hash, link), as on SQLite."""
        if row["seal_seq"] is None:
            # Nothing sealed yet (a store written before seals): seal every reservation.
            curs.execute(self.select_all_reservations)
            given = {(r.kind, r.key): r.anchor for r in reservations}
            items = [
                (given.get((r["kind"], r["key"])), r["kind"], r["key"], bytes(r["value"]))
                for r in curs.fetchall()
            ]
        else:
            items = [(r.anchor, r.kind, r.key, r.value) for r in reservations]
        anchors = [seal_anchor(a, positions, end) for a, _, _, _ in items]
        missing = sorted(set(anchors) - set(known))
        if missing:
            curs.execute(self.select_links_at, (missing,))
            known = {**known, **{int(r["position"]): str(r["link"]) for r in curs.fetchall()}}
        seq = 0 if row["seal_seq"] is None else int(row["seal_seq"])
        sealed = seal_links(
            SEAL_GENESIS if row["seal_link"] is None else str(row["seal_link"]),
            [
                (p, known[p], kind, key, value)
                for p, (_, kind, key, value) in zip(anchors, items, strict=True)
            ],
        )
        return [(seq + n, *s) for n, s in enumerate(sealed, start=1)]


COMBINE_FOR = 1.0
"""Seconds an append that met another writer at the lock makes the next ones leave
their commands to the writer holding it (the combining procedure)."""

SCALARS_UP_TO = 8
"""Appends of at most this many events, reservations and aggregates read each pass each
value as a parameter of its own (`PostgresAppend._call_of_shape`); larger ones pass arrays."""


def _array(length: int, placeholder: str, kind: str) -> str:
    """An SQL array of `length` parameters of type `kind`: `ARRAY[%s, %s]::kind[]`."""
    return f"ARRAY[{', '.join([placeholder] * length)}]::{kind}[]"


def event_columns(
    stored_events: Sequence[StoredEvent],
) -> tuple[list[UUID | str], list[int], list[str], list[bytes]]:
    """The events as four arrays of the server's own types: psycopg dumps those in C, and
    the server reads them without parsing a composite's text form element by element."""
    return (
        [s.originator_id for s in stored_events],
        [s.originator_version for s in stored_events],
        [s.topic for s in stored_events],
        [s.state for s in stored_events],
    )
