"""PostgreSQL store URLs: what reaches the library's settings, what is refused, what is shown."""

from __future__ import annotations

import pytest

from trainledger.adapters.store import redact, store_env
from trainledger.domain.errors import StoreError


def test_a_url_becomes_the_library_settings_with_the_defaults() -> None:
    env = store_env("postgresql://ledger:s%40cret@db.example:6543/train%20ledger")
    assert env["POSTGRES_DBNAME"] == "train ledger"
    assert env["POSTGRES_HOST"] == "db.example"
    assert env["POSTGRES_PORT"] == "6543"
    assert env["POSTGRES_USER"] == "ledger"
    assert env["POSTGRES_PASSWORD"] == "s@cret"
    assert env["POSTGRES_POOL_SIZE"] == "2"
    assert env["POSTGRES_MAX_OVERFLOW"] == "8"
    assert env["POSTGRES_LOCK_TIMEOUT"] == "30"
    assert env["POSTGRES_CONNECT_TIMEOUT"] == "10"
    assert env["POSTGRES_SCHEMA"] == ""
    assert (
        env["PERSISTENCE_MODULE"] == "trainledger.adapters.postgres.recorder:LedgerPostgresFactory"
    )
    assert env["TRACKING_RECORDER_TOPIC"] == "trainledger.adapters.postgres.view:PostgresLedgerView"


def test_options_in_the_query_string_override_the_defaults() -> None:
    env = store_env(
        "postgres://u:p@h/db?pool_size=10&max_overflow=0&lock_timeout=5&connect_timeout=3&schema=ml"
    )
    assert env["POSTGRES_PORT"] == "5432"
    assert env["POSTGRES_POOL_SIZE"] == "10"
    assert env["POSTGRES_MAX_OVERFLOW"] == "0"
    assert env["POSTGRES_LOCK_TIMEOUT"] == "5"
    assert env["POSTGRES_CONNECT_TIMEOUT"] == "3"
    assert env["POSTGRES_SCHEMA"] == "ml"


def test_without_a_password_in_the_url_pgpassword_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert store_env("postgresql://u@h/db")["POSTGRES_PASSWORD"] == "from-env"
    monkeypatch.delenv("PGPASSWORD")
    assert store_env("postgresql://u@h/db")["POSTGRES_PASSWORD"] == ""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u:topsecret@h:5432/", "names no database"),
        ("postgresql://u:topsecret@h:99999/db", "invalid port"),
        ("postgresql://u:topsecret@h/db?pool_size=0", "pool_size must be an integer >= 1"),
        ("postgresql://u:topsecret@h/db?lock_timeout=soon", "lock_timeout must be an integer"),
        ("postgresql://u:topsecret@h/db?sslmode=require", "unknown option(s) sslmode"),
    ],
)
def test_malformed_urls_are_refused_without_showing_the_password(url: str, reason: str) -> None:
    with pytest.raises(StoreError) as refused:
        store_env(url)
    assert reason in refused.value.message
    assert "topsecret" not in refused.value.message
    assert "u:***@h" in refused.value.message


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:1/db") == "postgresql://u:***@h:1/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://u@h/db?sslpassword=pw&schema=s&password=pw") == (
        "postgresql://u@h/db?sslpassword=***&schema=s&password=***"
    )
