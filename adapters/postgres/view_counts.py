"""`stats` without a scan, on PostgreSQL: the SQLite view's counters, as PL/pgSQL triggers.

The counters, their statements and the recount are SQLite's
(`adapters.sqlite.view_counts.COUNTERS`, `RECOUNT`: portable SQL); here each
counter's statements are the body of a trigger function, run for each row in
the writer's transaction. As on SQLite, a rebuild drops the triggers and
counts once at the end, and a view found without them (made by an older
version, or a rebuild that was interrupted) is counted when the store opens.
The same machinery keeps shadow statistics' counters
(adapters/postgres/shadow_hours.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.sql import SQL, Identifier

from trainledger.adapters.sqlite.view_counts import COUNTERS, COUNTS, RECOUNT, Counter
from trainledger.adapters.sqlite.view_schema import CHECKPOINTS, EVALS, RUNS

_PRESENT = (
    "SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_namespace s ON s.oid = c.relnamespace "
    "WHERE s.nspname = %s AND NOT t.tgisinternal AND t.tgname = ANY(%s)"
)


def _one_value(c: Any) -> Any:
    row = c.fetchone()
    return row[0] if isinstance(row, tuple) else next(iter(row.values()))


def triggers_present(c: Any, schema: str, counters: Mapping[str, Counter]) -> bool:
    """Whether every one of `counters`' triggers is there."""
    c.execute(_PRESENT, (schema, list(counters)))
    return int(_one_value(c)) == len(counters)


def drop_triggers(c: Any, counters: Mapping[str, Counter]) -> None:
    for name, counter in counters.items():
        c.execute(
            SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                Identifier(name), Identifier(counter.table)
            )
        )


def create_triggers(c: Any, schema: str, counters: Mapping[str, Counter], counts: str) -> None:
    """Each counter's statements as a trigger function (`counts`: the table they write)."""
    qualified = Identifier(schema, counts).as_string(c)
    for name, counter in counters.items():
        # The function names its table by schema: it runs in the search path of
        # whoever writes the row.
        body = counter.body.replace(
            f"INSERT INTO {counts} ", f"INSERT INTO {qualified} AS {counts} "
        )
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


def has_counters(c: Any, schema: str) -> bool:
    """Whether the view's triggers keep the counts (`c`: a cursor in the store's schema)."""
    return triggers_present(c, schema, COUNTERS)


def drop_counters(c: Any) -> None:
    """No counting while a rebuild fills the tables (it counts once at the end)."""
    drop_triggers(c, COUNTERS)


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
    create_triggers(c, schema, COUNTERS, COUNTS)
