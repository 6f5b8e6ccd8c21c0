"""What every figure gets: sizes for this mode, a scratch directory, the store shelf."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.workload import StoreShelf


@dataclass(frozen=True)
class Sizes:
    """History sizes and repetition counts; `--quick` shrinks all of them."""

    write_path: tuple[int, ...]
    comparator: tuple[int, ...]
    floor: int
    large: int
    concurrent_history: int
    rounds: int
    window_seconds: float
    query_calls: int
    cli_runs: int
    heavy_repeats: int
    concurrent_seconds: float
    trainer_runs: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            write_path=(1_000, 10_000, 100_000),
            comparator=(500, 1_000, 2_000),
            floor=1_000,
            large=100_000,
            concurrent_history=1_000,
            rounds=5,
            window_seconds=2.0,
            query_calls=1_000,
            cli_runs=15,
            heavy_repeats=3,
            concurrent_seconds=5.0,
            trainer_runs=15,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            write_path=(100, 300, 1_000),
            comparator=(50, 100, 200),
            floor=100,
            large=1_000,
            concurrent_history=100,
            rounds=2,
            window_seconds=0.3,
            query_calls=50,
            cli_runs=3,
            heavy_repeats=2,
            concurrent_seconds=1.0,
            trainer_runs=3,
        )


@dataclass
class BenchContext:
    sizes: Sizes
    quick: bool
    scratch: Path
    started: float = field(default_factory=time.perf_counter)
    shelf: StoreShelf = field(init=False)

    def __post_init__(self) -> None:
        self.shelf = StoreShelf(self.scratch / "stores", self.log)

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"[bench {elapsed:6.1f}s] {message}\n")
        sys.stderr.flush()

    def workdir(self, name: str) -> Path:
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path
