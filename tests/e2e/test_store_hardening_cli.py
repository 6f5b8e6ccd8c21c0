"""Issue 15, stores and integrity, through the real CLI: what a user meets at the prompt."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.support import READER_FAMILY, Cli, eval_summary, experiment_args

QUERIES = [
    ("run", "list"),
    ("stats",),
    ("verify",),
    ("events",),
    ("export",),
    ("checkpoint", "list"),
]


@pytest.mark.parametrize("query", QUERIES, ids=" ".join)
def test_a_query_on_a_path_with_no_ledger_says_so_and_writes_nothing(
    tmp_path: Path, query: tuple[str, ...]
) -> None:
    path = tmp_path / "typo" / "ledgr.db"
    result = Cli(f"sqlite:///{path}", cwd=tmp_path).refused(*query)
    assert "no ledger" in result.stderr
    assert not path.exists()
    assert not path.parent.exists()


@pytest.mark.parametrize("content", [b"", b"x", b"SQLite format 3\x00" + b"\x07" * 200, b"{}\n"])
def test_a_damaged_file_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(content)
    cli = Cli(f"sqlite:///{path}", cwd=tmp_path)
    for args in (("stats",), ("verify",), experiment_args(tmp_path / "out")):
        result = cli.refused(*args)
        assert "not a trainledger store" in result.stderr or "damaged" in result.stderr
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]


def test_a_write_creates_the_store_and_queries_then_answer(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ledger.db"
    cli = Cli(f"sqlite:///{path}", cwd=tmp_path)
    cli.ok(*experiment_args(tmp_path / "out"))
    assert cli.ok("stats")["totalRuns"] == 1


@pytest.mark.parametrize("digest", ["", "abc", "g" * 64, "0" * 63, "0" * 65, " " + "0" * 63])
def test_a_malformed_digest_is_a_usage_error(cli: Cli, tmp_path: Path, digest: str) -> None:
    cli.ok(*experiment_args(tmp_path / "out"))
    result = cli.refused("verify", "--digest", digest, code=2)
    assert "digest" in result.stderr
    assert "integrity" not in result.stderr.lower()


def test_an_uppercase_digest_is_the_same_digest(cli: Cli, tmp_path: Path) -> None:
    cli.ok(*experiment_args(tmp_path / "out"))
    digest = cli.ok("verify")["digest"]
    assert cli.ok("verify", "--digest", digest.upper())["digestVerifiedUpTo"] == 1


@pytest.mark.parametrize("opened", ["read-only by the URL", "read-only by its mode"])
def test_a_read_only_store_file_can_be_verified_and_exported(
    cli: Cli, tmp_path: Path, opened: str
) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    cli.ok("run", "start", run_id)
    assert cli.store is not None
    path = Path(cli.store.removeprefix("sqlite:///"))
    exported = cli("export").stdout
    cli.ok("stats")
    for leftover in path.parent.glob(path.name + "-*"):
        leftover.unlink()
    content = path.read_bytes()
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    path.parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    archive = cli
    if opened == "read-only by the URL":
        archive = Cli(f"{cli.store}?mode=ro", cwd=tmp_path)
    elif os.access(path, os.W_OK):
        pytest.skip("running as a user who may write anything: only ?mode=ro makes it read-only")
    try:
        assert archive.ok("verify")["ok"] is True
        again = archive("export")
        assert again.code == 0, again.stderr
        assert again.stdout == exported
        assert archive.ok("run", "show", run_id)["status"] == "running"
        refused = archive.refused("run", "complete", run_id)
        assert "read-only" in refused.stderr or "readonly" in refused.stderr
        # Nothing written, and no -wal or -shm file needed beside it.
        assert path.read_bytes() == content
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    finally:
        path.parent.chmod(stat.S_IRWXU)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize("text", ["bell\x07", "esc\x1b[31m", "cr\rhidden"])
def test_control_characters_are_refused_from_the_cli(cli: Cli, tmp_path: Path, text: str) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    cli.ok("run", "start", run_id)
    result = cli("run", "fail", run_id, "--reason", text, json_mode=True)
    assert result.code == 1, result.stderr
    assert result.json["error"]["code"] == "control_character"
    assert "Traceback" not in result.stderr
    assert cli.ok("run", "show", run_id)["status"] == "running"
    assert cli.ok("verify")["position"] == 2


def test_a_nul_in_an_eval_file_is_refused(store_url: str, tmp_path: Path) -> None:
    cli = Cli(store_url, cwd=tmp_path)
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    cli.ok("run", "start", run_id)
    checkpoint_id = cli.ok(
        "checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", "a.bin"
    )["checkpointId"]
    summary = eval_summary(checkpoint_id, eval_id="e\u0000vil")
    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps(summary))
    result = cli("eval", "attach", checkpoint_id, "--file", str(eval_file), json_mode=True)
    assert result.code == 1, result.stderr
    assert result.json["error"]["code"] == "control_character"
    summary["evalId"] = "fine"
    summary["benchmarkId"] = "bench\u0000"
    eval_file.write_text(json.dumps(summary))
    result = cli("eval", "attach", checkpoint_id, "--file", str(eval_file), json_mode=True)
    assert result.json["error"]["code"] == "control_character"
    assert cli.ok("verify")["ok"] is True
    assert cli.ok("stats")["totalEvals"] == 0


@pytest.mark.postgres
def test_a_query_on_a_database_with_no_ledger_says_so_and_creates_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    cli = Cli(postgres_url, cwd=tmp_path)
    for query in QUERIES:
        assert "no ledger" in cli.refused(*query).stderr
    with psycopg.connect(postgres_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)
    cli.ok(*experiment_args(tmp_path / "out"))
    assert cli.ok("stats")["totalRuns"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:1/db?password=s3cr3t-pw",
        "postgresql://u@127.0.0.1:1/db?connect_timeout=1&sslpassword=s3cr3t-pw",
        "postgresql://u:s3cr3t-pw@127.0.0.1:1/db?password=s3cr3t-pw",
        "sqlite:///ledger.db?password=s3cr3t-pw",
    ],
)
def test_a_password_in_the_store_url_query_is_never_printed(tmp_path: Path, url: str) -> None:
    cli = Cli(url, cwd=tmp_path)
    for args in (("stats",), ("--json", "stats"), experiment_args(tmp_path / "out")):
        result = cli.refused(*args)
        assert "s3cr3t" not in result.stderr + result.stdout


def test_a_store_locked_past_its_lock_timeout_is_a_conflict_and_records_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store" / "ledger.db"
    cli = Cli(f"sqlite:///{path}?lock_timeout=1", cwd=tmp_path)
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        refused = cli("run", "start", run_id, json_mode=True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.code == 1
    assert refused.json["error"]["code"] == "conflict"
    assert "Traceback" not in refused.stderr
    assert cli.ok("run", "show", run_id)["status"] == "pending"


def test_an_append_that_outwaits_the_lock_timeout_is_a_conflict(tmp_path: Path) -> None:
    from tests.support import reader_request
    from trainledger.adapters.store import open_ledger
    from trainledger.domain.errors import ConflictError

    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}?lock_timeout=1")
    run_id = ledger.create_experiment(
        reader_request(tmp_path / "out"),
        dataset_fingerprint="0123456789abcdef",
        sample_count=3,
        actor="a",
    )["trainRunId"]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # taken after the ledger opened the store
        with pytest.raises(ConflictError, match="stayed locked"):
            ledger.start_run(run_id, actor="a")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ledger.show_run(run_id)["status"] == "pending"
    ledger.close()
