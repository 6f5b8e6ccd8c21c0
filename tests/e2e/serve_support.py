"""`trainledger serve` in a subprocess on a free 127.0.0.1 port, and a small client for it.

The client is the standard library's `http.client`: what it sends is what
a test says, nothing added (no retries, no redirects followed).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.postgres_cluster import free_port
from tests.support import Cli

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        code: str = self.json["error"]["code"]
        return code


@dataclass
class Server:
    """One running service; `stop()` sends SIGTERM and returns what it printed."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)
    """Token by name, of the tokens the fixture issued."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Answer:
        """One request on a new connection; `body` is sent as JSON, `data` as given."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            payload = response.read()
            return Answer(
                response.status, {k.lower(): v for k, v in response.getheaders()}, payload
            )
        finally:
            connection.close()

    def get(self, path: str, token: str | None = None, **options: Any) -> Answer:
        return self.request("GET", path, token=token, **options)

    def post(self, path: str, token: str | None = None, **options: Any) -> Answer:
        return self.request("POST", path, token=token, **options)

    def raw(self, head: bytes, body: bytes = b"", *, timeout: float = 30) -> bytes:
        """Send bytes as they are (the body may be cut short by the server); what came back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(head)
            try:
                for start in range(0, len(body), 65536):
                    sock.sendall(body[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed before the rest was sent
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            return received

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM, wait for the process to end; everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"the service did not stop on SIGTERM:\n{self.output()}"
                ) from None
        return self.output()


def serve_argv(store: str, *options: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainledger.cli",
        "--store",
        store,
        "serve",
        "--port",
        str(port),
        *options,
    ]


def start_server(store: str, cwd: Path, *options: str, env: dict[str, str] | None = None) -> Server:
    """Start `trainledger serve` on a free port; return once it answers."""
    for _ in range(3):  # another process may take the free port first
        port = free_port()
        log = cwd / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                serve_argv(store, *options, port=port),
                cwd=cwd,
                env={**os.environ, "TRAINLEDGER_ACTOR": "local-user", **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, port, log)
        if wait_until_up(server):
            return server
        if process.poll() is None:
            process.kill()
            process.wait()
        if "address already in use" not in server.output().lower():
            raise AssertionError(f"the service did not start:\n{server.output()}")
    raise AssertionError("no free port for the service")


def wait_until_up(server: Server) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass
            if server.get("/healthz").status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def issue_tokens(cli: Cli, *roles: str) -> dict[str, str]:
    """A token per role, named after it (`admin`, `writer`, ...), issued with the CLI."""
    return {role: cli.ok("token", "create", role, "--role", role)["token"] for role in roles}


ROLES = ("reader", "writer", "deployer", "admin")


def experiment_body(output_dir: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "profile": "local-reader",
        "family": "qwen2.5-7b-reader",
        "backend": "dry-run",
        "datasetFingerprint": "0123456789abcdef",
        "sampleCount": 10,
        "benchmarkExportId": "bench-1",
        "outputDir": str(output_dir),
        **overrides,
    }


def eval_body(eval_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "evalId": eval_id,
        "benchmarkId": "bench-1",
        "targetModelFamily": "qwen2.5-7b-reader",
        "mode": "prompt_assisted",
        "baselineScore": 0.5,
        "candidateScore": 0.75,
        "verdict": "pass",
        **overrides,
    }
