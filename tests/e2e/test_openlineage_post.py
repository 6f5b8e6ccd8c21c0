"""`export --format openlineage --post URL` to real HTTP servers on 127.0.0.1.

Each server (http.server, in a thread, on a free port) records what it is
sent and answers as its test says: accepts everything, refuses the third
event, or answers too late. An endpoint with nothing listening is tried too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.openlineage_schemas import assert_valid
from tests.postgres_cluster import free_port
from tests.support import READER_FAMILY, Cli, reader_request, write_artifact
from trainledger.adapters.openlineage_http import API_KEY_ENV
from trainledger.adapters.store import open_ledger

LOOPBACK = "127.0.0.1"
SECRET = "ol-test-key-5d1c"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """How the server answers: `refuse` the n-th request with `status`, or `stall` on it."""

    refuse: int | None = None
    status: int = 400
    stall: int | None = None
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@contextmanager
def serve(endpoint: Endpoint) -> Iterator[Endpoint]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint.received.append(Received(self.path, dict(self.headers.items()), body))
            number = len(endpoint.received)
            if number == endpoint.stall:
                endpoint.released.wait(timeout=30)  # until the test is over
            if number == endpoint.refuse:
                answer = json.dumps({"code": endpoint.status, "message": "not a lineage event"})
                self.send_response(endpoint.status)
            else:
                answer = ""
                self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            with suppress(OSError):  # a client that stopped waiting has gone
                self.end_headers()
                self.wfile.write(answer.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        yield endpoint
    finally:
        endpoint.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@pytest.fixture
def accepting() -> Iterator[Endpoint]:
    with serve(Endpoint()) as endpoint:
        yield endpoint


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    """The CLI on a store holding two runs (four RunEvents); no proxy between it and 127.0.0.1."""
    out = tmp_path / "out"
    ledger = open_ledger(sqlite_url)
    try:
        for outcome in ("complete", "fail"):
            run_id = ledger.create_experiment(
                reader_request(out), dataset_fingerprint="0123456789abcdef", sample_count=3,
                actor="tester",
            )["trainRunId"]  # fmt: skip
            ledger.start_run(run_id, actor="tester")
            if outcome == "complete":
                ledger.register_checkpoint(
                    run_id, family=READER_FAMILY, artifact_path=write_artifact(out), actor="tester"
                )
                ledger.complete_run(run_id, actor="tester")
            else:
                ledger.fail_run(run_id, "loss went to NaN", actor="tester")
    finally:
        ledger.close()
    no_proxy = {"NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}
    cli = Cli(sqlite_url, cwd=tmp_path, env=no_proxy)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        cli.env.pop(name, None)
    cli.env.pop(API_KEY_ENV, None)
    return cli


def printed_events(cli: Cli) -> list[dict[str, Any]]:
    result = cli("export", "--format", "openlineage")
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_event_is_posted_in_order_as_json(cli: Cli, accepting: Endpoint) -> None:
    result = cli("export", "--format", "openlineage", "--post", accepting.url)

    assert result.code == 0, result.stderr
    assert result.stdout == f"posted 4 OpenLineage events to {accepting.url}/api/v1/lineage\n"
    assert result.stderr == ""
    bodies = [json.loads(r.body) for r in accepting.received]
    assert bodies == printed_events(cli)
    assert [b["eventType"] for b in bodies] == ["START", "COMPLETE", "START", "FAIL"]
    for body in bodies:
        assert_valid(body)
    for request in accepting.received:
        assert request.path == "/api/v1/lineage"
        assert request.headers["Content-Type"] == "application/json"
        assert "Authorization" not in request.headers


def test_the_api_key_goes_as_a_bearer_token_and_is_never_shown(
    cli: Cli, accepting: Endpoint
) -> None:
    """Below a path (a Marquez behind a proxy), with --json."""
    url = f"{accepting.url}/marquez/"
    result = cli(
        "export", "--format", "openlineage", "--post", url, json_mode=True, **{API_KEY_ENV: SECRET}
    )

    assert result.code == 0, result.stderr
    assert result.json == {"posted": 4, "endpoint": f"{accepting.url}/marquez/api/v1/lineage"}
    assert [r.path for r in accepting.received] == ["/marquez/api/v1/lineage"] * 4
    assert {r.headers["Authorization"] for r in accepting.received} == {f"Bearer {SECRET}"}
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("status", [400, 500])
def test_posting_stops_at_the_first_refusal_with_its_status(cli: Cli, status: int) -> None:
    cli.env[API_KEY_ENV] = SECRET
    with serve(Endpoint(refuse=3, status=status)) as endpoint:
        result = cli.refused("export", "--format", "openlineage", "--post", endpoint.url)

        # The first two were sent, the third refused, and not sent again (no retries); no fourth.
        assert [json.loads(r.body) for r in endpoint.received] == printed_events(cli)[:3]
        message = result.stderr
        assert f"{endpoint.url}/api/v1/lineage refused event 3 with HTTP {status}" in message
        assert "not a lineage event" in message  # what the endpoint said
        assert "2 events sent before it" in message
        assert SECRET not in message
        assert result.stdout == ""


def test_a_refusal_with_json_is_an_error_document(cli: Cli) -> None:
    with serve(Endpoint(refuse=1, status=422)) as endpoint:
        result = cli("export", "--format", "openlineage", "--post", endpoint.url, json_mode=True)

        assert result.code == 1
        error = result.json["error"]
        assert error["code"] == "openlineage_refused"
        assert "refused event 1 with HTTP 422" in error["message"]
        assert "0 events sent before it" in error["message"]


def test_an_endpoint_that_does_not_answer_in_time_stops_the_posting(cli: Cli) -> None:
    with serve(Endpoint(stall=2)) as endpoint:
        result = cli.refused(
            "export", "--format", "openlineage", "--post", endpoint.url, "--timeout", "0.5"
        )

        assert "did not answer event 2 within 0.5 s; 1 event sent before it" in result.stderr
        assert len(endpoint.received) == 2


def test_an_unreachable_endpoint_is_one_clear_line(cli: Cli) -> None:
    url = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there

    result = cli.refused("export", "--format", "openlineage", "--post", url)

    assert result.stderr == (
        f"error: cannot reach OpenLineage endpoint {url}/api/v1/lineage (event 1): "
        "Connection refused; 0 events sent before it\n"
    )


def test_a_password_in_the_url_is_not_shown(cli: Cli) -> None:
    url = f"http://lineage:hunter2@{LOOPBACK}:{free_port()}"

    result = cli.refused("export", "--format", "openlineage", "--post", url)

    assert "hunter2" not in result.stderr
    assert f"http://lineage:***@{LOOPBACK}" in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--format", "xml"], "'xml' is not one of 'jsonl', 'openlineage'"),
        (["--post", "http://127.0.0.1:9"], "--post needs --format openlineage"),
        (["--format", "openlineage", "--post", "ftp://127.0.0.1/"], "not an http:// or https://"),
        (["--format", "openlineage", "--post", "127.0.0.1:5000"], "not an http:// or https://"),
        (["--format", "openlineage", "--timeout", "5"], "--timeout needs --post URL"),
        (["--format", "openlineage", "--post", "http://127.0.0.1:9", "--timeout", "0"], "x>0"),
    ],
)
def test_bad_export_options_are_usage_errors(cli: Cli, args: list[str], named: str) -> None:
    result = cli.refused("export", *args, code=2)
    assert named in result.stderr
    assert result.stdout == ""
