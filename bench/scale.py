"""`make bench-scale` (= `python -m bench.scale`): a million lifecycles (issue 19, item 3).

One SQLite store (synchronous=FULL) is bulk-loaded through growing sizes
(bench/workload.py: the domain's own aggregates and events, hundreds of
lifecycles per append); at each size the in-process write rate is measured
(one window of ordinary commands), for the plot of rate against history
size. At the last size:

- the write rate there and on a copy of the 1k store, in alternating rounds;
- query latency in-process (lineage, impact, lists, stats: median and p99);
- `projections rebuild` and `verify` in a fresh CLI process each: events/s,
  and the peak resident memory of the largest process (the CLI or a worker);
- bytes on disk per event, for the log (events, chain links, reservations,
  seals, with their indexes) and for the views (SQLite's dbstat).

Results go to `bench/scale.json`, `bench/SCALE.md` and `bench/scale_rate.png`
(bench/scale_report.py). `--size N` runs a smaller
store (the sizes up to N), e.g. as a smoke run. `--keep DIR` leaves the
loaded stores (and the growth figures) in DIR; `--reuse DIR` measures such
stores again without loading them, keeping the growth figures of the run
that loaded them (a re-measure after a change to the code, ~10 minutes
instead of ~30).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.reads import sample_checkpoints
from bench.stats import Summary, cpu_probe
from bench.workload import (
    FAMILIES,
    bulk_load,
    copy_sqlite,
    dataset_fingerprint,
    run_lifecycle,
    sqlite_url,
)
from trainledger.adapters.store import open_ledger

BENCH_DIR = Path(__file__).resolve().parent
SIZES = (1_000, 10_000, 100_000, 300_000, 1_000_000)
WINDOW_S = 2.0
ROUNDS = 3
QUERY_CALLS = 300
LIST_LIMIT = 50
GROWTH = "growth.json"
Json = dict[str, Any]


def log(message: str, started: float = time.perf_counter()) -> None:
    sys.stderr.write(f"[scale {time.perf_counter() - started:7.1f}s] {message}\n")
    sys.stderr.flush()


def write_rate(url: str, first: int, seconds: float = WINDOW_S) -> float:
    """Lifecycles/s through the Python API, after 3 untimed ones."""
    ledger = open_ledger(url)
    try:
        for n in range(first, first + 3):
            run_lifecycle(ledger, n)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run_lifecycle(ledger, first + 3 + count)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        ledger.close()


def query_latencies(path: Path) -> dict[str, Summary]:
    ledger = open_ledger(sqlite_url(path))
    try:
        assert ledger.read_model is not None
        ledger.read_model.catch_up()
        checkpoints = sample_checkpoints(path, QUERY_CALLS)
        rng = random.Random(11)
        kinds: dict[str, Callable[[int], Any]] = {
            "lineage": lambda i: ledger.lineage(checkpoints[i]),
            "impact (one dataset)": lambda i: ledger.impact(
                dataset_fingerprint(rng.randrange(1000))
            ),
            "run list (family, completed, limit 50)": lambda i: ledger.list_runs(
                status="completed", family=FAMILIES[i % 4], limit=LIST_LIMIT
            ),
            "checkpoint list (family, deployable, limit 50)": lambda i: ledger.list_checkpoints(
                family=FAMILIES[i % 4], deployable=True, limit=LIST_LIMIT
            ),
            "eval list (verdict, benchmark, limit 50)": lambda i: ledger.list_evals(
                verdict="compare_only", benchmark_id=f"bench-{i % 20}", limit=LIST_LIMIT
            ),
            "stats": lambda i: ledger.stats(),
        }
        for query in kinds.values():
            query(0)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(QUERY_CALLS):
            for kind, query in kinds.items():
                start = time.perf_counter()
                query(i)
                times[kind].append((time.perf_counter() - start) * 1000)
        return {k: Summary.of(v, "ms", with_p99=True) for k, v in times.items()}
    finally:
        ledger.close()


PEAK = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "out = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'code': out.returncode, 'seconds': time.perf_counter() - t,\n"
    "  'peakKiB': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,\n"
    "  'stdout': out.stdout, 'stderr': out.stderr[-500:]}))\n"
)


def cli_run(url: str, *args: str) -> Json:
    """A CLI command in a fresh process: wall time, its answer, the peak RSS of the
    largest process of its tree (itself or a worker it waited for)."""
    command = [str(Path(sys.executable).with_name("trainledger")), "--store", url, "--json", *args]
    env = {**os.environ, "TRAINLEDGER_ACTOR": "bench"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK, *command], capture_output=True, text=True, env=env, check=True
    )
    result: Json = json.loads(out.stdout)
    if result["code"] != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result['stderr']}")
    result["answer"] = json.loads(result.pop("stdout"))
    return result


def disk_bytes(path: Path) -> dict[str, int]:
    """Bytes of the log's tables and of the views' tables, indexes included."""
    with sqlite3.connect(path) as connection:
        owners = dict(connection.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
        sizes = connection.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    connection.close()
    totals = {"log": 0, "views": 0, "other": 0}
    for name, size in sizes:
        table = owners.get(name, name)
        if table.startswith("view_"):
            totals["views"] += int(size)
        elif table in ("stored_events",) or table.startswith("ledger_"):
            totals["log"] += int(size)
        else:
            totals["other"] += int(size)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--size", type=int, default=SIZES[-1], help="the last history size")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results go")
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--keep", type=Path, help="leave the loaded stores in this new directory")
    kept.add_argument("--reuse", type=Path, help="measure the stores --keep left here again")
    args = parser.parse_args(argv)
    sizes = [s for s in SIZES if s < args.size] + [args.size]
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        scratch = args.keep
    elif args.reuse is not None:
        scratch = args.reuse
        if not (scratch / GROWTH).is_file():
            parser.error(f"{scratch}: no stores left there by --keep")
    else:
        scratch = Path(tempfile.mkdtemp(prefix="trainledger-scale-"))
    started = datetime.now(UTC)
    results: Json = {"generatedAt": None, "command": "python -m bench.scale", "sizes": sizes}
    try:
        master, small = scratch / "ledger.db", scratch / "small.db"
        url = sqlite_url(master)
        loaded, extra = 0, 90_000_000
        growth: list[Json] = []
        if args.reuse is not None:
            earlier = json.loads((scratch / GROWTH).read_text())
            growth, sizes, extra = earlier["growth"], earlier["sizes"], earlier["extra"]
            results["sizes"] = sizes
            results["growthMeasuredAt"] = earlier["measuredAt"]
            # The next reuse numbers its lifecycles past this one's.
            (scratch / GROWTH).write_text(json.dumps({**earlier, "extra": extra + 1_000_000}))
        for size in sizes if args.reuse is None else ():
            ledger = open_ledger(url)
            start = time.perf_counter()
            bulk_load(ledger, range(loaded, size))
            ledger.close()
            seconds = time.perf_counter() - start
            log(f"bulk-loaded {size - loaded:,} lifecycles in {seconds:.1f} s, store at {size:,}")
            loaded = size
            if size == sizes[0]:
                copy_sqlite(master, small)
            rate = write_rate(url, extra)
            extra += 10_000
            growth.append({"lifecycles": size, "rate": rate, "loadSeconds": seconds})
            log(f"write rate at {size:,}: {rate:.1f} lifecycles/s")
        results["growth"] = growth
        if args.keep is not None:
            measured = datetime.now(UTC).isoformat(timespec="seconds")
            earlier = {"growth": growth, "sizes": sizes, "measuredAt": measured}
            (scratch / GROWTH).write_text(json.dumps({**earlier, "extra": extra + 1_000_000}))
        rates: dict[str, list[float]] = {"small": [], "large": []}
        for r in range(ROUNDS):
            for which in ("small", "large") if r % 2 == 0 else ("large", "small"):
                target = small if which == "small" else master
                rates[which].append(write_rate(sqlite_url(target), extra))
                extra += 10_000
        ratios = [b / a for a, b in zip(rates["small"], rates["large"], strict=True)]
        results["writeRate"] = {
            "small": Summary.of(rates["small"], "lifecycles/s").to_json(),
            "large": Summary.of(rates["large"], "lifecycles/s").to_json(),
            "ratio": Summary.of(ratios, "x").to_json(),
        }
        log(f"write rate {sizes[0]:,} vs {sizes[-1]:,}: {rates}")
        results["queries"] = {k: s.to_json() for k, s in query_latencies(master).items()}
        log(
            "queries: " + ", ".join(f"{k} {v['median']:.2f}" for k, v in results["queries"].items())
        )
        results["cpuProbeMs"] = cpu_probe(2)
        rebuild = cli_run(url, "projections", "rebuild")
        events = int(rebuild["answer"].get("eventsApplied", 0))
        verify = cli_run(url, "verify")
        if not verify["answer"].get("ok"):
            raise RuntimeError(f"verify failed: {verify['answer']}")
        results["rebuild"] = {
            "events": events,
            "seconds": rebuild["seconds"],
            "eventsPerSecond": events / rebuild["seconds"],
            "peakMiB": rebuild["peakKiB"] / 1024,
        }
        results["verify"] = {
            "events": int(verify["answer"]["events"]),
            "seconds": verify["seconds"],
            "eventsPerSecond": int(verify["answer"]["events"]) / verify["seconds"],
            "peakMiB": verify["peakKiB"] / 1024,
        }
        log(f"rebuild {results['rebuild']}, verify {results['verify']}")
        total = int(verify["answer"]["events"])
        disk = disk_bytes(master)
        results["disk"] = {
            **disk,
            "events": total,
            "logBytesPerEvent": disk["log"] / total,
            "viewBytesPerEvent": disk["views"] / total,
        }
        results["cpus"] = len(os.sched_getaffinity(0))
        results["peakMiBThisProcess"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(scratch, ignore_errors=True)
    results["generatedAt"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["startedAt"] = started.isoformat(timespec="seconds")
    if args.size != SIZES[-1]:
        results["command"] += f" --size {args.size}"
    if args.reuse is not None:
        results["command"] += " --reuse DIR"
    from bench.scale_report import write_scale

    for note in write_scale(results, args.out):
        log(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
