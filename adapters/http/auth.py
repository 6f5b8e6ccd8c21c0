"""Who a request is, and whether its role reaches what the route needs (SPEC §10).

Every route of the service is a `LedgerRoute`. Its role is decided before
FastAPI reads or judges anything of the request (so a role too low is 403
whatever the body holds): `openapi_extra={"x-role": ...}` when the route
says, else `reader` for GET and `writer` for the other methods; `public`
routes (sign-in, assets) need no token. A page (`"x-page": True`) also
takes the token from the sign-in cookie, and sends a visitor without one
to the sign-in form instead of answering 401.

The token is checked against the store on every request: a revocation by
any process is in force from the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from trainledger.domain.errors import UnauthenticatedError
from trainledger.domain.roles import ROLES
from trainledger.service.access import Principal

if TYPE_CHECKING:
    from trainledger.adapters.http.app import Service

COOKIE = "trainledger_token"
PUBLIC = "public"


def required_role(route: APIRoute) -> str:
    extra = route.openapi_extra or {}
    role = extra.get("x-role")
    if role is None:
        role = "reader" if (route.methods or set()) <= {"GET", "HEAD"} else "writer"
    if role != PUBLIC and role not in ROLES:
        raise ValueError(f"route {route.path}: unknown role {role!r}")
    return str(role)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header ("" when the header is malformed)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


class LedgerRoute(APIRoute):
    """A route that authenticates and authorizes its caller first (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needed = required_role(self)
        page = bool((self.openapi_extra or {}).get("x-page"))

        async def guarded(request: Request) -> Response:
            if needed != PUBLIC:
                try:
                    principal = await service_of(request).authorize(request, needed, page=page)
                except UnauthenticatedError:
                    if not page:
                        raise
                    query = request.url.query
                    target = quote(request.url.path + (f"?{query}" if query else ""), safe="/")
                    return RedirectResponse(f"/login?next={target}", status_code=303)
                request.state.principal = principal
            return await handler(request)

        return guarded


def caller(request: Request) -> Principal:
    """The principal `LedgerRoute` authenticated for this request."""
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(caller)]
