"""`trainledger train`, `run import-result` and `run reconcile` through real processes.

Experiments are created in-process on the same SQLite file where the CLI is
not what is under test; the trainer verbs always run as the real command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.trainer_scripts import SEED_STYLE_TRAINER, create_run, process_gone, write_trainer
from tests.support import (
    READER_FAMILY,
    REPO,
    SAMPLE_DATASET,
    Cli,
    experiment_args,
    start_train,
    stop_when,
)
from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import TrainerResult
from trainledger.domain.views import iso
from trainledger.service.ledger import TrainingLedger

EXAMPLE_TRAINER_DIR = REPO / "examples" / "trainer"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[TrainingLedger]:
    """The same SQLite store the CLI writes, opened in this process."""
    ledger = open_ledger(sqlite_url)
    yield ledger
    ledger.close()


def assert_one_line_error(stderr: str, *named: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for part in named:
        assert part in lines[0]


def read_safetensors_header(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header


def test_full_lifecycle_with_the_example_trainer(cli: Cli, tmp_path: Path) -> None:
    output_dir = tmp_path / "checkpoints"
    created = cli.ok(
        *experiment_args(
            output_dir,
            **{"--backend": "peft-trl-orpo", "--tier": "small-gpu"},
        ),
        "--hp",
        "learningRate=0.01",
        "--hp",
        "loraRank=4",
        "--hp",
        "batchSize=4",
        "--hp",
        "gradientAccumulation=1",
    )
    run_id = created["trainRunId"]

    trained = cli.ok("train", run_id, "--scripts-dir", str(EXAMPLE_TRAINER_DIR))

    assert trained["status"] == "completed"
    assert trained["outcome"] == "completed"
    assert trained["pid"] > 0
    assert trained["startedAt"] is not None
    checkpoint = trained["checkpoint"]
    assert trained["checkpointIds"] == [trained["checkpointId"]] == [checkpoint["checkpointId"]]
    adapter = Path(checkpoint["artifactPath"])
    assert adapter.parent == output_dir
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    header = read_safetensors_header(adapter / "adapter_model.safetensors")
    shapes = {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}
    assert sorted(shapes.values()) == [[1, 4], [4, 512]]
    assert checkpoint["artifactDigest"].startswith("sha256:")
    metrics = checkpoint["metrics"]
    assert metrics["finalLoss"] < metrics["initialLoss"]
    assert metrics["steps"] == 36
    log = Path(trained["trainerLogPath"]).read_text()
    assert "step 36/36" in log

    marked = cli.ok(
        "eval",
        "attach",
        checkpoint["checkpointId"],
        "--eval-id",
        "eval-1",
        "--benchmark-id",
        "bench-1",
        "--family",
        READER_FAMILY,
        "--mode",
        "prompt_assisted",
        "--baseline",
        "0.5",
        "--candidate",
        "0.7",
        "--verdict",
        "pass",
        "--mark-deployable",
    )
    assert marked["deployable"] is True
    history = cli.ok("history", run_id)
    assert [e["type"] for e in history["events"]] == [
        "Registered",
        "Started",
        "CheckpointLinked",
        "Completed",
    ]
    started = history["events"][1]["payload"]
    assert started["pid"] == trained["pid"]
    assert started["trainerLogPath"] == trained["trainerLogPath"]


def test_default_reference_trainer_dry_run(cli: Cli, store: TrainingLedger, tmp_path: Path) -> None:
    run_id = create_run(store, tmp_path / "out", backend="dry-run")
    result = cli("train", run_id)
    assert result.code == 0, result.stderr
    assert f"run {run_id}: completed as a dry run (no checkpoint)" in result.stdout
    assert store.get_run(run_id).status == "completed"


def test_failed_training_prints_the_run_and_exits_1(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    script = write_trainer(
        tmp_path / "scripts",
        'print("loading"); print(json.dumps(result("failed", failureReason="CUDA OOM")))',
    )
    run_id = create_run(store, tmp_path / "out")
    text = cli("train", run_id, "--trainer", str(script))
    assert text.code == 1
    assert_one_line_error(text.stderr, f"run {run_id} failed: CUDA OOM")
    assert "failureReason" in text.stdout

    other = create_run(store, tmp_path / "out")
    as_json = cli("train", other, "--trainer", str(script), json_mode=True)
    assert as_json.code == 1
    document = as_json.json
    assert document["status"] == "failed"
    assert document["failureReason"] == "CUDA OOM"
    assert document["error"]["code"] == "training_failed"


def test_missing_script_and_usage_errors(cli: Cli, store: TrainingLedger, tmp_path: Path) -> None:
    run_id = create_run(store, tmp_path / "out")
    both = cli("train", run_id, "--scripts-dir", "x", "--trainer", "y")
    assert both.code == 2
    assert store.get_run(run_id).status == "pending"
    missing = cli("train", run_id, "--scripts-dir", str(tmp_path / "no-such-dir"))
    assert missing.code == 1
    assert_one_line_error(missing.stderr, "trainer script not found", "no-such-dir/main.py")
    assert store.get_run(run_id).status == "pending"  # no trainer ran: nothing recorded


def test_timeout_kills_the_trainer_and_its_child(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    script = write_trainer(
        tmp_path / "scripts",
        """
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note("child", child.pid)
        print("working...", flush=True)
        time.sleep(600)
        """,
    )
    run_id = create_run(store, output_dir)
    started = time.monotonic()
    result = cli("train", run_id, "--trainer", str(script), "--timeout", "1")
    assert time.monotonic() - started < 20
    assert result.code == 1
    assert_one_line_error(result.stderr, "timeout after 1 s")
    run = store.get_run(run_id)
    assert run.failure_reason == "timeout after 1 s"
    assert run.pid is not None
    assert process_gone(run.pid)
    assert process_gone(int((output_dir / "child").read_text()))


def result_document(store: TrainingLedger, run_id: str, **fields: object) -> bytes:
    spec = store.get_run(run_id).spec
    document = {name: getattr(spec, name) for name in TrainerResult.CHECKED_FIELDS}
    return json.dumps({**document, **fields}).encode()


def completed_result(store: TrainingLedger, tmp_path: Path, **fields: object) -> tuple[str, Path]:
    """A run, and a file holding a `completed` result for it with an adapter in its output dir."""
    output_dir = tmp_path / "out"
    run_id = create_run(store, output_dir)
    (output_dir / "adapter").mkdir(parents=True)
    (output_dir / "adapter" / "adapter_config.json").write_text("{}")
    result_file = tmp_path / "result.json"
    result_file.write_bytes(
        result_document(
            store, run_id, status="completed", artifact={"artifactPath": "adapter"}, **fields
        )
    )
    return run_id, result_file


def test_import_result_is_idempotent_and_refuses_a_different_result(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    run_id, result_file = completed_result(store, tmp_path, finalLoss=0.3)

    first = cli.ok("run", "import-result", run_id, "--result", str(result_file))
    assert first["outcome"] == "completed"
    assert first["checkpoint"]["metrics"] == {"finalLoss": 0.3}

    again = cli("run", "import-result", run_id, "--result", str(result_file))
    assert again.code == 0, again.stderr
    assert "already recorded" in again.stdout
    assert len(store.history(run_id)["events"]) == 4

    different = tmp_path / "other.json"
    different.write_bytes(result_document(store, run_id, status="failed", failureReason="x"))
    refused = cli("run", "import-result", run_id, "--result", str(different))
    assert refused.code == 1
    assert_one_line_error(refused.stderr, "already completed with a different result")
    assert store.get_run(run_id).status == "completed"

    unreadable = cli("run", "import-result", run_id, "--result", str(tmp_path / "nope.json"))
    assert unreadable.code == 1
    assert_one_line_error(unreadable.stderr, "cannot read result file")


def test_reconcile_fails_a_run_whose_ledger_process_crashed(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    script = write_trainer(tmp_path / "scripts", "time.sleep(600)")
    run_id = create_run(store, output_dir, budget_minutes=1)
    ledger_process = start_train(cli, run_id, script, stderr=subprocess.DEVNULL)
    trainer_pid = None
    try:
        deadline = time.monotonic() + 30
        while store.get_run(run_id).status != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        trainer_pid = store.get_run(run_id).pid
        ledger_process.send_signal(signal.SIGKILL)  # the ledger process crashes
        ledger_process.wait()
        assert store.get_run(run_id).status == "running"

        not_yet = cli.ok("run", "reconcile")
        assert not_yet["abandoned"] == []

        started_at = store.get_run(run_id).started_at
        assert started_at is not None
        later = iso(started_at + timedelta(minutes=1, seconds=31))
        assert later is not None
        report = cli("run", "reconcile", "--now", later)
        assert report.code == 0, report.stderr
        assert f"run {run_id}: failed as abandoned" in report.stdout
        run = store.get_run(run_id)
        assert run.status == "failed"
        assert run.failure_reason == "abandoned"
    finally:
        if ledger_process.poll() is None:
            ledger_process.kill()
            ledger_process.wait()
        if trainer_pid is not None:  # the orphaned trainer, in its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(trainer_pid, signal.SIGKILL)


def test_stopping_train_kills_the_trainer_and_fails_the_run(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    script = write_trainer(tmp_path / "scripts", "time.sleep(600)")
    run_id = create_run(store, output_dir)
    ledger_process = start_train(cli, run_id, script)
    stderr = stop_when(
        ledger_process, lambda: store.get_run(run_id).status == "running", signal.SIGTERM, "run"
    )
    assert ledger_process.returncode == 1
    assert "Traceback" not in stderr
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert run.failure_reason is not None
    assert run.failure_reason.startswith("interrupted")
    assert run.pid is not None
    assert process_gone(run.pid)


def test_the_whole_trainer_result_is_kept_with_unknown_fields_and_nulls(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    """SPEC §4.6: optional fields may be null, unknown extra fields are kept."""
    script = write_trainer(
        tmp_path / "scripts",
        """
        print("step 1/1")
        document = completed(
            seedVersion="v7", gpu={"name": "A10", "memoryGb": 24}, tags=["orpo", None], steps=12
        )
        document["finalLoss"] = None  # as the seed's trainers print it
        print(json.dumps(document))
        """,
    )
    run_id = create_run(store, tmp_path / "out")
    trained = cli.ok("train", run_id, "--trainer", str(script))
    assert trained["status"] == "completed"
    kept = cli.ok("run", "show", run_id)["trainerResult"]
    assert kept["finalLoss"] is None
    assert kept["seedVersion"] == "v7"
    assert kept["gpu"] == {"name": "A10", "memoryGb": 24}
    assert kept["tags"] == ["orpo", None]
    assert kept["steps"] == 12
    assert kept["metrics"] == {"trainLoss": 0.5}
    assert kept["status"] == "completed"
    assert kept["artifact"]["adapterFormat"] == "peft-adapter"
    assert trained["trainerResult"] == kept
    assert cli.ok("lineage", trained["checkpointId"])["run"]["trainerResult"] == kept
    # as of a moment before the run ended there was no result yet
    running_at = cli.ok("run", "show", run_id)["startedAt"]
    assert cli.ok("run", "show", run_id, "--as-of", running_at)["trainerResult"] is None

    failed = write_trainer(
        tmp_path / "failing",
        'print(json.dumps(result("failed", failureReason="OOM", finalLoss=None, node="n3")))',
    )
    other = create_run(store, tmp_path / "out")
    assert cli("train", other, "--trainer", str(failed)).code == 1
    kept = cli.ok("run", "show", other)["trainerResult"]
    assert kept["failureReason"] == "OOM"
    assert kept["node"] == "n3"
    assert kept["finalLoss"] is None


def test_import_result_keeps_the_whole_result(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    extra = {"finalLoss": None, "wandbRun": "abc", "nested": {"a": [1, 2.5, "x"]}}
    run_id, result_file = completed_result(store, tmp_path, **extra)
    imported = cli.ok("run", "import-result", run_id, "--result", str(result_file))
    assert imported["outcome"] == "completed"
    shown = cli.ok("run", "show", run_id)["trainerResult"]
    assert shown == json.loads(result_file.read_bytes())
    assert cli.ok("run", "import-result", run_id, "--result", str(result_file))["alreadyRecorded"]


def test_a_result_that_cannot_be_stored_whole_fails_the_run(
    cli: Cli, store: TrainingLedger, tmp_path: Path
) -> None:
    run_id, result_file = completed_result(store, tmp_path, seed=2**70)
    refused = cli("run", "import-result", run_id, "--result", str(result_file), json_mode=True)
    assert refused.code == 1
    assert "seed is out of 64-bit range" in refused.json["failureReason"]
    assert cli.ok("run", "show", run_id)["trainerResult"] is None


def test_a_fingerprint_only_spec_says_it_has_no_dataset_path_and_a_seed_trainer_copes(
    cli: Cli, tmp_path: Path
) -> None:
    script = tmp_path / "seed" / "main.py"
    script.parent.mkdir()
    script.write_text(SEED_STYLE_TRAINER)
    fingerprint = {"--dataset": "", "--dataset-fingerprint": "0123456789abcdef"}
    created = cli.ok(*experiment_args(tmp_path / "out", **fingerprint))
    assert created["spec"]["datasetExportPath"] == ""  # no file: said, not guessed
    trained = cli("train", created["trainRunId"], "--scripts-dir", str(script.parent))
    assert trained.code == 1
    assert "dataset export not found: ''" in trained.stderr  # the trainer's own reason
    assert "Traceback" not in trained.stderr

    given = cli.ok(
        *experiment_args(
            tmp_path / "out", **fingerprint, **{"--dataset-export-path": str(SAMPLE_DATASET)}
        )
    )
    assert given["spec"]["datasetExportPath"] == str(SAMPLE_DATASET)
    done = cli.ok("train", given["trainRunId"], "--scripts-dir", str(script.parent))
    assert done["status"] == "completed"

    both = cli(
        "experiment", "create", *experiment_args(tmp_path / "out")[2:], "--dataset-export-path", "x"
    )
    assert both.code == 2
