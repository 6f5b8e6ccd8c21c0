"""Shadow statistics read counters by hour (adapters/sqlite/shadow_hours.py, and the same
counters as PL/pgSQL triggers: adapters/postgres/shadow_hours.py): the same counts as
`domain.shadow_stats.count_observations` on the same observations, for any window (its edges
on, just before and after hour boundaries and observations), through settlements, a rebuild
and a view made without the counters, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.shadow import LIFECYCLE, load_observations
from bench.workload import run_lifecycle
from tests.postgres_cluster import PostgresCluster
from trainledger.adapters.postgres.shadow_hours import ensure_shadow_hours as ensure_pg_hours
from trainledger.adapters.postgres.view import postgres_ddl, postgres_sql
from trainledger.adapters.sqlite.deployment_schema import (
    CREATE_DEPLOYMENT_INDEXES,
    CREATE_DEPLOYMENT_TABLES,
    INSERT_OBSERVATION,
    UPDATE_SETTLEMENT,
)
from trainledger.adapters.sqlite.shadow_hours import (
    CREATE_HOURS,
    HOUR,
    TRIGGERS,
    ensure_shadow_hours,
)
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


class Tables:
    """The view's shadow table and its counters in one database, SQLite's or PostgreSQL's."""

    def __init__(self, connection: Any, postgres: bool) -> None:
        self.connection = connection
        self.postgres = postgres

    def execute(self, statement: str, params: Any = ()) -> None:
        if self.postgres:
            self.connection.execute(postgres_sql(statement), params)
        else:
            self.connection.execute(statement, params)

    def reader(self, counters: bool) -> SQLFactReader:
        if self.postgres:
            return SQLFactReader(
                self.connection.cursor(),
                adapt_sql=postgres_sql,
                shadow_hours=counters,
                postgres=True,
            )
        return SQLFactReader(self.connection.cursor(), shadow_hours=counters)


@pytest.fixture(scope="module")
def sqlite_tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tables]:
    connection = sqlite3.connect(tmp_path_factory.mktemp("hours") / "view.db")
    for statement in (*CREATE_DEPLOYMENT_TABLES, *CREATE_DEPLOYMENT_INDEXES):
        connection.execute(statement)
    ensure_shadow_hours(connection.cursor())
    yield Tables(connection, postgres=False)
    connection.close()


@pytest.fixture(scope="module")
def postgresql_tables(postgres_cluster: PostgresCluster) -> Iterator[Tables]:
    name = postgres_cluster.create_database()
    with psycopg.connect(postgres_cluster.url(name), autocommit=True) as connection:
        with connection.transaction():
            for statement in (*CREATE_DEPLOYMENT_TABLES, *CREATE_DEPLOYMENT_INDEXES, CREATE_HOURS):
                connection.execute(postgres_ddl(statement))
            ensure_pg_hours(connection.cursor(), "public")
        yield Tables(connection, postgres=True)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Tables:
    tables: Tables = request.getfixturevalue(f"{request.param}_tables")
    return tables


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


def store(connection: Tables, drawn: list[Drawn]) -> list[ObservationRecord]:
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


def fast_and_plain(connection: Tables, start: int, end: int) -> tuple[ShadowCounts, ShadowCounts]:
    cutoff = end - HOUR
    answers = []
    for counters in (True, False):
        reader = connection.reader(counters)
        answers.append(reader.shadow_counts(CHECKPOINT, start, end, cutoff))
    return answers[0], answers[1]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(observations, moments, st.integers(0, 30 * HOUR), st.booleans())
@example([(BASE, 0, "accepted", (0, 0, 0, 0), False, CHECKPOINT)], BASE, 0, False)
@example([(BASE + HOUR, None, "accepted", (0, 0, 0, 0), True, CHECKPOINT)], BASE, HOUR, False)
@example([(BASE - 1, 2, "rejected", (1, 0, 0, 1), False, CHECKPOINT)], BASE - 1, HOUR, True)
def test_the_counters_count_as_the_domain_does(
    db: Tables, drawn: list[Drawn], start: int, length: int, delete_some: bool
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


def build(url: str, observations: int) -> str:
    """A store with one deployable checkpoint and its settled observations; its id."""
    ledger = open_ledger(url)
    try:
        checkpoint = run_lifecycle(ledger, LIFECYCLE)
        load_observations(ledger, checkpoint, observations)
    finally:
        ledger.close()
    return checkpoint


def as_an_older_version_left_it(url: str) -> None:
    """The view without the counters, their table and their index."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            for name in TRIGGERS:
                connection.execute(f"DROP TRIGGER {name}")
            connection.execute("DROP TABLE view_shadow_hours")
            connection.execute("DROP INDEX view_shadow_settled")
        connection.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        for name in TRIGGERS:
            pg.execute(f"DROP TRIGGER {name} ON view_shadow")
        pg.execute("DROP TABLE view_shadow_hours")
        pg.execute("DROP INDEX view_shadow_settled")


def counters_present(url: str) -> bool:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        connection.close()
        return set(TRIGGERS) | {"view_shadow_hours", "view_shadow_settled"} <= names
    with psycopg.connect(url, autocommit=True) as pg:
        found = pg.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s)",
            (list(TRIGGERS),),
        ).fetchall()
        table = pg.execute("SELECT to_regclass('view_shadow_hours') IS NOT NULL").fetchone()
    return len(found) == len(TRIGGERS) and table == (True,)


def test_old_views_are_counted_and_a_rebuild_counts_again(store_url: str) -> None:
    checkpoint = build(store_url, 300)
    ledger = open_ledger(store_url)
    try:
        routed = ledger.deployments.route(checkpoint, "local-reader", actor="a")
        ledger.deployments.complete(routed["observationId"], "rejected", actor="a")
        in_flight = ledger.deployments.route(checkpoint, "local-reader", actor="a")
        first = counted(ledger.deployments.shadow_stats(checkpoint))
        assert first["totalCount"] == 301
        assert first["rejectedCount"] == 101
        assert first["pendingCount"] == 1
        assert counters_present(store_url)
        ledger.rebuild_projections()
        assert counters_present(store_url)
        assert counted(ledger.deployments.shadow_stats(checkpoint)) == first
    finally:
        ledger.close()

    as_an_older_version_left_it(store_url)
    assert not counters_present(store_url)
    ledger = open_ledger(store_url)
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
    assert counters_present(store_url)
