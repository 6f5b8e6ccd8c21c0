"""Figure 10: `trainledger serve` under load, beside the in-process API (SPEC §10).

A SQLite store (the default, synchronous=FULL) with an admin token and one
writer token per client. The service runs in its own process (`trainledger
serve` on a free 127.0.0.1 port, its default workers); each client is its
own process with one keep-alive HTTP connection and its own token.

- writes: in alternating rounds, the in-process Python API's single-writer
  rate on a copy of the store, and 8 clients doing full lifecycles over HTTP
  (the same six commands), total lifecycles/s and every request's latency;
- reads: 8 clients doing `GET /v1/checkpoints/{id}/lineage`, GETs/s;
- the event stream: one client follows `/v1/events/stream` while appends are
  made one at a time (over HTTP, then by another process's Python API); the
  delay from an append's return to its event's arrival.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.context import BenchContext
from bench.stats import Figure, Summary, Target, percentile
from bench.workload import ACTOR, ARTIFACT_BYTES, LifecycleParams, run_lifecycle, sqlite_url
from trainledger.adapters.store import open_ledger

CLIENTS = 8
RATIO_TARGET = 0.5
P99_TARGET_MS = 100.0
LINEAGE_TARGET = 500.0
STREAM_TARGET_S = 1.0
BIN = Path(sys.executable).with_name("trainledger")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(store: str, *args: str) -> Any:
    env = {**os.environ, "TRAINLEDGER_STORE": store, "TRAINLEDGER_ACTOR": ACTOR}
    out = subprocess.run(
        [str(BIN), "--json", *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


SERVE_OPTIONS = ("--processes", "2", "--workers", "1")
"""How the figure serves: two processes of one thread each, which on this 2-CPU host made
the most lifecycles/s with the lowest p99 (bench/README.md, "serve in processes")."""


@contextlib.contextmanager
def serving(store: str, options: tuple[str, ...] = SERVE_OPTIONS) -> Iterator[int]:
    """`trainledger serve OPTIONS` on a free port until the block ends; the port."""
    port = _free_port()
    env = {**os.environ, "TRAINLEDGER_STORE": store}
    process = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"serve did not start: {err.strip()[-300:]}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def experiment_body(p: LifecycleParams) -> dict[str, Any]:
    """`POST /v1/experiments` of one lifecycle's parameters."""
    return {
        "profile": "local-reader",
        "family": p.family,
        "backend": "dry-run",
        "benchmarkExportId": p.benchmark,
        "outputDir": "bench-output",
        "datasetFingerprint": p.dataset,
        "sampleCount": 1000,
    }


class Client:
    """One keep-alive connection with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        self.connection.request(method, path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def lifecycle(self, n: int, artifact: str, timings: list[float]) -> str:
        p = LifecycleParams(n)
        clock = time.perf_counter
        steps: list[float] = [clock()]
        run_id = self.call(
            "POST",
            "/v1/experiments",
            experiment_body(p),
        )["trainRunId"]
        steps.append(clock())
        self.call("POST", f"/v1/runs/{run_id}/start")
        steps.append(clock())
        checkpoint = self.call(
            "POST", f"/v1/runs/{run_id}/checkpoints", {"family": p.family, "artifactPath": artifact}
        )["checkpointId"]
        steps.append(clock())
        self.call("POST", f"/v1/runs/{run_id}/complete")
        steps.append(clock())
        self.call("POST", f"/v1/checkpoints/{checkpoint}/evals", p.eval_summary(checkpoint))
        steps.append(clock())
        self.call("POST", f"/v1/checkpoints/{checkpoint}/deployable")
        steps.append(clock())
        timings.extend(b - a for a, b in itertools.pairwise(steps))
        return str(checkpoint)


def _writer(args: tuple[int, str, int, str, float, Any]) -> tuple[int, list[float]]:
    port, token, first, artifact, seconds, start_at = args
    client = Client(port, token)
    client.lifecycle(first, artifact, [])  # warm-up
    timings: list[float] = []
    while time.time() < start_at:
        time.sleep(0.001)
    done, n, deadline = 0, first + 1, start_at + seconds
    while time.time() < deadline:
        client.lifecycle(n, artifact, timings)
        n += 1
        if time.time() <= deadline:
            done += 1
    return done, timings


def _reader(args: tuple[int, str, str, float, float]) -> int:
    port, token, checkpoint, seconds, start_at = args
    client = Client(port, token)
    path = f"/v1/checkpoints/{checkpoint}/lineage"
    client.call("GET", path)
    while time.time() < start_at:
        time.sleep(0.001)
    done, deadline = 0, start_at + seconds
    while time.time() < deadline:
        client.call("GET", path)
        if time.time() <= deadline:
            done += 1
    return done


def service(ctx: BenchContext) -> Figure:
    """10. The service with 8 clients, beside the in-process API; the stream's delay."""
    figure = Figure("service", "The service: 8 HTTP clients on `trainledger serve` (SQLite)")
    directory = ctx.workdir("service")
    artifact = directory / "adapter.bin"
    artifact.write_bytes(ARTIFACT_BYTES)
    store = sqlite_url(directory / "ledger.db")
    _cli(store, "token", "create", "bench-admin", "--role", "admin")
    tokens = [
        _cli(store, "token", "create", f"bench-writer-{i}", "--role", "writer")["token"]
        for i in range(CLIENTS)
    ]
    seconds = ctx.sizes.concurrent_seconds
    api: list[float] = []
    http_rates: list[float] = []
    latencies: list[float] = []
    lineage: list[float] = []
    checkpoint = ""
    context = multiprocessing.get_context("spawn")
    with serving(store) as port, context.Pool(CLIENTS) as pool:
        for r in range(ctx.sizes.rounds):
            for turn in ("api", "http") if r % 2 == 0 else ("http", "api"):
                if turn == "api":
                    api.append(_api_rate(ctx, directory / f"api-{r}.db", str(artifact)))
                    continue
                start_at = time.time() + 2
                jobs = [
                    (port, tokens[i], (r * CLIENTS + i) * 100_000, str(artifact), seconds, start_at)
                    for i in range(CLIENTS)
                ]
                results = pool.map(_writer, jobs)
                http_rates.append(sum(done for done, _ in results) / seconds)
                latencies += [t for _, timings in results for t in timings]
            ctx.log(f"round {r + 1}: API {api[-1]:.1f}/s, HTTP x{CLIENTS} {http_rates[-1]:.1f}/s")
        checkpoint = Client(port, tokens[0]).lifecycle(99_000_000, str(artifact), [])
        for _ in range(ctx.sizes.rounds):
            start_at = time.time() + 2
            jobs2 = [(port, tokens[i], checkpoint, seconds, start_at) for i in range(CLIENTS)]
            lineage.append(sum(pool.map(_reader, jobs2)) / seconds)
        delays = {
            "over HTTP": _stream_delays(ctx, port, tokens[0], store, str(artifact), over_http=True),
            "by another process": _stream_delays(
                ctx, port, tokens[0], store, str(artifact), over_http=False
            ),
        }
    _report(figure, api, http_rates, latencies, lineage, delays)
    return figure


def _api_rate(ctx: BenchContext, path: Path, artifact: str) -> float:
    """The in-process Python API, one writer, on its own fresh store (lifecycles/s)."""
    ledger = open_ledger(sqlite_url(path))
    try:
        for n in range(3):
            run_lifecycle(ledger, n)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < ctx.sizes.concurrent_seconds:
            run_lifecycle(ledger, 10 + count)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        ledger.close()


def _stream_delays(
    ctx: BenchContext, port: int, token: str, store: str, artifact: str, *, over_http: bool
) -> list[float]:
    """Seconds from each append's return to its event's arrival on the stream."""
    import sqlite3

    database = store.removeprefix("sqlite:///")
    log = sqlite3.connect(f"file:{database}?mode=ro", uri=True)

    def end() -> int:
        row = log.execute("SELECT max(rowid) FROM stored_events").fetchone()
        return int(row[0] or 0)

    arrivals: dict[int, float] = {}
    after = end()
    ready = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request(
            "GET", f"/v1/events/stream?after={after}", headers={"Authorization": f"Bearer {token}"}
        )
        response = connection.getresponse()
        ready.set()
        while not stop.is_set():
            line = response.fp.readline()
            if not line:
                return
            if line.startswith(b"id:"):
                arrivals[int(line[3:].strip())] = time.perf_counter()
        connection.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    ready.wait(30)
    samples = 40 if ctx.quick else 200
    appended: dict[int, float] = {}
    client = Client(port, token)
    ledger = None if over_http else open_ledger(store)
    run_ids: list[str] = []
    try:
        for i in range(samples):
            p = LifecycleParams(50_000_000 + i)
            if over_http:
                run_ids.append(
                    client.call(
                        "POST",
                        "/v1/experiments",
                        experiment_body(p),
                    )["trainRunId"]
                )
            else:
                assert ledger is not None
                ledger.create_experiment(
                    p.request(), dataset_fingerprint=p.dataset, sample_count=1000, actor=ACTOR
                )
            appended[end()] = time.perf_counter()
            time.sleep(0.05)
        deadline = time.perf_counter() + 10
        while set(appended) - set(arrivals) and time.perf_counter() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        if ledger is not None:
            ledger.close()
        log.close()
    missing = set(appended) - set(arrivals)
    if missing:
        raise RuntimeError(f"{len(missing)} appended events never arrived on the stream")
    return [arrivals[p] - t for p, t in appended.items()]


def _report(
    figure: Figure,
    api: list[float],
    http_rates: list[float],
    latencies: list[float],
    lineage: list[float],
    delays: dict[str, list[float]],
) -> None:
    figure.add("in-process API, 1 writer", Summary.of(api, "lifecycles/s"))
    figure.add(f"HTTP, {CLIENTS} clients: total", Summary.of(http_rates, "lifecycles/s"))
    ratio = figure.add(
        f"ratio HTTP x{CLIENTS} / API, per round",
        Summary.of([h / a for h, a in zip(http_rates, api, strict=True)], "x"),
    )
    ms = [t * 1000 for t in latencies]
    request = figure.add("HTTP request latency (writes)", Summary.of(ms, "ms", with_p99=True))
    gets = figure.add(f"lineage GETs, {CLIENTS} clients", Summary.of(lineage, "GETs/s"))
    figure.targets += [
        Target(
            f"HTTP x{CLIENTS} >= {RATIO_TARGET} x the API's single writer",
            ratio.median >= RATIO_TARGET,
            f"{ratio.median:.2f} x (per round {ratio.minimum:.2f}-{ratio.maximum:.2f})",
        ),
        Target(
            f"request p99 < {P99_TARGET_MS:g} ms",
            (request.p99 or 0) < P99_TARGET_MS,
            f"p50 {percentile(ms, 50):.1f} ms, p99 {request.p99:.1f} ms",
        ),
        Target(
            f"lineage >= {LINEAGE_TARGET:g} GETs/s with {CLIENTS} clients",
            gets.median >= LINEAGE_TARGET,
            f"{gets.median:,.0f} GETs/s",
        ),
    ]
    for how, values in delays.items():
        row = figure.add(
            f"event stream: append {how} to delivery",
            Summary.of([v * 1000 for v in values], "ms", with_p99=True),
        )
        figure.targets.append(
            Target(
                f"stream delay p99 < {STREAM_TARGET_S:g} s (append {how})",
                (row.p99 or 0) < STREAM_TARGET_S * 1000,
                f"p50 {percentile(values, 50) * 1000:.0f} ms, p99 {row.p99:.0f} ms",
            )
        )
    figure.notes.append(
        f"`trainledger serve {' '.join(SERVE_OPTIONS)}`; {CLIENTS} client processes, one "
        "keep-alive connection and one writer token each; a lifecycle over HTTP is the same "
        "six commands as in-process (six POSTs); the service and its clients share the "
        "machine's CPUs"
    )
