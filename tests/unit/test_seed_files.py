"""Reading the seed's registry files: what refuses a file, with its path and the reason.

Each case damages one file of the full workspace (`tests.seed_workspaces`)
the way a file gets damaged (cut short, emptied, edited by hand) and checks
the one-line refusal names the file, the record and what is wrong. The
workspace itself must read cleanly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.seed_workspace import DEPLOYMENT, PROMOTION, SHADOW, TRAINING, iso
from tests.seed_workspaces import FullWorkspace, at, full_workspace
from trainledger.adapters.seed_files import read_seed_workspace
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import ValidationError
from trainledger.domain.seed_vocabulary import SEED_FILES, SeedRefusedError, ledger_id
from trainledger.service.seed_import import SeedWorkspace, check_workspace, import_seed


def workspace_bytes(w: FullWorkspace, tmp_path: Path) -> dict[str, bytes | None]:
    w.seed.write(tmp_path)
    return {path: (tmp_path / path).read_bytes() for path in SEED_FILES}


def test_the_full_workspace_reads_cleanly(tmp_path: Path) -> None:
    content = check_workspace(SeedWorkspace("ws", workspace_bytes(full_workspace(), tmp_path)))
    assert content.training is not None
    assert len(content.training.runs) == 8
    assert len(content.rollout.observations) == 7
    assert content.unresolved == []


Damage = Callable[[FullWorkspace], None]


def _runs(w: FullWorkspace) -> list[dict[str, Any]]:
    return w.seed.training["trainingRuns"]


def _set(record: dict[str, Any], **fields: Any) -> None:
    """Set fields of a record (None: leave the field out, as the seed does)."""
    record.update(fields)
    for name in [name for name, value in fields.items() if value is None]:
        del record[name]


def _replace(document: Any, key: str, value: Any) -> None:
    document[key] = value


SHAPE_AND_RULES: dict[str, tuple[Damage, str, str]] = {
    "runs not a list": (
        lambda w: _replace(w.seed.training, "trainingRuns", {}),
        TRAINING,
        r"wrong shape: trainingRuns: Input should be a valid (list|array)",
    ),
    "a required field missing": (
        lambda w: _runs(w)[2].pop("createdAt"),
        TRAINING,
        r"trainingRuns\[2\] \(trainRunId [0-9a-f-]+\)\.createdAt: required field missing",
    ),
    "an unknown status": (
        lambda w: _set(_runs(w)[0], status="done"),
        TRAINING,
        r"trainingRuns\[0\] \(trainRunId [0-9a-f-]+\)\.status: .*got 'done'",
    ),
    "a time without a zone": (
        lambda w: _set(_runs(w)[0], createdAt="2026-03-01T09:00:00"),
        TRAINING,
        r"trainingRuns\[0\].*createdAt: .*timezone",
    ),
    "a number given as text": (
        lambda w: _set(w.evals["served"], baselineScore="0.5"),
        TRAINING,
        r"evalSummaries\[0\] \(evalId eval-served\)\.baselineScore",
    ),
    "a duplicate run id": (
        lambda w: _set(_runs(w)[1], trainRunId=_runs(w)[0]["trainRunId"]),
        TRAINING,
        r"trainingRuns\[1\] .*duplicate id \(also trainingRuns\[0\]\)",
    ),
    "the same UUID in capitals": (
        lambda w: _set(_runs(w)[7], trainRunId=_runs(w)[6]["trainRunId"].upper()),
        TRAINING,
        r"trainingRuns\[7\] .*duplicate id \(also trainingRuns\[6\]\)",
    ),
    "a duplicate eval id": (
        lambda w: _set(w.evals["failing"], evalId="eval-served"),
        TRAINING,
        r"evalSummaries\[\d\] \(evalId eval-served\): duplicate id",
    ),
    "a checkpoint of a missing run": (
        lambda w: _set(w.checkpoints["failing"], trainRunId="0c0ffee0-0000-4000-8000-000000000000"),
        TRAINING,
        r"checkpoints\[2\] .*trainRunId 0c0ffee0-.* is not a training run",
    ),
    "an eval of a missing checkpoint": (
        lambda w: _set(w.evals["failing"], checkpointId="0c0ffee0-0000-4000-8000-000000000000"),
        TRAINING,
        r"evalSummaries\[\d\] .*checkpointId 0c0ffee0-.* is not a checkpoint",
    ),
    "a link to a missing eval": (
        lambda w: _set(w.checkpoints["served"], lastEvalSummaryRef="eval-gone"),
        TRAINING,
        r"checkpoints\[0\] .*lastEvalSummaryRef eval-gone is not an eval summary",
    ),
    "a run listing a missing checkpoint": (
        lambda w: w.runs["pending"]["checkpointIds"].append("0c0ffee0-0000-4000-8000-0000000000aa"),
        TRAINING,
        r"trainingRuns\[7\] .*checkpointIds names 0c0ffee0-.* which is not registered",
    ),
    "an eval of another family": (
        lambda w: _set(w.evals["served"], targetModelFamily="claude-haiku-reader"),
        TRAINING,
        r"evalSummaries\[0\] .*family 'claude-haiku-reader' differs from its checkpoint's",
    ),
    "completed before created": (
        lambda w: _set(w.runs["failed"], completedAt=iso(at(4))),
        TRAINING,
        r"trainingRuns\[5\] .*completedAt: timestamps out of order",
    ),
    "a checkpoint after its run completed": (
        lambda w: _set(w.checkpoints["served"], createdAt=iso(at(2.5))),
        TRAINING,
        r"checkpoints\[0\] .*completedAt: timestamps out of order",
    ),
    "an eval before its checkpoint": (
        lambda w: _set(w.evals["served"], createdAt=iso(at(1))),
        TRAINING,
        r"evalSummaries\[0\] .*createdAt: timestamps out of order",
    ),
    "a link to another checkpoint's eval": (
        lambda w: _set(w.checkpoints["failing"], lastEvalSummaryRef="eval-served"),
        TRAINING,
        r"checkpoints\[2\] .*lastEvalSummaryRef eval-served is an eval of checkpoint",
    ),
    "completed without completedAt": (
        lambda w: w.runs["failing"].pop("completedAt"),
        TRAINING,
        r"trainingRuns\[2\] .*status completed without completedAt",
    ),
    "an observation settled before it was routed": (
        lambda w: _set(w.seed.shadow["observations"][0], completedAt=iso(at(3))),
        SHADOW,
        r"observations\[0\] \(observationId .*\): completedAt: timestamps out of order",
    ),
    "an outcome without completion": (
        lambda w: w.seed.shadow["observations"][0].pop("completedAt"),
        SHADOW,
        r"observations\[0\] .*completedAt and outcome go together",
    ),
    "an observation of a missing checkpoint": (
        lambda w: _set(
            w.seed.shadow["observations"][1], checkpointId="0c0ffee0-0000-4000-8000-000000000000"
        ),
        SHADOW,
        r"observations\[1\] .*checkpoint 0c0ffee0-.* is neither in the training registry "
        r"nor in the ledger",
    ),
    "an observation before its checkpoint": (
        lambda w: _set(w.seed.shadow["observations"][1], routedAt=iso(at(1))),
        SHADOW,
        r"observations\[1\] .*routedAt: timestamps out of order",
    ),
    "a promotion changed before it was created": (
        lambda w: _set(w.seed.promotions["promotions"][1], stateChangedAt=iso(at(5))),
        PROMOTION,
        r"promotions\[1\] .*stateChangedAt: timestamps out of order",
    ),
    "two promotions of one checkpoint": (
        lambda w: _set(
            w.seed.promotions["promotions"][1],
            checkpointId=w.checkpoints["served"]["checkpointId"],
        ),
        PROMOTION,
        r"promotions\[1\] .*duplicate id",
    ),
    "shadow_ready without its start": (
        lambda w: _set(
            w.seed.promotions["promotions"][0], state="shadow_ready", shadowStartedAt=None
        ),
        PROMOTION,
        r"promotions\[0\] .*state shadow_ready without shadowStartedAt",
    ),
    "a deployment of an unknown profile": (
        lambda w: _set(w.seed.deployments["deployments"][0], workerProfile="local-writer"),
        DEPLOYMENT,
        r"deployments\[0\] \(deploymentId .*\)\.workerProfile: .*got 'local-writer'",
    ),
    "a deployment updated before it was deployed": (
        lambda w: _set(w.seed.deployments["deployments"][0], updatedAt=iso(at(5))),
        DEPLOYMENT,
        r"deployments\[0\] .*updatedAt: timestamps out of order",
    ),
    "routing with nothing bound": (
        lambda w: _replace(w.seed.deployments["deployments"][0], "activeCheckpointId", None),
        DEPLOYMENT,
        r"deployments\[0\] .*routingEnabled with no activeCheckpointId",
    ),
}


@pytest.mark.parametrize("case", sorted(SHAPE_AND_RULES))
def test_a_damaged_file_is_refused_with_its_path_and_reason(case: str, tmp_path: Path) -> None:
    damage, path, reason = SHAPE_AND_RULES[case]
    w = full_workspace()
    damage(w)
    ledger = open_ledger("memory://")
    workspace = SeedWorkspace("ws", workspace_bytes(w, tmp_path))
    with pytest.raises(SeedRefusedError) as refused:
        import_seed(ledger, workspace, imported_by="tester")
    message = refused.value.message
    assert message.startswith(f"ws/{path}: "), message
    assert "\n" not in message
    assert re.search(reason, message), message
    assert ledger.recorder.max_notification_id() in (None, 0)  # nothing written


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"the file is empty"),
        (b"  \n\t", r"the file is empty"),
        (b'{"trainingRuns": [{"trainRunId": "a"', r"not valid JSON .*truncated"),
        (b'{"trainingRuns": [], "checkpoints": [], "evalSummaries": [] trailing', r"not valid"),
        (b"[]", r"wrong shape: expected a JSON object .* got list"),
        (b'{"checkpoints": [], "evalSummaries": []}', r"wrong shape: trainingRuns: required field"),
        (b"\xff\xfe{}", r"not valid JSON"),
    ],
)
def test_a_file_that_does_not_parse_is_refused(content: bytes, reason: str) -> None:
    workspace = SeedWorkspace("ws", {TRAINING: content})
    with pytest.raises(SeedRefusedError, match=f"^ws/{TRAINING}: {reason}"):
        check_workspace(workspace)


def test_a_workspace_without_any_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeedRefusedError, match="no seed registry file found"):
        check_workspace(read_seed_workspace(str(tmp_path)))
    with pytest.raises(ValidationError, match="does not exist"):
        read_seed_workspace(str(tmp_path / "nowhere"))


def test_a_registry_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / PROMOTION).mkdir()
    with pytest.raises(SeedRefusedError, match=f"{PROMOTION}: a directory, not a file"):
        read_seed_workspace(str(tmp_path))


def test_missing_optional_files_are_reported_and_skipped(tmp_path: Path) -> None:
    w = full_workspace()
    w.seed.write(tmp_path, only=(TRAINING,))
    report = import_seed(
        open_ledger("memory://"), read_seed_workspace(str(tmp_path)), imported_by="tester"
    )
    missing = [f["path"] for f in report["files"] if not f["present"]]
    assert missing == [DEPLOYMENT, PROMOTION, SHADOW]
    file_gaps = [g for g in report["gaps"] if g["record"] == "file"]
    assert file_gaps == [
        {
            "record": "file",
            "field": "",
            "gap": "missing; skipped",
            "count": 3,
            "ids": [DEPLOYMENT, PROMOTION, SHADOW],
        }
    ]
    assert report["recorded"]["runs"] == 8
    assert report["recorded"]["observations"] == 0


def test_unknown_fields_are_kept_for_runs_and_reported_for_others(tmp_path: Path) -> None:
    w = full_workspace()
    w.runs["served"]["trainerHost"] = "gpu-7"
    w.evals["served"]["reviewer"] = "ana"
    w.seed.write(tmp_path)
    ledger = open_ledger("memory://")
    report = import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="tester")
    gaps = {(g["record"], g["field"]): g for g in report["gaps"]}
    assert "kept in the run's seedRecord" in gaps[("run", "trainerHost")]["gap"]
    assert "not imported" in gaps[("eval", "reviewer")]["gap"]
    first = ledger.history(w.runs["served"]["trainRunId"])["events"][0]
    assert first["type"] == "ImportedFromSeed"
    assert first["payload"]["seedRecord"]["trainerHost"] == "gpu-7"
    assert (
        first["payload"]["seedRecord"]
        == json.loads((tmp_path / TRAINING).read_text())["trainingRuns"][0]
    )


def test_ids_that_are_not_uuids_map_to_the_same_uuid_every_time(tmp_path: Path) -> None:
    w = full_workspace()
    served = w.runs["served"]
    old = served["trainRunId"]
    served["trainRunId"] = "run-001"
    w.checkpoints["served"]["trainRunId"] = "run-001"
    w.seed.write(tmp_path)
    ledger = open_ledger("memory://")
    report = import_seed(ledger, read_seed_workspace(str(tmp_path)), imported_by="tester")
    mapped = str(ledger_id("run", "run-001"))
    assert report["idMap"] == {"run-001": mapped}
    assert mapped != old
    assert ledger.show_run(mapped)["experimentId"] == served["experimentId"]


def test_evals_are_attached_in_the_order_of_their_times(tmp_path: Path) -> None:
    w = full_workspace()
    evals = w.seed.training["evalSummaries"]
    evals[1], evals[2] = evals[2], evals[1]  # recovered's pass listed before its fail
    ledger = open_ledger("memory://")
    report = import_seed(
        ledger, SeedWorkspace("ws", workspace_bytes(w, tmp_path)), imported_by="tester"
    )
    recovered = ledger.show_checkpoint(w.checkpoints["recovered"]["checkpointId"])
    assert [e["verdict"] for e in recovered["evals"]] == ["fail", "pass"]
    assert recovered["deployable"] is True
    assert report["recorded"]["evals"] == 5


def test_a_link_to_an_earlier_eval_is_a_gap(tmp_path: Path) -> None:
    w = full_workspace()
    w.checkpoints["recovered"]["lastEvalSummaryRef"] = w.evals["recovered-fail"]["evalId"]
    ledger = open_ledger("memory://")
    report = import_seed(
        ledger, SeedWorkspace("ws", workspace_bytes(w, tmp_path)), imported_by="tester"
    )
    [stale] = [
        g
        for g in report["gaps"]
        if g["field"] == "lastEvalSummaryRef" and "not its latest" in g["gap"]
    ]
    assert stale["ids"] == [w.checkpoints["recovered"]["checkpointId"]]
