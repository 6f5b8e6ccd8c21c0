"""Tampering behind the ledger's back is caught by `verify`, at the right position."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import orjson
import pytest

from tests.support import Cli as CliType
from tests.support import deployable_lifecycle, experiment_args, reseal
from trainledger.adapters.sqlite.verify import ParallelLogCheck
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import LOG_GENESIS, log_links
from trainledger.domain.errors import CorruptStoreError
from trainledger.service.ledger import TrainingLedger

Tamper = Callable[[sqlite3.Connection], int]


def build_history(url: str, tmp_path: Path, eval_prefix: str = "e") -> TrainingLedger:
    """Two runs, each with a deployable checkpoint: 14 events (7 per lifecycle)."""
    ledger = open_ledger(url)
    for n in range(2):
        deployable_lifecycle(ledger, tmp_path, eval_id=f"{eval_prefix}{n}")
    return ledger


def unguarded(path: Path) -> sqlite3.Connection:
    """What an attacker with file access does first: drop the append-only guards."""
    connection = sqlite3.connect(path)
    for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type='trigger'"
    ).fetchall():
        connection.execute(f"DROP TRIGGER {name}")
    return connection


def edit_payload(c: sqlite3.Connection) -> int:
    state = orjson.loads(c.execute("SELECT state FROM stored_events WHERE rowid=7").fetchone()[0])
    state["actor"] = "mallory"
    c.execute("UPDATE stored_events SET state=? WHERE rowid=7", (orjson.dumps(state),))
    return 7


def delete_middle(c: sqlite3.Connection) -> int:
    c.execute("DELETE FROM stored_events WHERE rowid=4")
    return 4


def swap_states(c: sqlite3.Connection) -> int:
    a = c.execute("SELECT state FROM stored_events WHERE rowid=2").fetchone()[0]
    b = c.execute("SELECT state FROM stored_events WHERE rowid=9").fetchone()[0]
    c.execute("UPDATE stored_events SET state=? WHERE rowid=2", (b,))
    c.execute("UPDATE stored_events SET state=? WHERE rowid=9", (a,))
    return 2


def insert_forged(c: sqlite3.Connection) -> int:
    """Append a forged MarkedDeployable after a genuine one, copying its state."""
    originator, version, topic, state = c.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid=6"
    ).fetchone()
    forged = orjson.loads(state)
    forged["actor"] = "mallory"
    c.execute(
        "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)",
        (originator, version + 2, topic, orjson.dumps(forged)),
    )
    return 15


def reorder_versions(c: sqlite3.Connection) -> int:
    """Swap two events of one run by exchanging their versions."""
    c.execute("UPDATE stored_events SET originator_version=-1 WHERE rowid=2")
    c.execute("UPDATE stored_events SET originator_version=2 WHERE rowid=5")
    c.execute("UPDATE stored_events SET originator_version=4 WHERE rowid=2")
    return 2


def swap_rows_of_two_aggregates(c: sqlite3.Connection) -> int:
    """Exchange whole rows 3 and 4 (checkpoint Registered, run CheckpointLinked)."""
    c.execute("UPDATE stored_events SET rowid=-3 WHERE rowid=3")
    c.execute("UPDATE stored_events SET rowid=3 WHERE rowid=4")
    c.execute("UPDATE stored_events SET rowid=4 WHERE rowid=-3")
    return 3


def delete_last(c: sqlite3.Connection) -> int:
    c.execute("DELETE FROM stored_events WHERE rowid=14")
    return 14


def edit_with_sql_text(c: sqlite3.Connection) -> int:
    """An edit with SQL's replace(), which leaves TEXT where the ledger wrote a BLOB."""
    c.execute('UPDATE stored_events SET state=replace(state, \'"actor":"a"\', \'"actor":"m"\')')
    return 1


def null_state(c: sqlite3.Connection) -> int:
    c.execute("UPDATE stored_events SET state=NULL WHERE rowid=3")
    return 3


TAMPERINGS = [
    edit_payload,
    delete_middle,
    delete_last,
    swap_states,
    swap_rows_of_two_aggregates,
    insert_forged,
    reorder_versions,
    edit_with_sql_text,
    null_state,
]


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_verify_names_the_first_tampered_position(tmp_path: Path, tamper: Tamper) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    before = build_history(url, tmp_path).verify()
    assert before["ok"]
    assert before["position"] == 14

    connection = unguarded(path)
    bad_position = tamper(connection)
    connection.commit()
    connection.close()

    report = open_ledger(url).verify()
    assert not report["ok"]
    assert report["failure"]["position"] == bad_position
    # Worker processes find the log unsound too, and the one-pass check names it.
    with workers_check_every_log():
        assert open_ledger(url).verify() == report


SMALL_SHARES = [None, 1]
"""The shares as sized by default (two here, scanned), or of an event or two (many,
each read through the ids' index): what a long log is checked in."""


@contextmanager
def workers_check_every_log(share_events: int | None = None) -> Iterator[list[bool]]:
    """Make `verify` start its worker processes on any log; yields their verdicts.

    With `share_events`, the workers check shares of about that many events.
    """
    verdicts: list[bool] = []
    sound = ParallelLogCheck.sound

    def spy(check: ParallelLogCheck) -> bool:
        verdicts.append(sound(check))
        return verdicts[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingLedger, "PARALLEL_VERIFY_FROM", 1)
        patch.setattr("trainledger.adapters.sqlite.recorder.usable_cpus", lambda: 2)
        patch.setattr(ParallelLogCheck, "sound", spy)
        if share_events is not None:
            patch.setattr("trainledger.adapters.sqlite.verify.SHARE_EVENTS", share_events)
        yield verdicts


@pytest.mark.parametrize("share_events", SMALL_SHARES)
def test_workers_verify_a_sound_log_as_the_one_pass_check_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share_events: int | None
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = build_history(url, tmp_path)
    earlier = ledger.verify()
    build_history(url, tmp_path / "more", eval_prefix="f")
    one_pass = ledger.verify(digest=earlier["digest"])
    compared_in_full: list[bool] = []
    compare = ledger.projection_differences

    def spy() -> list[str]:
        compared_in_full.append(True)
        return compare()

    monkeypatch.setattr(ledger, "projection_differences", spy)
    with workers_check_every_log(share_events) as verdicts:
        in_parallel = ledger.verify(digest=earlier["digest"])
        unknown_digest = ledger.verify(digest="0" * 64)
    assert verdicts == [True, True]
    assert compared_in_full == []  # the workers' digests of the views matched
    assert in_parallel == one_pass
    assert in_parallel["ok"]
    assert in_parallel["digestVerifiedUpTo"] == 14
    assert in_parallel["projectionsMatchReplay"] is True
    assert unknown_digest == ledger.verify(digest="0" * 64)
    assert not unknown_digest["ok"]


@pytest.mark.parametrize("share_events", SMALL_SHARES)
def test_workers_find_each_tampering_unsound(tmp_path: Path, share_events: int | None) -> None:
    """The parallel verdict itself catches every tampering of the corpus."""
    for tamper in TAMPERINGS:
        path = tmp_path / tamper.__name__ / "ledger.db"
        url = f"sqlite:///{path}"
        build_history(url, path.parent).close()
        connection = unguarded(path)
        tamper(connection)
        connection.commit()
        connection.close()
        with workers_check_every_log(share_events) as verdicts:
            report = open_ledger(url).verify()
        assert not report["ok"], tamper.__name__
        assert True not in verdicts, tamper.__name__


@pytest.mark.parametrize("share_events", SMALL_SHARES)
@pytest.mark.parametrize("table", ["view_evals", "view_runs", "view_checkpoints"])
def test_views_that_differ_fail_verify_when_workers_check_the_log(
    tmp_path: Path, share_events: int | None, table: str
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    ledger = build_history(url, tmp_path)
    assert ledger.stats()["totalEvals"] == 2  # the views caught up
    ledger.close()
    connection = sqlite3.connect(path)
    # One row gone, in whichever share it is
    connection.execute(f"DELETE FROM {table} WHERE rowid = (SELECT MAX(rowid) FROM {table})")
    connection.commit()
    connection.close()
    with workers_check_every_log(share_events) as verdicts:
        report = open_ledger(url).verify()
    assert verdicts == [True]
    assert report["projectionsMatchReplay"] is False
    assert "projections rebuild" in report["failure"]["reason"]


def test_workers_that_cannot_run_leave_the_check_to_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = build_history(url, tmp_path)
    one_pass = ledger.verify()
    monkeypatch.setattr("trainledger.adapters.sqlite.verify.sys.executable", "/bin/false")
    with workers_check_every_log() as verdicts:
        assert ledger.verify() == one_pass
    assert verdicts == [False]


def test_direct_update_and_delete_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    build_history(f"sqlite:///{path}", tmp_path)
    connection = sqlite3.connect(path)
    for statement in (
        "UPDATE stored_events SET state=state WHERE rowid=1",
        "DELETE FROM stored_events WHERE rowid=1",
        "DELETE FROM ledger_reservations",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute(statement)
    assert connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] == 14


def test_digest_catches_a_rewrite_with_recomputed_chains(tmp_path: Path) -> None:
    """An attacker who recomputes every hash passes the chain check, not the digest."""
    from trainledger.domain.chain import chain_hash

    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    digest = build_history(url, tmp_path).verify()["digest"]

    connection = unguarded(path)
    rows = connection.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY rowid"
    ).fetchall()
    heads: dict[str, str] = {}
    for rowid, originator, version, topic, raw in rows:
        state = orjson.loads(raw)
        if rowid == 13:  # the second eval: claim a better score
            state["eval"]["candidateScore"] = 0.99
            state["eval"]["delta"] = 0.49
        aggregate_id = str(UUID(originator))
        state["previousHash"] = heads.get(aggregate_id, "0" * 64)
        state["eventHash"] = chain_hash(aggregate_id, version, topic.rsplit(".", 1)[-1], state)
        heads[aggregate_id] = state["eventHash"]
        connection.execute(
            "UPDATE stored_events SET state=? WHERE rowid=?", (orjson.dumps(state), rowid)
        )
    connection.commit()
    connection.close()
    half_done = open_ledger(url).verify()
    assert half_done["failure"]["position"] == 13, "the log chain still has the old row"
    # The attacker recomputes the log chain the recorder kept beside the rows, too.
    connection = unguarded(path)
    connection.execute("DELETE FROM ledger_log_chain")
    stored = connection.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY rowid"
    ).fetchall()
    connection.executemany(
        "INSERT INTO ledger_log_chain (position, link) VALUES (?, ?)",
        log_links(LOG_GENESIS, [(r, UUID(o), v, t, s) for r, o, v, t, s in stored]),
    )
    connection.commit()
    connection.close()
    assert "seals rewritten" in open_ledger(url).verify()["failure"]["reason"]
    # The seals of the reservations cover the log chain where they were written: recomputed too.
    connection = unguarded(path)  # opening the ledger put the guards back
    reseal(connection)
    connection.commit()
    connection.close()

    ledger = open_ledger(url)
    # The views, caught up by the first verify, still hold the old eval...
    stale = ledger.verify()
    assert "projections differ" in stale["failure"]["reason"]
    # ...so a thorough attacker rebuilds them too; then only the digest tells.
    ledger.rebuild_projections()
    recomputed = ledger.verify()
    assert recomputed["ok"], recomputed["failure"]
    report = ledger.verify(digest=digest)
    assert not report["ok"]
    assert "digest" in report["failure"]["reason"]


def test_digest_of_a_prefix_still_verifies_after_more_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = build_history(url, tmp_path)
    earlier = ledger.verify()
    build_history(url, tmp_path / "more", eval_prefix="f")
    later = open_ledger(url).verify(digest=earlier["digest"])
    assert later["ok"]
    assert later["digestVerifiedUpTo"] == earlier["position"]
    assert later["position"] == 28


def test_verify_cli_exit_codes(cli: CliType, tmp_path: Path) -> None:
    created = cli.ok(*experiment_args(tmp_path / "out"))
    cli.ok("run", "start", created["trainRunId"])
    report = cli.ok("verify")
    assert report["ok"] is True
    assert report["position"] == 2
    again = cli.ok("verify", "--digest", report["digest"])
    assert again["digestVerifiedUpTo"] == 2

    assert cli.store is not None
    store = Path(cli.store.removeprefix("sqlite:///"))
    connection = unguarded(store)
    connection.execute("DELETE FROM stored_events WHERE rowid=1")
    connection.commit()
    connection.close()
    result = cli("verify", json_mode=True)
    assert result.code == 3
    assert result.json["failure"]["position"] == 1
    assert "position 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_stored_event_is_a_clear_error(tmp_path: Path) -> None:
    """Reading a run whose first event no longer deserialises names the problem."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    build_history(url, tmp_path)
    connection = unguarded(path)
    originator = connection.execute(
        "SELECT originator_id FROM stored_events WHERE rowid=1"
    ).fetchone()[0]
    connection.execute("UPDATE stored_events SET state=? WHERE rowid=1", (b"{}",))
    connection.commit()
    connection.close()
    with pytest.raises(CorruptStoreError, match="verify"):
        open_ledger(url).show_run(str(UUID(originator)))


def test_verify_reports_views_that_differ_from_a_replay(tmp_path: Path) -> None:
    """A view edited behind the ledger's back fails verify until it is rebuilt."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    ledger = build_history(url, tmp_path)
    assert ledger.stats()["deployableCheckpoints"] == 2
    report = ledger.verify()
    assert report["ok"]
    assert report["projectionsMatchReplay"] is True

    connection = sqlite3.connect(path)
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%checkpoint%'"
        )
    ]
    assert tables, "the checkpoint view lives in the store"
    connection.execute(f"DELETE FROM {tables[0]}")
    connection.commit()
    connection.close()

    tampered = open_ledger(url).verify()
    assert not tampered["ok"]
    assert tampered["projectionsMatchReplay"] is False
    assert "projections rebuild" in tampered["failure"]["reason"]

    rebuilt = open_ledger(url)
    rebuilt.rebuild_projections()
    assert rebuilt.verify()["ok"]


@pytest.mark.parametrize(("query", "level"), [("", 2), ("?synchronous=normal", 1)])
def test_sqlite_durability_setting(tmp_path: Path, query: str, level: int) -> None:
    """FULL (2) by default: an acknowledged command survives power loss."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}{query}")
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == level


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("statement", "rank"),
    [
        ("DELETE FROM trainledger_events WHERE notification_id = %s", 7),
        ("DELETE FROM trainledger_events WHERE notification_id = %s", 14),
        ("UPDATE trainledger_events SET state = 'x'::bytea WHERE notification_id = %s", 9),
    ],
)
def test_verify_names_tampered_positions_on_postgresql(
    postgres_url: str, tmp_path: Path, statement: str, rank: int
) -> None:
    """PostgreSQL may skip positions, so deletions are found through the log chain."""
    import psycopg

    before = build_history(postgres_url, tmp_path).verify()
    assert before["ok"]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        positions = [
            row[0]
            for row in connection.execute(
                "SELECT notification_id FROM trainledger_events ORDER BY notification_id"
            )
        ]
        connection.execute("ALTER TABLE trainledger_events DISABLE TRIGGER ALL")
        connection.execute(statement, (positions[rank - 1],))
    report = open_ledger(postgres_url).verify()
    assert not report["ok"]
    assert report["failure"]["position"] == positions[rank - 1]


def test_an_interrupted_verify_stops_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = build_history(url, tmp_path)
    started: list[ParallelLogCheck] = []
    start = ParallelLogCheck.start

    def keep(*args: object) -> ParallelLogCheck:
        started.append(start(*args))  # type: ignore[arg-type]
        return started[-1]

    def interrupted(output: object = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        raise KeyboardInterrupt  # while the parent waits for the workers

    monkeypatch.setattr(ParallelLogCheck, "start", staticmethod(keep))
    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with workers_check_every_log(), pytest.raises(KeyboardInterrupt):
        ledger.verify()
    assert started
    assert all(worker.poll() is not None for worker in started[0].workers)
    ledger.close()


WRITER = """
import sys, time
from trainledger.adapters.store import open_ledger
from trainledger.domain.experiment import ExperimentRequest
ledger = open_ledger(sys.argv[1])
request = ExperimentRequest(profile="local-reader", family="qwen2.5-7b-reader",
    backend="dry-run", benchmark_export_id="b", output_dir=sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    run = ledger.create_experiment(request, dataset_fingerprint="0123456789abcdef",
        sample_count=8, actor="w")["trainRunId"]
    ledger.start_run(run, actor="w")
"""


def test_verify_never_reports_tampering_while_others_write(store_url: str, tmp_path: Path) -> None:
    import sys

    ledger = build_history(store_url, tmp_path)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_url, str(tmp_path / "out"), "8"])
        for _ in range(2)
    ]
    verify_while_they_write(store_url, writers, ledger)


def test_verify_runs_the_databases_own_check_and_finds_a_damaged_index(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    build_history(url, tmp_path).close()
    assert open_ledger(url).verify()["ok"]
    # Damage an index the way a bad disk write would: its entries no longer
    # match its table (the index is redefined in the schema behind SQLite's back).
    connection = sqlite3.connect(path)
    (version,) = connection.execute("PRAGMA schema_version").fetchone()
    connection.execute("PRAGMA writable_schema=ON")
    connection.execute(
        "UPDATE sqlite_master SET sql=replace(sql, '(status,', '(family,') "
        "WHERE name='view_runs_status'"
    )
    connection.execute(f"PRAGMA schema_version={version + 1}")
    connection.commit()
    connection.close()
    assert "consistency check" in failure_reason(url)


def test_the_workers_path_runs_the_databases_check_beside_the_seals(tmp_path: Path) -> None:
    """With worker processes, the parent runs SQLite's check in a thread of its own
    while it checks the seals, and still reports what the check finds."""
    import threading

    from trainledger.adapters.sqlite.recorder import LedgerSQLiteRecorder

    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    build_history(url, tmp_path).close()
    threads: list[threading.Thread] = []
    real = LedgerSQLiteRecorder.store_problems

    def spy(recorder: LedgerSQLiteRecorder) -> list[str]:
        threads.append(threading.current_thread())
        return real(recorder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LedgerSQLiteRecorder, "store_problems", spy)
        with workers_check_every_log() as verdicts:
            assert open_ledger(url).verify()["ok"]
        assert verdicts == [True]
        assert len(threads) == 1
        assert threads[0] is not threading.main_thread()
        # Damage an index (as in the test above): the workers' path reports it too.
        connection = sqlite3.connect(path)
        (version,) = connection.execute("PRAGMA schema_version").fetchone()
        connection.execute("PRAGMA writable_schema=ON")
        connection.execute(
            "UPDATE sqlite_master SET sql=replace(sql, '(status,', '(family,') "
            "WHERE name='view_runs_status'"
        )
        connection.execute(f"PRAGMA schema_version={version + 1}")
        connection.commit()
        connection.close()
        with workers_check_every_log() as verdicts:
            report = open_ledger(url).verify()
        assert verdicts == [True]  # the log is sound: the index is what is not
        assert not report["ok"]
        assert "consistency check" in report["failure"]["reason"]
        assert len(threads) == 2


def test_a_failing_database_check_reaches_verify_from_its_thread(tmp_path: Path) -> None:
    from trainledger.adapters.sqlite.recorder import LedgerSQLiteRecorder

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    build_history(url, tmp_path).close()

    def broken(recorder: LedgerSQLiteRecorder) -> list[str]:
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LedgerSQLiteRecorder, "store_problems", broken)
        with workers_check_every_log(), pytest.raises(sqlite3.DatabaseError, match="malformed"):
            open_ledger(url).verify()


def test_verify_finds_a_tracking_position_moved_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    ledger = build_history(url, tmp_path)
    assert ledger.stats()["totalRuns"] == 2
    ledger.close()
    connection = sqlite3.connect(path)
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%tracking%'"
        )
    ]
    assert tables
    connection.execute(f"UPDATE {tables[0]} SET notification_id = 1000")
    connection.commit()
    connection.close()
    assert "tracking position" in failure_reason(url)


def verify_while_they_write(
    store_url: str, writers: list[subprocess.Popen[bytes]], ledger: TrainingLedger
) -> None:
    """`verify` over and over while the writers run: never a failure (no false alarm)."""
    try:
        reports = []
        while any(w.poll() is None for w in writers):
            reports.append(open_ledger(store_url, create=False).verify())
        assert len(reports) >= 3
        assert [r["failure"] for r in reports if not r["ok"]] == []
    finally:
        for writer in writers:
            writer.wait(timeout=60)
        ledger.close()
    assert all(writer.returncode == 0 for writer in writers)


def failure_reason(url: str) -> str:
    """Why `verify` of the store fails (it must)."""
    report = open_ledger(url, create=False).verify()
    assert not report["ok"]
    reason: str = report["failure"]["reason"]
    return reason
