"""The CLI contract of SPEC §7 for the core verbs, through real processes on a SQLite file.

Exhaustive rule cases live in tests/unit (in-process, memory store); here each
refusal is checked as a user meets it: exit code, one `error:` line on stderr,
the `--json` error document, and nothing recorded (history compared before and
after, or the store's event count).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.support import (
    READER_FAMILY,
    SAMPLE_DATASET,
    Cli,
    eval_summary,
    experiment_args,
    write_artifact,
)
from trainledger.adapters.files import digest_artifact
from trainledger.adapters.store import open_ledger

SPEC_FIELDS = {
    "experimentId",
    "backend",
    "trainingMode",
    "targetWorkerProfile",
    "targetModelFamily",
    "hardwareTier",
    "datasetExportId",
    "datasetExportPath",
    "datasetFingerprint",
    "benchmarkExportId",
    "outputDir",
    "configFingerprint",
    "codeHash",
    "hyperparameters",
    "budget",
    "expectedArtifact",
}
EVENT_FIELDS = {"position", "version", "type", "timestamp", "actor", "payload"}
FINGERPRINT = "a6468e43d3336456"


# --- helpers ------------------------------------------------------------------------


def refuse(cli: Cli, *args: str, code: int = 1, match: str, **env: str) -> dict[str, str]:
    """Run with --json and check the whole error contract; return the error document."""
    result = cli(*args, json_mode=True, **env)
    assert result.code == code, f"{args}: exit {result.code}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{args}: expected one line on stderr, got {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    document = result.json
    assert set(document) == {"error"}
    error: dict[str, str] = document["error"]
    assert set(error) == {"code", "message"}
    assert lines[0] == f"error: {error['message']}"
    assert re.search(match, error["message"]), f"{match!r} not in {error['message']!r}"
    return error


def stored_events(cli: Cli) -> int:
    """How many events the store holds, read in-process."""
    assert cli.store is not None
    ledger = open_ledger(cli.store)
    try:
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def history(cli: Cli, aggregate_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = cli.ok("history", aggregate_id)["events"]
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def write_json(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def eval_options(eval_id: str, **overrides: str) -> list[str]:
    options = {
        "--eval-id": eval_id,
        "--benchmark-id": "bench-1",
        "--family": READER_FAMILY,
        "--mode": "prompt_assisted",
        "--baseline": "0.5",
        "--candidate": "0.75",
        "--verdict": "pass",
        **overrides,
    }
    return [part for option, value in options.items() if value for part in (option, value)]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def running_run_with_checkpoints(cli: Cli, out: Path, count: int = 1) -> tuple[str, list[str]]:
    run_id: str = cli.ok(*experiment_args(out))["trainRunId"]
    cli.ok("run", "start", run_id)
    write_artifact(cli.cwd, "a")
    checkpoints = [
        cli.ok("checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", "a")[
            "checkpointId"
        ]
        for _ in range(count)
    ]
    return run_id, checkpoints


# --- the lifecycle ------------------------------------------------------------------


def test_the_whole_lifecycle_with_json_output(cli: Cli, out: Path, tmp_path: Path) -> None:
    created = cli.ok(*experiment_args(out))

    assert set(created) == {"trainRunId", "experimentId", "spec"}
    run_id, spec = created["trainRunId"], created["spec"]
    assert set(spec) == SPEC_FIELDS
    assert spec["experimentId"] == created["experimentId"]
    assert spec["configFingerprint"] == "dc867911eece7ac3"
    h1 = hashlib.sha256(SAMPLE_DATASET.read_bytes()).hexdigest()[:16]
    assert spec["datasetFingerprint"] == hashlib.sha256(f"{h1}:48".encode()).hexdigest()[:16]
    assert re.fullmatch("[0-9a-f]{16}", spec["codeHash"])
    assert (spec["backend"], spec["trainingMode"], spec["hardwareTier"]) == (
        "dry-run",
        "orpo",
        "cpu-experimental",
    )
    assert (spec["targetWorkerProfile"], spec["targetModelFamily"]) == (
        "local-reader",
        READER_FAMILY,
    )
    assert spec["outputDir"] == str(out)
    assert spec["datasetExportPath"] == str(SAMPLE_DATASET)
    assert spec["expectedArtifact"]["adapterFormat"] == "peft-adapter"
    assert re.fullmatch(
        r"checkpoint-qwen2\.5-7b-reader-\d{13}", spec["expectedArtifact"]["checkpointName"]
    )
    assert spec["hyperparameters"] == {
        "learningRate": 0.0003,
        "batchSize": 2,
        "gradientAccumulation": 8,
        "loraRank": 16,
        "loraAlpha": 32,
        "loraDropout": 0.05,
        "warmupRatio": 0.1,
        "maxSteps": 1000,
        "maxSeqLength": 2048,
    }
    assert spec["budget"] == {"maxWallClockMinutes": 240, "maxTrainTokens": 2_000_000}

    started = cli.ok("run", "start", run_id)
    assert (started["trainRunId"], started["status"]) == (run_id, "running")
    assert started["startedAt"].endswith("Z")

    artifact = out / "adapter"
    artifact.mkdir(parents=True)
    (artifact / "adapter_config.json").write_text('{"r": 16}')
    registered = cli.ok(
        "checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", str(artifact)
    )
    checkpoint_id = registered["checkpointId"]
    assert registered["trainRunId"] == run_id
    assert registered["deployable"] is False
    assert registered["artifactPath"] == str(artifact)
    assert registered["artifactDigest"] == digest_artifact(str(artifact))

    completed = cli.ok("run", "complete", run_id)
    assert completed["status"] == "completed"
    assert completed["completedAt"] >= completed["startedAt"]
    assert completed["checkpointIds"] == [checkpoint_id]

    eval_file = write_json(tmp_path / "eval.json", eval_summary(checkpoint_id))
    attached = cli.ok("eval", "attach", checkpoint_id, "--file", eval_file, "--mark-deployable")
    assert attached["deployable"] is True
    assert attached["currentEvalId"] == "eval-1"
    assert attached["currentEval"]["delta"] == 0.25
    (marked,) = attached["deployabilityHistory"]
    assert (marked["deployable"], marked["evalId"], marked["actor"]) == (True, "eval-1", "tester")

    run_events = history(cli, run_id)
    assert types(run_events) == ["Registered", "Started", "CheckpointLinked", "Completed"]
    for event in run_events:
        assert set(event) >= EVENT_FIELDS
        assert event["actor"] == "tester"
        assert datetime.fromisoformat(event["timestamp"]).utcoffset() is not None
        assert event["timestamp"].endswith("Z")
    assert [e["version"] for e in run_events] == [1, 2, 3, 4]
    assert all(a["position"] < b["position"] for a, b in pairwise(run_events))
    assert run_events[0]["payload"]["spec"] == spec
    assert run_events[2]["payload"]["checkpointId"] == checkpoint_id

    revoked = cli.ok("checkpoint", "revoke", checkpoint_id, "--reason", "regression in prod")
    assert revoked["deployable"] is False
    assert revoked["currentEvalId"] == "eval-1"
    assert revoked["evals"] == attached["evals"]
    assert [c["deployable"] for c in revoked["deployabilityHistory"]] == [True, False]

    checkpoint_events = history(cli, checkpoint_id)
    assert types(checkpoint_events) == [
        "Registered",
        "EvalAttached",
        "MarkedDeployable",
        "DeployabilityRevoked",
    ]
    assert checkpoint_events[1]["payload"]["eval"] == attached["currentEval"]
    assert checkpoint_events[3]["payload"]["reason"] == "regression in prod"
    assert checkpoint_events[1]["position"] + 1 == checkpoint_events[2]["position"]


def test_a_pending_run_can_be_abandoned_with_a_reason(cli: Cli, out: Path) -> None:
    run_id = cli.ok(*experiment_args(out))["trainRunId"]
    text = cli("run", "show", run_id)
    assert text.code == 0
    assert re.search(rf"trainRunId\s+{run_id}", text.stdout)
    assert re.search(r"status\s+pending", text.stdout)

    failed = cli.ok("run", "fail", run_id, "--reason", "dataset withdrawn")
    assert (failed["status"], failed["failureReason"]) == ("failed", "dataset withdrawn")
    events = history(cli, run_id)
    assert types(events) == ["Registered", "Failed"]
    assert events[1]["payload"]["reason"] == "dataset withdrawn"


# --- run lifecycle refusals ---------------------------------------------------------


def test_invalid_transitions_are_refused_and_record_nothing(cli: Cli, out: Path) -> None:
    run_id = cli.ok(*experiment_args(out))["trainRunId"]
    register = ("checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", "a")

    before = history(cli, run_id)
    error = refuse(
        cli,
        "run",
        "complete",
        run_id,
        match=r"is pending; cannot move to completed \(allowed from pending: running, failed\)",
    )
    assert error["code"] == "invalid_transition"
    refuse(cli, *register, match="is pending; checkpoints can only be registered while")
    refuse(cli, "run", "fail", run_id, "--reason", " ", match="a failure reason is required")
    plain = cli.refused("run", "complete", run_id)
    assert plain.stdout == ""
    assert history(cli, run_id) == before

    cli.ok("run", "start", run_id)
    before = history(cli, run_id)
    refuse(cli, "run", "start", run_id, match=r"is running; cannot move to running \(allowed")
    refuse(
        cli,
        "checkpoint",
        "register",
        run_id,
        "--family",
        "Qwen2.5-7b-reader",
        "--artifact",
        "a",
        match="checkpoint family 'Qwen2.5-7b-reader' differs from run family",
    )
    assert history(cli, run_id) == before

    cli.ok("run", "complete", run_id)
    before = history(cli, run_id)
    terminal = r"\(allowed from completed: none \(terminal state\)\)"
    refuse(cli, "run", "start", run_id, match=f"cannot move to running {terminal}")
    refuse(cli, "run", "complete", run_id, match=f"cannot move to completed {terminal}")
    refuse(cli, "run", "fail", run_id, "--reason", "late", match=f"to failed {terminal}")
    refuse(cli, *register, match="is completed; checkpoints can only be registered")
    assert history(cli, run_id) == before


# --- experiment create refusals -------------------------------------------------------

CREATE_REFUSALS: list[tuple[str, dict[str, str], list[str], str, str]] = [
    # An enumerated option outside its choices is a usage error (issue 15, item 19).
    (
        "unknown backend",
        {"--backend": "bogus"},
        [],
        "usage",
        "'bogus' is not one of 'peft-trl-orpo', 'unsloth-orpo', 'dry-run'",
    ),
    ("unknown tier", {"--tier": "tpu"}, [], "usage", "'tpu' is not one of 'consumer-gpu'"),
    (
        "unknown profile",
        {"--profile": "local-writer"},
        [],
        "usage",
        "'local-writer' is not one of 'local-reader', 'local-editor'",
    ),
    (
        "local-editor not enabled",
        {"--profile": "local-editor", "--family": "code-editor"},
        [],
        "profile_not_enabled",
        "TRAINLEDGER_ENABLE_LOCAL_EDITOR=1",
    ),
    (
        "family not a reader",
        {"--family": "thread-model"},
        [],
        "family_not_valid_for_profile",
        "model family 'thread-model' is not valid for profile 'local-reader'",
    ),
    (
        "cpu tier with a real backend",
        {"--backend": "peft-trl-orpo", "--tier": "cpu-experimental"},
        [],
        "invalid_hardware_tier",
        "only allowed with backend 'dry-run'",
    ),
    ("hp not a number", {}, ["--hp", "learningRate=fast"], "invalid_input", "not a number"),
    ("hp without =", {}, ["--hp", "learningRate"], "invalid_input", "expected KEY=VALUE"),
    (
        "hp unknown key",
        {},
        ["--hp", "learning_rate=0.1"],
        "invalid_input",
        "unknown hyperparameter key[(]s[)]: learning_rate",
    ),
    ("hp loraRank too big", {}, ["--hp", "loraRank=2000"], "invalid_input", "loraRank"),
    ("hp NaN", {}, ["--hp", "maxSteps=NaN"], "invalid_input", "maxSteps must be finite"),
    ("hp huge int", {}, ["--hp", "maxSteps=1" + "0" * 400], "invalid_input", "must be finite"),
    ("budget zero", {}, ["--budget-minutes", "0"], "invalid_input", "maxWallClockMinutes"),
    ("budget nan", {}, ["--budget-minutes", "nan"], "invalid_input", "must be finite"),
    (
        "missing dataset",
        {"--dataset": "missing.jsonl"},
        [],
        "dataset_unreadable",
        "dataset 'missing.jsonl' does not exist",
    ),
    (
        "enum checked before the dataset is read",
        {"--dataset": "missing.jsonl", "--backend": "bogus"},
        [],
        "usage",
        "'bogus' is not one of",
    ),
    (
        "malformed dataset fingerprint",
        {"--dataset": "", "--dataset-fingerprint": "XYZ"},
        [],
        "invalid_input",
        "16 lowercase hex",
    ),
    (
        "negative sample count",
        {"--dataset": "", "--dataset-fingerprint": FINGERPRINT, "--sample-count": "-1"},
        [],
        "invalid_input",
        "sample count must be >= 0",
    ),
    (
        "sample count beyond 64 bits",
        {"--dataset": "", "--dataset-fingerprint": FINGERPRINT, "--sample-count": "9" * 25},
        [],
        "invalid_input",
        "sample count is too large",
    ),
    (
        "hyperparameter beyond 64 bits",
        {},
        ["--hp", "maxSteps=" + "9" * 25],
        "invalid_input",
        "hyperparameter maxSteps is too large",
    ),
    (
        "budget beyond 64 bits",
        {},
        ["--budget-tokens", "9" * 25],
        "invalid_input",
        "budget maxTrainTokens is too large",
    ),
]


@pytest.mark.parametrize(
    ("options", "extra", "error_code", "match"),
    [case[1:] for case in CREATE_REFUSALS],
    ids=[case[0] for case in CREATE_REFUSALS],
)
def test_experiment_create_refusals(
    cli: Cli, out: Path, options: dict[str, str], extra: list[str], error_code: str, match: str
) -> None:
    code = 2 if error_code == "usage" else 1
    error = refuse(cli, *experiment_args(out, **options), *extra, code=code, match=match)
    assert error["code"] == error_code
    assert stored_events(cli) == 0


def test_local_editor_when_enabled_still_needs_an_editor_family(cli: Cli, out: Path) -> None:
    refuse(
        cli,
        *experiment_args(out, **{"--profile": "local-editor", "--family": "credit-scorer"}),
        match="'credit-scorer' is not valid for profile 'local-editor'",
        TRAINLEDGER_ENABLE_LOCAL_EDITOR="1",
    )
    editor = experiment_args(out, **{"--profile": "local-editor", "--family": "code-editor-7b"})
    created = cli.ok(*editor, TRAINLEDGER_ENABLE_LOCAL_EDITOR="1")
    assert created["spec"]["targetWorkerProfile"] == "local-editor"
    assert stored_events(cli) == 1


def test_hyperparameter_and_budget_overrides_reach_the_spec(cli: Cli, out: Path) -> None:
    args = [*experiment_args(out, **{"--backend": "peft-trl-orpo"}), "--hp", "learningRate=1e-7"]
    created = cli.ok(*args, "--hp", "maxSteps=10", "--budget-minutes", "5")
    spec = created["spec"]
    assert spec["hardwareTier"] == "consumer-gpu"
    assert spec["hyperparameters"]["learningRate"] == 1e-7
    assert spec["hyperparameters"]["maxSteps"] == 10
    assert spec["hyperparameters"]["batchSize"] == 2
    assert spec["budget"] == {"maxWallClockMinutes": 5, "maxTrainTokens": 2_000_000}
    assert spec["configFingerprint"] != "dc867911eece7ac3"


# --- usage errors ---------------------------------------------------------------------

USAGE_ERRORS: list[tuple[str, dict[str, str], list[str], str]] = [
    (
        "both dataset sources",
        {},
        ["--dataset-fingerprint", FINGERPRINT],
        "exactly one of --dataset or --dataset-fingerprint",
    ),
    ("no dataset source", {"--dataset": ""}, [], "exactly one of --dataset or"),
    ("sample count without fingerprint", {}, ["--sample-count", "3"], "--sample-count goes"),
    ("missing option", {"--family": ""}, [], "Missing option '--family'"),
    ("not an integer", {}, ["--budget-tokens", "many"], "'many' is not a valid integer"),
    ("unknown option", {}, ["--colour", "red"], "No such option.*--colour"),
]


@pytest.mark.parametrize(
    ("options", "extra", "match"),
    [case[1:] for case in USAGE_ERRORS],
    ids=[case[0] for case in USAGE_ERRORS],
)
def test_experiment_create_usage_errors_exit_2(
    cli: Cli, out: Path, options: dict[str, str], extra: list[str], match: str
) -> None:
    error = refuse(cli, *experiment_args(out, **options), *extra, code=2, match=match)
    assert error["code"] == "usage"
    assert stored_events(cli) == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["run", "start"], "Missing argument 'RUN_ID'"),
        (["run", "fail", str(uuid4())], "Missing option '--reason'"),
        (["checkpoint", "revoke", str(uuid4())], "Missing option '--reason'"),
        (["schema", "bogus"], "'bogus' is not one of"),
        (["events", "--after", "9" * 25], "Invalid value for '--after'"),
        (["run", "list", "--limit", "9" * 25], "Invalid value for '--limit'"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str], match: str) -> None:
    refuse(cli, *args, code=2, match=match)


# --- unknown ids ----------------------------------------------------------------------


def test_unknown_and_malformed_ids_are_not_found(cli: Cli, out: Path) -> None:
    run_id = cli.ok(*experiment_args(out))["trainRunId"]
    before = history(cli, run_id)
    nobody = str(uuid4())
    refuse(cli, "run", "start", nobody, match=f"training run {nobody} not found")
    refuse(cli, "run", "show", "not-a-uuid", match="training run not-a-uuid not found")
    refuse(cli, "checkpoint", "show", run_id, match=f"checkpoint {run_id} not found")
    error = refuse(cli, "history", "12345", match="no run or checkpoint with id 12345")
    assert error["code"] == "not_found"
    assert history(cli, run_id) == before
    assert stored_events(cli) == 1


# --- eval refusals ----------------------------------------------------------------------


def test_eval_refusals_record_nothing(cli: Cli, out: Path, tmp_path: Path) -> None:
    run_id, (checkpoint, other) = running_run_with_checkpoints(cli, out, count=2)
    cli.ok("eval", "attach", other, *eval_options("used-eval"))
    before = {aid: history(cli, aid) for aid in (run_id, checkpoint, other)}

    numbers = iter(range(1000))

    def file_with(text: str) -> str:
        path = tmp_path / f"eval-{next(numbers)}.json"
        path.write_text(text)
        return str(path)

    valid = eval_summary(checkpoint, "eval-new")
    attach = ("eval", "attach", checkpoint)
    nobody = str(uuid4())
    for args, error_code, match in [
        (("eval", "attach", nobody, *eval_options("e")), "not_found", f"checkpoint {nobody}"),
        (("eval", "attach", "junk", *eval_options("e")), "not_found", "checkpoint junk"),
        (
            (*attach, "--file", file_with('{"evalId": "e", ')),
            "invalid_input",
            "is not valid JSON",
        ),
        ((*attach, "--file", str(tmp_path / "absent.json")), "invalid_input", "cannot read"),
        ((*attach, "--file", file_with("[1, 2]")), "invalid_input", "must hold a JSON object"),
        (
            (*attach, "--file", file_with(json.dumps(eval_summary(other, "eval-new")))),
            "eval_refused",
            f"names checkpoint {other}, not {checkpoint}",
        ),
        (
            (*attach, *eval_options("e", **{"--family": "phi-mini"})),
            "family_mismatch",
            "eval family 'phi-mini' differs from checkpoint family",
        ),
        (
            (*attach, *eval_options("used-eval")),
            "duplicate_eval",
            "evalId used-eval was already used",
        ),
        (
            (*attach, "--file", file_with(json.dumps({**valid, "baselineScore": float("nan")}))),
            "invalid_input",
            "NaN is not a finite number",
        ),
        (
            (*attach, "--file", file_with(json.dumps({**valid, "delta": float("inf")}))),
            "invalid_input",
            "Infinity is not a finite number",
        ),
        (
            (*attach, "--file", file_with(json.dumps(valid).replace("0.75", "1e999"))),
            "eval_refused",
            "candidateScore: Input should be a finite number",
        ),
        (
            (*attach, *eval_options("e", **{"--baseline": "nan"})),
            "eval_refused",
            "baselineScore: Input should be a finite number",
        ),
        (
            (*attach, *eval_options("e"), "--delta", "0.3"),
            "eval_refused",
            "delta 0.3 differs from candidateScore - baselineScore",
        ),
        (
            (*attach, *eval_options("e"), "--mark-deployable"),
            "not_deployable",
            f"run {run_id} is running, not completed",
        ),
    ]:
        error = refuse(cli, *args, match=match)
        assert error["code"] == error_code, (args, error)

    usage = [
        (*attach, "--file", file_with(json.dumps(valid)), "--eval-id", "e"),
        (*attach, "--eval-id", "e", "--verdict", "pass"),
    ]
    for args in usage:
        refuse(cli, *args, code=2, match="--file")
    # An enumerated option outside its choices is a usage error (issue 15, item 19).
    for args, match in (
        (
            (*attach, *eval_options("e", **{"--mode": "zero_shot"})),
            "'zero_shot' is not one of 'prompt_assisted', 'reduced_prompt'",
        ),
        (
            (*attach, *eval_options("e", **{"--verdict": "maybe"})),
            "'maybe' is not one of 'pass', 'fail', 'compare_only'",
        ),
    ):
        assert refuse(cli, *args, code=2, match=match)["code"] == "usage"

    assert {aid: history(cli, aid) for aid in before} == before


def test_a_checkpoint_whose_artifact_did_not_exist_is_never_deployable(cli: Cli, out: Path) -> None:
    run_id = cli.ok(*experiment_args(out))["trainRunId"]
    cli.ok("run", "start", run_id)
    register = ("checkpoint", "register", run_id, "--family", READER_FAMILY)
    checkpoint = cli.ok(*register, "--artifact", "no-such-adapter")["checkpointId"]
    cli.ok("run", "complete", run_id)
    before = history(cli, checkpoint)
    attach = ("eval", "attach", checkpoint, *eval_options("e-1"), "--mark-deployable")
    error = refuse(cli, *attach, match="no recorded artifact digest")
    assert error["code"] == "not_deployable"
    cli.ok("eval", "attach", checkpoint, *eval_options("e-1"))
    refuse(cli, "checkpoint", "mark-deployable", checkpoint, match="no recorded artifact digest")
    assert cli.ok("checkpoint", "show", checkpoint)["deployable"] is False
    assert len(history(cli, checkpoint)) == len(before) + 1  # only the eval


def test_mark_deployable_and_revoke_rules(cli: Cli, out: Path) -> None:
    run_id, (checkpoint,) = running_run_with_checkpoints(cli, out)
    before = history(cli, checkpoint)
    refuse(cli, "checkpoint", "mark-deployable", checkpoint, match="has no eval; attach one")
    refuse(cli, "checkpoint", "revoke", checkpoint, "--reason", "x", match="is not deployable")
    assert history(cli, checkpoint) == before

    cli.ok("eval", "attach", checkpoint, *eval_options("e-pass"))
    error = refuse(
        cli, "checkpoint", "mark-deployable", checkpoint, match="is running, not completed"
    )
    assert error["code"] == "not_deployable"
    cli.ok("run", "complete", run_id)
    cli.ok("eval", "attach", checkpoint, *eval_options("e-fail", **{"--verdict": "fail"}))
    before = history(cli, checkpoint)
    refuse(
        cli,
        "checkpoint",
        "mark-deployable",
        checkpoint,
        match="current eval e-fail has verdict fail",
    )
    assert history(cli, checkpoint) == before

    cli.ok("eval", "attach", checkpoint, *eval_options("e-pass-2", **{"--verdict": "compare_only"}))
    marked = cli.ok("checkpoint", "mark-deployable", checkpoint)
    assert (marked["deployable"], marked["deployabilityHistory"][0]["evalId"]) == (True, "e-pass-2")
    before = history(cli, checkpoint)
    refuse(cli, "checkpoint", "mark-deployable", checkpoint, match="already deployable")
    refuse(cli, "checkpoint", "revoke", checkpoint, "--reason", "", match="reason is required")
    assert history(cli, checkpoint) == before

    failing = eval_options("e-fail-2", **{"--verdict": "fail", "--candidate": "0.1"})
    revoked = cli.ok("eval", "attach", checkpoint, *failing)
    assert revoked["deployable"] is False
    assert "e-fail-2" in revoked["deployabilityHistory"][-1]["reason"]
    events = history(cli, checkpoint)
    assert types(events)[-2:] == ["EvalAttached", "DeployabilityRevoked"]
    assert events[-1]["position"] == events[-2]["position"] + 1
    assert [e["evalId"] for e in revoked["evals"]] == ["e-pass", "e-fail", "e-pass-2", "e-fail-2"]


# --- idempotency and actors ---------------------------------------------------------------


def test_repeats_with_an_idempotency_key_return_the_first_outcome(cli: Cli, out: Path) -> None:
    create = [*experiment_args(out), "--idempotency-key", "create-1"]
    first = cli(*create, json_mode=True)
    again = cli(*create, json_mode=True)
    assert first.code == again.code == 0
    assert again.stdout == first.stdout
    run_id = first.json["trainRunId"]

    start = ("run", "start", run_id, "--idempotency-key", "start-1")
    assert cli.ok(*start) == cli.ok(*start)
    register = ("checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", "a")
    checkpoint = cli.ok(*register)["checkpointId"]
    attach = ("eval", "attach", checkpoint, *eval_options("e-1"), "--idempotency-key", "eval-1")
    assert cli.ok(*attach) == cli.ok(*attach)

    error = refuse(
        cli, "run", "fail", run_id, "--reason", "x", "--idempotency-key", "start-1", match="k"
    )
    assert error["code"] == "idempotency_key_reused"
    assert "'start-1' was already used for a different command" in error["message"]

    run_events = history(cli, run_id)
    assert types(run_events) == ["Registered", "Started", "CheckpointLinked"]
    assert [e["idempotencyKey"] for e in run_events] == ["create-1", "start-1", None]
    assert types(history(cli, checkpoint)) == ["Registered", "EvalAttached"]
    assert stored_events(cli) == 5


def test_the_actor_comes_from_the_option_the_environment_or_the_os_user(
    cli: Cli, out: Path
) -> None:
    run_id = cli.ok("--actor", "alice", *experiment_args(out))["trainRunId"]
    cli.ok("run", "start", run_id, TRAINLEDGER_ACTOR="bob")
    cli.ok("--actor", "carol", "run", "fail", run_id, "--reason", "x", TRAINLEDGER_ACTOR="bob")
    os_user = {"TRAINLEDGER_ACTOR": "", "LOGNAME": "dora", "USER": "dora", "USERNAME": "dora"}
    other = cli.ok(*experiment_args(out), **os_user)["trainRunId"]

    assert [e["actor"] for e in history(cli, run_id)] == ["alice", "bob", "carol"]
    assert [e["actor"] for e in history(cli, other)] == ["dora"]


# --- the store ---------------------------------------------------------------------------


def test_a_reopened_store_returns_everything_written(
    cli: Cli, out: Path, tmp_path: Path, sqlite_url: str
) -> None:
    run_id, (checkpoint,) = running_run_with_checkpoints(cli, out)
    cli.ok("run", "complete", run_id)
    written = cli.ok("eval", "attach", checkpoint, *eval_options("e-1"), "--mark-deployable")

    from_env = Cli(None, cwd=tmp_path)
    reopened = {"TRAINLEDGER_STORE": sqlite_url}
    assert from_env.ok("checkpoint", "show", checkpoint, **reopened) == written
    run = from_env.ok("run", "show", run_id, **reopened)
    assert (run["status"], run["checkpointIds"]) == ("completed", [checkpoint])
    run_events = from_env.ok("history", run_id, **reopened)["events"]
    assert types(run_events) == ["Registered", "Started", "CheckpointLinked", "Completed"]

    ledger = open_ledger(sqlite_url)
    try:
        assert ledger.show_checkpoint(checkpoint) == written
        assert ledger.history(run_id)["events"] == run_events
    finally:
        ledger.close()


def test_the_store_directory_is_created_on_first_use(tmp_path: Path, out: Path) -> None:
    relative = Cli("sqlite:///nested/deeper/ledger.db", cwd=tmp_path)
    run_id = relative.ok(*experiment_args(out))["trainRunId"]
    assert (tmp_path / "nested" / "deeper" / "ledger.db").is_file()

    default = Cli(None, cwd=tmp_path)
    other = default.ok(*experiment_args(out))["trainRunId"]
    assert (tmp_path / ".trainledger" / "ledger.db").is_file()
    refuse(default, "run", "show", run_id, match="not found")
    assert default.ok("run", "show", other)["status"] == "pending"


def test_store_problems_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "corrupt.db").write_text("this is not a database")
    corrupt = Cli("sqlite:///corrupt.db", cwd=tmp_path)
    error = refuse(corrupt, "run", "show", str(uuid4()), match="corrupt.db")
    assert error["code"] == "store_error"
    unsupported = Cli("ftp://example.org/ledger", cwd=tmp_path)
    refuse(unsupported, "run", "show", str(uuid4()), match="unsupported store URL")


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        (
            "spec",
            {"configFingerprint", "expectedArtifact", "hyperparameters", "datasetFingerprint"},
        ),
        ("result", {"status", "artifact", "configFingerprint", "experimentId"}),
        ("eval", {"evalId", "checkpointId", "baselineScore", "candidateScore", "delta", "verdict"}),
    ],
)
def test_schema_prints_a_json_schema_of_the_contract(cli: Cli, name: str, fields: set[str]) -> None:
    result = cli("schema", name)
    assert result.code == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert fields <= set(schema["properties"])
    assert set(schema["required"]) <= set(schema["properties"])
    if name == "eval":
        assert schema["properties"]["verdict"]["enum"] == ["pass", "fail", "compare_only"]
        assert schema["additionalProperties"] is False
        assert "delta" not in schema["required"], "delta may be omitted (SPEC §3.4)"
