"""Export and import on the in-memory store: faithful round trips, all-or-nothing refusals."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import orjson
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from tests.support import READER_FAMILY, eval_summary, reader_request, write_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import chain_hash
from trainledger.domain.errors import (
    DuplicateEvalError,
    ExportRefusedError,
    ImportRefusedError,
    StoreNotEmptyError,
)
from trainledger.domain.model import LedgerAggregate, command_context
from trainledger.service.archive import export_log, import_log
from trainledger.service.ledger import TrainingLedger
from trainledger.service.ports import Reservation

Lines = list[dict[str, Any]]


def populate(ledger: TrainingLedger, tmp_path: Path) -> dict[str, str]:
    """Two runs: one with a deployable-then-revoked checkpoint, one failed."""
    request = reader_request(tmp_path)
    run_id = ledger.create_experiment(
        request,
        dataset_fingerprint="0123456789abcdef",
        sample_count=8,
        actor="alice",
        idempotency_key="create-1",
    )["trainRunId"]
    ledger.start_run(run_id, actor="alice", idempotency_key="start-1")
    checkpoint_id = ledger.register_checkpoint(
        run_id,
        family=READER_FAMILY,
        artifact_path=write_artifact(tmp_path),
        metrics={"finalLoss": 0.25},
        actor="alice",
        idempotency_key="register-1",
    )["checkpointId"]
    ledger.complete_run(run_id, actor="alice")
    ledger.attach_eval(
        checkpoint_id,
        eval_summary(checkpoint_id, eval_id="eval-1", candidateScore=0.1 + 0.2),
        mark_deployable=True,
        actor="bob",
        idempotency_key="eval-1",
    )
    ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id, eval_id="eval-2", verdict="fail"), actor="bob"
    )
    failed = ledger.create_experiment(
        request, dataset_fingerprint="fedcba9876543210", sample_count=3, actor="carol"
    )["trainRunId"]
    ledger.fail_run(failed, "never started: données manquantes", actor="carol")
    return {"run": run_id, "checkpoint": checkpoint_id, "failed": failed}


def exported(ledger: TrainingLedger) -> Lines:
    return list(export_log(ledger))


def as_file(lines: Lines) -> list[bytes]:
    return [orjson.dumps(line) for line in lines]


def is_empty(ledger: TrainingLedger) -> bool:
    recorder: Any = ledger.recorder
    return not recorder.max_notification_id() and not recorder.reservations()


def test_export_is_the_log_in_order_with_what_restores_it(
    source: tuple[TrainingLedger, dict[str, str]],
) -> None:
    ledger, ids = source
    lines = exported(ledger)
    assert [line["position"] for line in lines] == list(range(1, 12))
    history = ledger.history(ids["checkpoint"])["events"]
    of_checkpoint = [line for line in lines if line["aggregateId"] == ids["checkpoint"]]
    # Each line is what `history` prints, plus the restoring fields.
    for line, event in zip(of_checkpoint, history, strict=True):
        assert {k: line[k] for k in event} == event
        assert line["topic"].startswith("domain.model:Checkpoint.")
    assert of_checkpoint[0]["originatorTopic"] == "domain.model:Checkpoint"
    assert "originatorTopic" not in of_checkpoint[1]
    for earlier, later in itertools.pairwise(of_checkpoint):
        assert later["previousHash"] == earlier["eventHash"]
    reservations = [(r["kind"], r["key"]) for line in lines for r in line.get("reservations", [])]
    assert sorted(reservations) == sorted(
        [
            ("idempotency", "create-1"),
            ("idempotency", "start-1"),
            ("idempotency", "register-1"),
            ("idempotency", "eval-1"),
            ("eval", "eval-1"),
            ("eval", "eval-2"),
        ]
    )
    # The register command wrote two events under one key: its record is on the first.
    keyed = [line for line in lines if line["idempotencyKey"] == "register-1"]
    assert [line["type"] for line in keyed] == ["Registered", "CheckpointLinked"]
    assert "reservations" in keyed[0]
    assert "reservations" not in keyed[1]


def test_import_restores_everything_exactly(
    source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, ids = source
    lines = exported(ledger)
    summary = import_log(target, as_file(lines))
    assert summary == {
        "imported": 11,
        "aggregates": 3,
        "reservations": 6,
        "firstPosition": 1,
        "lastPosition": 11,
        "positionsRenumbered": False,
    }
    assert exported(target) == lines
    assert target.verify()["digest"] == ledger.verify()["digest"]
    for aggregate_id in ids.values():
        assert target.history(aggregate_id) == ledger.history(aggregate_id)
    source_recorder: Any = ledger.recorder
    target_recorder: Any = target.recorder
    assert target_recorder.reservations() == source_recorder.reservations()
    # Idempotency and evalId uniqueness carry over.
    assert target.start_run(ids["run"], actor="alice", idempotency_key="start-1")["status"] == (
        "running"
    )
    with pytest.raises(DuplicateEvalError, match="already used"):
        target.attach_eval(
            ids["checkpoint"], eval_summary(ids["checkpoint"], eval_id="eval-2"), actor="x"
        )


def test_import_renumbers_positions_with_gaps_keeping_the_order(
    source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ids = source
    lines = exported(ledger)
    for line in lines:
        line["position"] = line["position"] * 10 + 5
        for reservation in line.get("reservations", []):  # as a store with gaps exports them
            reservation["sealedAt"] = reservation["sealedAt"] * 10 + 5
    summary = import_log(target, as_file(lines))
    assert summary["positionsRenumbered"] is True
    assert (summary["firstPosition"], summary["lastPosition"]) == (1, 11)
    assert exported(target) == exported(ledger)


def test_import_of_an_empty_export_into_an_empty_store_is_a_no_op(target: TrainingLedger) -> None:
    assert exported(target) == []
    assert import_log(target, [])["imported"] == 0
    assert is_empty(target)


def test_import_refuses_a_store_that_is_not_empty(
    source: tuple[TrainingLedger, dict[str, str]],
) -> None:
    ledger, _ = source
    lines = exported(ledger)
    head = ledger.recorder.max_notification_id()
    with pytest.raises(StoreNotEmptyError, match="not empty"):
        import_log(ledger, as_file(lines))
    assert ledger.recorder.max_notification_id() == head


def edit(index: int, change: Callable[[dict[str, Any]], None]) -> Callable[[Lines], Lines]:
    def apply(lines: Lines) -> Lines:
        change(lines[index])
        return lines

    return apply


def set_payload(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(line: dict[str, Any]) -> None:
        line["payload"][key] = value

    return change


def set_verdict(line: dict[str, Any]) -> None:
    line["payload"]["eval"]["verdict"] = "compare_only"


def rehash_eval_with_score(line: dict[str, Any]) -> None:
    """Tamper with an event and recompute its own hash: only the chain catches it."""
    line["payload"]["eval"]["candidateScore"] = 0.99
    line["payload"]["eval"]["delta"] = 0.49
    state = {
        "timestamp": line["timestamp"],
        "actor": line["actor"],
        "idempotencyKey": line["idempotencyKey"],
        "previousHash": line["previousHash"],
        **line["payload"],
    }
    line["eventHash"] = chain_hash(line["aggregateId"], line["version"], line["type"], state)


def stored_state_with_a_control_character(line: dict[str, Any]) -> None:
    """A line restored from its `storedState` (an older class version) is input too."""
    eval_ = {**line["payload"]["eval"], "benchmarkId": "bench\x07"}
    line["storedState"] = {
        "timestamp": line["timestamp"],
        "actor": line["actor"],
        "idempotencyKey": line["idempotencyKey"],
        "previousHash": line["previousHash"],
        "eventHash": line["eventHash"],
        **line["payload"],
        "eval": eval_,
    }


def swap(i: int, j: int) -> Callable[[Lines], Lines]:
    def apply(lines: Lines) -> Lines:
        lines[i], lines[j] = lines[j], lines[i]
        return lines

    return apply


def move_reservation(source: int, target: int) -> Callable[[Lines], Lines]:
    def apply(lines: Lines) -> Lines:
        lines[target].setdefault("reservations", []).append(lines[source].pop("reservations")[0])
        return lines

    return apply


def drop_reservations(index: int) -> Callable[[Lines], Lines]:
    def apply(lines: Lines) -> Lines:
        del lines[index]["reservations"]
        return lines

    return apply


# The populated log, by line: 1 run Registered, 2 Started, 3 checkpoint Registered,
# 4 CheckpointLinked, 5 Completed, 6 EvalAttached eval-1, 7 MarkedDeployable,
# 8 EvalAttached eval-2, 9 DeployabilityRevoked, 10 run Registered, 11 Failed.
BROKEN_FILES: dict[str, tuple[Callable[[Lines], Lines], str]] = {
    "out of order": (swap(1, 2), "line 3: position 2 does not follow position 3"),
    "repeated line": (lambda ls: [*ls[:5], ls[4], *ls[5:]], "line 6: position 5 does not follow"),
    "event missing": (lambda ls: ls[:1] + ls[2:], "line 3: .* version 3 follows version 1"),
    "aggregate head missing": (lambda ls: ls[1:], "line 1: .* starts at version 2"),
    "payload modified": (edit(5, set_verdict), "line 6: .* does not match its eventHash"),
    "event rehashed": (edit(5, rehash_eval_with_score), "line 7: .* hash chain broken"),
    "field added": (edit(2, set_payload("extra", 1)), "line 3: not a valid Checkpoint.Registered"),
    "control character in a stored state": (
        edit(5, stored_state_with_a_control_character),
        r"line 6: storedState is not a readable \S+ event \([^)]*benchmarkId holds a control",
    ),
    "unknown type": (edit(0, lambda line: line.update(topic="os:system")), "unknown event topic"),
    "actor changed": (edit(1, lambda line: line.update(actor="eve")), "line 2: .* eventHash"),
    "missing field": (edit(1, lambda line: line.pop("eventHash")), "line 2: not an export line"),
    "idempotency record moved": (move_reservation(0, 1), "line 2: idempotency record 'create-1'"),
    "eval reservation lost": (drop_reservations(7), "line 8: evalId 'eval-2' has no"),
    "eval names another checkpoint": (
        edit(7, lambda line: line["reservations"][0].update(value=str(uuid4()))),
        "line 8: .* names another checkpoint",
    ),
}


@pytest.mark.parametrize("fault", sorted(BROKEN_FILES))
def test_a_faulty_file_is_refused_naming_the_line_and_nothing_is_written(
    fault: str, source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ = source
    lines = exported(ledger)
    assert [line["type"] for line in lines][4:9] == [
        "Completed",
        "EvalAttached",
        "MarkedDeployable",
        "EvalAttached",
        "DeployabilityRevoked",
    ]
    corrupt, message = BROKEN_FILES[fault]
    with pytest.raises(ImportRefusedError, match=message):
        import_log(target, as_file(corrupt(json.loads(json.dumps(lines)))))
    assert is_empty(target)


def test_a_line_that_is_not_json_is_refused(
    source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ = source
    data = as_file(exported(ledger))
    data[3] = data[3][:40]
    with pytest.raises(ImportRefusedError, match="line 4: not valid JSON"):
        import_log(target, data)
    assert is_empty(target)


def test_a_key_whose_command_never_finished_moves_without_a_record(
    target: TrainingLedger, tmp_path: Path
) -> None:
    """`train` stamps Started with its key; the record comes with the outcome, if ever."""
    source = open_ledger("memory://")
    populate(source, tmp_path)
    pending = source.create_experiment(
        reader_request(tmp_path),
        dataset_fingerprint="0123456789abcdef",
        sample_count=1,
        actor="alice",
    )["trainRunId"]
    run = source.get_run(pending)
    with command_context("alice", "train-1"):
        run.start(host="gpu-1", pid=4242)
    source.save(run)  # the trainer's start, saved without the key's record

    lines = exported(source)
    assert lines[-1]["idempotencyKey"] == "train-1"
    assert "reservations" not in lines[-1]
    import_log(target, as_file(lines))
    assert exported(target) == lines
    # The key is as free on the new store as on the old one.
    assert (
        target.fail_run(pending, "abandoned", actor="alice", idempotency_key="train-1")["status"]
        == "failed"
    )


def test_export_refuses_reservations_it_cannot_place(target: TrainingLedger) -> None:
    recorder: Any = target.recorder
    recorder.insert_events([], reservations=[Reservation("licence", "x", b"1")])
    with pytest.raises(ExportRefusedError, match="licence"):
        exported(target)


class Dataset(LedgerAggregate):
    """A test aggregate whose `Renamed` event gained a field in version 2."""

    name: str

    def __init__(self) -> None:
        """State is set by `Registered.apply`."""

    class Registered(LedgerAggregate.Created):
        name: str

        def apply(self, dataset: Dataset) -> None:
            dataset.name = self.name

    class Renamed(LedgerAggregate.Event):
        class_version: ClassVar[int] = 2
        name: str
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason"] = "unrecorded"

        def apply(self, dataset: Dataset) -> None:
            dataset.name = self.name


def test_an_event_stored_by_an_older_class_version_is_restored_as_stored(
    target: TrainingLedger,
) -> None:
    source = open_ledger("memory://")
    with command_context("alice"):
        dataset: Dataset = Dataset._open(Dataset.Registered, uuid4(), name="a")
        dataset._trigger(Dataset.Renamed, name="b", reason="typo")
    registered, renamed = dataset.collect_events()
    v1_state = orjson.loads(source.mapper.to_stored_event(renamed).state)
    del v1_state["reason"], v1_state["class_version"]
    v1_state["eventHash"] = chain_hash(str(dataset.id), 2, "Renamed", v1_state)
    stored_v1 = StoredEvent(dataset.id, 2, get_topic(Dataset.Renamed), orjson.dumps(v1_state))
    source.recorder.insert_events([source.mapper.to_stored_event(registered), stored_v1])

    lines = exported(source)
    assert "storedState" not in lines[0]
    assert lines[1]["storedState"] == v1_state
    assert lines[1]["payload"] == {"name": "b", "reason": "unrecorded"}
    import_log(target, as_file(lines))
    restored = target.recorder.select_events(dataset.id)
    assert restored[1].state == stored_v1.state
    assert target.verify()["ok"]
    assert target.verify()["digest"] == source.verify()["digest"]


def test_reservations_of_other_kinds_fail_loudly_on_import(
    source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ = source
    lines = exported(ledger)
    lines[2].setdefault("reservations", []).append({"kind": "licence", "key": "k", "value": "v"})
    with pytest.raises(ImportRefusedError, match="unknown reservation kind 'licence'"):
        import_log(target, as_file(lines))
    assert is_empty(target)
