"""`trainledger serve --processes N`: N processes on one address and one store.

Every process answers on the one port; writes from clients at once, whichever
process takes them, are all recorded once in a log that verifies; a token
revoked by the CLI is refused by every process from the next request; a
stop ends them all, and so does the first process's death; a memory store,
which lives in one process, is refused with one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.serve_support import (
    Server,
    experiment_body,
    issue_tokens,
    serve_argv,
    start_server,
)
from tests.support import Cli

PROCESSES = 3
SERVE = (sys.executable, "-m", "trainledger.cli")
CLIENTS = 6
RUNS_EACH = 8


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _gone(pids: set[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Cli]]:
    store = f"sqlite:///{tmp_path / 'ledger.db'}"
    cli = Cli(store, cwd=tmp_path)
    tokens = issue_tokens(cli, "admin", "writer")
    server = start_server(store, tmp_path, "--processes", str(PROCESSES), "--workers", "1")
    server.tokens.update(tokens)
    try:
        yield server, cli
    finally:
        server.stop()


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def test_every_process_serves_and_every_write_is_recorded_once(
    served: tuple[Server, Cli], tmp_path: Path
) -> None:
    server, cli = served
    assert len(_children(server.process.pid)) == PROCESSES - 1
    assert f"{PROCESSES} processes" in server.output()
    writer = server.tokens["writer"]
    made: list[str] = []
    failures: list[str] = []

    def client(n: int) -> None:
        for i in range(RUNS_EACH):
            body = experiment_body(tmp_path / "out", sampleCount=n * 100 + i + 1)
            created = server.post("/v1/experiments", writer, body=body)
            if created.status != 201:
                failures.append(f"{created.status} {created.body!r}")
                continue
            run_id = created.json["trainRunId"]
            started = server.post(f"/v1/runs/{run_id}/start", writer)
            if started.status != 200:
                failures.append(f"{started.status} {started.body!r}")
            made.append(run_id)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(set(made)) == CLIENTS * RUNS_EACH
    listed = cli.ok("run", "list", "--status", "running", "--limit", "1000")["runs"]
    assert {r["trainRunId"] for r in listed} == set(made)
    assert cli.ok("verify")["ok"] is True
    # What every process answers is the same ledger, caught up with the others' writes.
    counts = {server.get("/v1/stats", writer).json["totalRuns"] for _ in range(3 * PROCESSES)}
    assert counts == {CLIENTS * RUNS_EACH}


def test_a_token_revoked_by_the_cli_is_refused_by_every_process(
    served: tuple[Server, Cli],
) -> None:
    server, cli = served
    token = cli.ok("token", "create", "short-lived", "--role", "reader")["token"]
    # New connections, so that each process comes to know (and remember) the token.
    assert all(server.get("/v1/stats", token).status == 200 for _ in range(4 * PROCESSES))
    cli.ok("token", "revoke", "short-lived")
    answers = [server.get("/v1/stats", token).status for _ in range(4 * PROCESSES)]
    assert answers == [401] * (4 * PROCESSES)


def test_a_stop_ends_every_process(served: tuple[Server, Cli]) -> None:
    server, _ = served
    children = _children(server.process.pid)
    assert len(children) == PROCESSES - 1
    server.stop()
    assert server.process.returncode in (0, -signal.SIGTERM)  # uvicorn ends by the signal
    # The first process waited for the others: they are gone (and reaped) already.
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_a_stop_before_the_first_process_serves_still_waits_for_the_others(
    tmp_path: Path,
) -> None:
    """A stop as soon as the others are forked, before the first process's server listens
    for signals (another process may be answering already): it waits for them all."""
    store = f"sqlite:///{tmp_path / 'ledger.db'}"
    issue_tokens(Cli(store, cwd=tmp_path), "admin")
    for _ in range(3):
        with (tmp_path / "serve.log").open("wb") as log:
            process = subprocess.Popen(
                serve_argv(store, "--processes", str(PROCESSES), "--workers", "1", port=0),
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        children: set[int] = set()
        deadline = time.monotonic() + 60
        while len(children) < PROCESSES - 1 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            children = _children(process.pid)
        assert len(children) == PROCESSES - 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_the_first_process_killed_takes_the_others_with_it(served: tuple[Server, Cli]) -> None:
    server, _ = served
    children = _children(server.process.pid)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    assert _gone(children)


def test_a_memory_store_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SERVE, "--store", "memory://", "serve", "--no-auth", "--processes", "2"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert "a memory:// store lives in one process" in done.stderr
    assert "Traceback" not in done.stderr
