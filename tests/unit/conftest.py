"""Fixtures shared by the export/import tests: a populated ledger and an empty one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_archive import populate
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[TrainingLedger, dict[str, str]]]:
    """A ledger holding a little of everything (`populate`), and its ids."""
    ledger = open_ledger("memory://")
    ids = populate(ledger, tmp_path)
    yield ledger, ids
    ledger.close()


@pytest.fixture
def target() -> Iterator[TrainingLedger]:
    """An empty ledger to import into."""
    ledger = open_ledger("memory://")
    yield ledger
    ledger.close()
