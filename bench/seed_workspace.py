"""Seed workspaces written as principles-disciple 1.7.8 wrote them, for tests and the bench.

`SeedBuilder` adds records with the seed's field names and writes each
registry as the seed did (`JSON.stringify(registry, null, 2)`: two-space
indents, times as `toISOString()`, optional fields left out rather than
null). `write_large_workspace` writes the benchmark's workspace of 2,000
runs. Only the standard library: the files are what a user's workspace holds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TRAINING = ".state/nocturnal/training-registry.json"
DEPLOYMENT = ".state/nocturnal/deployment-registry.json"
PROMOTION = "promotion-registry.json"
SHADOW = "shadow-registry.json"

READER_FAMILY = "qwen2.5-7b-reader"
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    """A time as JavaScript's `toISOString()` writes it."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class SeedBuilder:
    """A seed workspace's four registries, as dictionaries the tests may still edit."""

    training: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"trainingRuns": [], "checkpoints": [], "evalSummaries": []}
    )
    deployments: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"deployments": []}
    )
    promotions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"promotions": []})
    shadow: dict[str, Any] = field(default_factory=lambda: {"observations": [], "version": 1})

    def run(
        self,
        status: str = "pending",
        *,
        created: datetime = START,
        completed: datetime | None = None,
        family: str = READER_FAMILY,
        reason: str | None = None,
        dataset: str = "0f1e2d3c4b5a6978",
    ) -> dict[str, Any]:
        """A run as `registerTrainingRun` and `updateTrainingRunStatus` leave it."""
        record: dict[str, Any] = {
            "trainRunId": new_id(),
            "experimentId": new_id(),
            "targetModelFamily": family,
            "datasetFingerprint": dataset,
            "exportId": f"export-{dataset[:6]}",
            "sampleCount": 0,
            "configFingerprint": "dc867911eece7ac3",
            "createdAt": iso(created),
            "status": status,
            "checkpointIds": [],
        }
        if status in ("completed", "failed"):
            record["completedAt"] = iso(completed or created + timedelta(hours=2))
        if status == "failed":
            record["failureReason"] = reason or "Training failed: CUDA out of memory"
        self.training["trainingRuns"].append(record)
        return record

    def checkpoint(
        self, run: dict[str, Any], *, created: datetime | None = None, deployable: bool = False
    ) -> dict[str, Any]:
        """A checkpoint as `registerCheckpoint` leaves it (and adds it to its run)."""
        if created is None:
            end = run.get("completedAt")
            created = (
                datetime.fromisoformat(end) - timedelta(seconds=1)
                if end
                else datetime.fromisoformat(run["createdAt"]) + timedelta(hours=1)
            )
        record = {
            "checkpointId": new_id(),
            "trainRunId": run["trainRunId"],
            "targetModelFamily": run["targetModelFamily"],
            "artifactPath": f".state/nocturnal/checkpoints/checkpoint-{run['trainRunId'][:8]}",
            "createdAt": iso(created),
            "deployable": deployable,
        }
        run["checkpointIds"].append(record["checkpointId"])
        self.training["checkpoints"].append(record)
        return record

    def eval(
        self,
        checkpoint: dict[str, Any],
        verdict: str = "pass",
        *,
        created: datetime | None = None,
        baseline: float = 0.5,
        candidate: float = 0.8,
        eval_id: str | None = None,
    ) -> dict[str, Any]:
        """An eval as `attachEvalSummary` leaves it (and links its checkpoint to it)."""
        if created is None:
            created = datetime.fromisoformat(checkpoint["createdAt"]) + timedelta(hours=3)
        record = {
            "evalId": eval_id or f"eval-{new_id()[:12]}",
            "checkpointId": checkpoint["checkpointId"],
            "benchmarkId": "benchmark-holdout-v2",
            "targetModelFamily": checkpoint["targetModelFamily"],
            "mode": "reduced_prompt",
            "baselineScore": baseline,
            "candidateScore": candidate,
            "delta": candidate - baseline,
            "verdict": verdict,
            "createdAt": iso(created),
        }
        checkpoint["lastEvalSummaryRef"] = record["evalId"]
        self.training["evalSummaries"].append(record)
        return record

    def observation(
        self,
        checkpoint: dict[str, Any],
        routed: datetime,
        outcome: str | None = "accepted",
        *,
        profile: str = "local-reader",
        settled_after: timedelta = timedelta(minutes=5),
        **signals: bool,
    ) -> dict[str, Any]:
        """A shadow observation as `recordShadowRouting` (and `completeShadowObservation`)
        leave it; `outcome=None`: still pending."""
        record: dict[str, Any] = {
            "observationId": new_id(),
            "checkpointId": checkpoint["checkpointId"],
            "workerProfile": profile,
            "taskFingerprint": f"task-{new_id()[:8]}",
            "routedAt": iso(routed),
        }
        if outcome is not None:
            record["completedAt"] = iso(routed + settled_after)
            record["outcome"] = outcome
            record["failureSignals"] = {
                "timedOut": False,
                "threwException": False,
                "invalidOutput": False,
                "profileRejected": False,
                "extra": {},
                **signals,
            }
        self.shadow["observations"].append(record)
        return record

    def promotion(
        self,
        checkpoint: dict[str, Any],
        state: str,
        *,
        created: datetime,
        shadow_started: datetime | None = None,
        promotable: datetime | None = None,
        changed: datetime | None = None,
        note: str | None = "reviewed by the orchestrator",
    ) -> dict[str, Any]:
        """A promotion record as `advancePromotion` / `rejectCheckpoint` leave it."""
        record: dict[str, Any] = {
            "promotionId": new_id(),
            "checkpointId": checkpoint["checkpointId"],
            "state": state,
            "targetProfile": "local-reader",
            "targetModelFamily": checkpoint["targetModelFamily"],
            "reducedPromptDelta": 0.3,
            "constraintMetrics": {
                "arbiterRejectRate": 0,
                "executabilityRejectRate": 0,
                "reviewedSubsetQuality": 0.8,
                "routingScopeNotExpanded": True,
            },
            "baselineMetrics": {
                "arbiterRejectRate": 0.15,
                "executabilityRejectRate": 0.1,
                "reviewedSubsetQuality": 0.7,
            },
            "orchestratorReviewPassed": shadow_started is not None,
            "stateChangedAt": iso(changed or promotable or shadow_started or created),
            "createdAt": iso(created),
        }
        if note is not None:
            record["reviewNote"] = note
        if shadow_started is not None:
            record["shadowStartedAt"] = iso(shadow_started)
        if promotable is not None:
            record["promotableAt"] = iso(promotable)
        self.promotions["promotions"].append(record)
        return record

    def deployment(
        self,
        profile: str,
        active: dict[str, Any],
        *,
        deployed: datetime,
        updated: datetime | None = None,
        previous: dict[str, Any] | None = None,
        routing: bool = False,
        note: str | None = None,
    ) -> dict[str, Any]:
        """A deployment record as `bindCheckpointToWorkerProfile` (and routing) leave it."""
        record: dict[str, Any] = {
            "deploymentId": new_id(),
            "workerProfile": profile,
            "targetModelFamily": active["targetModelFamily"],
            "activeCheckpointId": active["checkpointId"],
            "previousCheckpointId": None if previous is None else previous["checkpointId"],
            "routingEnabled": routing,
            "deployedAt": iso(deployed),
            "updatedAt": iso(updated or deployed),
        }
        if note is not None:
            record["note"] = note
        self.deployments["deployments"].append(record)
        return record

    def write(self, root: Path, *, only: tuple[str, ...] | None = None) -> Path:
        """Write the registries under `root` (all four, or `only` these), as the seed did."""
        documents = {
            TRAINING: self.training,
            DEPLOYMENT: self.deployments,
            PROMOTION: self.promotions,
            SHADOW: self.shadow,
        }
        for relative, document in documents.items():
            if only is not None and relative not in only:
                continue
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=2))
        return root


def write_large_workspace(root: Path, runs: int = 2000) -> Path:
    """The benchmark's workspace: `runs` runs, most completed with a checkpoint and evals.

    Of every ten runs: seven completed with a checkpoint, a passing eval and
    deployability (one of them with a failing eval first), one failed, one
    running, one pending. Times advance by a minute per run.
    """
    seed = SeedBuilder()
    for index in range(runs):
        created = START + timedelta(minutes=index)
        kind = index % 10
        if kind == 7:
            seed.run("failed", created=created, completed=created + timedelta(seconds=40))
            continue
        if kind == 8:
            seed.run("running", created=created)
            continue
        if kind == 9:
            seed.run("pending", created=created)
            continue
        run = seed.run("completed", created=created, completed=created + timedelta(seconds=50))
        checkpoint = seed.checkpoint(run, deployable=True)
        if kind == 0:
            seed.eval(checkpoint, "fail", candidate=0.4, created=created + timedelta(seconds=55))
        seed.eval(checkpoint, "pass", created=created + timedelta(seconds=58))
    return seed.write(root, only=(TRAINING,))
