"""The library's floor: the same lifecycle with bare `eventsourcing` aggregates.

The library's default `Aggregate` with `@event` methods, its default mapper
and JSON transcoder, its SQLite application recorder, and no ledger logic: no
rule checks, no pydantic models, no hash chains, no reservations, no
idempotency. Only `PRAGMA synchronous` is set as the ledger sets it (FULL by
default), by reusing the ledger's connection pool, so both pay the same
fsyncs. What the ledger costs on top of this is the price of its rules,
validation and integrity.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from trainledger.adapters.sqlite.recorder import SYNCHRONOUS_ENV, LedgerSQLiteFactory


class FloorSQLiteFactory(LedgerSQLiteFactory):
    """The library's SQLite recorder, on a pool that sets `PRAGMA synchronous`."""

    application_recorder_class = SQLiteApplicationRecorder  # type: ignore[assignment]


class FloorRun(Aggregate):
    @event("Registered")
    def __init__(self, spec: dict[str, Any], sample_count: int) -> None:
        self.spec = spec
        self.sample_count = sample_count
        self.status = "pending"
        self.checkpoint_ids: list[str] = []

    @event("Started")
    def start(self) -> None:
        self.status = "running"

    @event("CheckpointLinked")
    def link_checkpoint(self, checkpoint_id: str) -> None:
        self.checkpoint_ids.append(checkpoint_id)

    @event("Completed")
    def complete(self) -> None:
        self.status = "completed"


class FloorCheckpoint(Aggregate):
    @event("Registered")
    def __init__(self, train_run_id: str, family: str, artifact_path: str) -> None:
        self.train_run_id = train_run_id
        self.family = family
        self.artifact_path = artifact_path
        self.evals: list[dict[str, Any]] = []
        self.deployable = False

    @event("EvalAttached")
    def attach_eval(self, summary: dict[str, Any]) -> None:
        self.evals.append(summary)

    @event("MarkedDeployable")
    def mark_deployable(self, eval_id: str) -> None:
        self.deployable = True


class FloorApp(Application[UUID]):
    """Six commands, each one load-change-save, like the ledger's."""

    def create(self, spec: dict[str, Any], sample_count: int) -> UUID:
        run = FloorRun(spec={**spec, "experimentId": str(uuid4())}, sample_count=sample_count)
        self.save(run)
        return run.id

    def start(self, run_id: UUID) -> None:
        run: FloorRun = self.repository.get(run_id)
        run.start()
        self.save(run)

    def register_checkpoint(self, run_id: UUID, family: str, artifact_path: str) -> UUID:
        run: FloorRun = self.repository.get(run_id)
        checkpoint = FloorCheckpoint(
            train_run_id=str(run.id), family=family, artifact_path=artifact_path
        )
        run.link_checkpoint(str(checkpoint.id))
        self.save(checkpoint, run)
        return checkpoint.id

    def complete(self, run_id: UUID) -> None:
        run: FloorRun = self.repository.get(run_id)
        run.complete()
        self.save(run)

    def attach_eval(self, checkpoint_id: UUID, summary: dict[str, Any]) -> None:
        checkpoint: FloorCheckpoint = self.repository.get(checkpoint_id)
        checkpoint.attach_eval(summary)
        self.save(checkpoint)

    def mark_deployable(self, checkpoint_id: UUID) -> None:
        checkpoint: FloorCheckpoint = self.repository.get(checkpoint_id)
        run: FloorRun = self.repository.get(UUID(checkpoint.train_run_id))
        if run.status == "completed":
            checkpoint.mark_deployable(checkpoint.evals[-1]["evalId"])
        self.save(checkpoint)

    def bulk_load(
        self, lifecycles: Iterable[tuple[dict[str, Any], str, str, dict[str, Any]]]
    ) -> None:
        """Finished lifecycles (spec, family, artifact, eval summary), one append."""
        touched: list[Aggregate] = []
        for spec, family, artifact, summary in lifecycles:
            run = FloorRun(spec={**spec, "experimentId": str(uuid4())}, sample_count=1000)
            run.start()
            checkpoint = FloorCheckpoint(
                train_run_id=str(run.id), family=family, artifact_path=artifact
            )
            run.link_checkpoint(str(checkpoint.id))
            run.complete()
            checkpoint.attach_eval({**summary, "checkpointId": str(checkpoint.id)})
            checkpoint.mark_deployable(summary["evalId"])
            touched += [run, checkpoint]
        self.save(*touched)


def floor_env(path: Path, synchronous: str = "full") -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": get_topic(FloorSQLiteFactory),
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "30",
        SYNCHRONOUS_ENV: synchronous,
    }
