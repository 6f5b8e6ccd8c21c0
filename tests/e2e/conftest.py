"""Fixtures of the trainer-adapter tests: an output dir, a scripts dir, and `train`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.trainer_scripts import create_run, write_trainer
from trainledger.service.ledger import TrainingLedger


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    return tmp_path / "scripts"


TrainFn = Callable[..., dict[str, Any]]


@pytest.fixture
def train(ledger: TrainingLedger, output_dir: Path, scripts: Path) -> TrainFn:
    """Write a trainer with `body`, create a run, train it; the outcome document."""

    def run_trainer(body: str, *, backend: str = "peft-trl-orpo", **options: Any) -> Any:
        script = write_trainer(scripts, body)
        run_id = create_run(ledger, output_dir, backend=backend)
        return ledger.train(run_id, trainer_script=str(script), actor="tester", **options)

    return run_trainer
