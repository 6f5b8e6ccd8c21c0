"""Random command sequences on SQLite: the SQLite views equal a fresh in-memory replay."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings

from tests.ledger_machine import LedgerMachine


class SQLiteLedgerMachine(LedgerMachine):
    def store_url(self) -> str:
        self.directory = Path(tempfile.mkdtemp(prefix="trainledger-views-"))
        return f"sqlite:///{self.directory / 'ledger.db'}?synchronous=normal"

    def teardown(self) -> None:
        super().teardown()
        if hasattr(self, "directory"):
            shutil.rmtree(self.directory, ignore_errors=True)


SQLiteLedgerMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSQLiteLedger = SQLiteLedgerMachine.TestCase
