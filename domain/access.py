"""Access to the ledger as a service (SPEC §10): tokens, their names and their roles.

A token reads `tl_<token id: 32 hex digits>_<secret>`. The id names the
token's own aggregate, so a request loads only that token's events; the
ledger keeps only the sha256 of the secret (a high-entropy random string,
so its hash reveals nothing usable), compared in constant time. Issuing
and revoking a token are events like any other; a revoked token stays in
history and is refused from the next request on.

Names are unique for the life of the ledger, also after a revocation: the
name is the actor of every write made with the token, and an actor in
history must name one token. The names taken live in one `TokenRegistry`
aggregate per ledger, saved with each new token in the same append (two
concurrent issues of one name conflict there, and the second is refused).

Roles are ordered: each role may do what the roles before it may.

Their stored topics are `domain.access:...` (see `domain.aggregate.STORED_MODULES`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from trainledger.domain.aggregate import LedgerAggregate, stored_classes
from trainledger.domain.errors import (
    TokenNameTakenError,
    TokenRevokedError,
    ValidationError,
)
from trainledger.domain.roles import ROLES, require_allowed, require_role, role_allows

__all__ = [
    "ROLES",
    "AccessToken",
    "TokenRegistry",
    "hash_secret",
    "parse_token",
    "require_allowed",
    "role_allows",
    "stored_classes",
    "token_text",
]

TOKEN_PREFIX = "tl_"
_TOKEN = re.compile(r"tl_([0-9a-f]{32})_([A-Za-z0-9_-]{20,200})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def require_token_name(name: str) -> str:
    """A token's name: 1-64 letters, digits and `._@+-`, starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"token name {name!r} must be 1-64 letters, digits or ._@+- "
            "and start with a letter or digit"
        )
    return name


def hash_secret(secret: str) -> str:
    """What the ledger keeps of a token's secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_text(token_id: UUID, secret: str) -> str:
    """The token as its holder presents it."""
    return f"{TOKEN_PREFIX}{token_id.hex}_{secret}"


def parse_token(text: str) -> tuple[UUID, str] | None:
    """(token id, secret) of a token as presented, or None when it is not shaped as one."""
    found = _TOKEN.fullmatch(text)
    if found is None:
        return None
    return UUID(hex=found.group(1)), found.group(2)


class AccessToken(LedgerAggregate):
    """One bearer token: its name (the actor of its writes), its role, its secret's hash."""

    name: str
    role: str
    secret_hash: str
    issued_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None

    def __init__(self) -> None:
        """State is set by `Issued.apply`."""

    class Issued(LedgerAggregate.Created):
        name: str
        role: str
        secret_hash: str

        def apply(self, token: AccessToken) -> None:
            token.name, token.role, token.secret_hash = self.name, self.role, self.secret_hash
            token.issued_by = self.actor
            token.revoked_at = token.revoked_by = token.revoked_reason = None

    class Revoked(LedgerAggregate.Event):
        reason: str | None = None

        def apply(self, token: AccessToken) -> None:
            token.revoked_at = self.timestamp
            token.revoked_by = self.actor
            token.revoked_reason = self.reason

    @staticmethod
    def require_issuable(name: str, role: str, secret_hash: str) -> None:
        """Refuse a bad name, an unknown role or a hash that is not a sha256."""
        require_token_name(name)
        require_role(role)
        if not re.fullmatch(r"[0-9a-f]{64}", secret_hash):
            raise ValidationError("a token's secret hash must be 64 hex digits")

    @classmethod
    def issue(cls, token_id: UUID, *, name: str, role: str, secret_hash: str) -> AccessToken:
        """A new token; the caller saves it with the registry that takes its name."""
        cls.require_issuable(name, role, secret_hash)
        token: AccessToken = cls._open(
            cls.Issued, token_id, name=name, role=role, secret_hash=secret_hash
        )
        return token

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def accepts(self, secret: str) -> bool:
        """Whether `secret` is this token's (constant time) and the token is not revoked."""
        matches = hmac.compare_digest(hash_secret(secret), self.secret_hash)
        return matches and not self.revoked

    def require_revocable(self) -> None:
        if self.revoked:
            raise TokenRevokedError(f"token {self.name!r} is already revoked")

    def revoke(self, reason: str | None = None) -> None:
        """Withdraw the token; it stays in history."""
        self.require_revocable()
        self._trigger(self.Revoked, reason=reason)


class TokenRegistry(LedgerAggregate):
    """The token names taken in this ledger (one registry per ledger, at `ID`)."""

    ID: ClassVar[UUID] = UUID("7f0c9a52-2d61-5b8e-9c3e-1a4b7d2e6f10")
    names: dict[str, UUID]

    def __init__(self) -> None:
        """State is set by `Opened.apply`."""

    class Opened(LedgerAggregate.Created):
        def apply(self, registry: TokenRegistry) -> None:
            registry.names = {}

    class NameTaken(LedgerAggregate.Event):
        name: str
        token_id: UUID

        def apply(self, registry: TokenRegistry) -> None:
            registry.names = {**registry.names, self.name: self.token_id}

    @classmethod
    def for_ledger(cls) -> TokenRegistry:
        """The ledger's registry, before its first token."""
        registry: TokenRegistry = cls._open(cls.Opened, cls.ID)
        return registry

    def require_free(self, name: str) -> None:
        if name in self.names:
            raise TokenNameTakenError(
                f"token name {name!r} is taken (names stay unique, also after revocation)"
            )

    def take(self, token: AccessToken) -> None:
        """Record that `token`'s name is taken (saved with the token)."""
        self.require_free(token.name)
        self._trigger(self.NameTaken, name=token.name, token_id=token.id)
