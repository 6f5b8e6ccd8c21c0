"""Figure 9: promotion and shadow (SPEC §9) with many observations of one checkpoint.

Two SQLite stores, each with one deployable checkpoint, bulk-loaded with
settled shadow observations of it (the domain's own `route` and `settle`,
hundreds saved per append, as bench/workload.py loads lifecycles): one with
few, one with many. In alternating rounds, each store (a fresh copy) takes as
many route + complete pairs through the Python API as fit in a window; then
`shadow stats` and `promotion evaluate` are timed on both, interleaved.
"""

from __future__ import annotations

import time
from pathlib import Path
from uuid import uuid4

from bench.context import BenchContext
from bench.stats import Figure, Summary, Target
from bench.workload import copy_sqlite, run_lifecycle, sqlite_url
from trainledger.adapters.store import open_ledger
from trainledger.domain.model import LedgerAggregate, command_context
from trainledger.domain.shadow_stats import SHADOW_OUTCOMES
from trainledger.service.ledger import TrainingLedger

PROFILE = "local-reader"
LIFECYCLE = 4
"""A lifecycle whose family suits the profile and whose eval passes (bench/workload.py)."""
RATE_RATIO_TARGET = 0.8
QUERY_TARGET_MS = 5.0
ACTOR = "bench"


def load_observations(ledger: TrainingLedger, checkpoint_id: str, count: int) -> None:
    """`count` settled observations of the checkpoint, 500 per append."""
    from trainledger.domain.shadow import ShadowObservation

    checkpoint = ledger.unit_of_work.get_checkpoint(checkpoint_id)
    batch: list[LedgerAggregate] = []
    with command_context("bench-loader"):
        for n in range(count):
            observation = ShadowObservation.route(uuid4(), checkpoint, PROFILE, f"task-{n}")
            observation.settle(SHADOW_OUTCOMES[n % len(SHADOW_OUTCOMES)])
            batch.append(observation)
            if len(batch) == 500 or n == count - 1:
                ledger.save(*batch)
                batch.clear()


def build_store(path: Path, observations: int) -> str:
    """A store with one deployable checkpoint and its observations; the checkpoint's id."""
    ledger = open_ledger(sqlite_url(path))
    try:
        checkpoint_id = run_lifecycle(ledger, LIFECYCLE)
        load_observations(ledger, checkpoint_id, observations)
        ledger.read_model.catch_up()
    finally:
        ledger.close()
    return checkpoint_id


def route_and_complete(ledger: TrainingLedger, checkpoint_id: str, n: int) -> None:
    routed = ledger.deployments.route(checkpoint_id, PROFILE, actor=ACTOR)
    outcome = SHADOW_OUTCOMES[n % len(SHADOW_OUTCOMES)]
    ledger.deployments.complete(routed["observationId"], outcome, actor=ACTOR)


def _window(ctx: BenchContext, snapshot: Path, checkpoint_id: str, directory: Path) -> float:
    """Pairs/s on a fresh copy of the store, after three untimed pairs."""
    path = directory / f"window-{uuid4().hex[:8]}.db"
    copy_sqlite(snapshot, path)
    ledger = open_ledger(sqlite_url(path))
    try:
        for n in range(3):
            route_and_complete(ledger, checkpoint_id, n)
        count, start = 0, time.perf_counter()
        while True:
            route_and_complete(ledger, checkpoint_id, count)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= ctx.sizes.window_seconds:
                return count / elapsed
    finally:
        ledger.close()


def shadow(ctx: BenchContext) -> Figure:
    """9. route + complete at few vs many observations; shadow stats and evaluate."""
    figure = Figure("shadow", "Promotion and shadow: many observations of one checkpoint")
    few, many = (10, 1_000) if ctx.quick else (100, 10_000)
    directory = ctx.workdir("shadow")
    stores: dict[int, tuple[Path, str]] = {}
    for count in (few, many):
        path = directory / f"store-{count}.db"
        start = time.perf_counter()
        stores[count] = (path, build_store(path, count))
        ctx.log(f"shadow store with {count:,} observations in {time.perf_counter() - start:.1f} s")
    rates: dict[int, list[float]] = {few: [], many: []}
    for r in range(ctx.sizes.rounds):
        order = (few, many) if r % 2 == 0 else (many, few)
        for count in order:
            rates[count].append(_window(ctx, *stores[count], directory))
        ctx.log(f"round {r + 1}: {few} {rates[few][-1]:.1f}/s, {many} {rates[many][-1]:.1f}/s")
    for count in (few, many):
        figure.add(f"route + complete @ {count:,}", Summary.of(rates[count], "pairs/s"))
    ratio = figure.add(
        f"ratio @ {many:,} / @ {few:,}, per round",
        Summary.of([b / a for a, b in zip(rates[few], rates[many], strict=True)], "x"),
    )
    figure.targets.append(
        Target(
            f"route + complete at {many:,} >= {RATE_RATIO_TARGET} x at {few:,}",
            ratio.median >= RATE_RATIO_TARGET,
            f"{ratio.median:.2f} x (per round {ratio.minimum:.2f}-{ratio.maximum:.2f})",
        )
    )
    _queries(ctx, figure, stores, many)
    figure.notes.append(
        "a pair is `ledger.deployments.route` then `complete` (two commands, two appends) on "
        "a fresh copy of the store; SQLite, synchronous=FULL"
    )
    return figure


def _queries(
    ctx: BenchContext, figure: Figure, stores: dict[int, tuple[Path, str]], many: int
) -> None:
    """shadow stats and promotion evaluate on each store, interleaved (ms)."""
    calls = max(20, ctx.sizes.query_calls // 10)
    ledgers = {count: open_ledger(sqlite_url(path)) for count, (path, _) in stores.items()}
    times: dict[tuple[str, int], list[float]] = {}
    try:
        for count, ledger in ledgers.items():  # warm: views caught up, first answers
            checkpoint_id = stores[count][1]
            ledger.deployments.shadow_stats(checkpoint_id)
            ledger.deployments.evaluate(checkpoint_id, actor=ACTOR)
        for _ in range(calls):
            for count, ledger in ledgers.items():
                checkpoint_id = stores[count][1]
                for name in ("shadow stats", "promotion evaluate"):
                    start = time.perf_counter()
                    if name == "shadow stats":
                        ledger.deployments.shadow_stats(checkpoint_id)
                    else:
                        ledger.deployments.evaluate(checkpoint_id, actor=ACTOR)
                    times.setdefault((name, count), []).append((time.perf_counter() - start) * 1000)
    finally:
        for ledger in ledgers.values():
            ledger.close()
    for (name, count), values in sorted(times.items()):
        row = figure.add(f"{name} @ {count:,}", Summary.of(values, "ms", with_p99=True))
        if count == many:
            figure.targets.append(
                Target(
                    f"{name} median < {QUERY_TARGET_MS:g} ms at {many:,}",
                    row.median < QUERY_TARGET_MS,
                    f"{row.median:.2f} ms (p99 {row.p99:.2f})",
                )
            )
    figure.notes.append(
        f"{calls} calls of each on each store, interleaved; `evaluate` is a command (it "
        "records the gate's decision); stats count the last 24 h at the ledger's time"
    )
