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
from typing import Any

from trainledger.adapters.sqlite.deployment_schema import SHADOW
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
    """What a settled row adds to each counter (`row`: NEW, OLD or a table's name)."""
    return (
        "1",
        f"({row}.outcome IS 'accepted')",
        f"({row}.outcome IS 'rejected')",
        f"({row}.outcome IS 'escalated')",
        f"({row}.timed_out IS 1)",
        f"({row}.threw_exception IS 1)",
        f"({row}.invalid_output IS 1)",
        f"({row}.profile_rejected IS 1)",
    )


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
    updates = ", ".join(f"{flag} = {flag} + excluded.{flag}" for flag in FLAGS)
    return (
        f"INSERT INTO {HOURS} (checkpoint_id, hour, {', '.join(FLAGS)}) "
        f"VALUES ({row}.checkpoint_id, {row}.routed_at / {HOUR}, {values}) "
        f"ON CONFLICT (checkpoint_id, hour) DO UPDATE SET {updates}; "
    )


TRIGGERS: dict[str, str] = {
    f"{HOURS}_insert": f"AFTER INSERT ON {SHADOW} WHEN NEW.settled_at IS NOT NULL BEGIN "
    + _add("NEW", "")
    + " END",
    f"{HOURS}_update_old": f"AFTER UPDATE ON {SHADOW} WHEN OLD.settled_at IS NOT NULL BEGIN "
    + _add("OLD", "-")
    + " END",
    f"{HOURS}_update_new": f"AFTER UPDATE ON {SHADOW} WHEN NEW.settled_at IS NOT NULL BEGIN "
    + _add("NEW", "")
    + " END",
    f"{HOURS}_delete": f"AFTER DELETE ON {SHADOW} WHEN OLD.settled_at IS NOT NULL BEGIN "
    + _add("OLD", "-")
    + " END",
}

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
    f"SELECT {_EVER}, COALESCE(SUM(routed_at <= ?), 0), COUNT(*) FROM {SHADOW} "
    f"INDEXED BY {SHADOW}_settled "
    "WHERE checkpoint_id = ? AND settled_at > ? AND routed_at >= ? AND routed_at <= ?"
)
"""The rows the counters hold as settled that were not at the window's end; how many of
them are overdue, and in all."""
UNSETTLED = (
    f"SELECT COALESCE(SUM(routed_at <= ?), 0), COUNT(*) FROM {SHADOW} "
    f"INDEXED BY {SHADOW}_settled "
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
) -> ShadowCounts:
    """The checkpoint's `ShadowCounts` in [window_start, window_end] as at window_end."""
    first_full, last = window_start // HOUR + 1, window_end // HOUR
    if window_start < 0 or first_full > last:
        (row,) = rows(*plain_count(window_start, window_end))
        return ShadowCounts._make(int(value) for value in row)
    (edge,) = rows(*plain_count(window_start, first_full * HOUR - 1))
    start, end = first_full * HOUR, window_end
    # Five small statements: one that joins them is slower (SQLite materialises each).
    (held,) = rows(SUM_HOURS, (checkpoint_id, first_full, last))
    (after,) = rows(ROUTED_AFTER, (checkpoint_id, end, (last + 1) * HOUR))
    (late,) = rows(SETTLED_AFTER, (cutoff, checkpoint_id, end, start, end))
    (unsettled,) = rows(UNSETTLED, (cutoff, checkpoint_id, start, end))
    flags = len(FLAGS)
    settled = [int(h) - int(a) - int(s) for h, a, s in zip(held, after, late[:flags], strict=True)]
    late_overdue, late_all = int(late[flags]), int(late[flags + 1])
    overdue = int(unsettled[0]) + late_overdue
    counted = [*settled, overdue, int(unsettled[1]) + late_all - overdue]
    return ShadowCounts._make(int(a) + b for a, b in zip(edge, counted, strict=True))
