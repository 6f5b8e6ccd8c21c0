"""The seed's registries of SPEC §9 (promotion, shadow, deployment), read and checked.

Shapes from the seed's TypeScript at 1.7.8 (see `domain.seed`):

`promotion-registry.json` (promotion-gate.ts, at the workspace root):
`{promotions: PromotionRecord[]}`, one record per checkpoint, overwritten by
every `advancePromotion` and `rejectCheckpoint`:
`PromotionRecord {promotionId, checkpointId, state, targetProfile,
targetModelFamily, reducedPromptDelta, constraintMetrics {arbiterRejectRate,
executabilityRejectRate, reviewedSubsetQuality, routingScopeNotExpanded},
baselineMetrics {arbiterRejectRate, executabilityRejectRate,
reviewedSubsetQuality}, orchestratorReviewPassed, reviewNote?, stateChangedAt,
createdAt, shadowStartedAt?, promotableAt?, previousPromotionId?}`; state
`rejected|candidate_only|shadow_ready|promotable`. Only the creation, the
shadow start, the promotable moment and the last change have times; a
rejection drops `shadowStartedAt` and `promotableAt`.

`shadow-registry.json` (shadow-observation-registry.ts, at the workspace root):
`{observations: ShadowObservation[], version}`:
`ShadowObservation {observationId, checkpointId, workerProfile (any string),
taskFingerprint, routedAt, completedAt?, outcome?, failureSignals? {timedOut,
threwException, invalidOutput, profileRejected, extra}, usedInGate?}`; outcome
`accepted|rejected|escalated`, set with completedAt; expired observations
are deleted from the file (`cleanupExpiredObservations`).

`.state/nocturnal/deployment-registry.json` (model-deployment-registry.ts):
`{deployments: Deployment[]}`, one record per worker profile, overwritten on
every bind, rollback and routing change: `Deployment {deploymentId,
workerProfile, targetModelFamily, activeCheckpointId|null,
previousCheckpointId|null, routingEnabled, deployedAt, updatedAt, note?}`;
a rollback swaps active and previous; `deployedAt` is the first binding's.

A checkpoint named here must be one the training registry (or the ledger)
holds; that is checked where both are known (`service.seed_rollout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from trainledger.domain.seed import (
    Id,
    SeedFileModel,
    SeedRecord,
    SeedTraining,
    parse_file,
    refuse_before,
    refuse_duplicates,
    where,
)
from trainledger.domain.seed_vocabulary import SeedRefusedError
from trainledger.domain.shadow_stats import ShadowOutcome
from trainledger.domain.vocabulary import PromotionState, WorkerProfile


class SeedMetrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True, allow_inf_nan=False)

    arbiterRejectRate: float  # noqa: N815
    executabilityRejectRate: float  # noqa: N815
    reviewedSubsetQuality: float  # noqa: N815


class SeedConstraints(SeedMetrics):
    routingScopeNotExpanded: bool | None = None  # noqa: N815


class SeedPromotion(SeedRecord):
    promotionId: Id  # noqa: N815
    checkpointId: Id  # noqa: N815
    state: PromotionState
    targetProfile: str | None = None  # noqa: N815
    targetModelFamily: str | None = None  # noqa: N815
    reducedPromptDelta: float | None = None  # noqa: N815
    constraintMetrics: SeedConstraints | None = None  # noqa: N815
    baselineMetrics: SeedMetrics | None = None  # noqa: N815
    orchestratorReviewPassed: bool | None = None  # noqa: N815
    reviewNote: str | None = None  # noqa: N815
    stateChangedAt: AwareDatetime  # noqa: N815
    createdAt: AwareDatetime  # noqa: N815
    shadowStartedAt: AwareDatetime | None = None  # noqa: N815
    promotableAt: AwareDatetime | None = None  # noqa: N815
    previousPromotionId: str | None = None  # noqa: N815


class SeedSignals(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True)

    timedOut: bool = False  # noqa: N815
    threwException: bool = False  # noqa: N815
    invalidOutput: bool = False  # noqa: N815
    profileRejected: bool = False  # noqa: N815
    extra: dict[str, bool] = Field(default_factory=dict)


class SeedObservation(SeedRecord):
    observationId: Id  # noqa: N815
    checkpointId: Id  # noqa: N815
    workerProfile: str  # noqa: N815
    taskFingerprint: str | None = None  # noqa: N815
    routedAt: AwareDatetime  # noqa: N815
    completedAt: AwareDatetime | None = None  # noqa: N815
    outcome: ShadowOutcome | None = None
    failureSignals: SeedSignals | None = None  # noqa: N815
    usedInGate: bool | None = None  # noqa: N815


class SeedDeployment(SeedRecord):
    deploymentId: Id  # noqa: N815
    workerProfile: WorkerProfile  # noqa: N815
    targetModelFamily: str | None = None  # noqa: N815
    activeCheckpointId: Id | None  # noqa: N815
    previousCheckpointId: Id | None  # noqa: N815
    routingEnabled: bool  # noqa: N815
    deployedAt: AwareDatetime  # noqa: N815
    updatedAt: AwareDatetime  # noqa: N815
    note: str | None = None


class PromotionRegistryFile(SeedFileModel):
    promotions: list[SeedPromotion]


class ShadowRegistryFile(SeedFileModel):
    observations: list[SeedObservation]
    version: int | None = None


class DeploymentRegistryFile(SeedFileModel):
    deployments: list[SeedDeployment]


@dataclass
class SeedRollout:
    """The three registries of SPEC §9 that are present, checked each on its own."""

    promotions: list[SeedPromotion]
    promotion_label: str | None
    observations: list[SeedObservation]
    shadow_label: str | None
    deployments: list[SeedDeployment]
    deployment_label: str | None

    def references(self) -> list[Reference]:
        """Every checkpoint these records name, where, and the time they name it at."""
        found: list[Reference] = []
        for i, p in enumerate(self.promotions):
            at = where(str(self.promotion_label), "promotions", i, "promotionId", p.promotionId)
            found.append(Reference(at, p.checkpointId, p.createdAt, "createdAt"))
        for i, o in enumerate(self.observations):
            at = where(str(self.shadow_label), "observations", i, "observationId", o.observationId)
            found.append(Reference(at, o.checkpointId, o.routedAt, "routedAt"))
        for i, d in enumerate(self.deployments):
            at = where(str(self.deployment_label), "deployments", i, "deploymentId", d.deploymentId)
            if d.previousCheckpointId is not None:
                found.append(Reference(at, d.previousCheckpointId, d.deployedAt, "deployedAt"))
            if d.activeCheckpointId is not None:
                moment, name = (
                    (d.deployedAt, "deployedAt")
                    if d.previousCheckpointId is None
                    else (d.updatedAt, "updatedAt")
                )
                found.append(Reference(at, d.activeCheckpointId, moment, name))
        return found

    def unresolved(self, training: SeedTraining | None) -> list[Reference]:
        """The references the training registry does not resolve (the ledger must); those
        it resolves are checked for their times (nothing before its checkpoint's creation)."""
        left = []
        for reference in self.references():
            checkpoint = None if training is None else training.checkpoint(reference.checkpoint)
            if checkpoint is None:
                left.append(reference)
                continue
            refuse_before(
                f"{reference.where}: {reference.name}",
                reference.moment,
                checkpoint.createdAt,
                f"its checkpoint's createdAt ({reference.checkpoint})",
            )
        return left


@dataclass(frozen=True)
class Reference:
    """A checkpoint a record of SPEC §9 names."""

    where: str
    checkpoint: str
    moment: datetime
    name: str


def read_promotions(label: str, data: bytes) -> list[SeedPromotion]:
    registry, _ = parse_file(label, data, PromotionRegistryFile)
    records = registry.promotions
    refuse_duplicates(label, "promotions", "promotionId", (p.promotionId for p in records), None)
    refuse_duplicates(
        label, "promotions", "checkpointId", (p.checkpointId for p in records), "checkpoint"
    )
    for index, record in enumerate(records):
        at = where(label, "promotions", index, "promotionId", record.promotionId)
        refuse_before(f"{at}: stateChangedAt", record.stateChangedAt, record.createdAt, "createdAt")
        for name in ("shadowStartedAt", "promotableAt"):
            moment = getattr(record, name)
            if moment is None:
                continue
            refuse_before(f"{at}: {name}", moment, record.createdAt, "createdAt")
            refuse_before(f"{at}: stateChangedAt", record.stateChangedAt, moment, name)
        if record.state == "shadow_ready" and record.shadowStartedAt is None:
            raise SeedRefusedError(f"{at}: state shadow_ready without shadowStartedAt")
        if record.state == "promotable" and record.promotableAt is None:
            raise SeedRefusedError(f"{at}: state promotable without promotableAt")
    return records


def read_observations(label: str, data: bytes) -> list[SeedObservation]:
    registry, _ = parse_file(label, data, ShadowRegistryFile)
    records = registry.observations
    ids = (o.observationId for o in records)
    refuse_duplicates(label, "observations", "observationId", ids, "observation")
    for index, record in enumerate(records):
        at = where(label, "observations", index, "observationId", record.observationId)
        if (record.completedAt is None) != (record.outcome is None):
            raise SeedRefusedError(
                f"{at}: completedAt and outcome go together (the seed sets both on completion)"
            )
        if record.completedAt is not None:
            refuse_before(f"{at}: completedAt", record.completedAt, record.routedAt, "routedAt")
    return records


def read_deployments(label: str, data: bytes) -> list[SeedDeployment]:
    registry, _ = parse_file(label, data, DeploymentRegistryFile)
    records = registry.deployments
    ids = (d.deploymentId for d in records)
    refuse_duplicates(label, "deployments", "deploymentId", ids, None)
    refuse_duplicates(
        label, "deployments", "workerProfile", (d.workerProfile for d in records), None
    )
    for index, record in enumerate(records):
        at = where(label, "deployments", index, "deploymentId", record.deploymentId)
        refuse_before(f"{at}: updatedAt", record.updatedAt, record.deployedAt, "deployedAt")
        if record.routingEnabled and record.activeCheckpointId is None:
            raise SeedRefusedError(f"{at}: routingEnabled with no activeCheckpointId")
        if record.previousCheckpointId is not None and record.activeCheckpointId is None:
            raise SeedRefusedError(f"{at}: a previousCheckpointId with no activeCheckpointId")
    return records


def empty_rollout() -> SeedRollout:
    return SeedRollout([], None, [], None, [], None)


def signals_of(observation: SeedObservation) -> dict[str, Any]:
    """The completion's signals as `ShadowObservation.settle` takes them."""
    signals = observation.failureSignals or SeedSignals()
    return {
        "timed_out": signals.timedOut,
        "threw_exception": signals.threwException,
        "invalid_output": signals.invalidOutput,
        "profile_rejected": signals.profileRejected,
    }
