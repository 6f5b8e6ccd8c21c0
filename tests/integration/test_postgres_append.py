"""The PostgreSQL append computes the log chain and the seals in the server
(adapters/postgres/append.py): the same bytes as `domain.chain`, checked here
link by link and seal by seal, for events and for reservations whose kinds and
keys sort differently by code point than by a collation. The events go to the
server as arrays (the states in binary; a small append's values one parameter
each, built into arrays by the server) and come back in binary rows: every
byte as written, and the recorder's reads answer what the library's would."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder

from tests.support import deployable_lifecycle, reader_request
from trainledger.adapters.postgres.append import SCALARS_UP_TO
from trainledger.adapters.postgres.recorder import LedgerPostgresRecorder
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, log_links, seal_links
from trainledger.service.ports import Reservation

pytestmark = pytest.mark.postgres

KEYS = ("Zulu", "alpha", "Écho", "écho", "a b", "é\u0301", "日本", "z")


def test_the_servers_links_and_seals_are_domain_chains(postgres_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(postgres_url)
    try:
        for n, key in enumerate(KEYS):
            run_id = ledger.create_experiment(
                reader_request(tmp_path / str(n)),
                dataset_fingerprint="0123456789abcdef",
                sample_count=10,
                actor="a",
                idempotency_key=key,
            )["trainRunId"]
            ledger.start_run(run_id, actor="a", idempotency_key=f"{key}-start")
        deployable_lifecycle(ledger, tmp_path / "life", eval_id="eval-Ä-1")
        # A repeat records nothing and answers the first outcome.
        again = ledger.create_experiment(
            reader_request(tmp_path / "0"),
            dataset_fingerprint="0123456789abcdef",
            sample_count=10,
            actor="a",
            idempotency_key=KEYS[0],
        )
        assert again["trainRunId"]
        recorder = ledger.unit_of_work.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        rows = recorder.select_notifications(start=1, limit=10_000)
        expected = log_links(
            LOG_GENESIS,
            [(r.id, r.originator_id, r.originator_version, r.topic, r.state) for r in rows],
        )
        assert recorder.log_chain(0, None) == dict(expected)

        # Each append sealed its reservations at its last event, in code point order.
        values = {(r.kind, r.key): r.value for r in recorder.reservations()}
        links = dict(expected)
        seals = recorder.seals()
        assert len(seals) == len(values) == len(KEYS) * 2 + 1
        previous = SEAL_GENESIS
        by_position: dict[int, list[tuple[str, str]]] = {}
        for seal in seals:
            by_position.setdefault(seal.position, []).append((seal.kind, seal.key))
        for position, keys in by_position.items():
            assert keys == sorted(keys)
            recomputed = seal_links(
                previous, [(position, links[position], k, key, values[k, key]) for k, key in keys]
            )
            mine = [s for s in seals if s.position == position]
            assert [(s.position, s.kind, s.key, s.value_hash, s.link) for s in mine] == recomputed
            previous = recomputed[-1][-1]
        assert ledger.verify()["ok"] is True
    finally:
        ledger.close()


def test_events_are_stored_byte_for_byte_and_read_as_the_library_reads(
    postgres_url: str,
) -> None:
    ledger = open_ledger(postgres_url)
    try:
        recorder = ledger.unit_of_work.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        aggregate_id = uuid4()
        # Every byte value, nothing at all, and what array literals would have to escape.
        states = [bytes(range(256)) * 8, b"", b"\\x00'\"{},\\\\ NULL"]
        topic = 'tests:Topic "quoted", {braced} \\ NULL'
        events = [
            StoredEvent(aggregate_id, version, topic, state)
            for version, state in enumerate(states, start=1)
        ]
        reservation = Reservation("test-kind", "key", bytes(range(256)))
        positions = recorder.insert_events(events, reservations=[reservation])
        assert len(positions) == 3

        assert recorder.select_events(aggregate_id) == events
        shapes: list[dict[str, Any]] = [
            {"gt": 1},
            {"lte": 2},
            {"desc": True},
            {"limit": 2},
            {"gt": 1, "lte": 3, "desc": True, "limit": 1},
            {"gt": 3},
        ]
        for shape in shapes:
            assert recorder.select_events(aggregate_id, **shape) == (
                PostgresAggregateRecorder.select_events(recorder, aggregate_id, **shape)
            ), shape
        assert recorder.select_events(uuid4()) == []

        rows = recorder.select_notifications(start=positions[0], limit=10)
        assert [(r.id, r.state, r.topic) for r in rows] == [
            (p, s, topic) for p, s in zip(positions, states, strict=True)
        ]
        assert recorder.find_reservation("test-kind", "key") == reservation.value
        # The server hashed the bytes it received: the same links as `domain.chain`'s.
        expected = log_links(
            LOG_GENESIS,
            [(r.id, r.originator_id, r.originator_version, r.topic, r.state) for r in rows],
        )
        assert recorder.log_chain(0, None) == dict(expected)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("events", "reservations", "read"),
    [
        (1, 0, 0),
        (2, 1, 1),
        (SCALARS_UP_TO, SCALARS_UP_TO, SCALARS_UP_TO),
        (SCALARS_UP_TO + 1, 0, 0),
        (1, SCALARS_UP_TO + 1, 0),
        (1, 0, SCALARS_UP_TO + 1),
        (0, 2, 0),
    ],
)
def test_appends_of_every_shape_store_the_same_bytes_links_and_seals(
    postgres_url: str, events: int, reservations: int, read: int
) -> None:
    """Small appends pass each value as a parameter of its own, larger ones pass arrays:
    both store every byte as given, in order, with `domain.chain`'s links and seals."""
    ledger = open_ledger(postgres_url)
    try:
        recorder = ledger.unit_of_work.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        # An append before this one's, so that its links and seals extend a chain,
        # and the aggregates this one's decision read (and confirms unchanged).
        unchanged = [(uuid4(), 1) for _ in range(read)]
        recorder.insert_events(
            [StoredEvent(uuid4(), 1, "tests:Before", b"{}")]
            + [StoredEvent(aggregate_id, 1, "tests:Read", b"{}") for aggregate_id, _ in unchanged],
            reservations=[Reservation("test-kind", f"before-{uuid4()}", b"0")],
        )
        aggregate_id = uuid4()
        oddities = [bytes(range(256)), b"", b"\\x00'\"{},\\\\ NULL"]
        given = [
            StoredEvent(aggregate_id, version, f"tests:T{version} {{,}} \\", oddities[version % 3])
            for version in range(1, events + 1)
        ]
        keys = [f"{KEYS[n % len(KEYS)]}-{n}-{uuid4()}" for n in range(reservations)]
        reserved = [Reservation("test-kind", key, oddities[n % 3]) for n, key in enumerate(keys)]
        if read:  # had the decision read them at version 0, this append would be refused
            stale = [(aggregate_id, 0) for aggregate_id, _ in unchanged]
            with pytest.raises(IntegrityError, match="changed after the decision read it"):
                recorder.insert_events(given, reservations=reserved, unchanged=stale)
        positions = recorder.insert_events(given, reservations=reserved, unchanged=unchanged)
        assert len(positions) == events
        assert recorder.select_events(aggregate_id) == given
        for reservation in reserved:
            assert recorder.find_reservation("test-kind", reservation.key) == reservation.value
        rows = recorder.select_notifications(start=1, limit=10_000)
        assert [r.id for r in rows if r.originator_id == aggregate_id] == positions
        links = dict(
            log_links(
                LOG_GENESIS,
                [(r.id, r.originator_id, r.originator_version, r.topic, r.state) for r in rows],
            )
        )
        assert recorder.log_chain(0, None) == links
        # Sealed at the append's last event (or the log's end), in code point order.
        seals = recorder.seals()
        earlier, mine = seals[: len(seals) - reservations], seals[len(seals) - reservations :]
        anchor = rows[-1].id
        expected = seal_links(
            earlier[-1].link,
            [
                (anchor, links[anchor], r.kind, r.key, r.value)
                for r in sorted(reserved, key=lambda r: (r.kind, r.key))
            ],
        )
        assert [(s.position, s.kind, s.key, s.value_hash, s.link) for s in mine] == expected
    finally:
        ledger.close()


def test_a_store_without_this_append_function_gets_it_when_opened(
    postgres_url: str, tmp_path: Path
) -> None:
    """A store written by an older ledger (without this append's routines and tables)
    opens, is given them, and appends."""
    ledger = open_ledger(postgres_url)
    try:
        recorder = ledger.unit_of_work.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        routines = [f"public.{routine}" for routine in recorder.appender.routines()]
        tables = [f"public.{table}" for table in recorder.appender.tables()]
        ledger.create_experiment(
            reader_request(tmp_path / "first"),
            dataset_fingerprint="0123456789abcdef",
            sample_count=10,
            actor="a",
        )
    finally:
        ledger.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for routine in routines:
            conn.execute(f"DROP ROUTINE {routine}")
        for table in tables:
            conn.execute(f"DROP TABLE {table}")
        assert not any(_present(conn, routines, tables))
    ledger = open_ledger(postgres_url)
    try:
        deployable_lifecycle(ledger, tmp_path / "life", eval_id="eval-after-upgrade")
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert all(_present(conn, routines, tables))
        assert ledger.verify()["ok"] is True
    finally:
        ledger.close()


def _present(conn: psycopg.Connection[Any], routines: list[str], tables: list[str]) -> list[bool]:
    found = [conn.execute("SELECT to_regprocedure(%s)", (r,)).fetchone() for r in routines]
    found += [conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() for t in tables]
    return [row is not None and row[0] is not None for row in found]
