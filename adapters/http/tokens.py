"""The tokens over HTTP (role admin): list, issue, revoke (SPEC §10)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from trainledger.adapters.http.auth import Caller, LedgerRoute, service_of
from trainledger.adapters.http.commands import IdempotencyKey, RequestBody

router = APIRouter(prefix="/v1", route_class=LedgerRoute, tags=["tokens"])
ADMIN = {"x-role": "admin"}


class TokenBody(RequestBody):
    name: str
    role: str


class RevokeBody(RequestBody):
    reason: str | None = None


@router.get(
    "/tokens", summary="Every token: names, roles, dates (never a token)", openapi_extra=ADMIN
)
async def list_tokens(request: Request) -> Any:
    return await service_of(request).pool.call(lambda ledger: ledger.access.list_tokens())


@router.post("/tokens", status_code=201, summary="Issue a token, shown once", openapi_extra=ADMIN)
async def create_token(
    request: Request, body: TokenBody, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await service_of(request).pool.call(
        lambda ledger: ledger.access.create_token(
            body.name, body.role, actor=caller.name, idempotency_key=key
        )
    )


@router.post("/tokens/{name}/revoke", summary="Revoke a token", openapi_extra=ADMIN)
async def revoke_token(
    request: Request,
    name: str,
    caller: Caller,
    body: RevokeBody | None = None,
    key: IdempotencyKey = None,
) -> Any:
    reason = None if body is None else body.reason
    return await service_of(request).pool.call(
        lambda ledger: ledger.access.revoke_token(
            name, reason=reason, actor=caller.name, idempotency_key=key
        )
    )
