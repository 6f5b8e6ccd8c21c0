"""One append on PostgreSQL: one statement and one wait for the server.

The library's append (and the ledger's hooks around it) waited for the
server five to nine times per command: the reservations one by one, the
events, the log chain's last link, the last seal and the links at the seals'
anchors, then the commit; three to seven of them while holding the events
table's EXCLUSIVE lock, which every writer needs, so every other writer
waited for this process to be scheduled again. Now a command's append is
one call of a PL/pgSQL function (`APPEND_FUNCTION`), its own transaction:
it takes the lock, confirms that the aggregates the decision only read have
no newer event (`service.ports.UNCHANGED`), inserts the reservations and
the events, computes the
log chain's links and the seals in the server (`domain.chain`'s formulas,
with `sha256`) and commits. The lock is held by the server alone.

An import whose seals name their anchors (or that seals nothing) keeps a
client-side path with two waits: BEGIN, the lock and one statement that
inserts and answers the positions with the chains' last links; then the
links and seals computed here by `domain.chain`, and COMMIT.

The guarantees are the library's and the ledger's as before: positions are
issued and committed in lock order (a reader tailing the log passes no gap
filled later), the log chain grows in commit order in the append's own
transaction, reservations are sealed in it too, and a duplicate reservation
or a concurrent append to the same aggregate is an `IntegrityError` with
nothing of the command kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from uuid import UUID

from eventsourcing.persistence import ProgrammingError, StoredEvent
from psycopg import Connection, Cursor
from psycopg.abc import Query
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

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
        self.function = f"{events}_append"
        function = Identifier(self.function)
        self.create_function = SQL(APPEND_FUNCTION).format(
            function=function,
            log_genesis=SQL(LOG_GENESIS),  # hex digits only
            seal_genesis=SQL(SEAL_GENESIS),
            channel=Identifier(channel),
            **names,
        )
        # Rendered once: psycopg would compose the statement again at every call. The
        # states go in binary (%b): as text, psycopg escapes each element of a bytea
        # array in Python (~20 us a kilobyte) and the server decodes the hex again.
        self.call = (
            SQL(
                "SELECT {schema}.{function}(%s::uuid[], %s::integer[], %s::text[], %b::bytea[],"
                " %s::text[], %s::text[], %b::bytea[], %s::uuid[], %s::integer[], %s::text) AS ids"
            )
            .format(function=function, **names)
            .as_bytes(None)
        )
        self._qualified_function = SQL("{schema}.{function}").format(function=function, **names)
        self._calls_of_shape: dict[tuple[int, int, int], bytes] = {}
        self.select_all_reservations = SQL(
            "SELECT kind, key, value FROM {schema}.{reservations} ORDER BY kind, key"
        ).format(**names)
        self.select_links_at = SQL(
            "SELECT position, link FROM {schema}.{log_chain} WHERE position = ANY(%s)"
        ).format(**names)

    def signature(self) -> str:
        """The function's name and argument types, as `to_regprocedure` takes them."""
        return (
            f"{self.function}(uuid[],integer[],text[],bytea[],text[],text[],bytea[],"
            "uuid[],integer[],text)"
        )

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
        with conn.cursor() as curs:
            if max(shape) <= SCALARS_UP_TO:
                # A command's few values one by one: psycopg dumps a list in Python,
                # each time working out its elements' type (~50 us a call in all).
                statement = self._call_of_shape(shape)
                curs.execute(statement, [*itertools.chain(*columns), wait], prepare=True)
            else:
                curs.execute(self.call, (*columns, wait), prepare=True)
            row = curs.fetchone()
        positions = [] if row is None else [int(p) for p in row["ids"]]
        if len(positions) != len(stored_events):
            raise ProgrammingError(f"appended {len(positions)} of {len(stored_events)} events")
        return positions

    def _call_of_shape(self, shape: tuple[int, int, int]) -> bytes:
        """`call` with each array built in the server from one parameter per element
        (`shape`: how many events, reservations and aggregates read)."""
        statement = self._calls_of_shape.get(shape)
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
            statement = (
                SQL("SELECT {function}(" + ", ".join(arrays) + ", %s::text) AS ids")
                .format(function=self._qualified_function)
                .as_bytes(None)
            )
            self._calls_of_shape[shape] = statement
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


APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{function}(
    event_ids uuid[], versions integer[], topics text[], states bytea[],
    kinds text[], keys text[], vals bytea[], read_ids uuid[], read_versions integer[],
    wait text
) RETURNS bigint[] LANGUAGE plpgsql AS $body$
DECLARE
    nul constant bytea := '\\x00'::bytea;
    ids bigint[] := ARRAY[]::bigint[];
    links text[] := ARRAY[]::text[];
    link bytea;
    anchor bigint;
    seal bytea;
    seq bigint;
    every boolean;
    waited text;
    r record;
BEGIN
    -- an assignment, not PERFORM: plpgsql evaluates it without starting an executor
    waited := set_config('lock_timeout', wait, true);
    LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE;
    -- what the decision read on copies, unchanged since (service.ports.UNCHANGED); one
    -- look-up of the (originator_id, originator_version) key each, whatever the table's size
    FOR i IN 1 .. coalesce(cardinality(read_ids), 0) LOOP
        PERFORM FROM {schema}.{events} e
            WHERE e.originator_id = read_ids[i] AND e.originator_version > read_versions[i]
            LIMIT 1;
        IF FOUND THEN
            RAISE unique_violation USING MESSAGE = format(
                '%s changed after the decision read it', read_ids[i]);
        END IF;
    END LOOP;
    IF cardinality(event_ids) > 0 THEN
        NOTIFY {channel};
    END IF;
    IF cardinality(kinds) > 0 THEN  -- most appends reserve nothing
        INSERT INTO {schema}.{reservations} (kind, key, value)
        SELECT * FROM unnest(kinds, keys, vals);
    END IF;
    SELECT c.position, decode(c.link, 'hex') INTO anchor, link
        FROM {schema}.{log_chain} c ORDER BY c.position DESC LIMIT 1;
    IF NOT FOUND THEN
        anchor := 0;
        link := decode('{log_genesis}', 'hex');
    END IF;
    -- domain.chain.log_link, row by row in position order
    FOR r IN
        WITH appended AS (
            INSERT INTO {schema}.{events} AS t (originator_id, originator_version, topic, state)
            SELECT * FROM unnest(event_ids, versions, topics, states)
            RETURNING t.notification_id, t.originator_id, t.originator_version, t.topic, t.state
        ) SELECT * FROM appended ORDER BY notification_id
    LOOP
        link := sha256(
            link || convert_to(r.notification_id::text, 'UTF8') || nul
            || convert_to(r.originator_id::text, 'UTF8') || nul
            || convert_to(r.originator_version::text, 'UTF8') || nul
            || convert_to(r.topic, 'UTF8') || nul || sha256(r.state)
        );
        ids := ids || r.notification_id;
        links := links || encode(link, 'hex');
        anchor := r.notification_id;
    END LOOP;
    INSERT INTO {schema}.{log_chain} (position, link) SELECT * FROM unnest(ids, links);
    IF cardinality(kinds) = 0 THEN
        RETURN ids;
    END IF;
    -- domain.chain.seal_link, anchored at the append's last event (or the log's end),
    -- in (kind, key) order by code point; the first seal of a store seals every reservation
    SELECT s.seq, decode(s.link, 'hex') INTO seq, seal
        FROM {schema}.{seals} s ORDER BY s.seq DESC LIMIT 1;
    every := NOT FOUND;
    IF every THEN
        seq := 0;
        seal := decode('{seal_genesis}', 'hex');
    END IF;
    FOR r IN
        SELECT * FROM (
            SELECT a.kind, a.key, a.value FROM {schema}.{reservations} a WHERE every
            UNION ALL
            SELECT u.kind, u.key, u.value FROM unnest(kinds, keys, vals) u(kind, key, value)
            WHERE NOT every
        ) x ORDER BY x.kind COLLATE "C", x.key COLLATE "C"
    LOOP
        seq := seq + 1;
        seal := sha256(
            seal || link || convert_to(r.kind, 'UTF8') || nul
            || convert_to(r.key, 'UTF8') || nul || sha256(r.value)
        );
        INSERT INTO {schema}.{seals} (seq, position, kind, key, value_hash, link)
        VALUES (seq, anchor, r.kind, r.key, encode(sha256(r.value), 'hex'), encode(seal, 'hex'));
    END LOOP;
    RETURN ids;
END
$body$
"""
"""The append of `PostgresAppend._call`: `domain.chain`'s log link and seal link, computed
in the server under the lock (tests/integration/test_postgres_append.py holds the two
to the same bytes, and `verify` checks every link with `domain.chain`)."""
