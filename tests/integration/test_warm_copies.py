"""Warm copies: a command decides on the aggregates its ledger saved last, and a copy
another writer made stale never changes an answer (`service.unit_of_work`).

Two ledgers on one store stand for two processes: one writes behind the
other's copies, and each test checks that the first ledger answers what a
ledger loading everything fresh would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.support import READER_FAMILY, eval_summary, reader_request, write_artifact
from trainledger.adapters.http.ledgers import LedgerPool
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import (
    CheckpointNotFoundError,
    InvalidTransitionError,
    LedgerError,
)
from trainledger.domain.model import LedgerAggregate, TrainingRun
from trainledger.service.ledger import TrainingLedger
from trainledger.service.unit_of_work import WarmCopies


@pytest.fixture
def ledgers(store_url: str) -> Iterator[tuple[TrainingLedger, TrainingLedger]]:
    """This process's ledger and another writer's, on one store."""
    ours, theirs = open_ledger(store_url), open_ledger(store_url)
    yield ours, theirs
    ours.close()
    theirs.close()


def new_run(ledger: TrainingLedger, tmp_path: Path) -> str:
    created = ledger.create_experiment(
        reader_request(tmp_path / "out"),
        dataset_fingerprint="0123456789abcdef",
        sample_count=4,
        actor="alice",
    )
    run_id: str = created["trainRunId"]
    return run_id


def actors(ledger: TrainingLedger, aggregate_id: str) -> list[str]:
    """Who wrote each event of an aggregate, oldest first."""
    return [event["actor"] for event in ledger.history(aggregate_id)["events"]]


def state(aggregate: LedgerAggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def test_a_command_keeps_the_aggregates_it_saved_and_each_copy_is_what_the_store_holds(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, theirs = ledgers
    warm = ours.unit_of_work.warm
    run_id = new_run(ours, tmp_path)
    ours.start_run(run_id, actor="alice")
    checkpoint_id = ours.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=write_artifact(tmp_path), actor="alice"
    )["checkpointId"]
    ours.complete_run(run_id, actor="alice")
    ours.attach_eval(checkpoint_id, eval_summary(checkpoint_id), actor="bob")
    ours.mark_deployable(checkpoint_id, actor="bob")
    for aggregate_id in (run_id, checkpoint_id):
        copy = warm.take(UUID(aggregate_id))
        assert copy is not None, f"{aggregate_id} was not kept"
        assert state(copy) == state(theirs.unit_of_work.load(UUID(aggregate_id)))
        warm.keep(copy)


def test_a_refusal_on_a_stale_copy_is_decided_again_on_the_store(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, theirs = ledgers
    run_id = new_run(ours, tmp_path)  # our copy: pending
    theirs.start_run(run_id, actor="carol")
    # On our copy the run cannot complete; on the store it can.
    assert ours.complete_run(run_id, actor="alice")["status"] == "completed"
    assert actors(theirs, run_id) == ["alice", "carol", "alice"]


def test_a_stale_copy_that_would_conflict_gets_the_answer_fresh_state_gives(
    ledgers: tuple[TrainingLedger, TrainingLedger], store_url: str, tmp_path: Path
) -> None:
    ours, theirs = ledgers
    run_id = new_run(ours, tmp_path)
    ours.start_run(run_id, actor="alice")  # our copy: running
    theirs.complete_run(run_id, actor="carol")
    before = actors(theirs, run_id)
    with pytest.raises(InvalidTransitionError) as ours_refused:
        ours.fail_run(run_id, "out of memory", actor="alice")
    fresh = open_ledger(store_url)
    try:
        with pytest.raises(InvalidTransitionError) as fresh_refused:
            fresh.fail_run(run_id, "out of memory", actor="alice")
    finally:
        fresh.close()
    assert ours_refused.value.message == fresh_refused.value.message
    assert actors(theirs, run_id) == before


def test_a_copy_a_command_only_reads_is_checked_for_newer_events(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, theirs = ledgers
    run_id = new_run(ours, tmp_path)  # our copy: pending, version 1
    theirs.start_run(run_id, actor="carol")
    seen: list[str] = []

    def body() -> tuple[list[LedgerAggregate], dict[str, Any], list[Any]]:
        run = ours.unit_of_work.get_run(run_id)
        seen.append(run.status)
        return [], {"status": run.status}, []

    outcome = ours.unit_of_work.run("probe", {}, "alice", None, body)
    assert outcome == {"status": "running"}
    assert seen == ["pending", "running"]  # decided on the copy, then again on the store


def test_a_copy_a_command_only_reads_is_confirmed_by_its_append(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    """A decision that read one aggregate on a copy and changes another: its append
    is refused, with nothing kept, when the copy it read is stale (checked in the
    append's own transaction, with no wait for the store before it)."""
    ours, theirs = ledgers
    read_id, written_id = new_run(ours, tmp_path / "read"), new_run(ours, tmp_path / "written")
    theirs.start_run(read_id, actor="carol")  # our copy of read_id: pending
    seen: list[str] = []

    def body() -> tuple[list[LedgerAggregate], dict[str, Any], list[Any]]:
        read = ours.unit_of_work.get_run(read_id)
        seen.append(read.status)
        written = ours.unit_of_work.get_run(written_id)
        if written.status == "pending":
            written.start(host=f"saw-{read.status}")
        else:
            written.complete()
        return [written], {"status": read.status}, []

    outcome = ours.unit_of_work.run("probe", {}, "alice", None, body)
    assert outcome == {"status": "running"}
    assert seen == ["pending", "running"]  # decided on the copies, refused, again fresh
    assert actors(theirs, written_id) == ["alice", "alice"]  # started once, on fresh state
    assert theirs.get_run(written_id).host == "saw-running"

    # Both copies now as stored: the next such decision reads nothing from the store
    # before its append, which confirms the copy it read.
    looked: list[UUID] = []
    select_events = ours.unit_of_work.app.recorder.select_events

    def spy(originator_id: UUID, **kwargs: Any) -> Any:
        looked.append(originator_id)
        return select_events(originator_id, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ours.unit_of_work.app.recorder, "select_events", spy)
        assert ours.unit_of_work.run("probe", {}, "alice", None, body) == {"status": "running"}
    assert looked == []
    assert seen[2:] == ["running"]
    assert actors(theirs, written_id) == ["alice", "alice", "alice"]


def test_an_aggregate_read_outside_a_command_is_loaded_fresh(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, theirs = ledgers
    run_id = new_run(ours, tmp_path)
    theirs.start_run(run_id, actor="carol")
    read = ours.get_run(run_id)
    assert read.status == "running"
    copy = ours.unit_of_work.warm.take(UUID(run_id))
    assert isinstance(copy, TrainingRun)
    assert copy is not read
    assert copy.status == "pending"


def test_an_id_of_the_wrong_kind_is_not_found_with_or_without_a_copy(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, _ = ledgers
    run_id = new_run(ours, tmp_path)  # a copy of a run, asked for as a checkpoint
    with pytest.raises(CheckpointNotFoundError):
        ours.mark_deployable(run_id, actor="bob")
    with pytest.raises(CheckpointNotFoundError):
        ours.mark_deployable(run_id, actor="bob")
    assert ours.start_run(run_id, actor="alice")["status"] == "running"


def test_a_refused_command_leaves_no_copy_of_what_it_changed(
    ledgers: tuple[TrainingLedger, TrainingLedger], tmp_path: Path
) -> None:
    ours, theirs = ledgers
    run_id = new_run(ours, tmp_path)
    ours.start_run(run_id, actor="alice")
    with pytest.raises(LedgerError):
        ours.attach_eval(run_id, eval_summary(run_id), actor="bob")  # a run is no checkpoint
    ours.complete_run(run_id, actor="alice")
    assert theirs.get_run(run_id).status == "completed"
    copy = ours.unit_of_work.warm.take(UUID(run_id))
    assert copy is not None
    assert not copy.pending_events
    assert state(copy) == state(theirs.unit_of_work.load(UUID(run_id)))


def test_warm_copies_keep_the_newest_within_their_size() -> None:
    copies = WarmCopies(size=2)
    runs = [TrainingRun.__new__(TrainingRun) for _ in range(3)]
    for n, run in enumerate(runs):
        run._id = UUID(int=n + 1)
        run._pending_events = []
        copies.keep(run)
    assert len(copies) == 2
    assert copies.take(UUID(int=1)) is None
    assert copies.take(UUID(int=3)) is runs[2]


def test_the_services_worker_threads_share_their_warm_copies(
    store_url: str, tmp_path: Path
) -> None:
    pool = LedgerPool(lambda: open_ledger(store_url), store_url, workers=2)

    def on_a_thread(work: Callable[[TrainingLedger], Any]) -> Any:
        answer: list[Any] = []
        thread = threading.Thread(target=lambda: answer.append(pool.run(work)))
        thread.start()
        thread.join()
        return answer[0]

    try:
        first = on_a_thread(lambda ledger: ledger)
        run_id = on_a_thread(lambda ledger: new_run(ledger, tmp_path))
        second = on_a_thread(lambda ledger: ledger)
        assert first is not second
        assert first.unit_of_work.warm is second.unit_of_work.warm is pool.warm
        on_a_thread(lambda ledger: ledger.start_run(run_id, actor="alice"))
        copy = pool.warm.take(UUID(run_id))
        assert isinstance(copy, TrainingRun)
        assert copy.status == "running"
    finally:
        pool.close()
