"""A long stretch of the SQLite log is translated by worker processes: the same views result.

The stores here are small, so the tests lower the length from which workers
are used (`WORKERS_FROM`) and the page size, to have many pages shared among
the workers.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.projection_support import scripted_history
from trainledger.adapters.memory.view import MemoryLedgerView
from trainledger.adapters.persistence import OrjsonTranscoder, PydanticMapper
from trainledger.adapters.sqlite import log_workers
from trainledger.adapters.sqlite.log import SQLiteLogReader
from trainledger.adapters.sqlite.log_workers import WorkerPages
from trainledger.adapters.sqlite.view_schema import INDEX_NAMES
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import CorruptStoreError
from trainledger.projections.log import FactPage, LogReader
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger

PAGE = 40


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store of several hundred events, with every kind of event."""
    path = tmp_path_factory.mktemp("workers") / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    scripted_history(ledger, runs=80, seed=5)
    ledger.close()
    return path


@pytest.fixture
def ledger(
    history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrainingLedger]:
    path = tmp_path / "ledger.db"
    shutil.copy(history, path)
    monkeypatch.setattr(SQLiteLogReader, "WORKERS_FROM", 1)
    monkeypatch.setattr(ProjectionReadModel, "REBUILD_PAGE", PAGE)
    opened = open_ledger(f"sqlite:///{path}")
    yield opened
    opened.close()


def read_model(ledger: TrainingLedger) -> ProjectionReadModel:
    return cast(ProjectionReadModel, ledger.read_model)


def translated_in_process(ledger: TrainingLedger) -> object:
    """The views as one process makes them: a replay into memory, through the library's API."""
    log = LogReader(ledger.recorder, ledger.mapper)
    replay = ProjectionReadModel(ledger.name, log, MemoryLedgerView(), replay_view=MemoryLedgerView)
    replay.apply_log(page_size=PAGE)
    with replay.view.reader() as reader:
        return reader.dump()


def count_worker_pages(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counted: list[int] = []
    pages_of = WorkerPages.__iter__

    def counting(self: WorkerPages) -> Iterator[FactPage]:
        for page in pages_of(self):
            counted.append(page.events)
            yield page

    monkeypatch.setattr(WorkerPages, "__iter__", counting)
    return counted


def test_a_rebuild_by_workers_makes_the_views_of_a_replay(
    ledger: TrainingLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = translated_in_process(ledger)
    worker_pages = count_worker_pages(monkeypatch)

    report = ledger.rebuild_projections()

    events = ledger.recorder.max_notification_id()
    assert report["eventsApplied"] == report["position"] == events
    assert sum(worker_pages) == events
    assert len(worker_pages) > 4
    with read_model(ledger).view.reader() as reader:
        assert reader.dump() == expected
    assert ledger.projection_differences() == []  # the replay has workers too
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert set(INDEX_NAMES) <= names


def test_the_replay_by_workers_still_finds_a_changed_view_row(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    ledger.stats()
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        connection.execute("UPDATE view_evals SET verdict = 'pass' WHERE verdict = 'fail'")
        connection.execute(
            "DELETE FROM view_checkpoint_links WHERE run_id = "
            "(SELECT MIN(run_id) FROM view_checkpoint_links)"
        )
    differences = ledger.projection_differences()
    assert [d.split(":")[0] for d in differences] == ["evals", "links"]


def test_workers_that_cannot_start_leave_the_work_to_the_parent(
    ledger: TrainingLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = translated_in_process(ledger)
    monkeypatch.setattr(sys, "executable", shutil.which("false") or "/bin/false")
    worker_pages = count_worker_pages(monkeypatch)

    ledger.rebuild_projections()

    assert worker_pages == []
    with read_model(ledger).view.reader() as reader:
        assert reader.dump() == expected


def test_an_event_a_worker_cannot_read_is_reported_at_its_position(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    ledger.close()
    connection = sqlite3.connect(path)
    connection.execute("DROP TRIGGER stored_events_append_only_update")
    position = 3 * PAGE + 7  # in a page of a worker
    connection.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"[1]", position))
    connection.commit()
    connection.close()
    reopened = open_ledger(f"sqlite:///{path}")
    try:
        with pytest.raises(CorruptStoreError, match=rf"position {position} "):
            reopened.rebuild_projections()
    finally:
        reopened.close()


def test_the_pages_of_a_job_cover_its_stretch_small_ones_first() -> None:
    job = log_workers.TranslationJob(
        database=":memory:",
        events_table="stored_events",
        mapper=PydanticMapper(transcoder=OrjsonTranscoder()),
        after=10,
        upto=1_000,
        page_size=160,
        parts=2,
    )
    pages = job.pages()
    assert [last - after for after, last in pages][:5] == [10, 20, 40, 80, 160]
    assert pages[0][0] == 10
    assert pages[-1][1] == 1_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pages))
