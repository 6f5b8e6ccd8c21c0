"""Writers that meet at the PostgreSQL lock (adapters/postgres/append.py).

A command left for the writer whose turn it is gets appended by it, in the
order the commands were left, with the chain links and seals `domain.chain`
computes; one refused is an `IntegrityError` in its own writer, with nothing of
it kept, and the others' appends are kept; a writer that gives up waiting
withdraws its command, which is never appended later. The turn is held here
by a test connection, as another writer would hold it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from trainledger.adapters.postgres.recorder import LedgerPostgresRecorder
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import LOG_GENESIS, log_links
from trainledger.service.ledger import TrainingLedger
from trainledger.service.ports import Reservation

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[TrainingLedger]:
    opened = open_ledger(postgres_url)
    try:
        yield opened
    finally:
        opened.close()


def _recorder(ledger: TrainingLedger) -> LedgerPostgresRecorder:
    recorder = ledger.unit_of_work.recorder
    assert isinstance(recorder, LedgerPostgresRecorder)
    recorder.appender._combine_until = math.inf  # as after meeting another writer
    return recorder


class Writer(threading.Thread):
    """An append in a thread of its own; its positions, or what it raised."""

    def __init__(self, append: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.append = append
        self.positions: list[int] | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.positions = list(self.append())
        except Exception as error:
            self.error = error

    def outcome(self) -> list[int] | Exception | None:
        self.join(60)
        assert not self.is_alive()
        return self.positions if self.error is None else self.error


def _count(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
        assert row is not None
        return int(row[0])


def _wait_for_staged(url: str, table: str, n: int) -> None:
    deadline = time.monotonic() + 30
    while _count(url, table) < n:
        assert time.monotonic() < deadline, f"{n} commands were never left in {table}"
        time.sleep(0.01)


def _events(aggregate_id: UUID, versions: int) -> list[StoredEvent]:
    return [
        StoredEvent(aggregate_id, v, "tests:Left", b'{"v": %d}' % v) for v in range(1, 1 + versions)
    ]


def test_commands_left_for_the_turns_holder_are_appended_in_order(
    ledger: TrainingLedger, postgres_url: str
) -> None:
    recorder = _recorder(ledger)
    staged, results, _ = recorder.appender.tables()
    first, second = uuid4(), uuid4()
    key = f"left-{uuid4()}"
    with psycopg.connect(postgres_url, autocommit=True) as turn:
        turn.execute("SELECT pg_advisory_lock(hashtext(%s))", (recorder.appender.turn_key,))
        one = Writer(lambda: recorder.insert_events(_events(first, 2)))
        one.start()
        _wait_for_staged(postgres_url, staged, 1)
        two = Writer(
            lambda: recorder.insert_events(
                _events(second, 3), reservations=[Reservation("test-kind", key, b"v")]
            )
        )
        two.start()
        _wait_for_staged(postgres_url, staged, 2)
        turn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (recorder.appender.turn_key,))
    # Both were left before the turn came free: whoever took it appended both, in order.
    positions_one, positions_two = one.outcome(), two.outcome()
    assert isinstance(positions_one, list)
    assert isinstance(positions_two, list)
    assert len(positions_one) == 2
    assert len(positions_two) == 3
    assert max(positions_one) < min(positions_two)
    assert recorder.select_events(first) == _events(first, 2)
    assert recorder.select_events(second) == _events(second, 3)
    assert recorder.find_reservation("test-kind", key) == b"v"
    rows = recorder.select_notifications(start=1, limit=10_000)
    assert [r.id for r in rows if r.originator_id == second] == positions_two
    links = log_links(
        LOG_GENESIS, [(r.id, r.originator_id, r.originator_version, r.topic, r.state) for r in rows]
    )
    assert recorder.log_chain(0, None) == dict(links)
    assert recorder.seals()[-1].key == key
    assert _count(postgres_url, staged) == _count(postgres_url, results) == 0


def test_a_refused_command_keeps_nothing_and_the_others_are_kept(
    ledger: TrainingLedger, postgres_url: str
) -> None:
    recorder = _recorder(ledger)
    staged, results, _ = recorder.appender.tables()
    existing, refused, kept = uuid4(), uuid4(), uuid4()
    recorder.insert_events(_events(existing, 1))
    key = f"refused-{uuid4()}"
    with psycopg.connect(postgres_url, autocommit=True) as turn:
        turn.execute("SELECT pg_advisory_lock(hashtext(%s))", (recorder.appender.turn_key,))
        # Its decision read `existing` at version 0: it has changed since.
        stale = Writer(
            lambda: recorder.insert_events(
                _events(refused, 1),
                reservations=[Reservation("test-kind", key, b"v")],
                unchanged=[(existing, 0)],
            )
        )
        stale.start()
        _wait_for_staged(postgres_url, staged, 1)
        fine = Writer(lambda: recorder.insert_events(_events(kept, 2)))
        fine.start()
        _wait_for_staged(postgres_url, staged, 2)
        turn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (recorder.appender.turn_key,))
    # Whichever of the two had the turn, the refusal is the stale writer's alone.
    error = stale.outcome()
    assert isinstance(error, IntegrityError)
    assert "changed after the decision read it" in str(error)
    assert recorder.select_events(refused) == []
    assert recorder.find_reservation("test-kind", key) is None
    positions = fine.outcome()
    assert isinstance(positions, list)
    assert len(positions) == 2
    assert recorder.select_events(kept) == _events(kept, 2)
    assert _count(postgres_url, staged) == _count(postgres_url, results) == 0


def test_a_writer_that_gives_up_waiting_withdraws_its_command(
    ledger: TrainingLedger, postgres_url: str
) -> None:
    recorder = _recorder(ledger)
    recorder.appender.lock_timeout = 1
    staged, results, _ = recorder.appender.tables()
    withdrawn = uuid4()
    with psycopg.connect(postgres_url, autocommit=True) as turn:
        turn.execute("SELECT pg_advisory_lock(hashtext(%s))", (recorder.appender.turn_key,))
        writer = Writer(lambda: recorder.insert_events(_events(withdrawn, 1)))
        writer.start()
        _wait_for_staged(postgres_url, staged, 1)
        # Left, waiting: every try times out and takes its command back.
        assert isinstance(writer.outcome(), OperationalError)
        assert _count(postgres_url, staged) == 0
        turn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (recorder.appender.turn_key,))
    recorder.appender.lock_timeout = 30
    later = uuid4()
    assert len(recorder.insert_events(_events(later, 1))) == 1  # and nothing came with it
    assert recorder.select_events(withdrawn) == []
    assert _count(postgres_url, results) == 0


def test_a_writer_alone_takes_the_plain_path(ledger: TrainingLedger) -> None:
    """No other writer at the turn: the function, not the procedure, and it says so."""
    recorder = ledger.unit_of_work.recorder
    assert isinstance(recorder, LedgerPostgresRecorder)
    for _ in range(3):
        recorder.insert_events(_events(uuid4(), 1))
    assert recorder.appender._combine_until == 0.0
