"""The real ORPO backend (SPEC §12) through `trainledger experiment create` and `train`.

A tiny Llama-shaped model and a word-level tokenizer are built in code
(`tests/orpo_support.py`), the bundled reference trainer trains LoRA adapters
on it with TRL's ORPO trainer for a few steps on the CPU, and the ledger
records the checkpoint. Tests marked `orpo` need the extra
`trainledger[orpo]`: skipped with the reason without it, failing instead under
TRAINLEDGER_REQUIRE_ORPO=1 (CI). The create-time refusals need no extra.

The tier is `consumer-gpu`, the default of a training backend (SPEC §3.1
rule 4 keeps `cpu-experimental` for dry runs): with no GPU the trainer falls
back to the CPU and records `device: cpu` in the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.orpo_support import (
    OFFLINE,
    PAIRS,
    build_tiny_model,
    require_orpo,
    tokens_per_pass,
    write_pairs,
)
from tests.support import Cli
from trainledger.adapters.files import digest_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.experiment import ExperimentRequest

FAMILY = "qwen-lite-reader"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-shaped model with its tokenizer, built once for the module."""
    require_orpo()
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")


def create(cli: Cli, tmp_path: Path, *hp: str, **options: str) -> Any:
    """`experiment create` of an ORPO run with `--hp` of each of `hp`; its JSON document."""
    chosen = {
        "--profile": "local-reader",
        "--family": FAMILY,
        "--backend": "peft-trl-orpo",
        "--benchmark-export-id": "bench-1",
        "--output-dir": str(tmp_path / "out"),
        **{f"--{k.replace('_', '-')}": v for k, v in options.items()},
    }
    argv = ["experiment", "create", *(part for item in chosen.items() for part in item)]
    return cli.ok(*argv, *(part for setting in hp for part in ("--hp", setting)))


SMALL_STEPS = ("batchSize=2", "gradientAccumulation=2", "maxSeqLength=128")
"""With the 4 pairs of `PAIRS`, each step is one pass over the dataset."""


def train(cli: Cli, run_id: str) -> Any:
    """`trainledger train RUN` (the bundled trainer); the run as recorded afterwards."""
    result = cli("train", run_id, json_mode=True, **OFFLINE)
    assert "Traceback" not in result.stderr
    shown = cli.ok("run", "show", run_id)
    assert shown["status"] in {"completed", "failed"}
    if shown["status"] == "completed":
        assert result.code == 0, result.stderr
    return shown


def failure(cli: Cli, run_id: str, *named: str) -> str:
    """The run failed with no checkpoint, and its reason names each of `named`."""
    shown = train(cli, run_id)
    assert shown["status"] == "failed", shown
    assert shown["checkpointIds"] == []
    reason: str = shown["failureReason"]
    for part in named:
        assert part in reason, f"{part!r} not in {reason!r}"
    return reason


# --- training for real ------------------------------------------------------------


@pytest.mark.orpo
def test_orpo_trains_a_lora_adapter_that_loads_back(
    cli: Cli, tmp_path: Path, tiny_model: Path, pairs: Path
) -> None:
    created = create(
        cli,
        tmp_path,
        *SMALL_STEPS,
        "maxSteps=3",
        "loraRank=4",
        "learningRate=0.01",
        base_model=str(tiny_model),
        dataset=str(pairs),
    )
    assert created["spec"]["baseModel"] == str(tiny_model.resolve())
    run_id = created["trainRunId"]
    shown = train(cli, run_id)
    assert shown["status"] == "completed", shown["failureReason"]
    (checkpoint_id,) = shown["checkpointIds"]
    checkpoint = cli.ok("checkpoint", "show", checkpoint_id)
    adapter = Path(checkpoint["artifactPath"])
    assert adapter == tmp_path / "out" / created["spec"]["expectedArtifact"]["checkpointName"]
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert checkpoint["artifactDigest"] == digest_artifact(str(adapter))
    # The metrics are measured: the steps asked for, the tokens of three passes.
    metrics = checkpoint["metrics"]
    assert metrics["steps"] == 3
    assert metrics["stoppedBy"] == "maxSteps"
    assert metrics["tokensSeen"] == 3 * tokens_per_pass(PAIRS)
    assert math.isfinite(metrics["finalLoss"])
    assert metrics["finalLoss"] > 0
    assert metrics["finalLoss"] == shown["trainerResult"]["finalLoss"]
    assert 0 < metrics["wallClockMinutes"] < created["spec"]["budget"]["maxWallClockMinutes"]
    assert metrics["device"] in {"cpu", "cuda"}
    assert metrics["loraTargetModules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    # The result echoes the spec's fingerprints, as the contract requires.
    result = shown["trainerResult"]
    for name in ("experimentId", "datasetFingerprint", "configFingerprint", "codeHash"):
        assert result[name] == created["spec"][name]
    assert cli.ok("verify")["ok"] is True
    # The adapter loads back onto the base model with peft, and training moved it.
    probe = (
        "import json, sys\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n"
        "base = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True)\n"
        "model = PeftModel.from_pretrained(base, sys.argv[2])\n"
        "b = [p for n, p in model.named_parameters() if 'lora_B' in n]\n"
        "config = model.peft_config['default']\n"
        "print(json.dumps({'r': config.r, 'targets': sorted(config.target_modules),"
        " 'lora': len(b), 'moved': any(bool(p.abs().sum() > 0) for p in b)}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, str(tiny_model), str(adapter)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**cli.env, **OFFLINE},
    )
    assert loaded.returncode == 0, loaded.stderr
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found["r"] == 4
    assert found["targets"] == sorted(metrics["loraTargetModules"])
    assert found["lora"] == 2 * 7  # two layers, seven projections each
    assert found["moved"], "LoRA's B matrices start at zero: training must have changed them"


@pytest.mark.orpo
def test_an_exhausted_token_budget_fails_the_run_and_keeps_the_partial_adapter(
    cli: Cli, tmp_path: Path, tiny_model: Path, pairs: Path
) -> None:
    created = create(
        cli,
        tmp_path,
        *SMALL_STEPS,
        "maxSteps=5",
        base_model=str(tiny_model),
        dataset=str(pairs),
        budget_tokens=str(tokens_per_pass(PAIRS) + 1),
    )
    reason = failure(
        cli, created["trainRunId"], "budget exhausted", "maxTrainTokens", "after 2 of 5 steps"
    )
    name = created["spec"]["expectedArtifact"]["checkpointName"]
    assert not (tmp_path / "out" / name).exists()
    partial = tmp_path / "out" / f"{name}-partial"
    assert str(partial) in reason
    assert (partial / "adapter_config.json").is_file()


@pytest.mark.orpo
def test_a_wall_clock_budget_spent_before_training_fails(
    tmp_path: Path, tiny_model: Path, pairs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainledger.adapters.orpo_trainer import OFFLINE_ENVIRONMENT, TrainingError, train

    for name, value in OFFLINE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)  # restored afterwards: `train` sets them
    ledger = open_ledger("memory://")
    request = ExperimentRequest(
        profile="local-reader",
        family=FAMILY,
        backend="peft-trl-orpo",
        benchmark_export_id="bench-1",
        output_dir=str(tmp_path / "out"),
        base_model=str(tiny_model),
        budget={"maxWallClockMinutes": 1},
    )
    run_id = ledger.create_experiment(request, dataset_path=str(pairs), actor="tester")[
        "trainRunId"
    ]
    spec = ledger.get_run(run_id).experiment_spec()
    # The trainer started a minute ago: its whole budget went on loading the model.
    with pytest.raises(TrainingError, match="budget exhausted before training started") as caught:
        train(spec, tmp_path / "out", started=time.monotonic() - 60)
    assert "maxWallClockMinutes" in caught.value.reason
    assert not (tmp_path / "out" / spec.expectedArtifact.checkpointName).exists()


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda d: d / "nowhere", "does not exist"),
        (lambda d: _file(d / "model.bin"), "is not a directory"),
        (lambda d: _dir(d / "empty"), "has no config.json"),
        (lambda d: _dir(d / "bad", {"config.json": "[1, 2]"}), "not a JSON object"),
        (lambda d: _dir(d / "no-weights", {"config.json": "{}"}), "holds no weights"),
    ],
    ids=["missing", "a-file", "empty-dir", "bad-config", "no-weights"],
)
def test_create_refuses_a_base_model_that_is_not_a_model_directory(
    cli: Cli, tmp_path: Path, make: Any, named: str
) -> None:
    base = make(tmp_path)
    result = cli(
        "experiment",
        "create",
        "--profile",
        "local-reader",
        "--family",
        FAMILY,
        "--backend",
        "peft-trl-orpo",
        "--base-model",
        str(base),
        "--dataset",
        str(write_pairs(tmp_path / "pairs.jsonl")),
        "--benchmark-export-id",
        "bench-1",
        "--output-dir",
        str(tmp_path / "out"),
        json_mode=True,
    )
    assert result.code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: base model "), result.stderr
    assert named in lines[0]
    assert result.json["error"]["code"] == "base_model_unusable"
    assert cli("run", "list", json_mode=True).code != 0 or cli.ok("run", "list")["runs"] == []


def _file(path: Path) -> Path:
    path.write_bytes(b"not a directory")
    return path


def _dir(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir()
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


@pytest.mark.orpo
def test_a_base_model_gone_since_create_fails_the_run(
    cli: Cli, tmp_path: Path, tiny_model: Path, pairs: Path
) -> None:
    copy = shutil.copytree(tiny_model, tmp_path / "model")
    created = create(cli, tmp_path, "maxSteps=1", base_model=str(copy), dataset=str(pairs))
    shutil.rmtree(copy)
    failure(cli, created["trainRunId"], f"base model {copy} does not exist")


@pytest.mark.orpo
def test_weights_that_do_not_load_fail_the_run(
    cli: Cli, tmp_path: Path, tiny_model: Path, pairs: Path
) -> None:
    copy = shutil.copytree(tiny_model, tmp_path / "model")
    (copy / "model.safetensors").write_bytes(b"these are not weights")
    created = create(cli, tmp_path, "maxSteps=1", base_model=str(copy), dataset=str(pairs))
    failure(cli, created["trainRunId"], f"base model {copy} could not be loaded")


@pytest.mark.orpo
def test_a_model_without_the_lora_projections_fails_the_run(
    cli: Cli, tmp_path: Path, pairs: Path
) -> None:
    require_orpo()
    gpt2 = build_tiny_model(tmp_path / "gpt2", llama=False)
    created = create(cli, tmp_path, "maxSteps=1", base_model=str(gpt2), dataset=str(pairs))
    failure(cli, created["trainRunId"], "none of the LoRA target modules", "Llama- or Qwen-shaped")


@pytest.mark.orpo
def test_an_empty_dataset_fails_the_run(cli: Cli, tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    # A file with no samples is refused at create; named with its fingerprint it gets through.
    h1 = hashlib.sha256(b"\n").hexdigest()[:16]
    fingerprint = hashlib.sha256(f"{h1}:0".encode()).hexdigest()[:16]
    created = create(
        cli,
        tmp_path,
        base_model=str(tiny_model),
        dataset_fingerprint=fingerprint,
        sample_count="0",
        dataset_export_path=str(empty),
    )
    failure(cli, created["trainRunId"], f"dataset {empty} holds no samples")


@pytest.mark.orpo
def test_a_spec_without_a_base_model_fails_the_run(cli: Cli, tmp_path: Path, pairs: Path) -> None:
    require_orpo()
    created = create(cli, tmp_path, dataset=str(pairs))
    assert "baseModel" not in created["spec"]
    failure(cli, created["trainRunId"], "needs a base model", "--base-model")
