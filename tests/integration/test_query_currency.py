"""Queries on SQLite tell in their own read transaction whether the views are caught up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.projection_support import create_run
from tests.support import deployable_lifecycle
from trainledger.adapters.sqlite.view import SQLiteLedgerView
from trainledger.adapters.store import open_ledger
from trainledger.projections.read_model import ProjectionReadModel


def test_caught_up_views_answer_without_catching_up_and_new_events_are_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    run_id, checkpoint_id = deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    read_model = ledger.read_model
    assert isinstance(read_model, ProjectionReadModel)
    assert isinstance(read_model.view, SQLiteLedgerView)
    assert read_model.view.log_table == "stored_events"
    read_model.catch_up()

    caught_up: list[int] = []
    catch_up = read_model.catch_up

    def spy() -> int:
        caught_up.append(catch_up())
        return caught_up[-1]

    monkeypatch.setattr(read_model, "catch_up", spy)
    assert ledger.lineage(checkpoint_id)["trainRunId"] == run_id
    assert ledger.stats()["totalRuns"] == 1
    assert caught_up == []  # the views were at the end of the log

    other = open_ledger(url)  # another writer, as another process would be
    second = create_run(other)
    other.close()
    runs = ledger.list_runs()["runs"]
    assert {r["trainRunId"] for r in runs} == {run_id, second}
    assert caught_up == [1]
    ledger.close()


def test_views_kept_apart_from_the_log_catch_up_before_each_query(tmp_path: Path) -> None:
    ledger = open_ledger("memory://")
    read_model = ledger.read_model
    assert isinstance(read_model, ProjectionReadModel)
    with read_model.view.reader() as reader:
        assert reader.log_position() is None
    run_id = create_run(ledger)
    assert [r["trainRunId"] for r in ledger.list_runs()["runs"]] == [run_id]
    ledger.close()
