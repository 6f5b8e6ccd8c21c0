"""`stats` without a scan, on SQLite: counters the view's own triggers keep.

`view_counts` holds one row per counted thing (runs by status, checkpoints,
deployable checkpoints, evals by verdict). Triggers on the view's tables keep
it in step with every insert, update and delete, in the same transaction,
whoever writes the rows. A rebuild drops the triggers while it fills the
tables and counts once at the end; a view found without its triggers (made
by an older version, or a rebuild that was interrupted) is counted when the
store is opened. `stats` at a moment in the past still reads the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from trainledger.adapters.sqlite.view_schema import CHECKPOINTS, EVALS, RUNS

COUNTS = "view_counts"

CREATE_COUNTS = (
    f"CREATE TABLE IF NOT EXISTS {COUNTS} (name TEXT PRIMARY KEY, n BIGINT NOT NULL) WITHOUT ROWID"
)


def _add(name: str, amount: str = "1") -> str:
    return (
        f"INSERT INTO {COUNTS} (name, n) VALUES ({name}, {amount}) "
        f"ON CONFLICT (name) DO UPDATE SET n = {COUNTS}.n + excluded.n; "
    )


RUN_OLD, RUN_NEW = "'run:' || OLD.status", "'run:' || NEW.status"
EVAL_OLD, EVAL_NEW = "'eval:' || OLD.verdict", "'eval:' || NEW.verdict"
TOTAL, DEPLOYABLE = "'checkpoints'", "'deployable'"


class Counter(NamedTuple):
    """One row trigger keeping `view_counts`: after `event` on `table`, when `when`, `body`.

    The definitions are portable SQL (`IS DISTINCT FROM`, `||`, the upsert):
    SQLite's `CREATE TRIGGER` runs `body` as it is, PostgreSQL's trigger
    function runs the same statements (adapters/postgres/view_counts.py).
    """

    event: str
    table: str
    when: str | None
    body: str


COUNTERS: dict[str, Counter] = {
    f"{COUNTS}_run_insert": Counter("INSERT", RUNS, None, _add(RUN_NEW)),
    f"{COUNTS}_run_update": Counter(
        "UPDATE",
        RUNS,
        "OLD.status IS DISTINCT FROM NEW.status",
        _add(RUN_OLD, "-1") + _add(RUN_NEW),
    ),
    f"{COUNTS}_run_delete": Counter("DELETE", RUNS, None, _add(RUN_OLD, "-1")),
    f"{COUNTS}_checkpoint_insert": Counter(
        "INSERT", CHECKPOINTS, None, _add(TOTAL) + _add(DEPLOYABLE, "NEW.deployable")
    ),
    f"{COUNTS}_checkpoint_update": Counter(
        "UPDATE",
        CHECKPOINTS,
        "OLD.deployable IS DISTINCT FROM NEW.deployable",
        _add(DEPLOYABLE, "NEW.deployable - OLD.deployable"),
    ),
    f"{COUNTS}_checkpoint_delete": Counter(
        "DELETE", CHECKPOINTS, None, _add(TOTAL, "-1") + _add(DEPLOYABLE, "-OLD.deployable")
    ),
    f"{COUNTS}_eval_insert": Counter("INSERT", EVALS, None, _add(EVAL_NEW)),
    f"{COUNTS}_eval_update": Counter(
        "UPDATE",
        EVALS,
        "OLD.verdict IS DISTINCT FROM NEW.verdict",
        _add(EVAL_OLD, "-1") + _add(EVAL_NEW),
    ),
    f"{COUNTS}_eval_delete": Counter("DELETE", EVALS, None, _add(EVAL_OLD, "-1")),
}


def sqlite_trigger(counter: Counter) -> str:
    """SQLite's `CREATE TRIGGER` statement for `counter`, after the trigger's name."""
    when = "" if counter.when is None else f" WHEN {counter.when}"
    return f"AFTER {counter.event} ON {counter.table}{when} BEGIN {counter.body} END"


TRIGGERS: dict[str, str] = {name: sqlite_trigger(c) for name, c in COUNTERS.items()}
"""SQLite's triggers: name -> the `CREATE TRIGGER` statement after the name."""

RECOUNT = (
    f"DELETE FROM {COUNTS}",
    f"INSERT INTO {COUNTS} (name, n) SELECT 'run:' || status, COUNT(*) FROM {RUNS} GROUP BY status",
    f"INSERT INTO {COUNTS} (name, n) SELECT 'checkpoints', COUNT(*) FROM {CHECKPOINTS}",
    f"INSERT INTO {COUNTS} (name, n) "
    f"SELECT 'deployable', COALESCE(SUM(deployable), 0) FROM {CHECKPOINTS}",
    f"INSERT INTO {COUNTS} (name, n) SELECT 'eval:' || verdict, COUNT(*) FROM {EVALS} "
    "GROUP BY verdict",
)


def _present(c: Any) -> int:
    marks = ", ".join("?" for _ in TRIGGERS)
    c.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
        tuple(TRIGGERS),
    )
    return int(c.fetchone()[0])


def ensure_counters(c: Any) -> None:
    """Count and make the triggers, unless all of them are there (`c`: a cursor in a write
    transaction)."""
    c.execute(CREATE_COUNTS)
    if _present(c) == len(TRIGGERS):
        return
    drop_counters(c)
    for statement in RECOUNT:
        c.execute(statement)
    for name, body in TRIGGERS.items():
        c.execute(f"CREATE TRIGGER {name} {body}")


def drop_counters(c: Any) -> None:
    """No counting while a rebuild fills the tables (it counts once at the end)."""
    for name in TRIGGERS:
        c.execute(f"DROP TRIGGER IF EXISTS {name}")


def has_counters(c: Any) -> bool:
    """Whether the view's triggers keep the counts (a view of an older version has none)."""
    c.execute(f"SELECT COUNT(*) FROM sqlite_master WHERE name = '{COUNTS}'")
    return int(c.fetchone()[0]) == 1 and _present(c) == len(TRIGGERS)


def read_counts(
    rows: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
) -> tuple[dict[str, int], int, int, dict[str, int]]:
    """(runs by status, checkpoints, deployable checkpoints, evals by verdict)."""
    counted = {str(name): int(n) for name, n in rows(f"SELECT name, n FROM {COUNTS}", ())}
    by_status = {k[4:]: n for k, n in counted.items() if k.startswith("run:") and n}
    by_verdict = {k[5:]: n for k, n in counted.items() if k.startswith("eval:") and n}
    return by_status, counted.get("checkpoints", 0), counted.get("deployable", 0), by_verdict
