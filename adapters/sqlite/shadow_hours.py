"""Shadow statistics without reading every observation, on SQLite: counters by hour.

`view_shadow_hours` holds, per checkpoint and hour of routing
(`routed_at / HOUR`), the settled observations' counts: how many, by outcome
and by signal. Triggers on `view_shadow` keep it in step with every insert,
settlement and delete, in the same transaction as the rows, whoever writes
them. The counts are derived: a view without the triggers (made by an older
version, or a rebuild, which drops them while it fills the tables) is counted
again when the store is opened, or when the rebuild ends.

`shadow_counts` answers exactly what the plain count over the rows answers
(`SHADOW_COUNTS`, `domain.shadow_stats.count_observations`): the rows routed
in the window's first, partial hour are counted one by one; every later hour
up to the window's end comes from the counters, less the observations the
counters hold that the window's end must not see: those routed after the end
(in its hour), and those settled after it. The observations not settled at
the window's end are read one by one (through `view_shadow_settled`): they
are the overdue and the pending ones. For a window ending now, the work is
the first hour's rows, one counter a hour, and the observations in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate, pairwise
from typing import Any

from trainledger.adapters.sqlite.deployment_schema import SHADOW
from trainledger.adapters.sqlite.view_counts import Counter, sqlite_trigger
from trainledger.domain.shadow_stats import ShadowCounts

HOURS = f"{SHADOW}_hours"
HOUR = 3_600_000_000
"""The counters' bucket, in microseconds (the unit of `routed_at`)."""

FLAGS = (
    "settled",
    "accepted",
    "rejected",
    "escalated",
    "timed_out",
    "threw_exception",
    "invalid_output",
    "profile_rejected",
)
"""The counters of an hour: the first eight fields of `ShadowCounts`, of settled rows."""


def _contributions(row: str) -> tuple[str, ...]:
    """What a settled row adds to each counter (`row`: NEW, OLD or a table's name).

    Portable SQL (no booleans as numbers): PostgreSQL's triggers run the same
    statements (adapters/postgres/shadow_hours.py).
    """
    return (
        "1",
        *(_one(f"{row}.outcome", f"'{o}'") for o in ("accepted", "rejected", "escalated")),
        *(_one(f"{row}.{flag}", "1") for flag in FLAGS[4:]),
    )


def _one(column: str, value: str) -> str:
    return f"CASE WHEN {column} = {value} THEN 1 ELSE 0 END"


CREATE_HOURS = (
    f"CREATE TABLE IF NOT EXISTS {HOURS} (checkpoint_id TEXT NOT NULL, hour BIGINT NOT NULL, "
    + ", ".join(f"{flag} INTEGER NOT NULL" for flag in FLAGS)
    + ", PRIMARY KEY (checkpoint_id, hour)) WITHOUT ROWID"
)
CREATE_SETTLED_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {SHADOW}_settled ON {SHADOW} (checkpoint_id, settled_at, "
    "routed_at)"
)
"""The observations not settled at a moment: those with no settlement, then those after it."""


def _add(row: str, sign: str) -> str:
    values = ", ".join(f"{sign}{value}" for value in _contributions(row))
    updates = ", ".join(f"{flag} = {HOURS}.{flag} + excluded.{flag}" for flag in FLAGS)
    return (
        f"INSERT INTO {HOURS} (checkpoint_id, hour, {', '.join(FLAGS)}) "
        f"VALUES ({row}.checkpoint_id, {row}.routed_at / {HOUR}, {values}) "
        f"ON CONFLICT (checkpoint_id, hour) DO UPDATE SET {updates}; "
    )


SHADOW_COUNTERS: dict[str, Counter] = {
    f"{HOURS}_insert": Counter("INSERT", SHADOW, "NEW.settled_at IS NOT NULL", _add("NEW", "")),
    f"{HOURS}_update_old": Counter(
        "UPDATE", SHADOW, "OLD.settled_at IS NOT NULL", _add("OLD", "-")
    ),
    f"{HOURS}_update_new": Counter("UPDATE", SHADOW, "NEW.settled_at IS NOT NULL", _add("NEW", "")),
    f"{HOURS}_delete": Counter("DELETE", SHADOW, "OLD.settled_at IS NOT NULL", _add("OLD", "-")),
}
"""The row triggers keeping the hours' counters (portable, as `view_counts.COUNTERS`)."""

TRIGGERS: dict[str, str] = {name: sqlite_trigger(c) for name, c in SHADOW_COUNTERS.items()}

RECOUNT = (
    f"DELETE FROM {HOURS}",
    f"INSERT INTO {HOURS} (checkpoint_id, hour, {', '.join(FLAGS)}) "
    f"SELECT checkpoint_id, routed_at / {HOUR}, "
    + ", ".join(f"SUM({value})" for value in _contributions(SHADOW))
    + f" FROM {SHADOW} WHERE settled_at IS NOT NULL GROUP BY checkpoint_id, routed_at / {HOUR}",
)


def _present(c: Any) -> int:
    marks = ", ".join("?" for _ in TRIGGERS)
    c.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
        tuple(TRIGGERS),
    )
    return int(c.fetchone()[0])


def ensure_shadow_hours(c: Any) -> None:
    """Count and make the triggers, unless all of them are there (`c`: a cursor in a write
    transaction)."""
    c.execute(CREATE_HOURS)
    if _present(c) != len(TRIGGERS):
        drop_shadow_hours(c)
        for statement in RECOUNT:
            c.execute(statement)
        for name, body in TRIGGERS.items():
            c.execute(f"CREATE TRIGGER {name} {body}")
    c.execute(CREATE_SETTLED_INDEX)


def drop_shadow_hours(c: Any) -> None:
    """No counting while a rebuild fills the tables (it counts once at the end)."""
    for name in TRIGGERS:
        c.execute(f"DROP TRIGGER IF EXISTS {name}")
    c.execute(f"DROP INDEX IF EXISTS {SHADOW}_settled")


def has_shadow_hours(c: Any) -> bool:
    """Whether the view's triggers keep the hours' counters."""
    c.execute(f"SELECT COUNT(*) FROM sqlite_master WHERE name IN ('{HOURS}', '{SHADOW}_settled')")
    return int(c.fetchone()[0]) == 2 and _present(c) == len(TRIGGERS)


_OVERDUE = "CASE WHEN routed_at <= ? THEN 1 ELSE 0 END"
"""Whether an observation not settled at the window's end is overdue then (? = the cutoff)."""
HINT = f"INDEXED BY {SHADOW}_settled "
"""SQLite's planner is told which index to walk (PostgreSQL has no such clause)."""
_EVER = ", ".join(f"COALESCE(SUM({value}), 0)" for value in _contributions(SHADOW))

SUM_HOURS = (
    "SELECT "
    + ", ".join(f"COALESCE(SUM({flag}), 0)" for flag in FLAGS)
    + f" FROM {HOURS} WHERE checkpoint_id = ? AND hour >= ? AND hour <= ?"
)
ROUTED_AFTER = (
    f"SELECT {_EVER} FROM {SHADOW} "
    "WHERE checkpoint_id = ? AND routed_at > ? AND routed_at < ? AND settled_at IS NOT NULL"
)
"""What the counters of the window's last hour hold of the rows routed after its end."""
SETTLED_AFTER = (
    f"SELECT {_EVER}, COALESCE(SUM({_OVERDUE}), 0), COUNT(*) FROM {SHADOW} "
    f"{HINT}"
    "WHERE checkpoint_id = ? AND settled_at > ? AND routed_at >= ? AND routed_at <= ?"
)
"""The rows the counters hold as settled that were not at the window's end; how many of
them are overdue, and in all."""
UNSETTLED = (
    f"SELECT COALESCE(SUM({_OVERDUE}), 0), COUNT(*) FROM {SHADOW} "
    f"{HINT}"
    "WHERE checkpoint_id = ? AND settled_at IS NULL AND routed_at >= ? AND routed_at <= ?"
)

Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
PlainCount = Callable[[int, int], tuple[str, list[Any]]]
"""The plain count of the rows routed in [first, last] as at the window's end: its SQL, its
parameters (one row: the fields of `ShadowCounts`)."""


def hours_shadow_counts(
    rows: Rows,
    plain_count: PlainCount,
    checkpoint_id: str,
    window_start: int,
    window_end: int,
    cutoff: int,
    *,
    postgres: bool = False,
) -> ShadowCounts:
    """The checkpoint's `ShadowCounts` in [window_start, window_end] as at window_end.

    SQLite runs five small statements, two with index hints (one that joins
    them is slower: SQLite materialises each part). PostgreSQL runs them as
    one, in one round trip, and finds the indexes itself.
    """
    first_full, last = window_start // HOUR + 1, window_end // HOUR
    if window_start < 0 or first_full > last:
        (row,) = rows(*plain_count(window_start, window_end))
        return ShadowCounts._make(int(value) for value in row)
    start, end = first_full * HOUR, window_end
    parts: list[tuple[str, Sequence[Any]]] = [
        plain_count(window_start, first_full * HOUR - 1),
        (SUM_HOURS, (checkpoint_id, first_full, last)),
        (ROUTED_AFTER, (checkpoint_id, end, (last + 1) * HOUR)),
        (SETTLED_AFTER, (cutoff, checkpoint_id, end, start, end)),
        (UNSETTLED, (cutoff, checkpoint_id, start, end)),
    ]
    if postgres:
        joined = ", ".join(
            f"({sql.replace(HINT, '')}) AS part{n}" for n, (sql, _) in enumerate(parts)
        )
        (row,) = rows(f"SELECT * FROM {joined}", [p for _, params in parts for p in params])
        widths = (len(ShadowCounts._fields), len(FLAGS), len(FLAGS), len(FLAGS) + 2, 2)
        offsets = pairwise(accumulate(widths, initial=0))
        edge, held, after, late, unsettled = (row[a:b] for a, b in offsets)
    else:
        edge, held, after, late, unsettled = (rows(sql, params)[0] for sql, params in parts)
    flags = len(FLAGS)
    settled = [int(h) - int(a) - int(s) for h, a, s in zip(held, after, late[:flags], strict=True)]
    late_overdue, late_all = int(late[flags]), int(late[flags + 1])
    overdue = int(unsettled[0]) + late_overdue
    counted = [*settled, overdue, int(unsettled[1]) + late_all - overdue]
    return ShadowCounts._make(int(a) + b for a, b in zip(edge, counted, strict=True))
