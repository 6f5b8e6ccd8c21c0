"""The roles of the ledger's tokens and their order (SPEC §10), without the token model.

Each role may do what the roles before it may. A module of its own, free of
pydantic, so that the CLI's start-up and the service's route table can name
roles without loading the aggregates (`domain.access` holds the tokens).
"""

from __future__ import annotations

from trainledger.domain.errors import ForbiddenError, ValidationError

ROLES: tuple[str, ...] = ("reader", "writer", "deployer", "admin")
"""Lowest first: `reader` (every query, the event stream, verify), `writer` (+ the
writes of SPEC §3-§4), `deployer` (+ promotion and deployment), `admin` (+ tokens)."""


def require_role(role: str) -> str:
    """`role` when it is one of `ROLES`."""
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}")
    return role


def role_allows(role: str, needed: str) -> bool:
    """Whether a token of `role` may do what needs `needed`."""
    return ROLES.index(require_role(role)) >= ROLES.index(require_role(needed))


def require_allowed(name: str, role: str, needed: str) -> None:
    """Refuse (`ForbiddenError`) unless `role` reaches `needed`."""
    if not role_allows(role, needed):
        raise ForbiddenError(f"token {name!r} has role {role}; this needs role {needed} or above")
