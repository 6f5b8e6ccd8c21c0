"""Which file a SQLite database name opens: one rule for the store, its turn file and
its checks (`adapters.sqlite.store_file.database_file`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainledger.adapters.sqlite.store_file import database_file
from trainledger.adapters.sqlite.write_turns import _turn_file


@pytest.mark.parametrize(
    ("db_name", "expected"),
    [
        ("/data/ledger.db", Path("/data/ledger.db")),
        ("relative/ledger.db", Path("relative/ledger.db")),
        ("/data/odd?name.db", Path("/data/odd?name.db")),  # a plain path is taken literally
        ("file:/data/my%20ledger.db?mode=ro&immutable=1", Path("/data/my ledger.db")),
        ("file:/data/ledger.db", Path("/data/ledger.db")),
    ],
)
def test_a_database_name_opens_one_file(db_name: str, expected: Path) -> None:
    assert database_file(db_name) == expected


@pytest.mark.parametrize(
    "db_name",
    ["", "file:", "file:?mode=rw", ":memory:", "file::memory:?cache=shared", "file:x?mode=memory"],
)
def test_an_in_memory_or_temporary_database_has_no_file(db_name: str) -> None:
    assert database_file(db_name) is None
    assert _turn_file(db_name) is None


def test_the_turn_file_sits_beside_the_store_whatever_the_uri_says() -> None:
    assert _turn_file("file:/data/my%20ledger.db?mode=ro") == "/data/my ledger.db-turn"
