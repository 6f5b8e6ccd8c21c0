"""The trainer adapter against real subprocess trainers, through the Python API.

Each test writes a trainer script, creates a pending run and trains it with
the real subprocess runner (see `tests/e2e/test_trainer_cli.py` for the same
through the `trainledger` command). Whatever the trainer does, the run must
end terminal with a reason naming the cause, and a checkpoint exists only for
a valid `completed` result.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrainFn
from tests.e2e.trainer_scripts import create_run, process_gone, write_trainer
from tests.support import keyboard_interrupts
from trainledger.adapters.files import digest_artifact
from trainledger.adapters.trainer import SubprocessTrainerRunner, spec_dir_prefix
from trainledger.domain.contract import TrainerResult
from trainledger.domain.errors import (
    InvalidTransitionError,
    ResultRefusedError,
    TrainerNotStartedError,
    ValidationError,
)
from trainledger.domain.model import TrainingRun
from trainledger.domain.trainer import TrainerLaunch, TrainerStarted
from trainledger.service.ledger import TrainingLedger


def event_types(ledger: TrainingLedger, aggregate_id: str) -> list[str]:
    return [event["type"] for event in ledger.history(aggregate_id)["events"]]


def assert_failed(ledger: TrainingLedger, outcome: dict[str, Any], *named: str) -> str:
    """The run failed with no checkpoint, and the reason names each of `named`."""
    run = ledger.get_run(outcome["trainRunId"])
    assert run.status == "failed", outcome
    assert run.checkpoint_ids == []
    assert outcome["checkpointId"] is None
    reason = run.failure_reason
    assert reason is not None
    for part in named:
        assert part in reason, f"{part!r} not in {reason!r}"
    return reason


# --- well-behaved trainers ------------------------------------------------------


def test_well_behaved_trainer_registers_its_checkpoint(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        note("pid", os.getpid())
        note("cwd", os.getcwd())
        print("an error line for the log", file=sys.stderr)
        print(json.dumps(completed(checkpointRef="ckpt-7", extra={"kept": True})))
        """
    )
    assert outcome["status"] == "completed"
    assert outcome["outcome"] == "completed"
    run = ledger.get_run(outcome["trainRunId"])
    assert run.pid == int((output_dir / "pid").read_text())
    assert run.host
    assert run.started_at is not None
    assert Path((output_dir / "cwd").read_text()) == output_dir
    log_path = output_dir / f"trainer-{run.spec.experimentId}.log"
    assert run.trainer_log_path == str(log_path)
    assert "an error line for the log" in log_path.read_text()
    checkpoint = ledger.get_checkpoint(outcome["checkpointId"])
    assert run.checkpoint_ids == [checkpoint.id]
    assert checkpoint.train_run_id == run.id
    assert checkpoint.family == run.family
    assert checkpoint.artifact_path == str(output_dir / "adapter")
    assert checkpoint.artifact_digest == digest_artifact(str(output_dir / "adapter"))
    assert checkpoint.metrics == {"trainLoss": 0.5, "finalLoss": 0.25}
    assert checkpoint.checkpoint_ref == "ckpt-7"
    assert not checkpoint.deployable
    assert event_types(ledger, str(run.id)) == [
        "Registered",
        "Started",
        "CheckpointLinked",
        "Completed",
    ]
    # Checkpoint, link and completion were one append: consecutive positions.
    run_positions = ledger.ledger_recorder.positions(run.id)
    checkpoint_positions = ledger.ledger_recorder.positions(checkpoint.id)
    assert checkpoint_positions[0] + 1 == run_positions[2]
    assert run_positions[2] + 1 == run_positions[3]


def test_dry_run_with_the_bundled_reference_trainer(
    ledger: TrainingLedger, output_dir: Path
) -> None:
    run_id = create_run(ledger, output_dir, backend="dry-run")
    outcome = ledger.train(run_id, actor="tester")
    assert outcome["outcome"] == "dry_run"
    run = ledger.get_run(run_id)
    assert run.status == "completed"
    assert run.checkpoint_ids == []
    result_file = output_dir / f"result-{run.spec.experimentId}.json"
    assert json.loads(result_file.read_text())["status"] == "dry_run"


def test_reference_trainer_refuses_gpu_backends_without_their_packages(
    ledger: TrainingLedger, output_dir: Path
) -> None:
    if any(importlib.util.find_spec(name) for name in ("torch", "trl", "peft")):
        pytest.skip("torch, trl or peft is installed here")
    run_id = create_run(ledger, output_dir, backend="peft-trl-orpo")
    outcome = ledger.train(run_id, actor="tester")
    assert_failed(ledger, outcome, "peft-trl-orpo needs the optional packages", "missing")


def test_failed_result_fails_the_run_with_the_trainers_reason(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train('print(json.dumps(result("failed", failureReason="CUDA out of memory")))')
    assert assert_failed(ledger, outcome) == "CUDA out of memory"


def test_logs_before_the_json_on_stdout(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train(
        """
        for step in range(50):
            print(f"step {step} loss {1 / (step + 1):.3f}")
            print(json.dumps({"step": step, "loss": 0.1}))
        print(json.dumps(completed(), indent=2))
        """
    )
    assert outcome["outcome"] == "completed", outcome["failureReason"]
    assert outcome["resultSource"] == "stdout"


def test_result_only_in_the_result_file(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        print("training... done, see the result file")
        write_result_file(completed())
        """
    )
    assert outcome["outcome"] == "completed", outcome["failureReason"]
    assert outcome["resultSource"].startswith(f"result file {output_dir}")


def test_relative_artifact_path_is_inside_the_output_dir(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        document = completed()
        document["artifact"]["artifactPath"] = "adapter"
        print(json.dumps(document))
        """
    )
    assert outcome["checkpoint"]["artifactPath"] == str(output_dir / "adapter")


# --- exits, empty and garbage output --------------------------------------------


def test_non_zero_exit_with_a_completed_result_file(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train(
        """
        document = completed()
        write_result_file(document)
        print(json.dumps(document))
        sys.exit(3)
        """
    )
    assert_failed(ledger, outcome, "exited with code 3", "says completed")


def test_non_zero_exit_without_a_result(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train('print("Traceback: something broke"); sys.exit(2)')
    assert_failed(
        ledger, outcome, "exited with code 2", "stdout holds no JSON object", "was not found"
    )


def test_empty_stdout(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train("pass")
    assert_failed(ledger, outcome, "stdout was empty", "result file", "was not found")


def test_garbage_bytes_and_invalid_utf8(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train(
        r"""
        sys.stdout.buffer.write(bytes(range(256)) * 40 + b"\xff\xfe{\xc3\x28 \x00}")
        sys.stdout.flush()
        """
    )
    assert_failed(ledger, outcome, "stdout holds no JSON object")


def test_invalid_utf8_in_the_logs_does_not_hide_the_result(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train(
        r"""
        sys.stdout.buffer.write(b"\xff\xfe garbage \x80\n")
        sys.stdout.buffer.write(json.dumps(completed()).encode() + b"\n")
        """
    )
    assert outcome["outcome"] == "completed", outcome["failureReason"]


def test_stdout_over_one_mebibyte_keeps_its_tail(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train(
        """
        line = "x" * 1023 + "\\n"
        for _ in range(3 * 1024):
            sys.stdout.write(line)
        print(json.dumps(completed()))
        """
    )
    assert outcome["outcome"] == "completed", outcome["failureReason"]


def test_result_pushed_out_of_the_stdout_tail_is_lost(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train(
        """
        print(json.dumps(completed()))
        sys.stdout.write(("y" * 1023 + "\\n") * 2048)
        """
    )
    assert_failed(ledger, outcome, "stdout (last 1048576 of", "holds no JSON object")


# --- timeouts ---------------------------------------------------------------------


def test_hanging_trainer_and_its_child_are_killed_at_the_timeout(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note("child", child.pid)
        note("pid", os.getpid())
        print(json.dumps(completed()))  # a result printed before hanging does not count
        sys.stdout.flush()
        time.sleep(600)
        """,
        timeout_seconds=1.5,
    )
    assert_failed(ledger, outcome, "timeout after 1.5 s")
    assert outcome["failureReason"] == "timeout after 1.5 s"
    assert process_gone(int((output_dir / "pid").read_text()))
    assert process_gone(int((output_dir / "child").read_text()))


def test_trainer_ignoring_sigterm_is_killed(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note("pid", os.getpid())
        while True:
            time.sleep(1)
        """,
        timeout_seconds=0.5,
    )
    assert_failed(ledger, outcome, "timeout after 0.5 s")
    assert process_gone(int((output_dir / "pid").read_text()))


def test_leftover_background_process_is_killed_after_a_normal_exit(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note("child", child.pid)
        print(json.dumps(completed()))
        """
    )
    assert outcome["outcome"] == "completed"
    assert process_gone(int((output_dir / "child").read_text()))


# --- lying trainers ---------------------------------------------------------------


@pytest.mark.parametrize("field", TrainerResult.CHECKED_FIELDS)
def test_each_contract_field_must_match_the_recorded_spec(
    ledger: TrainingLedger, train: TrainFn, field: str
) -> None:
    outcome = train(f'print(json.dumps(completed({field}="forged")))')
    reason = assert_failed(ledger, outcome, field, "'forged'")
    assert reason.startswith("trainer result rejected:")


def test_spec_file_edited_by_the_trainer_changes_nothing(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train(
        """
        spec["configFingerprint"] = "ffffffffffffffff"
        with open(args.spec, "w") as handle:
            json.dump(spec, handle)
        print(json.dumps(completed()))
        """
    )
    assert_failed(ledger, outcome, "configFingerprint", "ffffffffffffffff")


def test_dry_run_result_for_a_non_dry_run_spec(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train('print(json.dumps(result("dry_run")))')
    assert_failed(ledger, outcome, "dry_run is only valid for a dry-run spec")


def test_completed_without_an_artifact(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train('print(json.dumps(result("completed", finalLoss=0.1)))')
    assert_failed(ledger, outcome, "needs an artifact")


@pytest.mark.parametrize(
    "artifact_path",
    [
        "os.path.join(os.path.dirname(out), 'elsewhere')",
        "'../elsewhere'",
        "os.path.join(out, 'link-out')",
        "out",
    ],
    ids=["absolute-outside", "dot-dot", "symlink-out", "output-dir-itself"],
)
def test_artifact_outside_the_output_dir(
    ledger: TrainingLedger, train: TrainFn, artifact_path: str
) -> None:
    outcome = train(
        f"""
        elsewhere = os.path.join(os.path.dirname(out), "elsewhere")
        os.makedirs(elsewhere, exist_ok=True)
        os.symlink(elsewhere, os.path.join(out, "link-out"))
        print(json.dumps(result("completed", artifact={{"artifactPath": {artifact_path}}})))
        """
    )
    assert_failed(ledger, outcome, "outside the output directory")


def test_missing_artifact(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train(
        """
        missing = os.path.join(out, "never-written")
        print(json.dumps(result("completed", artifact={"artifactPath": missing})))
        """
    )
    assert_failed(ledger, outcome, "never-written does not exist")


def test_unknown_status(ledger: TrainingLedger, train: TrainFn) -> None:
    outcome = train('print(json.dumps(completed() | {"status": "succeeded"}))')
    assert_failed(ledger, outcome, "status", "'succeeded'")


def test_missing_trainer_script(ledger: TrainingLedger, output_dir: Path, tmp_path: Path) -> None:
    run_id = create_run(ledger, output_dir)
    missing = tmp_path / "nowhere" / "main.py"
    with pytest.raises(TrainerNotStartedError, match=f"trainer script not found: {missing}"):
        ledger.train(run_id, trainer_script=str(missing), actor="tester")
    assert event_types(ledger, run_id) == ["Registered"]


def test_stale_result_file_from_before_the_launch_is_ignored(
    ledger: TrainingLedger, output_dir: Path, scripts: Path
) -> None:
    run_id = create_run(ledger, output_dir)
    script = write_trainer(scripts, 'print("I forgot to report")')
    experiment_id = ledger.get_run(run_id).spec.experimentId
    output_dir.mkdir(parents=True)
    (output_dir / f"result-{experiment_id}.json").write_text('{"status": "completed"}')
    outcome = ledger.train(run_id, trainer_script=str(script), actor="tester")
    assert_failed(ledger, outcome, "left over from before the trainer started")


# --- the spec file, the run's state, idempotency ----------------------------------


def test_spec_goes_to_a_private_temporary_dir_that_is_removed(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path, scripts: Path
) -> None:
    outcome = train(
        """
        note("spec-path", os.path.abspath(args.spec))
        note("spec-mode", oct(os.stat(os.path.dirname(args.spec)).st_mode & 0o777))
        print(json.dumps(completed()))
        """
    )
    spec_path = Path((output_dir / "spec-path").read_text())
    assert not spec_path.exists()
    assert not spec_path.parent.exists()
    assert not spec_path.is_relative_to(scripts)
    assert (output_dir / "spec-mode").read_text() == "0o700"
    assert sorted(p.name for p in scripts.iterdir()) == ["main.py"]
    assert outcome["outcome"] == "completed"


def test_the_trainer_receives_the_recorded_spec(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        note("spec.json", json.dumps(spec))
        print(json.dumps(completed()))
        """
    )
    received = json.loads((output_dir / "spec.json").read_text())
    assert received == ledger.get_run(outcome["trainRunId"]).spec.model_dump(mode="json")


def test_only_a_pending_run_can_be_trained(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path, scripts: Path
) -> None:
    outcome = train('note("launched", 1); print(json.dumps(completed()))')
    (output_dir / "launched").unlink()
    with pytest.raises(InvalidTransitionError, match="is completed"):
        ledger.train(outcome["trainRunId"], trainer_script=str(scripts / "main.py"), actor="t")
    assert not (output_dir / "launched").exists()


def test_repeat_with_the_same_idempotency_key_does_not_launch_again(
    ledger: TrainingLedger, output_dir: Path, scripts: Path
) -> None:
    script = write_trainer(
        scripts,
        """
        with open(os.path.join(out, "launches"), "a") as handle:
            handle.write("x")
        print(json.dumps(completed()))
        """,
    )
    run_id = create_run(ledger, output_dir)
    first = ledger.train(run_id, trainer_script=str(script), actor="t", idempotency_key="k1")
    again = ledger.train(run_id, trainer_script=str(script), actor="t", idempotency_key="k1")
    assert again == first
    assert (output_dir / "launches").read_text() == "x"
    history = ledger.history(run_id)["events"]
    assert [e["idempotencyKey"] for e in history] == [None, "k1", "k1", "k1"]


def wait_for(path: Path, timeout: float = 10.0) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path


def test_trainer_is_killed_when_its_start_cannot_be_recorded(
    ledger: TrainingLedger, output_dir: Path, scripts: Path
) -> None:
    script = write_trainer(scripts, 'note("pid", os.getpid()); time.sleep(600)')
    run_id = create_run(ledger, output_dir)
    spec = ledger.get_run(run_id).experiment_spec()

    def record_fails(started: TrainerStarted) -> None:
        wait_for(output_dir / "pid")
        raise InvalidTransitionError("the store refused the start")

    with pytest.raises(InvalidTransitionError, match="refused the start"):
        SubprocessTrainerRunner()(TrainerLaunch(str(script), spec, 60), record_fails)
    assert process_gone(int((output_dir / "pid").read_text()))


def test_someone_else_starting_the_run_first_kills_our_trainer(
    ledger: TrainingLedger, output_dir: Path, scripts: Path
) -> None:
    script = write_trainer(scripts, 'note("pid", os.getpid()); time.sleep(600)')
    run_id = create_run(ledger, output_dir)
    real_runner = ledger.run_trainer

    def racing_runner(launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]) -> Any:
        def start_after_someone_else(started: TrainerStarted) -> None:
            wait_for(output_dir / "pid")
            ledger.start_run(run_id, actor="someone-else")
            on_started(started)

        return real_runner(launch, start_after_someone_else)

    ledger.run_trainer = racing_runner
    with pytest.raises(InvalidTransitionError, match="is running"):
        ledger.train(run_id, trainer_script=str(script), actor="tester")
    run = ledger.get_run(run_id)
    assert run.status == "running"
    assert run.pid is None  # the other start, not ours
    assert process_gone(int((output_dir / "pid").read_text()))


def test_interrupting_the_ledger_fails_the_run_and_kills_the_trainer(
    ledger: TrainingLedger, output_dir: Path, scripts: Path
) -> None:
    script = write_trainer(scripts, 'note("pid", os.getpid()); time.sleep(600)')
    run_id = create_run(ledger, output_dir)
    pid_file = output_dir / "pid"

    def interrupt_when_running() -> None:
        wait_for(pid_file)
        os.kill(os.getpid(), signal.SIGINT)

    with keyboard_interrupts():
        threading.Thread(target=interrupt_when_running, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            ledger.train(run_id, trainer_script=str(script), actor="tester", timeout_seconds=30)
    run = ledger.get_run(run_id)
    assert run.status == "failed"
    assert run.failure_reason is not None
    assert "interrupted" in run.failure_reason
    assert process_gone(int(pid_file.read_text()))


# --- import-result ------------------------------------------------------------------


def test_an_import_that_records_only_its_idempotency_record_verifies(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    """An append of a reservation and no event: sealed at the log's end, and its
    outcome names the log's own aggregates (issue 15 item 11)."""
    outcome = train("write_result_file(completed())")
    run_id = outcome["trainRunId"]
    experiment_id = ledger.get_run(run_id).spec.experimentId
    result = (output_dir / f"result-{experiment_id}.json").read_bytes()
    again = ledger.import_result(
        run_id, result, source="r.json", actor="tester", idempotency_key="again"
    )
    assert again["alreadyRecorded"] is True
    report = ledger.verify()
    assert report["ok"], report["failure"]
    assert ledger.verify(digest=report["digest"])["digestVerifiedUpTo"] == report["position"]
    repeat = ledger.import_result(
        run_id, result, source="r.json", actor="tester", idempotency_key="again"
    )
    assert repeat == again


def test_import_of_the_same_result_again_is_a_no_op_that_says_so(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train("write_result_file(completed())")
    run_id = outcome["trainRunId"]
    experiment_id = ledger.get_run(run_id).spec.experimentId
    result_file = output_dir / f"result-{experiment_id}.json"
    events_before = len(ledger.history(run_id)["events"])
    reformatted = json.dumps(json.loads(result_file.read_text()), indent=4).encode()
    again = ledger.import_result(run_id, reformatted, source="r.json", actor="tester")
    assert again["alreadyRecorded"] is True
    assert again["checkpointId"] == outcome["checkpointId"]
    assert len(ledger.history(run_id)["events"]) == events_before


def test_import_of_a_different_result_for_a_finished_run_is_refused(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train('print(json.dumps(result("failed", failureReason="oom")))')
    run_id = outcome["trainRunId"]
    run = ledger.get_run(run_id)
    different = {
        **{name: getattr(run.spec, name) for name in TrainerResult.CHECKED_FIELDS},
        "status": "failed",
        "failureReason": "something else",
    }
    with pytest.raises(ResultRefusedError, match="different result"):
        ledger.import_result(run_id, json.dumps(different).encode(), source="r", actor="t")
    assert ledger.get_run(run_id).failure_reason == "oom"


def test_import_into_a_pending_run_starts_and_completes_it_atomically(
    ledger: TrainingLedger, output_dir: Path
) -> None:
    run_id = create_run(ledger, output_dir)
    spec = ledger.get_run(run_id).spec
    (output_dir / "adapter").mkdir(parents=True)
    (output_dir / "adapter" / "adapter_config.json").write_text("{}")
    document = {
        **{name: getattr(spec, name) for name in TrainerResult.CHECKED_FIELDS},
        "status": "completed",
        "artifact": {"artifactPath": str(output_dir / "adapter")},
        "finalLoss": None,
    }
    outcome = ledger.import_result(run_id, json.dumps(document).encode(), source="r", actor="t")
    assert outcome["outcome"] == "completed"
    assert event_types(ledger, run_id) == ["Registered", "Started", "CheckpointLinked", "Completed"]
    lying = {**document, "backend": "unsloth-orpo"}
    other_run = create_run(ledger, output_dir)
    lied = ledger.import_result(
        other_run,
        json.dumps({**lying, "experimentId": ledger.get_run(other_run).spec.experimentId}).encode(),
        source="r",
        actor="t",
    )
    assert_failed(ledger, lied, "backend")


def test_import_of_a_file_holding_no_result_records_nothing(
    ledger: TrainingLedger, output_dir: Path
) -> None:
    run_id = create_run(ledger, output_dir)
    with pytest.raises(ValidationError, match="no trainer result"):
        ledger.import_result(run_id, b"not json", source="r.json", actor="t")
    assert ledger.get_run(run_id).status == "pending"


# --- reconcile -------------------------------------------------------------------


def test_reconcile_fails_runs_past_their_budget_deadline(
    ledger: TrainingLedger, output_dir: Path
) -> None:
    overdue = create_run(ledger, output_dir, backend="dry-run")
    pending = create_run(ledger, output_dir, backend="dry-run")
    finished = create_run(ledger, output_dir, backend="dry-run")
    ledger.start_run(overdue, actor="crashed-process")
    ledger.start_run(finished, actor="t")
    ledger.complete_run(finished, actor="t")
    started_at = ledger.get_run(overdue).started_at
    assert started_at is not None
    deadline = started_at + timedelta(minutes=240, seconds=30)

    assert ledger.reconcile(now=deadline, actor="t")["abandoned"] == []
    assert ledger.get_run(overdue).status == "running"
    report = ledger.reconcile(now=deadline + timedelta(seconds=1), actor="reconciler")
    assert [r["trainRunId"] for r in report["abandoned"]] == [overdue]
    run: TrainingRun = ledger.get_run(overdue)
    assert run.status == "failed"
    assert run.failure_reason == "abandoned"
    assert ledger.get_run(pending).status == "pending"
    assert ledger.get_run(finished).status == "completed"
    assert ledger.reconcile(now=deadline + timedelta(days=1), actor="t")["abandoned"] == []


def test_a_spec_dir_left_by_a_killed_ledger_is_removed_by_the_next_train(
    ledger: TrainingLedger, train: TrainFn, tmp_path: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a ledger process that no longer exists
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    temp_dir = Path(tempfile.gettempdir())
    leftover = Path(tempfile.mkdtemp(prefix=spec_dir_prefix(gone.pid), dir=temp_dir))
    (leftover / "experiment-x.json").write_text("{}")
    in_use = Path(tempfile.mkdtemp(prefix=spec_dir_prefix(alive.pid), dir=temp_dir))
    unrelated = Path(tempfile.mkdtemp(prefix=f"trainledger-spec-elsewhere-{gone.pid}-"))
    try:
        outcome = train("print(json.dumps(completed()))")
        assert outcome["outcome"] == "completed"
        assert not leftover.exists()
        assert in_use.is_dir()
        assert unrelated.is_dir()
    finally:
        alive.kill()
        alive.wait()
        for directory in (leftover, in_use, unrelated):
            shutil.rmtree(directory, ignore_errors=True)
