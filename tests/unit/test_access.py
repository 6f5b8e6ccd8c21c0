"""Tokens and roles (SPEC §10): the aggregates, the application's commands, history and import."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from tests.unit.test_archive import as_file, exported
from tests.unit.test_import_rules import like, rehashed
from trainledger.domain.access import AccessToken, TokenRegistry, hash_secret, parse_token
from trainledger.domain.errors import (
    ForbiddenError,
    ImportRefusedError,
    TokenNameTakenError,
    TokenNotFoundError,
    TokenRevokedError,
    UnauthenticatedError,
    ValidationError,
)
from trainledger.domain.model import command_context
from trainledger.domain.roles import ROLES, require_allowed, role_allows
from trainledger.service.archive import import_log
from trainledger.service.ledger import TrainingLedger


def test_roles_are_ordered_each_including_the_ones_before() -> None:
    assert ROLES == ("reader", "writer", "deployer", "admin")
    for i, role in enumerate(ROLES):
        for j, needed in enumerate(ROLES):
            assert role_allows(role, needed) == (i >= j)
    with pytest.raises(ForbiddenError, match="role reader; this needs role writer"):
        require_allowed("ann", "reader", "writer")
    with pytest.raises(ValidationError, match="unknown role"):
        role_allows("root", "reader")


def test_a_token_is_its_id_and_a_secret_and_only_the_hash_is_kept() -> None:
    token_id = uuid4()
    with command_context("admin"):
        token = AccessToken.issue(
            token_id, name="ci", role="writer", secret_hash=hash_secret("s" * 43)
        )
    assert token.accepts("s" * 43)
    assert not token.accepts("t" * 43)
    assert token.secret_hash != "s" * 43
    assert parse_token(f"tl_{token_id.hex}_{'s' * 43}") == (token_id, "s" * 43)
    for garbage in ("", "tl_", f"tl_{token_id.hex}", f"tl_{token_id.hex}_short", "Bearer x"):
        assert parse_token(garbage) is None
    with command_context("admin"):
        token.revoke("leaked")
        with pytest.raises(TokenRevokedError):
            token.revoke()
    assert not token.accepts("s" * 43)
    assert (token.revoked_by, token.revoked_reason) == ("admin", "leaked")


@pytest.mark.parametrize("name", ["", " ci", "a b", "x" * 65, "ci\n", "-ci", "ci/1"])
def test_token_names_are_short_plain_words(name: str) -> None:
    with command_context("admin"), pytest.raises(ValidationError):
        AccessToken.issue(uuid4(), name=name, role="reader", secret_hash="0" * 64)


def test_a_name_is_taken_once_in_the_registry() -> None:
    with command_context("admin"):
        registry = TokenRegistry.for_ledger()
        first = AccessToken.issue(uuid4(), name="ci", role="reader", secret_hash="0" * 64)
        registry.take(first)
        again = AccessToken.issue(uuid4(), name="ci", role="admin", secret_hash="1" * 64)
        with pytest.raises(TokenNameTakenError):
            registry.take(again)
    assert registry.names == {"ci": first.id}


def test_a_revocation_by_another_ledger_on_the_store_applies_from_the_next_call(
    sqlite_url: str,
) -> None:
    from trainledger.adapters.store import open_ledger

    serving, other = open_ledger(sqlite_url), open_ledger(sqlite_url)
    try:
        token = other.access.create_token("ci", "writer", actor="root")["token"]
        for _ in range(3):  # loaded once, then taken again while the store has nothing newer
            assert serving.access.authenticate(token).name == "ci"
        other.access.revoke_token("ci", actor="root")
        with pytest.raises(UnauthenticatedError):
            serving.access.authenticate(token)
        with pytest.raises(UnauthenticatedError):
            serving.access.authenticate(token)
    finally:
        serving.close()
        other.close()


def test_create_list_authenticate_revoke(ledger: TrainingLedger) -> None:
    created = ledger.access.create_token("ci", "writer", actor="root")
    assert set(created) >= {"name", "role", "token", "tokenId", "createdAt"}
    assert (created["name"], created["role"], created["createdBy"]) == ("ci", "writer", "root")
    principal = ledger.access.authenticate(created["token"])
    assert (principal.name, principal.role) == ("ci", "writer")
    assert principal.require("reader") is principal
    with pytest.raises(ForbiddenError):
        principal.require("deployer")
    listed = json.dumps(ledger.access.list_tokens())
    assert created["token"] not in listed
    assert hash_secret(created["token"].rsplit("_", 1)[1]) not in listed
    assert not ledger.access.admin_token_exists()
    ledger.access.create_token("boss", "admin", actor="root")
    assert ledger.access.admin_token_exists()
    revoked = ledger.access.revoke_token("ci", reason="rotated", actor="boss")
    assert revoked["revokedBy"] == "boss"
    with pytest.raises(UnauthenticatedError):
        ledger.access.authenticate(created["token"])
    with pytest.raises(TokenRevokedError):
        ledger.access.revoke_token("ci", actor="boss")
    with pytest.raises(TokenNotFoundError):
        ledger.access.revoke_token("nobody", actor="boss")
    with pytest.raises(TokenNameTakenError):
        ledger.access.create_token("ci", "reader", actor="root")
    assert [t["name"] for t in ledger.access.list_tokens()["tokens"]] == ["ci", "boss"]


@pytest.mark.parametrize(
    "presented",
    [None, "", "nonsense", f"tl_{'5' * 32}_{'a' * 43}"],
)
def test_unknown_tokens_are_unauthenticated(ledger: TrainingLedger, presented: str | None) -> None:
    ledger.access.create_token("ci", "reader", actor="root")
    with pytest.raises(UnauthenticatedError):
        ledger.access.authenticate(presented)


def test_a_right_id_with_a_wrong_secret_is_unauthenticated(ledger: TrainingLedger) -> None:
    created = ledger.access.create_token("ci", "reader", actor="root")
    forged = created["token"][:-4] + ("AAAA" if not created["token"].endswith("AAAA") else "BBBB")
    with pytest.raises(UnauthenticatedError):
        ledger.access.authenticate(forged)


def test_an_idempotent_repeat_does_not_show_the_token_again(ledger: TrainingLedger) -> None:
    first = ledger.access.create_token("ci", "reader", actor="root", idempotency_key="k")
    again = ledger.access.create_token("ci", "reader", actor="root", idempotency_key="k")
    assert first["token"] is not None
    assert again["token"] is None
    assert {k: v for k, v in again.items() if k != "token"} == {
        k: v for k, v in first.items() if k != "token"
    }
    stored = ledger.ledger_recorder.find_reservation("idempotency", "k")
    assert stored is not None
    assert first["token"].encode() not in stored
    assert len(ledger.access.list_tokens()["tokens"]) == 1


def test_token_events_keep_history_verify_and_export_import(
    ledger: TrainingLedger, target: TrainingLedger
) -> None:
    created = ledger.access.create_token("ci", "admin", actor="root", idempotency_key="k")
    ledger.access.revoke_token("ci", actor="root")
    events = ledger.history(created["tokenId"])["events"]
    assert [e["type"] for e in events] == ["Issued", "Revoked"]
    assert created["token"] not in json.dumps(events)
    assert ledger.verify()["ok"]
    lines = exported(ledger)
    assert {line["topic"] for line in lines} == {
        "domain.access:AccessToken.Issued",
        "domain.access:AccessToken.Revoked",
        "domain.access:TokenRegistry.Opened",
        "domain.access:TokenRegistry.NameTaken",
    }
    import_log(target, as_file(lines))
    assert target.verify()["digest"] == ledger.verify()["digest"]
    assert target.access.list_tokens() == ledger.access.list_tokens()


def test_import_refuses_a_second_revocation_or_a_name_taken_twice(
    ledger: TrainingLedger, target: TrainingLedger
) -> None:
    ledger.access.create_token("ci", "admin", actor="root")
    ledger.access.revoke_token("ci", actor="root")
    lines = exported(ledger)
    revoked = next(line for line in lines if line["type"] == "Revoked")
    twice = rehashed([*json.loads(json.dumps(lines)), like(revoked, "Revoked", reason=None)])
    with pytest.raises(ImportRefusedError, match="already revoked"):
        import_log(target, as_file(twice))
    taken = next(line for line in lines if line["type"] == "NameTaken")
    again = like(taken, "NameTaken", name="ci", tokenId=str(uuid4()))
    with pytest.raises(ImportRefusedError, match="is taken"):
        import_log(target, as_file(rehashed([*json.loads(json.dumps(lines)), again])))
