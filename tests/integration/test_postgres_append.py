"""The PostgreSQL append computes the log chain and the seals in the server
(adapters/postgres/append.py): the same bytes as `domain.chain`, checked here
link by link and seal by seal, for events and for reservations whose kinds and
keys sort differently by code point than by a collation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import deployable_lifecycle, reader_request
from trainledger.adapters.postgres.recorder import LedgerPostgresRecorder
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, log_links, seal_links

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
