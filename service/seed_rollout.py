"""`import-seed` of the registries of SPEC §9: shadow observations, promotions, deployments.

Each seed record is planned as steps at its times (`SeedRecording.plan`) and
goes through the aggregates' own commands, so the ledger's rules hold:

- an observation is routed at its routedAt and settled at its completedAt;
- a promotion record (one per checkpoint, overwritten in place) becomes the
  decisions its times show: the gate evaluated at its createdAt (on the
  checkpoint's current eval then, and the shadow evidence then), advanced to
  shadow_ready at its shadowStartedAt and to promotable at its promotableAt,
  rejected at its stateChangedAt; what the single record cannot show (the
  decisions in between, the seed's baselines, a demotion) is a gap;
- a deployment record (one per profile) becomes the bindings it shows: its
  previous checkpoint bound at deployedAt and its active one at updatedAt
  (or the active one at deployedAt, when it has no previous), then routing
  as the record has it, at updatedAt.

A command the ledger's rules refuse (a family that does not suit the
profile by token, a promotion never shadow-ready, too little shadow
evidence) records nothing of that record and is listed as a gap.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple

from trainledger.domain.deployment import DeploymentSlot
from trainledger.domain.errors import LedgerError
from trainledger.domain.ids import promotion_id, slot_id
from trainledger.domain.model import Checkpoint
from trainledger.domain.promotion import (
    ARBITER_BASELINE,
    EXECUTABILITY_BASELINE,
    QUALITY_BASELINE,
    GateThresholds,
    Promotion,
)
from trainledger.domain.seed_rollout import (
    SeedDeployment,
    SeedObservation,
    SeedPromotion,
    SeedRollout,
    signals_of,
)
from trainledger.domain.seed_vocabulary import SEED_ACTOR, SeedRefusedError, ledger_id
from trainledger.domain.shadow import ShadowObservation
from trainledger.domain.shadow_stats import (
    DEFAULT_WINDOW,
    ShadowCounts,
    ShadowEvidence,
    count_observations,
    shadow_statistics,
    timeout_cutoff,
)
from trainledger.domain.views import iso
from trainledger.service.seed_recording import Rank, SeedRecording

NOT_RECORDED = "the ledger's rule refuses it, not recorded"


def plan_rollout(recording: SeedRecording, rollout: SeedRollout) -> None:
    """Plan every record of the §9 registries on the recording's timeline."""
    for index, observation in enumerate(rollout.observations):
        ObservationImport(recording, rollout, index, observation).plan()
    for index, promotion in enumerate(rollout.promotions):
        PromotionImport(recording, rollout, index, promotion).plan()
    for index, deployment in enumerate(rollout.deployments):
        DeploymentImport(recording, rollout, index, deployment).plan()


def _checkpoint(recording: SeedRecording, seed_id: str, where: str) -> Checkpoint | None:
    return recording.find(ledger_id("checkpoint", seed_id), Checkpoint, where)


class Observed(NamedTuple):
    """An observation this import records, as a shadow count reads it."""

    observation_id: object
    routed_at: datetime
    settled_at: datetime | None
    outcome: str | None
    timed_out: bool = False
    threw_exception: bool = False
    invalid_output: bool = False
    profile_rejected: bool = False


def shadow_evidence(
    recording: SeedRecording, checkpoint: Checkpoint, start: datetime, end: datetime
) -> ShadowEvidence:
    """The checkpoint's shadow evidence in [start, end]: the observations the ledger holds
    (its views), with those this import records (not in the views yet)."""
    cutoff = timeout_cutoff(end)
    held = recording.ledger.read_model.shadow_counts(str(checkpoint.id), start, end, cutoff)
    mine = count_observations(recording.observations.get(checkpoint.id, []), start, end, cutoff)
    counts = mine if held is None else ShadowCounts(*map(sum, zip(held, mine, strict=True)))
    return ShadowEvidence.of(shadow_statistics(counts, start, end, iso))


class ObservationImport:
    """One shadow observation: routed at its routedAt, settled at its completedAt."""

    def __init__(
        self, recording: SeedRecording, rollout: SeedRollout, index: int, seed: SeedObservation
    ) -> None:
        self.recording = recording
        self.seed = seed
        self.where = (
            f"{rollout.shadow_label}: observations[{index}] (observationId {seed.observationId})"
        )
        self.observation: ShadowObservation | None = None

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("observation", self.seed.observationId, field_name, gap)

    def plan(self) -> None:
        seed = self.seed
        self.recording.plan(seed.routedAt, Rank.OBSERVATION_ROUTED, self.route)
        if seed.completedAt is not None:
            self.recording.plan(seed.completedAt, Rank.OBSERVATION_SETTLED, self.settle)

    def route(self) -> None:
        seed, recording = self.seed, self.recording
        observation_id = ledger_id("observation", seed.observationId)
        held = recording.find(observation_id, ShadowObservation, self.where)
        checkpoint = _checkpoint(recording, seed.checkpointId, self.where)
        if held is not None:
            if checkpoint is None or held.checkpoint_id != checkpoint.id:
                raise SeedRefusedError(
                    f"{self.where}: the ledger holds observation {observation_id} of "
                    f"checkpoint {held.checkpoint_id}, not this one"
                )
            recording.count("observations", present=True)
            self.observation = held
            return
        if checkpoint is None:
            self.gap("checkpointId", "its checkpoint is not imported; not imported")
            return
        try:
            with recording.clocked(seed.routedAt):
                observation = ShadowObservation.route(
                    observation_id, checkpoint, seed.workerProfile, seed.taskFingerprint
                )
        except LedgerError as error:
            self.gap("workerProfile", f"{NOT_RECORDED}: {error.message}")
            return
        recording.emit(observation)
        recording.count("observations")
        self.observation = observation
        self.noted()
        if seed.usedInGate is not None:
            self.gap("usedInGate", "not recorded: each gate decision records the evidence it read")

    def settle(self) -> None:
        seed, observation, recording = self.seed, self.observation, self.recording
        if observation is None:
            return
        assert seed.outcome is not None  # checked with the file: it goes with completedAt
        assert seed.completedAt is not None
        if observation.settled:
            if observation.outcome != seed.outcome:
                raise SeedRefusedError(
                    f"{self.where}: outcome {seed.outcome}, but the ledger holds it settled "
                    f"{observation.outcome}"
                )
            recording.count("observationSettlements", present=True)
            return
        with recording.at(seed.completedAt, self.where):
            observation.settle(seed.outcome, **signals_of(seed))
        recording.emit(observation)
        recording.count("observationSettlements")
        self.noted()
        if seed.failureSignals is not None and seed.failureSignals.extra:
            extra = ", ".join(sorted(seed.failureSignals.extra))
            self.gap(
                "failureSignals.extra", f"not recorded (the ledger has no such signal): {extra}"
            )

    def noted(self) -> None:
        """Keep the observation as it now stands where this import's gate counts evidence."""
        seed, observation = self.seed, self.observation
        assert observation is not None
        settled = observation.settled
        signals = signals_of(seed) if settled else {}
        observed = Observed(
            observation.id,
            seed.routedAt,
            seed.completedAt if settled else None,
            observation.outcome,
            **signals,
        )
        listed = self.recording.observations.setdefault(observation.checkpoint_id, [])
        listed[:] = [o for o in listed if o.observation_id != observation.id] + [observed]


class PromotionImport:
    """One promotion record: the decisions its times show."""

    def __init__(
        self, recording: SeedRecording, rollout: SeedRollout, index: int, seed: SeedPromotion
    ) -> None:
        self.recording = recording
        self.seed = seed
        self.where = (
            f"{rollout.promotion_label}: promotions[{index}] (promotionId {seed.promotionId})"
        )
        self.note = seed.reviewNote or "reviewed in the seed (its record keeps no note)"

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("promotion", self.seed.promotionId, field_name, gap)

    def plan(self) -> None:
        seed, plan = self.seed, self.recording.plan
        plan(seed.createdAt, Rank.PROMOTION, self.evaluated)
        if seed.shadowStartedAt is not None:
            plan(seed.shadowStartedAt, Rank.PROMOTION, self.shadow_ready)
        if seed.promotableAt is not None:
            plan(seed.promotableAt, Rank.PROMOTION, self.promotable)
        plan(seed.stateChangedAt, Rank.PROMOTION, self.last_state)

    def found(self) -> tuple[Checkpoint, Promotion | None] | None:
        checkpoint = _checkpoint(self.recording, self.seed.checkpointId, self.where)
        if checkpoint is None:
            self.gap("checkpointId", "its checkpoint is not imported; not imported")
            return None
        promotion = self.recording.find(promotion_id(checkpoint.id), Promotion, self.where)
        return checkpoint, promotion

    def decided(self) -> tuple[Checkpoint, Promotion] | None:
        """The checkpoint and its promotion, once a decision on it is recorded, while only
        the seed's import decided on it (the ledger's operators govern it otherwise)."""
        found = self.found()
        if found is None or found[1] is None or self.decided_by_others(found[1]):
            return None
        return found[0], found[1]

    def decided_by_others(self, promotion: Promotion) -> bool:
        others = sorted({d.actor for d in promotion.decisions if d.actor != SEED_ACTOR})
        if others:
            self.gap(
                "state",
                f"the ledger's promotion was decided on by {', '.join(others)}; the seed's "
                "record is not applied to it",
            )
        return bool(others)

    def evaluated(self) -> None:
        seed, recording = self.seed, self.recording
        found = self.found()
        if found is None:
            return
        checkpoint, promotion = found
        if promotion is not None and promotion.decisions:
            if not self.decided_by_others(promotion):
                recording.count("promotionDecisions", present=True)
            return
        start = seed.createdAt - DEFAULT_WINDOW
        evidence = shadow_evidence(recording, checkpoint, start, seed.createdAt)
        try:
            with recording.clocked(seed.createdAt):
                promotion = promotion or Promotion.for_checkpoint(checkpoint)
                promotion.evaluate(checkpoint, evidence, GateThresholds())
        except LedgerError as error:
            self.gap("createdAt", f"the gate's decision: {NOT_RECORDED}: {error.message}")
            return
        recording.emit(promotion)
        recording.count("promotionDecisions")
        self.gap(
            "decisions",
            "the seed overwrites one record per checkpoint: decisions other than at its "
            "createdAt, shadowStartedAt, promotableAt and stateChangedAt are lost",
        )
        self.gap("thresholds", "the seed keeps no minDelta or margin; the gate's defaults apply")
        baseline = seed.baselineMetrics
        ledger_baselines = (ARBITER_BASELINE, EXECUTABILITY_BASELINE, QUALITY_BASELINE)
        if baseline is not None and ledger_baselines != (
            baseline.arbiterRejectRate,
            baseline.executabilityRejectRate,
            baseline.reviewedSubsetQuality,
        ):
            self.gap("baselineMetrics", "the seed's gate had other baselines; the ledger's apply")

    def shadow_ready(self) -> None:
        seed, recording = self.seed, self.recording
        assert seed.shadowStartedAt is not None
        decided = self.decided()
        if decided is None:
            return
        checkpoint, promotion = decided
        if promotion.shadow_started_at is not None:
            recording.count("promotionDecisions", present=True)
            return
        self.advance(checkpoint, promotion, seed.shadowStartedAt, "shadowStartedAt", None)

    def promotable(self) -> None:
        seed, recording = self.seed, self.recording
        assert seed.promotableAt is not None
        decided = self.decided()
        if decided is None:
            return
        checkpoint, promotion = decided
        if any(d.state == "promotable" for d in promotion.decisions):
            recording.count("promotionDecisions", present=True)
            return
        since = promotion.shadow_started_at
        evidence = (
            None
            if since is None
            else shadow_evidence(recording, checkpoint, since, seed.promotableAt)
        )
        self.advance(checkpoint, promotion, seed.promotableAt, "promotableAt", evidence)

    def advance(
        self,
        checkpoint: Checkpoint,
        promotion: Promotion,
        moment: datetime,
        field_name: str,
        evidence: ShadowEvidence | None,
    ) -> None:
        recording = self.recording
        try:
            with recording.clocked(moment):
                promotion.advance(
                    checkpoint,
                    reviewed=True,
                    note=self.note,
                    shadow_since_start=evidence,
                    now=moment,
                )
        except LedgerError as error:
            self.gap(field_name, f"the advance: {NOT_RECORDED}: {error.message}")
            return
        recording.emit(promotion)
        recording.count("promotionDecisions")

    def last_state(self) -> None:
        seed, recording = self.seed, self.recording
        decided = self.decided()
        if decided is None:
            return
        _, promotion = decided
        if seed.state == "rejected":
            if promotion.state == "rejected":
                recording.count("promotionDecisions", present=True)
                return
            reason = seed.reviewNote or "rejected in the seed (its record keeps no reason)"
            with recording.at(seed.stateChangedAt, self.where):
                promotion.reject(reason)
            recording.emit(promotion)
            recording.count("promotionDecisions")
            return
        order = Promotion.ORDER
        if promotion.state is not None and order[seed.state] < order.get(promotion.state, 0):
            self.gap(
                "state",
                f"the seed has it {seed.state} since its stateChangedAt, the ledger "
                f"{promotion.state}: the ledger never demotes (SPEC §9.1)",
            )


class DeploymentImport:
    """One deployment record: the bindings and routing it shows."""

    def __init__(
        self, recording: SeedRecording, rollout: SeedRollout, index: int, seed: SeedDeployment
    ) -> None:
        self.recording = recording
        self.seed = seed
        self.where = (
            f"{rollout.deployment_label}: deployments[{index}] (deploymentId {seed.deploymentId})"
        )

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("deployment", self.seed.deploymentId, field_name, gap)

    def plan(self) -> None:
        seed, plan = self.seed, self.recording.plan
        active, previous = seed.activeCheckpointId, seed.previousCheckpointId
        if active is None:
            self.gap("activeCheckpointId", "none: nothing bound, nothing recorded")
            return
        if previous is not None:
            earlier = functools.partial(self.bind, previous, seed.deployedAt, active=False)
            plan(seed.deployedAt, Rank.BINDING, earlier)
        moment = seed.deployedAt if previous is None else seed.updatedAt
        plan(moment, Rank.BINDING, functools.partial(self.bind, active, moment, active=True))
        plan(seed.updatedAt, Rank.ROUTING, self.routing)

    def slot(self) -> DeploymentSlot | None:
        return self.recording.find(slot_id(self.seed.workerProfile), DeploymentSlot, self.where)

    def bind(self, seed_checkpoint: str, moment: datetime, *, active: bool) -> None:
        seed, recording = self.seed, self.recording
        checkpoint = _checkpoint(recording, seed_checkpoint, self.where)
        if checkpoint is None:
            self.gap("checkpointId", f"{seed_checkpoint} is not imported; not bound")
            return
        slot = self.slot()
        if slot is not None:
            ever = {b.checkpoint_id for b in slot.bindings}
            now = slot.active_checkpoint_id == checkpoint.id
            if now if active else checkpoint.id in ever:
                recording.count("bindings", present=True)
                return
            current = slot.current_binding
            if current is not None and current.actor != SEED_ACTOR:
                self.gap(
                    "activeCheckpointId",
                    f"the ledger's slot was bound since by {current.actor}; not applied",
                )
                return
        promotion = recording.find(promotion_id(checkpoint.id), Promotion, self.where)
        try:
            with recording.clocked(moment):
                slot = slot or DeploymentSlot.for_profile(seed.workerProfile)
                if checkpoint.id in slot.stack[:-1]:
                    slot.rollback(checkpoint)
                else:
                    slot.bind(checkpoint, promotion, seed.note if active else None)
        except LedgerError as error:
            self.gap("checkpointId", f"binding {seed_checkpoint}: {NOT_RECORDED}: {error.message}")
            return
        recording.emit(slot)
        recording.count("bindings")
        self.gap(
            "bindings",
            "the seed keeps one step of history: earlier bindings, and whether its last change "
            "was a bind or a rollback, are lost; its previous checkpoint is recorded bound at "
            "deployedAt, its active one at updatedAt",
        )

    def routing(self) -> None:
        seed, recording = self.seed, self.recording
        slot = self.slot()
        if slot is None or slot.active_checkpoint_id is None:
            return
        if slot.routing_enabled == seed.routingEnabled:
            recording.count("routingChanges", present=True)
            return
        current = slot.current_binding
        if current is None or current.actor != SEED_ACTOR or self.routed_by_others(slot):
            return  # the ledger's operators govern the slot now
        checkpoint = recording.find(slot.active_checkpoint_id, Checkpoint, self.where)
        assert checkpoint is not None
        promotion = recording.find(promotion_id(checkpoint.id), Promotion, self.where)
        try:
            with recording.clocked(seed.updatedAt):
                if seed.routingEnabled:
                    slot.enable_routing(checkpoint, promotion)
                else:
                    slot.disable_routing("routing disabled in the seed (it records no reason)")
        except LedgerError as error:
            self.gap("routingEnabled", f"{NOT_RECORDED}: {error.message}")
            return
        recording.emit(slot)
        recording.count("routingChanges")
        self.gap("routingEnabled", "the seed records no time of the change; recorded at updatedAt")

    def routed_by_others(self, slot: DeploymentSlot) -> bool:
        """Whether someone but the seed's import changed the slot's routing since its binding."""
        events: list[Any] = list(self.recording.ledger.events.get(slot.id))
        since = max((i for i, e in enumerate(events) if type(e).__name__ == "Bound"), default=-1)
        return any(
            type(e).__name__.startswith("Routing") and e.actor != SEED_ACTOR
            for e in events[since + 1 :]
        )
