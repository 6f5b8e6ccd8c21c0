"""The token verbs (SPEC §10): `token create|list|revoke`.

A token is printed once, by the `create` that issued it; the ledger keeps
only its hash, and `list` shows names, roles and dates, never a token.
"""

from __future__ import annotations

from typing import Any

import click

from trainledger.cli.app import Session, cli, idempotency_option, pass_session
from trainledger.cli.text import table
from trainledger.domain.roles import ROLES


@cli.group("token")
def token_group() -> None:
    """Bearer tokens of `trainledger serve`: issue, list, revoke."""


def created_text(document: dict[str, Any]) -> list[str]:
    if document["token"] is None:
        return [
            f"token {document['name']} ({document['role']}) was issued before, under this "
            "idempotency key; it was shown only then"
        ]
    return [
        f"token {document['name']} ({document['role']}) issued; it is shown only this once:",
        document["token"],
    ]


def tokens_text(document: dict[str, Any]) -> list[str]:
    tokens = document["tokens"]
    if not tokens:
        return ["no tokens"]
    return table(
        ("name", "role", "created", "by", "revoked", "by"),
        (
            (t["name"], t["role"], t["createdAt"], t["createdBy"], t["revokedAt"], t["revokedBy"])
            for t in tokens
        ),
    )


def revoked_text(document: dict[str, Any]) -> list[str]:
    return [f"token {document['name']} ({document['role']}) revoked at {document['revokedAt']}"]


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@idempotency_option
@pass_session
def token_create(session: Session, name: str, role: str, idempotency_key: str | None) -> None:
    """Issue a token named NAME (the actor of its writes) and print it, once.

    Roles, each including the ones before it: reader (queries, the event
    stream, verify), writer (experiments, runs, results, checkpoints, evals,
    deployability), deployer (promotion and deployment), admin (tokens).
    """
    document = session.ledger.access.create_token(
        name, role, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, created_text)


@token_group.command("list")
@pass_session
def token_list(session: Session) -> None:
    """Every token issued: name, role, when and by whom issued and revoked (never the token)."""
    session.emit(session.ledger.access.list_tokens(), tokens_text)


@token_group.command("revoke")
@click.argument("name")
@click.option("--reason", default=None, help="Why the token is withdrawn.")
@idempotency_option
@pass_session
def token_revoke(
    session: Session, name: str, reason: str | None, idempotency_key: str | None
) -> None:
    """Revoke the token named NAME: refused from its next request on (a running service too)."""
    document = session.ledger.access.revoke_token(
        name, reason=reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, revoked_text)
