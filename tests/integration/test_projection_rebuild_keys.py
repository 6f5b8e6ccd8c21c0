"""A SQLite rebuild writes its rows without the key indexes and makes them at the end.

While they are dropped, the view itself refuses a duplicate id (as the unique
index would) and finds the rows of earlier pages by rowid for their updates;
whatever interrupts the rebuild, the indexes come back and the views equal a
replay of the log.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from tests.projection_support import scripted_history
from trainledger.adapters.sqlite.log import SQLiteLogReader
from trainledger.adapters.sqlite.view import SQLiteLedgerView
from trainledger.adapters.sqlite.view_schema import INDEX_NAMES, KEY_NAMES, RUN_COLUMNS
from trainledger.adapters.store import open_ledger
from trainledger.projections.facts import FactBatch
from trainledger.projections.projection import record_facts
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.projections.view import StaleTrackingError
from trainledger.service.ledger import TrainingLedger

PAGE = 10


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    scripted_history(ledger, runs=40, seed=11)
    ledger.close()
    return path


@pytest.fixture
def url(history: Path, tmp_path: Path) -> str:
    shutil.copy(history, tmp_path / "ledger.db")
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(url: str) -> Iterator[TrainingLedger]:
    opened = open_ledger(url)
    yield opened
    opened.close()


def read_model(ledger: TrainingLedger) -> ProjectionReadModel:
    return cast(ProjectionReadModel, ledger.read_model)


def view(ledger: TrainingLedger) -> SQLiteLedgerView:
    return cast(SQLiteLedgerView, read_model(ledger).view)


def apply_pages(ledger: TrainingLedger, after: int, pages: int) -> tuple[int, list[FactBatch]]:
    """Apply `pages` pages of the log after `after`, as a rebuild does; the position reached."""
    model = read_model(ledger)
    batches = []
    for _ in range(pages):
        records = model.log.page(after, PAGE)
        batch = record_facts(records)
        model.view.apply(batch, Tracking(ledger.name, records[-1].position), after)
        batches.append(batch)
        after = records[-1].position
    return after, batches


def schema_names(url: str) -> set[str]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}


def test_a_rebuild_with_updates_across_pages_makes_the_views_of_a_replay(
    ledger: TrainingLedger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLiteLogReader, "WORKERS", 0)
    monkeypatch.setattr(ProjectionReadModel, "REBUILD_PAGE", PAGE)
    updates: list[int] = []
    apply = SQLiteLedgerView.apply

    def counting(self: SQLiteLedgerView, batch: FactBatch, tracking: Tracking, prev: int) -> None:
        assert not set(KEY_NAMES) & schema_names(url)  # the rebuild runs without them
        updates.append(
            len(batch.starts)
            + len(batch.completions)
            + len(batch.failures)
            + len(batch.deployability_updates)
        )
        apply(self, batch, tracking, prev)

    monkeypatch.setattr(SQLiteLedgerView, "apply", counting)
    ledger.rebuild_projections()
    monkeypatch.setattr(SQLiteLedgerView, "apply", apply)

    assert sum(updates) > 10  # rows of earlier pages were updated (found by rowid)
    assert ledger.projection_differences() == []
    assert set(KEY_NAMES) | set(INDEX_NAMES) <= schema_names(url)


def duplicate(ledger: TrainingLedger, table: str, where: str) -> FactBatch:
    """A page with a row whose id is in the first two pages, or twice in the page."""
    first = record_facts(read_model(ledger).log.page(0, 2 * PAGE))
    assert first.runs
    assert first.evals
    if table == "view_runs.run_id":
        run = first.runs[0]
        return FactBatch(
            runs=[run] if where == "earlier page" else [run._replace(run_id="f" * 32)] * 2
        )
    summary = first.evals[0]
    return FactBatch(
        evals=[summary] if where == "earlier page" else [summary._replace(eval_id="fresh")] * 2
    )


@pytest.mark.parametrize("table", ["view_runs.run_id", "view_evals.eval_id"])
@pytest.mark.parametrize("where", ["earlier page", "same page"])
def test_a_rebuild_refuses_a_duplicate_id_as_the_key_index_does(
    ledger: TrainingLedger, table: str, where: str
) -> None:
    page = duplicate(ledger, table, where)

    def refused(position: int) -> str:
        with pytest.raises(IntegrityError) as raised:
            view(ledger).apply(page, Tracking(ledger.name, position + 1), position)
        assert view(ledger).position(ledger.name) == position  # nothing applied
        return str(raised.value)

    # As the view refuses the page with its key indexes (a catch-up)...
    ledger.stats()
    assert f"UNIQUE constraint failed: {table}" in refused(view(ledger).position(ledger.name))
    # ...so it does during a rebuild, without them.
    view(ledger).reset(ledger.name)
    position, _ = apply_pages(ledger, 0, 2)
    assert f"UNIQUE constraint failed: {table}" in refused(position)
    view(ledger).finish_rebuild()
    assert ledger.projection_differences() == []


def test_an_interrupted_rebuild_gets_its_keys_back_on_the_next_open(url: str) -> None:
    ledger = open_ledger(url)
    ledger.stats()
    view(ledger).reset(ledger.name)
    apply_pages(ledger, 0, 3)
    ledger.close()  # as if killed: no `finish_rebuild`
    assert not set(KEY_NAMES) & schema_names(url)

    reopened = open_ledger(url)
    try:
        assert set(KEY_NAMES) | set(INDEX_NAMES) <= schema_names(url)
        assert view(reopened).position(reopened.name) == 3 * PAGE
        assert reopened.projection_differences() == []  # caught up from there
    finally:
        reopened.close()


def test_a_duplicate_row_left_without_keys_is_dropped_on_open_and_rebuilt(url: str) -> None:
    ledger = open_ledger(url)
    expected = ledger.stats()
    view(ledger).reset(ledger.name)
    apply_pages(ledger, 0, 2)
    ledger.close()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        connection.execute(
            f"INSERT INTO view_runs ({RUN_COLUMNS}) SELECT {RUN_COLUMNS} FROM view_runs LIMIT 1"
        )

    reopened = open_ledger(url)
    try:
        assert set(KEY_NAMES) <= schema_names(url)
        assert view(reopened).position(reopened.name) == 0
        assert reopened.stats() == expected
        assert reopened.projection_differences() == []
    finally:
        reopened.close()


def test_a_catch_up_by_another_process_during_a_rebuild_brings_the_keys_back(url: str) -> None:
    rebuilding, other = open_ledger(url), open_ledger(url)
    try:
        view(rebuilding).reset(rebuilding.name)
        position, _ = apply_pages(rebuilding, 0, 1)
        other.stats()  # its catch-up applies the rest of the log, the keys dropped
        with pytest.raises(StaleTrackingError):
            apply_pages(rebuilding, position, 1)
        assert set(KEY_NAMES) <= schema_names(url)
        assert rebuilding.projection_differences() == []
        # From here on the key indexes refuse duplicates.
        with view(rebuilding).reader() as reader:
            run = reader.runs(limit=1)[0]
        moved = view(rebuilding).position(rebuilding.name)
        with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: view_runs\.run_id"):
            view(rebuilding).apply(
                FactBatch(runs=[run]), Tracking(rebuilding.name, moved + 1), moved
            )
    finally:
        rebuilding.close()
        other.close()
