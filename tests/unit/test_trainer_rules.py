"""The trainer protocol's rules alone: finding a result, judging it against the spec."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import pytest

from trainledger.domain.contract import (
    Budget,
    ExpectedArtifact,
    ExperimentSpec,
    Hyperparameters,
    TrainerResult,
    code_hash,
    config_fingerprint,
)
from trainledger.domain.trainer import (
    ArtifactLocation,
    TrainerExit,
    budget_deadline,
    json_objects,
    read_result,
    result_digest,
    trainer_timeout,
)
from trainledger.domain.trainer_outcome import (
    assess_exit,
    assess_result,
)

OUTPUT_DIR = "/data/out"


def make_spec(backend: str = "peft-trl-orpo", **budget: Any) -> ExperimentSpec:
    hyperparameters = Hyperparameters()
    return ExperimentSpec(
        experimentId="exp-1",
        backend=backend,
        targetWorkerProfile="local-reader",
        targetModelFamily="qwen2.5-7b-reader",
        hardwareTier="cpu-experimental" if backend == "dry-run" else "small-gpu",
        datasetExportId="dataset-1",
        datasetFingerprint="0123456789abcdef",
        benchmarkExportId="bench-1",
        outputDir=OUTPUT_DIR,
        configFingerprint=config_fingerprint(hyperparameters),
        codeHash=code_hash(),
        hyperparameters=hyperparameters,
        budget=Budget(**budget),
        expectedArtifact=ExpectedArtifact(checkpointName="checkpoint-qwen-1"),
    )


def result_for(spec: ExperimentSpec, status: str = "completed", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {name: getattr(spec, name) for name in TrainerResult.CHECKED_FIELDS}
    document["status"] = status
    if status == "completed":
        document["artifact"] = {"artifactPath": f"{OUTPUT_DIR}/adapter"}
    document.update(fields)
    return document


def fake_locator(existing: set[str]) -> Any:
    """Resolves paths lexically (no symlinks here); `existing` paths exist."""

    def locate(reported: str, output_dir: str) -> ArtifactLocation:
        path = PurePosixPath(reported)
        if not path.is_absolute():
            path = PurePosixPath(output_dir) / path
        parts: list[str] = []
        for part in path.parts[1:]:
            if part == "..":
                parts = parts[:-1]
            elif part != ".":
                parts.append(part)
        resolved = "/" + "/".join(parts)
        return ArtifactLocation(reported, resolved, output_dir, resolved in existing)

    return locate


EXISTING = fake_locator({f"{OUTPUT_DIR}/adapter", "/data/elsewhere"})


def assess(spec: ExperimentSpec, document: dict[str, Any], exit_code: int | None = 0) -> Any:
    reading = read_result(json.dumps(document).encode(), "stdout")
    assert reading.result is not None, reading.tried
    return assess_result(spec, reading, exit_code=exit_code, locate=EXISTING)


# --- finding the result -------------------------------------------------------


def test_whole_output_is_one_object() -> None:
    assert json_objects('  {"a": {"b": 1}}\n') == [{"a": {"b": 1}}]


def test_logs_first_then_pretty_printed_result() -> None:
    text = 'loading {not json}\nstep 1 {"loss": 0.5}\n' + json.dumps({"r": [{"x": 1}]}, indent=2)
    assert json_objects(text)[-1] == {"r": [{"x": 1}]}


def test_result_followed_by_a_log_line_and_prefixed_on_its_line() -> None:
    objects = json_objects('RESULT: {"status": "failed"} trailing\ndone\n')
    assert objects == [{"status": "failed"}]


def test_read_result_takes_the_last_object_that_is_a_result() -> None:
    spec = make_spec()
    document = result_for(spec, "failed", failureReason="oom")
    text = f"log\n{json.dumps(document)}\n" + '{"event": "exit", "code": 0}\n'
    reading = read_result(text.encode(), "stdout")
    assert reading.result is not None
    assert reading.result.failureReason == "oom"
    assert reading.digest == result_digest(document)


def test_digest_ignores_formatting() -> None:
    document = {"b": 1, "a": [1, 2]}
    assert result_digest(json.loads(json.dumps(document, indent=4))) == result_digest(document)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "stdout was empty"),
        (b" \n\t\n", "stdout was empty"),
        (b"\xff\xfe\x00garbage\x80 no json here", "stdout holds no JSON object"),
        (b'{"status": "completed"', "stdout holds no JSON object"),
        (b'{"loss": NaN}', "stdout holds no JSON object"),
        (b'{"loss": 1e999}', "stdout holds no JSON object"),
        (b'{"step": 3}', "its last JSON object is not a trainer result"),
    ],
)
def test_unusable_outputs_say_why(data: bytes, expected: str) -> None:
    reading = read_result(data, "stdout")
    assert reading.result is None
    assert expected in " ".join(reading.tried)


def test_invalid_utf8_around_a_result_is_tolerated() -> None:
    document = result_for(make_spec(), "failed", failureReason="x")
    data = b"\xff\xfe\x80 log\n" + json.dumps(document).encode() + b"\n\xc3\x28"
    assert read_result(data, "stdout").result is not None


def test_adversarial_nesting_is_scanned_quickly() -> None:
    data = b'{"a":' * 200_000
    started = time.monotonic()
    reading = read_result(data, "stdout")
    assert reading.result is None
    assert time.monotonic() - started < 5


def test_unknown_status_names_the_status() -> None:
    reading = read_result(json.dumps(result_for(make_spec(), "weird")).encode(), "stdout")
    assert reading.result is None
    assert "status" in reading.tried[0]
    assert "'weird'" in reading.tried[0]


# --- judging it -----------------------------------------------------------------


def test_valid_completed_result_registers_the_resolved_artifact() -> None:
    spec = make_spec()
    outcome = assess(
        spec,
        result_for(
            spec,
            artifact={"artifactPath": "adapter", "adapterFormat": "peft-adapter"},
            metrics={"trainLoss": 0.4, "finalLoss": 9.9},
            finalLoss=0.25,
            checkpointRef="ref-1",
            extraDiagnostics={"gpu": "none"},
        ),
    )
    assert outcome.status == "completed"
    assert outcome.artifact_path == f"{OUTPUT_DIR}/adapter"
    assert outcome.metrics == {"trainLoss": 0.4, "finalLoss": 0.25}
    assert outcome.checkpoint_ref == "ref-1"


def test_optional_fields_may_be_null() -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, finalLoss=None, metrics=None, createdAt=None))
    assert outcome.status == "completed"
    assert outcome.metrics == {}


@pytest.mark.parametrize("field", TrainerResult.CHECKED_FIELDS)
def test_each_checked_field_must_match_the_spec(field: str) -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, **{field: "lie"}))
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert f"{field}: expected {getattr(spec, field)!r}, got 'lie'" in outcome.reason


def test_all_mismatches_are_listed() -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, backend="dry-run", codeHash="x", artifact=None))
    assert outcome.reason is not None
    for named in ("backend", "codeHash", "needs an artifact"):
        assert named in outcome.reason


def test_dry_run_only_for_a_dry_run_spec_and_without_artifact() -> None:
    gpu_spec = make_spec()
    refused = assess(gpu_spec, result_for(gpu_spec, "dry_run"))
    assert refused.status == "failed"
    assert refused.reason is not None
    assert "dry_run is only valid for a dry-run spec" in refused.reason
    dry_spec = make_spec("dry-run")
    assert assess(dry_spec, result_for(dry_spec, "dry_run")).status == "dry_run"
    with_artifact = assess(
        dry_spec, result_for(dry_spec, "dry_run", artifact={"artifactPath": "adapter"})
    )
    assert with_artifact.reason is not None
    assert "must carry no artifact" in with_artifact.reason


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        (None, "needs an artifact"),
        ({"artifactPath": "/data/elsewhere"}, "outside the output directory"),
        ({"artifactPath": "../elsewhere"}, "outside the output directory"),
        ({"artifactPath": OUTPUT_DIR}, "outside the output directory"),
        ({"artifactPath": "/data/out-evil/adapter"}, "outside the output directory"),
        ({"artifactPath": "missing"}, "does not exist"),
        ({"artifactPath": "adapter", "adapterFormat": "gguf"}, "adapterFormat"),
    ],
)
def test_completed_needs_a_peft_adapter_inside_the_output_dir(
    artifact: dict[str, str] | None, expected: str
) -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, artifact=artifact))
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert expected in outcome.reason
    assert outcome.artifact_path is None


def test_non_zero_exit_never_completes() -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec), exit_code=3)
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert "trainer exited with code 3 although its result says completed" in outcome.reason
    killed = assess(spec, result_for(spec), exit_code=-9)
    assert killed.reason is not None
    assert "killed by signal 9" in killed.reason


def test_failed_result_keeps_the_trainers_reason() -> None:
    spec = make_spec()
    assert assess(spec, result_for(spec, "failed", failureReason="CUDA OOM")).reason == "CUDA OOM"
    silent = assess(spec, result_for(spec, "failed"), exit_code=2)
    assert silent.reason == (
        "the trainer reported failure without a reason (trainer exited with code 2)"
    )
    lying = assess(spec, result_for(spec, "failed", failureReason="OOM", experimentId="other"))
    assert lying.reason is not None
    assert "experimentId" in lying.reason
    assert "OOM" in lying.reason


def test_metrics_that_no_store_can_hold_are_refused() -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, metrics={"steps": 2**70}))
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert "metrics.steps is out of 64-bit range" in outcome.reason
    surrogate = assess(spec, result_for(spec, metrics={"note": "\ud800"}))
    assert surrogate.reason is not None
    assert "not valid Unicode" in surrogate.reason


def test_the_whole_result_document_is_kept_as_received() -> None:
    spec = make_spec()
    document = result_for(spec, finalLoss=None, extra={"k": [1, None]}, seedOnly="yes")
    outcome = assess(spec, document)
    assert outcome.status == "completed"
    assert outcome.trainer_result == document
    dry = make_spec("dry-run")
    dry_document = result_for(dry, "dry_run", probe={"ok": True})
    assert assess(dry, dry_document).trainer_result == dry_document
    failed = result_for(spec, "failed", failureReason="OOM", node="n3")
    assert assess(spec, failed).trainer_result == failed
    rejected = result_for(spec, backend="unsloth-orpo", note="x")
    assert assess(spec, rejected).status == "failed"
    assert assess(spec, rejected).trainer_result == rejected


def test_a_result_that_no_store_can_hold_is_refused_and_not_kept() -> None:
    spec = make_spec()
    for extra, problem in (
        ({"seed": 2**70}, "seed is out of 64-bit range"),
        ({"log": {"line": "\ud800"}}, "log.line is not valid Unicode text"),
    ):
        outcome = assess(spec, result_for(spec, **extra))
        assert outcome.status == "failed"
        assert outcome.reason is not None
        assert problem in outcome.reason
        assert outcome.trainer_result is None
        # a failed result is recorded as failed either way, without the document
        failed = assess(spec, result_for(spec, "failed", failureReason="OOM", **extra))
        assert (failed.status, failed.reason, failed.trainer_result) == ("failed", "OOM", None)
    # a metrics problem is named once, not again by the whole-document check
    steps = assess(spec, result_for(spec, metrics={"steps": 2**70}))
    assert steps.reason is not None
    assert steps.reason.count("metrics.steps is out of 64-bit range") == 1


def test_reasons_are_storable_and_bounded() -> None:
    spec = make_spec()
    outcome = assess(spec, result_for(spec, "failed", failureReason="\ud800" + "x" * 10_000))
    assert outcome.reason is not None
    assert len(outcome.reason) <= 2000
    outcome.reason.encode("utf-8")


# --- executions -------------------------------------------------------------------


def test_launch_errors_and_timeouts_decide_before_any_output() -> None:
    spec = make_spec()
    document = json.dumps(result_for(spec)).encode()
    launch = assess_exit(spec, TrainerExit(launch_error="trainer script not found: x"), EXISTING)
    assert launch.reason == "trainer script not found: x"
    timeout = TrainerExit(timed_out=True, timeout_seconds=2.5, stdout_tail=document, exit_code=-15)
    assert assess_exit(spec, timeout, EXISTING).reason == "timeout after 2.5 s"


def test_stdout_first_then_the_result_file() -> None:
    spec = make_spec()
    from_file = TrainerExit(
        exit_code=0,
        stdout_tail=b"epoch 1\nepoch 2\n",
        stdout_size=16,
        result_file_path=f"{OUTPUT_DIR}/result-exp-1.json",
        result_file=json.dumps(result_for(spec)).encode(),
    )
    outcome = assess_exit(spec, from_file, EXISTING)
    assert outcome.status == "completed"
    assert outcome.result_source == f"result file {OUTPUT_DIR}/result-exp-1.json"


def test_no_result_anywhere_names_what_was_tried() -> None:
    spec = make_spec()
    finished = TrainerExit(
        exit_code=2,
        stdout_tail=b"x" * 10,
        stdout_size=3_000_000,
        result_file_path="/data/out/result-exp-1.json",
        result_file_note="was not found",
    )
    reason = assess_exit(spec, finished, EXISTING).reason
    assert reason == (
        "no valid trainer result (trainer exited with code 2); tried stdout "
        "(last 10 of 3000000 bytes) holds no JSON object; "
        "result file /data/out/result-exp-1.json was not found"
    )


# --- time limits ----------------------------------------------------------------


def test_timeout_is_the_budget_plus_grace() -> None:
    assert trainer_timeout(make_spec()) == 240 * 60 + 30
    assert trainer_timeout(make_spec(maxWallClockMinutes=1)) == 90


def test_budget_deadline() -> None:
    started = datetime(2025, 1, 1, tzinfo=UTC)
    spec = make_spec(maxWallClockMinutes=2)
    assert budget_deadline(started, spec) == started + timedelta(seconds=150)


def test_a_budget_beyond_the_calendar_has_the_last_moment_as_deadline() -> None:
    started = datetime(2025, 1, 1, tzinfo=UTC)
    for minutes in (1e19, 1e300):
        spec = make_spec(maxWallClockMinutes=minutes)
        assert budget_deadline(started, spec) == datetime.max.replace(tzinfo=UTC)


def test_a_completed_result_for_a_dry_run_spec_fails_the_run() -> None:
    # The seed's rule: a dry run must not produce a deployable checkpoint.
    dry_spec = make_spec("dry-run")
    outcome = assess(dry_spec, result_for(dry_spec, "completed"))
    assert outcome.status == "failed"
    assert outcome.artifact_path is None
    assert outcome.reason is not None
    assert "a dry-run spec must not produce a checkpoint" in outcome.reason
