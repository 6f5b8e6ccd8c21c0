"""The aggregates alone: run state machine, checkpoints, evals, deployability, hash chain."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise
from typing import Any
from uuid import uuid4

import pytest

from trainledger.adapters.canonical_json import orjson_canonical_json
from trainledger.domain.aggregate import _command_context
from trainledger.domain.chain import GENESIS_HASH, canonical_json, chain_hash, stored_state
from trainledger.domain.contract import EvalSummary
from trainledger.domain.errors import (
    ControlCharacterError,
    DeployabilityError,
    EvalRefusedError,
    FamilyMismatchError,
    InvalidTransitionError,
    ValidationError,
)
from trainledger.domain.experiment import DatasetDigest, ExperimentRequest, build_spec
from trainledger.domain.model import (
    Checkpoint,
    DomainEvent,
    LedgerAggregate,
    TrainingRun,
    command_context,
)

FAMILY = "qwen2.5-7b-reader"


@pytest.fixture(autouse=True)
def acting_as_alice() -> Iterator[None]:
    with command_context("alice", "key-1"):
        yield


def new_run(family: str = FAMILY) -> TrainingRun:
    spec = build_spec(
        ExperimentRequest(
            profile="local-reader",
            family=family,
            backend="dry-run",
            benchmark_export_id="bench-1",
            output_dir="/runs/out",
        ),
        lambda: DatasetDigest("a6468e43d3336456", 48, None),
        experiment_id=str(uuid4()),
        now_ms=1_700_000_000_000,
        local_editor_enabled=False,
    )
    return TrainingRun.register(uuid4(), spec, 48)


def run_in(status: str) -> TrainingRun:
    run = new_run()
    if status in ("running", "completed", "failed-while-running"):
        run.start(host="gpu-1", pid=4242)
    if status == "completed":
        run.complete()
    if status.startswith("failed"):
        run.fail("out of memory")
    return run


def new_checkpoint(run: TrainingRun | None = None) -> Checkpoint:
    return Checkpoint.register(
        uuid4(),
        run or run_in("running"),
        family=FAMILY,
        artifact_path="/runs/out/adapter",
        artifact_digest="sha256:" + "ab" * 32,
    )


def summary(checkpoint: Checkpoint, eval_id: str = "eval-1", **overrides: Any) -> EvalSummary:
    return EvalSummary.model_validate(
        {
            "evalId": eval_id,
            "checkpointId": str(checkpoint.id),
            "benchmarkId": "bench-1",
            "targetModelFamily": FAMILY,
            "mode": "prompt_assisted",
            "baselineScore": 0.5,
            "candidateScore": 0.75,
            "verdict": "pass",
            **overrides,
        }
    )


def deployable_checkpoint() -> tuple[Checkpoint, TrainingRun]:
    run = run_in("running")
    checkpoint = new_checkpoint(run)
    run.complete()
    checkpoint.attach_eval(summary(checkpoint))
    checkpoint.mark_deployable(run)
    return checkpoint, run


def event_types(aggregate: LedgerAggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def assert_refused_without_change(
    aggregate: LedgerAggregate,
    command: Callable[[], object],
    error: type[Exception],
    match: str,
) -> None:
    aggregate.collect_events()
    version, state = aggregate.version, dict(vars(aggregate))
    with pytest.raises(error, match=match):
        command()
    assert aggregate.collect_events() == []
    assert aggregate.version == version
    assert vars(aggregate) == state


# --- training run lifecycle -------------------------------------------------------


def test_a_new_run_is_pending_and_holds_its_spec() -> None:
    run = new_run()
    assert run.status == "pending"
    assert run.spec.targetModelFamily == FAMILY
    assert run.sample_count == 48
    assert run.checkpoint_ids == []
    assert event_types(run) == ["Registered"]


def test_the_happy_path_records_each_transition_with_its_time() -> None:
    run = new_run()
    run.start(host="gpu-1", pid=4242, trainer_log_path="/runs/out/trainer.log")
    run.complete()
    events = run.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "Started", "Completed"]
    started, completed = events[1], events[2]
    assert isinstance(started, TrainingRun.Started)
    assert (started.host, started.pid) == ("gpu-1", 4242)
    assert run.started_at == started.timestamp
    assert run.completed_at == completed.timestamp
    assert (run.host, run.pid, run.trainer_log_path) == ("gpu-1", 4242, "/runs/out/trainer.log")
    assert run.status == "completed"


@pytest.mark.parametrize("status", ["pending", "running"])
def test_pending_and_running_runs_can_fail_with_a_reason(status: str) -> None:
    run = run_in(status)
    run.collect_events()
    run.fail("dataset corrupt")
    (failed,) = run.collect_events()
    assert isinstance(failed, TrainingRun.Failed)
    assert failed.reason == "dataset corrupt"
    assert (run.status, run.failure_reason, run.failed_at) == (
        "failed",
        "dataset corrupt",
        failed.timestamp,
    )


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_failing_needs_a_reason(reason: str) -> None:
    run = run_in("running")
    assert_refused_without_change(run, lambda: run.fail(reason), ValidationError, "reason")


TRANSITIONS = {
    "start": lambda run: run.start(),
    "complete": lambda run: run.complete(),
    "fail": lambda run: run.fail("late"),
}
ALLOWED = {
    ("pending", "start"),
    ("pending", "fail"),
    ("running", "complete"),
    ("running", "fail"),
}
ALLOWED_TEXT = {
    "pending": "running, failed",
    "running": "completed, failed",
    "completed": "none (terminal state)",
    "failed": "none (terminal state)",
    "failed-while-running": "none (terminal state)",
}
TARGET = {"start": "running", "complete": "completed", "fail": "failed"}


@pytest.mark.parametrize("command", sorted(TRANSITIONS))
@pytest.mark.parametrize("status", sorted(ALLOWED_TEXT))
def test_every_transition_is_allowed_or_refused_naming_current_and_allowed_states(
    status: str, command: str
) -> None:
    run = run_in(status)
    current = run.status
    if (status, command) in ALLOWED:
        TRANSITIONS[command](run)
        assert run.status == TARGET[command]
        return
    assert_refused_without_change(
        run,
        lambda: TRANSITIONS[command](run),
        InvalidTransitionError,
        re.escape(
            f"is {current}; cannot move to {TARGET[command]} "
            f"(allowed from {current}: {ALLOWED_TEXT[status]})"
        ),
    )


# --- checkpoints ------------------------------------------------------------------


def test_registering_a_checkpoint_links_it_to_its_run() -> None:
    run = run_in("running")
    run.collect_events()
    checkpoint = new_checkpoint(run)

    assert event_types(checkpoint) == ["Registered"]
    (linked,) = run.collect_events()
    assert isinstance(linked, TrainingRun.CheckpointLinked)
    assert linked.checkpoint_id == checkpoint.id
    assert run.checkpoint_ids == [checkpoint.id]
    assert checkpoint.train_run_id == run.id
    assert checkpoint.artifact_path == "/runs/out/adapter"
    assert checkpoint.artifact_digest == "sha256:" + "ab" * 32


def test_a_new_checkpoint_is_never_deployable() -> None:
    checkpoint = new_checkpoint()
    assert checkpoint.deployable is False
    assert checkpoint.current_eval is None
    assert checkpoint.deployability_history == []


def test_one_run_may_produce_several_checkpoints() -> None:
    run = run_in("running")
    first, second = new_checkpoint(run), new_checkpoint(run)
    assert run.checkpoint_ids == [first.id, second.id]


@pytest.mark.parametrize("family", ["Qwen2.5-7b-reader", "qwen2.5-7b-reader ", "claude-haiku"])
def test_a_checkpoint_family_must_equal_the_runs_exactly(family: str) -> None:
    run = run_in("running")
    assert_refused_without_change(
        run,
        lambda: Checkpoint.register(
            uuid4(), run, family=family, artifact_path="/a", artifact_digest=None
        ),
        FamilyMismatchError,
        "differs from run family",
    )


@pytest.mark.parametrize("status", ["pending", "completed", "failed", "failed-while-running"])
def test_checkpoints_are_registered_only_while_the_run_is_running(status: str) -> None:
    run = run_in(status)
    assert_refused_without_change(
        run,
        lambda: new_checkpoint(run),
        InvalidTransitionError,
        f"is {run.status}; checkpoints can only be registered while it is running",
    )


def test_a_checkpoint_needs_an_artifact_path() -> None:
    run = run_in("running")
    assert_refused_without_change(
        run,
        lambda: Checkpoint.register(
            uuid4(), run, family=FAMILY, artifact_path=" ", artifact_digest=None
        ),
        ValidationError,
        "artifact path",
    )


# --- evals ------------------------------------------------------------------------


def test_the_latest_eval_is_current_and_every_eval_is_kept() -> None:
    checkpoint = new_checkpoint()
    checkpoint.collect_events()
    checkpoint.attach_eval(summary(checkpoint, "eval-1"))
    checkpoint.attach_eval(summary(checkpoint, "eval-2", verdict="compare_only"))
    assert event_types(checkpoint) == ["EvalAttached", "EvalAttached"]
    assert [e.evalId for e in checkpoint.evals] == ["eval-1", "eval-2"]
    assert checkpoint.current_eval is not None
    assert checkpoint.current_eval.evalId == "eval-2"


def test_an_eval_naming_another_checkpoint_is_refused() -> None:
    checkpoint = new_checkpoint()
    other = str(uuid4())
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.attach_eval(summary(checkpoint, checkpointId=other)),
        EvalRefusedError,
        f"names checkpoint {other}, not {checkpoint.id}",
    )


def test_an_eval_for_another_family_is_refused() -> None:
    checkpoint = new_checkpoint()
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.attach_eval(summary(checkpoint, targetModelFamily="phi-mini")),
        FamilyMismatchError,
        "eval family 'phi-mini' differs from checkpoint family",
    )


def test_an_eval_id_is_used_once_per_checkpoint() -> None:
    checkpoint = new_checkpoint()
    checkpoint.attach_eval(summary(checkpoint, "eval-1"))
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.attach_eval(summary(checkpoint, "eval-1", verdict="fail")),
        EvalRefusedError,
        "eval-1 was already used",
    )


def test_a_failing_eval_on_a_deployable_checkpoint_revokes_in_the_same_command() -> None:
    checkpoint, _ = deployable_checkpoint()
    checkpoint.collect_events()
    checkpoint.attach_eval(summary(checkpoint, "eval-2", verdict="fail", candidateScore=0.1))

    events = checkpoint.collect_events()
    assert [type(e).__name__ for e in events] == ["EvalAttached", "DeployabilityRevoked"]
    revoked = events[1]
    assert isinstance(revoked, Checkpoint.DeployabilityRevoked)
    assert revoked.eval_id == "eval-2"
    assert "eval-2" in revoked.reason
    assert checkpoint.deployable is False
    assert [e.evalId for e in checkpoint.evals] == ["eval-1", "eval-2"]


def test_a_failing_eval_on_a_checkpoint_that_is_not_deployable_revokes_nothing() -> None:
    checkpoint = new_checkpoint()
    checkpoint.collect_events()
    checkpoint.attach_eval(summary(checkpoint, verdict="fail"))
    assert event_types(checkpoint) == ["EvalAttached"]
    assert checkpoint.deployability_history == []


# --- deployability ------------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["pass", "compare_only"])
def test_marking_deployable_records_the_eval_it_rests_on(verdict: str) -> None:
    run = run_in("running")
    checkpoint = new_checkpoint(run)
    run.complete()
    checkpoint.attach_eval(summary(checkpoint, verdict=verdict))
    checkpoint.collect_events()

    checkpoint.mark_deployable(run)

    (marked,) = checkpoint.collect_events()
    assert isinstance(marked, Checkpoint.MarkedDeployable)
    assert (marked.eval_id, marked.actor) == ("eval-1", "alice")
    assert checkpoint.deployable is True
    (change,) = checkpoint.deployability_history
    assert (change.deployable, change.eval_id, change.actor) == (True, "eval-1", "alice")
    assert change.timestamp == marked.timestamp


def test_marking_deployable_needs_an_eval() -> None:
    run = run_in("running")
    checkpoint = new_checkpoint(run)
    run.complete()
    assert_refused_without_change(
        checkpoint, lambda: checkpoint.mark_deployable(run), DeployabilityError, "has no eval"
    )


def test_marking_deployable_needs_a_current_eval_that_did_not_fail() -> None:
    run = run_in("running")
    checkpoint = new_checkpoint(run)
    run.complete()
    checkpoint.attach_eval(summary(checkpoint, "eval-1"))
    checkpoint.attach_eval(summary(checkpoint, "eval-2", verdict="fail"))
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.mark_deployable(run),
        DeployabilityError,
        "current eval eval-2 has verdict fail",
    )


@pytest.mark.parametrize("status", ["running", "failed-while-running"])
def test_marking_deployable_needs_a_completed_run(status: str) -> None:
    run = run_in("running")
    checkpoint = new_checkpoint(run)
    checkpoint.attach_eval(summary(checkpoint))
    if status != "running":
        run.fail("diverged")
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.mark_deployable(run),
        DeployabilityError,
        f"run {run.id} is {run.status}, not completed",
    )


def test_marking_deployable_needs_the_recorded_artifact_digest() -> None:
    run = run_in("running")
    checkpoint = Checkpoint.register(
        uuid4(), run, family=FAMILY, artifact_path="/nowhere/adapter", artifact_digest=None
    )
    run.complete()
    checkpoint.attach_eval(summary(checkpoint))
    assert_refused_without_change(
        checkpoint,
        lambda: checkpoint.mark_deployable(run),
        DeployabilityError,
        "no recorded artifact digest",
    )


def test_marking_deployable_twice_is_refused() -> None:
    checkpoint, run = deployable_checkpoint()
    assert_refused_without_change(
        checkpoint, lambda: checkpoint.mark_deployable(run), DeployabilityError, "already"
    )


def test_marking_deployable_needs_the_checkpoints_own_run() -> None:
    checkpoint, _ = deployable_checkpoint()
    stranger = run_in("completed")
    with pytest.raises(ValueError, match="own run"):
        checkpoint.mark_deployable(stranger)


def test_revoking_keeps_the_evals_and_the_history() -> None:
    checkpoint, run = deployable_checkpoint()
    checkpoint.collect_events()
    checkpoint.revoke("regression found in production")

    (revoked,) = checkpoint.collect_events()
    assert isinstance(revoked, Checkpoint.DeployabilityRevoked)
    assert revoked.reason == "regression found in production"
    assert checkpoint.deployable is False
    assert checkpoint.current_eval is not None
    assert checkpoint.current_eval.evalId == "eval-1"
    assert [(c.deployable, c.reason) for c in checkpoint.deployability_history] == [
        (True, None),
        (False, "regression found in production"),
    ]
    checkpoint.mark_deployable(run)
    assert checkpoint.deployable is True


@pytest.mark.parametrize("reason", ["", "  "])
def test_revoking_needs_a_reason(reason: str) -> None:
    checkpoint, _ = deployable_checkpoint()
    assert_refused_without_change(
        checkpoint, lambda: checkpoint.revoke(reason), ValidationError, "reason is required"
    )


def test_revoking_a_checkpoint_that_is_not_deployable_is_refused() -> None:
    checkpoint = new_checkpoint()
    assert_refused_without_change(
        checkpoint, lambda: checkpoint.revoke("why not"), DeployabilityError, "is not deployable"
    )


# --- every event: actor, key, hash chain ----------------------------------------


def collected(aggregate: LedgerAggregate) -> list[DomainEvent]:
    events = aggregate.collect_events()
    assert all(isinstance(e, DomainEvent) for e in events)
    return [e for e in events if isinstance(e, DomainEvent)]


def test_every_event_carries_actor_idempotency_key_and_utc_time() -> None:
    checkpoint, run = deployable_checkpoint()
    checkpoint.revoke("rollback")
    checkpoint.attach_eval(summary(checkpoint, "eval-2", verdict="fail"))
    events = [*collected(run), *collected(checkpoint)]
    assert len(events) == 9
    for event in events:
        assert (event.actor, event.idempotency_key) == ("alice", "key-1")
        assert event.timestamp.utcoffset() == timedelta(0)


def test_events_outside_a_command_context_are_refused() -> None:
    run = run_in("running")
    no_context = _command_context.set(None)
    try:
        with pytest.raises(RuntimeError, match="command_context"):
            run.complete()
    finally:
        _command_context.reset(no_context)
    assert run.status == "running"


@pytest.mark.parametrize("which", ["run", "checkpoint"])
def test_each_event_carries_the_chain_hash_of_its_predecessor(which: str) -> None:
    checkpoint, run = deployable_checkpoint()
    checkpoint.revoke("rollback")
    run_events, checkpoint_events = collected(run), collected(checkpoint)
    events = run_events if which == "run" else checkpoint_events
    assert len(events) >= 4
    assert events[0].previous_hash == GENESIS_HASH
    for previous, event in pairwise(events):
        assert event.previous_hash == previous.chain_hash()
    aggregate: LedgerAggregate = run if which == "run" else checkpoint
    assert aggregate.chain_head == events[-1].chain_hash()


def test_an_events_hash_is_the_hash_of_its_content() -> None:
    run = run_in("failed")
    failed = run.collect_events()[-1]
    assert isinstance(failed, TrainingRun.Failed)
    aggregate_id, version = str(failed.originator_id), failed.originator_version
    state = stored_state(failed)
    assert failed.chain_hash() == chain_hash(aggregate_id, version, "Failed", state)
    assert len(failed.chain_hash()) == 64
    for change in (
        {"reason": "out of memory!"},
        {"actor": "mallory"},
        {"idempotencyKey": None},
        {"previousHash": GENESIS_HASH},
    ):
        tampered = {**state, **change}
        assert chain_hash(aggregate_id, version, "Failed", tampered) != failed.chain_hash()
    assert chain_hash(aggregate_id, version + 1, "Failed", state) != failed.chain_hash()
    assert chain_hash(aggregate_id, version, "Completed", state) != failed.chain_hash()


def test_an_event_read_back_is_validated_without_the_text_rule_it_passed_when_new() -> None:
    """What the store holds was checked when it was created; its types still are."""
    import pydantic

    summary = {
        "evalId": "e1",
        "checkpointId": str(uuid4()),
        "benchmarkId": "bench\x07",
        "targetModelFamily": "f",
        "mode": "prompt_assisted",
        "baselineScore": 0.5,
        "candidateScore": 0.75,
        "verdict": "pass",
    }
    state = {
        "originator_id": uuid4(),
        "originator_version": 2,
        "timestamp": "2026-01-01T00:00:00Z",
        "actor": "alice",
        "previousHash": GENESIS_HASH,
        "eventHash": "1" * 64,
        "eval": summary,
    }
    assert Checkpoint.EvalAttached.read_back(state).eval.benchmarkId == "bench\x07"
    with pytest.raises(pydantic.ValidationError, match="control character"):
        Checkpoint.EvalAttached.model_validate(state)
    with pytest.raises(pydantic.ValidationError, match="baselineScore"):
        Checkpoint.EvalAttached.read_back({**state, "eval": {**summary, "baselineScore": "x"}})


@pytest.mark.parametrize("write", [canonical_json, orjson_canonical_json])
@pytest.mark.parametrize("reason", ["nul\x00", "tab\x0b", "cr\r", "lone \ud800", "esc\x1b[2J"])
def test_a_new_event_with_refused_text_is_refused_by_its_seal_with_either_writer(
    write: Any, reason: str
) -> None:
    run = run_in("running")
    with command_context("alice", write=write), pytest.raises(ControlCharacterError) as refused:
        run.fail(reason)
    assert "U+" in refused.value.message
    assert run.status == "running"


@pytest.mark.parametrize("write", [canonical_json, orjson_canonical_json])
@pytest.mark.parametrize("reason", ["C:\\build\\fast\\run", "one\r\ntwo", "\\u0000 as typed"])
def test_text_that_only_looks_like_an_escape_is_recorded_and_hashed_as_written(
    write: Any, reason: str
) -> None:
    run = run_in("running")
    with command_context("alice", write=write):
        run.fail(reason)
    event = run.collect_events()[-1]
    assert isinstance(event, TrainingRun.Failed)
    assert event.reason == reason
    state = stored_state(event)
    assert event.event_hash == chain_hash(
        str(event.originator_id), event.originator_version, event.short_type, state
    )
