"""Summaries of repeated measurements, and the record every figure produces."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Summary:
    """Median, min and max (and p99 when asked) of one quantity over repeated runs."""

    unit: str
    median: float
    minimum: float
    maximum: float
    samples: int
    p99: float | None = None

    @classmethod
    def of(cls, values: Sequence[float], unit: str, *, with_p99: bool = False) -> Summary:
        if not values:
            raise ValueError("no samples")
        return cls(
            unit=unit,
            median=statistics.median(values),
            minimum=min(values),
            maximum=max(values),
            samples=len(values),
            p99=percentile(values, 99) if with_p99 else None,
        )

    def to_json(self) -> Json:
        document: Json = {
            "unit": self.unit,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "samples": self.samples,
        }
        if self.p99 is not None:
            document["p99"] = self.p99
        return document


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with `pct`% of samples at or below it)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Target:
    """A target a figure is held to; `met` is None when it could not be judged."""

    text: str
    met: bool | None
    detail: str

    def to_json(self) -> Json:
        return {"text": self.text, "met": self.met, "detail": self.detail}


@dataclass
class Figure:
    """What one figure measured; `unavailable` names what has not landed yet."""

    name: str
    title: str
    rows: list[tuple[str, Summary]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    extra: Json = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, label: str, summary: Summary) -> Summary:
        self.rows.append((label, summary))
        return summary

    def row(self, label: str) -> Summary | None:
        return next((s for name, s in self.rows if name == label), None)

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "title": self.title,
            "rows": [{"label": label, **s.to_json()} for label, s in self.rows],
            "targets": [t.to_json() for t in self.targets],
            "notes": self.notes,
            "unavailable": self.unavailable,
            "extra": self.extra,
            "seconds": round(self.seconds, 1),
        }


class Stopwatch:
    """Collects durations of repeated operations (seconds)."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    @contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.durations.append(time.perf_counter() - start)


def time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `call`."""
    durations: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations


CPU_PROBE_LABEL = "CPU probe: a fixed Python workload on one core"
_PROBE_STATE = (
    b'{"timestamp":"2026-11-28T11:47:15.353482Z","actor":"probe","n":['
    + b",".join(str(n).encode() for n in range(40))
    + b'],"text":"'
    + b"x" * 200
    + b'"}'
)


def cpu_probe(rounds: int = 3) -> list[float]:
    """Milliseconds the same small, CPU-bound Python job takes, `rounds` times.

    What the host gives one core now: on a shared machine the same work takes
    longer (and more CPU time) while neighbours are busy. Compared between
    runs, it tells a slower host from slower code.
    """
    import hashlib

    import orjson

    durations: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for n in range(4000):
            state = orjson.loads(_PROBE_STATE)
            state["n"] = sorted(state["n"], key=lambda v: (v * 7919 + n) % 40)
            hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()
        durations.append((time.perf_counter() - start) * 1000)
    return durations
