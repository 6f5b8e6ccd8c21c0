"""Reservations (idempotency records, evalIds) tampered with behind the ledger's back.

Each test drops the append-only guards first, as an attacker with access to
the database would, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_integrity import verify_while_they_write
from tests.support import Cli, deployable_lifecycle, reader_request, reseal
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import CorruptStoreError, ImportRefusedError
from trainledger.service.archive import export_log, import_log
from trainledger.service.ledger import TrainingLedger

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "store-0.1.0"
TABLES = ("ledger_reservations", "ledger_reservation_seals", "ledger_log_chain")


@contextmanager
def unguarded(url: str) -> Iterator[Any]:
    """A connection to the store with its append-only guards dropped (`?` placeholders)."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='trigger'"
        ).fetchall():
            connection.execute(f"DROP TRIGGER {name}")
        try:
            yield connection
            connection.commit()
        finally:
            connection.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for table in TABLES:
            pg.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")

        class Questions:
            def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
                return pg.execute(sql.replace("?", "%s"), params)

        yield Questions()


def build(url: str, tmp_path: Path) -> tuple[TrainingLedger, list[str]]:
    """Two runs created under keys k1 and k2, then a deployable lifecycle (evalId e0)."""
    ledger = open_ledger(url)
    runs = [
        ledger.create_experiment(
            reader_request(tmp_path),
            dataset_fingerprint="0123456789abcdef",
            sample_count=10,
            actor="a",
            idempotency_key=key,
        )["trainRunId"]
        for key in ("k1", "k2")
    ]
    deployable_lifecycle(ledger, tmp_path, eval_id="e0")
    return ledger, runs


def value(url: str, kind: str, key: str) -> bytes:
    with unguarded(url) as c:
        row = c.execute(
            "SELECT value FROM ledger_reservations WHERE kind=? AND key=?", (kind, key)
        ).fetchone()
        return bytes(row[0])


def failure(url: str, **kwargs: Any) -> str:
    report = open_ledger(url, create=False).verify(**kwargs)
    assert not report["ok"]
    reason: str = report["failure"]["reason"]
    return reason


def test_a_forged_idempotency_outcome_fails_verify_and_is_never_answered(
    store_url: str, tmp_path: Path
) -> None:
    ledger, runs = build(store_url, tmp_path)
    assert ledger.verify()["ok"]
    forged = value(store_url, "idempotency", "k2")  # the outcome of the other run
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='idempotency' AND key='k1'")
        c.execute("INSERT INTO ledger_reservations VALUES ('idempotency', 'k1', ?)", (forged,))
    assert "'k1'" in failure(store_url)
    # Repeating the key: the ledger checks the record against its seal first.
    with pytest.raises(CorruptStoreError, match="k1"):
        open_ledger(store_url, create=False).create_experiment(
            reader_request(tmp_path),
            dataset_fingerprint="0123456789abcdef",
            sample_count=10,
            actor="a",
            idempotency_key="k1",
        )
    assert runs[0] != json.loads(forged)["outcome"]["trainRunId"]


def test_a_deleted_reservation_fails_verify(store_url: str, tmp_path: Path) -> None:
    build(store_url, tmp_path)
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='eval' AND key='e0'")
    assert "e0" in failure(store_url)


def test_an_added_reservation_fails_verify(store_url: str, tmp_path: Path) -> None:
    build(store_url, tmp_path)
    with unguarded(store_url) as c:
        c.execute("INSERT INTO ledger_reservations VALUES ('eval', 'e-new', ?)", (b"x",))
    assert "e-new" in failure(store_url)


def test_an_evalid_pointing_elsewhere_fails_verify(store_url: str, tmp_path: Path) -> None:
    _, runs = build(store_url, tmp_path)
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='eval' AND key='e0'")
        c.execute("INSERT INTO ledger_reservations VALUES ('eval', 'e0', ?)", (runs[0].encode(),))
    assert "e0" in failure(store_url)


def test_a_reservation_changed_with_its_seals_rewritten_fails_the_digest(
    store_url: str, tmp_path: Path
) -> None:
    """An attacker who also recomputes the seal chain: the digest kept elsewhere catches it."""
    ledger, _ = build(store_url, tmp_path)
    before = ledger.verify()
    changed = json.loads(value(store_url, "idempotency", "k1"))
    changed["request"] = "0" * 64  # keeps the outcome's ids: only the digest can tell
    forged = json.dumps(changed).encode()
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='idempotency' AND key='k1'")
        c.execute("INSERT INTO ledger_reservations VALUES ('idempotency', 'k1', ?)", (forged,))
        reseal(c)
    after = open_ledger(store_url, create=False).verify()
    assert after["ok"]
    assert after["digest"] != before["digest"]
    assert "no prefix" in failure(store_url, digest=before["digest"])


def test_a_forged_outcome_in_a_store_without_seals_is_caught_by_its_meaning(
    store_url: str, tmp_path: Path
) -> None:
    """Seals dropped too (the store then looks as 0.1.0 wrote it): its digest changes,
    and the outcome naming another command's run is still caught."""
    ledger, _ = build(store_url, tmp_path)
    digest = ledger.verify()["digest"]
    forged = value(store_url, "idempotency", "k2")
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservation_seals")
        c.execute("DELETE FROM ledger_reservations WHERE kind='idempotency' AND key='k1'")
        c.execute("INSERT INTO ledger_reservations VALUES ('idempotency', 'k1', ?)", (forged,))
    assert "forged outcome" in failure(store_url)
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='idempotency' AND key='k1'")
    assert "no prefix" in failure(store_url, digest=digest)


def test_import_refuses_an_export_with_a_forged_reservation(store_url: str, tmp_path: Path) -> None:
    source, _ = build(f"sqlite:///{tmp_path / 'source.db'}", tmp_path)
    lines = list(export_log(source))
    outcomes = {r["key"]: r["value"] for line in lines for r in line.get("reservations", [])}
    for line in lines:
        for reservation in line.get("reservations", []):
            if reservation["key"] == "k1":
                reservation["value"] = outcomes["k2"]
    target = open_ledger(store_url)
    with pytest.raises(ImportRefusedError, match="k1"):
        import_log(target, [json.dumps(line) for line in lines])
    assert target.recorder.max_notification_id() in (None, 0)


def test_a_sealed_export_imports_with_the_same_digest(store_url: str, tmp_path: Path) -> None:
    source, _ = build(f"sqlite:///{tmp_path / 'source.db'}", tmp_path)
    target = open_ledger(store_url)
    import_log(target, [json.dumps(line) for line in export_log(source)])
    report = target.verify()
    assert report["ok"], report
    if store_url.startswith("sqlite"):  # PostgreSQL may number positions differently
        assert report["digest"] == source.verify()["digest"]


def test_an_old_store_seals_on_its_first_reservation_and_keeps_its_old_digest(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "ledger.db"
    shutil.copyfile(FIXTURE / "ledger.db", copy)
    old = Cli(f"sqlite:///{copy}", cwd=tmp_path)
    digest = old.ok("verify")["digest"]
    ids = json.loads((FIXTURE / "ids.json").read_text())
    old.ok("run", "start", ids["pendingRun"], "--idempotency-key", "new-key")
    report = old.ok("verify", "--digest", digest)
    assert report["digestVerifiedUpTo"] == 25
    assert report["digest"] != digest
    # The old reservations are sealed too: a later digest also proves them.
    assert old.ok("verify", "--digest", report["digest"])["ok"]
    with unguarded(f"sqlite:///{copy}") as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='eval'")
    assert old("verify", json_mode=True).code == 3


WRITER = """
import sys, time
from tests.support import reader_request
from trainledger.adapters.store import open_ledger
ledger = open_ledger(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < deadline:
    n += 1
    key = f"{sys.argv[4]}-{n}"
    run = ledger.create_experiment(reader_request(__import__("pathlib").Path(sys.argv[2])),
        dataset_fingerprint="0123456789abcdef", sample_count=8, actor="w",
        idempotency_key=key)["trainRunId"]
    ledger.start_run(run, actor="w", idempotency_key=key + "s")
"""


def test_verify_never_reports_forged_reservations_while_others_write(
    store_url: str, tmp_path: Path
) -> None:
    ledger, _ = build(store_url, tmp_path)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, str(tmp_path / "out"), "6", f"w{n}"],
            cwd=Path(__file__).resolve().parent.parent.parent,
        )
        for n in range(2)
    ]
    verify_while_they_write(store_url, writers, ledger)
    assert open_ledger(store_url, create=False).verify()["ok"]


def test_the_workers_path_checks_seals_and_digests_as_the_one_pass_check(
    tmp_path: Path,
) -> None:
    from tests.integration.test_integrity import workers_check_every_log

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger, _ = build(url, tmp_path)
    earlier = ledger.verify()
    deployable_lifecycle(ledger, tmp_path / "more", eval_id="e1")
    one_pass = ledger.verify(digest=earlier["digest"])
    with workers_check_every_log() as verdicts:
        in_parallel = ledger.verify(digest=earlier["digest"])
    assert verdicts == [True]
    assert in_parallel == one_pass
    assert in_parallel["digestVerifiedUpTo"] == earlier["position"]
    with unguarded(url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='eval' AND key='e1'")
    with workers_check_every_log() as verdicts:
        report = ledger.verify()
    assert verdicts == [True]  # the rows are sound; the seals send it to the one-pass check
    assert not report["ok"]
    assert "e1" in report["failure"]["reason"]


def test_an_append_of_reservations_alone_is_sealed_at_the_log_end(
    store_url: str, tmp_path: Path
) -> None:
    """As an import-result that records only its outcome does (no event, no library lock)."""
    from trainledger.service.ports import IDEMPOTENCY, Reservation

    ledger, runs = build(store_url, tmp_path)
    before = ledger.verify()
    record = json.dumps({"request": "0" * 64, "outcome": {"trainRunId": runs[0]}}).encode()
    ledger.recorder.insert_events([], reservations=[Reservation(IDEMPOTENCY, "bare", record)])
    after = ledger.verify(digest=before["digest"])
    assert after["ok"], after["failure"]
    assert after["position"] == before["position"]
    assert after["digest"] != before["digest"]
    assert ledger.verify(digest=after["digest"])["ok"]
    with unguarded(store_url) as c:
        c.execute("DELETE FROM ledger_reservations WHERE kind='idempotency' AND key='bare'")
    assert "bare" in failure(store_url)
