"""Random command sequences on the in-memory store: views stay a faithful replay."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.ledger_machine import LedgerMachine


class InMemoryLedgerMachine(LedgerMachine):
    def store_url(self) -> str:
        return "memory://"


InMemoryLedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestInMemoryLedger = InMemoryLedgerMachine.TestCase
