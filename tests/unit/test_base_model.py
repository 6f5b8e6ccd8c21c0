"""The spec's `baseModel` (SPEC §12): optional, checked at create, invisible when absent.

A spec that names no base model must be written exactly as before the field
existed (its event's hash and an export of older stores depend on it); one
that names a model records where the model directory is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.support import SAMPLE_DATASET
from trainledger.adapters.files import locate_base_model
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import stored_state
from trainledger.domain.contract import ExperimentSpec
from trainledger.domain.errors import BaseModelError, ValidationError
from trainledger.domain.experiment import DatasetDigest, ExperimentRequest, build_spec
from trainledger.domain.model import TrainingRun, command_context

DATASET = DatasetDigest("a6468e43d3336456", 48, "/data/sample.jsonl")


def request(**overrides: Any) -> ExperimentRequest:
    fields: dict[str, Any] = {
        "profile": "local-reader",
        "family": "qwen2.5-7b-reader",
        "backend": "peft-trl-orpo",
        "benchmark_export_id": "bench-1",
        "output_dir": "/runs/out",
        **overrides,
    }
    return ExperimentRequest(**fields)


def spec_of(given: ExperimentRequest, **options: Any) -> ExperimentSpec:
    return build_spec(
        given,
        lambda: DATASET,
        experiment_id="3f1c2b9e-8a7d-4e6f-9b0a-1c2d3e4f5a6b",
        now_ms=1_700_000_000_000,
        local_editor_enabled=False,
        **options,
    )


def model_directory(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def test_a_spec_without_a_base_model_is_written_as_before() -> None:
    spec = spec_of(request())
    assert spec.baseModel is None
    document = spec.model_dump(mode="json")
    assert "baseModel" not in document
    assert "baseModel" not in json.loads(spec.model_dump_json())
    assert ExperimentSpec.model_validate(document) == spec
    # ... and inside the run's first event, whose hash covers what is stored.
    with command_context("tester", None):
        (registered,) = TrainingRun.register(uuid4(), spec, 48).collect_events()
    assert isinstance(registered, TrainingRun.Registered)
    assert "baseModel" not in stored_state(registered)["spec"]


def test_a_named_base_model_is_recorded_where_the_locator_found_it() -> None:
    seen: list[str] = []

    def locate(path: str) -> str:
        seen.append(path)
        return "/models/tiny"

    spec = spec_of(request(base_model="tiny"), locate_base_model=locate)
    assert seen == ["tiny"]
    assert spec.baseModel == "/models/tiny"
    document = spec.model_dump(mode="json")
    assert document["baseModel"] == "/models/tiny"
    assert ExperimentSpec.model_validate(document) == spec


@pytest.mark.parametrize(("value", "named"), [("", "must not be empty"), (7, "must be a path")])
def test_a_base_model_that_is_no_path_is_refused(value: Any, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        spec_of(request(base_model=value))


def test_the_spec_refuses_an_empty_base_model() -> None:
    document = spec_of(request()).model_dump(mode="json")
    with pytest.raises(ValueError, match="baseModel"):
        ExperimentSpec.model_validate({**document, "baseModel": ""})


def test_locate_base_model_resolves_a_model_directory(tmp_path: Path) -> None:
    directory = model_directory(tmp_path / "tiny")
    link = tmp_path / "current"
    link.symlink_to(directory)
    assert locate_base_model(str(link)) == str(directory.resolve())


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (None, "does not exist"),
        ({}, "has no config.json"),
        ({"config.json": "not json"}, "not a JSON object"),
        ({"config.json": "{}", "weights.txt": "x"}, "holds no weights"),
    ],
)
def test_locate_base_model_refuses_what_is_not_a_model(
    tmp_path: Path, files: dict[str, str] | None, named: str
) -> None:
    directory = tmp_path / "model"
    if files is not None:
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
    with pytest.raises(BaseModelError, match=named):
        locate_base_model(str(directory))


def test_the_ledger_checks_the_base_model_and_records_nothing_when_it_is_not_one(
    tmp_path: Path,
) -> None:
    ledger = open_ledger("memory://")
    with pytest.raises(BaseModelError, match="does not exist"):
        ledger.create_experiment(
            request(base_model=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "out")),
            dataset_path=str(SAMPLE_DATASET),
            actor="tester",
        )
    assert ledger.stats()["totalRuns"] == 0
    directory = model_directory(tmp_path / "tiny")
    created = ledger.create_experiment(
        request(base_model=str(directory), output_dir=str(tmp_path / "out")),
        dataset_path=str(SAMPLE_DATASET),
        actor="tester",
    )
    assert created["spec"]["baseModel"] == str(directory.resolve())
    spec = ledger.get_run(created["trainRunId"]).experiment_spec()
    assert spec.baseModel == str(directory.resolve())
