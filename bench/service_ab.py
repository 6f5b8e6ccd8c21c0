"""Before and after, side by side: `trainledger serve` of another commit against this one.

    .venv/bin/python -m bench.service_ab BEFORE_COMMIT [--rounds 3] [--seconds 5]

Figure 10's write and read load, in alternating rounds: every variant's
service runs at once, on its own SQLite store (the default, synchronous=FULL;
an admin token and one writer token per client), and in each round, in
rotating order, 8 client processes (bench/service.py's, one keep-alive
connection and one token each) do full lifecycles on one service for a
window, then `GET .../lineage`; the in-process Python API's single-writer
rate is measured in the same round, on a fresh store. Variants:

- `before`: BEFORE_COMMIT's package (`git archive` into a scratch directory),
  as it shipped (uvicorn's pure-Python event loop and HTTP parser where it did
  not depend on uvloop and httptools yet);
- `after-python`: this checkout, uvloop and httptools hidden from uvicorn;
- `after`: this checkout as it ships (uvicorn takes uvloop and httptools).

Prints, per window, lifecycles/s, the request p50/p99, the CPU per
lifecycle of the service's process and of the 8 client processes (user +
system time), how busy the whole machine was (all its CPUs, other work
included), the lineage GETs/s and the service's CPU per GET; then the
medians. Not part of `make bench`; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.context import BenchContext, Sizes
from bench.processes import REPO
from bench.service import CLIENTS, Client, _api_rate, _cli, _free_port, _reader, _writer
from bench.stats import percentile
from bench.workload import ARTIFACT_BYTES, sqlite_url

SERVER = """
import sys
root, hidden, port = sys.argv[1], sys.argv[2], sys.argv[3]
for name in filter(None, hidden.split(",")):
    sys.modules[name] = None  # an import of it fails: uvicorn takes asyncio's loop, h11
if root:
    sys.path.insert(0, root)
from trainledger.cli.main import main
main(["serve", "--port", port])
"""
HIDDEN = "uvloop,httptools"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clients_cpu(pool: multiprocessing.pool.Pool) -> float:
    """The client processes' CPU seconds (user + system) so far."""
    return sum(_cpu_seconds(process.pid) for process in getattr(pool, "_pool", []))


def _host_busy() -> tuple[float, float]:
    """The machine's busy and total CPU seconds so far (every process's, /proc/stat)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


@contextlib.contextmanager
def _service(store: str, root: str, hidden: str) -> Iterator[tuple[int, int]]:
    port = _free_port()
    env = {**os.environ, "TRAINLEDGER_STORE": store}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, root, hidden, str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the service of {root or 'this checkout'} did not start"
                    ) from None
                time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def _ships_uvloop(root: Path) -> bool:
    return "uvloop" in (root / "pyproject.toml").read_text()


def _store(directory: Path) -> tuple[str, list[str]]:
    store = sqlite_url(directory / "ledger.db")
    _cli(store, "token", "create", "bench-admin", "--role", "admin")
    tokens = [
        _cli(store, "token", "create", f"bench-writer-{i}", "--role", "writer")["token"]
        for i in range(CLIENTS)
    ]
    return store, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--variants", default="before,after-python,after")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="trainledger-service-ab-"))
    archive = subprocess.run(
        ["git", "archive", args.before], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(scratch / "before", filter="fully_trusted")
    artifact = scratch / "adapter.bin"
    artifact.write_bytes(ARTIFACT_BYTES)
    setups = {
        # uvloop and httptools hidden only where BEFORE_COMMIT did not depend on them.
        "before": (str(scratch / "before"), "" if _ships_uvloop(scratch / "before") else HIDDEN),
        "after-python": ("", HIDDEN),
        "after": ("", ""),
    }
    variants = args.variants.split(",")
    rows: dict[str, list[Window]] = {v: [] for v in variants}
    api: list[float] = []
    with contextlib.ExitStack() as stack:
        services = {}
        for variant in variants:
            directory = scratch / "stores" / variant
            directory.mkdir(parents=True)
            store, tokens = _store(directory)
            port, pid = stack.enter_context(_service(store, *setups[variant]))
            checkpoint = Client(port, tokens[0]).lifecycle(99_000_000, str(artifact), [])
            services[variant] = (port, pid, tokens, checkpoint)
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(CLIENTS))
        for r in range(args.rounds):
            api.append(_api_rate_for(args.seconds, scratch / f"api-{r}.db", str(artifact)))
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                port, pid, tokens, checkpoint = services[variant]
                rows[variant].append(
                    _window(pool, port, pid, tokens, checkpoint, r, artifact, args.seconds)
                )
                rate, p50, p99, cpu, clients, busy, gets, get_cpu = rows[variant][-1]
                print(
                    f"round {r + 1} {variant:12} {rate:6.1f} lifecycles/s (API {api[-1]:.1f}), "
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, service {cpu:.2f} CPU-ms/lifecycle, "
                    f"clients {clients:.2f}, host busy {busy:.2f}; "
                    f"lineage {gets:.0f} GETs/s, service {get_cpu:.3f} CPU-ms/GET",
                    flush=True,
                )
    print(f"in-process API, 1 writer: median {statistics.median(api):.1f} lifecycles/s")
    for variant, values in rows.items():
        rate, p50, p99, cpu, clients, busy, gets, get_cpu = (
            statistics.median(column) for column in zip(*values, strict=True)
        )
        ratios = [v[0] / a for v, a in zip(values, api, strict=True)]
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{variant:12} median {rate:.1f} lifecycles/s (per round / API: {shown}; "
            f"median {statistics.median(ratios):.2f}), p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"service {cpu:.2f} CPU-ms/lifecycle, clients {clients:.2f}, host busy {busy:.2f}; "
            f"lineage {gets:.0f} GETs/s, service {get_cpu:.3f} CPU-ms/GET"
        )


def _api_rate_for(seconds: float, path: Path, artifact: str) -> float:
    sizes = dataclasses.replace(Sizes.full(), concurrent_seconds=seconds)
    return _api_rate(BenchContext(sizes=sizes, quick=False, scratch=path.parent), path, artifact)


Window = tuple[float, float, float, float, float, float, float, float]
"""lifecycles/s, p50 ms, p99 ms, the service's and the clients' CPU-ms per lifecycle,
the host's busy share (of all its CPUs), lineage GETs/s, the service's CPU-ms per GET."""


def _window(
    pool: multiprocessing.pool.Pool,
    port: int,
    pid: int,
    tokens: list[str],
    checkpoint: str,
    r: int,
    artifact: Path,
    seconds: float,
) -> Window:
    start_at = time.time() + 2
    jobs = [
        (port, tokens[i], (r * CLIENTS + i + 1) * 100_000, str(artifact), seconds, start_at)
        for i in range(CLIENTS)
    ]
    waiting = pool.map_async(_writer, jobs)
    time.sleep(max(0.0, start_at - time.time()))
    before, clients, (busy, total) = _cpu_seconds(pid), _clients_cpu(pool), _host_busy()
    time.sleep(seconds)
    used, clients_used = _cpu_seconds(pid) - before, _clients_cpu(pool) - clients
    busy_after, total_after = _host_busy()
    results = waiting.get()
    done = sum(d for d, _ in results)
    ms = [t * 1000 for _, timings in results for t in timings]
    start_at = time.time() + 2
    reads = [(port, tokens[i], checkpoint, seconds, start_at) for i in range(CLIENTS)]
    reading = pool.map_async(_reader, reads)
    time.sleep(max(0.0, start_at - time.time()))
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    read_cpu = _cpu_seconds(pid) - before
    gets = sum(reading.get())
    return (
        done / seconds,
        percentile(ms, 50),
        percentile(ms, 99),
        used / max(done, 1) * 1000,
        clients_used / max(done, 1) * 1000,
        (busy_after - busy) / max(total_after - total, 1e-9),
        gets / seconds,
        read_cpu / max(gets, 1) * 1000,
    )


if __name__ == "__main__":
    main()
