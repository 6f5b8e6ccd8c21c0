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
from trainledger.domain.errors import InvalidTransitionError, NotFoundError
from trainledger.domain.model import Checkpoint, DomainEvent, TrainingRun


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
    else:
        _check_access_event(aggregate, event, aggregates)


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
