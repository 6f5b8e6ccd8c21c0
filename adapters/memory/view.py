"""The ledger view in memory, for the `memory://` store (and fresh replays)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.popo import POPOTrackingRecorder

from trainledger.adapters.memory.deployment_view import DeploymentTables, MemoryDeploymentReads
from trainledger.projections.facts import (
    CheckpointRecord,
    CompletionFact,
    Counts,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    FailureFact,
    LinkFact,
    RunRecord,
    StartFact,
    ViewDump,
    status_at,
)
from trainledger.projections.view import FactReader, LedgerView, StaleTrackingError

T = TypeVar("T")


def _at(when: int, as_of: int | None) -> bool:
    return as_of is None or when <= as_of


class _Tables:
    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.links: dict[str, list[LinkFact]] = defaultdict(list)
        self.checkpoints: dict[str, CheckpointRecord] = {}
        self.evals: dict[str, EvalFact] = {}
        self.deployability: dict[str, list[DeployabilityFact]] = defaultdict(list)
        self.deployment = DeploymentTables()


class MemoryLedgerView(POPOTrackingRecorder, LedgerView):
    """Dictionaries guarded by the recorder's lock."""

    def __init__(self) -> None:
        super().__init__()
        self._tables = _Tables()

    def apply(self, batch: FactBatch, tracking: Tracking, previous: int) -> None:
        with self._database_lock:
            if self.position(tracking.application_name) != previous:
                raise StaleTrackingError(
                    f"view is not at position {previous}; another writer moved it"
                )
            # Check first, then change: a refused page leaves the tables untouched.
            _refuse_duplicates(self._tables, batch)
            self._tables.deployment.refuse_duplicates(batch)
            _apply(self._tables, batch)
            self._tables.deployment.apply(batch)
            self._insert_tracking(tracking)

    def reset(self, application_name: str) -> None:
        with self._database_lock:
            self._tables = _Tables()
            self._max_tracking_ids[application_name] = None

    @contextmanager
    def reader(self) -> Iterator[FactReader]:
        with self._database_lock:
            yield _MemoryReader(self._tables, dict(self._max_tracking_ids))


def _refuse_duplicates(tables: _Tables, batch: FactBatch) -> None:
    keyed: list[tuple[str, list[str], Container[str]]] = [
        ("run", [r.run_id for r in batch.runs], tables.runs),
        ("checkpoint", [c.checkpoint_id for c in batch.checkpoints], tables.checkpoints),
        ("eval", [e.eval_id for e in batch.evals], tables.evals),
    ]
    for kind, keys, existing in keyed:
        if len(set(keys)) != len(keys) or any(key in existing for key in keys):
            raise IntegrityError(f"a {kind} of this page is already in the view")


def _apply(tables: _Tables, batch: FactBatch) -> None:
    runs, checkpoints = tables.runs, tables.checkpoints
    for run in batch.runs:
        runs[run.run_id] = run
    for checkpoint in batch.checkpoints:
        checkpoints[checkpoint.checkpoint_id] = checkpoint
    for link in batch.links:
        tables.links[link.run_id].append(link)
    for summary in batch.evals:
        tables.evals[summary.eval_id] = summary
    for change in batch.deployability:
        tables.deployability[change.checkpoint_id].append(change)
    updates: list[StartFact | CompletionFact | FailureFact] = [
        *batch.starts,
        *batch.completions,
        *batch.failures,
    ]
    for update in updates:
        if update.run_id in runs:
            runs[update.run_id] = update.applied_to(runs[update.run_id])
    for change in batch.deployability_updates:
        found = checkpoints.get(change.checkpoint_id)
        if found is not None and change.checkpoint_version > found.deployability_version:
            checkpoints[change.checkpoint_id] = change.applied_to(found)


def _newest_first(rows: Iterable[T], position: Callable[[T], int], limit: int | None) -> list[T]:
    ordered = sorted(rows, key=position, reverse=True)
    return ordered if limit is None else ordered[:limit]


class _MemoryReader(MemoryDeploymentReads, FactReader):
    def __init__(self, tables: _Tables, positions: dict[str, int | None]) -> None:
        self.tables = tables
        self.deployment = tables.deployment
        self.positions = positions

    def position(self, application_name: str) -> int:
        return self.positions.get(application_name) or 0

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
        candidates: Iterable[RunRecord] = (
            self.tables.runs.values()
            if ids is None
            else (self.tables.runs[i] for i in ids if i in self.tables.runs)
        )
        found = (
            run
            for run in candidates
            if _at(run.created_at, as_of)
            and (status is None or status_at(run, as_of) == status)
            and (family is None or run.family == family)
            and (dataset_fingerprint is None or run.dataset_fingerprint == dataset_fingerprint)
        )
        return _newest_first(found, lambda r: r.position, limit)

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
        candidates: Iterable[CheckpointRecord] = (
            self.tables.checkpoints.values()
            if ids is None
            else (self.tables.checkpoints[i] for i in ids if i in self.tables.checkpoints)
        )
        wanted_runs = None if run_ids is None else set(run_ids)
        found = (
            checkpoint
            for checkpoint in candidates
            if _at(checkpoint.created_at, as_of)
            and (wanted_runs is None or checkpoint.run_id in wanted_runs)
            and (family is None or checkpoint.family == family)
            and (deployable is None or self._deployable(checkpoint, as_of) == deployable)
        )
        return _newest_first(found, lambda c: c.position, limit)

    def ids_with_prefixes(self, prefixes: Sequence[str], limit: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for kind, ids in (("run", self.tables.runs), ("checkpoint", self.tables.checkpoints)):
            for prefix in dict.fromkeys(prefixes):
                matching = sorted(i for i in ids if i.startswith(prefix))
                found.extend((kind, i) for i in matching[:limit])
        return found

    def _deployable(self, checkpoint: CheckpointRecord, as_of: int | None) -> bool:
        changes = self.deployability([checkpoint.checkpoint_id], as_of)
        return bool(changes and changes[-1].deployable)

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
        wanted = None if checkpoint_ids is None else set(checkpoint_ids)
        found = (
            summary
            for summary in self.tables.evals.values()
            if _at(summary.attached_at, as_of)
            and (wanted is None or summary.checkpoint_id in wanted)
            and (benchmark_id is None or summary.benchmark_id == benchmark_id)
            and (verdict is None or summary.verdict == verdict)
            and (family is None or summary.family == family)
        )
        return _newest_first(found, lambda e: e.position, limit)

    def links(self, run_ids: Sequence[str], as_of: int | None) -> list[LinkFact]:
        return [
            link
            for run_id in dict.fromkeys(run_ids)
            for link in sorted(self.tables.links.get(run_id, ()), key=lambda k: k.run_version)
            if _at(link.linked_at, as_of)
        ]

    def deployability(
        self, checkpoint_ids: Sequence[str], as_of: int | None
    ) -> list[DeployabilityFact]:
        return [
            change
            for checkpoint_id in dict.fromkeys(checkpoint_ids)
            for change in self.tables.deployability.get(checkpoint_id, ())
            if _at(change.changed_at, as_of)
        ]

    def counts(self, as_of: int | None) -> Counts:
        runs_by_status: dict[str, int] = defaultdict(int)
        for run in self.runs(as_of=as_of):
            runs_by_status[status_at(run, as_of)] += 1
        checkpoints = self.checkpoints(as_of=as_of)
        deployable = sum(self._deployable(c, as_of) for c in checkpoints)
        evals_by_verdict: dict[str, int] = defaultdict(int)
        for summary in self.evals(as_of=as_of):
            evals_by_verdict[summary.verdict] += 1
        promotable, routed = self.deployment_counts(as_of)
        return Counts(
            dict(runs_by_status),
            len(checkpoints),
            deployable,
            dict(evals_by_verdict),
            promotable,
            routed,
        )

    def dump(self) -> ViewDump:
        # In key order: rows are unique by key (their first columns), and the
        # links and changes of one run or checkpoint are kept in version order.
        tables = self.tables
        return {
            "runs": [tables.runs[key] for key in sorted(tables.runs)],
            "links": [link for key in sorted(tables.links) for link in tables.links[key]],
            "checkpoints": [tables.checkpoints[key] for key in sorted(tables.checkpoints)],
            "evals": [tables.evals[key] for key in sorted(tables.evals)],
            "deployability": [
                change
                for key in sorted(tables.deployability)
                for change in tables.deployability[key]
            ],
            **tables.deployment.dump(),
        }
