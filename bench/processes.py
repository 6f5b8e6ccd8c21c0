"""Figures 7 and 8: the trainer adapter's overhead, and concurrent writer processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.context import BenchContext
from bench.stats import Figure, Summary, Target, percentile
from bench.workload import SAMPLE_COUNT, LifecycleParams, bulk_load, run_lifecycle, sqlite_url
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger

TRAINER_TARGET_MS = 50.0
INSTANT_TRAINER = Path(__file__).resolve().with_name("instant_trainer.py")
REPO = Path(__file__).resolve().parent.parent
SQLITE_WRITERS = (1, 2, 4)
POSTGRES_WRITERS = (1, 4, 8)


def _create_run(ledger: TrainingLedger, n: int, output_dir: Path) -> str:
    p = LifecycleParams(n)
    request = dataclasses.replace(p.request(), output_dir=str(output_dir))
    created = ledger.create_experiment(
        request, dataset_fingerprint=p.dataset, sample_count=SAMPLE_COUNT, actor="bench"
    )
    run_id: str = created["trainRunId"]
    return run_id


def trainer(ctx: BenchContext) -> Figure:
    """7. `train` with a trainer that returns at once, minus that trainer's own run time."""
    figure = Figure("trainer", "Trainer adapter overhead: `train` minus the trainer's own run")
    ledger = open_ledger(sqlite_url(ctx.workdir("trainer") / "ledger.db"))
    try:
        if not hasattr(ledger, "train"):
            figure.unavailable.append("trainer adapter (issue 3): TrainingLedger has no train()")
            return figure
        spec_dir = ctx.workdir("trainer-spec")
        train_ms: list[float] = []
        alone_ms: list[float] = []
        for i in range(ctx.sizes.trainer_runs + 1):
            output_dir = ctx.workdir(f"trainer-out/{i}")
            run_id = _create_run(ledger, i, output_dir)
            start = time.perf_counter()
            outcome = ledger.train(run_id, trainer_script=str(INSTANT_TRAINER), actor="bench")
            elapsed = (time.perf_counter() - start) * 1000
            if outcome.get("status") != "completed":
                raise RuntimeError(f"instant trainer did not complete the run: {outcome}")
            # The same trainer alone, on the same spec, same interpreter.
            spec_path = spec_dir / "spec.json"
            spec_path.write_text(ledger.get_run(run_id).spec.model_dump_json(indent=2))
            alone_start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(INSTANT_TRAINER),
                    "--spec",
                    str(spec_path),
                    "--output-dir",
                    str(output_dir),
                ],
                cwd=output_dir,
                capture_output=True,
                check=True,
                timeout=60,
            )
            alone = (time.perf_counter() - alone_start) * 1000
            if i > 0:  # the first of each is a warm-up
                train_ms.append(elapsed)
                alone_ms.append(alone)
        overheads = [t - a for t, a in zip(train_ms, alone_ms, strict=True)]
        figure.add("train (whole call)", Summary.of(train_ms, "ms", with_p99=True))
        figure.add("instant trainer alone", Summary.of(alone_ms, "ms", with_p99=True))
        overhead = figure.add("overhead (pairwise difference)", Summary.of(overheads, "ms"))
        figure.targets.append(
            Target(
                f"overhead < {TRAINER_TARGET_MS:g} ms",
                overhead.median < TRAINER_TARGET_MS,
                f"{overhead.median:.1f} ms",
            )
        )
        figure.notes.append(
            "each `train` is followed by a run of the same trainer alone on the same spec; "
            "the overhead is the median of the pairwise differences (start, spec file, "
            "supervision, result parsing and checks, two appends)"
        )
        return figure
    finally:
        ledger.close()


# --- concurrent writers ----------------------------------------------------------


def _round(url: str, writers: int, seconds: float, first: int) -> tuple[float, float]:
    """One window of `writers` processes: (lifecycles/s, p99 command latency in ms)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.writer_process", url, str(first + w * 1_000_000)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for w in range(writers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if line != "ready":
                _, err = process.communicate(timeout=60)
                raise RuntimeError(f"writer did not start: {_last_line(err)}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"go {seconds}\n")
            process.stdin.flush()
        reports: list[dict[str, Any]] = []
        for process in processes:
            out, err = process.communicate(timeout=seconds + 120)
            if process.returncode != 0:
                raise RuntimeError(f"writer failed ({process.returncode}): {_last_line(err)}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    lifecycles = sum(r["lifecycles"] for r in reports)
    latencies = [latency for r in reports for latency in r["latencies"]]
    return lifecycles / seconds, percentile(latencies, 99) * 1000


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _measure_backend(
    ctx: BenchContext,
    figure: Figure,
    backend: str,
    writer_counts: tuple[int, ...],
    fresh_store: Iterator[str],
) -> None:
    rates: dict[int, list[float]] = {n: [] for n in writer_counts}
    p99s: dict[int, list[float]] = {n: [] for n in writer_counts}
    for r in range(ctx.sizes.rounds):
        shift = r % len(writer_counts)
        for writers in writer_counts[shift:] + writer_counts[:shift]:
            url = next(fresh_store)
            rate, p99 = _round(url, writers, ctx.sizes.concurrent_seconds, 10_000_000)
            rates[writers].append(rate)
            p99s[writers].append(p99)
            ctx.log(f"{backend} {writers} writer(s): {rate:,.1f} lifecycles/s, p99 {p99:.1f} ms")
    for writers in writer_counts:
        label = f"{backend}, {writers} process(es)"
        figure.add(f"{label}: total", Summary.of(rates[writers], "lifecycles/s"))
        figure.add(f"{label}: p99 command latency", Summary.of(p99s[writers], "ms"))


def _sqlite_stores(ctx: BenchContext) -> Iterator[str]:
    directory = ctx.workdir("concurrent")
    for i in range(1_000_000):
        path = directory / f"round-{i}" / "ledger.db"
        ctx.shelf.copy(ctx.sizes.concurrent_history, path)
        yield sqlite_url(path)


@contextlib.contextmanager
def _postgres_cluster() -> Iterator[Any]:
    """A throwaway server via tests/postgres_cluster.py, restarted with durable settings."""
    from tests import postgres_cluster as pg

    bin_dir = pg.find_binaries()
    if bin_dir is None:
        raise LookupError("PostgreSQL binaries (initdb, pg_ctl) not found")
    cluster = pg.start_cluster(bin_dir)
    try:
        # The test cluster runs with fsync off; the benchmark wants it durable,
        # like SQLite with synchronous=FULL.
        cluster._run(
            "pg_ctl",
            "restart",
            "--pgdata",
            str(cluster.data_dir),
            "--log",
            str(cluster.root / "server.log"),
            "--wait",
            "--timeout=60",
            "-o",
            " ".join(
                [
                    f"-p {cluster.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={cluster.root}",
                    "-c fsync=on",
                    "-c synchronous_commit=on",
                    "-c max_connections=200",
                ]
            ),
        )
        yield cluster
    finally:
        cluster.stop()


def _postgres_stores(ctx: BenchContext, cluster: Any) -> Iterator[str]:
    while True:
        url = cluster.url(cluster.create_database())
        ledger = open_ledger(url)
        try:
            bulk_load(ledger, range(ctx.sizes.concurrent_history))
        finally:
            ledger.close()
        yield url


def _postgres_problem(cluster: Any) -> str | None:
    """Why the ledger cannot run on the cluster yet (issue 5), or None."""
    try:
        ledger = open_ledger(cluster.url(cluster.create_database()))
        try:
            run_lifecycle(ledger, 0)
        finally:
            ledger.close()
    except Exception as error:
        return f"the ledger on PostgreSQL (issue 5): {_last_line(str(error))}"
    return None


def concurrent(ctx: BenchContext) -> Figure:
    """8. Several writer processes on one store: total lifecycles/s and p99 latency."""
    figure = Figure("concurrent", "Concurrent writer processes on one store")
    ctx.shelf.prepare([ctx.sizes.concurrent_history])
    figure.notes.append(
        f"each window {ctx.sizes.concurrent_seconds:g} s on a store of "
        f"{ctx.sizes.concurrent_history:,} lifecycles (fresh per window); p99 over every "
        "command of every process in the window; every process writes its own lifecycles"
    )
    _measure_backend(ctx, figure, "SQLite", SQLITE_WRITERS, _sqlite_stores(ctx))
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(_postgres_cluster())
        except (ImportError, LookupError, RuntimeError, OSError) as error:
            figure.unavailable.append(f"PostgreSQL server: {type(error).__name__}: {error}")
            return figure
        problem = _postgres_problem(cluster)
        if problem is not None:
            figure.unavailable.append(problem)
            return figure
        figure.notes.append(
            "PostgreSQL: a throwaway local cluster (tests/postgres_cluster.py) restarted "
            "with fsync=on, synchronous_commit=on"
        )
        _measure_backend(
            ctx, figure, "PostgreSQL", POSTGRES_WRITERS, _postgres_stores(ctx, cluster)
        )
    return figure
