"""The service under bad clients and stops (SPEC §10): it keeps answering while clients
disconnect mid-request, send garbage or hold slow connections; a write in flight at
SIGTERM completes or leaves nothing; it starts only as it should."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.serve_support import Server, issue_tokens, serve_argv, start_server
from tests.postgres_cluster import free_port
from tests.support import READER_FAMILY, Cli, experiment_args, write_artifact


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path_factory.mktemp("robust")
    cli = Cli(f"sqlite:///{root / 'ledger.db'}", cwd=root)
    tokens = issue_tokens(cli, "reader", "admin")
    server = start_server(cli.store or "", root)
    yield server, tokens
    output = server.stop()
    assert "Traceback" not in output


def _answers(server: Server, token: str) -> None:
    assert server.get("/v1/stats", token, timeout=10).status == 200


def test_garbage_bytes_are_refused_and_the_service_keeps_answering(
    served: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = served
    for garbage in [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
        b"\xff\xfe\x00\x00\r\n\r\n",
        b"GET /v1/stats HTTP/9.9\r\n\r\n",
        b"GET " + b"/x" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/experiments HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"\r\n\r\n\r\n",
    ]:
        answer = server.raw(garbage, timeout=10)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
        assert b"Traceback" not in answer
        _answers(server, tokens["reader"])


def test_clients_leaving_mid_request_leave_the_service_answering(
    served: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = served
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /v1/experiments HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                + f"Authorization: Bearer {tokens['admin']}\r\n\r\n".encode()
                + b'{"profile": "loc'
            )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"GET /v1/runs HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {tokens['reader']}\r\n\r\n".encode()
            )  # and gone before the answer
    _answers(server, tokens["reader"])


def test_slow_connections_do_not_hold_up_other_requests(
    served: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = served
    stop = threading.Event()
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]

    def dribble() -> None:
        header = b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
        for i in range(len(header)):
            if stop.is_set():
                return
            for sock in slow:
                try:
                    sock.send(header[i : i + 1])
                except OSError:
                    return
            time.sleep(0.05)

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        for _ in range(20):
            _answers(server, tokens["reader"])
            time.sleep(0.05)
    finally:
        stop.set()
        dribbler.join(timeout=10)
        for sock in slow:
            sock.close()


def test_a_write_in_flight_at_sigterm_completes_or_leaves_nothing(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    writer = issue_tokens(cli, "writer", "admin")["writer"]
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    cli.ok("run", "start", run_id)
    artifact = write_artifact(tmp_path / "out")
    server = start_server(cli.store or "", tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def write() -> None:
        # Each registration is one append of two aggregates (checkpoint and run link).
        while True:
            try:
                answer = server.post(
                    f"/v1/runs/{run_id}/checkpoints",
                    writer,
                    body={"family": READER_FAMILY, "artifactPath": artifact},
                    timeout=30,
                )
            except OSError:
                return
            if answer.status != 201:
                assert answer.status in (409, 503), answer.body  # a conflict, or stopping
                continue
            with lock:
                acknowledged.append(answer.json["checkpointId"])

    writers = [threading.Thread(target=write) for _ in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    output = server.stop()
    for thread in writers:
        thread.join(timeout=60)
    assert len(acknowledged) >= 10, output
    verified = cli.ok("verify")
    assert verified["ok"] is True
    run = cli.ok("run", "show", run_id)
    listed = [
        c["checkpointId"] for c in cli.ok("checkpoint", "list", "--run", run_id)["checkpoints"]
    ]
    # Every registration stored both of its events, or neither.
    assert sorted(run["checkpointIds"]) == sorted(listed)
    assert set(acknowledged) <= set(listed)


def test_without_an_admin_token_the_service_refuses_to_start(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    cli.ok("token", "create", "someone", "--role", "deployer")
    refused = _serve(cli, tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: no admin token")
    assert len(refused.stderr.strip().splitlines()) == 1
    cli.ok("token", "create", "boss", "--role", "admin")
    cli.ok("token", "revoke", "boss")
    assert _serve(cli, tmp_path).returncode == 1
    missing = _serve(Cli(f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path), tmp_path)
    assert missing.returncode == 1
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com", "::"])
def test_no_auth_refuses_a_host_that_is_not_loopback(tmp_path: Path, host: str) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    refused = _serve(cli, tmp_path, "--no-auth", "--host", host)
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_no_auth_on_loopback_serves_as_the_local_actor(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    server = start_server(cli.store or "", tmp_path, "--no-auth")
    try:
        created = server.post(
            "/v1/experiments",
            body={
                "profile": "local-reader",
                "family": READER_FAMILY,
                "backend": "dry-run",
                "datasetFingerprint": "0123456789abcdef",
                "sampleCount": 3,
                "benchmarkExportId": "b",
                "outputDir": str(tmp_path / "out"),
            },
        )
        assert created.status == 201, created.body
    finally:
        server.stop()
    history = cli.ok("history", created.json["trainRunId"])
    assert history["events"][0]["actor"] == "local-user"


def _serve(cli: Cli, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    assert cli.store is not None
    argv = serve_argv(cli.store, *options, port=free_port())
    assert argv[0] == sys.executable
    return subprocess.run(
        argv, cwd=cwd, env=cli.env, capture_output=True, text=True, timeout=60, check=False
    )
