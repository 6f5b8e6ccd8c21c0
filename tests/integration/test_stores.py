"""One suite, every persistent backend: SQLite and PostgreSQL behave the same.

Each test gets a fresh store from `store_url` (an SQLite file, or a new
database on the session's PostgreSQL cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from tests.support import READER_FAMILY, eval_summary, write_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import (
    DeployabilityError,
    DuplicateEvalError,
    FamilyMismatchError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    RunNotFoundError,
)
from trainledger.domain.experiment import ExperimentRequest
from trainledger.service.ledger import TrainingLedger
from trainledger.service.ports import EVAL_ID, IDEMPOTENCY, Reservation


@pytest.fixture
def ledger(store_url: str) -> Iterator[TrainingLedger]:
    opened = open_ledger(store_url)
    yield opened
    opened.close()


def request(tmp_path: Path) -> ExperimentRequest:
    return ExperimentRequest(
        profile="local-reader",
        family=READER_FAMILY,
        backend="dry-run",
        benchmark_export_id="bench-1",
        output_dir=str(tmp_path / "out"),
    )


def new_run(ledger: TrainingLedger, tmp_path: Path, key: str | None = None) -> str:
    created = ledger.create_experiment(
        request(tmp_path),
        dataset_fingerprint="0123456789abcdef",
        sample_count=8,
        actor="alice",
        idempotency_key=key,
    )
    run_id: str = created["trainRunId"]
    return run_id


def deployable_checkpoint(ledger: TrainingLedger, tmp_path: Path) -> tuple[str, str]:
    run_id = new_run(ledger, tmp_path)
    ledger.start_run(run_id, actor="alice")
    checkpoint_id: str = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=write_artifact(tmp_path), actor="alice"
    )["checkpointId"]
    ledger.complete_run(run_id, actor="alice")
    ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id), mark_deployable=True, actor="bob"
    )
    return run_id, checkpoint_id


def snapshot(ledger: TrainingLedger) -> tuple[int, list[Reservation]]:
    """What a refused command must leave untouched: the log head and the reservations."""
    recorder: Any = ledger.recorder
    return recorder.max_notification_id() or 0, recorder.reservations()


def test_full_lifecycle_is_recorded_and_survives_reopening(
    ledger: TrainingLedger, store_url: str, tmp_path: Path
) -> None:
    run_id, checkpoint_id = deployable_checkpoint(ledger, tmp_path)
    ledger.revoke_deployability(checkpoint_id, "superseded", actor="carol")

    run = ledger.show_run(run_id)
    checkpoint = ledger.show_checkpoint(checkpoint_id)
    assert run["status"] == "completed"
    assert run["checkpointIds"] == [checkpoint_id]
    assert checkpoint["deployable"] is False
    assert [c["deployable"] for c in checkpoint["deployabilityHistory"]] == [True, False]
    assert checkpoint["currentEvalId"] == "eval-1"

    reopened = open_ledger(store_url)
    try:
        assert reopened.show_run(run_id) == run
        assert reopened.show_checkpoint(checkpoint_id) == checkpoint
        assert reopened.history(run_id) == ledger.history(run_id)
        assert reopened.history(checkpoint_id) == ledger.history(checkpoint_id)
        assert reopened.verify()["ok"]
    finally:
        reopened.close()


def test_history_positions_are_the_global_log_positions(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    run_id, checkpoint_id = deployable_checkpoint(ledger, tmp_path)
    other_run = new_run(ledger, tmp_path)
    ledger.fail_run(other_run, "abandoned", actor="alice")

    log = ledger.recorder.select_notifications(start=None, limit=100)
    by_aggregate: dict[str, list[int]] = {}
    for notification in log:
        by_aggregate.setdefault(str(notification.originator_id), []).append(notification.id)
    for aggregate_id in (run_id, checkpoint_id, other_run):
        events = ledger.history(aggregate_id)["events"]
        assert [e["position"] for e in events] == by_aggregate[aggregate_id]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    run_types = [e["type"] for e in ledger.history(run_id)["events"]]
    assert run_types == ["Registered", "Started", "CheckpointLinked", "Completed"]
    assert [n.id for n in log] == sorted(n.id for n in log)
    assert len(log) == 4 + 3 + 2


def test_refused_commands_record_nothing(ledger: TrainingLedger, tmp_path: Path) -> None:
    run_id, checkpoint_id = deployable_checkpoint(ledger, tmp_path)
    pending = new_run(ledger, tmp_path)
    running = new_run(ledger, tmp_path)
    ledger.start_run(running, actor="alice")
    other: str = ledger.register_checkpoint(
        running, family=READER_FAMILY, artifact_path=write_artifact(tmp_path, "b"), actor="alice"
    )["checkpointId"]
    before = snapshot(ledger)

    with pytest.raises(InvalidTransitionError, match="completed"):
        ledger.start_run(run_id, actor="mallory", idempotency_key="k-refused")
    with pytest.raises(InvalidTransitionError):
        ledger.complete_run(pending, actor="mallory")
    with pytest.raises(FamilyMismatchError):
        ledger.register_checkpoint(
            pending, family="phi-mini-reader", artifact_path="/x", actor="mallory"
        )
    with pytest.raises(DuplicateEvalError):
        ledger.attach_eval(other, eval_summary(other, eval_id="eval-1"), actor="mallory")
    with pytest.raises(DeployabilityError):
        ledger.attach_eval(
            other, eval_summary(other, eval_id="eval-2"), mark_deployable=True, actor="mallory"
        )
    with pytest.raises(DeployabilityError):
        ledger.mark_deployable(checkpoint_id, actor="mallory")
    with pytest.raises(RunNotFoundError):
        ledger.start_run(str(uuid4()), actor="mallory")

    assert snapshot(ledger) == before
    # A refused command's keys stay free.
    assert ledger.ledger_recorder.find_reservation(IDEMPOTENCY, "k-refused") is None
    assert ledger.ledger_recorder.find_reservation(EVAL_ID, "eval-2") is None


def test_idempotent_commands_return_the_first_outcome_and_record_nothing_new(
    ledger: TrainingLedger, store_url: str, tmp_path: Path
) -> None:
    run_id = new_run(ledger, tmp_path, key="create-1")
    assert new_run(ledger, tmp_path, key="create-1") == run_id
    started = ledger.start_run(run_id, actor="alice", idempotency_key="start-1")
    head = snapshot(ledger)

    reopened = open_ledger(store_url)
    try:
        assert reopened.start_run(run_id, actor="alice", idempotency_key="start-1") == started
        assert new_run(reopened, tmp_path, key="create-1") == run_id
        with pytest.raises(IdempotencyKeyReusedError):
            reopened.complete_run(run_id, actor="alice", idempotency_key="start-1")
    finally:
        reopened.close()
    assert snapshot(ledger) == head
    assert [e["idempotencyKey"] for e in ledger.history(run_id)["events"]] == [
        "create-1",
        "start-1",
    ]


def test_a_reservation_is_written_with_its_events_or_not_at_all(ledger: TrainingLedger) -> None:
    """The recorder's own guarantee, beneath the application's retries."""
    recorder: Any = ledger.recorder

    def event(version: int) -> StoredEvent:
        return StoredEvent(uuid4(), version, "test:Event", b"{}")

    taken = Reservation(EVAL_ID, "eval-x", b"first")
    recorder.insert_events([event(1)], reservations=[taken])
    head = recorder.max_notification_id()

    loser = event(1)
    with pytest.raises(IntegrityError):
        recorder.insert_events([loser], reservations=[Reservation(EVAL_ID, "eval-x", b"second")])
    assert recorder.max_notification_id() == head
    assert recorder.select_events(loser.originator_id) == []
    assert recorder.find_reservation(EVAL_ID, "eval-x") == b"first"

    # And a conflicting event undoes the reservations of its transaction.
    twice = event(1)
    with pytest.raises(IntegrityError):
        recorder.insert_events(
            [event(1), twice, twice], reservations=[Reservation(IDEMPOTENCY, "fresh-key", b"{}")]
        )
    assert recorder.find_reservation(IDEMPOTENCY, "fresh-key") is None
    assert recorder.reservations() == [taken]


def test_events_and_reservations_cannot_be_rewritten_in_place(
    ledger: TrainingLedger, store_url: str, tmp_path: Path
) -> None:
    """Append-only at the storage level, on both backends."""
    deployable_checkpoint(ledger, tmp_path)
    events = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    statements = [
        f"UPDATE {events} SET topic = topic",
        f"DELETE FROM {events}",
        "DELETE FROM ledger_reservations",
    ]
    for statement in statements:
        with pytest.raises(Exception, match="append-only"):
            execute_raw(store_url, statement)
    assert ledger.verify()["ok"]


def execute_raw(store_url: str, statement: str) -> None:
    if store_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as connection:
            connection.execute(statement)
    else:
        import psycopg

        with psycopg.connect(store_url) as connection:
            connection.execute(statement)


@pytest.mark.parametrize("text", ["nul\x00", "bell\x07", "lone \ud800 surrogate", "cr\r"])
def test_text_with_control_characters_is_refused_everywhere_and_nothing_is_recorded(
    ledger: TrainingLedger, tmp_path: Path, text: str
) -> None:
    from trainledger.domain.errors import ControlCharacterError, EvalRefusedError

    run_id = new_run(ledger, tmp_path)
    ledger.start_run(run_id, actor="alice")
    checkpoint_id = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path="a.bin", actor="alice"
    )["checkpointId"]
    before = ledger.recorder.max_notification_id()
    attempts: list[Callable[[], object]] = [
        lambda: ledger.fail_run(run_id, text, actor="alice"),
        lambda: ledger.fail_run(run_id, "fine", actor=text),
        lambda: ledger.fail_run(run_id, "fine", actor="alice", idempotency_key=text),
        lambda: ledger.register_checkpoint(
            run_id, family=READER_FAMILY, artifact_path=text, actor="alice"
        ),
        lambda: ledger.register_checkpoint(
            run_id, family=READER_FAMILY, artifact_path="b", metrics={text: 1}, actor="alice"
        ),
        lambda: ledger.attach_eval(checkpoint_id, eval_summary(checkpoint_id, text), actor="a"),
        lambda: ledger.attach_eval(
            checkpoint_id, eval_summary(checkpoint_id, benchmarkId=text), actor="a"
        ),
    ]
    for attempt in attempts:
        with pytest.raises((ControlCharacterError, EvalRefusedError)) as refused:
            attempt()
        assert "U+" in refused.value.message
    assert ledger.recorder.max_notification_id() == before
    assert ledger.verify()["ok"] is True
    assert ledger.show_run(run_id)["status"] == "running"


@pytest.mark.parametrize("memory", [False, True], ids=["this store", "memory"])
def test_an_append_is_refused_when_an_aggregate_it_read_has_changed(
    store_url: str, memory: bool
) -> None:
    """`service.ports.UNCHANGED`: the append confirms the versions a decision read."""
    opened = open_ledger("memory://" if memory else store_url)
    try:
        recorder = opened.unit_of_work.app.recorder
        read, written = uuid4(), uuid4()
        recorder.insert_events([StoredEvent(read, v, "tests:T", b"{}") for v in (1, 2)])
        before = recorder.max_notification_id()
        event = StoredEvent(written, 1, "tests:T", b"{}")
        with pytest.raises(IntegrityError, match=f"{read} changed after the decision read it"):
            recorder.insert_events([event], unchanged=[(read, 1)])
        assert recorder.select_events(written) == []
        assert recorder.max_notification_id() == before
        assert opened.ledger_recorder.log_chain_end() == before
        # At its latest version, or never written: the append goes ahead.
        recorder.insert_events([event], unchanged=[(read, 2), (uuid4(), 0)])
        assert recorder.select_events(written) == [event]
    finally:
        opened.close()
