"""Shadow statistics without reading every observation, on PostgreSQL: counters by hour.

The table, the counters' statements, the recount and the reads are SQLite's
(`adapters.sqlite.shadow_hours`: portable SQL, the reads without SQLite's
index hints); the counters run as PL/pgSQL row triggers on `view_shadow`, in
the writer's transaction (adapters/postgres/view_counts.py makes them). As
on SQLite, a rebuild drops them while it fills the tables and counts once at
the end, and a view found without them is counted when the store opens.
"""

from __future__ import annotations

from typing import Any

from psycopg.sql import SQL, Identifier

from trainledger.adapters.postgres.view_counts import (
    create_triggers,
    drop_triggers,
    triggers_present,
)
from trainledger.adapters.sqlite.deployment_schema import SHADOW
from trainledger.adapters.sqlite.shadow_hours import (
    CREATE_SETTLED_INDEX,
    HOURS,
    RECOUNT,
    SHADOW_COUNTERS,
)

SETTLED_INDEX = f"{SHADOW}_settled"


def has_shadow_hours(c: Any, schema: str) -> bool:
    """Whether the view's triggers keep the hours' counters (and their index is there)."""
    c.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{SETTLED_INDEX}",))
    row = c.fetchone()
    indexed = bool(row[0] if isinstance(row, tuple) else next(iter(row.values())))
    return indexed and triggers_present(c, schema, SHADOW_COUNTERS)


def drop_shadow_hours(c: Any) -> None:
    """No counting while a rebuild fills the tables (it counts once at the end)."""
    drop_triggers(c, SHADOW_COUNTERS)
    c.execute(SQL("DROP INDEX IF EXISTS {}").format(Identifier(SETTLED_INDEX)))


def ensure_shadow_hours(c: Any, schema: str) -> None:
    """Count and make the triggers, unless all of them are there (`c`: as `ensure_counters`'s;
    `view_shadow` is locked against writers while it is counted)."""
    if has_shadow_hours(c, schema):
        return
    c.execute(SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(Identifier(SHADOW)))
    if has_shadow_hours(c, schema):
        return
    drop_triggers(c, SHADOW_COUNTERS)
    for statement in RECOUNT:
        c.execute(statement)
    create_triggers(c, schema, SHADOW_COUNTERS, HOURS)
    c.execute(CREATE_SETTLED_INDEX)
