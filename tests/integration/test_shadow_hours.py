"""Shadow statistics on SQLite read counters by hour (adapters/sqlite/shadow_hours.py): the
same counts as `domain.shadow_stats.count_observations` on the same observations, for any
window (its edges on, just before and after hour boundaries and observations), through
settlements, a rebuild and a view made without the counters."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.shadow import build_store
from bench.workload import sqlite_url
from trainledger.adapters.sqlite.deployment_schema import (
    CREATE_DEPLOYMENT_INDEXES,
    CREATE_DEPLOYMENT_TABLES,
    INSERT_OBSERVATION,
    UPDATE_SETTLEMENT,
)
from trainledger.adapters.sqlite.shadow_hours import HOUR, TRIGGERS, ensure_shadow_hours
from trainledger.adapters.sqlite.view_reads import SQLFactReader
from trainledger.adapters.store import open_ledger
from trainledger.domain.shadow_stats import SHADOW_OUTCOMES, ShadowCounts, count_observations
from trainledger.projections.deployment_facts import ObservationRecord

BASE = 493_000 * HOUR
"""An hour of 2026, in microseconds."""
MINUTE = 60_000_000
CHECKPOINT, OTHER = "a" * 32, "b" * 32

# Moments around a few hour boundaries: on them, one microsecond either side, and between.
moments = st.builds(
    lambda hour, offset: BASE + hour * HOUR + offset,
    st.integers(-1, 4),
    st.sampled_from([0, 1, -1, MINUTE, 30 * MINUTE, HOUR - MINUTE]) | st.integers(0, HOUR - 1),
)
observations = st.lists(
    st.tuples(
        moments,  # routed at
        st.none() | st.integers(0, 3 * HOUR),  # settled this long after, or never
        st.sampled_from(SHADOW_OUTCOMES),
        st.tuples(*(st.integers(0, 1) for _ in range(4))),
        st.booleans(),  # settled in the row's insert (as a rebuild may), or by an update
        st.sampled_from([CHECKPOINT, CHECKPOINT, OTHER]),
    ),
    max_size=40,
)


Drawn = tuple[int, int | None, str, tuple[int, int, int, int], bool, str]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path_factory.mktemp("hours") / "view.db")
    for statement in (*CREATE_DEPLOYMENT_TABLES, *CREATE_DEPLOYMENT_INDEXES):
        connection.execute(statement)
    ensure_shadow_hours(connection.cursor())
    yield connection
    connection.close()


def rows_of(drawn: list[Drawn]) -> list[ObservationRecord]:
    found = []
    for n, (routed, after, outcome, flags, _, checkpoint) in enumerate(drawn):
        settled = None if after is None else routed + after
        timed_out, threw, invalid, rejected = flags if settled is not None else (0, 0, 0, 0)
        found.append(
            ObservationRecord(
                f"o{n}",
                checkpoint,
                "local-reader",
                None,
                routed,
                "a",
                n,
                settled,
                None if settled is None else outcome,
                timed_out,
                threw,
                invalid,
                rejected,
                None if settled is None else "a",
            )
        )
    return found


def store(connection: sqlite3.Connection, drawn: list[Drawn]) -> list[ObservationRecord]:
    connection.execute("DELETE FROM view_shadow")
    records = rows_of(drawn)
    for record, (*_, at_insert, _checkpoint) in zip(records, drawn, strict=True):
        if record.settled_at is None or at_insert:
            connection.execute(INSERT_OBSERVATION, record)
            continue
        connection.execute(INSERT_OBSERVATION, (*record[:7], None, None, 0, 0, 0, 0, None))
        settlement = (*record[7:13], record.settled_by, record.observation_id)
        connection.execute(UPDATE_SETTLEMENT, settlement)
    return records


def fast_and_plain(
    connection: sqlite3.Connection, start: int, end: int
) -> tuple[ShadowCounts, ShadowCounts]:
    cutoff = end - HOUR
    answers = []
    for counters in (True, False):
        reader = SQLFactReader(connection.cursor(), shadow_hours=counters)
        answers.append(reader.shadow_counts(CHECKPOINT, start, end, cutoff))
    return answers[0], answers[1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observations, moments, st.integers(0, 30 * HOUR), st.booleans())
@example([(BASE, 0, "accepted", (0, 0, 0, 0), False, CHECKPOINT)], BASE, 0, False)
@example([(BASE + HOUR, None, "accepted", (0, 0, 0, 0), True, CHECKPOINT)], BASE, HOUR, False)
@example([(BASE - 1, 2, "rejected", (1, 0, 0, 1), False, CHECKPOINT)], BASE - 1, HOUR, True)
def test_the_counters_count_as_the_domain_does(
    db: sqlite3.Connection, drawn: list[Drawn], start: int, length: int, delete_some: bool
) -> None:
    records = store(db, drawn)
    if delete_some and records:  # rows that go (a view cleared row by row) leave no count
        db.execute("DELETE FROM view_shadow WHERE observation_id = ?", (records[0][0],))
        records = records[1:]
    end = start + length
    mine = [r for r in records if r.checkpoint_id == CHECKPOINT]
    expected = count_observations(mine, start, end, end - HOUR)
    assert fast_and_plain(db, start, end) == (expected, expected)


def counted(statistics: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in statistics.items() if k not in ("windowStart", "windowEnd")}


def test_old_views_are_counted_and_a_rebuild_counts_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    checkpoint = build_store(path, 300)
    ledger = open_ledger(sqlite_url(path))
    try:
        routed = ledger.deployments.route(checkpoint, "local-reader", actor="a")
        ledger.deployments.complete(routed["observationId"], "rejected", actor="a")
        in_flight = ledger.deployments.route(checkpoint, "local-reader", actor="a")
        first = counted(ledger.deployments.shadow_stats(checkpoint))
        assert first["totalCount"] == 301
        assert first["rejectedCount"] == 101
        assert first["pendingCount"] == 1
        ledger.rebuild_projections()
        assert counted(ledger.deployments.shadow_stats(checkpoint)) == first
    finally:
        ledger.close()

    with sqlite3.connect(path) as connection:  # as an older version left it
        for name in TRIGGERS:
            connection.execute(f"DROP TRIGGER {name}")
        connection.execute("DROP TABLE view_shadow_hours")
        connection.execute("DROP INDEX view_shadow_settled")
    connection.close()
    ledger = open_ledger(sqlite_url(path))
    try:
        assert counted(ledger.deployments.shadow_stats(checkpoint)) == first
        before = ledger.now()
        ledger.deployments.complete(in_flight["observationId"], "accepted", actor="a")
        later = ledger.deployments.shadow_stats(checkpoint)
        assert (later["totalCount"], later["acceptedCount"], later["pendingCount"]) == (302, 101, 0)
        # A window ending before the settlement still sees the observation in flight.
        past = ledger.deployments.shadow_stats(checkpoint, as_of=before)
        assert (past["totalCount"], past["acceptedCount"], past["pendingCount"]) == (301, 100, 1)
    finally:
        ledger.close()
    with sqlite3.connect(path) as connection:
        names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert set(TRIGGERS) <= names
