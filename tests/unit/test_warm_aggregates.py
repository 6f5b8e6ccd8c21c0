"""The write path's shortcuts keep every guarantee of the slow path.

Commands keep the aggregates they saved (a warm copy, brought up to date
with whatever was appended since), each thread keeps its own SQLite
connection, and the SQLite recorder remembers the log chain link it wrote
last. Each test shows one of these seeing another writer's appends, or
staying out of the way of a nested or failed use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.support import eval_summary
from tests.unit.test_application import create, register, running_run
from trainledger.adapters.sqlite.recorder import LedgerSQLiteDatastore, LedgerSQLiteRecorder
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import DeployabilityError, InvalidTransitionError
from trainledger.domain.model import TrainingRun, command_context
from trainledger.service.ledger import TrainingLedger


@pytest.fixture
def two_ledgers(tmp_path: Path) -> Iterator[tuple[TrainingLedger, TrainingLedger]]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = open_ledger(url), open_ledger(url)
    yield first, second
    first.close()
    second.close()


def datastore(ledger: TrainingLedger) -> LedgerSQLiteDatastore:
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerSQLiteRecorder)
    assert isinstance(recorder.datastore, LedgerSQLiteDatastore)
    return recorder.datastore


def test_a_warm_run_sees_what_another_process_appended(
    two_ledgers: tuple[TrainingLedger, TrainingLedger],
) -> None:
    mine, theirs = two_ledgers
    run_id = running_run(mine)
    assert UUID(run_id) in mine._warm  # the start kept it warm

    theirs.complete_run(run_id, actor="bob")

    with pytest.raises(InvalidTransitionError):
        mine.complete_run(run_id, actor="alice")
    with pytest.raises(InvalidTransitionError):
        register(mine, run_id)
    assert mine.get_run(run_id).status == "completed"


def test_a_run_only_read_by_a_command_is_brought_up_to_date(
    two_ledgers: tuple[TrainingLedger, TrainingLedger],
) -> None:
    mine, theirs = two_ledgers
    run_id = running_run(mine)
    checkpoint_id = register(mine, run_id)
    mine.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "eval-1"), actor="alice")
    warm, _ = mine._warm[UUID(run_id)]
    assert isinstance(warm, TrainingRun)
    assert warm.status == "running"

    theirs.complete_run(run_id, actor="bob")

    # the mark appends to the checkpoint only: nothing would conflict on a stale run
    marked = mine.mark_deployable(checkpoint_id, actor="alice")
    assert marked["deployable"] is True


def test_a_refused_command_leaves_no_change_in_the_warm_copy(
    two_ledgers: tuple[TrainingLedger, TrainingLedger],
) -> None:
    mine, _ = two_ledgers
    run_id = running_run(mine)
    checkpoint_id = register(mine, run_id)
    # attach succeeds in memory, then the mark is refused (the run is still running)
    with pytest.raises(DeployabilityError):
        mine.attach_eval(
            checkpoint_id,
            eval_summary(checkpoint_id, "eval-1"),
            mark_deployable=True,
            actor="alice",
        )
    assert mine.get_checkpoint(checkpoint_id).version == 1
    mine.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "eval-1"), actor="alice")
    events = mine.history(checkpoint_id)["events"]
    assert [e["type"] for e in events] == ["Registered", "EvalAttached"]
    assert mine.verify()["ok"]


def test_appends_from_two_ledgers_interleaved_keep_one_log_chain(
    two_ledgers: tuple[TrainingLedger, TrainingLedger],
) -> None:
    mine, theirs = two_ledgers
    for turn in range(6):
        writer = mine if turn % 3 else theirs
        running_run(writer)
    assert mine.verify()["ok"]
    assert theirs.verify()["ok"]


def test_threads_sharing_one_ledger_lose_nothing(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'threads.db'}")
    shared_run = running_run(ledger)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    checkpoints: list[str] = []
    own_runs: list[str] = []

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(5):
                own = running_run(ledger)
                ledger.complete_run(own, actor="alice")
                own_runs.append(own)
                checkpoints.append(register(ledger, shared_run))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sorted(ledger.show_run(shared_run)["checkpointIds"]) == sorted(checkpoints)
    assert len(checkpoints) == 20
    assert all(ledger.get_run(run).status == "completed" for run in own_runs)
    assert ledger.verify()["ok"]
    ledger.close()


def test_closing_the_ledger_closes_every_threads_connection(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'close.db'}")
    store = datastore(ledger)
    held: list[Any] = []

    def work() -> None:
        create(ledger)
        held.append(store._lane.connection)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    create(ledger)
    held.append(store._lane.connection)
    assert len({id(c) for c in held}) == 2
    ledger.close()
    assert all(connection.closed for connection in held)


def test_a_nested_transaction_on_one_thread_uses_another_connection(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'nested.db'}")
    store = datastore(ledger)
    with store.transaction(commit=False) as outer:
        outer.execute("SELECT COUNT(*) FROM stored_events")
        with store.transaction(commit=True) as inner:
            inner.execute("SELECT 1")
            assert inner.fetchone()[0] == 1
        assert outer.fetchone()[0] == 0
    ledger.close()


def test_a_rolled_back_append_does_not_become_the_known_chain_tail(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    run_id = running_run(mine)
    recorder = mine.recorder
    assert isinstance(recorder, LedgerSQLiteRecorder)
    known = recorder._tail
    assert known is not None
    assert known[0] == mine.recorder.max_notification_id()
    insert = LedgerSQLiteRecorder._insert_events

    def insert_then_fail(self: LedgerSQLiteRecorder, *args: Any, **kwargs: Any) -> Any:
        insert(self, *args, **kwargs)  # the links are written, then the transaction fails
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(LedgerSQLiteRecorder, "_insert_events", insert_then_fail)
        with pytest.raises(RuntimeError):
            mine.complete_run(run_id, actor="alice")
    assert recorder._tail == known
    theirs.complete_run(run_id, actor="bob")
    running_run(mine)  # chains onto their link, not onto the one rolled back
    assert mine.verify()["ok"]
    assert mine.show_run(run_id)["status"] == "completed"


def test_a_saved_aggregate_is_reused_as_is_while_nothing_else_was_appended(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    run_id = running_run(mine)
    reads: list[Any] = []
    get = mine.events.get

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return get(*args, **kwargs)

    monkeypatch.setattr(mine.events, "get", counted)
    checkpoint_id = register(mine, run_id)
    assert reads == []  # the run, as saved by the start, was current

    theirs.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "theirs"), actor="bob")
    mine.complete_run(run_id, actor="alice")
    assert reads, "another connection appended: the run is read again"
    current = mine.get_checkpoint(checkpoint_id).current_eval
    assert current is not None
    assert current.evalId == "theirs"


def test_an_aggregate_only_read_is_not_trusted_as_is(
    two_ledgers: tuple[TrainingLedger, TrainingLedger],
) -> None:
    """It may have changed between its load and the append: it is brought up to date."""
    mine, _ = two_ledgers
    run_id = running_run(mine)
    checkpoint_id = register(mine, run_id)
    mine.complete_run(run_id, actor="alice")
    mine.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "eval-1"), actor="alice")
    mine.mark_deployable(checkpoint_id, actor="alice")  # reads the run, appends to the checkpoint
    _, run_token = mine._warm[UUID(run_id)]
    _, checkpoint_token = mine._warm[UUID(checkpoint_id)]
    assert run_token is None
    assert checkpoint_token is not None


def test_the_librarys_save_drops_the_warm_copy_of_what_it_saves(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'save.db'}")
    run_id = running_run(ledger)
    checkpoint_id = register(ledger, run_id)
    ledger.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "eval-1"), actor="alice")
    assert UUID(run_id) in ledger._warm
    run: TrainingRun = ledger.repository.get(UUID(run_id))  # past the ledger's commands
    with command_context("alice"):
        run.complete()
    ledger.save(run)
    assert UUID(run_id) not in ledger._warm
    # the mark reads the run only: a stale warm copy would still say running
    assert ledger.mark_deployable(checkpoint_id, actor="alice")["deployable"] is True
    ledger.close()
