"""The ledger's tokens (SPEC §10): issue, list, revoke, and who a presented token is.

`TrainingLedger.access` holds one `Access`. A new token's secret is drawn
here (`secrets`), shown once to whoever issued it, and never recorded: the
token's `Issued` event keeps its sha256, and the idempotency record of an
issue keeps its outcome without the token (a repeat answers with the
token's name and id, and `token` null: it was shown once).

`authenticate` asks the store on every call, so a revocation recorded by
any process is in force from the next request: a token it has loaded before
is taken again only when the store holds no later event of it (one indexed
read, the library's `select_events` after its version), else it is loaded
again from its events.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from trainledger.domain.errors import (
    CorruptStoreError,
    TokenNotFoundError,
    UnauthenticatedError,
)
from trainledger.domain.views import iso
from trainledger.service import arguments
from trainledger.service.unit_of_work import Outcome

if TYPE_CHECKING:
    from trainledger.domain.access import AccessToken, TokenRegistry
    from trainledger.domain.model import LedgerAggregate
    from trainledger.service.ledger import TrainingLedger
    from trainledger.service.ports import Reservation

SECRET_BYTES = 32
"""Random bytes of a token's secret (256 bits, URL-safe base64)."""
LOADED = 1024
"""Tokens `Access` keeps as last loaded, at most (it forgets them all when full)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name (the actor of its writes) and its role."""

    name: str
    role: str

    def require(self, needed: str) -> Principal:
        """This principal, when its role reaches `needed` (else `ForbiddenError`)."""
        from trainledger.domain.roles import require_allowed

        require_allowed(self.name, self.role, needed)
        return self


class Access:
    """The token commands and queries of one ledger."""

    def __init__(self, ledger: TrainingLedger) -> None:
        self.ledger = ledger
        self._loaded: dict[UUID, AccessToken] = {}
        """Token id → the token as last loaded from its events (never changed here)."""

    def create_token(
        self, name: str, role: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Issue a token: `{name, role, token, tokenId, createdAt}`; `token` is shown only now."""
        from trainledger.domain.access import AccessToken, TokenRegistry, hash_secret, token_text

        arguments.require(name, str, "a token name")
        arguments.require(role, str, "a role")
        issued: dict[UUID, str] = {}

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            secret = secrets.token_urlsafe(SECRET_BYTES)
            token = AccessToken.issue(
                uuid4(), name=name, role=role, secret_hash=hash_secret(secret)
            )
            registry = self._registry() or TokenRegistry.for_ledger()
            registry.take(token)
            issued[token.id] = token_text(token.id, secret)
            return [token, registry], _token_document(token), []

        params = {"name": name, "role": role}
        outcome = self.ledger.unit_of_work.run("token.create", params, actor, idempotency_key, body)
        # Only the append that recorded this token's issue shows its secret.
        shown = issued.get(UUID(outcome["tokenId"]))
        return {"name": outcome["name"], "role": outcome["role"], "token": shown, **outcome}

    def list_tokens(self) -> Outcome:
        """Every token ever issued, oldest first: names, roles, when issued and revoked."""
        registry = self._registry()
        tokens = [] if registry is None else [self._token(i) for i in registry.names.values()]
        return {"tokens": [_token_document(t) for t in tokens]}

    def revoke_token(
        self,
        name: str,
        *,
        reason: str | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Revoke the token of that name; it is refused from the next request on."""
        arguments.require(name, str, "a token name")
        arguments.optional(reason, str, "a reason")

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            token = self._named(name)
            token.revoke(reason)
            return [token], _token_document(token), []

        params = {"name": name, "reason": reason}
        return self.ledger.unit_of_work.run("token.revoke", params, actor, idempotency_key, body)

    def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented token; `UnauthenticatedError` unless it is a live one."""
        from trainledger.domain.access import AccessToken, parse_token

        parsed = None if presented is None else parse_token(presented.strip())
        if parsed is None:
            raise UnauthenticatedError(
                "a bearer token is required (Authorization: Bearer tl_...)"
                if not presented
                else "not a token of this ledger"
            )
        token_id, secret = parsed
        token = self._current(token_id)
        if not isinstance(token, AccessToken) or not token.accepts(secret):
            raise UnauthenticatedError("unknown or revoked token")
        return Principal(token.name, token.role)

    def _current(self, token_id: UUID) -> LedgerAggregate | None:
        """The aggregate of `token_id` at its latest version in the store (None: none)."""
        from trainledger.domain.access import AccessToken

        loaded = self._loaded.get(token_id)
        if loaded is not None and not self.ledger.recorder.select_events(
            token_id, gt=loaded.version, limit=1
        ):
            return loaded
        try:
            found = self.ledger.unit_of_work.load(token_id)
        except AggregateNotFoundError:
            return None
        if isinstance(found, AccessToken):
            if len(self._loaded) >= LOADED:
                self._loaded.clear()
            self._loaded[token_id] = found
        return found

    def admin_token_exists(self) -> bool:
        """Whether some token of role admin is not revoked."""
        return any(
            t["role"] == "admin" and t["revokedAt"] is None for t in self.list_tokens()["tokens"]
        )

    # --- loading -----------------------------------------------------------

    def _registry(self) -> TokenRegistry | None:
        from trainledger.domain.access import TokenRegistry

        try:
            found = self.ledger.unit_of_work.load(TokenRegistry.ID)
        except AggregateNotFoundError:
            return None
        if not isinstance(found, TokenRegistry):
            raise CorruptStoreError(f"aggregate {TokenRegistry.ID} is not the token registry")
        return found

    def _token(self, token_id: UUID) -> AccessToken:
        from trainledger.domain.access import AccessToken

        return self.ledger.unit_of_work.get(token_id, AccessToken, TokenNotFoundError)

    def _named(self, name: str) -> AccessToken:
        registry = self._registry()
        if registry is None or name not in registry.names:
            raise TokenNotFoundError(name)
        return self._token(registry.names[name])


def _token_document(token: AccessToken) -> dict[str, Any]:
    """A token as `token list` shows it: never its secret, nor its hash."""
    return {
        "name": token.name,
        "role": token.role,
        "tokenId": str(token.id),
        "createdAt": iso(token.created_on),
        "createdBy": token.issued_by,
        "revokedAt": iso(token.revoked_at),
        "revokedBy": token.revoked_by,
        "revokedReason": token.revoked_reason,
    }
