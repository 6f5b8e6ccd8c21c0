"""`stats` without a scan, on PostgreSQL: the SQLite view's counters, as PL/pgSQL triggers.

The counters, their statements and the recount are SQLite's
(`adapters.sqlite.view_counts.COUNTERS`, `RECOUNT`: portable SQL); here each
counter's statements are the body of a trigger function, run for each row in
the writer's transaction. As on SQLite, a rebuild drops the triggers and
counts once at the end, and a view found without them (made by an older
version, or a rebuild that was interrupted) is counted when the store opens.
"""

from __future__ import annotations

from typing import Any

from psycopg.sql import SQL, Identifier

from trainledger.adapters.sqlite.view_counts import COUNTERS, COUNTS, RECOUNT
from trainledger.adapters.sqlite.view_schema import CHECKPOINTS, EVALS, RUNS

_PRESENT = (
    "SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_namespace s ON s.oid = c.relnamespace "
    "WHERE s.nspname = %s AND NOT t.tgisinternal AND t.tgname = ANY(%s)"
)


def _present(c: Any, schema: str) -> int:
    c.execute(_PRESENT, (schema, list(COUNTERS)))
    row = c.fetchone()
    return int(row[0] if isinstance(row, tuple) else next(iter(row.values())))


def has_counters(c: Any, schema: str) -> bool:
    """Whether the view's triggers keep the counts (`c`: a cursor in the store's schema)."""
    return _present(c, schema) == len(COUNTERS)


def drop_counters(c: Any) -> None:
    """No counting while a rebuild fills the tables (it counts once at the end)."""
    for name, counter in COUNTERS.items():
        c.execute(
            SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                Identifier(name), Identifier(counter.table)
            )
        )


def ensure_counters(c: Any, schema: str) -> None:
    """Count and make the triggers, unless all of them are there.

    `c`: a cursor in a write transaction whose search path is the store's
    schema. The counted tables are locked against writers (and against
    another process doing the same) while they are counted.
    """
    if has_counters(c, schema):
        return
    c.execute(
        SQL("LOCK TABLE {}, {}, {} IN SHARE ROW EXCLUSIVE MODE").format(
            Identifier(RUNS), Identifier(CHECKPOINTS), Identifier(EVALS)
        )
    )
    if has_counters(c, schema):
        return
    drop_counters(c)
    for statement in RECOUNT:
        c.execute(statement)
    counts = Identifier(schema, COUNTS).as_string(c)
    for name, counter in COUNTERS.items():
        # The function names its table by schema: it runs in the search path of
        # whoever writes the row.
        body = counter.body.replace(f"INSERT INTO {COUNTS} ", f"INSERT INTO {counts} AS {COUNTS} ")
        c.execute(
            SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
                "$counter$ BEGIN {} RETURN NULL; END $counter$"
            ).format(Identifier(schema, name), SQL(body))
        )
        when = SQL("") if counter.when is None else SQL(f" WHEN ({counter.when})")
        c.execute(
            SQL("CREATE TRIGGER {} AFTER {} ON {} FOR EACH ROW{} EXECUTE FUNCTION {}()").format(
                Identifier(name),
                SQL(counter.event),
                Identifier(counter.table),
                when,
                Identifier(schema, name),
            )
        )
