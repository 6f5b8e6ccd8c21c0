"""SIGKILL the writer at random points: nothing acknowledged is lost, `verify` passes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import REPO
from trainledger.adapters.store import open_ledger

WRITE_KILLS = 36
TRAIN_KILLS = 8
REBUILD_KILLS = 8


def run_until_killed(url: str, out: Path, seed: int, rng: random.Random) -> list[dict[str, str]]:
    """Start a writer, let it acknowledge a random number of commands, kill it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_driver", url, str(out), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    wanted = rng.randint(1, 12)
    acknowledged: list[dict[str, str]] = []
    for line in process.stdout:
        acknowledged.append(json.loads(line))
        if len(acknowledged) >= wanted:
            break
    # Land the kill somewhere inside the next command, not between commands.
    time.sleep(rng.uniform(0, 0.004))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    return acknowledged


@pytest.mark.slow
def test_sigkill_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    rng = random.Random(20261128)
    acknowledged: list[dict[str, str]] = []
    for seed in range(WRITE_KILLS):
        acknowledged += run_until_killed(url, tmp_path / "out", seed, rng)

    ledger = open_ledger(url)
    report = ledger.verify()
    assert report["ok"], report["failure"]
    for ack in acknowledged:
        if "run" in ack:
            run = ledger.show_run(ack["run"])
            if ack["op"] == "start":
                assert run["status"] in ("running", "completed")
            if ack["op"] == "complete":
                assert run["status"] == "completed"
            if ack["op"] == "register":
                assert ack["checkpoint"] in run["checkpointIds"]
        if ack["op"] == "deploy":
            checkpoint = ledger.show_checkpoint(ack["checkpoint"])
            assert checkpoint["deployable"] is True
            assert checkpoint["currentEvalId"] == ack["eval"]
    # Every checkpoint in the log is linked from its run (the append was atomic).
    for ack in acknowledged:
        if ack["op"] == "create":
            for checkpoint_id in ledger.show_run(ack["run"])["checkpointIds"]:
                assert ledger.show_checkpoint(checkpoint_id)["trainRunId"] == ack["run"]
    assert len(acknowledged) >= WRITE_KILLS

    # Kill the CLI in the middle of trains and of projection rebuilds, then
    # check the store again: it opens, verify passes (chains, digest and the
    # views against a fresh replay), and nothing acknowledged went missing.
    trained = kill_cli_during_trains(url, tmp_path, rng)
    kill_cli_during_rebuilds(url, tmp_path, rng)
    ledger = open_ledger(url)
    for run_id, status in trained.items():
        assert ledger.show_run(run_id)["status"] == status
    ledger.reconcile(now=datetime(2100, 1, 1, tzinfo=UTC), actor="janitor")
    for run_id, status in trained.items():
        after = ledger.show_run(run_id)
        # killed before `Started`: still pending; killed while training: abandoned
        assert after["status"] == ("failed" if status == "running" else status)
        if status == "running":
            assert after["failureReason"] == "abandoned"
    report = ledger.verify()
    assert report["ok"], report["failure"]
    assert report["projectionsMatchReplay"] is True


SLOW_TRAINER = """
import json, sys, time, pathlib
spec = json.loads(pathlib.Path(sys.argv[sys.argv.index("--spec") + 1]).read_text())
time.sleep(float(spec["benchmarkExportId"].split("-")[1]))
keys = ("experimentId", "backend", "targetWorkerProfile", "targetModelFamily",
        "datasetFingerprint", "configFingerprint", "codeHash")
print(json.dumps({"status": "dry_run", **{k: spec[k] for k in keys}}))
"""


def cli_command(url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainledger.cli",
        "--store",
        url,
        "--actor",
        "crash",
        "--json",
        *args,
    ]


def kill_cli_during_trains(url: str, tmp_path: Path, rng: random.Random) -> dict[str, str]:
    """Kill `train` at random moments; return the status each finished train reported.

    Every other kill waits until the run is seen running, then lands while its
    trainer still sleeps: on a slow machine the CLI's own start can outlast any
    fixed delay, and no kill would land mid-training."""
    trainer = tmp_path / "slow_trainer.py"
    trainer.write_text(SLOW_TRAINER)
    finished: dict[str, str] = {}
    watcher = open_ledger(url)
    for n in range(TRAIN_KILLS):
        mid_training = n % 2 == 1
        sleep = rng.uniform(1.0, 1.5) if mid_training else rng.uniform(0.0, 0.8)
        created = subprocess.run(
            cli_command(
                url, "experiment", "create", "--profile", "local-reader",
                "--family", "qwen2.5-7b-reader", "--backend", "dry-run",
                "--dataset-fingerprint", "0123456789abcdef", "--sample-count", "1",
                "--benchmark-export-id", f"sleep-{sleep:.3f}",
                "--output-dir", str(tmp_path / f"train-{n}"),
            ),
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        run_id = json.loads(created.stdout)["trainRunId"]
        process = subprocess.Popen(
            cli_command(url, "train", run_id, "--trainer", str(trainer)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if mid_training:
            deadline = time.monotonic() + 60
            while watcher.show_run(run_id)["status"] == "pending":
                assert time.monotonic() < deadline, "train never started the run"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            time.sleep(rng.uniform(0.2, 1.4))
        os.kill(process.pid, signal.SIGKILL)
        stdout, _ = process.communicate(timeout=30)
        if process.returncode == 0:
            finished[run_id] = json.loads(stdout)["status"]
        else:
            finished[run_id] = open_ledger(url).show_run(run_id)["status"]
            assert finished[run_id] in ("pending", "running", "completed")
        # A trainer orphaned by the kill ends on its own within a second or two.
    watcher.close()
    time.sleep(1.5)
    assert "running" in finished.values(), "at least one kill should land mid-training"
    return finished


def kill_cli_during_rebuilds(url: str, tmp_path: Path, rng: random.Random) -> None:
    for _ in range(REBUILD_KILLS):
        process = subprocess.Popen(
            cli_command(url, "projections", "rebuild"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 0.6))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        stats = open_ledger(url).stats()
        assert (
            stats["totalRuns"]
            == stats["pendingRuns"]
            + stats["runningRuns"]
            + stats["completedRuns"]
            + stats["failedRuns"]
        )
