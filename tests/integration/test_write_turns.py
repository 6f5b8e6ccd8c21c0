"""Threads of one process, and processes sharing turns, writing one SQLite store take turns
(adapters/sqlite/write_turns.py).

Each thread has its own ledger, as `trainledger serve`'s worker threads do,
and so does each process of `serve --processes`: every command of every
writer is recorded, once, in a log that verifies; a turn is waited for no
longer than the store's lock timeout, whether a thread or another process
holds it, and a turn is given back whether the transaction committed or
failed.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
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
    holder = threading.Thread(target=turn.take, args=(1.0,))  # another thread is writing
    holder.start()
    holder.join()
    try:
        with pytest.raises(ConflictError, match="stayed locked"):
            ledger.start_run(run_id, actor="a")
    finally:
        turn.give_back()
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
    assert not datastore.turn.taken()
    run_id = _experiment(ledger, tmp_path / "out")
    ledger.start_run(run_id, actor="a")
    with pytest.raises(InvalidTransitionError):
        ledger.start_run(run_id, actor="a")  # refused: already running
    assert not datastore.turn.taken()
    ledger.close()


PROCESSES = 3


def _write_in_a_process(url: str, out: str) -> list[str]:
    """One process of a service: shares turns, writes runs, starts them."""
    write_turns.share_between_processes()
    ledger = open_ledger(url)
    runs = [_experiment(ledger, Path(out)) for _ in range(RUNS_EACH)]
    for run_id in runs:
        ledger.start_run(run_id, actor="a")
    ledger.close()
    return runs


def test_processes_sharing_turns_record_every_command_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()  # the store, before the writers race to make it
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        started = pool.starmap(_write_in_a_process, [(url, str(tmp_path / "out"))] * PROCESSES)
    own = [run_id for runs in started for run_id in runs]
    assert len(set(own)) == PROCESSES * RUNS_EACH
    reader = open_ledger(url)
    assert all(reader.show_run(run_id)["status"] == "running" for run_id in own)
    assert reader.verify()["ok"] is True
    reader.close()
    assert (tmp_path / f"ledger.db{write_turns.TURN_FILE_SUFFIX}").is_file()


def test_a_turn_held_by_another_process_past_the_lock_timeout_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}?lock_timeout=1")
    run_id = _experiment(ledger, tmp_path / "out")
    sharing = threading.Event()
    sharing.set()
    monkeypatch.setattr(write_turns, "_sharing", sharing)
    # The turn file locked through a file description of its own is what another
    # process holding the turn looks like (flock locks belong to file descriptions).
    other = os.open(tmp_path / f"ledger.db{write_turns.TURN_FILE_SUFFIX}", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(ConflictError, match="stayed locked"):
            ledger.start_run(run_id, actor="a")
        assert not _datastore(ledger).turn.taken()  # the thread's part given back too
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    assert ledger.show_run(run_id)["status"] == "pending"
    ledger.start_run(run_id, actor="a")
    assert ledger.show_run(run_id)["status"] == "running"
    ledger.close()


def test_turns_not_shared_leave_no_file_beside_the_store(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.start_run(_experiment(ledger, tmp_path / "out"), actor="a")
    ledger.close()
    assert not (tmp_path / f"ledger.db{write_turns.TURN_FILE_SUFFIX}").exists()
