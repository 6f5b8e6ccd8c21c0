"""Threads of one process writing one SQLite store take turns (adapters/sqlite/write_turns.py).

Each thread has its own ledger, as `trainledger serve`'s worker threads do:
every command of every thread is recorded, once, in a log that verifies;
a turn is waited for no longer than the store's lock timeout, and a turn
is given back whether the transaction committed or failed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support import reader_request
from trainledger.adapters.sqlite import write_turns
from trainledger.adapters.sqlite.recorder import LedgerSQLiteDatastore
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import ConflictError, InvalidTransitionError
from trainledger.service.ledger import TrainingLedger

THREADS = 4
RUNS_EACH = 15


def _experiment(ledger: TrainingLedger, out: Path, key: str | None = None) -> str:
    run_id: str = ledger.create_experiment(
        reader_request(out),
        dataset_fingerprint="0123456789abcdef",
        sample_count=3,
        actor="a",
        idempotency_key=key,
    )["trainRunId"]
    return run_id


def _datastore(ledger: TrainingLedger) -> LedgerSQLiteDatastore:
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    assert isinstance(datastore, LedgerSQLiteDatastore)
    return datastore


def test_threads_writing_at_once_record_every_command_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledgers = [open_ledger(url) for _ in range(THREADS)]
    started: dict[int, list[str]] = {}
    failures: list[BaseException] = []
    go = threading.Barrier(THREADS)

    def write(n: int) -> None:
        try:
            go.wait()
            runs = [_experiment(ledgers[n], tmp_path / "out") for _ in range(RUNS_EACH)]
            for run_id in runs:
                ledgers[n].start_run(run_id, actor="a")
            # All threads use one idempotency key: one run, whoever came first.
            runs.append(_experiment(ledgers[n], tmp_path / "out", key="shared"))
            started[n] = runs
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    reader = ledgers[0]
    shared = {runs[-1] for runs in started.values()}
    assert len(shared) == 1
    own = [run_id for runs in started.values() for run_id in runs[:-1]]
    assert len(set(own)) == THREADS * RUNS_EACH
    assert all(reader.show_run(run_id)["status"] == "running" for run_id in own)
    listed = reader.list_runs(limit=None)["runs"]
    assert len(listed) == THREADS * RUNS_EACH + 1
    assert reader.verify()["ok"] is True
    for ledger in ledgers:
        ledger.close()


def test_a_turn_held_past_the_lock_timeout_is_a_conflict_and_records_nothing(
    tmp_path: Path,
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}?lock_timeout=1")
    run_id = _experiment(ledger, tmp_path / "out")
    turn = _datastore(ledger).turn
    assert turn is write_turns.turn_of(_datastore(ledger).pool.db_name)
    holder = threading.Thread(target=turn.acquire)  # another thread is writing
    holder.start()
    holder.join()
    try:
        with pytest.raises(ConflictError, match="stayed locked"):
            ledger.start_run(run_id, actor="a")
    finally:
        turn.release()
    assert ledger.show_run(run_id)["status"] == "pending"
    # Given back, the turn is taken again at once.
    ledger.start_run(run_id, actor="a")
    assert ledger.show_run(run_id)["status"] == "running"
    ledger.close()


def test_a_refused_or_failed_write_gives_its_turn_back(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}?lock_timeout=1")
    datastore = _datastore(ledger)
    with pytest.raises(RuntimeError), datastore.transaction(commit=True):
        raise RuntimeError("the command failed inside its transaction")
    assert not datastore.turn.locked()
    run_id = _experiment(ledger, tmp_path / "out")
    ledger.start_run(run_id, actor="a")
    with pytest.raises(InvalidTransitionError):
        ledger.start_run(run_id, actor="a")  # refused: already running
    assert not datastore.turn.locked()
    ledger.close()
