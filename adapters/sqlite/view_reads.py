"""Reads of the ledger view's tables: `SQLFactReader`, in portable SQL.

One reader reads one transaction of the view (the SQLite view's, and the
PostgreSQL view's, which runs the same statements with `%s` for `?`). Each
list filter walks an index newest first and stops at its limit; ids asked
for go in chunks, whose answers are merged in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from trainledger.adapters.sqlite.deployment_reads import DeploymentReads
from trainledger.adapters.sqlite.log_workers import SELECT_ROWS
from trainledger.adapters.sqlite.view_counts import read_counts
from trainledger.adapters.sqlite.view_schema import (
    CHECKPOINT_COLUMNS,
    CHECKPOINTS,
    DEPLOYABILITY,
    DEPLOYABILITY_COLUMNS,
    DUMP_TABLES,
    EVAL_COLUMNS,
    EVALS,
    LINK_COLUMNS,
    LINKS,
    RUN_COLUMNS,
    RUNS,
    SELECT_POSITION,
)
from trainledger.projections.facts import (
    CheckpointRecord,
    Counts,
    DeployabilityFact,
    EvalFact,
    LinkFact,
    RunRecord,
    ViewDump,
)
from trainledger.projections.view import FactReader, StoredRow

# A run's status and a checkpoint's deployability as of a moment (`?`: it),
# derived from the times of their facts.
STATUS_AT = (
    "(CASE WHEN failed_at <= ? THEN 'failed' WHEN completed_at <= ? THEN 'completed' "
    "WHEN started_at <= ? THEN 'running' ELSE 'pending' END)"
)
DEPLOYABLE_AT = (
    f"COALESCE((SELECT d.deployable FROM {DEPLOYABILITY} d "
    f"WHERE d.checkpoint_id = {CHECKPOINTS}.checkpoint_id AND d.changed_at <= ? "
    "ORDER BY d.checkpoint_version DESC LIMIT 1), 0)"
)

# SQLite allows 32766 parameters a statement; ids go in chunks well below that.
CHUNK = 500
PREFIX_CHUNK = 100


class _Select:
    """A SELECT with optional conditions."""

    def __init__(self, head: str) -> None:
        self.head = head
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def where(self, condition: str, *params: Any) -> _Select:
        self.conditions.append(condition)
        self.params.extend(params)
        return self

    def sql(self, tail: str = "") -> str:
        where = f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
        return f"{self.head}{where}{tail}"


def _chunks(ids: Sequence[str] | None) -> list[Sequence[str] | None]:
    if ids is None:
        return [None]
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]


def _among(column: str, ids: Sequence[object]) -> str:
    return f"{column} IN ({', '.join('?' for _ in ids)})"


def _unindexed(column: str, chunk: Sequence[str] | None, *, number: bool = False) -> str:
    """`column` as a filter compares it: not through its index when ids are asked for.

    The ids' index bounds the walk to a chunk's rows; without statistics
    SQLite would rather walk a filter's index newest first (no sort), through
    every row of that value. `x || ''` and `x + 0` are the portable way to
    say "not by the index" (PostgreSQL plans by its statistics either way).
    """
    if chunk is None:
        return column
    return f"{column} + 0" if number else f"{column} || ''"


Row = TypeVar("Row", RunRecord, CheckpointRecord, EvalFact)


class SQLFactReader(DeploymentReads, FactReader):
    """Reads of the view tables in one transaction, through a DB-API cursor.

    Statements are written with `?` parameters; `adapt_sql` makes each one
    what the cursor runs (`%s` parameters for psycopg). Rows are tuples.
    """

    def __init__(
        self,
        cursor: Any,
        *,
        adapt_sql: Callable[[str], Any] = str,
        tracking_table: str = "tracking",
        log_table: str | None = None,
        counters: bool = False,
        shadow_hours: bool = False,
        postgres: bool = False,
    ) -> None:
        self.counters = counters
        """Current counts are kept by the view (adapters/sqlite/view_counts.py)."""
        self.shadow_hours = shadow_hours
        self.postgres = postgres
        """Statements for PostgreSQL's planner (no index hints; see `hours_shadow_counts`)."""
        self.c = cursor
        self.adapt_sql = adapt_sql
        self.tracking_table = tracking_table
        self.log_table = log_table
        """The SQLite events table of the log, when it is in this database."""

    def log_position(self) -> int | None:
        if self.log_table is None:
            return None
        rows = self._rows(f"SELECT MAX(rowid) FROM {self.log_table}", ())
        return int(rows[0][0] or 0)

    def stored_events(self, positions: Sequence[int]) -> list[StoredRow] | None:
        if self.log_table is None:
            return None
        wanted = sorted(set(positions))
        rows: list[StoredRow] = []
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            select = SELECT_ROWS.format(table=self.log_table) + f"WHERE {_among('rowid', chunk)}"
            rows.extend(cast("list[StoredRow]", self._rows(select, chunk)))
        return rows

    def position(self, application_name: str) -> int:
        select = SELECT_POSITION.format(tracking=self.tracking_table)
        rows = self._rows(select, (application_name,))
        return int(rows[0][0]) if rows else 0

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.c.execute(self.adapt_sql(sql), params)
        return list(self.c.fetchall())

    def _newest_first(
        self,
        head: str,
        build: Callable[[_Select, Sequence[str] | None], _Select],
        make: type[Row],
        ids: Sequence[str] | None,
        limit: int | None,
    ) -> list[Row]:
        found: list[Row] = []
        for chunk in _chunks(ids):
            select = build(_Select(head), chunk)
            params = list(select.params)
            # Rows of ids are sorted here, whole: a chunk is ordered only to keep its newest.
            tail = "" if chunk is not None and limit is None else " ORDER BY position DESC"
            if limit is not None:
                tail += " LIMIT ?"
                params.append(limit)
            found.extend(map(make._make, self._rows(select.sql(tail), params)))
        if ids is not None and len(found) > 1:
            found.sort(key=lambda record: record.position, reverse=True)
        return found if limit is None else found[:limit]

    def runs(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | None = None,
        family: str | None = None,
        dataset_fingerprint: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among("run_id", chunk), *chunk)
            if as_of is not None:
                select.where("created_at <= ?", as_of)
            if status is not None:
                if as_of is None:
                    select.where(f"{_unindexed('status', chunk)} = ?", status)
                else:
                    select.where(f"{STATUS_AT} = ?", as_of, as_of, as_of, status)
            if family is not None:
                select.where(f"{_unindexed('family', chunk)} = ?", family)
            if dataset_fingerprint is not None:
                select.where(f"{_unindexed('dataset_fingerprint', chunk)} = ?", dataset_fingerprint)
            return select

        head = f"SELECT {RUN_COLUMNS} FROM {RUNS}"
        return self._newest_first(head, build, RunRecord, ids, limit)

    def checkpoints(
        self,
        *,
        ids: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        family: str | None = None,
        deployable: bool | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        if ids is not None and run_ids is not None:
            raise ValueError("select checkpoints by ids or by run ids, not both")
        column, keys = ("checkpoint_id", ids) if run_ids is None else ("run_id", run_ids)

        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among(column, chunk), *chunk)
            if as_of is not None:
                select.where("created_at <= ?", as_of)
            if family is not None:
                select.where(f"{_unindexed('family', chunk)} = ?", family)
            if deployable is not None:
                if as_of is None:
                    select.where(
                        f"{_unindexed('deployable', chunk, number=True)} = ?", int(deployable)
                    )
                else:
                    select.where(f"{DEPLOYABLE_AT} = ?", as_of, int(deployable))
            return select

        head = f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINTS}"
        return self._newest_first(head, build, CheckpointRecord, keys, limit)

    def evals(
        self,
        *,
        checkpoint_ids: Sequence[str] | None = None,
        benchmark_id: str | None = None,
        verdict: str | None = None,
        family: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[EvalFact]:
        def build(select: _Select, chunk: Sequence[str] | None) -> _Select:
            if chunk is not None:
                select.where(_among("checkpoint_id", chunk), *chunk)
            if as_of is not None:
                select.where("attached_at <= ?", as_of)
            if benchmark_id is not None:
                select.where(f"{_unindexed('benchmark_id', chunk)} = ?", benchmark_id)
            if verdict is not None:
                select.where(f"{_unindexed('verdict', chunk)} = ?", verdict)
            if family is not None:
                select.where(f"{_unindexed('family', chunk)} = ?", family)
            return select

        head = f"SELECT {EVAL_COLUMNS} FROM {EVALS}"
        return self._newest_first(head, build, EvalFact, checkpoint_ids, limit)

    def links(self, run_ids: Sequence[str], as_of: int | None) -> list[LinkFact]:
        found: list[LinkFact] = []
        for chunk in _chunks(run_ids):
            assert chunk is not None
            select = _Select(f"SELECT {LINK_COLUMNS} FROM {LINKS}")
            select.where(_among("run_id", chunk), *chunk)
            if as_of is not None:
                select.where("linked_at <= ?", as_of)
            rows = self._rows(select.sql(" ORDER BY run_id, run_version"), select.params)
            found.extend(map(LinkFact._make, rows))
        return found

    def deployability(
        self, checkpoint_ids: Sequence[str], as_of: int | None
    ) -> list[DeployabilityFact]:
        found: list[DeployabilityFact] = []
        for chunk in _chunks(checkpoint_ids):
            assert chunk is not None
            select = _Select(f"SELECT {DEPLOYABILITY_COLUMNS} FROM {DEPLOYABILITY}")
            select.where(_among("checkpoint_id", chunk), *chunk)
            if as_of is not None:
                select.where("changed_at <= ?", as_of)
            tail = " ORDER BY checkpoint_id, checkpoint_version"
            found.extend(map(DeployabilityFact._make, self._rows(select.sql(tail), select.params)))
        return found

    def counts(self, as_of: int | None) -> Counts:
        if as_of is None and self.counters:
            by_status_now, total_now, deployable_now, by_verdict_now = read_counts(self._rows)
            promotable, routed = self.deployment_counts(as_of)
            return Counts(
                by_status_now, total_now, deployable_now, by_verdict_now, promotable, routed
            )
        if as_of is None:
            by_status = self._rows(f"SELECT status, COUNT(*) FROM {RUNS} GROUP BY status", ())
            checkpoints = self._rows(
                f"SELECT COUNT(*), COALESCE(SUM(deployable), 0) FROM {CHECKPOINTS}", ()
            )
            by_verdict = self._rows(f"SELECT verdict, COUNT(*) FROM {EVALS} GROUP BY verdict", ())
        else:
            by_status = self._rows(
                f"SELECT {STATUS_AT}, COUNT(*) FROM {RUNS} WHERE created_at <= ? GROUP BY 1",
                (as_of, as_of, as_of, as_of),
            )
            checkpoints = self._rows(
                f"SELECT COUNT(*), COALESCE(SUM({DEPLOYABLE_AT}), 0) FROM {CHECKPOINTS} "
                "WHERE created_at <= ?",
                (as_of, as_of),
            )
            by_verdict = self._rows(
                f"SELECT verdict, COUNT(*) FROM {EVALS} WHERE attached_at <= ? GROUP BY verdict",
                (as_of,),
            )
        total, deployable = checkpoints[0]
        promotable, routed = self.deployment_counts(as_of)
        return Counts(
            {row[0]: row[1] for row in by_status},
            int(total),
            int(deployable),
            {row[0]: row[1] for row in by_verdict},
            promotable,
            routed,
        )

    def ids_with_prefixes(self, prefixes: Sequence[str], limit: int) -> list[tuple[str, str]]:
        # Per prefix a range of the id's index (every id digit sorts before
        # "g"), one statement for a chunk of prefixes.
        unique = list(dict.fromkeys(prefixes))
        found: list[tuple[str, str]] = []
        for kind, table, column in (
            ("run", RUNS, "run_id"),
            ("checkpoint", CHECKPOINTS, "checkpoint_id"),
        ):
            one = (
                f"SELECT {column} FROM (SELECT {column} FROM {table} "
                f"WHERE {column} >= ? AND {column} < ? ORDER BY {column} LIMIT ?) AS p{{i}}"
            )
            for start in range(0, len(unique), PREFIX_CHUNK):
                chunk = unique[start : start + PREFIX_CHUNK]
                sql = " UNION ALL ".join(one.format(i=i) for i in range(len(chunk)))
                params = [v for prefix in chunk for v in (prefix, f"{prefix}g", limit)]
                found.extend((kind, row[0]) for row in self._rows(sql, params))
        return found

    def dump(self) -> ViewDump:
        return {
            name: sorted(self._rows(f"SELECT {columns} FROM {table}", ()))
            for name, (table, columns) in DUMP_TABLES.items()
        }
