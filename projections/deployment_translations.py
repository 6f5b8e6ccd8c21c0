"""How the projection reads the stored events of SPEC §9's aggregates.

The same shape as `projections.projection`'s translations: a struct of the
stored fields each one reads, and the facts it records
(`projections.deployment_facts`). `TRANSLATIONS` there includes this table.
"""

from __future__ import annotations

from typing import Any

import orjson

from trainledger.domain.views import decision_document, iso
from trainledger.projections.deployment_facts import (
    ObservationRecord,
    PromotionFact,
    SettlementFact,
    SlotFact,
)
from trainledger.projections.facts import PageFacts, moment, timestamp_micros
from trainledger.projections.translation import EventRecord, StoredState, Translation, hex_id


class _DecisionState(StoredState, kw_only=True):
    actor: Any
    checkpoint_id: str
    eval_id: Any = None


class EvaluatedState(_DecisionState, kw_only=True):
    state: Any
    checks: Any
    evidence: Any


class AdvancedState(_DecisionState, kw_only=True):
    state: Any
    note: Any
    checks: Any = ()
    evidence: Any = None


class RejectedState(_DecisionState, kw_only=True):
    reason: Any


def _decision(
    event: EventRecord,
    state: _DecisionState,
    page: PageFacts,
    *,
    kind: str,
    promotion_state: str,
    checks: Any = (),
    evidence: Any = None,
    note: Any = None,
    reason: Any = None,
) -> None:
    decided_at = timestamp_micros(state.timestamp)
    document = decision_document(
        kind=kind,
        state=promotion_state,
        checks=list(checks),
        evidence=evidence,
        eval_id=state.eval_id,
        actor=state.actor,
        timestamp=iso(moment(decided_at)),
        note=note,
        reason=reason,
    )
    page.batch.promotions.append(
        PromotionFact(
            event.aggregate_id,
            hex_id(state.checkpoint_id),
            event.version,
            promotion_state,
            orjson.dumps(document).decode(),
            decided_at,
            event.position,
        )
    )


def _evaluated(event: EventRecord, state: EvaluatedState, page: PageFacts) -> None:
    _decision(
        event,
        state,
        page,
        kind="evaluate",
        promotion_state=state.state,
        checks=state.checks,
        evidence=state.evidence,
    )


def _advanced(event: EventRecord, state: AdvancedState, page: PageFacts) -> None:
    _decision(
        event,
        state,
        page,
        kind="advance",
        promotion_state=state.state,
        checks=state.checks,
        evidence=state.evidence,
        note=state.note,
    )


def _rejected(event: EventRecord, state: RejectedState, page: PageFacts) -> None:
    _decision(event, state, page, kind="reject", promotion_state="rejected", reason=state.reason)


class RoutedState(StoredState):
    actor: Any
    checkpoint_id: str
    profile: Any
    task_fingerprint: Any = None


class SettledState(StoredState):
    actor: Any
    outcome: Any
    timed_out: bool = False
    threw_exception: bool = False
    invalid_output: bool = False
    profile_rejected: bool = False


def _routed(event: EventRecord, state: RoutedState, page: PageFacts) -> None:
    page.batch.observations.append(
        ObservationRecord(
            event.aggregate_id,
            hex_id(state.checkpoint_id),
            state.profile,
            state.task_fingerprint,
            timestamp_micros(state.timestamp),
            state.actor,
            event.position,
        )
    )


def _settled(event: EventRecord, state: SettledState, page: PageFacts) -> None:
    page.batch.settlements.append(
        SettlementFact(
            timestamp_micros(state.timestamp),
            state.outcome,
            int(state.timed_out),
            int(state.threw_exception),
            int(state.invalid_output),
            int(state.profile_rejected),
            state.actor,
            event.aggregate_id,
        )
    )


class _SlotState(StoredState):
    actor: Any
    profile: Any
    checkpoint_id: str


class BoundState(_SlotState):
    previous_checkpoint_id: str | None = None
    kind: Any = "bind"
    note: Any = None


class RoutingEnabledState(_SlotState):
    pass


class RoutingDisabledState(_SlotState):
    reason: Any


def _slot_fact(
    event: EventRecord,
    state: _SlotState,
    kind: str,
    *,
    previous: str | None = None,
    note: Any = None,
    reason: Any = None,
) -> SlotFact:
    return SlotFact(
        event.aggregate_id,
        state.profile,
        event.version,
        kind,
        hex_id(state.checkpoint_id),
        None if previous is None else hex_id(previous),
        note,
        reason,
        state.actor,
        timestamp_micros(state.timestamp),
        event.position,
    )


def _bound(event: EventRecord, state: BoundState, page: PageFacts) -> None:
    page.batch.slot_events.append(
        _slot_fact(event, state, state.kind, previous=state.previous_checkpoint_id, note=state.note)
    )


def _routing_enabled(event: EventRecord, state: RoutingEnabledState, page: PageFacts) -> None:
    page.batch.slot_events.append(_slot_fact(event, state, "enable-routing"))


def _routing_disabled(event: EventRecord, state: RoutingDisabledState, page: PageFacts) -> None:
    page.batch.slot_events.append(_slot_fact(event, state, "disable-routing", reason=state.reason))


DEPLOYMENT_TRANSLATIONS: dict[str, Translation[Any]] = {
    "domain.promotion:Promotion.Evaluated": Translation(EvaluatedState, _evaluated),
    "domain.promotion:Promotion.Advanced": Translation(AdvancedState, _advanced),
    "domain.promotion:Promotion.Rejected": Translation(RejectedState, _rejected),
    "domain.shadow:ShadowObservation.Routed": Translation(RoutedState, _routed),
    "domain.shadow:ShadowObservation.Settled": Translation(SettledState, _settled),
    "domain.deployment:DeploymentSlot.Bound": Translation(BoundState, _bound),
    "domain.deployment:DeploymentSlot.RoutingEnabled": Translation(
        RoutingEnabledState, _routing_enabled
    ),
    "domain.deployment:DeploymentSlot.RoutingDisabled": Translation(
        RoutingDisabledState, _routing_disabled
    ),
}
"""Every event of SPEC §9's aggregates the projection reads (their `Opened` events
record no fact: a promotion or slot exists for the views from its first decision)."""
