"""`GET /v1/events/stream` (SPEC §10): Server-Sent Events resuming after Last-Event-ID,
following appends made by another process, ending cleanly."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve_support import Server, issue_tokens, start_server
from tests.support import Cli, experiment_args

FOLLOW_TIMEOUT = 30.0
"""Generous: the stream polls every 0.2 s; no speed is asserted."""


class Stream:
    """An open event stream, read event by event off a raw socket."""

    def __init__(self, server: Server, token: str, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=FOLLOW_TIMEOUT)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            (
                "GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n{extra}\r\n"
            ).encode()
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/event-stream" in head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the stream ended")
            self.buffer += chunk
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    def _message(self) -> str:
        # Chunked transfer: strip the chunk sizes, keep the SSE text.
        while True:
            text = _dechunk(self.buffer)
            if "\n\n" in text:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the stream ended")
            self.buffer += chunk
        message, _, rest = text.partition("\n\n")
        self.buffer = _rechunk(rest)
        return message

    def events(self, count: int) -> list[tuple[int, dict[str, Any]]]:
        """The next `count` events (comments and heartbeats skipped): (id, data)."""
        found: list[tuple[int, dict[str, Any]]] = []
        while len(found) < count:
            message = self._message()
            fields = dict(
                line.split(": ", 1) for line in message.splitlines() if not line.startswith(":")
            )
            if "data" in fields:
                found.append((int(fields["id"]), json.loads(fields["data"])))
        return found

    def close(self) -> None:
        self.sock.close()


def _dechunk(raw: bytes) -> str:
    text, rest = b"", raw
    while b"\r\n" in rest:
        size_line, _, after = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if len(after) < size + 2:
            break
        text += after[:size]
        rest = after[size + 2 :]
    return text.decode()


def _rechunk(text: str) -> bytes:
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Cli, str, Path]]:
    root = tmp_path_factory.mktemp("stream")
    cli = Cli(f"sqlite:///{root / 'ledger.db'}", cwd=root)
    tokens = issue_tokens(cli, "reader", "admin")
    for _ in range(5):
        cli.ok(*experiment_args(root / "out"))
    server = start_server(cli.store or "", root)
    yield server, cli, tokens["reader"], root
    server.stop()


def _log(cli: Cli) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli("events").stdout.splitlines()]


def test_a_stream_sends_every_event_with_its_position_as_id(
    served: tuple[Server, Cli, str, Path],
) -> None:
    server, cli, reader, _ = served
    log = _log(cli)
    stream = Stream(server, reader)
    try:
        received = stream.events(len(log))
    finally:
        stream.close()
    assert [event_id for event_id, _ in received] == [e["position"] for e in log]
    assert [data for _, data in received] == log


@pytest.mark.parametrize("resume", ["Last-Event-ID", "after"])
def test_resuming_after_last_event_id_skips_nothing_and_repeats_nothing(
    served: tuple[Server, Cli, str, Path], resume: str
) -> None:
    server, cli, reader, root = served
    log = _log(cli)
    last = log[2]["position"]
    if resume == "Last-Event-ID":
        stream = Stream(server, reader, {"Last-Event-ID": str(last)})
    else:
        stream = Stream_after(server, reader, last)
    try:
        expected = [e["position"] for e in log if e["position"] > last]
        assert [i for i, _ in stream.events(len(expected))] == expected
        # Then it follows what another process appends.
        created = cli.ok(*experiment_args(root / "out"))
        ((event_id, data),) = stream.events(1)
        assert data["aggregateId"] == created["trainRunId"]
        assert event_id == data["position"] == expected[-1] + 1
    finally:
        stream.close()


def Stream_after(server: Server, token: str, after: int) -> Stream:  # noqa: N802
    class After(Stream):
        pass

    stream = After.__new__(After)
    stream.sock = socket.create_connection(("127.0.0.1", server.port), timeout=FOLLOW_TIMEOUT)
    stream.sock.sendall(
        (
            f"GET /v1/events/stream?after={after} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    stream.buffer = b""
    assert stream._until(b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    return stream


def test_a_stream_follows_a_cli_append(served: tuple[Server, Cli, str, Path]) -> None:
    server, cli, reader, root = served
    end = _log(cli)[-1]["position"]
    stream = Stream(server, reader, {"Last-Event-ID": str(end)})
    try:
        started = time.monotonic()
        run = cli.ok(*experiment_args(root / "out"))
        cli.ok("run", "start", run["trainRunId"])
        received = stream.events(2)
        assert time.monotonic() - started < FOLLOW_TIMEOUT
    finally:
        stream.close()
    assert [data["type"] for _, data in received] == ["Registered", "Started"]
    assert [i for i, _ in received] == [end + 1, end + 2]


def test_the_stream_needs_a_reader_token_and_a_sound_last_event_id(
    served: tuple[Server, Cli, str, Path],
) -> None:
    server, _, reader, _ = served
    assert server.get("/v1/events/stream").status == 401
    answer = server.get("/v1/events/stream", reader, headers={"Last-Event-ID": "seven"})
    assert answer.status == 422


def test_streams_closed_by_their_clients_leave_the_service_answering(
    served: tuple[Server, Cli, str, Path],
) -> None:
    server, _, reader, _ = served
    for _ in range(20):
        Stream(server, reader).close()
    assert server.get("/v1/stats", reader).status == 200


def test_a_stop_ends_open_streams_and_the_service(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    reader = issue_tokens(cli, "reader", "admin")["reader"]
    server = start_server(cli.store or "", tmp_path)
    logged = len(_log(cli))
    streams = [Stream(server, reader) for _ in range(3)]
    try:
        for stream in streams:
            stream.events(logged)
        output = server.stop(timeout=60)
        for stream in streams:
            with pytest.raises(EOFError):
                stream.events(1)
    finally:
        for stream in streams:
            stream.close()
    # The streams ended when asked to: the stop did not have to cancel them.
    assert "timeout graceful shutdown exceeded" not in output
    assert "Traceback" not in output
