"""Checking a history event by event against the rules, before each event is applied.

`import` replays a whole log it did not write: a file whose hash chains were
recomputed after an edit holds together as data, so only the rules can refuse
it. `check_replay` asks the aggregates' own guards (`domain.model`, the one
home of each rule) whether each event could have been triggered on the state
before it. Loading stored history never calls it: what was stored was
checked when it was recorded, and `apply` only changes state.

One rule is left out: a checkpoint without a recorded artifact digest may have
been made deployable. 0.1.0 allowed it, its events say nothing of the rules
in force when they were recorded, and a store of 0.1.0 must stay importable.
The checkpoint's `Registered` event shows the missing digest to every reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from trainledger.domain.access import AccessToken, TokenRegistry
from trainledger.domain.deployment import DeploymentSlot
from trainledger.domain.errors import InvalidTransitionError, NotFoundError
from trainledger.domain.ids import promotion_id
from trainledger.domain.model import Checkpoint, DomainEvent, TrainingRun
from trainledger.domain.promotion import Promotion
from trainledger.domain.shadow import ShadowObservation


def check_replay(aggregates: Mapping[UUID, Any], event: DomainEvent) -> None:
    """Raise the rule's `LedgerError` unless `event` may follow the aggregates as they are.

    `aggregates` holds every aggregate replayed so far, by id, in the state
    before `event`; events are checked in log order.
    """
    aggregate = aggregates.get(event.originator_id)
    if isinstance(event, Checkpoint.Registered):
        run = _run(aggregates, event.train_run_id)
        Checkpoint.require_registrable(run, family=event.family, artifact_path=event.artifact_path)
    elif isinstance(aggregate, TrainingRun):
        _check_run_event(aggregate, event, aggregates)
    elif isinstance(aggregate, Checkpoint):
        _check_checkpoint_event(aggregate, event, aggregates)
    elif isinstance(event, ShadowObservation.Routed):
        ShadowObservation.require_routable(
            _checkpoint(aggregates, event.checkpoint_id), event.profile
        )
    elif isinstance(aggregate, ShadowObservation) and isinstance(event, ShadowObservation.Settled):
        aggregate.require_settleable(event.outcome)
    elif isinstance(aggregate, Promotion):
        _check_promotion_event(aggregate, event, aggregates)
    elif isinstance(aggregate, DeploymentSlot):
        _check_slot_event(aggregate, event, aggregates)
    else:
        _check_access_event(aggregate, event, aggregates)


def _check_promotion_event(
    promotion: Promotion, event: Any, aggregates: Mapping[UUID, Any]
) -> None:
    """What a stored decision must hold to: its checks agree with its state, and each step
    goes where `Promotion` lets it (the shadow evidence it read is not in the log)."""
    if getattr(event, "checkpoint_id", promotion.checkpoint_id) != promotion.checkpoint_id:
        raise InvalidTransitionError(
            f"promotion {promotion.id} decides on checkpoint {event.checkpoint_id}, "
            f"not its own {promotion.checkpoint_id}"
        )
    if isinstance(event, Promotion.Evaluated):
        failed = not all(check.passed for check in event.checks)
        if failed != (event.state == "rejected"):
            raise InvalidTransitionError(
                f"promotion {promotion.id}: a decision of state {event.state} with "
                f"{'failed' if failed else 'passed'} checks"
            )
    elif isinstance(event, Promotion.Advanced):
        step = {"candidate_only": "shadow_ready", "shadow_ready": "promotable"}
        if step.get(promotion.state or "") != event.state:
            raise InvalidTransitionError(
                f"promotion {promotion.id} advances from {promotion.state} to {event.state}"
            )
        if event.state == "promotable" and not all(check.passed for check in event.checks):
            raise InvalidTransitionError(f"promotion {promotion.id} advanced on failed checks")
    elif isinstance(event, Promotion.Rejected) and promotion.state == "rejected":
        raise InvalidTransitionError(f"promotion {promotion.id} is rejected twice")


def _check_slot_event(slot: DeploymentSlot, event: Any, aggregates: Mapping[UUID, Any]) -> None:
    if getattr(event, "profile", slot.profile) != slot.profile:
        raise InvalidTransitionError(f"slot {slot.id} of {slot.profile} names {event.profile}")
    if isinstance(event, DeploymentSlot.Bound):
        checkpoint = _checkpoint(aggregates, event.checkpoint_id)
        if event.previous_checkpoint_id != slot.active_checkpoint_id:
            raise InvalidTransitionError(
                f"slot {slot.profile} records {event.previous_checkpoint_id} as replaced, "
                f"but {slot.active_checkpoint_id} was active"
            )
        if event.kind == "bind":
            promotion = aggregates.get(promotion_id(checkpoint.id))
            slot.require_bindable(
                checkpoint, promotion if isinstance(promotion, Promotion) else None
            )
        else:
            slot.rollback_target(event.checkpoint_id)
            if not checkpoint.deployable:
                raise InvalidTransitionError(
                    f"slot {slot.profile} rolls back to {checkpoint.id}, which is not deployable"
                )
    elif isinstance(event, DeploymentSlot.RoutingEnabled):
        checkpoint = _checkpoint(aggregates, slot.require_active())
        promotion = aggregates.get(promotion_id(checkpoint.id))
        slot.require_routable(checkpoint, promotion if isinstance(promotion, Promotion) else None)
    elif isinstance(event, DeploymentSlot.RoutingDisabled) and not slot.routing_enabled:
        raise InvalidTransitionError(f"slot {slot.profile} disables routing that is off")


def _checkpoint(aggregates: Mapping[UUID, Any], checkpoint_id: UUID) -> Checkpoint:
    checkpoint = aggregates.get(checkpoint_id)
    if not isinstance(checkpoint, Checkpoint):
        raise NotFoundError(f"checkpoint {checkpoint_id} is not registered before it is named")
    return checkpoint


def _check_run_event(run: TrainingRun, event: Any, aggregates: Mapping[UUID, Any]) -> None:
    if isinstance(event, TrainingRun.Started):
        run.require_transition("running")
    elif isinstance(event, TrainingRun.Completed):
        run.require_transition("completed")
    elif isinstance(event, TrainingRun.Failed):
        run.require_can_fail(event.reason)
    elif isinstance(event, TrainingRun.CheckpointLinked):
        checkpoint = aggregates.get(event.checkpoint_id)
        if not isinstance(checkpoint, Checkpoint):
            raise NotFoundError(
                f"run {run.id} links checkpoint {event.checkpoint_id}, which is not registered"
            )
        run.require_can_link(checkpoint)


def _check_checkpoint_event(
    checkpoint: Checkpoint, event: Any, aggregates: Mapping[UUID, Any]
) -> None:
    if isinstance(event, Checkpoint.EvalAttached):
        checkpoint.require_accepts_eval(event.eval)
    elif isinstance(event, Checkpoint.MarkedDeployable):
        run = _run(aggregates, checkpoint.train_run_id)
        current = checkpoint.require_deployable(run, require_digest=False)
        if event.eval_id != current.evalId:
            raise InvalidTransitionError(
                f"checkpoint {checkpoint.id} is marked deployable on eval {event.eval_id}, "
                f"not on its current eval {current.evalId}"
            )
    elif isinstance(event, Checkpoint.DeployabilityRevoked):
        checkpoint.require_revocable(event.reason)


def _run(aggregates: Mapping[UUID, Any], run_id: UUID) -> TrainingRun:
    run = aggregates.get(run_id)
    if not isinstance(run, TrainingRun):
        raise NotFoundError(f"training run {run_id} is not registered before its checkpoint")
    return run


def _check_access_event(aggregate: Any, event: Any, aggregates: Mapping[UUID, Any]) -> None:
    """Tokens (`domain.access`): a valid issue, one revocation, each name taken once."""
    if isinstance(event, AccessToken.Issued):
        AccessToken.require_issuable(event.name, event.role, event.secret_hash)
    elif isinstance(event, AccessToken.Revoked) and isinstance(aggregate, AccessToken):
        aggregate.require_revocable()
    elif isinstance(event, TokenRegistry.Opened) and event.originator_id != TokenRegistry.ID:
        raise InvalidTransitionError(f"a token registry must have id {TokenRegistry.ID}")
    elif isinstance(event, TokenRegistry.NameTaken) and isinstance(aggregate, TokenRegistry):
        aggregate.require_free(event.name)
        token = aggregates.get(event.token_id)
        if not isinstance(token, AccessToken) or token.name != event.name:
            raise NotFoundError(
                f"token name {event.name!r} is taken for {event.token_id}, "
                "which is not a token of that name issued before"
            )
