"""SIGKILL the writer at random points: nothing acknowledged is lost, `verify` passes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.store import open_ledger
from tests.support import REPO

KILLS = 50


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
    for seed in range(KILLS):
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
    assert len(acknowledged) >= KILLS
