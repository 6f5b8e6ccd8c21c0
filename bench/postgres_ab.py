"""Before and after, side by side: the PostgreSQL write path of another commit against this one.

    .venv/bin/python -m bench.postgres_ab BEFORE_COMMIT [--writers 1,8] [--rounds 3] [--seconds 4]

Starts a throwaway PostgreSQL cluster with fsync=on (bench/processes.py), and
in rotating order runs writer processes with this checkout or with
BEFORE_COMMIT's whole tree (`git archive` into a scratch directory, the
writers' working directory and first on their `PYTHONPATH`: its recorder, its
append and what its commands load; a writer that imported another tree
exits), each with psycopg's C implementation and with its pure-Python one
(`PSYCOPG_IMPL`). Every window gets a fresh database bulk-loaded with 1,000
lifecycles by this checkout. Prints lifecycles/s and CPU milliseconds per
command (user + system) of the writers and of their server sessions (the
backends serving that database, from /proc) per window, and the medians.
With `--paired`, the variants' writers run at the same time, each set on its
own database. With `--wait-states`, a thread samples `pg_stat_activity` every
3 ms during each window and prints, per variant, how many of its sessions
were on average in each state: waiting for the events table's lock, for the
WAL's flush, running, or idle waiting for their client (the sampler's own
session is on another database, so the server CPU stays the writers'). A
variant ending in `-nosync` (`after-binary-nosync`) writes to a database set to
`synchronous_commit = off`: its commits do not wait for the WAL's flush, so the
events table's lock is not held through one. That is an upper bound for any
design that takes the flush out of the lock's hold, not a setting for the
ledger (a commit answered could be lost). Not part of `make bench`; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from bench.processes import REPO, _postgres_cluster
from bench.stats import percentile
from bench.workload import bulk_load
from trainledger.adapters.store import open_ledger

WRITER = """
import json, resource, sys, time
url, first, seconds, tree = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
from bench.workload import run_lifecycle
from trainledger.adapters import store
from trainledger.adapters.store import open_ledger
import os.path
if not os.path.realpath(store.__file__).startswith(os.path.realpath(tree) + os.sep):
    sys.exit(f"the writer imported {store.__file__}, not the tree under test ({tree})")
ledger = open_ledger(url)
n = first
run_lifecycle(ledger, n)
n += 1
print("ready", flush=True)
sys.stdin.readline()
latencies, done = [], 0
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
deadline = time.perf_counter() + seconds
while time.perf_counter() < deadline:
    run_lifecycle(ledger, n, latencies.append)
    n += 1
    if time.perf_counter() <= deadline:
        done += 1
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - cpu
print(json.dumps({"lifecycles": done, "latencies": latencies, "cpu": cpu}), flush=True)
sys.stdin.readline()  # the server's CPU is read while this process's sessions live
ledger.close()
"""

Measured = tuple[float, float, float, float]
"""Lifecycles/s, p99 command latency (ms), the writers' and their server sessions' CPU
milliseconds per command."""


def sessions_cpu(data_dir: Path, dbname: str) -> float:
    """CPU seconds (user + system) of the server processes serving database `dbname` (Linux)."""
    postmaster = (data_dir / "postmaster.pid").read_text().split()[0]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text() if proc.name.isdigit() else ""
            title = (proc / "cmdline").read_bytes().decode(errors="replace") if stat else ""
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[1] == postmaster and f" {dbname} " in title:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


SAMPLE_STATES = (
    "SELECT datname, CASE WHEN state = 'active' "
    "THEN coalesce(wait_event_type || ':' || wait_event, 'running') "
    "ELSE coalesce(state, 'no state') || coalesce(' (' || wait_event || ')', '') END "
    "FROM pg_stat_activity WHERE datname = ANY(%s) AND backend_type = 'client backend'"
)


class WaitStates:
    """What the client sessions of some databases do, sampled every few milliseconds.

    `averages(dbname)`: per state (a wait event while active, `running`, or
    the state of an idle session), how many of that database's sessions were
    in it on average over the samples.
    """

    def __init__(self, url: str, dbnames: list[str], every: float = 0.003) -> None:
        self.url = url
        self.dbnames = dbnames
        self.every = every
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in dbnames}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._error: psycopg.Error | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; a sampler that could not sample says why here."""
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"pg_stat_activity was not sampled: {self._error}")

    def _sample(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as connection:
                while not self._stop.is_set():
                    rows = connection.execute(SAMPLE_STATES, (self.dbnames,)).fetchall()
                    self.samples += 1
                    for dbname, state in rows:
                        self.counts[dbname][state] += 1
                    time.sleep(self.every)
        except psycopg.Error as error:
            self._error = error

    def averages(self, dbname: str) -> list[tuple[str, float]]:
        samples = max(self.samples, 1)
        return [(state, n / samples) for state, n in self.counts[dbname].most_common()]


def window(
    groups: list[tuple[str, str]],
    writers: int,
    seconds: float,
    before: Path,
    data_dir: Path,
    states: WaitStates | None = None,
) -> list[Measured]:
    """`writers` processes for each (variant, database URL), all measured at once (and their
    sessions' states sampled while they are, given `states`)."""
    started = []
    for g, (variant, url) in enumerate(groups):
        # The tree is the writers' working directory too: `python -c` puts that first on
        # `sys.path`, before PYTHONPATH (with this checkout's, every variant ran this code).
        tree = before if variant.startswith("before") else REPO
        env = {**os.environ, "PYTHONPATH": str(tree), "PSYCOPG_IMPL": variant.split("-")[1]}
        first = 10_000_000 + g * 100_000_000
        started.append([
            subprocess.Popen(
                [
                    sys.executable, "-c", WRITER,
                    url, str(first + w * 1_000_000), str(seconds), str(tree),
                ],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree,
            )
            for w in range(writers)
        ])  # fmt: skip
    everyone = [p for processes in started for p in processes]
    for p in everyone:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    dbnames = [url.rsplit("/", 1)[1] for _, url in groups]
    server = [sessions_cpu(data_dir, db) for db in dbnames]
    if states is not None:
        states.start()
    for p in everyone:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = [[json.loads(p.stdout.readline()) for p in ps if p.stdout] for ps in started]
    if states is not None:
        states.stop()
    server = [sessions_cpu(data_dir, db) - s for db, s in zip(dbnames, server, strict=True)]
    for p in everyone:
        p.communicate("close\n")
    measured = []
    for group, spent in zip(reports, server, strict=True):
        latencies = [t for r in group for t in r["latencies"]]
        commands = max(len(latencies), 1)
        measured.append((
            sum(r["lifecycles"] for r in group) / seconds,
            percentile(latencies, 99) * 1000,
            1000 * sum(r["cpu"] for r in group) / commands,
            1000 * spent / commands,
        ))  # fmt: skip
    return measured


def fresh_store(cluster: Any, *, synchronous: bool = True) -> str:
    """A new database with 1,000 lifecycles, by this checkout (its commits not waiting
    for the WAL's flush from then on, unless `synchronous`)."""
    url: str = cluster.url(cluster.create_database())
    ledger = open_ledger(url)
    bulk_load(ledger, range(1000))
    ledger.close()
    if not synchronous:  # for the sessions opened from now on: the writers'
        with psycopg.connect(url, autocommit=True) as connection:
            name = url.rsplit("/", 1)[1]
            connection.execute(
                SQL("ALTER DATABASE {} SET synchronous_commit = off").format(Identifier(name))
            )
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("--writers", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--variants", default="before-python,after-binary,before-binary,after-python"
    )
    parser.add_argument(
        "--wait-states",
        action="store_true",
        help="sample pg_stat_activity during each window and print the sessions' states",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run the variants' writers at the same time, each on its own database "
        "(on a shared, busy machine every variant then sees the same load)",
    )
    args = parser.parse_args()
    before = Path(tempfile.mkdtemp(prefix="trainledger-pg-ab-"))
    archive = subprocess.run(
        ["git", "archive", args.before], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    variants = args.variants.split(",")
    writer_counts = [int(w) for w in args.writers.split(",")]
    results: dict[tuple[str, int], list[Measured]] = {}
    with _postgres_cluster() as cluster:
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for writers in writer_counts:
                batches = [order] if args.paired else [[v] for v in order]
                for batch in batches:
                    groups = [
                        (v, fresh_store(cluster, synchronous=not v.endswith("-nosync")))
                        for v in batch
                    ]
                    dbnames = [url.rsplit("/", 1)[1] for _, url in groups]
                    states = WaitStates(cluster.url(), dbnames) if args.wait_states else None
                    measured = window(
                        groups, writers, args.seconds, before, cluster.data_dir, states
                    )
                    for g, (variant, (rate, p99, cpu, server)) in enumerate(
                        zip(batch, measured, strict=True)
                    ):
                        results.setdefault((variant, writers), []).append((rate, p99, cpu, server))
                        print(f"round {r + 1} {variant} x{writers}: {rate:.1f}/s p99 {p99:.1f} ms"
                              f" cpu ms/command: writers {cpu:.2f}, server {server:.2f}",
                              flush=True)  # fmt: skip
                        if states is not None:
                            shown = ", ".join(
                                f"{n:.2f} {state}"
                                for state, n in states.averages(dbnames[g])
                                if n >= 0.005
                            )
                            print(f"  sessions on average ({states.samples} samples): {shown}")
    for (variant, writers), values in sorted(results.items()):
        rates = sorted(v[0] for v in values)
        p99s = sorted(v[1] for v in values)
        cpus = sorted(v[2] for v in values)
        servers = sorted(v[3] for v in values)
        runs = ", ".join(f"{x:.1f}" for x in rates)
        print(
            f"{variant:14} x{writers}: median {rates[len(rates) // 2]:.1f} lifecycles/s "
            f"(runs {runs}), p99 {p99s[len(p99s) // 2]:.1f} ms, "
            f"cpu ms/command: writers {cpus[len(cpus) // 2]:.2f}, "
            f"server {servers[len(servers) // 2]:.2f}"
        )
    shutil.rmtree(before)


if __name__ == "__main__":
    main()
