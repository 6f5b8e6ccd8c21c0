"""SPEC §9 over HTTP: promotions, shadow observations, deployment slots.

Promotion and deployment writes need the `deployer` role; routing and
completing shadow observations are a `writer`'s (SPEC §10). Answers are the
CLI's `--json` documents; queries take `?asOf=`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from trainledger.adapters.http.answers import answer
from trainledger.adapters.http.auth import Caller, LedgerRoute
from trainledger.adapters.http.commands import (
    IdempotencyKey,
    ReasonBody,
    RequestBody,
    full_checkpoint_id,
)
from trainledger.adapters.http.queries import AsOf, as_of_moment
from trainledger.service.ledger import TrainingLedger

router = APIRouter(prefix="/v1", route_class=LedgerRoute, tags=["deployment"])

DEPLOYER = {"x-role": "deployer"}


class EvaluateBody(RequestBody):
    min_delta: float = 0.05
    margin: float = 0.05


class AdvanceBody(RequestBody):
    review: bool = Field(description="The checkpoint was reviewed (must be true).")
    note: str


class RouteBody(RequestBody):
    profile: str
    task_fingerprint: str | None = None


class CompleteBody(RequestBody):
    outcome: str = Field(description="accepted, rejected or escalated")
    timed_out: bool = False
    threw_exception: bool = False
    invalid_output: bool = False
    profile_rejected: bool = False


class BindBody(RequestBody):
    checkpoint_id: str
    note: str | None = None


class RollbackBody(RequestBody):
    to: str | None = Field(None, description="A checkpoint bound to this profile before.")


# --- promotions ------------------------------------------------------------------


@router.get("/promotions", summary="Every checkpoint's promotion, latest decision first")
async def list_promotions(request: Request, as_of: AsOf = None, state: str | None = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request, lambda ledger: ledger.deployments.list_promotions(state=state, as_of=moment)
    )


@router.get("/promotions/{checkpoint_id}", summary="A checkpoint's promotion and its decisions")
async def show_promotion(request: Request, checkpoint_id: str, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request,
        lambda ledger: ledger.deployments.show_promotion(
            full_checkpoint_id(ledger, checkpoint_id), as_of=moment
        ),
    )


@router.post(
    "/promotions/{checkpoint_id}/evaluate",
    summary="Run the promotion gate on the checkpoint's current eval",
    openapi_extra=DEPLOYER,
)
async def evaluate(
    request: Request,
    checkpoint_id: str,
    caller: Caller,
    body: EvaluateBody | None = None,
    key: IdempotencyKey = None,
) -> Any:
    settings = body or EvaluateBody()
    return await answer(
        request,
        lambda ledger: ledger.deployments.evaluate(
            full_checkpoint_id(ledger, checkpoint_id),
            min_delta=settings.min_delta,
            margin=settings.margin,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post(
    "/promotions/{checkpoint_id}/advance",
    summary="candidate_only → shadow_ready → promotable",
    openapi_extra=DEPLOYER,
)
async def advance(
    request: Request,
    checkpoint_id: str,
    body: AdvanceBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.advance(
            full_checkpoint_id(ledger, checkpoint_id),
            review=body.review,
            note=body.note,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post(
    "/promotions/{checkpoint_id}/reject",
    summary="Reject the checkpoint's promotion, with a reason",
    openapi_extra=DEPLOYER,
)
async def reject(
    request: Request,
    checkpoint_id: str,
    body: ReasonBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.reject(
            full_checkpoint_id(ledger, checkpoint_id),
            body.reason,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


# --- shadow observations ---------------------------------------------------------


@router.post(
    "/shadow/{checkpoint_id}/route", status_code=201, summary="Record a pending observation"
)
async def route(
    request: Request,
    checkpoint_id: str,
    body: RouteBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.route(
            full_checkpoint_id(ledger, checkpoint_id),
            body.profile,
            task_fingerprint=body.task_fingerprint,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post(
    "/shadow/observations/{observation_id}/complete", summary="Settle an observation, once"
)
async def complete(
    request: Request,
    observation_id: str,
    body: CompleteBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.complete(
            observation_id,
            body.outcome,
            timed_out=body.timed_out,
            threw_exception=body.threw_exception,
            invalid_output=body.invalid_output,
            profile_rejected=body.profile_rejected,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.get("/shadow/{checkpoint_id}/stats", summary="Shadow statistics over a window")
async def shadow_stats(
    request: Request,
    checkpoint_id: str,
    as_of: AsOf = None,
    window_hours: Annotated[float, Query(alias="windowHours", gt=0)] = 24.0,
) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request,
        lambda ledger: ledger.deployments.shadow_stats(
            full_checkpoint_id(ledger, checkpoint_id), window_hours=window_hours, as_of=moment
        ),
    )


# --- deployment slots --------------------------------------------------------------


@router.get("/deployments", summary="Every profile's slot")
async def list_slots(request: Request, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(request, lambda ledger: ledger.deployments.list_slots(as_of=moment))


@router.get("/deployments/{profile}", summary="A profile's slot: active checkpoint, bindings")
async def show_slot(request: Request, profile: str, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(request, lambda ledger: ledger.deployments.show_slot(profile, as_of=moment))


@router.post("/deployments/{profile}/bind", summary="Bind a checkpoint", openapi_extra=DEPLOYER)
async def bind(
    request: Request, profile: str, body: BindBody, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.bind(
            profile,
            full_checkpoint_id(ledger, body.checkpoint_id),
            note=body.note,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post("/deployments/{profile}/enable-routing", summary="Route work", openapi_extra=DEPLOYER)
async def enable_routing(
    request: Request, profile: str, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.enable_routing(
            profile, actor=caller.name, idempotency_key=key
        ),
    )


@router.post(
    "/deployments/{profile}/disable-routing", summary="Stop routing", openapi_extra=DEPLOYER
)
async def disable_routing(
    request: Request, profile: str, body: ReasonBody, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.deployments.disable_routing(
            profile, body.reason, actor=caller.name, idempotency_key=key
        ),
    )


@router.post(
    "/deployments/{profile}/rollback",
    summary="Bind the checkpoint bound before (or `to`)",
    openapi_extra=DEPLOYER,
)
async def rollback(
    request: Request,
    profile: str,
    caller: Caller,
    body: RollbackBody | None = None,
    key: IdempotencyKey = None,
) -> Any:
    target = None if body is None else body.to

    def work(ledger: TrainingLedger) -> Any:
        to = None if target is None else full_checkpoint_id(ledger, target)
        return ledger.deployments.rollback(profile, to=to, actor=caller.name, idempotency_key=key)

    return await answer(request, work)
