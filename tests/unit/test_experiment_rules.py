"""Creating an experiment: the rules of SPEC §3.1, each on its own and in order."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import ExperimentSpec, code_hash
from trainledger.domain.errors import (
    DatasetError,
    FamilyProfileMismatchError,
    HardwareTierError,
    LedgerError,
    ProfileNotEnabledError,
    ValidationError,
)
from trainledger.domain.experiment import (
    DatasetDigest,
    ExperimentRequest,
    build_spec,
    family_suits_profile,
)

DATASET = DatasetDigest("a6468e43d3336456", 48, "/data/sample.jsonl")
EXPERIMENT_ID = "3f1c2b9e-8a7d-4e6f-9b0a-1c2d3e4f5a6b"
NOW_MS = 1_700_000_000_000
SAMPLE = b'{"prompt": "p", "chosen": "good", "rejected": "bad"}\n'
REQUEST = ExperimentRequest(
    profile="local-reader",
    family="qwen2.5-7b-reader",
    backend="dry-run",
    benchmark_export_id="bench-1",
    output_dir="/out",
)

DEFAULT_HYPERPARAMETERS = {
    "learningRate": 3e-4,
    "batchSize": 2,
    "gradientAccumulation": 8,
    "loraRank": 16,
    "loraAlpha": 32,
    "loraDropout": 0.05,
    "warmupRatio": 0.1,
    "maxSteps": 1000,
    "maxSeqLength": 2048,
}


def reader_request(**overrides: Any) -> ExperimentRequest:
    fields: dict[str, Any] = {
        "profile": "local-reader",
        "family": "qwen2.5-7b-reader",
        "backend": "dry-run",
        "benchmark_export_id": "bench-1",
        "output_dir": "/runs/out",
        **overrides,
    }
    return ExperimentRequest(**fields)


class DatasetLoader:
    """Counts how often the dataset is read; optionally fails like a missing file."""

    def __init__(self, missing: bool = False) -> None:
        self.missing = missing
        self.calls = 0

    def __call__(self) -> DatasetDigest:
        self.calls += 1
        if self.missing:
            raise DatasetError("dataset '/nowhere.jsonl' does not exist or is not a file")
        return DATASET


def build(
    request: ExperimentRequest,
    *,
    local_editor_enabled: bool = False,
    loader: DatasetLoader | None = None,
) -> ExperimentSpec:
    return build_spec(
        request,
        loader or DatasetLoader(),
        experiment_id=EXPERIMENT_ID,
        now_ms=NOW_MS,
        local_editor_enabled=local_editor_enabled,
    )


def refused(
    request: ExperimentRequest,
    error: type[LedgerError],
    match: str,
    *,
    local_editor_enabled: bool = False,
) -> DatasetLoader:
    loader = DatasetLoader(missing=True)
    with pytest.raises(error, match=match):
        build(request, local_editor_enabled=local_editor_enabled, loader=loader)
    return loader


def test_a_valid_request_builds_the_whole_spec() -> None:
    spec = build(reader_request(dataset_export_id="export-7"))

    assert spec.experimentId == EXPERIMENT_ID
    assert spec.backend == "dry-run"
    assert spec.trainingMode == "orpo"
    assert spec.targetWorkerProfile == "local-reader"
    assert spec.targetModelFamily == "qwen2.5-7b-reader"
    assert spec.datasetExportId == "export-7"
    assert spec.datasetExportPath == "/data/sample.jsonl"
    assert spec.datasetFingerprint == "a6468e43d3336456"
    assert spec.benchmarkExportId == "bench-1"
    assert spec.outputDir == "/runs/out"
    assert spec.configFingerprint == "dc867911eece7ac3"
    assert spec.codeHash == code_hash()
    assert spec.expectedArtifact.checkpointName == f"checkpoint-qwen2.5-7b-reader-{NOW_MS}"
    assert spec.expectedArtifact.adapterFormat == "peft-adapter"


# --- rule 1: enumerations ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "name", "allowed"),
    [
        ({"backend": "bogus"}, "backend", "peft-trl-orpo, unsloth-orpo, dry-run"),
        ({"backend": "DRY-RUN"}, "backend", "peft-trl-orpo, unsloth-orpo, dry-run"),
        ({"backend": ""}, "backend", "peft-trl-orpo, unsloth-orpo, dry-run"),
        ({"tier": "datacenter-gpu"}, "hardware tier", "consumer-gpu, small-gpu, cpu-experimental"),
        ({"tier": ""}, "hardware tier", "consumer-gpu, small-gpu, cpu-experimental"),
        ({"profile": "local-writer"}, "worker profile", "local-reader, local-editor"),
        ({"training_mode": "dpo"}, "training mode", "orpo"),
    ],
)
def test_unknown_enumeration_values_are_refused_naming_the_allowed_ones(
    overrides: dict[str, str], name: str, allowed: str
) -> None:
    loader = refused(reader_request(**overrides), ValidationError, f"unknown {name} ")
    with pytest.raises(ValidationError) as caught:
        build(reader_request(**overrides))
    assert caught.value.message.endswith(f"expected one of: {allowed}")
    assert loader.calls == 0


# --- rule 2: local-editor is gated ----------------------------------------------


def test_local_editor_is_refused_unless_enabled() -> None:
    editor = reader_request(profile="local-editor", family="code-editor-7b")
    refused(editor, ProfileNotEnabledError, "TRAINLEDGER_ENABLE_LOCAL_EDITOR=1")
    assert build(editor, local_editor_enabled=True).targetWorkerProfile == "local-editor"


@pytest.mark.parametrize(("value", "enabled"), [("1", True), ("0", False), ("true", False)])
def test_the_application_reads_the_local_editor_switch_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("TRAINLEDGER_ENABLE_LOCAL_EDITOR", value)
    ledger = open_ledger("memory://")  # the environment as the ledger was opened
    editor = reader_request(profile="local-editor", family="code-editor-7b")

    def create() -> dict[str, Any]:
        return ledger.create_experiment(
            editor, dataset_fingerprint="a6468e43d3336456", sample_count=48, actor="alice"
        )

    if enabled:
        assert create()["spec"]["targetWorkerProfile"] == "local-editor"
    else:
        with pytest.raises(ProfileNotEnabledError):
            create()
        assert ledger.recorder.max_notification_id() in (None, 0)


# --- rule 3: family suits profile -----------------------------------------------

READERS = [
    "qwen2.5-7b-reader",
    "CLAUDE-HAIKU-3",
    "claude_haiku",
    "reader",
    "Read",
    "org/reader:latest",
    "my reader model",
    "qwen-lite-1.5b",
    "phi-mini.q4",
    "gpt-4o-mini",
    "GPT-4o-Nano-2024",
]
NOT_READERS = [
    "thread-model",
    "credit-scorer",
    "readers",
    "bread",
    "claude-haikus",
    "claude",
    "haiku-claude",
    "gpt-4o",
    "qwen-litex",
    "gpt-4o-mini2",
]
EDITORS = ["code-llama", "my.editor", "Claude-Sonnet-4", "gpt-4o-mini", "EDIT", "x_code_y"]
NOT_EDITORS = ["credit-scorer", "thread-model", "unicode-model", "coder", "qwen2.5-7b-reader"]


@pytest.mark.parametrize("family", READERS)
def test_reader_patterns_match_at_token_boundaries(family: str) -> None:
    assert family_suits_profile(family, "local-reader")
    assert build(reader_request(family=family)).targetModelFamily == family


@pytest.mark.parametrize("family", NOT_READERS)
def test_a_pattern_inside_a_token_does_not_make_a_reader(family: str) -> None:
    assert not family_suits_profile(family, "local-reader")
    loader = refused(
        reader_request(family=family),
        FamilyProfileMismatchError,
        f"model family '{family}' is not valid for profile 'local-reader'",
    )
    assert loader.calls == 0


@pytest.mark.parametrize("family", EDITORS)
def test_editor_patterns_match_at_token_boundaries(family: str) -> None:
    assert family_suits_profile(family, "local-editor")
    editor = reader_request(profile="local-editor", family=family)
    assert build(editor, local_editor_enabled=True).targetModelFamily == family


@pytest.mark.parametrize("family", NOT_EDITORS)
def test_non_editor_families_are_refused_for_the_editor_profile(family: str) -> None:
    assert not family_suits_profile(family, "local-editor")
    refused(
        reader_request(profile="local-editor", family=family),
        FamilyProfileMismatchError,
        "not valid for profile 'local-editor'",
        local_editor_enabled=True,
    )


@pytest.mark.parametrize("family", ["", "   "])
def test_an_empty_family_is_refused(family: str) -> None:
    refused(reader_request(family=family), ValidationError, "family must not be empty")


# --- rule 4: hardware tier ----------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "tier"),
    [
        ("dry-run", "cpu-experimental"),
        ("peft-trl-orpo", "consumer-gpu"),
        ("unsloth-orpo", "consumer-gpu"),
    ],
)
def test_the_tier_defaults_by_backend(backend: str, tier: str) -> None:
    assert build(reader_request(backend=backend)).hardwareTier == tier


@pytest.mark.parametrize("tier", ["consumer-gpu", "small-gpu", "cpu-experimental"])
def test_an_explicit_tier_is_kept(tier: str) -> None:
    assert build(reader_request(tier=tier)).hardwareTier == tier


@pytest.mark.parametrize("backend", ["peft-trl-orpo", "unsloth-orpo"])
def test_cpu_experimental_is_only_for_dry_run(backend: str) -> None:
    refused(
        reader_request(backend=backend, tier="cpu-experimental"),
        HardwareTierError,
        f"only allowed with backend 'dry-run', not '{backend}'",
    )


# --- rule 5: hyperparameters and budget --------------------------------------------


def test_hyperparameters_and_budget_default_to_the_seeds_values() -> None:
    spec = build(reader_request())
    assert spec.hyperparameters.model_dump() == DEFAULT_HYPERPARAMETERS
    assert spec.budget.model_dump() == {"maxWallClockMinutes": 240, "maxTrainTokens": 2_000_000}


def test_overrides_merge_field_by_field() -> None:
    spec = build(
        reader_request(
            hyperparameters={"learningRate": 1e-4, "maxSteps": 50},
            budget={"maxWallClockMinutes": 30},
        )
    )
    assert spec.hyperparameters.model_dump() == {
        **DEFAULT_HYPERPARAMETERS,
        "learningRate": 1e-4,
        "maxSteps": 50,
    }
    assert spec.budget.model_dump() == {"maxWallClockMinutes": 30, "maxTrainTokens": 2_000_000}
    assert spec.configFingerprint != "dc867911eece7ac3"


def test_unknown_hyperparameter_keys_are_refused_by_name() -> None:
    loader = refused(
        reader_request(hyperparameters={"learning_rate": 1e-4, "epochs": 3}),
        ValidationError,
        "unknown hyperparameter key[(]s[)]: epochs, learning_rate; known: batchSize",
    )
    assert loader.calls == 0
    refused(reader_request(budget={"maxGpuHours": 3}), ValidationError, "unknown budget key")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("learningRate", 0),
        ("learningRate", -1e-4),
        ("learningRate", 1.0000001),
        ("batchSize", 0),
        ("gradientAccumulation", 0),
        ("loraRank", 0),
        ("loraRank", 1025),
        ("maxSeqLength", 127),
        ("maxSeqLength", 8193),
        ("maxSteps", 0),
        ("batchSize", 2.5),
    ],
)
def test_each_out_of_range_hyperparameter_is_refused(key: str, value: float) -> None:
    refused(
        reader_request(hyperparameters={key: value}),
        ValidationError,
        f"invalid hyperparameter: {key}: .*[(]got {value!r}[)]",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("learningRate", 1),
        ("learningRate", 1e-7),
        ("batchSize", 1),
        ("loraRank", 1),
        ("loraRank", 1024),
        ("maxSeqLength", 128),
        ("maxSeqLength", 8192),
        ("maxSteps", 1),
    ],
)
def test_range_bounds_are_inclusive_where_the_spec_says_so(key: str, value: float) -> None:
    spec = build(reader_request(hyperparameters={key: value}))
    assert spec.hyperparameters.model_dump()[key] == value


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        ({"maxWallClockMinutes": 0.5}, "maxWallClockMinutes"),
        ({"maxWallClockMinutes": 0}, "maxWallClockMinutes"),
        ({"maxTrainTokens": 0}, "maxTrainTokens"),
    ],
)
def test_a_budget_below_its_minimum_is_refused(budget: dict[str, float], match: str) -> None:
    refused(reader_request(budget=budget), ValidationError, f"invalid budget: {match}")


def test_an_explicit_sample_count_must_fit_in_64_bits() -> None:
    assert DatasetDigest.explicit("0123456789abcdef", 2**63 - 1).sample_count == 2**63 - 1
    with pytest.raises(ValidationError, match="sample count is too large"):
        DatasetDigest.explicit("0123456789abcdef", 2**63)


def test_a_one_minute_budget_is_allowed() -> None:
    assert build(reader_request(budget={"maxWallClockMinutes": 1})).budget.maxWallClockMinutes == 1


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("3e-4", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
        (math.nan, "must be finite"),
        (math.inf, "must be finite"),
        (10**400, "must be finite"),
        (2**63, "is too large"),
    ],
)
def test_non_numbers_and_non_finite_values_are_refused(value: object, match: str) -> None:
    refused(
        reader_request(hyperparameters={"maxSteps": value}),
        ValidationError,
        f"hyperparameter maxSteps {match}",
    )
    refused(
        reader_request(budget={"maxTrainTokens": value}),
        ValidationError,
        f"budget maxTrainTokens {match}",
    )


@pytest.mark.parametrize(
    ("overrides", "label"),
    [({"benchmark_export_id": " "}, "benchmark export id"), ({"output_dir": ""}, "output dir")],
)
def test_benchmark_and_output_dir_are_required(overrides: dict[str, str], label: str) -> None:
    refused(reader_request(**overrides), ValidationError, f"{label} must not be empty")


# --- rule 6: the dataset is read last ---------------------------------------------


def test_a_missing_dataset_is_refused_once_the_other_rules_hold() -> None:
    loader = refused(reader_request(), DatasetError, "does not exist")
    assert loader.calls == 1


# --- the order of the rules ---------------------------------------------------------

# Each request breaks two rules; the first one (in SPEC order) must be reported.
ORDERED_FAILURES = [
    (
        "backend before profile",
        {"backend": "bogus", "profile": "local-writer"},
        ValidationError,
        "unknown backend",
    ),
    (
        "enumerations before the editor gate",
        {"backend": "bogus", "profile": "local-editor", "family": "code"},
        ValidationError,
        "unknown backend",
    ),
    (
        "editor gate before the family",
        {"profile": "local-editor", "family": "thread-model"},
        ProfileNotEnabledError,
        "not enabled",
    ),
    (
        "family before the tier",
        {"family": "thread-model", "backend": "peft-trl-orpo", "tier": "cpu-experimental"},
        FamilyProfileMismatchError,
        "thread-model",
    ),
    (
        "tier before the hyperparameters",
        {
            "backend": "peft-trl-orpo",
            "tier": "cpu-experimental",
            "hyperparameters": {"loraRank": 0},
        },
        HardwareTierError,
        "cpu-experimental",
    ),
    (
        "hyperparameters before the budget",
        {"hyperparameters": {"loraRank": 0}, "budget": {"maxWallClockMinutes": 0}},
        ValidationError,
        "loraRank",
    ),
    (
        "budget before the dataset",
        {"budget": {"maxWallClockMinutes": 0}},
        ValidationError,
        "maxWallClockMinutes",
    ),
    (
        "an unknown backend before a missing dataset",
        {"backend": "bogus"},
        ValidationError,
        "backend",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [case[1:] for case in ORDERED_FAILURES],
    ids=[case[0] for case in ORDERED_FAILURES],
)
def test_the_first_broken_rule_is_the_one_reported(
    overrides: dict[str, Any], error: type[LedgerError], match: str
) -> None:
    loader = refused(reader_request(**overrides), error, match)
    assert loader.calls == 0


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"This is prose, not JSONL.\n", "line 1: is not JSON"),
        (b'["prompt", "chosen", "rejected"]\n', "line 1: is a JSON array, not an object"),
        (b"", "holds no samples"),
        (b"\n  \n", "holds no samples"),
        (SAMPLE + b'{"prompt": "p", "chosen": "c"}\n', "line 2: lacks the preference field"),
        (SAMPLE + b'\n{"prompt": "p", "chosen": "c", "rejected": 3}\n', "line 3: "),
    ],
    ids=["prose", "array", "empty", "blank lines", "missing field", "not a string"],
)
def test_a_dataset_that_is_not_preference_samples_is_refused_at_create(
    tmp_path: Path, content: bytes, named: str
) -> None:
    ledger = open_ledger("memory://")
    dataset = tmp_path / "data.jsonl"
    dataset.write_bytes(content)
    with pytest.raises(DatasetError, match=re.escape(named)):
        ledger.create_experiment(REQUEST, dataset_path=str(dataset), actor="alice")
    assert ledger.list_runs()["runs"] == []


def test_a_dataset_of_preference_samples_is_accepted(tmp_path: Path) -> None:
    ledger = open_ledger("memory://")
    dataset = tmp_path / "data.jsonl"
    dataset.write_bytes(SAMPLE + b"\n" + SAMPLE)
    created = ledger.create_experiment(REQUEST, dataset_path=str(dataset), actor="alice")
    assert ledger.show_run(created["trainRunId"])["sampleCount"] == 2
