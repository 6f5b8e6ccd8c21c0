"""`impact` now, on SQLite: each run's document kept in the view, made by SQL.

An impact answers ~1,000 runs and as many checkpoints at a million
lifecycles: read as rows (runs, links, checkpoints, evals, deployability,
by id in chunks) and made into documents in Python, most of its time went
to the Python objects of the rows and of the documents. `view_impact` keeps
each run's document (but its spec, which the log holds) with its
checkpoints' documents in it, in the shapes of
`projections.documents.run_document` and `checkpoint_document`, keys in
their order, made by SQLite's JSON functions; keyed by (dataset,
registration), so an impact reads one range of the key and parses one JSON text.
Triggers on the view's tables make a run's document again whenever one of
its rows (or its checkpoints', evals', deployability changes') is written,
in the writer's transaction; a rebuild drops them while it fills the tables
and makes every document once at the end, as does the open of a view found
without them. The table is derived from the others, like the counters
(`view_counts`): not part of a `ViewDump`, so `verify` compares the tables
it is made of. The read model adds each run's spec
(`ProjectionReadModel.impact`); tests/integration/test_impact_documents.py
holds the answers equal to the documents made from the facts, byte for
byte, and to the aggregates'.

Times are printed as `projections.documents.time_text` does (the naive UTC
moment's ISO form, microseconds only when there are any, and a `Z`), ids
as `uuid_text` does (the views keep them as 32 lowercase hex digits).
An as-of answer is made from the facts as before; so is every answer on
PostgreSQL and in memory.
"""

from __future__ import annotations

from typing import Any

from trainledger.adapters.sqlite.view_schema import (
    CHECKPOINTS,
    DEPLOYABILITY,
    EVALS,
    LINKS,
    RUNS,
)


def _time(column: str) -> str:
    """A stored time (microseconds since the epoch) as `time_text` prints it; NULL stays NULL."""
    fraction = f"((({column}) % 1000000 + 1000000) % 1000000)"
    return (
        f"(strftime('%Y-%m-%dT%H:%M:%S', (({column}) - {fraction}) / 1000000, 'unixepoch') "
        f"|| CASE WHEN {fraction} = 0 THEN '' ELSE printf('.%06d', {fraction}) END || 'Z')"
    )


def _uuid(column: str) -> str:
    """An id (32 hex digits) with its hyphens, as `uuid_text` prints it."""
    return (
        f"(substr({column}, 1, 8) || '-' || substr({column}, 9, 4) || '-' || "
        f"substr({column}, 13, 4) || '-' || substr({column}, 17, 4) || '-' || "
        f"substr({column}, 21))"
    )


def _flag(condition: str) -> str:
    return f"json(CASE WHEN {condition} THEN 'true' ELSE 'false' END)"


_LAST_SUMMARY = (
    f"(SELECT e.summary FROM {EVALS} e WHERE e.checkpoint_id = c.checkpoint_id "
    "ORDER BY e.checkpoint_version DESC LIMIT 1)"
)

_CHECKPOINT_DOCUMENT = (
    "json_object("
    f"'checkpointId', {_uuid('c.checkpoint_id')}, "
    f"'trainRunId', {_uuid('c.run_id')}, "
    "'targetModelFamily', c.family, "
    "'artifactPath', c.artifact_path, "
    "'artifactDigest', c.artifact_digest, "
    "'checkpointRef', c.checkpoint_ref, "
    "'metrics', json(c.metrics), "
    f"'createdAt', {_time('c.created_at')}, "
    f"'deployable', {_flag('c.deployable <> 0')}, "
    f"'currentEvalId', json_extract({_LAST_SUMMARY}, '$.evalId'), "
    f"'currentEval', json({_LAST_SUMMARY}), "
    "'evals', json((SELECT json_group_array(json(s.summary)) FROM "
    f"(SELECT e.summary FROM {EVALS} e WHERE e.checkpoint_id = c.checkpoint_id "
    "ORDER BY e.checkpoint_version) s)), "
    "'deployabilityHistory', json((SELECT json_group_array(json_object("
    f"'deployable', {_flag('h.deployable <> 0')}, "
    f"'timestamp', {_time('h.changed_at')}, "
    "'actor', h.actor, 'evalId', h.eval_id, 'reason', h.reason)) FROM "
    f"(SELECT d.deployable, d.changed_at, d.actor, d.eval_id, d.reason FROM {DEPLOYABILITY} d "
    "WHERE d.checkpoint_id = c.checkpoint_id ORDER BY d.checkpoint_version) h)), "
    f"'version', 1 + (SELECT COUNT(*) FROM {EVALS} e WHERE e.checkpoint_id = c.checkpoint_id) "
    f"+ (SELECT COUNT(*) FROM {DEPLOYABILITY} d WHERE d.checkpoint_id = c.checkpoint_id))"
)

_LINKS = f"(SELECT COUNT(*) FROM {LINKS} k WHERE k.run_id = r.run_id)"
_ENDED = "(r.completed_at IS NOT NULL OR r.failed_at IS NOT NULL)"

# The keys a run's spec gives are NULL here (in their places): the read model sets them.
_RUN_DOCUMENT = (
    "json_object("
    f"'trainRunId', {_uuid('r.run_id')}, "
    "'experimentId', NULL, "
    "'status', r.status, "
    "'backend', NULL, "
    "'targetWorkerProfile', NULL, "
    "'targetModelFamily', NULL, "
    "'datasetFingerprint', NULL, "
    "'configFingerprint', NULL, "
    "'sampleCount', r.sample_count, "
    f"'createdAt', {_time('r.created_at')}, "
    f"'startedAt', {_time('r.started_at')}, "
    f"'completedAt', {_time('r.completed_at')}, "
    f"'failedAt', {_time('r.failed_at')}, "
    "'failureReason', CASE WHEN r.failed_at IS NOT NULL THEN r.failure_reason END, "
    "'host', CASE WHEN r.started_at IS NOT NULL THEN r.host END, "
    "'pid', CASE WHEN r.started_at IS NOT NULL THEN r.pid END, "
    "'trainerLogPath', CASE WHEN r.started_at IS NOT NULL THEN r.trainer_log_path END, "
    f"'trainerResult', CASE WHEN {_ENDED} THEN json(r.trainer_result) END, "
    "'checkpointIds', json((SELECT json_group_array(i.id) FROM "
    f"(SELECT {_uuid('k.checkpoint_id')} AS id FROM {LINKS} k WHERE k.run_id = r.run_id "
    "ORDER BY k.run_version) i)), "
    "'version', 1 + (r.started_at IS NOT NULL) + "
    f"{_ENDED} + {_LINKS}, "
    "'spec', NULL, "
    "'checkpoints', json((SELECT json_group_array(json(p.document)) FROM "
    f"(SELECT {_CHECKPOINT_DOCUMENT} AS document FROM {CHECKPOINTS} c "
    "WHERE c.run_id = r.run_id ORDER BY c.position DESC) p)))"
)

IMPACT = "view_impact"

CREATE_IMPACT = (
    f"CREATE TABLE IF NOT EXISTS {IMPACT} (dataset_fingerprint TEXT NOT NULL, "
    "position BIGINT NOT NULL, run_id TEXT NOT NULL, document TEXT NOT NULL, "
    "checkpoint_positions TEXT)"
)
CREATE_IMPACT_KEY = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {IMPACT}_key ON {IMPACT} (dataset_fingerprint, position)"
)
"""Each run's document (`_RUN_DOCUMENT`) and its checkpoints' positions (newest first,
comma-separated, NULL for none), keyed by dataset and registration: an impact reads one
range of the key. (A table clustered by the key reads ~2 ms faster per impact, but a
rebuild takes twice as long to fill it: its rows are large.)"""

_POSITIONS = (
    "(SELECT group_concat(p.position) FROM "
    f"(SELECT c.position FROM {CHECKPOINTS} c WHERE c.run_id = r.run_id "
    "ORDER BY c.position DESC) p)"
)
_COLUMNS = "dataset_fingerprint, position, run_id, document, checkpoint_positions"
_VALUES = f"r.dataset_fingerprint, r.position, r.run_id, {_RUN_DOCUMENT}, {_POSITIONS}"


def _render(run_id: str) -> str:
    return (
        f"INSERT OR REPLACE INTO {IMPACT} ({_COLUMNS}) "
        f"SELECT {_VALUES} FROM {RUNS} r WHERE r.run_id = {run_id}; "
    )


def _of_checkpoint(checkpoint_id: str) -> str:
    return f"(SELECT run_id FROM {CHECKPOINTS} WHERE checkpoint_id = {checkpoint_id})"


_FORGET_RUN = (
    f"DELETE FROM {IMPACT} WHERE dataset_fingerprint = OLD.dataset_fingerprint "
    "AND position = OLD.position; "
)

TRIGGERS: dict[str, str] = {
    f"{IMPACT}_run_insert": f"AFTER INSERT ON {RUNS} BEGIN {_render('NEW.run_id')} END",
    f"{IMPACT}_run_update": f"AFTER UPDATE ON {RUNS} BEGIN {_render('NEW.run_id')} END",
    f"{IMPACT}_run_delete": f"AFTER DELETE ON {RUNS} BEGIN {_FORGET_RUN} END",
    f"{IMPACT}_link_insert": f"AFTER INSERT ON {LINKS} BEGIN {_render('NEW.run_id')} END",
    f"{IMPACT}_link_delete": f"AFTER DELETE ON {LINKS} BEGIN {_render('OLD.run_id')} END",
    f"{IMPACT}_checkpoint_insert": (
        f"AFTER INSERT ON {CHECKPOINTS} BEGIN {_render('NEW.run_id')} END"
    ),
    f"{IMPACT}_checkpoint_update": (
        f"AFTER UPDATE ON {CHECKPOINTS} BEGIN {_render('OLD.run_id')}{_render('NEW.run_id')} END"
    ),
    f"{IMPACT}_checkpoint_delete": (
        f"AFTER DELETE ON {CHECKPOINTS} BEGIN {_render('OLD.run_id')} END"
    ),
    f"{IMPACT}_eval_insert": (
        f"AFTER INSERT ON {EVALS} BEGIN {_render(_of_checkpoint('NEW.checkpoint_id'))} END"
    ),
    f"{IMPACT}_eval_delete": (
        f"AFTER DELETE ON {EVALS} BEGIN {_render(_of_checkpoint('OLD.checkpoint_id'))} END"
    ),
    f"{IMPACT}_deployability_insert": (
        f"AFTER INSERT ON {DEPLOYABILITY} BEGIN {_render(_of_checkpoint('NEW.checkpoint_id'))} END"
    ),
    f"{IMPACT}_deployability_delete": (
        f"AFTER DELETE ON {DEPLOYABILITY} BEGIN {_render(_of_checkpoint('OLD.checkpoint_id'))} END"
    ),
}
"""Triggers keeping each run's document in step with its rows, in the writer's transaction
(whoever writes them): after name -> the `CREATE TRIGGER` statement after the name."""

RENDER_ALL = f"INSERT INTO {IMPACT} ({_COLUMNS}) SELECT {_VALUES} FROM {RUNS} r ORDER BY r.position"

SELECT_IMPACT = (
    f"SELECT run_id, position, document, checkpoint_positions FROM {IMPACT} "
    "WHERE dataset_fingerprint = ? "
    "ORDER BY position DESC"
)


def _present(c: Any) -> int:
    marks = ", ".join("?" for _ in TRIGGERS)
    c.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
        tuple(TRIGGERS),
    )
    return int(c.fetchone()[0])


def ensure_impact(c: Any) -> None:
    """Make every run's document and the triggers, unless all of them are there (`c`: a
    cursor in a write transaction)."""
    c.execute(CREATE_IMPACT)
    if _present(c) == len(TRIGGERS):
        c.execute(CREATE_IMPACT_KEY)
        return
    drop_impact(c)
    c.execute(f"DROP INDEX IF EXISTS {IMPACT}_key")
    c.execute(f"DELETE FROM {IMPACT}")
    c.execute(RENDER_ALL)
    c.execute(CREATE_IMPACT_KEY)
    for name, body in TRIGGERS.items():
        c.execute(f"CREATE TRIGGER {name} {body}")


def drop_impact(c: Any) -> None:
    """No documents made row by row while a rebuild fills the tables (made once at the end)."""
    for name in TRIGGERS:
        c.execute(f"DROP TRIGGER IF EXISTS {name}")


def has_impact(c: Any) -> bool:
    """Whether the view keeps the runs' documents (a view of an older version does not)."""
    c.execute(f"SELECT COUNT(*) FROM sqlite_master WHERE name = '{IMPACT}'")
    return int(c.fetchone()[0]) == 1 and _present(c) == len(TRIGGERS)
