from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres_cluster import postgres_cluster, postgres_url, store_url
from tests.support import Cli
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger

__all__ = ["postgres_cluster", "postgres_url", "store_url"]


@pytest.fixture
def ledger() -> TrainingLedger:
    """The application on the in-memory store."""
    return open_ledger("memory://")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'ledger.db'}"


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    """The real CLI, in subprocesses, on a fresh SQLite file."""
    return Cli(sqlite_url, cwd=tmp_path)
