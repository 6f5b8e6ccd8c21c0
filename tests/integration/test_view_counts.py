"""`stats` reads counters its view's triggers keep (adapters/sqlite/view_counts.py, and
adapters/postgres/view_counts.py): the same answer as counting the tables, through
catch-up, a rebuild, an interrupted rebuild, a view made without the counters, and
writes by another process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg

from tests.support import deployable_lifecycle, reader_request
from trainledger.adapters.sqlite.view_counts import COUNTERS, TRIGGERS
from trainledger.adapters.store import open_ledger
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger

COUNTED = (
    "totalRuns",
    "completedRuns",
    "failedRuns",
    "pendingRuns",
    "runningRuns",
    "totalCheckpoints",
    "deployableCheckpoints",
    "totalEvals",
    "passingEvals",
    "failingEvals",
)


def rows(url: str, sql: str) -> list[Sequence[Any]]:
    """Rows of one statement, read from the store behind the ledger's back."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            found = list(db.execute(sql))
        db.close()
        return found
    with psycopg.connect(url, autocommit=True) as pg:
        return list(pg.execute(sql).fetchall())


def edit(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for statement in statements:
                db.execute(statement)
        db.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement)


def scanned(url: str) -> dict[str, int]:
    """The same figures counted from the view's tables."""
    runs = {s: int(n) for s, n in rows(url, "SELECT status, COUNT(*) FROM view_runs GROUP BY 1")}
    ((total, deployable),) = rows(
        url, "SELECT COUNT(*), COALESCE(SUM(deployable), 0) FROM view_checkpoints"
    )
    evals = {v: int(n) for v, n in rows(url, "SELECT verdict, COUNT(*) FROM view_evals GROUP BY 1")}
    return {
        "totalRuns": sum(runs.values()),
        "completedRuns": runs.get("completed", 0),
        "failedRuns": runs.get("failed", 0),
        "pendingRuns": runs.get("pending", 0),
        "runningRuns": runs.get("running", 0),
        "totalCheckpoints": int(total),
        "deployableCheckpoints": int(deployable),
        "totalEvals": sum(evals.values()),
        "passingEvals": evals.get("pass", 0) + evals.get("compare_only", 0),
        "failingEvals": evals.get("fail", 0),
    }


def counted(ledger: TrainingLedger) -> dict[str, int]:
    stats = ledger.stats()
    return {name: stats[name] for name in COUNTED}


def history(ledger: TrainingLedger, tmp_path: Path, n: int) -> None:
    for i in range(n):
        _, checkpoint_id = deployable_lifecycle(
            ledger, tmp_path / f"life-{n}-{i}", eval_id=f"eval-{n}-{i}"
        )
        if i % 3 == 0:
            ledger.revoke_deployability(checkpoint_id, "bad weights", actor="a")
    pending = ledger.create_experiment(
        reader_request(tmp_path / f"p-{n}"),
        dataset_fingerprint="0123456789abcdef",
        sample_count=10,
        actor="a",
    )["trainRunId"]
    failed = ledger.create_experiment(
        reader_request(tmp_path / f"f-{n}"),
        dataset_fingerprint="0123456789abcdef",
        sample_count=10,
        actor="a",
    )["trainRunId"]
    ledger.start_run(failed, actor="a")
    ledger.fail_run(failed, "out of memory", actor="a")
    del pending


def triggers(url: str) -> set[str]:
    if url.startswith("sqlite"):
        names = rows(url, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
    else:
        names = rows(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    return {str(row[0]) for row in names} & set(TRIGGERS)


def drop_triggers(url: str) -> list[str]:
    """The statements that take the view's counters away (as a view of an older version)."""
    if url.startswith("sqlite"):
        return [f"DROP TRIGGER {name}" for name in TRIGGERS]
    return [f"DROP TRIGGER {name} ON {c.table}" for name, c in COUNTERS.items()]


def test_counters_answer_as_the_tables_do(store_url: str, tmp_path: Path) -> None:
    url = store_url
    ledger = open_ledger(url)
    try:
        history(ledger, tmp_path, 4)
        first = counted(ledger)
        assert first == scanned(url)
        assert first["totalRuns"] == 6
        assert first["failedRuns"] == 1
        assert first["pendingRuns"] == 1
        assert first["deployableCheckpoints"] == 2
        assert triggers(url) == set(TRIGGERS)
        # As of now, the tables are counted: the same answer.
        now = ledger.stats(as_of=datetime.now(UTC))
        assert {name: now[name] for name in COUNTED} == first

        ledger.rebuild_projections()
        assert counted(ledger) == first
        assert triggers(url) == set(TRIGGERS)
    finally:
        ledger.close()

    # A view made without counters (an older version's): counted when opened.
    edit(url, *drop_triggers(url), "DROP TABLE view_counts")
    ledger = open_ledger(url)
    try:
        assert triggers(url) == set(TRIGGERS)
        assert counted(ledger) == first
        # Another process appends; this one's stats catch up with the triggers' counts.
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, '.');"
            "from tests.support import deployable_lifecycle;"
            "from trainledger.adapters.store import open_ledger;"
            f"l = open_ledger({url!r});"
            f"deployable_lifecycle(l, Path('{tmp_path / 'other'}'), eval_id='eval-other');"
            "l.close()"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
        after = counted(ledger)
        assert after == scanned(url)
        assert after["totalRuns"] == first["totalRuns"] + 1
        assert after["deployableCheckpoints"] == first["deployableCheckpoints"] + 1
        # Rows changed behind the view's back are counted by the triggers too.
        edit(url, "UPDATE view_checkpoints SET deployable = 0")
        assert counted(ledger)["deployableCheckpoints"] == 0
        # And `stats` reads the counters, not the tables.
        edit(url, "UPDATE view_counts SET n = n + 100 WHERE name = 'checkpoints'")
        assert counted(ledger)["totalCheckpoints"] == after["totalCheckpoints"] + 100
    finally:
        ledger.close()


def test_an_interrupted_rebuild_is_counted_when_the_store_opens(
    store_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(store_url)
    try:
        history(ledger, tmp_path, 3)
        first = counted(ledger)
        # The rebuild empties the views and drops the triggers, then stops.
        model = cast(ProjectionReadModel, ledger.read_model)
        model.view.reset(model.application_name)
    finally:
        ledger.close()
    assert not triggers(store_url)
    ledger = open_ledger(store_url)
    try:
        assert triggers(store_url) == set(TRIGGERS)
        assert counted(ledger) == first == scanned(store_url)
    finally:
        ledger.close()
