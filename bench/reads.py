"""Figures 4-6: projection rebuild, queries (in-process and CLI), verify, on the large store.

All of them use one private copy of the bulk-loaded large store (100k
lifecycles in a full run). A figure whose code has not landed yet reports
itself as not available, with the reason; re-running it once the code is
there fills it in.
"""

from __future__ import annotations

import os
import random
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.context import BenchContext
from bench.stats import CPU_PROBE_LABEL, Figure, Summary, Target, cpu_probe
from bench.workload import FAMILIES, dataset_fingerprint, sqlite_url
from trainledger.adapters.store import open_ledger
from trainledger.adapters.workers import usable_cpus
from trainledger.service.ledger import TrainingLedger

REBUILD_TARGET = 100_000
VERIFY_TARGET = 100_000
LINEAGE_TARGET_MS = 1.0
CLI_TARGET_MS = 300.0
LIST_LIMIT = 50


def large_store(ctx: BenchContext) -> Path:
    """The private copy of the large store that figures 4-6 share."""
    path = ctx.scratch / "large" / "ledger.db"
    if not path.exists():
        ctx.shelf.copy(ctx.sizes.large, path)
    return path


def _open(ctx: BenchContext) -> TrainingLedger:
    return open_ledger(sqlite_url(large_store(ctx)))


def projections_missing(ledger: TrainingLedger) -> str | None:
    if getattr(ledger, "read_model", None) is None:
        return "projections (issue 4): the ledger has no read model"
    return None


def _events_in(ledger: TrainingLedger) -> int:
    return int(ledger.recorder.max_notification_id() or 0)


def rebuild(ctx: BenchContext) -> Figure:
    """4. `projections rebuild` over the large store, in events per second."""
    figure = Figure(
        "rebuild", f"Projection rebuild rate over the {ctx.sizes.large:,}-lifecycle store"
    )
    ledger = _open(ctx)
    try:
        missing = projections_missing(ledger)
        if missing:
            figure.unavailable.append(missing)
            return figure
        events = _events_in(ledger)
        rates: list[float] = []
        cpu: list[float] = []
        probes: list[float] = []
        for i in range(ctx.sizes.heavy_repeats):
            probes += cpu_probe(1)
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            result = ledger.rebuild_projections()
            seconds = time.perf_counter() - start
            cpu.append(_cpu_seconds() - cpu_before)
            applied = int(result.get("eventsApplied", events))
            rates.append(applied / seconds)
            ctx.log(f"rebuild {i + 1}: {applied:,} events in {seconds:.2f} s, {cpu[-1]:.1f} CPU-s")
        summary = figure.add("rebuild", Summary.of(rates, "events/s"))
        figure.add(CPU_ROW, Summary.of(cpu, "CPU-s"))
        figure.add(CPU_PROBE_LABEL, Summary.of(probes, "ms"))
        figure.notes.append(CPU_NOTE)
        figure.targets.append(
            Target(
                f">= {REBUILD_TARGET:,} events/s",
                summary.median >= REBUILD_TARGET,
                f"{summary.median:,.0f} events/s",
            )
        )
        figure.extra["events"] = events
        return figure
    finally:
        ledger.close()


def verify(ctx: BenchContext) -> Figure:
    """6. `verify` over the large store, in events per second."""
    figure = Figure("verify", f"verify rate over the {ctx.sizes.large:,}-lifecycle store")
    ledger = _open(ctx)
    try:
        rates: list[float] = []
        cpu: list[float] = []
        one_pass: list[float] = []
        probes: list[float] = []
        for i in range(ctx.sizes.heavy_repeats):
            probes += cpu_probe(1)
            cpu_before = _cpu_seconds()
            rates.append(_verify_rate(ctx, ledger, f"verify {i + 1}"))
            cpu.append(_cpu_seconds() - cpu_before)
            if i == 0:  # the same check without worker processes, once, for comparison
                default = TrainingLedger.PARALLEL_VERIFY_FROM
                TrainingLedger.PARALLEL_VERIFY_FROM = sys.maxsize
                try:
                    one_pass.append(_verify_rate(ctx, ledger, "verify in one pass"))
                finally:
                    TrainingLedger.PARALLEL_VERIFY_FROM = default
        summary = figure.add("verify", Summary.of(rates, "events/s"))
        figure.add(CPU_ROW, Summary.of(cpu, "CPU-s"))
        figure.add(CPU_PROBE_LABEL, Summary.of(probes, "ms"))
        figure.notes.append(CPU_NOTE)
        figure.add(
            "verify in one pass (no worker processes), one run", Summary.of(one_pass, "events/s")
        )
        figure.notes.append(
            f"verify runs in {min(TrainingLedger.VERIFY_WORKERS, usable_cpus())} worker "
            "processes, one share of the aggregates each: its hash chains and log chain "
            "links, and its share of the views against a replay of it; the one-pass row "
            "is the same check in the calling process alone"
        )
        figure.targets.append(
            Target(
                f">= {VERIFY_TARGET:,} events/s",
                summary.median >= VERIFY_TARGET,
                f"{summary.median:,.0f} events/s",
            )
        )
        figure.extra["events"] = _events_in(ledger)
        return figure
    finally:
        ledger.close()


CPU_ROW = "CPU time of this process and its workers, per run"
CPU_NOTE = (
    "CPU time is the work done, which the wall time divides over the cores; on a shared "
    "machine the same work takes more CPU time while the host is busy, and so does the "
    "CPU probe (the same small Python job before each run: compare it between runs)"
)


def _cpu_seconds() -> float:
    """User and system time of this process and its finished child processes."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _verify_rate(ctx: BenchContext, ledger: TrainingLedger, label: str) -> float:
    start = time.perf_counter()
    result = ledger.verify()
    seconds = time.perf_counter() - start
    if not result["ok"]:
        raise RuntimeError(f"verify failed on the bulk-loaded store: {result}")
    ctx.log(f"{label}: {result['events']:,} events in {seconds:.2f} s")
    return float(result["events"]) / seconds


def sample_checkpoints(path: Path, count: int, seed: int = 7) -> list[str]:
    """Ids of `count` random checkpoints of a store, read from its events table."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT originator_id FROM stored_events WHERE topic LIKE ?",
            ("%Checkpoint.Registered",),
        ).fetchall()
    connection.close()
    ids = [str(UUID(hex=row[0])) for row in rows]
    rng = random.Random(seed)
    return [rng.choice(ids) for _ in range(count)]


def queries(ctx: BenchContext) -> Figure:
    """5a. Query latency in-process on the large store."""
    figure = Figure("queries", f"Query latency in-process at {ctx.sizes.large:,} lifecycles (ms)")
    ledger = _open(ctx)
    try:
        missing = projections_missing(ledger)
        if missing:
            figure.unavailable.append(missing)
            return figure
        start = time.perf_counter()
        applied = ledger.read_model.catch_up() if ledger.read_model else 0
        figure.notes.append(
            f"views caught up first ({applied:,} events in {time.perf_counter() - start:.1f} s, "
            "not timed); every query still catches up (finds nothing new) before answering"
        )
        calls = ctx.sizes.query_calls
        checkpoints = sample_checkpoints(large_store(ctx), calls)
        rng = random.Random(11)
        kinds: dict[str, Callable[[int], Any]] = {
            "lineage": lambda i: ledger.lineage(checkpoints[i]),
            "impact (one dataset)": lambda i: ledger.impact(
                dataset_fingerprint(rng.randrange(1000))
            ),
            f"run list (family, completed, limit {LIST_LIMIT})": lambda i: ledger.list_runs(
                status="completed", family=FAMILIES[i % len(FAMILIES)], limit=LIST_LIMIT
            ),
            f"checkpoint list (family, deployable, limit {LIST_LIMIT})": (
                lambda i: ledger.list_checkpoints(
                    family=FAMILIES[i % len(FAMILIES)], deployable=True, limit=LIST_LIMIT
                )
            ),
            f"eval list (verdict, benchmark, limit {LIST_LIMIT})": lambda i: ledger.list_evals(
                verdict="compare_only", benchmark_id=f"bench-{i % 20}", limit=LIST_LIMIT
            ),
            "stats": lambda i: ledger.stats(),
        }
        latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
        for kind, query in kinds.items():  # warm-up, untimed
            query(0)
            del kind
        probes = cpu_probe(2)
        for i in range(calls):
            for kind, query in kinds.items():
                t0 = time.perf_counter()
                query(i)
                latencies[kind].append((time.perf_counter() - t0) * 1000)
        probes += cpu_probe(2)
        for kind, values in latencies.items():
            figure.add(kind, Summary.of(values, "ms", with_p99=True))
        figure.add(CPU_PROBE_LABEL, Summary.of(probes, "ms"))
        lineage = figure.rows[0][1]
        figure.targets.append(
            Target(
                f"lineage median < {LINEAGE_TARGET_MS:g} ms",
                lineage.median < LINEAGE_TARGET_MS,
                f"{lineage.median:.3f} ms (p99 {lineage.p99 or 0:.3f} ms)",
            )
        )
        impact = ledger.impact(dataset_fingerprint(0))
        figure.extra["impactRunsPerDataset"] = len(impact.get("runs", []))
        figure.notes.append(
            f"each kind called {calls:,} times, interleaved; lists are one page of "
            f"{LIST_LIMIT}; a dataset has ~{ctx.sizes.large // 1000:,} runs"
        )
        return figure
    finally:
        ledger.close()


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "trainledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainledger.cli"]


def _error_message(output: str) -> str:
    """The CLI's one-line error (stderr's `error: ...`), or the start of its output."""
    for line in output.splitlines():
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return " ".join(output.split())[:200]


def _timed_process(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    completed = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, completed.returncode, completed.stderr + completed.stdout[:2000]


IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def import_breakdown(
    env: dict[str, str], cwd: Path, module: str = "trainledger.cli.main", *, by_package: bool = True
) -> dict[str, float]:
    """Self import time (ms) by top-level package (or by module) of `import M`.

    From `python -X importtime`; a module's self time includes building the
    classes it defines (pydantic models build their validators then).
    """
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    totals: dict[str, float] = {}
    for line in completed.stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            name = match.group(4).split(".")[0] if by_package else match.group(4)
            totals[name] = totals.get(name, 0.0) + int(match.group(1)) / 1000
    return totals


def cli(ctx: BenchContext) -> Figure:
    """5b. `trainledger --json lineage ID` end to end in a fresh process."""
    figure = Figure(
        "cli",
        f"CLI end to end at {ctx.sizes.large:,} lifecycles: fresh process, wall time (ms)",
    )
    path = large_store(ctx)
    ledger = open_ledger(sqlite_url(path))
    try:
        if ledger.read_model is not None:
            ledger.read_model.catch_up()
    finally:
        ledger.close()
    checkpoints = sample_checkpoints(path, ctx.sizes.cli_runs)
    # From the repository root, as a developer runs it (`cli` importable from cwd).
    cwd = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRAINLEDGER_ACTOR": "bench"}
    env.pop("TRAINLEDGER_STORE", None)
    command = [*_cli_command(), "--store", sqlite_url(path), "--json", "lineage"]
    _, code, output = _timed_process([*command, checkpoints[0]], env, cwd)
    reason = _error_message(output)
    contenders: dict[str, Callable[[int], list[str]]] = {
        "python -c pass": lambda i: [sys.executable, "-c", "pass"],
        "python -c 'import cli.main' (imports alone)": lambda i: [
            sys.executable,
            "-c",
            "import cli.main",
        ],
    }
    if code == 0:
        contenders["trainledger --json lineage ID"] = lambda i: [*command, checkpoints[i]]
    else:
        figure.unavailable.append(f"`trainledger --json lineage` (issue 4): exit {code}, {reason}")
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(ctx.sizes.cli_runs):
        for name, argv in contenders.items():
            elapsed, code, output = _timed_process(argv(i), env, cwd)
            if code != 0:
                raise RuntimeError(f"{name} failed ({code}): {output[-500:]}")
            timings[name].append(elapsed)
    for name, values in timings.items():
        figure.add(name, Summary.of(values, "ms", with_p99=True))
    lineage = figure.row("trainledger --json lineage ID")
    if lineage is not None:
        figure.targets.append(
            Target(
                f"median < {CLI_TARGET_MS:g} ms",
                lineage.median < CLI_TARGET_MS,
                f"{lineage.median:.0f} ms",
            )
        )
    for by_package in (True, False):
        breakdowns = [import_breakdown(env, cwd, by_package=by_package) for _ in range(3)]
        names = {name for b in breakdowns for name in b}
        medians = {n: statistics.median(b.get(n, 0.0) for b in breakdowns) for n in names}
        top = sorted(medians.items(), key=lambda item: -item[1])[:12]
        key = "importSelfTimeMsByPackage" if by_package else "importSelfTimeMsByModule"
        figure.extra[key] = {name: round(ms, 1) for name, ms in top}
        figure.notes.append(
            f"import of `cli.main`, self time by {'package' if by_package else 'module'} "
            "(python -X importtime, median of 3): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in top[:8])
            + f"; total {sum(medians.values()):.0f} ms"
        )
    return figure
