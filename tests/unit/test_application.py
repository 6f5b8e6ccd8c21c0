"""The application service on the in-memory store (and, for concurrency, two instances on SQLite).

Atomic appends, ledger-wide evalId uniqueness, idempotency keys, conflict retries,
and that every refusal records nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from tests.support import READER_FAMILY, eval_summary, existing_artifact
from trainledger.adapters.files import load_dataset
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import GENESIS_HASH
from trainledger.domain.errors import (
    CheckpointNotFoundError,
    ConflictError,
    DatasetError,
    DeployabilityError,
    DuplicateEvalError,
    EvalRefusedError,
    FamilyMismatchError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    LedgerError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
)
from trainledger.domain.experiment import ExperimentRequest
from trainledger.domain.model import DomainEvent
from trainledger.service.ledger import TrainingLedger

DATASET_FINGERPRINT = "a6468e43d3336456"


def reader_request(**overrides: Any) -> ExperimentRequest:
    fields: dict[str, Any] = {
        "profile": "local-reader",
        "family": READER_FAMILY,
        "backend": "dry-run",
        "benchmark_export_id": "bench-1",
        "output_dir": "/runs/out",
        **overrides,
    }
    return ExperimentRequest(**fields)


def create(ledger: TrainingLedger, key: str | None = None, **overrides: Any) -> dict[str, Any]:
    return ledger.create_experiment(
        reader_request(**overrides),
        dataset_fingerprint=DATASET_FINGERPRINT,
        sample_count=48,
        actor="alice",
        idempotency_key=key,
    )


def running_run(ledger: TrainingLedger) -> str:
    run_id: str = create(ledger)["trainRunId"]
    ledger.start_run(run_id, actor="alice")
    return run_id


def register(ledger: TrainingLedger, run_id: str, key: str | None = None) -> str:
    document = ledger.register_checkpoint(
        run_id,
        family=READER_FAMILY,
        artifact_path=existing_artifact(),
        actor="alice",
        idempotency_key=key,
    )
    checkpoint_id: str = document["checkpointId"]
    return checkpoint_id


def log_size(ledger: TrainingLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def types(ledger: TrainingLedger, aggregate_id: str) -> list[str]:
    return [e["type"] for e in ledger.history(aggregate_id)["events"]]


@dataclass
class World:
    """A ledger holding one run in each interesting state."""

    pending_run: str
    running_run: str
    checkpoint: str  # of the running run, no eval
    completed_run: str
    deployable: str  # of the completed run, eval "eval-1" passed


@pytest.fixture
def world(ledger: TrainingLedger) -> World:
    pending = create(ledger)["trainRunId"]
    running = running_run(ledger)
    checkpoint = register(ledger, running)
    completed = running_run(ledger)
    deployable = register(ledger, completed)
    ledger.complete_run(completed, actor="alice")
    ledger.attach_eval(
        deployable, eval_summary(deployable, "eval-1"), mark_deployable=True, actor="alice"
    )
    return World(pending, running, checkpoint, completed, deployable)


class Appends:
    """Records each successful append: (aggregate type, event type) of its events."""

    def __init__(self, ledger: TrainingLedger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        insert = ledger.recorder.insert_events

        def spy(stored_events: list[StoredEvent], **kwargs: Any) -> Any:
            result = insert(stored_events, **kwargs)
            self.calls.append([e.topic.rsplit(":", 1)[-1] for e in stored_events])
            return result

        monkeypatch.setattr(ledger.recorder, "insert_events", spy)


# --- creating experiments -------------------------------------------------------


def test_create_registers_a_pending_run_holding_the_whole_spec(ledger: TrainingLedger) -> None:
    created = create(ledger)

    assert set(created) == {"trainRunId", "experimentId", "spec"}
    assert UUID(created["trainRunId"]).version == 4
    assert UUID(created["experimentId"]).version == 4
    assert created["spec"]["experimentId"] == created["experimentId"]
    assert created["spec"]["configFingerprint"] == "dc867911eece7ac3"
    run = ledger.show_run(created["trainRunId"])
    assert run["status"] == "pending"
    assert run["spec"] == created["spec"]
    assert run["sampleCount"] == 48
    (registered,) = ledger.history(created["trainRunId"])["events"]
    assert (registered["type"], registered["actor"]) == ("Registered", "alice")
    assert registered["payload"]["spec"] == created["spec"]


def test_two_experiments_get_distinct_ids(ledger: TrainingLedger) -> None:
    first, second = create(ledger), create(ledger)
    assert first["trainRunId"] != second["trainRunId"]
    assert first["experimentId"] != second["experimentId"]


def test_a_dataset_file_is_fingerprinted(ledger: TrainingLedger, tmp_path: Path) -> None:
    dataset = tmp_path / "train.jsonl"
    sample = '{"prompt": "p", "chosen": "c", "rejected": "r"}'
    dataset.write_text(f"{sample}\n\n{sample}\n")
    created = ledger.create_experiment(reader_request(), dataset_path=str(dataset), actor="alice")
    expected = load_dataset(str(dataset))
    assert created["spec"]["datasetFingerprint"] == expected.fingerprint
    assert created["spec"]["datasetExportPath"] == str(dataset.resolve())
    assert ledger.show_run(created["trainRunId"])["sampleCount"] == 2


def test_a_missing_dataset_file_records_nothing(ledger: TrainingLedger, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        ledger.create_experiment(
            reader_request(), dataset_path=str(tmp_path / "missing.jsonl"), actor="alice"
        )
    assert log_size(ledger) == 0


@pytest.mark.parametrize(
    "sources",
    [{}, {"dataset_path": "/data.jsonl", "dataset_fingerprint": DATASET_FINGERPRINT}],
)
def test_exactly_one_dataset_source_is_needed(
    ledger: TrainingLedger, sources: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="either a dataset path or a dataset fingerprint"):
        ledger.create_experiment(reader_request(), actor="alice", **sources)
    assert log_size(ledger) == 0


# --- every refusal records nothing ------------------------------------------------

Command = Callable[[TrainingLedger, World], object]


def attach(checkpoint: Callable[[World], str], **overrides: Any) -> Command:
    def command(ledger: TrainingLedger, w: World) -> object:
        target = checkpoint(w)
        summary = eval_summary(target, "eval-new", **overrides)
        return ledger.attach_eval(target, summary, actor="alice")

    return command


REFUSALS: list[tuple[str, Command, type[LedgerError], str]] = [
    (
        "unknown backend",
        lambda ledger, w: create(ledger, backend="bogus"),
        ValidationError,
        "unknown backend 'bogus'",
    ),
    (
        "start an unknown run",
        lambda ledger, w: ledger.start_run(str(uuid4()), actor="alice"),
        RunNotFoundError,
        "training run .* not found",
    ),
    (
        "start a malformed id",
        lambda ledger, w: ledger.start_run("not-a-uuid", actor="alice"),
        RunNotFoundError,
        "training run not-a-uuid not found",
    ),
    (
        "start a checkpoint as if it were a run",
        lambda ledger, w: ledger.start_run(w.checkpoint, actor="alice"),
        RunNotFoundError,
        "not found",
    ),
    (
        "complete a pending run",
        lambda ledger, w: ledger.complete_run(w.pending_run, actor="alice"),
        InvalidTransitionError,
        "is pending; cannot move to completed",
    ),
    (
        "start a running run",
        lambda ledger, w: ledger.start_run(w.running_run, actor="alice"),
        InvalidTransitionError,
        "is running; cannot move to running",
    ),
    (
        "fail a completed run",
        lambda ledger, w: ledger.fail_run(w.completed_run, "late", actor="alice"),
        InvalidTransitionError,
        "is completed; cannot move to failed",
    ),
    (
        "fail without a reason",
        lambda ledger, w: ledger.fail_run(w.running_run, " ", actor="alice"),
        ValidationError,
        "reason is required",
    ),
    (
        "register on a pending run",
        lambda ledger, w: register(ledger, w.pending_run),
        InvalidTransitionError,
        "only be registered while it is running",
    ),
    (
        "register on a completed run",
        lambda ledger, w: register(ledger, w.completed_run),
        InvalidTransitionError,
        "only be registered while it is running",
    ),
    (
        "register with another family",
        lambda ledger, w: ledger.register_checkpoint(
            w.running_run, family="phi-mini", artifact_path="/a", actor="alice"
        ),
        FamilyMismatchError,
        "differs from run family",
    ),
    (
        "register on an unknown run",
        lambda ledger, w: register(ledger, str(uuid4())),
        RunNotFoundError,
        "not found",
    ),
    (
        "eval on an unknown checkpoint",
        attach(lambda w: str(uuid4())),
        CheckpointNotFoundError,
        "checkpoint .* not found",
    ),
    (
        "eval on a run id",
        attach(lambda w: w.running_run),
        CheckpointNotFoundError,
        "not found",
    ),
    (
        "eval naming another checkpoint",
        lambda ledger, w: ledger.attach_eval(
            w.checkpoint, eval_summary(w.deployable, "eval-new"), actor="alice"
        ),
        EvalRefusedError,
        "names checkpoint .*, not",
    ),
    (
        "eval of another family",
        attach(lambda w: w.checkpoint, targetModelFamily="phi-mini"),
        FamilyMismatchError,
        "differs from checkpoint family",
    ),
    (
        "evalId used on another checkpoint",
        lambda ledger, w: ledger.attach_eval(
            w.checkpoint, eval_summary(w.checkpoint, "eval-1"), actor="alice"
        ),
        DuplicateEvalError,
        "evalId eval-1 was already used in this ledger",
    ),
    (
        "NaN score",
        attach(lambda w: w.checkpoint, baselineScore=float("nan")),
        EvalRefusedError,
        "baselineScore: Input should be a finite number",
    ),
    (
        "infinite score",
        attach(lambda w: w.checkpoint, candidateScore=float("inf")),
        EvalRefusedError,
        "candidateScore: Input should be a finite number",
    ),
    (
        "delta off",
        attach(lambda w: w.checkpoint, delta=0.3),
        EvalRefusedError,
        "delta 0.3 differs",
    ),
    (
        "unknown verdict",
        attach(lambda w: w.checkpoint, verdict="maybe"),
        EvalRefusedError,
        "verdict",
    ),
    (
        "unknown mode",
        attach(lambda w: w.checkpoint, mode="zero_shot"),
        EvalRefusedError,
        "mode",
    ),
    (
        "eval without an evalId",
        attach(lambda w: w.checkpoint, evalId=None),
        EvalRefusedError,
        "evalId",
    ),
    (
        "attach and mark while the run is running",
        lambda ledger, w: ledger.attach_eval(
            w.checkpoint, eval_summary(w.checkpoint, "eval-new"), mark_deployable=True, actor="a"
        ),
        DeployabilityError,
        "is running, not completed",
    ),
    (
        "attach a failing eval and mark",
        lambda ledger, w: ledger.attach_eval(
            w.deployable,
            eval_summary(w.deployable, "eval-new", verdict="fail"),
            mark_deployable=True,
            actor="alice",
        ),
        DeployabilityError,
        "verdict fail",
    ),
    (
        "mark without an eval",
        lambda ledger, w: ledger.mark_deployable(w.checkpoint, actor="alice"),
        DeployabilityError,
        "has no eval",
    ),
    (
        "mark twice",
        lambda ledger, w: ledger.mark_deployable(w.deployable, actor="alice"),
        DeployabilityError,
        "already deployable",
    ),
    (
        "revoke what is not deployable",
        lambda ledger, w: ledger.revoke_deployability(w.checkpoint, "why", actor="alice"),
        DeployabilityError,
        "is not deployable",
    ),
    (
        "revoke without a reason",
        lambda ledger, w: ledger.revoke_deployability(w.deployable, "", actor="alice"),
        ValidationError,
        "reason is required",
    ),
    (
        "checkpoint without an artifact path",
        lambda ledger, w: ledger.register_checkpoint(
            w.running_run, family=READER_FAMILY, artifact_path=" ", actor="alice"
        ),
        ValidationError,
        "artifact path is required",
    ),
    (
        "no actor",
        lambda ledger, w: ledger.start_run(w.pending_run, actor=" "),
        ValidationError,
        "actor is required",
    ),
    (
        "empty idempotency key",
        lambda ledger, w: ledger.start_run(w.pending_run, actor="alice", idempotency_key=""),
        ValidationError,
        "idempotency key must not be empty",
    ),
    (
        "history of an unknown id",
        lambda ledger, w: ledger.history(str(uuid4())),
        NotFoundError,
        "no run or checkpoint with id",
    ),
]


@pytest.mark.parametrize(
    ("command", "error", "match"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_every_refusal_records_nothing(
    ledger: TrainingLedger,
    world: World,
    command: Command,
    error: type[LedgerError],
    match: str,
) -> None:
    size = log_size(ledger)
    before = {name: ledger.history(value) for name, value in vars(world).items()}

    with pytest.raises(error, match=match) as caught:
        command(ledger, world)

    assert "\n" not in caught.value.message
    assert log_size(ledger) == size
    assert {name: ledger.history(value) for name, value in vars(world).items()} == before
    assert ledger.ledger_recorder.find_reservation("eval", "eval-new") is None


# --- atomic appends -----------------------------------------------------------------


def test_a_checkpoint_and_its_link_are_one_append(
    ledger: TrainingLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = running_run(ledger)
    appends = Appends(ledger, monkeypatch)

    checkpoint_id = register(ledger, run_id)

    assert appends.calls == [["Checkpoint.Registered", "TrainingRun.CheckpointLinked"]]
    linked = ledger.history(run_id)["events"][-1]
    registered = ledger.history(checkpoint_id)["events"][0]
    assert linked["payload"]["checkpointId"] == checkpoint_id
    assert linked["position"] == registered["position"] + 1
    assert ledger.show_run(run_id)["checkpointIds"] == [checkpoint_id]
    checkpoint = ledger.show_checkpoint(checkpoint_id)
    assert (checkpoint["trainRunId"], checkpoint["deployable"]) == (run_id, False)


def test_one_run_may_register_several_checkpoints(ledger: TrainingLedger) -> None:
    run_id = running_run(ledger)
    first, second = register(ledger, run_id), register(ledger, run_id)
    assert ledger.show_run(run_id)["checkpointIds"] == [first, second]


def test_attach_and_mark_deployable_is_one_append(
    ledger: TrainingLedger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint_id = register(ledger, running_run(ledger))
    run_id = ledger.show_checkpoint(checkpoint_id)["trainRunId"]
    ledger.complete_run(run_id, actor="alice")
    appends = Appends(ledger, monkeypatch)

    document = ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id, "eval-2"), mark_deployable=True, actor="bob"
    )

    assert appends.calls == [["Checkpoint.EvalAttached", "Checkpoint.MarkedDeployable"]]
    assert document["deployable"] is True
    assert document["currentEvalId"] == "eval-2"
    (change,) = document["deployabilityHistory"]
    assert (change["deployable"], change["evalId"], change["actor"]) == (True, "eval-2", "bob")


def test_a_failed_mark_leaves_the_eval_unattached_and_its_id_free(
    ledger: TrainingLedger, world: World
) -> None:
    with pytest.raises(DeployabilityError):
        ledger.attach_eval(
            world.checkpoint,
            eval_summary(world.checkpoint, "eval-2"),
            mark_deployable=True,
            actor="alice",
        )
    assert ledger.show_checkpoint(world.checkpoint)["evals"] == []
    attached = ledger.attach_eval(
        world.checkpoint, eval_summary(world.checkpoint, "eval-2"), actor="alice"
    )
    assert attached["currentEvalId"] == "eval-2"


def test_a_failing_eval_revokes_deployability_in_the_same_append(
    ledger: TrainingLedger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = Appends(ledger, monkeypatch)
    document = ledger.attach_eval(
        world.deployable,
        eval_summary(world.deployable, "eval-2", verdict="fail", candidateScore=0.2),
        actor="carol",
    )
    assert appends.calls == [["Checkpoint.EvalAttached", "Checkpoint.DeployabilityRevoked"]]
    assert document["deployable"] is False
    assert document["currentEvalId"] == "eval-2"
    revoked = document["deployabilityHistory"][-1]
    assert revoked["deployable"] is False
    assert revoked["evalId"] == "eval-2"
    assert "eval-2" in revoked["reason"]
    assert revoked["actor"] == "carol"


def test_revoking_keeps_evals_and_history(ledger: TrainingLedger, world: World) -> None:
    document = ledger.revoke_deployability(world.deployable, "bad in production", actor="dan")
    assert document["deployable"] is False
    assert document["currentEvalId"] == "eval-1"
    assert [e["evalId"] for e in document["evals"]] == ["eval-1"]
    assert [(c["deployable"], c["reason"]) for c in document["deployabilityHistory"]] == [
        (True, None),
        (False, "bad in production"),
    ]
    assert types(ledger, world.deployable) == [
        "Registered",
        "EvalAttached",
        "MarkedDeployable",
        "DeployabilityRevoked",
    ]


def test_an_eval_summary_may_spell_its_checkpoint_id_differently(
    ledger: TrainingLedger, world: World
) -> None:
    shouted = world.checkpoint.upper()
    document = ledger.attach_eval(shouted, eval_summary(shouted, "eval-2"), actor="alice")
    assert document["currentEval"]["checkpointId"] == world.checkpoint


def test_an_eval_id_is_unique_across_the_whole_ledger(ledger: TrainingLedger) -> None:
    run_id = running_run(ledger)
    first, second = register(ledger, run_id), register(ledger, run_id)
    ledger.attach_eval(first, eval_summary(first, "shared-eval"), actor="alice")

    with pytest.raises(DuplicateEvalError, match="evalId shared-eval was already used"):
        ledger.attach_eval(second, eval_summary(second, "shared-eval"), actor="alice")
    assert types(ledger, second) == ["Registered"]


def test_an_eval_id_is_looked_up_only_once_the_append_refused_it(
    ledger: TrainingLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evalId's reservation is unique, so a new evalId costs no look-up: the
    append refuses one used elsewhere, and the look-up after it names the refusal."""
    run_id = running_run(ledger)
    first, second = register(ledger, run_id), register(ledger, run_id)
    looked_up: list[tuple[str, str]] = []
    find = ledger.ledger_recorder.find_reservation

    def spy(kind: str, key: str) -> bytes | None:
        looked_up.append((kind, key))
        return find(kind, key)

    monkeypatch.setattr(ledger.ledger_recorder, "find_reservation", spy)
    ledger.attach_eval(first, eval_summary(first, "new-eval"), actor="alice")
    assert [key for _, key in looked_up] == []
    with pytest.raises(DuplicateEvalError, match="evalId new-eval was already used"):
        ledger.attach_eval(second, eval_summary(second, "new-eval"), actor="alice")
    assert [key for _, key in looked_up] == ["new-eval"]
    with pytest.raises(DuplicateEvalError, match="evalId new-eval was already used"):
        ledger.attach_eval(first, eval_summary(first, "new-eval"), actor="alice")
    assert types(ledger, second) == ["Registered"]
    assert types(ledger, first) == ["Registered", "EvalAttached"]


# --- idempotency ----------------------------------------------------------------


def test_repeating_create_with_the_same_key_returns_the_first_outcome(
    ledger: TrainingLedger,
) -> None:
    first = create(ledger, key="create-1")
    size = log_size(ledger)
    assert create(ledger, key="create-1") == first
    assert log_size(ledger) == size
    (registered,) = ledger.history(first["trainRunId"])["events"]
    assert registered["idempotencyKey"] == "create-1"


def test_a_repeat_returns_the_first_outcome_even_when_the_state_moved_on(
    ledger: TrainingLedger,
) -> None:
    run_id = create(ledger)["trainRunId"]
    first = ledger.start_run(run_id, actor="alice", idempotency_key="start-1")
    size = log_size(ledger)
    assert ledger.start_run(run_id, actor="alice", idempotency_key="start-1") == first
    assert log_size(ledger) == size
    with pytest.raises(InvalidTransitionError):
        ledger.start_run(run_id, actor="alice")
    assert types(ledger, run_id) == ["Registered", "Started"]


def test_repeating_an_eval_attach_with_its_key_attaches_it_once(
    ledger: TrainingLedger, world: World
) -> None:
    summary = eval_summary(world.checkpoint, "eval-2")
    first = ledger.attach_eval(world.checkpoint, summary, actor="alice", idempotency_key="e")
    again = ledger.attach_eval(world.checkpoint, summary, actor="alice", idempotency_key="e")
    assert again == first
    assert types(ledger, world.checkpoint) == ["Registered", "EvalAttached"]


def test_repeating_a_checkpoint_registration_with_its_key_registers_once(
    ledger: TrainingLedger, world: World
) -> None:
    first = register(ledger, world.running_run, key="register-1")
    assert register(ledger, world.running_run, key="register-1") == first
    assert ledger.show_run(world.running_run)["checkpointIds"] == [world.checkpoint, first]


@pytest.mark.parametrize(
    "different",
    [
        lambda ledger, w: ledger.start_run(w.pending_run, actor="alice", idempotency_key="k"),
        lambda ledger, w: create(ledger, key="k", family="claude-haiku-3"),
        lambda ledger, w: ledger.fail_run(
            w.running_run, "other reason", actor="alice", idempotency_key="k"
        ),
    ],
    ids=["another verb", "another request", "another argument"],
)
def test_a_key_reused_for_a_different_command_is_refused(
    ledger: TrainingLedger, world: World, different: Command
) -> None:
    ledger.fail_run(world.running_run, "diverged", actor="alice", idempotency_key="k")
    size = log_size(ledger)
    with pytest.raises(IdempotencyKeyReusedError, match="'k' was already used"):
        different(ledger, world)
    assert log_size(ledger) == size


def test_a_refused_command_does_not_use_up_its_key(ledger: TrainingLedger, world: World) -> None:
    with pytest.raises(InvalidTransitionError):
        ledger.complete_run(world.pending_run, actor="alice", idempotency_key="k")
    document = ledger.start_run(world.pending_run, actor="alice", idempotency_key="k")
    assert document["status"] == "running"


# --- history and the hash chain -------------------------------------------------------


def test_history_lists_every_event_with_position_version_type_actor(
    ledger: TrainingLedger, world: World
) -> None:
    events = ledger.history(world.completed_run)["events"]
    assert [e["type"] for e in events] == ["Registered", "Started", "CheckpointLinked", "Completed"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    assert {e["actor"] for e in events} == {"alice"}
    assert all(e["timestamp"].endswith("Z") for e in events)


@pytest.mark.parametrize("which", ["completed_run", "deployable"])
def test_stored_events_form_a_hash_chain(ledger: TrainingLedger, world: World, which: str) -> None:
    aggregate_id = UUID(getattr(world, which))
    events = [e for e in ledger.events.get(aggregate_id) if isinstance(e, DomainEvent)]
    assert len(events) >= 3
    assert events[0].previous_hash == GENESIS_HASH
    for previous, event in pairwise(events):
        assert event.previous_hash == previous.chain_hash()


# --- concurrent appends: two applications on one SQLite file -------------------------


@pytest.fixture
def two_ledgers(tmp_path: Path) -> Iterator[tuple[TrainingLedger, TrainingLedger]]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = open_ledger(url), open_ledger(url)
    yield first, second
    first.close()
    second.close()


def interleave(
    ledger: TrainingLedger,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[int], object],
) -> list[int]:
    """After each load by `ledger`, run `meanwhile(n)`: another writer gets in first."""
    loads: list[int] = []
    load = ledger.unit_of_work.load

    def load_then_interfere(aggregate_id: Any) -> Any:
        aggregate = load(aggregate_id)
        loads.append(len(loads))
        meanwhile(len(loads))
        return aggregate

    monkeypatch.setattr(ledger.unit_of_work, "load", load_then_interfere)
    return loads


def test_a_concurrent_append_is_retried_on_fresh_state(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    checkpoint_id = register(mine, running_run(mine))

    def their_eval_once(load: int) -> None:
        if load == 1:
            theirs.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "theirs"), actor="bob")

    loads = interleave(mine, monkeypatch, their_eval_once)
    document = mine.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "mine"), actor="alice")

    assert len(loads) == 2, "expected one conflict, then a successful retry"
    assert [e["evalId"] for e in document["evals"]] == ["theirs", "mine"]
    history = theirs.history(checkpoint_id)["events"]
    assert [(e["type"], e["actor"]) for e in history] == [
        ("Registered", "alice"),
        ("EvalAttached", "bob"),
        ("EvalAttached", "alice"),
    ]


def test_a_retry_re_checks_the_rules_on_fresh_state(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    run_id = running_run(mine)

    def they_complete_it(load: int) -> None:
        if load == 1:
            theirs.complete_run(run_id, actor="bob")

    interleave(mine, monkeypatch, they_complete_it)
    with pytest.raises(InvalidTransitionError, match="is completed; cannot move to failed"):
        mine.fail_run(run_id, "abandoned", actor="alice")
    assert types(theirs, run_id) == ["Registered", "Started", "Completed"]


def test_the_same_keyed_command_racing_itself_is_recorded_once(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    run_id = create(mine)["trainRunId"]
    outcomes: list[dict[str, Any]] = []

    def they_send_it_too(load: int) -> None:
        if load == 1:
            outcomes.append(theirs.start_run(run_id, actor="alice", idempotency_key="start"))

    interleave(mine, monkeypatch, they_send_it_too)
    outcomes.append(mine.start_run(run_id, actor="alice", idempotency_key="start"))

    assert outcomes[0] == outcomes[1]
    assert types(theirs, run_id) == ["Registered", "Started"]


def test_a_conflict_error_when_retries_run_out(
    two_ledgers: tuple[TrainingLedger, TrainingLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_ledgers
    checkpoint_id = register(mine, running_run(mine))
    monkeypatch.setattr(mine.unit_of_work, "MAX_ATTEMPTS", 3)

    def their_eval_every_time(load: int) -> None:
        eval_id = f"theirs-{load}"
        theirs.attach_eval(checkpoint_id, eval_summary(checkpoint_id, eval_id), actor="bob")

    loads = interleave(mine, monkeypatch, their_eval_every_time)
    with pytest.raises(ConflictError, match="gave up after 3 attempts") as caught:
        mine.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "mine"), actor="alice")

    assert caught.value.code == "conflict"
    assert len(loads) == 3
    evals = theirs.show_checkpoint(checkpoint_id)["evals"]
    assert [e["evalId"] for e in evals] == ["theirs-1", "theirs-2", "theirs-3"]
    assert theirs.ledger_recorder.find_reservation("eval", "mine") is None


def test_concurrent_writers_on_one_run_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    setup = open_ledger(url)
    run_id = running_run(setup)
    writers = [open_ledger(url) for _ in range(4)]
    barrier = threading.Barrier(len(writers))
    registered: list[str] = []
    errors: list[BaseException] = []

    def write(ledger: TrainingLedger) -> None:
        barrier.wait()
        try:
            registered.append(register(ledger, run_id))
        except BaseException as error:  # reported below, with the thread's view
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(setup.show_run(run_id)["checkpointIds"]) == sorted(registered)
    assert len(registered) == 4
    for ledger in [setup, *writers]:
        ledger.close()
