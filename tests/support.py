"""Shared test helpers: running the real CLI in a subprocess, sample inputs."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trainledger.domain.experiment import ExperimentRequest
from trainledger.service.ledger import TrainingLedger

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATASET = REPO / "examples" / "data" / "sample.jsonl"
READER_FAMILY = "qwen2.5-7b-reader"


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """The `trainledger` command in a fresh process, on one store.

    With `store=None` no `--store` is passed: `TRAINLEDGER_STORE` or the default applies.
    """

    def __init__(self, store: str | None, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.cwd = cwd
        self.env = {**os.environ, "TRAINLEDGER_ACTOR": "tester", **(env or {})}
        self.env.pop("TRAINLEDGER_STORE", None)

    def __call__(self, *args: str, json_mode: bool = False, **env: str) -> CliResult:
        argv = [sys.executable, "-m", "trainledger.cli"]
        if self.store is not None:
            argv += ["--store", self.store]
        if json_mode:
            argv.append("--json")
        completed = subprocess.run(
            [*argv, *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        return CliResult(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, **env: str) -> Any:
        """Run with --json, assert success, return the JSON document."""
        result = self(*args, json_mode=True, **env)
        assert result.code == 0, f"{args}: exit {result.code}: {result.stderr}"
        return result.json

    def refused(self, *args: str, code: int = 1) -> CliResult:
        """Run, assert the refusal contract: exit code, one line, no traceback."""
        result = self(*args)
        assert result.code == code, f"{args}: expected exit {code}, got {result.code}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
        assert lines[0].startswith("error: ")
        assert "Traceback" not in result.stderr
        return result


def start_train(cli: Cli, run_id: str, script: Path, *, stderr: int = subprocess.PIPE) -> Any:
    """`trainledger train RUN --trainer SCRIPT` in a process of its own, not waited for."""
    assert cli.store is not None
    argv = [sys.executable, "-m", "trainledger.cli", "--store", cli.store, "train", run_id]
    return subprocess.Popen(
        [*argv, "--trainer", str(script)],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def stop_when(process: Any, started: Callable[[], bool], signum: int, what: str) -> str:
    """Send `signum` to `process` once `started()` holds (at most 30 s); its stderr after."""
    try:
        deadline = time.monotonic() + 30
        while not started():
            assert time.monotonic() < deadline, f"the {what} never started"
            time.sleep(0.05)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return str(stderr)


def experiment_args(output_dir: Path, **overrides: str) -> list[str]:
    options = {
        "--profile": "local-reader",
        "--family": READER_FAMILY,
        "--backend": "dry-run",
        "--dataset": str(SAMPLE_DATASET),
        "--benchmark-export-id": "bench-1",
        "--output-dir": str(output_dir),
        **overrides,
    }
    args = ["experiment", "create"]
    for key, value in options.items():
        if value:
            args += [key, value]
    return args


def reader_request(output_dir: Path, benchmark: str = "bench-1") -> ExperimentRequest:
    """A valid dry-run experiment for the reader family."""
    return ExperimentRequest(
        profile="local-reader",
        family=READER_FAMILY,
        backend="dry-run",
        benchmark_export_id=benchmark,
        output_dir=str(output_dir),
    )


def deployable_lifecycle(
    ledger: TrainingLedger, output_dir: Path, *, eval_id: str, actor: str = "a"
) -> tuple[str, str]:
    """create → start → register → complete → attach eval and mark; (run, checkpoint) ids."""
    run_id: str = ledger.create_experiment(
        reader_request(output_dir),
        dataset_fingerprint="0123456789abcdef",
        sample_count=10,
        actor=actor,
    )["trainRunId"]
    ledger.start_run(run_id, actor=actor)
    checkpoint_id: str = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=write_artifact(output_dir), actor=actor
    )["checkpointId"]
    ledger.complete_run(run_id, actor=actor)
    ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id, eval_id), mark_deployable=True, actor=actor
    )
    return run_id, checkpoint_id


def write_artifact(directory: Path, name: str = "adapter") -> str:
    """A small adapter file in `directory` (a checkpoint needs its digest to be deployable)."""
    directory.mkdir(parents=True, exist_ok=True)
    artifact = directory / name
    if not artifact.exists():
        artifact.write_bytes(b"adapter weights")
    return str(artifact)


@functools.cache
def existing_artifact() -> str:
    """One small adapter file per test process, for set-ups with no directory of their own."""
    return write_artifact(Path(tempfile.mkdtemp(prefix="trainledger-test-artifact-")))


def eval_summary(checkpoint_id: str, eval_id: str = "eval-1", **overrides: Any) -> dict[str, Any]:
    return {
        "evalId": eval_id,
        "checkpointId": checkpoint_id,
        "benchmarkId": "bench-1",
        "targetModelFamily": READER_FAMILY,
        "mode": "prompt_assisted",
        "baselineScore": 0.5,
        "candidateScore": 0.75,
        "verdict": "pass",
        **overrides,
    }


@contextmanager
def keyboard_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here meanwhile, and processes started meanwhile
    begin with SIGINT's default action (so Python in them raises it too), even in a
    test run started with SIGINT ignored (as a shell does for background commands)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def reseal(connection: Any) -> None:
    """Recompute every reservation's seal over the stored log chain, as a thorough attacker
    would (the append-only guards dropped; `?` placeholders)."""
    import hashlib

    from trainledger.domain.chain import SEAL_GENESIS, seal_link

    seals = connection.execute(
        "SELECT seq, position, kind, key FROM ledger_reservation_seals ORDER BY seq"
    ).fetchall()
    previous = SEAL_GENESIS
    for seq, position, kind, key in seals:
        (link,) = connection.execute(
            "SELECT link FROM ledger_log_chain WHERE position=?", (position,)
        ).fetchone()
        (stored,) = connection.execute(
            "SELECT value FROM ledger_reservations WHERE kind=? AND key=?", (kind, key)
        ).fetchone()
        previous = seal_link(previous, link, kind, key, bytes(stored))
        connection.execute("DELETE FROM ledger_reservation_seals WHERE seq=?", (seq,))
        connection.execute(
            "INSERT INTO ledger_reservation_seals VALUES (?, ?, ?, ?, ?, ?)",
            (seq, position, kind, key, hashlib.sha256(bytes(stored)).hexdigest(), previous),
        )


class SteppingClock:
    """A clock the test moves by hand (`TrainingLedger(clock=...)`): never a sleep."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # each event later than the one before
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
