"""The ledger's clock: every event of a command carries the time the clock tells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support import reader_request
from trainledger.adapters.store import open_ledger


class SteppingClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def test_events_carry_the_injected_clock_time(tmp_path: Path) -> None:
    clock = SteppingClock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
    ledger = open_ledger("memory://", clock=clock)
    created = ledger.create_experiment(
        reader_request(tmp_path),
        dataset_fingerprint="0123456789abcdef",
        sample_count=3,
        actor="alice",
    )
    clock.now += timedelta(hours=2)
    ledger.start_run(created["trainRunId"], actor="alice")
    events = ledger.history(created["trainRunId"])["events"]
    assert [e["timestamp"] for e in events] == [
        "2026-01-01T09:00:00Z",
        "2026-01-01T11:00:00Z",
    ]
    assert created["spec"]["expectedArtifact"]["checkpointName"].endswith(
        str(int(datetime(2026, 1, 1, 9, 0, tzinfo=UTC).timestamp() * 1000))
    )
    assert ledger.now() == clock.now
