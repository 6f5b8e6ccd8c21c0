"""Documents the ledger answers with, in the contract's camelCase names."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # queries use `iso` without loading the aggregates (start-up time)
    from trainledger.domain.deployment import DeploymentSlot
    from trainledger.domain.model import Checkpoint, TrainingRun
    from trainledger.domain.promotion import Promotion


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


def decision_document(
    *,
    kind: str,
    state: str,
    checks: list[dict[str, Any]],
    evidence: str | None,
    eval_id: str | None,
    actor: str,
    timestamp: str | None,
    note: str | None,
    reason: str | None,
) -> dict[str, Any]:
    """One decision of a promotion, as `promotion show` lists it (SPEC §9.1)."""
    return {
        "kind": kind,
        "state": state,
        "checks": checks,
        "evidence": evidence,
        "evalId": eval_id,
        "actor": actor,
        "timestamp": timestamp,
        "note": note,
        "reason": reason,
    }


def promotion_document(
    checkpoint_id: str,
    promotion_id: str,
    decisions: list[dict[str, Any]],
) -> dict[str, Any]:
    """A checkpoint's promotion: its state (None before the first decision) and decisions."""
    shadow = [d for d in decisions if d["kind"] == "advance" and d["state"] == "shadow_ready"]
    return {
        "checkpointId": checkpoint_id,
        "promotionId": promotion_id,
        "state": decisions[-1]["state"] if decisions else None,
        "shadowStartedAt": shadow[-1]["timestamp"] if shadow else None,
        "decisions": decisions,
    }


def promotion_of(promotion: Promotion) -> dict[str, Any]:
    """`promotion_document` of an aggregate."""
    return promotion_document(
        str(promotion.checkpoint_id),
        str(promotion.id),
        [
            decision_document(
                kind=d.kind,
                state=d.state,
                checks=[check.model_dump(mode="json") for check in d.checks],
                evidence=d.evidence,
                eval_id=d.eval_id,
                actor=d.actor,
                timestamp=iso(d.timestamp),
                note=d.note,
                reason=d.reason,
            )
            for d in promotion.decisions
        ],
    )


def binding_document(
    *,
    checkpoint_id: str,
    previous_checkpoint_id: str | None,
    kind: str,
    note: str | None,
    bound_at: str | None,
    bound_by: str,
) -> dict[str, Any]:
    """One binding of a deployment slot (SPEC §9.3)."""
    return {
        "checkpointId": checkpoint_id,
        "previousCheckpointId": previous_checkpoint_id,
        "kind": kind,
        "note": note,
        "boundAt": bound_at,
        "boundBy": bound_by,
    }


def slot_document(
    profile: str, slot_id: str, bindings: list[dict[str, Any]], routing_enabled: bool
) -> dict[str, Any]:
    """A profile's deployment slot: what is active, since when, by whom, and its bindings."""
    current = bindings[-1] if bindings else None
    return {
        "profile": profile,
        "slotId": slot_id,
        "activeCheckpointId": current["checkpointId"] if current else None,
        "routingEnabled": routing_enabled,
        "boundAt": current["boundAt"] if current else None,
        "boundBy": current["boundBy"] if current else None,
        "bindings": bindings,
    }


def slot_of(slot: DeploymentSlot) -> dict[str, Any]:
    """`slot_document` of an aggregate."""
    return slot_document(
        slot.profile,
        str(slot.id),
        [
            binding_document(
                checkpoint_id=str(b.checkpoint_id),
                previous_checkpoint_id=None
                if b.previous_checkpoint_id is None
                else str(b.previous_checkpoint_id),
                kind=b.kind,
                note=b.note,
                bound_at=iso(b.timestamp),
                bound_by=b.actor,
            )
            for b in slot.bindings
        ],
        slot.routing_enabled,
    )
