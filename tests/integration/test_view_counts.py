"""`stats` on SQLite reads counters its view's triggers keep (adapters/sqlite/view_counts.py):
the same answer as counting the tables, through catch-up, a rebuild, a view made
without the counters, and writes by another process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support import deployable_lifecycle, reader_request
from trainledger.adapters.sqlite.view_counts import TRIGGERS
from trainledger.adapters.store import open_ledger
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


def scanned(path: Path) -> dict[str, int]:
    """The same figures counted from the view's tables."""
    with sqlite3.connect(path) as db:
        runs = dict(db.execute("SELECT status, COUNT(*) FROM view_runs GROUP BY status"))
        total, deployable = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(deployable), 0) FROM view_checkpoints"
        ).fetchone()
        evals = dict(db.execute("SELECT verdict, COUNT(*) FROM view_evals GROUP BY verdict"))
    db.close()
    return {
        "totalRuns": sum(runs.values()),
        "completedRuns": runs.get("completed", 0),
        "failedRuns": runs.get("failed", 0),
        "pendingRuns": runs.get("pending", 0),
        "runningRuns": runs.get("running", 0),
        "totalCheckpoints": total,
        "deployableCheckpoints": deployable,
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


def triggers(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        names = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
    db.close()
    return names & set(TRIGGERS)


def test_counters_answer_as_the_tables_do(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        history(ledger, tmp_path, 4)
        first = counted(ledger)
        assert first == scanned(path)
        assert first["totalRuns"] == 6
        assert first["failedRuns"] == 1
        assert first["pendingRuns"] == 1
        assert first["deployableCheckpoints"] == 2
        assert triggers(path) == set(TRIGGERS)

        ledger.rebuild_projections()
        assert counted(ledger) == first
        assert triggers(path) == set(TRIGGERS)
    finally:
        ledger.close()

    # A view made without counters (an older version's): counted when opened.
    with sqlite3.connect(path) as db:
        for name in TRIGGERS:
            db.execute(f"DROP TRIGGER {name}")
        db.execute("DROP TABLE view_counts")
    db.close()
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        assert counted(ledger) == first
        # Another process appends; this one's stats catch up with the triggers' counts.
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, '.');"
            "from tests.support import deployable_lifecycle;"
            "from trainledger.adapters.store import open_ledger;"
            f"l = open_ledger('sqlite:///{path}');"
            f"deployable_lifecycle(l, Path('{tmp_path / 'other'}'), eval_id='eval-other');"
            "l.close()"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
        after = counted(ledger)
        assert after == scanned(path)
        assert after["totalRuns"] == first["totalRuns"] + 1
        assert after["deployableCheckpoints"] == first["deployableCheckpoints"] + 1
    finally:
        ledger.close()
