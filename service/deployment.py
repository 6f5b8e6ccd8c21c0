"""The commands and queries of SPEC §9: promotion, shadow observations, deployment slots.

`Deployments` is part of the application (`TrainingLedger.deployments`).
Each command is a body run by the unit of work (one append); the shadow
evidence the promotion gate reads is counted by the read model, caught up
with the log, at the ledger's time. Queries answer from the projections.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from trainledger.domain.errors import (
    CheckpointNotFoundError,
    NotFoundError,
    ObservationNotFoundError,
    ValidationError,
)
from trainledger.domain.ids import promotion_id, require_profile, slot_id
from trainledger.domain.shadow_stats import (
    DEFAULT_WINDOW,
    ShadowEvidence,
    shadow_statistics,
    timeout_cutoff,
)
from trainledger.domain.views import iso, promotion_of, slot_of
from trainledger.domain.vocabulary import PROMOTION_STATES, WORKER_PROFILES
from trainledger.projections.filters import Document
from trainledger.service import arguments
from trainledger.service.ports import Reservation
from trainledger.service.queries import require_zone
from trainledger.service.unit_of_work import Outcome, parse_id

if TYPE_CHECKING:
    from trainledger.domain.deployment import DeploymentSlot
    from trainledger.domain.model import Checkpoint, LedgerAggregate
    from trainledger.domain.promotion import Promotion
    from trainledger.service.ledger import TrainingLedger

Decided = tuple[list["LedgerAggregate"], Outcome, list[Reservation]]


def _as_of(value: object) -> datetime | None:
    moment = arguments.moment(value, "as_of")
    return None if moment is None else require_zone(moment)


def _window(hours: float) -> timedelta:
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 3650:
        raise ValidationError(f"the window must be a positive number of hours, not {hours!r}")
    return timedelta(hours=hours)


class Deployments:
    """Promotion, shadow and deployment commands and queries of one ledger."""

    def __init__(self, ledger: TrainingLedger) -> None:
        self.ledger = ledger

    # --- loading -----------------------------------------------------------

    def _checkpoint(self, checkpoint_id: str | UUID) -> Checkpoint:
        return self.ledger.unit_of_work.get_checkpoint(checkpoint_id)

    def _promotion(self, checkpoint: Checkpoint) -> Promotion | None:
        from trainledger.domain.promotion import Promotion

        return self.ledger.unit_of_work.find(promotion_id(checkpoint.id), Promotion)

    def _slot(self, profile: str) -> DeploymentSlot | None:
        from trainledger.domain.deployment import DeploymentSlot

        return self.ledger.unit_of_work.find(slot_id(profile), DeploymentSlot)

    def _slot_or_new(self, profile: str) -> DeploymentSlot:
        from trainledger.domain.deployment import DeploymentSlot

        return self._slot(profile) or DeploymentSlot.for_profile(profile)

    def _evidence(self, checkpoint: Checkpoint, since: datetime | None) -> ShadowEvidence:
        """Shadow evidence of the last 24 h (or since `since`), at the ledger's time."""
        now = self.ledger.now()
        start = now - DEFAULT_WINDOW if since is None else since
        counts = self.ledger.read_model.shadow_counts(
            str(checkpoint.id), start, now, timeout_cutoff(now)
        )
        if counts is None:  # the views lag the command's own reads: nothing seen yet
            return ShadowEvidence(0, 0.0, 0.0)
        return ShadowEvidence.of(shadow_statistics(counts, start, now, iso))

    def after_deployability_loss(
        self, checkpoint: Checkpoint, *, revoked: str | None, failed_eval: str | None
    ) -> list[LedgerAggregate]:
        """The promotion and slots a revoke or failing eval changes (same append)."""
        from trainledger.domain.deployment import after_deployability_loss

        if revoked is None and failed_eval is None:
            return []
        return after_deployability_loss(
            checkpoint,
            self._promotion(checkpoint),
            self._slots(),
            revoked=revoked,
            failed_eval=failed_eval,
        )

    def _slots(self) -> list[DeploymentSlot]:
        return [s for s in map(self._slot, WORKER_PROFILES) if s is not None]

    def _after_rejection(self, promotion: Promotion) -> list[LedgerAggregate]:
        """A rejected promotion stops routing to its checkpoint, in the same append."""
        from trainledger.domain.deployment import stop_routing_to

        if promotion.state != "rejected":
            return []
        decision = promotion.decisions[-1]
        because = f"promotion of checkpoint {promotion.checkpoint_id} rejected" + (
            f": {decision.reason}" if decision.reason else " by the gate"
        )
        return stop_routing_to(promotion.checkpoint_id, self._slots(), because)

    def _run(
        self, command: str, params: dict[str, Any], actor: str, key: str | None, body: Any
    ) -> Outcome:
        return self.ledger.unit_of_work.run(command, params, actor, key, body)

    # --- promotion (SPEC §9.1) ---------------------------------------------------

    def evaluate(
        self,
        checkpoint_id: str,
        *,
        min_delta: float = 0.05,
        margin: float = 0.05,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Run the promotion gate on the checkpoint's current eval; record the decision."""
        from trainledger.domain.promotion import GateThresholds, Promotion

        thresholds = GateThresholds(min_delta, margin)

        def body() -> Decided:
            checkpoint = self._checkpoint(checkpoint_id)
            promotion = self._promotion(checkpoint) or Promotion.for_checkpoint(checkpoint)
            promotion.evaluate(checkpoint, self._evidence(checkpoint, None), thresholds)
            return [promotion, *self._after_rejection(promotion)], promotion_of(promotion), []

        params = {"checkpointId": checkpoint_id, "minDelta": min_delta, "margin": margin}
        decided = self._run("promotion.evaluate", params, actor, idempotency_key, body)
        if decided["state"] == "rejected":
            self.stop_unroutable(decided["checkpointId"], actor=actor)
        return decided

    def advance(
        self,
        checkpoint_id: str,
        *,
        review: bool,
        note: str,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """candidate_only → shadow_ready → promotable (`Promotion.advance`)."""
        arguments.require(note, str, "a note")

        def body() -> Decided:
            checkpoint = self._checkpoint(checkpoint_id)
            promotion = self._require_promotion(checkpoint)
            since = promotion.shadow_started_at
            evidence = None if since is None else self._evidence(checkpoint, since)
            promotion.advance(
                checkpoint,
                reviewed=review,
                note=note,
                shadow_since_start=evidence,
                now=self.ledger.now(),
            )
            return [promotion], promotion_of(promotion), []

        params = {"checkpointId": checkpoint_id, "review": review, "note": note}
        return self._run("promotion.advance", params, actor, idempotency_key, body)

    def reject(
        self, checkpoint_id: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """→ rejected, with a reason; the history stays."""
        from trainledger.domain.promotion import Promotion

        arguments.require(reason, str, "a reason")

        def body() -> Decided:
            checkpoint = self._checkpoint(checkpoint_id)
            promotion = self._promotion(checkpoint) or Promotion.for_checkpoint(checkpoint)
            promotion.reject(reason)
            return [promotion, *self._after_rejection(promotion)], promotion_of(promotion), []

        params = {"checkpointId": checkpoint_id, "reason": reason}
        rejected = self._run("promotion.reject", params, actor, idempotency_key, body)
        self.stop_unroutable(rejected["checkpointId"], actor=actor)
        return rejected

    def _require_promotion(self, checkpoint: Checkpoint) -> Promotion:
        from trainledger.domain.errors import PromotionRefusedError

        promotion = self._promotion(checkpoint)
        if promotion is None:
            raise PromotionRefusedError(
                f"checkpoint {checkpoint.id} was never evaluated; run `promotion evaluate`"
            )
        return promotion

    # --- shadow observations (SPEC §9.2) -----------------------------------------

    def route(
        self,
        checkpoint_id: str,
        profile: str,
        *,
        task_fingerprint: str | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Open a pending observation of the checkpoint; routedAt is the ledger's clock."""
        from trainledger.domain.shadow import ShadowObservation

        profile = require_profile(profile)
        arguments.optional(task_fingerprint, str, "a task fingerprint")

        def body() -> Decided:
            checkpoint = self._checkpoint(checkpoint_id)
            observation = ShadowObservation.route(uuid4(), checkpoint, profile, task_fingerprint)
            return [observation], _observation_document(observation), []

        params = {"checkpointId": checkpoint_id, "profile": profile, "task": task_fingerprint}
        return self._run("shadow.route", params, actor, idempotency_key, body)

    def complete(
        self,
        observation_id: str,
        outcome: str,
        *,
        timed_out: bool = False,
        threw_exception: bool = False,
        invalid_output: bool = False,
        profile_rejected: bool = False,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Settle a pending observation, once."""
        from trainledger.domain.shadow import ShadowObservation

        arguments.require(outcome, str, "an outcome")
        flags = {
            "timed_out": timed_out,
            "threw_exception": threw_exception,
            "invalid_output": invalid_output,
            "profile_rejected": profile_rejected,
        }
        for name, value in flags.items():
            arguments.require(value, bool, name.replace("_", " "))
        uuid = parse_id(observation_id, ObservationNotFoundError)

        def body() -> Decided:
            observation = self.ledger.unit_of_work.get(
                uuid, ShadowObservation, ObservationNotFoundError
            )
            observation.settle(outcome, **flags)
            return [observation], _observation_document(observation), []

        params = {"observationId": observation_id, "outcome": outcome, **flags}
        return self._run("shadow.complete", params, actor, idempotency_key, body)

    def shadow_stats(
        self,
        checkpoint_id: str,
        *,
        window_hours: float = 24,
        as_of: datetime | None = None,
    ) -> Document:
        """The checkpoint's shadow statistics over the window ending now (or at `as_of`)."""
        window = _window(window_hours)
        end = _as_of(as_of) or self.ledger.now()
        start = end - window
        checkpoint = arguments.require(checkpoint_id, str, "a checkpoint id")
        counts = self.ledger.read_model.shadow_counts(checkpoint, start, end, timeout_cutoff(end))
        if counts is None:
            raise CheckpointNotFoundError(checkpoint_id)
        return {"checkpointId": str(UUID(checkpoint)), **shadow_statistics(counts, start, end, iso)}

    # --- deployment slots (SPEC §9.3) --------------------------------------------

    def bind(
        self,
        profile: str,
        checkpoint_id: str,
        *,
        note: str | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Bind a deployable, promoted checkpoint of a suiting family to the profile."""
        profile = require_profile(profile)
        arguments.optional(note, str, "a note")

        def body() -> Decided:
            checkpoint = self._checkpoint(checkpoint_id)
            slot = self._slot_or_new(profile)
            slot.bind(checkpoint, self._promotion(checkpoint), note)
            return [slot], slot_of(slot), []

        params = {"profile": profile, "checkpointId": checkpoint_id, "note": note}
        return self._run("deploy.bind", params, actor, idempotency_key, body)

    def rollback(
        self,
        profile: str,
        *,
        to: str | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Bind the checkpoint bound before the current one (or `to`, bound before)."""
        profile = require_profile(profile)
        target_id = None if to is None else parse_id(to, CheckpointNotFoundError)

        def body() -> Decided:
            slot = self._require_slot(profile)
            target = self._checkpoint(slot.rollback_target(target_id))
            slot.rollback(target)
            return [slot], slot_of(slot), []

        params = {"profile": profile, "to": to}
        return self._run("deploy.rollback", params, actor, idempotency_key, body)

    def enable_routing(
        self, profile: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Route work to the active checkpoint (still deployable, not rejected)."""
        profile = require_profile(profile)

        def body() -> Decided:
            slot = self._require_slot(profile)
            checkpoint = self._checkpoint(slot.require_active())
            slot.enable_routing(checkpoint, self._promotion(checkpoint))
            return [slot], slot_of(slot), []

        enabled = self._run(
            "deploy.enable-routing", {"profile": profile}, actor, idempotency_key, body
        )
        healed = self.stop_unroutable(enabled["activeCheckpointId"], actor=actor)
        return healed.get(profile, enabled)

    def stop_unroutable(self, checkpoint_id: str | UUID, *, actor: str) -> dict[str, Outcome]:
        """Disable routing to a checkpoint that is no longer deployable, or whose promotion
        is rejected; the slots' documents by profile (none when nothing routes to it).

        Called after every command that could leave such routing: the same append
        already covers a command that changes the checkpoint, but not two commands
        on different aggregates committed at once (routing enabled while a revoke
        reads the slot). Each checks after committing, so whichever commits second
        sees the other and disables the routing."""
        uuid = parse_id(checkpoint_id, CheckpointNotFoundError)
        healed: dict[str, Outcome] = {}
        for profile in WORKER_PROFILES:
            slot = self._slot(profile)
            if slot is None or not slot.routes_to(uuid):
                continue
            reason = self._unroutable(uuid)
            if reason is not None:
                healed[profile] = self._disable_if_unroutable(profile, uuid, actor)
        return healed

    def _unroutable(self, checkpoint_id: UUID) -> str | None:
        checkpoint = self._checkpoint(checkpoint_id)
        promotion = self._promotion(checkpoint)
        if not checkpoint.deployable:
            return f"checkpoint {checkpoint_id} is no longer deployable"
        if promotion is not None and promotion.state == "rejected":
            return f"the promotion of checkpoint {checkpoint_id} is rejected"
        return None

    def _disable_if_unroutable(self, profile: str, checkpoint_id: UUID, actor: str) -> Outcome:
        def body() -> Decided:
            slot = self._require_slot(profile)
            reason = self._unroutable(checkpoint_id)
            if reason is not None and slot.routes_to(checkpoint_id):
                slot.disable_routing(f"{reason} (changed while routing was enabled)")
                return [slot], slot_of(slot), []
            return [], slot_of(slot), []

        return self._run("deploy.stop-unroutable", {"profile": profile}, actor, None, body)

    def disable_routing(
        self, profile: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Stop routing work to the profile's active checkpoint, with a reason."""
        profile = require_profile(profile)
        arguments.require(reason, str, "a reason")

        def body() -> Decided:
            slot = self._require_slot(profile)
            slot.disable_routing(reason)
            return [slot], slot_of(slot), []

        params = {"profile": profile, "reason": reason}
        return self._run("deploy.disable-routing", params, actor, idempotency_key, body)

    def _require_slot(self, profile: str) -> DeploymentSlot:
        from trainledger.domain.errors import DeploymentRefusedError

        slot = self._slot(profile)
        if slot is None:
            raise DeploymentRefusedError(f"{profile} was never bound; `deploy bind` it first")
        return slot

    # --- queries -------------------------------------------------------------------

    def show_promotion(self, checkpoint_id: str, *, as_of: datetime | None = None) -> Document:
        moment = _as_of(as_of)
        found = self.ledger.read_model.promotion(
            arguments.require(checkpoint_id, str, "a checkpoint id"), moment
        )
        if found is None:
            if moment is not None:
                return {}
            raise CheckpointNotFoundError(checkpoint_id)
        return found

    def list_promotions(
        self, *, state: str | None = None, as_of: datetime | None = None
    ) -> Document:
        if state is not None and state not in PROMOTION_STATES:
            raise ValidationError(
                f"unknown promotion state {state!r} (allowed: {', '.join(PROMOTION_STATES)})"
            )
        moment = _as_of(as_of)
        return {"promotions": self.ledger.read_model.promotions(state, moment)}

    def show_slot(self, profile: str, *, as_of: datetime | None = None) -> Document:
        return self.ledger.read_model.slot(require_profile(profile), _as_of(as_of))

    def list_slots(self, *, as_of: datetime | None = None) -> Document:
        return {"slots": self.ledger.read_model.slots(_as_of(as_of))}

    def slot_history(self, profile: str) -> Outcome:
        """Every event of the profile's slot, oldest first (`history` of its aggregate)."""
        profile = require_profile(profile)
        try:
            return self.ledger.history(str(slot_id(profile)))
        except NotFoundError:
            return {"events": []}


def _observation_document(observation: Any) -> Outcome:
    return {
        "observationId": str(observation.id),
        "checkpointId": str(observation.checkpoint_id),
        "profile": observation.profile,
        "taskFingerprint": observation.task_fingerprint,
        "routedAt": iso(observation.created_on),
        "outcome": observation.outcome,
        "settled": observation.settled,
    }
