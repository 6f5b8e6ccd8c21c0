"""The benchmark's workload: one training lifecycle, and stores bulk-loaded to a size.

A lifecycle is the six commands of the issue: create an experiment, start the
run, register a checkpoint, complete the run, attach an eval, mark the
checkpoint deployable. Lifecycle `n` picks its family, dataset, benchmark and
verdict from `n`, so a bulk-loaded store has something for the filters and
for `impact` to select.

The bulk loader builds the same aggregates with the same domain methods the
commands use (so every event is valid and hash-chained, and the store passes
`verify`), but saves hundreds of lifecycles in one append instead of six
appends each. Only the history is loaded this way; measured windows are
ordinary commands and queries.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import EvalSummary, ExperimentSpec
from trainledger.domain.experiment import DatasetDigest, ExperimentRequest, build_spec
from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun, command_context
from trainledger.service.ledger import TrainingLedger
from trainledger.service.ports import EVAL_ID, Reservation

ACTOR = "bench"
FAMILIES = ("qwen2.5-7b-reader", "claude-haiku-3", "phi-mini-4k", "gpt-4o-mini")
DATASET_COUNT = 1000
BENCHMARK_COUNT = 20
SAMPLE_COUNT = 1000
OUTPUT_DIR = "bench-output"
"""Recorded in specs only; nothing is written there."""
ARTIFACT_BYTES = b"bench adapter weights"
COMMANDS_PER_LIFECYCLE = 6


def dataset_fingerprint(n: int) -> str:
    return hashlib.sha256(f"bench-dataset-{n % DATASET_COUNT}".encode()).hexdigest()[:16]


@cache
def artifact_file() -> str:
    """One small artifact every lifecycle's checkpoint records, written once per process.

    Only a checkpoint with an artifact digest can be made deployable, so the
    artifact must exist; one shared file keeps the measured commands free of
    file writes.
    """
    artifact = Path(tempfile.mkdtemp(prefix="trainledger-bench-")) / "adapter.bin"
    artifact.write_bytes(ARTIFACT_BYTES)
    return str(artifact)


ARTIFACT_DIGEST = "sha256:" + hashlib.sha256(ARTIFACT_BYTES).hexdigest()
"""The digest `adapters.files.digest_artifact` records for `artifact_file()`."""


@dataclass(frozen=True)
class LifecycleParams:
    """What lifecycle number `n` is about."""

    n: int

    @property
    def family(self) -> str:
        return FAMILIES[self.n % len(FAMILIES)]

    @property
    def dataset(self) -> str:
        return dataset_fingerprint(self.n)

    @property
    def benchmark(self) -> str:
        return f"bench-{self.n % BENCHMARK_COUNT}"

    @property
    def verdict(self) -> str:
        return "compare_only" if self.n % 10 == 0 else "pass"

    @property
    def artifact_path(self) -> str:
        return artifact_file()

    def request(self) -> ExperimentRequest:
        return ExperimentRequest(
            profile="local-reader",
            family=self.family,
            backend="dry-run",
            dataset_export_id=f"export-{self.n % DATASET_COUNT}",
            benchmark_export_id=self.benchmark,
            output_dir=OUTPUT_DIR,
        )

    def eval_summary(self, checkpoint_id: str) -> dict[str, Any]:
        return {
            "evalId": f"eval-{uuid4().hex}",
            "checkpointId": checkpoint_id,
            "benchmarkId": self.benchmark,
            "targetModelFamily": self.family,
            "mode": "prompt_assisted",
            "baselineScore": 0.5,
            "candidateScore": 0.75,
            "verdict": self.verdict,
        }


CommandTimer = Callable[[float], None]
"""Receives the duration (seconds) of each command, for latency figures."""


def run_lifecycle(ledger: TrainingLedger, n: int, record: CommandTimer | None = None) -> str:
    """The six commands through the Python API; returns the checkpoint id."""
    p = LifecycleParams(n)
    clock = time.perf_counter
    t0 = clock()
    run_id = ledger.create_experiment(
        p.request(), dataset_fingerprint=p.dataset, sample_count=SAMPLE_COUNT, actor=ACTOR
    )["trainRunId"]
    t1 = clock()
    ledger.start_run(run_id, actor=ACTOR)
    t2 = clock()
    checkpoint_id: str = ledger.register_checkpoint(
        run_id, family=p.family, artifact_path=p.artifact_path, actor=ACTOR
    )["checkpointId"]
    t3 = clock()
    ledger.complete_run(run_id, actor=ACTOR)
    t4 = clock()
    ledger.attach_eval(checkpoint_id, p.eval_summary(checkpoint_id), actor=ACTOR)
    t5 = clock()
    ledger.mark_deployable(checkpoint_id, actor=ACTOR)
    t6 = clock()
    if record is not None:
        for start, end in ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)):
            record(end - start)
    return checkpoint_id


# --- bulk loading -------------------------------------------------------------


@cache
def template_spec(family: str, dataset: str) -> ExperimentSpec:
    p = LifecycleParams(FAMILIES.index(family))
    request = ExperimentRequest(
        profile="local-reader",
        family=family,
        backend="dry-run",
        dataset_export_id="export-bulk",
        benchmark_export_id=p.benchmark,
        output_dir=OUTPUT_DIR,
    )
    return build_spec(
        request,
        lambda: DatasetDigest.explicit(dataset, SAMPLE_COUNT),
        experiment_id="template",
        now_ms=time.time_ns() // 1_000_000,
        local_editor_enabled=False,
    )


def _loaded_lifecycle(n: int) -> tuple[list[LedgerAggregate], Reservation]:
    p = LifecycleParams(n)
    spec = template_spec(p.family, p.dataset).model_copy(update={"experimentId": str(uuid4())})
    run = TrainingRun.register(uuid4(), spec, SAMPLE_COUNT)
    run.start()
    checkpoint = Checkpoint.register(
        uuid4(),
        run,
        family=p.family,
        artifact_path=p.artifact_path,
        artifact_digest=ARTIFACT_DIGEST,
    )
    run.complete()
    summary = EvalSummary.model_validate(p.eval_summary(str(checkpoint.id)))
    checkpoint.attach_eval(summary)
    checkpoint.mark_deployable(run)
    return [run, checkpoint], Reservation(EVAL_ID, summary.evalId, str(checkpoint.id).encode())


def bulk_load(
    ledger: TrainingLedger,
    numbers: Iterable[int],
    *,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Append full lifecycles, `batch` of them per transaction; returns how many."""
    loaded = 0
    aggregates: list[LedgerAggregate] = []
    reservations: list[Reservation] = []

    def flush() -> None:
        nonlocal loaded
        if aggregates:
            ledger.save(*aggregates, reservations=list(reservations))
            loaded += len(reservations)
            aggregates.clear()
            reservations.clear()
            if progress is not None:
                progress(loaded)

    with command_context("bench-loader"):
        for n in numbers:
            touched, reservation = _loaded_lifecycle(n)
            aggregates.extend(touched)
            reservations.append(reservation)
            if len(reservations) >= batch:
                flush()
        flush()
    return loaded


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def copy_sqlite(source: Path, destination: Path) -> None:
    """A consistent copy of a SQLite store (WAL included), via the backup API."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{destination}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(destination) as dst:
        src.backup(dst)
    src.close()
    dst.close()


class StoreShelf:
    """Bulk-loaded SQLite stores at given history sizes, built once per bench run.

    One master store grows through the sizes in ascending order; at each size a
    snapshot is copied aside. `copy(size, path)` gives a figure its own store.
    """

    def __init__(self, root: Path, log: Callable[[str], None]) -> None:
        self.root = root
        self.log = log
        self.master = root / "master" / "ledger.db"
        self.loaded = 0
        self.snapshots: dict[int, Path] = {}
        self.load_rates: list[tuple[int, float]] = []

    def prepare(self, sizes: Iterable[int]) -> None:
        wanted = sorted(set(sizes) - set(self.snapshots))
        if not wanted:
            return
        if wanted[0] < self.loaded:
            raise ValueError(f"sizes must be prepared in ascending order: {wanted}")
        if self.snapshots.get(self.loaded) == self.master:
            aside = self.root / f"ledger-{self.loaded}.db"
            copy_sqlite(self.master, aside)
            self.snapshots[self.loaded] = aside
        ledger = open_ledger(sqlite_url(self.master))
        try:
            for size in wanted:
                start = time.perf_counter()
                count = bulk_load(ledger, range(self.loaded, size))
                elapsed = time.perf_counter() - start
                self.loaded = size
                if count:
                    self.load_rates.append((count, elapsed))
                    self.log(
                        f"bulk-loaded {count} lifecycles in {elapsed:.1f} s "
                        f"({count / elapsed:,.0f}/s), store at {size}"
                    )
                if size == wanted[-1]:
                    # Nothing grows the master past its last size: it is the snapshot.
                    self.snapshots[size] = self.master
                else:
                    snapshot = self.root / f"ledger-{size}.db"
                    copy_sqlite(self.master, snapshot)
                    self.snapshots[size] = snapshot
        finally:
            ledger.close()

    def snapshot(self, size: int) -> Path:
        if size not in self.snapshots:
            self.prepare([size])
        return self.snapshots[size]

    def copy(self, size: int, destination: Path) -> Path:
        """A private copy of the store at `size` lifecycles."""
        copy_sqlite(self.snapshot(size), destination)
        return destination
