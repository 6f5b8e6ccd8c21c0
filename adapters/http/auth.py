"""Who a request is, and whether its role reaches what the route needs (SPEC §10).

Every route of the service is a `LedgerRoute`. Its role is decided before
FastAPI reads or judges anything of the request (so a role too low is 403
whatever the body holds): `openapi_extra={"x-role": ...}` when the route
says, else `reader` for GET and `writer` for the other methods; `public`
routes (sign-in, assets) need no token. A page (`"x-page": True`) also
takes the token from the sign-in cookie, and sends a visitor without one
to the sign-in form instead of answering 401.

The token is checked against the store on every request, before any of
the request's work and before its answer: a revocation by any process is in
force from the next request. `Admission` remembers who a token was the last
time it was live (its name and role, which never change); for such a token
the role is judged at once, and the check against the store runs on the
worker thread right before the request's first work, in the same turn
(`LedgerPool.checking_first`), or, when the route has no work for the
ledger or refuses the request first (422 on its body), before the answer
leaves: a revoked token is 401 either way, whatever the body holds. A token
not remembered, or whose role looks too low, is checked first, on its own,
as every token was before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from trainledger.adapters.http.ledgers import LedgerPool, PendingCheck
from trainledger.domain.errors import ForbiddenError, UnauthenticatedError
from trainledger.domain.roles import ROLES
from trainledger.service.access import Principal
from trainledger.service.ledger import TrainingLedger

if TYPE_CHECKING:
    from trainledger.adapters.http.app import Service

COOKIE = "trainledger_token"
PUBLIC = "public"
REMEMBERED = 1024
"""Tokens `Admission` remembers at most (it forgets them all when full)."""
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


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


class Admission:
    """Lets a request in when its token is live and its role reaches the route's (module doc)."""

    def __init__(self, pool: LedgerPool, *, auth: bool, local_actor: str) -> None:
        self.pool = pool
        self.auth = auth
        self.local = Principal(local_actor, "admin")
        self._known: dict[str, Principal] = {}
        """Token → who it was when last found live; touched on the event loop only."""

    async def admit(self, request: Request, needed: str, page: bool, handler: Handler) -> Response:
        """`handler`'s answer, the caller being let in (`UnauthenticatedError` otherwise)."""
        if not self.auth:
            request.state.principal = self.local
            return await handler(request)
        presented = bearer_token(request)
        if presented is None and page:
            presented = request.cookies.get(COOKIE)
        known = self._known.get(presented) if presented else None
        if known is None or not _reaches(known, needed):
            request.state.principal = (await self._authenticate(presented)).require(needed)
            return await handler(request)
        assert presented is not None
        request.state.principal = known
        check = self._confirmation(presented, known)
        with self.pool.checking_first(check) as pending:
            try:
                response = await handler(request)
            except UnauthenticatedError:
                self._known.pop(presented, None)
                raise
            except Exception:
                await self._run_left(pending, presented)
                raise
            await self._run_left(pending, presented)
        return response

    async def _authenticate(self, presented: str | None) -> Principal:
        try:
            principal = await self.pool.call(lambda ledger: ledger.access.authenticate(presented))
        except UnauthenticatedError:
            if presented:
                self._known.pop(presented, None)
            raise
        if presented:
            if len(self._known) >= REMEMBERED:
                self._known.clear()
            self._known[presented] = principal
        return principal

    @staticmethod
    def _confirmation(presented: str, known: Principal) -> Callable[[TrainingLedger], None]:
        def confirm(ledger: TrainingLedger) -> None:
            if ledger.access.authenticate(presented) != known:
                raise UnauthenticatedError("unknown or revoked token")

        return confirm

    async def _run_left(self, pending: PendingCheck, presented: str) -> None:
        """The check, if no work of the request ran it."""
        check = pending.take()
        if check is None:
            return
        try:
            await self.pool.call(check)
        except UnauthenticatedError:
            self._known.pop(presented, None)
            raise


def _reaches(principal: Principal, needed: str) -> bool:
    try:
        principal.require(needed)
    except ForbiddenError:
        return False
    return True


class LedgerRoute(APIRoute):
    """A route that authenticates and authorizes its caller first (see the module doc)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        needed = required_role(self)
        page = bool((self.openapi_extra or {}).get("x-page"))

        async def guarded(request: Request) -> Response:
            if needed == PUBLIC:
                return await handler(request)
            try:
                return await service_of(request).admission.admit(request, needed, page, handler)
            except UnauthenticatedError:
                if not page:
                    raise
                query = request.url.query
                target = quote(request.url.path + (f"?{query}" if query else ""), safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)

        return guarded


async def caller(request: Request) -> Principal:
    """The principal `LedgerRoute` authenticated for this request.

    A coroutine, so that FastAPI calls it on the event loop: a plain function
    dependency would be sent to a thread of its own and back, for nothing.
    """
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(caller)]
