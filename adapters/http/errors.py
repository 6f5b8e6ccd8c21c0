"""What a refusal is over HTTP: `{"error": {"code", "message"}}` with its status.

401 no, an unknown or a revoked token; 403 a role too low; 404 not found;
409 refused by a rule or a conflict; 413 a body over the limit; 422 invalid
input (the ledger's `ValidationError`s and FastAPI's own validation, which
is reshaped); 503 a store that cannot be used. Anything else is a 500 whose
message names no internals: never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.domain import EventSourcingError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from trainledger.domain.errors import (
    DatasetError,
    ForbiddenError,
    LedgerError,
    NotFoundError,
    StoreError,
    UnauthenticatedError,
    ValidationError,
)

log = logging.getLogger("trainledger.http")

STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "refused",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "store_error",
}


def status_of(error: LedgerError) -> int:
    """The HTTP status of a refusal of the ledger."""
    if isinstance(error, UnauthenticatedError):
        return 401
    if isinstance(error, ForbiddenError):
        return 403
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ValidationError | DatasetError):
        return 422
    if isinstance(error, StoreError):
        return 503
    return 409


def error_document(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": " ".join(message.split())}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_document(code, message), status_code=status, headers=headers)


def describe(errors: Any) -> str:
    """FastAPI's validation errors in one line: where, and why."""
    parts = []
    for item in errors:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Map every exception a route may raise to the error document."""

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, error: LedgerError) -> Response:
        return error_response(status_of(error), error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        return error_response(422, "invalid_input", describe(error.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        code = STATUS_CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
        response = error_response(error.status_code, code, message)
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(EventSourcingError)
    async def store_error(request: Request, error: EventSourcingError) -> Response:
        log.error("store error on %s %s: %s", request.method, request.url.path, type(error))
        return error_response(503, "store_error", "the store could not answer; retry")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        log.error(
            "internal error on %s %s: %s", request.method, request.url.path, type(error).__name__
        )
        return error_response(500, "internal_error", "internal error")
