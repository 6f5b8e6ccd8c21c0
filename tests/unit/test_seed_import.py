"""`import-seed` through the Python API on the in-memory store: what is recorded, when.

The full workspace (`tests.seed_workspaces`) is imported and the ledger is
asked what a user would ask: lineage, lists, histories, stats, promotion and
deployment, as of the seed's times. Then again (nothing new), a later version
(only what is new), a dry run (nothing), and the seed's lies the ledger does
not repeat (its gaps).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.seed_workspace import TRAINING, iso
from tests.seed_workspaces import FullWorkspace, at, full_workspace
from tests.support import reader_request
from trainledger.adapters.seed_files import read_seed_workspace
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import IdempotencyKeyReusedError, InvalidTransitionError
from trainledger.domain.seed_vocabulary import SeedRefusedError
from trainledger.service.archive import export_log, import_log
from trainledger.service.ledger import TrainingLedger
from trainledger.service.seed_import import import_seed

IMPORTED_AT = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(IMPORTED_AT)


@pytest.fixture
def ledger(clock: Clock) -> TrainingLedger:
    return open_ledger("memory://", clock=clock)


def imported(ledger: TrainingLedger, w: FullWorkspace, root: Path, **options: Any) -> Any:
    w.seed.write(root)
    return import_seed(ledger, read_seed_workspace(str(root)), imported_by="ana", **options)


def gap_of(report: dict[str, Any], record: str, field: str) -> list[dict[str, Any]]:
    return [g for g in report["gaps"] if g["record"] == record and g["field"] == field]


def position(ledger: TrainingLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def test_the_full_workspace_is_recorded_at_the_seeds_times(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    report = imported(ledger, w, tmp_path)
    assert report["recorded"] == {
        "runs": 8,
        "runStarts": 7,
        "runCompletions": 5,
        "runFailures": 1,
        "checkpoints": 5,
        "evals": 5,
        "deployabilityMarks": 2,
        "deployabilityRevocations": 0,
        "observations": 7,
        "observationSettlements": 6,
        "promotionDecisions": 4,
        "bindings": 1,
        "routingChanges": 1,
    }
    assert report["importedAt"] == "2026-04-01T12:00:00Z"
    assert ledger.stats() == {
        "totalRuns": 8,
        "completedRuns": 5,
        "failedRuns": 1,
        "pendingRuns": 1,
        "runningRuns": 1,
        "totalCheckpoints": 5,
        "deployableCheckpoints": 2,
        "totalEvals": 5,
        "passingEvals": 3,
        "failingEvals": 2,
        "promotableCheckpoints": 1,
        "routedProfiles": 1,
    }
    assert ledger.verify()["ok"] is True

    served = w.runs["served"]
    run = ledger.show_run(served["trainRunId"])
    assert run["status"] == "completed"
    assert run["experimentId"] == served["experimentId"]
    assert (run["createdAt"], run["startedAt"], run["completedAt"]) == (
        "2026-03-01T09:00:00Z",
        "2026-03-01T10:58:12Z",  # its checkpoint's createdAt: the seed records no start
        "2026-03-01T11:00:00Z",
    )
    assert run["sampleCount"] is None  # the seed's placeholder 0 is not a count
    assert run["backend"] is None
    assert run["spec"] == {
        "experimentId": served["experimentId"],
        "targetModelFamily": "qwen2.5-7b-reader",
        "datasetFingerprint": served["datasetFingerprint"],
        "datasetExportId": served["exportId"],
        "configFingerprint": served["configFingerprint"],
    }
    history = ledger.history(served["trainRunId"])["events"]
    assert [(e["type"], e["timestamp"], e["actor"]) for e in history] == [
        ("ImportedFromSeed", "2026-03-01T09:00:00Z", "seed-import"),
        ("Started", "2026-03-01T10:58:12Z", "seed-import"),
        ("CheckpointLinked", "2026-03-01T10:58:12Z", "seed-import"),
        ("Completed", "2026-03-01T11:00:00Z", "seed-import"),
    ]
    failed = ledger.show_run(w.runs["failed"]["trainRunId"])
    assert failed["failureReason"] == "OOM at step 40"
    assert failed["failedAt"] == iso(at(5.5)).replace(".000", "")


def test_lineage_shows_the_seeds_evals_deployability_promotion_and_binding(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    checkpoint_id = w.checkpoints["served"]["checkpointId"]
    lineage = ledger.lineage(checkpoint_id)
    assert lineage["run"]["trainRunId"] == w.runs["served"]["trainRunId"]
    assert lineage["dataset"]["datasetExportId"] == w.runs["served"]["exportId"]
    assert lineage["currentEval"]["evalId"] == "eval-served"
    assert lineage["checkpoint"]["artifactDigest"] is None
    assert lineage["deployabilityHistory"] == [
        {
            "deployable": True,
            "timestamp": "2026-03-01T12:00:00Z",
            "actor": "seed-import",
            "evalId": "eval-served",
            "reason": None,
        }
    ]
    promotion = ledger.deployments.show_promotion(checkpoint_id)
    assert promotion["state"] == "promotable"
    assert [
        (d["kind"], d["state"], d["timestamp"], d["evidence"]) for d in promotion["decisions"]
    ] == [
        ("evaluate", "candidate_only", "2026-03-01T12:30:00Z", "eval"),
        ("advance", "shadow_ready", "2026-03-01T13:00:00Z", None),
        ("advance", "promotable", "2026-03-01T14:30:00Z", "shadow"),
    ]
    slot = ledger.deployments.show_slot("local-reader")
    assert slot["activeCheckpointId"] == checkpoint_id
    assert slot["routingEnabled"] is True
    assert slot["boundAt"] == "2026-03-01T15:00:00Z"
    assert slot["bindings"][0]["note"] == "first rollout"
    stats = ledger.deployments.shadow_stats(checkpoint_id, as_of=at(5.45))
    assert (stats["totalCount"], stats["rejectedCount"], stats["pendingCount"]) == (6, 1, 1)
    rejected = ledger.deployments.show_promotion(w.checkpoints["failing"]["checkpointId"])
    assert rejected["state"] == "rejected"


def test_as_of_answers_use_the_seeds_times(ledger: TrainingLedger, tmp_path: Path) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    served = w.runs["served"]["trainRunId"]
    assert ledger.stats(as_of=at(-1))["totalRuns"] == 0
    assert ledger.show_run(served, as_of=at(1))["status"] == "pending"
    assert ledger.show_run(served, as_of=at(1.99))["status"] == "running"
    assert ledger.show_run(served, as_of=at(2.5))["status"] == "completed"
    checkpoint_id = w.checkpoints["served"]["checkpointId"]
    assert ledger.show_checkpoint(checkpoint_id, as_of=at(2.5))["deployable"] is False
    assert ledger.show_checkpoint(checkpoint_id, as_of=at(3))["deployable"] is True
    early = ledger.stats(as_of=at(4.5))
    assert (early["totalRuns"], early["completedRuns"], early["totalEvals"]) == (5, 3, 2)
    assert ledger.deployments.show_promotion(checkpoint_id, as_of=at(4.5))["state"] == (
        "shadow_ready"
    )
    assert ledger.deployments.show_slot("local-reader", as_of=at(5.9))["activeCheckpointId"] is None
    assert (
        ledger.list_runs(status="running", as_of=at(6.5))["runs"][0]["trainRunId"]
        == (w.runs["running"]["trainRunId"])
    )


def test_what_the_seeds_files_cannot_show_is_listed_never_filled_in(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    report = imported(ledger, w, tmp_path)
    revoked = w.checkpoints["revoked"]["checkpointId"]
    [cleared] = gap_of(report, "checkpoint", "lastEvalSummaryRef")
    assert cleared["ids"] == [revoked]
    assert "revoke" in cleared["gap"]
    assert ledger.show_checkpoint(revoked)["deployabilityHistory"] == []  # no mark invented
    [unbacked] = [
        g for g in gap_of(report, "checkpoint", "deployable") if "without an eval" in g["gap"]
    ]
    assert unbacked["ids"] == [w.checkpoints["unbacked"]["checkpointId"]]
    assert ledger.show_checkpoint(unbacked["ids"][0])["deployable"] is False
    starts = {g["gap"]: g["ids"] for g in gap_of(report, "run", "startedAt")}
    assert [w.runs["running"]["trainRunId"]] in starts.values()
    [placeholder] = gap_of(report, "run", "sampleCount")
    assert placeholder["count"] == 8
    assert gap_of(report, "promotion", "decisions")[0]["count"] == 2
    assert gap_of(report, "checkpoint", "artifactDigest")[0]["count"] == 5


def test_the_same_files_again_record_nothing_and_say_so(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    first = imported(ledger, w, tmp_path)
    before = position(ledger)
    again = import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="ana")
    assert again["nothingNew"] is True
    assert again["events"] == 0
    assert again["sameFilesImportedAs"] == first["importId"]
    assert again["alreadyPresent"]["runs"] == 8
    assert position(ledger) == before


def test_the_same_records_in_other_bytes_record_nothing(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    before = position(ledger)
    path = tmp_path / TRAINING
    path.write_text(path.read_text() + "\n")  # new digest: compared record by record
    again = import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="ana")
    assert again["nothingNew"] is True
    assert again["importId"] is None
    assert again["alreadyPresent"]["runs"] == 8
    assert again["alreadyPresent"]["evals"] == 5
    assert position(ledger) == before


def test_a_later_version_records_only_what_is_new(
    ledger: TrainingLedger, clock: Clock, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    seed = w.seed
    running = w.runs["running"]
    running.update(status="completed", completedAt=iso(at(9)))
    new_checkpoint = seed.checkpoint(running, created=at(8.5), deployable=True)
    seed.eval(new_checkpoint, "pass", created=at(9.5))
    w.runs["pending"]["status"] = "running"
    seed.eval(w.checkpoints["recovered"], "pass", created=at(10), candidate=0.95)
    clock.now = IMPORTED_AT + timedelta(days=1)
    report = imported(ledger, w, tmp_path)
    recorded = {k: v for k, v in report["recorded"].items() if v}
    assert recorded == {
        "runStarts": 1,  # pending → running
        "runCompletions": 1,
        "checkpoints": 1,
        "evals": 2,
        "deployabilityMarks": 1,
    }
    assert report["alreadyPresent"]["runs"] == 8
    run = ledger.show_run(running["trainRunId"])
    assert (run["startedAt"], run["completedAt"]) == (
        "2026-03-01T15:00:00Z",
        "2026-03-01T18:00:00Z",
    )
    assert ledger.show_checkpoint(new_checkpoint["checkpointId"])["deployable"] is True
    assert ledger.verify()["ok"] is True
    assert import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="ana")["nothingNew"]


def test_a_later_failing_eval_revokes_and_rejects_as_the_ledgers_rules_say(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    served = w.checkpoints["served"]
    w.seed.eval(served, "fail", created=at(8), candidate=0.1)  # the seed keeps it deployable
    report = imported(ledger, w, tmp_path)
    assert report["recorded"]["deployabilityRevocations"] == 1
    document = ledger.show_checkpoint(served["checkpointId"])
    assert document["deployable"] is False
    assert document["deployabilityHistory"][-1]["timestamp"] == "2026-03-01T17:00:00Z"
    assert ledger.deployments.show_promotion(served["checkpointId"])["state"] == "rejected"
    assert ledger.deployments.show_slot("local-reader")["routingEnabled"] is False
    assert any("revoked by its failing eval" in g["gap"] for g in report["gaps"])


def test_deployability_the_seed_withdrew_since_is_revoked_at_the_imports_time(
    ledger: TrainingLedger, clock: Clock, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    recovered = w.checkpoints["recovered"]
    recovered["deployable"] = False
    del recovered["lastEvalSummaryRef"]  # the seed's revoke
    clock.now = IMPORTED_AT + timedelta(hours=3)
    report = imported(ledger, w, tmp_path)
    assert report["recorded"]["deployabilityRevocations"] == 1
    last = ledger.show_checkpoint(recovered["checkpointId"])["deployabilityHistory"][-1]
    assert (last["deployable"], last["timestamp"]) == (False, "2026-04-01T15:00:00Z")
    assert "neither when nor why" in last["reason"]


def test_a_dry_run_reports_the_same_and_records_nothing(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    planned = imported(ledger, w, tmp_path, dry_run=True)
    assert planned["dryRun"] is True
    assert position(ledger) == 0
    done = import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="ana")
    assert planned["recorded"] == done["recorded"]
    assert planned["events"] == done["events"]
    assert planned["gaps"] == done["gaps"]


def test_a_run_imported_from_the_seed_is_not_trained_nor_reconciled(
    ledger: TrainingLedger, clock: Clock, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    with pytest.raises(InvalidTransitionError, match=r"imported from the seed.*no experiment spec"):
        ledger.train(w.runs["pending"]["trainRunId"], actor="ana")
    clock.now = IMPORTED_AT + timedelta(days=365)
    assert ledger.reconcile(actor="ana")["abandoned"] == []  # no budget was recorded


def test_a_record_the_ledger_holds_otherwise_refuses_the_import(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    created = ledger.create_experiment(
        reader_request(tmp_path),
        dataset_fingerprint="0123456789abcdef",
        sample_count=3,
        actor="ana",
    )
    w = full_workspace()
    w.runs["pending"]["trainRunId"] = created["trainRunId"]
    before = position(ledger)
    with pytest.raises(
        SeedRefusedError, match=r"trainingRuns\[7\].*the ledger holds run .*not this one"
    ):
        imported(ledger, w, tmp_path)
    assert position(ledger) == before


def test_an_eval_id_used_in_the_ledger_refuses_the_import(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    w.seed.write(tmp_path / "first", only=(TRAINING,))
    import_seed(ledger, read_seed_workspace(str(tmp_path / "first")), imported_by="ana")
    other = full_workspace()
    other.evals["served"]["evalId"] = "eval-served-2"
    other.checkpoints["served"]["lastEvalSummaryRef"] = "eval-served-2"
    other.evals["failing"]["evalId"] = "eval-served"  # now on another checkpoint
    other.checkpoints["failing"]["lastEvalSummaryRef"] = "eval-served"
    before = position(ledger)
    with pytest.raises(SeedRefusedError, match="evalId eval-served is already used in the ledger"):
        imported(ledger, other, tmp_path / "second")
    assert position(ledger) == before


def test_an_imported_ledger_exports_and_imports_whole(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    source = ledger
    imported(source, full_workspace(), tmp_path)
    lines = [orjson.dumps(line) for line in export_log(source)]
    target = open_ledger("memory://")
    summary = import_log(target, lines)
    assert summary["imported"] == len(lines)
    assert target.verify()["digest"] == source.verify()["digest"]


def test_what_the_ledgers_operators_changed_since_is_not_undone_by_a_later_version(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    imported(ledger, w, tmp_path)
    served = w.checkpoints["served"]["checkpointId"]
    ledger.deployments.disable_routing("local-reader", "incident 42", actor="ops")
    recovered = w.checkpoints["recovered"]["checkpointId"]
    ledger.deployments.evaluate(recovered, actor="ops")
    w.seed.promotion(w.checkpoints["recovered"], "rejected", created=at(6), note="too risky")
    w.runs["pending"]["status"] = "running"  # something new, so the files are compared
    report = imported(ledger, w, tmp_path)
    assert report["recorded"]["runStarts"] == 1
    assert report["recorded"]["routingChanges"] == 0
    assert ledger.deployments.show_slot("local-reader")["routingEnabled"] is False
    assert ledger.deployments.show_promotion(recovered)["state"] == "candidate_only"
    [kept] = [g for g in gap_of(report, "promotion", "state") if "decided on by ops" in g["gap"]]
    assert kept["count"] == 1
    assert ledger.deployments.show_slot("local-reader")["activeCheckpointId"] == served


def test_an_idempotency_key_returns_the_first_outcome(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    w = full_workspace()
    first = imported(ledger, w, tmp_path, idempotency_key="migration-1")
    before = position(ledger)
    again = import_seed(
        ledger, read_seed_workspace(str(tmp_path)), imported_by="ana", idempotency_key="migration-1"
    )
    assert again == first
    w.runs["pending"]["status"] = "running"
    with pytest.raises(IdempotencyKeyReusedError):
        imported(ledger, w, tmp_path, idempotency_key="migration-1")
    assert position(ledger) == before
