"""Facts as of a moment, turned into the documents the ledger answers with.

`run_document` and `checkpoint_document` give exactly the shapes of
`domain.views` (what `run show` / `checkpoint show` printed when they read
aggregates); the tests hold the two to equality.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import orjson

from trainledger.projections.facts import (
    CheckpointRecord,
    DeployabilityFact,
    EvalFact,
    LinkFact,
    RunRecord,
    moment,
    status_at,
)
from trainledger.projections.filters import Document

T = TypeVar("T")


def uuid_text(hex_id: str) -> str:
    """An id as the ledger prints it (`str(UUID(hex=hex_id))`).

    Views keep ids as `UUID.hex` writes them, 32 lower-case hex digits: the
    hyphens go in by slicing (a third of the time of making a `UUID`, and
    `impact` prints thousands); anything else is read as a UUID.
    """
    if len(hex_id) != 32 or not _LOWER_HEX.issuperset(hex_id):
        return str(UUID(hex=hex_id))
    h = hex_id
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LOWER_HEX = frozenset("0123456789abcdef")


_NAIVE_EPOCH = moment(0).replace(tzinfo=None)


def time_text(micros_since_epoch: int | None, as_of: int | None = None) -> str | None:
    """A stored time as the ledger prints it, `iso(moment(micros_since_epoch))`; None when it
    is after `as_of`.

    The same ISO form, of the naive UTC moment, with its `Z`: without the time
    zone's offset to print and replace, in 60 % of the time (`impact` prints
    thousands; tests/unit/test_projection_facts.py holds the two equal).
    """
    if micros_since_epoch is None or (as_of is not None and micros_since_epoch > as_of):
        return None
    return f"{(_NAIVE_EPOCH + timedelta(microseconds=micros_since_epoch)).isoformat()}Z"


def run_document(
    run: RunRecord, links: Sequence[LinkFact], as_of: int | None, spec: dict[str, Any]
) -> Document:
    """The run as of a moment; `links` are its links up to that moment, `spec` its spec."""
    started = time_text(run.started_at, as_of)
    completed = time_text(run.completed_at, as_of)
    failed = time_text(run.failed_at, as_of)
    version = 1 + (started is not None) + (completed is not None or failed is not None)
    return {
        "trainRunId": uuid_text(run.run_id),
        "experimentId": spec["experimentId"],
        "status": status_at(run, as_of),
        # A run imported from the seed has only what the seed kept of its spec.
        "backend": spec.get("backend"),
        "targetWorkerProfile": spec.get("targetWorkerProfile"),
        "targetModelFamily": spec["targetModelFamily"],
        "datasetFingerprint": spec["datasetFingerprint"],
        "configFingerprint": spec.get("configFingerprint"),
        "sampleCount": run.sample_count,
        "createdAt": time_text(run.created_at),
        "startedAt": started,
        "completedAt": completed,
        "failedAt": failed,
        "failureReason": run.failure_reason if failed is not None else None,
        "host": run.host if started is not None else None,
        "pid": run.pid if started is not None else None,
        "trainerLogPath": run.trainer_log_path if started is not None else None,
        "trainerResult": (
            orjson.loads(run.trainer_result)
            if run.trainer_result is not None and (completed or failed) is not None
            else None
        ),
        "checkpointIds": [uuid_text(link.checkpoint_id) for link in links],
        "version": version + len(links),
        "spec": spec,
    }


def eval_summary(fact: EvalFact) -> Document:
    """The eval summary exactly as attached."""
    summary: Document = orjson.loads(fact.summary)
    return summary


def eval_document(fact: EvalFact) -> Document:
    """An eval as `eval list` and `lineage` show it: the summary, when and by whom."""
    return {**eval_summary(fact), "attachedAt": time_text(fact.attached_at), "actor": fact.actor}


def deployability_entry(change: DeployabilityFact) -> Document:
    return {
        "deployable": bool(change.deployable),
        "timestamp": time_text(change.changed_at),
        "actor": change.actor,
        "evalId": change.eval_id,
        "reason": change.reason,
    }


def checkpoint_document(
    checkpoint: CheckpointRecord,
    evals: Sequence[EvalFact],
    changes: Sequence[DeployabilityFact],
) -> Document:
    """The checkpoint as of a moment; `evals` and `changes` are those up to it."""
    evals = sorted(evals, key=lambda e: e.checkpoint_version)
    changes = sorted(changes, key=lambda c: c.checkpoint_version)
    summaries = [eval_summary(e) for e in evals]
    current = summaries[-1] if summaries else None
    return {
        "checkpointId": uuid_text(checkpoint.checkpoint_id),
        "trainRunId": uuid_text(checkpoint.run_id),
        "targetModelFamily": checkpoint.family,
        "artifactPath": checkpoint.artifact_path,
        "artifactDigest": checkpoint.artifact_digest,
        "checkpointRef": checkpoint.checkpoint_ref,
        "metrics": orjson.loads(checkpoint.metrics),
        "createdAt": time_text(checkpoint.created_at),
        "deployable": bool(changes and changes[-1].deployable),
        "currentEvalId": current["evalId"] if current else None,
        "currentEval": current,
        "evals": summaries,
        "deployabilityHistory": [deployability_entry(c) for c in changes],
        "version": 1 + len(evals) + len(changes),
    }


def grouped(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """Items grouped by a key, keeping their order."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups
