"""The queries on every backend: as-of at each event boundary, catch-up, concurrent catch-ups.

Answers are checked against an oracle built from the aggregates themselves
(`tests.projection_support.Oracle`), never from a projection.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder

from tests.projection_support import (
    ACTOR,
    DATASETS,
    Oracle,
    copy_log,
    create_run,
    logged_events,
    moment_of,
    scripted_history,
    summaries,
)
from trainledger.adapters.sqlite.view_schema import INDEX_NAMES
from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import TrainerResult
from trainledger.domain.errors import (
    CheckpointNotFoundError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
    ViewsInconsistentError,
)
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger

ZERO_STATS = dict.fromkeys(
    (
        "totalRuns",
        "completedRuns",
        "failedRuns",
        "pendingRuns",
        "runningRuns",
        "totalCheckpoints",
        "deployableCheckpoints",
        "totalEvals",
        "passingEvals",
        "failingEvals",
        "promotableCheckpoints",
        "routedProfiles",
    ),
    0,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each backend (PostgreSQL answers from an in-memory view for now)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def ledger(any_url: str) -> Iterator[TrainingLedger]:
    opened = open_ledger(any_url)
    yield opened
    opened.close()


def read_model(ledger: TrainingLedger) -> ProjectionReadModel:
    return cast(ProjectionReadModel, ledger.read_model)


def test_as_of_at_each_event_boundary_is_the_state_after_that_many_events(
    ledger: TrainingLedger,
) -> None:
    scripted_history(ledger, runs=9, seed=3)
    events = logged_events(ledger)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert {e.type for e in events} >= {"Failed", "DeployabilityRevoked", "MarkedDeployable"}

    before_first = moment_of(events[0].timestamp) - timedelta(microseconds=1)
    assert ledger.list_runs(as_of=before_first) == {"runs": []}
    assert ledger.list_checkpoints(as_of=before_first) == {"checkpoints": []}
    assert ledger.list_evals(as_of=before_first) == {"evals": []}
    assert ledger.stats(as_of=before_first) == ZERO_STATS
    # before an entity existed the answer is empty, not an error (issue 4)
    assert ledger.show_run(events[0].aggregate_id, as_of=before_first) == {}
    with pytest.raises(RunNotFoundError):
        ledger.show_run(str(uuid4()))  # without as-of an unknown id is not found

    checked = 0
    for k, event in enumerate(events):
        if k + 1 < len(events) and events[k + 1].timestamp == event.timestamp:
            continue  # two events of one instant: the boundary is after the second
        at = moment_of(event.timestamp)
        oracle = Oracle.after(ledger, events[: k + 1])
        assert ledger.list_runs(as_of=at)["runs"] == oracle.runs
        assert ledger.list_checkpoints(as_of=at)["checkpoints"] == oracle.checkpoints
        assert summaries(ledger.list_evals(as_of=at)["evals"]) == oracle.evals
        assert ledger.stats(as_of=at) == oracle.stats()
        for status in ("pending", "running", "completed", "failed"):
            listed = ledger.list_runs(status=status, as_of=at)["runs"]
            assert listed == [r for r in oracle.runs if r["status"] == status]
        for deployable in (True, False):
            listed = ledger.list_checkpoints(deployable=deployable, as_of=at)["checkpoints"]
            assert listed == [c for c in oracle.checkpoints if c["deployable"] == deployable]
        runs = {r["trainRunId"]: r for r in oracle.runs}
        if event.aggregate_id in runs:
            assert ledger.show_run(event.aggregate_id, as_of=at) == runs[event.aggregate_id]
        for checkpoint in oracle.checkpoints:
            if checkpoint["checkpointId"] == event.aggregate_id:
                lineage = ledger.lineage(event.aggregate_id, as_of=at)
                assert lineage["checkpoint"] == checkpoint
                assert lineage["run"] == runs[checkpoint["trainRunId"]]
                assert summaries(lineage["evals"]) == checkpoint["evals"]
                assert lineage["deployabilityHistory"] == checkpoint["deployabilityHistory"]
        checked += 1
    assert checked > len(events) // 2

    now = Oracle.after(ledger, events)
    assert ledger.list_runs()["runs"] == now.runs
    assert ledger.list_checkpoints()["checkpoints"] == now.checkpoints
    assert ledger.stats() == now.stats()


def test_impact_and_list_filters_match_the_oracle(ledger: TrainingLedger) -> None:
    scripted_history(ledger, runs=12, seed=11)
    oracle = Oracle.after(ledger, logged_events(ledger))
    for dataset in DATASETS:
        impact = ledger.impact(dataset)
        runs = [r for r in oracle.runs if r["datasetFingerprint"] == dataset]
        assert [r["trainRunId"] for r in impact["runs"]] == [r["trainRunId"] for r in runs]
        produced = [
            c for c in oracle.checkpoints if c["trainRunId"] in {r["trainRunId"] for r in runs}
        ]
        assert impact["checkpoints"] == produced
        assert impact["deployableCheckpointIds"] == [
            c["checkpointId"] for c in produced if c["deployable"]
        ]
        assert ledger.list_runs(dataset_fingerprint=dataset)["runs"] == runs
    assert ledger.impact("dddddddddddddddd")["runs"] == []
    with pytest.raises(ValidationError):
        ledger.impact("not-a-fingerprint")

    family = oracle.runs[0]["targetModelFamily"]
    assert ledger.list_runs(family=family)["runs"] == [
        r for r in oracle.runs if r["targetModelFamily"] == family
    ]
    assert ledger.list_checkpoints(family=family)["checkpoints"] == [
        c for c in oracle.checkpoints if c["targetModelFamily"] == family
    ]
    run_id = oracle.checkpoints[0]["trainRunId"]
    assert ledger.list_checkpoints(run_id=run_id)["checkpoints"] == [
        c for c in oracle.checkpoints if c["trainRunId"] == run_id
    ]
    for verdict in ("pass", "fail", "compare_only"):
        listed = summaries(ledger.list_evals(verdict=verdict)["evals"])
        assert listed == [e for e in oracle.evals if e["verdict"] == verdict]
    checkpoint_id = oracle.evals[0]["checkpointId"]
    assert summaries(ledger.list_evals(checkpoint_id=checkpoint_id)["evals"]) == [
        e for e in oracle.evals if e["checkpointId"] == checkpoint_id
    ]
    assert summaries(ledger.list_evals(family=family, benchmark_id="bench-1")["evals"]) == [
        e for e in oracle.evals if e["targetModelFamily"] == family
    ]
    assert len(ledger.list_runs(limit=2)["runs"]) == 2
    assert ledger.list_runs(limit=2)["runs"] == oracle.runs[:2]
    with pytest.raises(ValidationError):
        ledger.list_runs(status="finished")
    with pytest.raises(NotFoundError):
        ledger.lineage("not-an-id")
    with pytest.raises(CheckpointNotFoundError):
        ledger.show_checkpoint(run_id)  # a run's id is no checkpoint


def test_queries_read_and_build_their_answers_without_the_cycle_collector(
    ledger: TrainingLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer is acyclic, freed by reference counting: collecting while it is built would
    only walk it, and `impact` builds thousands of documents (bench/README, "impact")."""
    scripted_history(ledger, runs=12, seed=11)
    model = read_model(ledger)
    reading = model.view.reader
    inside = [False]
    states: list[bool] = []
    collections: list[int] = []

    @contextmanager
    def watched() -> Iterator[Any]:
        with reading() as reader:
            states.append(gc.isenabled())
            inside[0] = True
            try:
                yield reader
            finally:
                inside[0] = False

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and inside[0]:
            collections.append(info["generation"])

    monkeypatch.setattr(model.view, "reader", watched)
    threshold = gc.get_threshold()
    gc.callbacks.append(count)
    gc.set_threshold(1)  # any container made while the collector runs would start one
    try:
        impact = ledger.impact(DATASETS[0])
        ledger.lineage(impact["checkpoints"][0]["checkpointId"])
        ledger.list_runs()
        ledger.stats()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(count)
    assert impact["runs"]
    assert states
    assert not any(states)
    assert collections == []
    assert gc.isenabled()
    with pytest.raises(CheckpointNotFoundError):
        ledger.lineage(str(uuid4()))
    assert gc.isenabled()  # as a failed query found it
    gc.disable()
    try:
        ledger.impact(DATASETS[0])
        assert not gc.isenabled()  # nor does a query start it
    finally:
        gc.enable()


def test_queries_of_many_threads_leave_the_cycle_collector_running(
    ledger: TrainingLedger,
) -> None:
    scripted_history(ledger, runs=12, seed=11)
    expected = ledger.impact(DATASETS[0])
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def query() -> None:
        try:
            for _ in range(10):
                answers.append(ledger.impact(DATASETS[0]))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=query) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert answers == [expected] * 40
    assert gc.isenabled()


def test_naive_as_of_is_refused(ledger: TrainingLedger) -> None:
    with pytest.raises(ValidationError, match="time zone"):
        ledger.stats(as_of=moment_of("2025-01-01T00:00:00"))


def test_a_command_is_visible_to_the_next_query_of_another_process_view(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    writer, reader = open_ledger(url), open_ledger(url)
    assert reader.stats()["totalRuns"] == 0
    scripted_history(writer, runs=3)
    assert reader.list_runs()["runs"] == writer.list_runs()["runs"]
    assert reader.stats() == Oracle.after(reader, logged_events(reader)).stats()


def test_concurrent_catch_ups_apply_each_event_once(tmp_path: Path) -> None:
    source = open_ledger("memory://")
    scripted_history(source, runs=60, seed=5)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    copy_log(source, open_ledger(url))
    ledgers = [open_ledger(url) for _ in range(4)]
    for opened in ledgers:
        read_model(opened).CATCH_UP_PAGE = 7
    errors: list[BaseException] = []

    def catch_up(opened: TrainingLedger) -> None:
        try:
            read_model(opened).catch_up()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=catch_up, args=(opened,)) for opened in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledgers[0].projection_differences() == []
    assert ledgers[1].stats() == Oracle.after(source, logged_events(source)).stats()


def test_views_of_an_older_schema_are_dropped_and_rebuilt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    scripted_history(ledger, runs=4)
    expected = ledger.list_checkpoints()
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        connection.execute("UPDATE view_schema SET version = 0")
        connection.execute("ALTER TABLE view_runs ADD COLUMN obsolete TEXT")
    reopened = open_ledger(url)
    assert reopened.list_checkpoints() == expected
    assert reopened.projection_differences() == []


def test_views_changed_behind_the_ledgers_back_are_reported_and_rebuilt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    scripted_history(ledger, runs=3)
    ledger.stats()
    run_id = ledger.list_runs()["runs"][0]["trainRunId"]
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        connection.execute("UPDATE view_runs SET failed_at = 1, failure_reason = 'forged'")
    assert ledger.projection_differences() == ["runs: 3 rows in the view, 3 in a replay, 6 differ"]
    assert ledger.show_run(run_id)["failureReason"] == "forged"
    # A position behind the rows: the events it would apply again are refused.
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        connection.execute(
            "UPDATE tracking SET notification_id = 0 WHERE application_name = 'trainledger'"
        )
    with pytest.raises(ViewsInconsistentError, match="projections rebuild"):
        ledger.stats()
    ledger.rebuild_projections()
    assert ledger.projection_differences() == []
    assert ledger.show_run(run_id)["failureReason"] != "forged"


def test_rebuild_reports_and_restores_indexes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    scripted_history(ledger, runs=5)
    before = ledger.list_checkpoints()
    report = ledger.rebuild_projections()
    assert report["eventsApplied"] == report["position"] == ledger.recorder.max_notification_id()
    assert report["eventsPerSecond"] > 0
    assert ledger.list_checkpoints() == before
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert set(INDEX_NAMES) <= indexes


def test_a_rebuild_leaves_the_connections_settings_as_the_store_set_them(tmp_path: Path) -> None:
    """The rebuild's own settings (no fsync per page, a large cache...) end with it."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    scripted_history(ledger, runs=3)
    pragmas = ("synchronous", "wal_autocheckpoint", "cache_size", "secure_delete")
    datastore = cast(SQLiteApplicationRecorder, ledger.recorder).datastore

    def settings() -> set[tuple[int, ...]]:
        seen = set()
        with ExitStack() as held:  # several connections of the pool at once
            for _ in range(3):
                connection = held.enter_context(datastore.get_connection(commit=False))
                cursor = connection.cursor()
                values = []
                for pragma in pragmas:
                    cursor.execute(f"PRAGMA {pragma}")
                    values.append(int(cursor.fetchone()[0]))
                seen.add(tuple(values))
        return seen

    before = settings()
    ledger.rebuild_projections()
    assert settings() == before
    assert {values[0] for values in before} == {2}  # FULL: the store's, for events
    ledger.close()


def _one_run_in_caught_up_views(store_url: str) -> str:
    """A store holding one run, its views made and caught up (the ledger closed): the run's id."""
    ledger = open_ledger(store_url)
    run_id = create_run(ledger)
    assert len(ledger.list_runs()["runs"]) == 1
    ledger.close()
    return run_id


def _edit_views(store_url: str, sqlite: Sequence[str], postgres: Sequence[str]) -> None:
    """Change the store's views behind the ledger's back, with each backend's statements."""
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            for statement in sqlite:
                db.execute(statement)
    else:
        with psycopg.connect(store_url, autocommit=True) as db:
            for statement in postgres:
                db.execute(statement)


def test_views_made_before_the_trainer_result_column_gain_it(store_url: str) -> None:
    """SQLite rebuilds views of an older schema version; PostgreSQL adds the column."""
    run_id = _one_run_in_caught_up_views(store_url)
    drop = "ALTER TABLE view_runs DROP COLUMN trainer_result"
    _edit_views(store_url, [drop, "UPDATE view_schema SET version = 1"], [drop])

    ledger = open_ledger(store_url)
    try:
        spec = ledger.get_run(run_id).spec
        document = {name: getattr(spec, name) for name in TrainerResult.CHECKED_FIELDS}
        document.update(status="failed", failureReason="OOM", finalLoss=None, node="n3")
        ledger.import_result(run_id, json.dumps(document).encode(), source="r.json", actor=ACTOR)
        shown = ledger.show_run(run_id)
        assert (shown["status"], shown["trainerResult"]) == ("failed", document)
        assert ledger.projection_differences() == []
    finally:
        ledger.close()


def test_views_made_with_the_spec_column_lose_it(store_url: str) -> None:
    """Views before schema 4 kept each run's spec: SQLite rebuilds them, PostgreSQL drops it."""
    first = _one_run_in_caught_up_views(store_url)
    # The column as it was: required, with no default (so a row without it is refused).
    add = "ALTER TABLE view_runs ADD COLUMN spec TEXT NOT NULL DEFAULT '{}'"
    _edit_views(
        store_url,
        [add, "UPDATE view_schema SET version = 3"],
        [add, "ALTER TABLE view_runs ALTER COLUMN spec DROP DEFAULT"],
    )

    ledger = open_ledger(store_url)
    try:
        second = create_run(ledger)
        runs = {run["trainRunId"]: run for run in ledger.list_runs()["runs"]}
        assert set(runs) == {first, second}
        assert runs[first]["spec"] == ledger.get_run(first).spec.model_dump(mode="json")
        assert ledger.projection_differences() == []
    finally:
        ledger.close()


SCHEMA_6_INDEXES = (
    "view_runs_status_family",
    "view_evals_verdict_benchmark",
    "view_evals_verdict_family",
)


def test_views_of_schema_5_open_and_answer_the_same(store_url: str) -> None:
    """Views of schema 5 (links and deployability clustered by their keys, no two-filter
    indexes): SQLite rebuilds them, PostgreSQL makes the indexes; the answers are the same."""
    ledger = open_ledger(store_url)
    scripted_history(ledger, runs=12, seed=5)
    some = ledger.list_evals()["evals"][0]
    verdict, benchmark, family = some["verdict"], some["benchmarkId"], some["targetModelFamily"]
    queries: dict[str, Callable[[], Any]] = {
        "evals": lambda: ledger.list_evals(verdict=verdict, benchmark_id=benchmark),
        "evals by family": lambda: ledger.list_evals(verdict=verdict, family=family),
        "runs": lambda: ledger.list_runs(status="completed", family=family),
        "all": lambda: (ledger.list_runs(), ledger.list_checkpoints(), ledger.list_evals()),
        "stats": lambda: ledger.stats(as_of=None),
    }
    expected = {name: query() for name, query in queries.items()}
    assert expected["evals"]["evals"]
    assert expected["runs"]["runs"]
    ledger.close()
    drops = [f"DROP INDEX {name}" for name in SCHEMA_6_INDEXES]
    clustered = [
        "DROP INDEX view_checkpoint_links_key",
        "CREATE TABLE links_5 (run_id TEXT NOT NULL, run_version INTEGER NOT NULL, "
        "checkpoint_id TEXT NOT NULL, linked_at BIGINT NOT NULL, "
        "PRIMARY KEY (run_id, run_version)) WITHOUT ROWID",
        "INSERT INTO links_5 SELECT run_id, run_version, checkpoint_id, linked_at "
        "FROM view_checkpoint_links",
        "DROP TABLE view_checkpoint_links",
        "ALTER TABLE links_5 RENAME TO view_checkpoint_links",
    ]
    _edit_views(store_url, [*drops, *clustered, "UPDATE view_schema SET version = 5"], drops)

    ledger = open_ledger(store_url)
    try:
        assert {name: query() for name, query in queries.items()} == expected
        assert ledger.projection_differences() == []
    finally:
        ledger.close()
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            (links,) = db.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'view_checkpoint_links'"
            ).fetchone()
        db.close()
        assert "WITHOUT ROWID" not in links
    else:
        with psycopg.connect(store_url) as pg:
            names = {row[0] for row in pg.execute("SELECT indexname FROM pg_indexes")}
    assert set(SCHEMA_6_INDEXES) <= names


def test_a_run_whose_registration_is_not_at_its_position_is_reported(store_url: str) -> None:
    """A run's spec is read from its registration: a view edited to point elsewhere is named."""
    run_id = _one_run_in_caught_up_views(store_url)
    edit = "UPDATE view_runs SET position = position + 1000"
    _edit_views(store_url, [edit], [edit])
    ledger = open_ledger(store_url)
    try:
        with pytest.raises(ViewsInconsistentError, match=f"run {run_id.replace('-', '')}.*verify"):
            ledger.show_run(run_id)
    finally:
        ledger.close()
