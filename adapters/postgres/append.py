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
formulas, with `sha256`; `APPLY_FUNCTION`) and commits. The lock is held by
the server alone.

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


APPLY_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{apply}(
    event_ids uuid[], versions integer[], topics text[], states bytea[],
    kinds text[], keys text[], vals bytea[], read_ids uuid[], read_versions integer[]
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
    r record;
BEGIN
    -- the caller holds the events table's EXCLUSIVE lock
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
"""One command's append, under the events table's lock (its caller's): `domain.chain`'s
log link and seal link, computed in the server (tests/integration/test_postgres_append.py
holds the two to the same bytes, and `verify` checks every link with `domain.chain`)."""

TURN_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{turn_function}(
    event_ids uuid[], versions integer[], topics text[], states bytea[],
    kinds text[], keys text[], vals bytea[], read_ids uuid[], read_versions integer[],
    wait text, OUT ids bigint[], OUT contended boolean
) LANGUAGE plpgsql AS $body$
DECLARE
    turn constant bigint := hashtext({turn_key});
    waited text;
BEGIN
    waited := set_config('lock_timeout', wait, true);
    contended := NOT pg_try_advisory_xact_lock(turn);
    IF contended THEN
        PERFORM pg_advisory_xact_lock(turn);
    END IF;
    LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE;
    ids := {schema}.{apply}(
        event_ids, versions, topics, states, kinds, keys, vals, read_ids, read_versions);
END
$body$
"""
"""A command's append on its own: it takes the commands' turn, then the lock, and says
whether it had to wait for the turn (another writer had it)."""

STAGED_TABLES = """
CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{staged} (
    id bigserial PRIMARY KEY,
    event_ids uuid[], versions integer[], topics text[], states bytea[],
    kinds text[], keys text[], vals bytea[], read_ids uuid[], read_versions integer[]
);
CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{results} (
    id bigint PRIMARY KEY, ids bigint[], failed_state text, failed_message text,
    left_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{drained} (last bigint NOT NULL)
"""
"""Commands left for the writer whose turn it is, and their outcomes until their writers
read them. Unlogged: a crash empties them, and ends the writers waiting on them."""

COMBINED_PROCEDURE = """
CREATE OR REPLACE PROCEDURE {schema}.{procedure}(
    INOUT ids bigint[], INOUT contended boolean,
    event_ids uuid[], versions integer[], topics text[], states bytea[],
    kinds text[], keys text[], vals bytea[], read_ids uuid[], read_versions integer[],
    wait text
) LANGUAGE plpgsql AS $body$
DECLARE
    turn constant bigint := hashtext({turn_key});  -- the commands' turn at the lock
    mine bigint;
    done bigint[];
    failed_state text;
    failed_message text;
    own_state text;
    own_message text;
    others boolean := false;
    taken boolean := false;
    mark bigint;
    upto bigint;
    waited text;
    r record;
BEGIN
    waited := set_config('lock_timeout', wait, true);
    contended := NOT pg_try_advisory_xact_lock(turn);
    IF contended THEN
        -- Another writer has the turn: leave this command for it (or the next) to
        -- append with its own, in one commit and one flush.
        INSERT INTO {schema}.{staged} (event_ids, versions, topics, states, kinds, keys,
            vals, read_ids, read_versions)
        VALUES (event_ids, versions, topics, states, kinds, keys, vals, read_ids,
            read_versions)
        RETURNING id INTO mine;
        waited := set_config('synchronous_commit', 'off', true);  -- unlogged: no WAL
        COMMIT;
        waited := set_config('lock_timeout', wait, true);
        BEGIN
            PERFORM pg_advisory_xact_lock(turn);
        EXCEPTION WHEN lock_not_available THEN
            DELETE FROM {schema}.{staged} WHERE id = mine;
            IF FOUND THEN  -- withdrawn before any writer took it: nothing of it kept
                mine := -1;
            END IF;
            -- else a writer took it, and has committed (the delete waited for it)
        END;
        IF mine = -1 THEN
            COMMIT;
            RAISE lock_not_available USING MESSAGE = 'canceling statement due to lock timeout';
        END IF;
        DELETE FROM {schema}.{results} s WHERE s.id = mine
            RETURNING s.ids, s.failed_state, s.failed_message
            INTO done, failed_state, failed_message;
        IF FOUND THEN  -- appended (or refused) by the writer that took it
            IF failed_state IS NOT NULL THEN
                COMMIT;
                RAISE EXCEPTION USING ERRCODE = failed_state, MESSAGE = failed_message;
            END IF;
            ids := done;
            RETURN;
        END IF;
    END IF;
    -- This writer has the turn: the commands left for it, in order, each on its own
    -- (a refused one keeps nothing), and its own.
    LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE;
    -- Those left since the last holder took its share (a range of the key, not a scan of
    -- the dead rows), and this writer's own, which may have been left before that.
    SELECT d.last INTO mark FROM {schema}.{drained} d;
    upto := coalesce(mark, 0);
    FOR r IN
        WITH left_here AS (
            DELETE FROM {schema}.{staged} s WHERE s.id > upto OR s.id = mine RETURNING *
        ) SELECT * FROM left_here ORDER BY id
    LOOP
        others := others OR r.id IS DISTINCT FROM mine;
        taken := taken OR r.id = mine;
        upto := greatest(upto, r.id);
        done := NULL;
        failed_state := NULL;
        failed_message := NULL;
        BEGIN
            done := {schema}.{apply}(r.event_ids, r.versions, r.topics, r.states, r.kinds,
                r.keys, r.vals, r.read_ids, r.read_versions);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE,
                failed_message = MESSAGE_TEXT;
        END;
        IF r.id = mine THEN
            ids := done;
            own_state := failed_state;
            own_message := failed_message;
        ELSE
            INSERT INTO {schema}.{results} (id, ids, failed_state, failed_message)
            VALUES (r.id, done, failed_state, failed_message);
        END IF;
    END LOOP;
    IF mine IS NOT NULL AND NOT taken THEN
        RAISE EXCEPTION 'the command left as % was neither taken nor left', mine;
    END IF;
    IF upto > coalesce(mark, 0) THEN
        UPDATE {schema}.{drained} SET last = upto;
        IF NOT FOUND THEN
            INSERT INTO {schema}.{drained} (last) VALUES (upto);
        END IF;
        IF upto / 1024 > coalesce(mark, 0) / 1024 THEN  -- now and then: outcomes no writer
            DELETE FROM {schema}.{results} s  -- came for (it ended while it waited)
                WHERE s.left_at < now() - interval '10 minutes';
        END IF;
    END IF;
    IF mine IS NULL AND NOT others THEN  -- alone: an error undoes only this command
        ids := {schema}.{apply}(event_ids, versions, topics, states, kinds, keys, vals,
            read_ids, read_versions);
    ELSIF mine IS NULL THEN
        BEGIN
            ids := {schema}.{apply}(event_ids, versions, topics, states, kinds, keys, vals,
                read_ids, read_versions);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS own_state = RETURNED_SQLSTATE, own_message = MESSAGE_TEXT;
        END;
    END IF;
    IF own_state IS NOT NULL THEN
        COMMIT;  -- the others' appends are kept; this one's was undone
        RAISE EXCEPTION USING ERRCODE = own_state, MESSAGE = own_message;
    END IF;
END
$body$
"""
"""A command's append where writers meet at the lock (`PostgresAppend._call`).

A writer that finds the turn taken leaves its command in the unlogged `staged` table
(that commit writes no WAL and waits for no flush) and waits for the turn. Whoever
has the turn takes every command left so far, appends them in order, each in a
subtransaction (a refused one keeps nothing; its error goes to `results`), then its
own, and commits them all: one flush for all. A writer whose command was taken reads
its positions (or raises its error) once it has the turn, which is once the one that
took it has committed; one whose wait times out withdraws its command, unless it was
taken already. A procedure, to commit part-way: the command left, a withdrawal, and
the others' appends before the holder's own refusal is raised."""
