"""What the read model's queries take and give: filters, documents, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]

Progress = Callable[[int, int], None]
"""Called as `progress(applied, total)` while a read model applies the log."""


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    family: str | None = None
    dataset_fingerprint: str | None = None


@dataclass(frozen=True)
class CheckpointFilter:
    run_id: str | None = None
    family: str | None = None
    deployable: bool | None = None


@dataclass(frozen=True)
class EvalFilter:
    checkpoint_id: str | None = None
    benchmark_id: str | None = None
    verdict: str | None = None
    family: str | None = None
