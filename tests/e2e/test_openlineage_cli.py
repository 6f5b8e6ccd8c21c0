"""`trainledger export --format openlineage` through the real CLI (SPEC §11.2).

On SQLite and PostgreSQL: every event, and every facet, validates against
the published schemas (`tests/openlineage_schemas.py`), and says what the
ledger's own log says about each run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.openlineage_schemas import assert_valid
from tests.support import READER_FAMILY, Cli, experiment_args
from trainledger.service.openlineage import NAMESPACE

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "store-0.1.0"
RUN_TRANSITIONS = {"Started": "START", "Completed": "COMPLETE", "Failed": "FAIL"}


def lineage_export(cli: Cli) -> list[dict[str, Any]]:
    result = cli("export", "--format", "openlineage")
    assert result.code == 0, result.stderr
    assert result.stdout.endswith("\n")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        assert_valid(event)
    return events


def log(cli: Cli) -> list[dict[str, Any]]:
    result = cli("events")
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def register(cli: Cli, run_id: str, artifact: Path, content: bytes) -> dict[str, Any]:
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(content)
    checkpoint: dict[str, Any] = cli.ok(
        "checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", str(artifact)
    )
    return checkpoint


def test_each_run_exports_its_start_and_its_end(store_url: str, tmp_path: Path) -> None:
    cli = Cli(store_url, cwd=tmp_path)
    out = tmp_path / "out"

    def create(**options: str) -> dict[str, Any]:
        created: dict[str, Any] = cli.ok(*experiment_args(out, **options))
        return created

    completed = create(**{"--dataset-export-id": "prefs-2025-06"})
    cli.ok("run", "start", completed["trainRunId"])
    first = register(cli, completed["trainRunId"], out / "adapter-1.bin", b"weights one")
    second = register(cli, completed["trainRunId"], out / "adapter-2", b"weights two")
    cli.ok("run", "complete", completed["trainRunId"])
    failed = create()
    cli.ok("run", "start", failed["trainRunId"])
    cli.ok("run", "fail", failed["trainRunId"], "--reason", "CUDA out of memory at step 12")
    running = create()
    cli.ok("run", "start", running["trainRunId"])
    pending = create()
    dry_run = create()
    trained = cli.ok("train", dry_run["trainRunId"])  # the bundled reference trainer
    assert (trained["status"], trained["checkpointId"]) == ("completed", None)

    events = lineage_export(cli)

    # One RunEvent per run transition, in the ledger's log order, at its time.
    transitions = [
        (RUN_TRANSITIONS[e["type"]], e["aggregateId"], e["timestamp"])
        for e in log(cli)
        if e["aggregateType"] == "TrainingRun" and e["type"] in RUN_TRANSITIONS
    ]
    assert [(e["eventType"], e["run"]["runId"], e["eventTime"]) for e in events] == transitions
    by_run: dict[str, list[str]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert by_run == {
        completed["trainRunId"]: ["START", "COMPLETE"],
        failed["trainRunId"]: ["START", "FAIL"],
        running["trainRunId"]: ["START"],
        dry_run["trainRunId"]: ["START", "COMPLETE"],
    }
    assert pending["trainRunId"] not in by_run
    assert {e["job"]["namespace"] for e in events} == {NAMESPACE}
    assert {e["job"]["name"] for e in events} == {READER_FAMILY}
    version = cli("--version").stdout.split()[-1]
    assert {e["producer"] for e in events} == {f"urn:trainledger:{version}"}

    # Every event of a run names its training export, versioned by the fingerprint.
    runs = {r["trainRunId"]: r for r in (completed, failed, running, dry_run)}
    for event in events:
        run = runs[event["run"]["runId"]]
        (training_export,) = event["inputs"]
        assert training_export["namespace"] == NAMESPACE
        assert training_export["name"] == run["spec"]["datasetExportId"]
        assert (
            training_export["facets"]["version"]["datasetVersion"]
            == (run["spec"]["datasetFingerprint"])
        )
    assert events[0]["inputs"][0]["name"] == "prefs-2025-06"

    ends = {e["run"]["runId"]: e for e in events if e["eventType"] != "START"}
    # The completed run's outputs: its two checkpoints, MODELs versioned by their digests.
    outputs = ends[completed["trainRunId"]]["outputs"]
    assert [(o["namespace"], o["name"]) for o in outputs] == [
        (NAMESPACE, first["checkpointId"]),
        (NAMESPACE, second["checkpointId"]),
    ]
    for output, checkpoint in zip(outputs, (first, second), strict=True):
        assert output["facets"]["datasetType"]["datasetType"] == "MODEL"
        assert output["facets"]["version"]["datasetVersion"] == checkpoint["artifactDigest"]
        assert checkpoint["artifactDigest"].startswith("sha256:")
    # The failure says why; the dry run produced no model; no START has outputs.
    fail = ends[failed["trainRunId"]]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "CUDA out of memory at step 12"
    assert fail["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"
    assert fail["outputs"] == []
    assert ends[dry_run["trainRunId"]]["outputs"] == []
    assert all(e["outputs"] == [] for e in events if e["eventType"] == "START")
    assert all("errorMessage" not in e["run"]["facets"] for e in events if e is not fail)


def test_an_empty_store_exports_no_event(cli: Cli, tmp_path: Path) -> None:
    cli.ok(*experiment_args(tmp_path / "out"))  # a pending run only
    result = cli("export", "--format", "openlineage")
    assert (result.code, result.stdout) == (0, "")


def test_the_store_of_0_1_0_exports_valid_lineage(tmp_path: Path) -> None:
    store = tmp_path / "old" / "ledger.db"
    store.parent.mkdir()
    shutil.copyfile(FIXTURE / "ledger.db", store)
    ids = json.loads((FIXTURE / "ids.json").read_text())
    cli = Cli(f"sqlite:///{store}", cwd=tmp_path)

    events = lineage_export(cli)

    # Log order; the failed run was abandoned while pending: it never started.
    assert [(e["run"]["runId"], e["eventType"]) for e in events] == [
        (ids["dryRun"], "START"),
        (ids["dryRun"], "COMPLETE"),
        (ids["trainedRun"], "START"),
        (ids["trainedRun"], "COMPLETE"),
        (ids["manualRun"], "START"),
        (ids["manualRun"], "COMPLETE"),
        (ids["failedRun"], "FAIL"),
    ]
    assert events[-1]["run"]["facets"]["errorMessage"]["message"] == "abandoned by hand"
    ends = {e["run"]["runId"]: e for e in events if e["eventType"] == "COMPLETE"}
    assert [o["name"] for o in ends[ids["trainedRun"]]["outputs"]] == [ids["checkpoint"]]
    assert [o["name"] for o in ends[ids["manualRun"]]["outputs"]] == [ids["revokedCheckpoint"]]
    assert ends[ids["dryRun"]]["outputs"] == []
