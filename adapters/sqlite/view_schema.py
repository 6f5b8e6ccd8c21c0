"""The ledger view's tables, indexes and write statements, in portable SQL.

The SQLite view (`adapters.sqlite.view`) runs them as they are; the
PostgreSQL view (`adapters.postgres.view`) with `%s` for `?` and without
SQLite's table options: `STORED` generated columns, `ON CONFLICT`,
`RETURNING` and `COALESCE` are common to both. `{tracking}` in a statement
is the library's tracking table, whose name each backend gives. Some are
SQLite's alone: the schema version, the tables with their ids keyed by
unique indexes (`SQLITE_TABLES`, `CREATE_KEYS`) and a rebuild's updates by
rowid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainledger.adapters.sqlite.deployment_schema import (
    CREATE_DEPLOYMENT_INDEXES,
    CREATE_DEPLOYMENT_TABLES,
    DEPLOYMENT_DUMP_TABLES,
    DEPLOYMENT_TABLES,
    deployment_inserts,
    settlement_updates,
)
from trainledger.projections.facts import (
    CheckpointRecord,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    LinkFact,
    RunRecord,
)

RUNS = "view_runs"
LINKS = "view_checkpoint_links"
CHECKPOINTS = "view_checkpoints"
EVALS = "view_evals"
DEPLOYABILITY = "view_deployability"
TABLES = (RUNS, LINKS, CHECKPOINTS, EVALS, DEPLOYABILITY, *DEPLOYMENT_TABLES)
SCHEMA = "view_schema"
SCHEMA_VERSION = 6
"""Bump when the tables change: views of another version are rebuilt.

2: view_runs.trainer_result; 3: ids keyed by unique indexes (`KEYS`); 4: no
view_runs.spec (a run's spec is read from its registration in the log);
5: promotions, deployment slots and shadow observations (SPEC §9); 6: links
and deployability changes keyed by unique indexes too (`VERSION_KEYS`), and
the indexes of two filters at once (verdict and benchmark or family, status
and family)."""

CREATE_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {RUNS} ("
    "run_id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, family TEXT NOT NULL, "
    "dataset_fingerprint TEXT NOT NULL, sample_count INTEGER, "
    "created_at BIGINT NOT NULL, position BIGINT NOT NULL, "
    "started_at BIGINT, host TEXT, pid INTEGER, trainer_log_path TEXT, "
    "completed_at BIGINT, result_digest TEXT, failed_at BIGINT, failure_reason TEXT, "
    "trainer_result TEXT, "
    "status TEXT GENERATED ALWAYS AS (CASE "
    "WHEN failed_at IS NOT NULL THEN 'failed' "
    "WHEN completed_at IS NOT NULL THEN 'completed' "
    "WHEN started_at IS NOT NULL THEN 'running' "
    "ELSE 'pending' END) STORED)",
    f"CREATE TABLE IF NOT EXISTS {LINKS} ("
    "run_id TEXT NOT NULL, run_version INTEGER NOT NULL, checkpoint_id TEXT NOT NULL, "
    "linked_at BIGINT NOT NULL, PRIMARY KEY (run_id, run_version)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} ("
    "checkpoint_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, family TEXT NOT NULL, "
    "artifact_path TEXT NOT NULL, artifact_digest TEXT, checkpoint_ref TEXT, "
    "metrics TEXT NOT NULL, created_at BIGINT NOT NULL, position BIGINT NOT NULL, "
    "deployable INTEGER NOT NULL DEFAULT 0, "
    "deployability_version INTEGER NOT NULL DEFAULT 0)",
    f"CREATE TABLE IF NOT EXISTS {EVALS} ("
    "eval_id TEXT PRIMARY KEY, checkpoint_id TEXT NOT NULL, "
    "checkpoint_version INTEGER NOT NULL, benchmark_id TEXT NOT NULL, family TEXT NOT NULL, "
    "verdict TEXT NOT NULL, summary TEXT NOT NULL, attached_at BIGINT NOT NULL, "
    "actor TEXT NOT NULL, position BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {DEPLOYABILITY} ("
    "checkpoint_id TEXT NOT NULL, checkpoint_version INTEGER NOT NULL, "
    "deployable INTEGER NOT NULL, changed_at BIGINT NOT NULL, actor TEXT NOT NULL, "
    "eval_id TEXT, reason TEXT, PRIMARY KEY (checkpoint_id, checkpoint_version)) WITHOUT ROWID",
    *CREATE_DEPLOYMENT_TABLES,
)

KEYS = ((RUNS, "run_id"), (CHECKPOINTS, "checkpoint_id"), (EVALS, "eval_id"))
"""The tables keyed by one id column: `TEXT PRIMARY KEY` in `CREATE_TABLES` (PostgreSQL's)."""

VERSION_KEYS = (
    (LINKS, "run_id, run_version"),
    (DEPLOYABILITY, "checkpoint_id, checkpoint_version"),
)
"""The tables keyed by an aggregate's id and version: `PRIMARY KEY (...) WITHOUT ROWID` in
`CREATE_TABLES`."""

# On SQLite those keys are unique indexes of their own instead, which a rebuild
# drops with the other indexes and makes once at the end (`DeferredKeys`):
# keeping an index of random ids up to date row by row costs more than all
# the rest of writing the row. A table clustered by its random key is worse:
# each page of a rebuild rewrites most of its pages (its whole size again in
# the write-ahead log, per page: quadratic in the history).


def _keyed_by_index(statement: str) -> str:
    for table, key in KEYS:
        statement = statement.replace(
            f"{table} ({key} TEXT PRIMARY KEY,", f"{table} ({key} TEXT NOT NULL,"
        )
    for table, key in VERSION_KEYS:
        if statement.startswith(f"CREATE TABLE IF NOT EXISTS {table} ("):
            statement = statement.replace(f", PRIMARY KEY ({key})) WITHOUT ROWID", ")")
    return statement


SQLITE_TABLES = tuple(map(_keyed_by_index, CREATE_TABLES))
KEY_NAMES = tuple(f"{table}_key" for table, _ in (*KEYS, *VERSION_KEYS))
CREATE_KEYS = tuple(
    f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table} ({key})"
    for name, (table, key) in zip(KEY_NAMES, (*KEYS, *VERSION_KEYS), strict=True)
)

# Each list filter walks one of these newest first and stops at its limit.
CREATE_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {RUNS}_position ON {RUNS} (position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_status ON {RUNS} (status, position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_family ON {RUNS} (family, position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_dataset ON {RUNS} (dataset_fingerprint, position)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_status_family ON {RUNS} (status, family, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_position ON {CHECKPOINTS} (position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_run ON {CHECKPOINTS} (run_id, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_family ON {CHECKPOINTS} (family, position)",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_deployable ON {CHECKPOINTS} (deployable, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_position ON {EVALS} (position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_checkpoint ON {EVALS} (checkpoint_id, checkpoint_version)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_benchmark ON {EVALS} (benchmark_id, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_verdict ON {EVALS} (verdict, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_family ON {EVALS} (family, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_verdict_benchmark ON {EVALS} "
    "(verdict, benchmark_id, position)",
    f"CREATE INDEX IF NOT EXISTS {EVALS}_verdict_family ON {EVALS} (verdict, family, position)",
    *CREATE_DEPLOYMENT_INDEXES,
)


INDEX_NAMES = tuple(statement.split()[5] for statement in CREATE_INDEXES)


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


INSERT_RUN = _insert(RUNS, RunRecord._fields)
INSERT_LINK = _insert(LINKS, LinkFact._fields)
INSERT_CHECKPOINT = _insert(CHECKPOINTS, CheckpointRecord._fields)
INSERT_EVAL = _insert(EVALS, EvalFact._fields)
INSERT_DEPLOYABILITY = _insert(DEPLOYABILITY, DeployabilityFact._fields)
UPDATE_START = (
    f"UPDATE {RUNS} SET started_at = ?, host = ?, pid = ?, trainer_log_path = ? WHERE run_id = ?"
)
UPDATE_COMPLETION = (
    f"UPDATE {RUNS} SET completed_at = ?, result_digest = ?, trainer_result = ? WHERE run_id = ?"
)
UPDATE_FAILURE = (
    f"UPDATE {RUNS} SET failed_at = ?, failure_reason = ?, result_digest = ?, "
    "trainer_result = ? WHERE run_id = ?"
)
# Deployability only moves forward in version, whatever order a page applies it in.
UPDATE_DEPLOYABLE = (
    f"UPDATE {CHECKPOINTS} SET deployable = ?, deployability_version = ? "
    "WHERE checkpoint_id = ? AND deployability_version < ?"
)
# During a rebuild, without the key indexes, rows of earlier pages are updated by rowid.
UPDATE_START_ROW = UPDATE_START.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_COMPLETION_ROW = UPDATE_COMPLETION.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_FAILURE_ROW = UPDATE_FAILURE.replace("WHERE run_id = ?", "WHERE rowid = ?")
UPDATE_DEPLOYABLE_ROW = UPDATE_DEPLOYABLE.replace("WHERE checkpoint_id = ?", "WHERE rowid = ?")
START_TRACKING = (
    "INSERT INTO {tracking} (application_name, notification_id) VALUES (?, 0) "
    "ON CONFLICT (application_name) DO NOTHING"
)
MOVE_TRACKING = (
    "UPDATE {tracking} SET notification_id = ? "
    "WHERE application_name = ? AND notification_id = ? RETURNING notification_id"
)
RESET_TRACKING = (
    "INSERT INTO {tracking} (application_name, notification_id) VALUES (?, 0) "
    "ON CONFLICT (application_name) DO UPDATE SET notification_id = 0"
)
SELECT_POSITION = "SELECT notification_id FROM {tracking} WHERE application_name = ?"

RUN_COLUMNS = ", ".join(RunRecord._fields)
CHECKPOINT_COLUMNS = ", ".join(CheckpointRecord._fields)
EVAL_COLUMNS = ", ".join(EvalFact._fields)
LINK_COLUMNS = ", ".join(LinkFact._fields)
DEPLOYABILITY_COLUMNS = ", ".join(DeployabilityFact._fields)

DUMP_TABLES: dict[str, tuple[str, str]] = {
    "runs": (RUNS, RUN_COLUMNS),
    "links": (LINKS, LINK_COLUMNS),
    "checkpoints": (CHECKPOINTS, CHECKPOINT_COLUMNS),
    "evals": (EVALS, EVAL_COLUMNS),
    "deployability": (DEPLOYABILITY, DEPLOYABILITY_COLUMNS),
    **DEPLOYMENT_DUMP_TABLES,
}
"""Each table of a `ViewDump`: its view table and columns."""


def batch_writes(batch: FactBatch) -> list[tuple[str, Sequence[tuple[Any, ...]]]]:
    """The statements that apply a page's facts, each with its rows, in the order they run.

    Rows and appended facts first, then the updates of rows of earlier pages.
    """
    return [
        (INSERT_RUN, batch.runs),
        (INSERT_CHECKPOINT, batch.checkpoints),
        (INSERT_LINK, batch.links),
        (INSERT_EVAL, batch.evals),
        (INSERT_DEPLOYABILITY, batch.deployability),
        *deployment_inserts(batch.promotions, batch.slot_events, batch.observations),
        (UPDATE_START, batch.starts),
        (UPDATE_COMPLETION, batch.completions),
        (UPDATE_FAILURE, batch.failures),
        (
            UPDATE_DEPLOYABLE,
            [
                (d.deployable, d.checkpoint_version, d.checkpoint_id, d.checkpoint_version)
                for d in batch.deployability_updates
            ],
        ),
        *settlement_updates(batch.settlements),
    ]
