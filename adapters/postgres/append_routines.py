"""The server's routines of a PostgreSQL append (`adapters.postgres.append.PostgresAppend`).

PL/pgSQL texts, formatted with the store's names when its tables are made:
one command's append under the events table's lock (`APPLY_FUNCTION`, the
only place the server computes `domain.chain`'s links), a writer's turn at
that lock when it is alone (`TURN_FUNCTION`), and the combining procedure
for writers that meet there (`COMBINED_PROCEDURE`, with the unlogged tables
it hands commands over in, `STAGED_TABLES`).
"""

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
