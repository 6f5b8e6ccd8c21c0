"""Documents the ledger answers with, in the contract's camelCase names."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # queries use `iso` without loading the aggregates (start-up time)
    from trainledger.domain.model import Checkpoint, TrainingRun


def iso(moment: datetime | None) -> str | None:
    """UTC ISO-8601 with a `Z`, as every timestamp the ledger prints."""
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def run_document(run: TrainingRun) -> dict[str, Any]:
    # A run imported from the seed holds only what the seed kept of its spec (`SeedSpec`).
    spec = run.spec.model_dump(mode="json")
    return {
        "trainRunId": str(run.id),
        "experimentId": spec["experimentId"],
        "status": run.status,
        "backend": spec.get("backend"),
        "targetWorkerProfile": spec.get("targetWorkerProfile"),
        "targetModelFamily": spec["targetModelFamily"],
        "datasetFingerprint": spec["datasetFingerprint"],
        "configFingerprint": spec.get("configFingerprint"),
        "sampleCount": run.sample_count,
        "createdAt": iso(run.created_on),
        "startedAt": iso(run.started_at),
        "completedAt": iso(run.completed_at),
        "failedAt": iso(run.failed_at),
        "failureReason": run.failure_reason,
        "host": run.host,
        "pid": run.pid,
        "trainerLogPath": run.trainer_log_path,
        "trainerResult": run.trainer_result,
        "checkpointIds": [str(c) for c in run.checkpoint_ids],
        "version": run.version,
        "spec": spec,
    }


def checkpoint_document(checkpoint: Checkpoint) -> dict[str, Any]:
    current = checkpoint.current_eval
    return {
        "checkpointId": str(checkpoint.id),
        "trainRunId": str(checkpoint.train_run_id),
        "targetModelFamily": checkpoint.family,
        "artifactPath": checkpoint.artifact_path,
        "artifactDigest": checkpoint.artifact_digest,
        "checkpointRef": checkpoint.checkpoint_ref,
        "metrics": checkpoint.metrics,
        "createdAt": iso(checkpoint.created_on),
        "deployable": checkpoint.deployable,
        "currentEvalId": current.evalId if current else None,
        "currentEval": current.model_dump(mode="json") if current else None,
        "evals": [e.model_dump(mode="json") for e in checkpoint.evals],
        "deployabilityHistory": [
            {
                "deployable": change.deployable,
                "timestamp": iso(change.timestamp),
                "actor": change.actor,
                "evalId": change.eval_id,
                "reason": change.reason,
            }
            for change in checkpoint.deployability_history
        ],
        "version": checkpoint.version,
    }


def training_document(
    run: TrainingRun, outcome: str, checkpoint: Checkpoint | None
) -> dict[str, Any]:
    """A run after `train` or `import-result`: the run, what was decided, the checkpoint."""
    return {
        **run_document(run),
        "outcome": outcome,
        "resultDigest": run.result_digest,
        "checkpointId": None if checkpoint is None else str(checkpoint.id),
        "checkpoint": None if checkpoint is None else checkpoint_document(checkpoint),
        "alreadyRecorded": False,
    }


def event_document(event: Any, position: int | None) -> dict[str, Any]:
    """One event as `history`, `events` and `export` print it."""
    return {
        "position": position,
        "aggregateId": str(event.originator_id),
        "aggregateType": type(event).__qualname__.split(".")[0],
        "version": event.originator_version,
        "type": event.short_type,
        "timestamp": iso(event.timestamp),
        "actor": event.actor,
        "idempotencyKey": event.idempotency_key,
        "previousHash": event.previous_hash,
        "payload": event.payload(),
    }
