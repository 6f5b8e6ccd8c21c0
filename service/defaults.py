"""What a ledger does without the adapters that touch the outside (the ports' defaults).

`adapters.store.open_ledger` gives the real ones; a ledger built without them
refuses what needs the outside world with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trainledger.domain.chain import canonical_json
from trainledger.domain.errors import DatasetError
from trainledger.domain.trainer import ArtifactLocation, TrainerExit, TrainerLaunch, TrainerStarted

__all__ = [
    "base_model_as_given",
    "canonical_json",
    "no_artifact_digest",
    "no_artifact_locator",
    "no_dataset_loader",
    "no_trainer_runner",
]

if TYPE_CHECKING:
    from trainledger.domain.experiment import DatasetDigest


def no_dataset_loader(path: str) -> DatasetDigest:
    raise DatasetError(f"cannot read dataset {path!r}: no dataset loader configured")


def base_model_as_given(path: str) -> str:
    return path


def no_artifact_digest(path: str, *, deadline: float | None = None) -> str | None:
    return None


def no_trainer_runner(
    launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]
) -> TrainerExit:
    return TrainerExit(launch_error="no trainer runner configured")


def no_artifact_locator(reported: str, output_dir: str) -> ArtifactLocation:
    return ArtifactLocation(reported, reported, output_dir, exists=False)
