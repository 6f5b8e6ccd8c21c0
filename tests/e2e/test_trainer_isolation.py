"""What a trainer cannot do to the ledger: hang it, escape it, outlive it, read its secrets.

Real subprocess trainers through the Python API (the `train` fixture of
`test_trainer_protocol`), and Ctrl-C through the real `trainledger` command.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrainFn
from tests.e2e.test_trainer_protocol import assert_failed, event_types
from tests.e2e.trainer_scripts import create_run, process_gone, write_trainer
from tests.support import Cli, keyboard_interrupts, start_train, stop_when
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import TrainerNotStartedError
from trainledger.service.ledger import TrainingLedger

# --- a trainer that cannot be started (item 3) -----------------------------------


@pytest.mark.parametrize(
    ("make_script", "named"),
    [
        (lambda tmp: tmp / "scripts" / "main.py", "trainer script not found"),
        (lambda tmp: tmp / "nowhere" / "main.py", "no such directory"),
        (lambda tmp: (tmp / "a-directory").mkdir() or tmp / "a-directory", "is not a file"),
    ],
    ids=["no such script", "no such scripts directory", "not a file"],
)
def test_a_trainer_that_cannot_be_started_records_nothing(
    ledger: TrainingLedger, output_dir: Path, tmp_path: Path, make_script: Any, named: str
) -> None:
    (tmp_path / "scripts").mkdir()
    run_id = create_run(ledger, output_dir)
    script = make_script(tmp_path)
    with pytest.raises(TrainerNotStartedError, match=named):
        ledger.train(run_id, trainer_script=str(script), actor="tester")
    assert ledger.get_run(run_id).status == "pending"
    assert event_types(ledger, run_id) == ["Registered"]


def test_train_with_a_missing_scripts_dir_is_one_line_exit_1_and_the_run_stays_pending(
    cli: Cli, sqlite_url: str, tmp_path: Path
) -> None:
    store = open_ledger(sqlite_url)
    try:
        run_id = create_run(store, tmp_path / "out")
        refused = cli.refused("train", run_id, "--scripts-dir", str(tmp_path / "no-such-dir"))
        assert "no-such-dir/main.py" in refused.stderr
        assert store.get_run(run_id).status == "pending"
        assert event_types(store, run_id) == ["Registered"]
    finally:
        store.close()


# --- the tail of stderr in the reason (item 4) -----------------------------------


def test_a_crash_inside_the_trainer_shows_the_end_of_its_stderr_and_the_log_path(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    outcome = train(
        """
        for n in range(500):
            print(f"noise line {n}", file=sys.stderr)
        raise RuntimeError("CUDA error: device-side assert triggered")
        """
    )
    reason = assert_failed(ledger, outcome, "trainer exited with code 1")
    run = ledger.get_run(outcome["trainRunId"])
    assert run.trainer_log_path is not None
    assert run.trainer_log_path in reason
    assert "RuntimeError: CUDA error: device-side assert triggered" in reason
    assert "noise line 0" not in reason  # only the last few lines
    assert len(reason) <= 2000


# --- isolation (item 7) ----------------------------------------------------------


def test_a_fifo_as_the_result_file_does_not_hang_train(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    started = time.monotonic()
    outcome = train(
        """
        os.mkfifo(os.path.join(out, "result-" + spec["experimentId"] + ".json"))
        """,
        timeout_seconds=20,
    )
    assert time.monotonic() - started < 15
    assert_failed(ledger, outcome, "is not a regular file")


def test_a_huge_sparse_artifact_fails_the_run_quickly(
    ledger: TrainingLedger, train: TrainFn
) -> None:
    started = time.monotonic()
    outcome = train(
        """
        artifact = adapter()
        with open(os.path.join(artifact["artifactPath"], "weights.bin"), "wb") as handle:
            handle.truncate(16 << 30)
        print(json.dumps(result("completed", artifact=artifact)))
        """,
        timeout_seconds=20,
    )
    assert time.monotonic() - started < 15
    assert_failed(ledger, outcome, "artifact", "over the limit")


def test_hashing_the_artifact_is_covered_by_the_timeout(
    ledger: TrainingLedger, train: TrainFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainledger.adapters import files

    monkeypatch.setattr(files, "CHUNK", 1)  # one byte per read: hashing is slow
    started = time.monotonic()
    outcome = train(
        """
        artifact = adapter()
        with open(os.path.join(artifact["artifactPath"], "weights.bin"), "wb") as handle:
            handle.write(bytes(64 << 20))
        print(json.dumps(result("completed", artifact=artifact)))
        """,
        timeout_seconds=3,
    )
    assert time.monotonic() - started < 12
    assert_failed(ledger, outcome, "artifact", "timeout")


def test_the_output_dir_swapped_for_a_link_elsewhere_fails_the_run(
    ledger: TrainingLedger, train: TrainFn, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "adapter").mkdir(parents=True)
    (elsewhere / "adapter" / "secret.bin").write_bytes(b"not the trainer's")
    outcome = train(
        f"""
        import shutil
        os.chdir("/")
        shutil.rmtree(out)
        os.symlink({str(elsewhere)!r}, out)
        print(json.dumps(result("completed", artifact={{
            "artifactPath": os.path.join(out, "adapter"), "adapterFormat": "peft-adapter"}})))
        """
    )
    assert_failed(ledger, outcome, "output directory", "replaced")


def test_a_link_inside_the_artifact_is_not_followed_out_of_it(
    ledger: TrainingLedger, train: TrainFn, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private")
    outcome = train(
        f"""
        artifact = adapter()
        os.symlink({str(secret)!r}, os.path.join(artifact["artifactPath"], "weights.bin"))
        print(json.dumps(result("completed", artifact=artifact)))
        """
    )
    assert_failed(ledger, outcome, "weights.bin", "outside the artifact")


def test_a_descendant_that_left_the_process_group_does_not_outlive_train(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path
) -> None:
    outcome = train(
        """
        daemon = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
        )
        note("daemon", daemon.pid)
        # a grandchild in its own session whose parent exits: an orphan
        subprocess.Popen([sys.executable, "-c", (
            "import os, subprocess, sys, time;"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True);"
            f"open(os.path.join({out!r}, 'orphan'), 'w').write(str(p.pid))"
        )]).wait()
        print(json.dumps(completed()))
        """
    )
    assert outcome["outcome"] == "completed"
    assert process_gone(int((output_dir / "daemon").read_text()))
    assert process_gone(int((output_dir / "orphan").read_text()))


def test_the_trainer_environment_holds_none_of_the_ledgers_secrets(
    ledger: TrainingLedger, train: TrainFn, output_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINLEDGER_STORE", "postgresql://ledger:hunter2@db/ledger")
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    monkeypatch.setenv("PGUSER", "ledger")
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ledger:hunter2@db/ledger")
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    outcome = train(
        """
        note("env", json.dumps(dict(os.environ)))
        print(json.dumps(completed()))
        """
    )
    assert outcome["outcome"] == "completed"
    environment = json.loads((output_dir / "env").read_text())
    assert "hunter2" not in json.dumps(environment)
    assert not [name for name in environment if name.startswith(("PG", "POSTGRES"))]
    assert "TRAINLEDGER_STORE" not in environment
    assert environment["HARMLESS_SETTING"] == "kept"


# --- Ctrl-C (item 8) -------------------------------------------------------------


def test_ctrl_c_during_train_exits_130_and_the_trainer_gets_sigterm_first(
    cli: Cli, sqlite_url: str, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    script = write_trainer(
        tmp_path / "scripts",
        """
        def stopping(signum, frame):
            note("got-sigterm", signum)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stopping)
        note("pid", os.getpid())
        time.sleep(600)
        """,
    )
    store = open_ledger(sqlite_url)
    try:
        run_id = create_run(store, output_dir)
        with keyboard_interrupts():  # the ledger starts with SIGINT's default action
            ledger_process = start_train(cli, run_id, script)
        pid_file = output_dir / "pid"
        stderr = stop_when(ledger_process, pid_file.exists, signal.SIGINT, "trainer")
        assert ledger_process.returncode == 130
        assert "Traceback" not in stderr
        assert (output_dir / "got-sigterm").read_text() == str(int(signal.SIGTERM))
        run = store.get_run(run_id)
        assert run.status == "failed"
        assert run.failure_reason is not None
        assert run.failure_reason.startswith("interrupted")
        assert process_gone(int((output_dir / "pid").read_text()))
    finally:
        store.close()
