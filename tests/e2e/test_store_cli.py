"""Stores through the real CLI: PostgreSQL URLs, export/import, moving between backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_cluster import SUPERUSER_PASSWORD, PostgresCluster
from tests.support import (
    READER_FAMILY,
    REPO,
    SAMPLE_DATASET,
    Cli,
    eval_summary,
    experiment_args,
    reader_request,
    write_artifact,
)
from trainledger.adapters.store import open_ledger


def build_history(cli: Cli, tmp_path: Path) -> dict[str, str]:
    """Through the CLI: a run with a checkpoint marked deployable then revoked, a failed run."""
    out = tmp_path / "out"
    run_id = cli.ok(*experiment_args(out), "--idempotency-key", "create-1")["trainRunId"]
    cli.ok("run", "start", run_id)
    artifact = out / "adapter.bin"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(b"weights")
    checkpoint_id = cli.ok(
        "checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", str(artifact)
    )["checkpointId"]
    cli.ok("run", "complete", run_id)
    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps(eval_summary(checkpoint_id, eval_id="eval-1")))
    cli.ok(
        "eval", "attach", checkpoint_id, "--file", str(eval_file), "--mark-deployable",
        "--idempotency-key", "deploy-1",
    )  # fmt: skip
    cli.ok("checkpoint", "revoke", checkpoint_id, "--reason", "superseded", actor="carol")
    failed = cli.ok(*experiment_args(out))["trainRunId"]
    cli.ok("run", "fail", failed, "--reason", "no GPU today")
    return {"run": run_id, "checkpoint": checkpoint_id, "failed": failed, "eval": str(eval_file)}


def build_history_in_process(url: str, tmp_path: Path) -> dict[str, str]:
    """The same history as `build_history`, written through the Python API (faster)."""
    out = tmp_path / "out"
    eval_file = tmp_path / "eval.json"
    ledger = open_ledger(url)
    try:
        request = reader_request(out)
        run_id = ledger.create_experiment(
            request, dataset_path=str(SAMPLE_DATASET), actor="tester", idempotency_key="create-1"
        )["trainRunId"]
        ledger.start_run(run_id, actor="tester")
        checkpoint_id = ledger.register_checkpoint(
            run_id,
            family=READER_FAMILY,
            artifact_path=write_artifact(out, "adapter.bin"),
            actor="tester",
        )["checkpointId"]
        ledger.complete_run(run_id, actor="tester")
        summary = eval_summary(checkpoint_id, eval_id="eval-1")
        eval_file.write_text(json.dumps(summary))
        ledger.attach_eval(
            checkpoint_id,
            summary,
            mark_deployable=True,
            actor="tester",
            idempotency_key="deploy-1",
        )
        ledger.revoke_deployability(checkpoint_id, "superseded", actor="carol")
        failed = ledger.create_experiment(
            request, dataset_path=str(SAMPLE_DATASET), actor="tester"
        )["trainRunId"]
        ledger.fail_run(failed, "no GPU today", actor="tester")
    finally:
        ledger.close()
    return {"run": run_id, "checkpoint": checkpoint_id, "failed": failed, "eval": str(eval_file)}


def export(cli: Cli) -> str:
    result = cli("export")
    assert result.code == 0, result.stderr
    return result.stdout


def state(url: str, ids: dict[str, str]) -> dict[str, Any]:
    """What a user compares after a migration, read through the Python API."""
    ledger = open_ledger(url)
    try:
        read_model = ledger.read_model
        assert read_model is not None
        return {
            "run": ledger.show_run(ids["run"]),
            "checkpoint": ledger.show_checkpoint(ids["checkpoint"]),
            "histories": [ledger.history(ids[k]) for k in ("run", "checkpoint", "failed")],
            "stats": read_model.stats(None),
            "lineage": read_model.lineage(ids["checkpoint"], None),
            "digest": ledger.verify()["digest"],
        }
    finally:
        ledger.close()


@pytest.mark.postgres
def test_a_team_moves_from_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_url: str) -> None:
    sqlite = Cli(f"sqlite:///{tmp_path / 'team.db'}", cwd=tmp_path)
    postgres = Cli(postgres_url, cwd=tmp_path)
    back = Cli(f"sqlite:///{tmp_path / 'back' / 'team.db'}", cwd=tmp_path)
    ids = build_history_in_process(sqlite.store or "", tmp_path)

    exported = export(sqlite)
    lines = [json.loads(line) for line in exported.splitlines()]
    assert len(lines) == 10
    assert all(line["aggregateId"] for line in lines)
    dump = tmp_path / "ledger.jsonl"
    dump.write_text(exported)

    summary = postgres.ok("import", str(dump))
    assert summary["imported"] == 10
    assert summary["reservations"] == 3  # two idempotency records, one evalId
    assert export(postgres) == exported

    (tmp_path / "again.jsonl").write_text(export(postgres))
    assert back.ok("import", str(tmp_path / "again.jsonl"))["imported"] == 10
    assert export(back) == exported

    original = state(sqlite.store or "", ids)
    assert state(postgres_url, ids) == original
    assert state(back.store or "", ids) == original
    assert original["stats"]["deployableCheckpoints"] == 0
    assert original["lineage"]["deployabilityHistory"][0]["deployable"] is True

    # The moved ledger keeps its guarantees: a repeated command is recognised,
    # a used evalId stays used.
    repeated = postgres.ok(
        "eval", "attach", ids["checkpoint"], "--file", ids["eval"], "--mark-deployable",
        "--idempotency-key", "deploy-1",
    )  # fmt: skip
    assert repeated["deployable"] is True  # the first outcome, returned again
    reused = postgres("eval", "attach", ids["checkpoint"], "--file", ids["eval"], json_mode=True)
    assert reused.code == 1
    assert reused.json["error"]["code"] == "duplicate_eval"
    assert export(postgres) == exported

    # Importing again into a store that has events is refused, whole.
    refused = postgres("import", str(dump), json_mode=True)
    assert refused.code == 1
    assert refused.stderr.count("\n") == 1
    assert refused.json["error"]["code"] == "store_not_empty"
    assert export(postgres) == exported


def test_a_broken_export_is_refused_naming_the_line_and_nothing_is_imported(
    cli: Cli, tmp_path: Path
) -> None:
    source = Cli(f"sqlite:///{tmp_path / 'source.db'}", cwd=tmp_path)
    build_history_in_process(source.store or "", tmp_path)
    lines = export(source).splitlines()
    tampered = json.loads(lines[5])
    tampered["payload"]["eval"]["candidateScore"] = 0.95
    tampered["payload"]["eval"]["delta"] = 0.45
    lines[5] = json.dumps(tampered)
    dump = tmp_path / "tampered.jsonl"
    dump.write_text("\n".join(lines) + "\n")

    result = cli.refused("import", str(dump))
    assert "line 6" in result.stderr
    assert "eventHash" in result.stderr
    assert export(cli) == ""

    result = cli.refused("import", str(tmp_path / "missing.jsonl"))
    assert "cannot read" in result.stderr


def test_import_reads_standard_input(cli: Cli, tmp_path: Path) -> None:
    source = Cli(f"sqlite:///{tmp_path / 'source.db'}", cwd=tmp_path)
    build_history_in_process(source.store or "", tmp_path)
    exported = export(source)
    completed = subprocess.run(
        [sys.executable, "-m", "trainledger.cli", "--store", cli.store or "", "import", "-"],
        input=exported,
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("imported 10 events of 3 aggregates")
    assert export(cli) == exported


@pytest.mark.postgres
def test_the_cli_works_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    cli = Cli(postgres_url, cwd=tmp_path)
    ids = build_history(cli, tmp_path)
    run = cli.ok("run", "show", ids["run"])
    assert run["status"] == "completed"
    assert run["checkpointIds"] == [ids["checkpoint"]]
    checkpoint = cli.ok("checkpoint", "show", ids["checkpoint"])
    assert checkpoint["deployable"] is False
    assert checkpoint["artifactDigest"].startswith("sha256:")
    history = cli.ok("history", ids["checkpoint"])["events"]
    assert [e["type"] for e in history] == [
        "Registered",
        "EvalAttached",
        "MarkedDeployable",
        "DeployabilityRevoked",
    ]
    verified = cli.ok("verify")
    assert verified["ok"] is True
    assert verified["position"] == 10
    refused = cli.refused("run", "start", ids["failed"])
    assert "failed" in refused.stderr
    # The password given in the URL is never shown.
    for args in (("run", "show", ids["run"]), ("verify",), ("history", ids["run"])):
        result = cli(*args)
        assert SUPERUSER_PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgres
def test_postgresql_connection_problems_are_one_line_errors_without_the_password(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    wrong_password = postgres_cluster.url("postgres").replace(SUPERUSER_PASSWORD, "not-it-9d2")
    no_server = "postgresql://someone:s3cr3t-word@127.0.0.1:1/ledger?connect_timeout=2"
    no_database = postgres_cluster.url("no_such_db")
    cases = [
        (wrong_password, "password authentication failed", "not-it-9d2"),
        (no_server, "Connection refused", "s3cr3t-word"),
        (no_database, 'database "no_such_db" does not exist', SUPERUSER_PASSWORD),
        ("postgresql://u:hunter2@localhost:5432/db?pool_size=0", "pool_size", "hunter2"),
        ("postgresql://u:hunter2@localhost:5432/db?sslmode=x", "unknown option", "hunter2"),
        ("postgresql://u:hunter2@localhost:5432/", "names no database", "hunter2"),
    ]
    for url, reason, password in cases:
        result = Cli(url, cwd=tmp_path)("verify", json_mode=True)
        assert result.code == 1, (url, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert reason in result.stderr
        assert password not in result.stderr + result.stdout
        assert result.json["error"]["code"] == "store_error"


def test_processes_opening_a_fresh_store_at_once_all_succeed(
    store_url: str, tmp_path: Path
) -> None:
    """The first use of a new store creates its tables, however many start together."""
    argv = [sys.executable, "-m", "trainledger.cli", "--store", store_url, "--json"]
    processes = [
        subprocess.Popen(
            [*argv, *experiment_args(tmp_path / "out")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    run_ids = set()
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        run_ids.add(json.loads(stdout)["trainRunId"])
    assert len(run_ids) == 6
    ledger = open_ledger(store_url)
    try:
        assert ledger.recorder.max_notification_id() is not None
        read_model = ledger.read_model
        assert read_model is not None
        assert read_model.stats(None)["pendingRuns"] == 6
    finally:
        ledger.close()
