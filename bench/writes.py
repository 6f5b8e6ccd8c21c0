"""Figures 1-3: lifecycles per second, measured side by side.

Every contender (a store of some kind at some history size) runs in every
round, in an order rotated each round, so drift of the shared machine falls
on all of them alike. A round restores the contender's store to its size
(small stores are copied afresh; a large one is copied once, as a window's
few hundred lifecycles are under 1% of it), runs a few untimed lifecycles to
warm up, then times as many lifecycles as fit in the window.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Protocol

import orjson

from bench.context import BenchContext
from bench.floor import FloorApp, floor_env
from bench.json_registry import REGISTRY_FILE, JsonFileRegistry, bulk_registry
from bench.json_registry import eval_summary as json_eval_summary
from bench.json_registry import run_params as json_run_params
from bench.stats import Figure, Summary, Target
from bench.workload import (
    COMMANDS_PER_LIFECYCLE,
    SAMPLE_COUNT,
    LifecycleParams,
    copy_sqlite,
    run_lifecycle,
    sqlite_url,
    template_spec,
)
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger

WARMUP_LIFECYCLES = 3
RESTORE_BELOW = 20_000
"""Stores smaller than this are restored to their size before every round."""


class Contender(Protocol):
    label: str
    history: int

    def setup(self) -> None: ...

    def lifecycle(self, n: int) -> None: ...

    def teardown(self) -> None: ...


class LedgerContender:
    """trainledger on a SQLite file (synchronous=FULL), through the Python API."""

    def __init__(
        self, ctx: BenchContext, history: int, *, synchronous: str = "full", label: str = ""
    ) -> None:
        self.ctx = ctx
        self.history = history
        self.synchronous = synchronous
        self.label = label or f"ledger @ {history:,}"
        self.path = ctx.workdir(f"ledger-{history}-{synchronous}") / "ledger.db"
        self.ledger: TrainingLedger | None = None
        self.restored = False

    def setup(self) -> None:
        if not self.restored or self.history < RESTORE_BELOW:
            self.ctx.shelf.copy(self.history, self.path)
            self.restored = True
        self.ledger = open_ledger(f"{sqlite_url(self.path)}?synchronous={self.synchronous}")

    def lifecycle(self, n: int) -> None:
        assert self.ledger is not None
        run_lifecycle(self.ledger, n)

    def teardown(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


class JsonContender:
    """The replaced registry's design (see bench.json_registry)."""

    def __init__(
        self, ctx: BenchContext, history: int, *, fsync_data: bool = False, label: str = ""
    ) -> None:
        self.history = history
        self.fsync_data = fsync_data
        self.label = label or f"json registry @ {history:,}"
        name = f"json-{history}{'-fsync' if fsync_data else ''}"
        self.state_dir = ctx.workdir(name)
        lifecycles = [
            (p.family, p.dataset, p.benchmark, p.verdict, p.artifact_path)
            for p in map(LifecycleParams, range(history))
        ]
        self.initial = orjson.dumps(bulk_registry(lifecycles), option=orjson.OPT_INDENT_2)
        self.registry = JsonFileRegistry(self.state_dir, fsync_data=fsync_data)

    def setup(self) -> None:
        path = self.state_dir / REGISTRY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.initial)

    def lifecycle(self, n: int) -> None:
        p = LifecycleParams(n)
        registry = self.registry
        run_id = registry.register_training_run(json_run_params(p.family, p.dataset, n))[
            "trainRunId"
        ]
        registry.update_run_status(run_id, "running")
        checkpoint_id = registry.register_checkpoint(run_id, p.family, p.artifact_path)[
            "checkpointId"
        ]
        registry.update_run_status(run_id, "completed")
        registry.attach_eval_summary(
            checkpoint_id, json_eval_summary(checkpoint_id, p.family, p.benchmark, p.verdict)
        )
        registry.mark_checkpoint_deployable(checkpoint_id)

    def teardown(self) -> None:
        pass


class FloorContender:
    """Bare eventsourcing aggregates on the library's SQLite recorder."""

    def __init__(self, ctx: BenchContext, history: int) -> None:
        self.history = history
        self.label = f"eventsourcing floor @ {history:,}"
        directory = ctx.workdir(f"floor-{history}")
        self.snapshot = directory / "snapshot.db"
        self.path = directory / "floor.db"
        self.app: FloorApp | None = None
        self.run_ids: dict[int, object] = {}
        builder = FloorApp(env=floor_env(self.snapshot))
        try:
            for start in range(0, history, 500):
                builder.bulk_load(
                    (self._spec(n), p.family, p.artifact_path, self._eval(p))
                    for n in range(start, min(history, start + 500))
                    for p in [LifecycleParams(n)]
                )
        finally:
            builder.close()

    @staticmethod
    def _spec(n: int) -> dict[str, object]:
        p = LifecycleParams(n)
        spec: dict[str, object] = template_spec(p.family, p.dataset).model_dump(mode="json")
        return spec

    @staticmethod
    def _eval(p: LifecycleParams) -> dict[str, object]:
        return {**p.eval_summary(""), "delta": 0.25}

    def setup(self) -> None:
        copy_sqlite(self.snapshot, self.path)
        self.app = FloorApp(env=floor_env(self.path))

    def lifecycle(self, n: int) -> None:
        assert self.app is not None
        p = LifecycleParams(n)
        app = self.app
        run_id = app.create(self._spec(n), SAMPLE_COUNT)
        app.start(run_id)
        checkpoint_id = app.register_checkpoint(run_id, p.family, p.artifact_path)
        app.complete(run_id)
        app.attach_eval(checkpoint_id, {**self._eval(p), "checkpointId": str(checkpoint_id)})
        app.mark_deployable(checkpoint_id)

    def teardown(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None


def fsync_probe(directory: Path, count: int = 20) -> list[float]:
    """Milliseconds of `count` fsyncs after 4 KiB appends: how busy the disk is now."""
    path = directory / "fsync-probe"
    durations: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            durations.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return durations


FSYNC_LABEL = "disk probe: fsync after a 4 KiB append"


def interleave(ctx: BenchContext, contenders: list[Contender]) -> dict[str, list[float]]:
    """Lifecycles/s of each contender in each round (see the module docstring).

    Between windows the disk's fsync latency is probed (`FSYNC_LABEL`, in ms):
    every command is one durable commit, so that latency bounds the rates.
    """
    rounds, window = ctx.sizes.rounds, ctx.sizes.window_seconds
    rates: dict[str, list[float]] = {c.label: [] for c in contenders}
    rates[FSYNC_LABEL] = []
    probe_dir = ctx.workdir("fsync-probe")
    numbers = {c.label: c.history for c in contenders}
    for r in range(rounds):
        shift = r % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            contender.setup()
            try:
                for _ in range(WARMUP_LIFECYCLES):
                    contender.lifecycle(numbers[contender.label])
                    numbers[contender.label] += 1
                count = 0
                start = time.perf_counter()
                while True:
                    contender.lifecycle(numbers[contender.label])
                    numbers[contender.label] += 1
                    count += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= window:
                        break
            finally:
                contender.teardown()
            rates[contender.label].append(count / elapsed)
            rates[FSYNC_LABEL] += fsync_probe(probe_dir)
        summary = (
            ", ".join(f"{c.label} {rates[c.label][-1]:,.1f}/s" for c in contenders)
            + f"; fsync median {statistics.median(rates[FSYNC_LABEL]):.2f} ms"
        )
        ctx.log(f"round {r + 1}/{rounds}: {summary}")
    return rates


def _rates_figure(figure: Figure, rates: dict[str, list[float]]) -> None:
    for label, values in rates.items():
        if label == FSYNC_LABEL:
            figure.add(label, Summary.of(values, "ms", with_p99=True))
        else:
            figure.add(label, Summary.of(values, "lifecycles/s"))


def _paired_ratio(
    figure: Figure, rates: dict[str, list[float]], numerator: str, denominator: str
) -> Summary:
    """numerator/denominator round by round (measured minutes apart at most), as a row."""
    ratios = [a / b for a, b in zip(rates[numerator], rates[denominator], strict=True) if b > 0]
    return figure.add(f"ratio {numerator} / {denominator}, per round", Summary.of(ratios, "x"))


def write_path(ctx: BenchContext) -> Figure:
    """1. Lifecycles/s through the Python API at growing history sizes."""
    figure = Figure(
        "write_path",
        "Write path: full lifecycles/s through the Python API (SQLite, synchronous=FULL)",
    )
    sizes = ctx.sizes.write_path
    ctx.shelf.prepare(sizes)
    contenders: list[Contender] = [LedgerContender(ctx, size) for size in sizes]
    rates = interleave(ctx, contenders)
    _rates_figure(figure, rates)
    ratio = _paired_ratio(figure, rates, contenders[-1].label, contenders[0].label)
    figure.targets.append(
        Target(
            f"rate at {sizes[-1]:,} >= 0.8 x rate at {sizes[0]:,}",
            ratio.median >= 0.8,
            f"{ratio.median:.2f} x (per-round ratios {ratio.minimum:.2f}-{ratio.maximum:.2f})",
        )
    )
    figure.extra["historySizes"] = list(sizes)
    figure.extra["commandsPerLifecycle"] = COMMANDS_PER_LIFECYCLE
    figure.notes.append(
        f"a lifecycle is {COMMANDS_PER_LIFECYCLE} commands, each its own transaction: "
        "create, start, register checkpoint, complete, attach eval, mark deployable"
    )
    return figure


def comparator(ctx: BenchContext) -> Figure:
    """2. The ledger against the replaced JSON-file registry, side by side."""
    figure = Figure(
        "comparator", "Against the replaced registry's design (one JSON file under a lock file)"
    )
    sizes = ctx.sizes.comparator
    ctx.shelf.prepare(sizes)
    largest = sizes[-1]
    contenders: list[Contender] = []
    for size in sizes:
        contenders += [LedgerContender(ctx, size), JsonContender(ctx, size)]
    contenders.append(
        JsonContender(
            ctx, largest, fsync_data=True, label=f"json registry + data fsync @ {largest:,}"
        )
    )
    contenders.append(
        LedgerContender(
            ctx, largest, synchronous="normal", label=f"ledger, synchronous=normal @ {largest:,}"
        )
    )
    # The same commits with almost none of the ledger's code: what any ledger that
    # makes each command durable before it returns can reach on this host.
    floor_contender = FloorContender(ctx, largest)
    contenders.append(floor_contender)
    rates = interleave(ctx, contenders)
    _rates_figure(figure, rates)
    ledger_label = f"ledger @ {largest:,}"
    json_label = f"json registry @ {largest:,}"
    ratio = _paired_ratio(figure, rates, ledger_label, json_label)
    fsync_ratio = _paired_ratio(
        figure, rates, ledger_label, f"json registry + data fsync @ {largest:,}"
    )
    floor_ratio = _paired_ratio(figure, rates, floor_contender.label, json_label)
    figure.targets.append(
        Target(
            f"ledger >= 25 x json registry at {largest:,} lifecycles",
            ratio.median >= 25,
            f"{ratio.median:.1f} x (per-round ratios {ratio.minimum:.1f}-{ratio.maximum:.1f})",
        )
    )
    json_seed = figure.row(f"json registry @ {largest:,}")
    assert json_seed is not None
    writes_per_second = json_seed.median * COMMANDS_PER_LIFECYCLE
    figure.extra["jsonWritesPerSecondAtLargest"] = writes_per_second
    figure.notes.append(
        "json registry = the seed's design as written (fsyncs its lock file, not the data): "
        f"{writes_per_second:,.0f} writes/s at {largest:,}; with a data fsync before the "
        f"rename the ledger is {fsync_ratio.median:.1f} x it"
    )
    figure.notes.append(
        "ledger, synchronous=normal (no fsync at commit; not the default) shows what the "
        "per-command fsync costs on this disk: compare the disk probe row"
    )
    figure.notes.append(
        "eventsourcing floor = figure 3's bare aggregates, one durable commit a command like "
        f"the ledger: at {floor_ratio.median:.1f} x the json registry it bounds this ratio on "
        "this host (the registry is CPU-bound, the ledger fsync-bound, so a faster CPU "
        "lowers the ratio)"
    )
    return figure


def floor(ctx: BenchContext) -> Figure:
    """3. The ledger against bare eventsourcing aggregates with no ledger logic."""
    figure = Figure("floor", "Against the library's floor (bare eventsourcing aggregates)")
    size = ctx.sizes.floor
    ctx.shelf.prepare([size])
    floor_contender = FloorContender(ctx, size)
    ledger_contender = LedgerContender(ctx, size)
    rates = interleave(ctx, [ledger_contender, floor_contender])
    _rates_figure(figure, rates)
    ratio = _paired_ratio(figure, rates, ledger_contender.label, floor_contender.label)
    figure.targets.append(
        Target(
            "ledger keeps >= 60% of the floor's rate",
            ratio.median >= 0.6,
            f"{ratio.median:.0%} (per-round {ratio.minimum:.0%}-{ratio.maximum:.0%})",
        )
    )
    return figure
