"""OpenLineage RunEvents of the ledger's runs (SPEC §11.2), on the in-memory store.

The CLI's export, on SQLite and PostgreSQL, is `tests/e2e/test_openlineage_cli.py`;
here the mapping's corners, and that the schema check can fail at all.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from referencing.exceptions import Unresolvable

from tests.openlineage_schemas import CHECKED_FORMATS, assert_valid, event_problems
from tests.support import READER_FAMILY, reader_request, write_artifact
from tests.unit.test_clock import SteppingClock
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger
from trainledger.service.openlineage import (
    Gathered,
    lineage_event,
    producer_uri,
    run_events,
    to_json,
)


def exported(ledger: TrainingLedger) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [json.loads(to_json(e)) for e in run_events(ledger)]
    for event in events:
        assert_valid(event)
    return events


def create(ledger: TrainingLedger, tmp_path: Path, fingerprint: str = "0123456789abcdef") -> str:
    run_id: str = ledger.create_experiment(
        reader_request(tmp_path / "out"),
        dataset_fingerprint=fingerprint,
        sample_count=4,
        actor="a",
    )["trainRunId"]
    return run_id


def test_events_follow_the_log_not_the_clock(tmp_path: Path) -> None:
    """An injected clock (or an imported history) may go back: the order is the log's."""
    clock = SteppingClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    ledger = open_ledger("memory://", clock=clock)
    first, second = create(ledger, tmp_path), create(ledger, tmp_path)
    ledger.start_run(first, actor="a")
    clock.now -= timedelta(hours=2)
    ledger.start_run(second, actor="a")
    ledger.fail_run(second, "out of memory", actor="a")
    clock.now += timedelta(hours=5)
    ledger.complete_run(first, actor="a")

    events = exported(ledger)

    assert [(e["eventType"], e["run"]["runId"], e["eventTime"]) for e in events] == [
        ("START", first, "2026-03-01T12:00:00Z"),
        ("START", second, "2026-03-01T10:00:00Z"),
        ("FAIL", second, "2026-03-01T10:00:00Z"),
        ("COMPLETE", first, "2026-03-01T15:00:00Z"),
    ]
    assert events[2]["run"]["facets"]["errorMessage"]["message"] == "out of memory"
    assert all(e["producer"] == producer_uri() for e in events)


def test_a_run_abandoned_before_it_started_gives_only_its_failure(tmp_path: Path) -> None:
    ledger = open_ledger("memory://")
    pending, abandoned = create(ledger, tmp_path), create(ledger, tmp_path, "fedcba9876543210")
    ledger.fail_run(abandoned, "never scheduled", actor="a")

    events = exported(ledger)

    assert [(e["eventType"], e["run"]["runId"]) for e in events] == [("FAIL", abandoned)]
    assert pending not in json.dumps(events)
    (training_export,) = events[0]["inputs"]
    assert training_export["name"] == "dataset-fedcba9876543210"
    assert training_export["facets"]["version"]["datasetVersion"] == "fedcba9876543210"


def test_a_checkpoint_without_a_digest_is_an_output_without_a_version(tmp_path: Path) -> None:
    ledger = open_ledger("memory://")
    run_id = create(ledger, tmp_path)
    ledger.start_run(run_id, actor="a")
    kept = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=write_artifact(tmp_path / "out"), actor="a"
    )
    missing = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=str(tmp_path / "gone"), actor="a"
    )
    ledger.fail_run(run_id, "diverged", actor="a")

    start, fail = exported(ledger)

    assert start["outputs"] == []
    assert [o["name"] for o in fail["outputs"]] == [kept["checkpointId"], missing["checkpointId"]]
    with_digest, without = fail["outputs"]
    assert with_digest["facets"]["version"]["datasetVersion"] == kept["artifactDigest"]
    assert missing["artifactDigest"] is None
    assert set(without["facets"]) == {"datasetType"}
    assert without["facets"]["datasetType"]["datasetType"] == "MODEL"


def test_an_empty_ledger_exports_nothing() -> None:
    assert exported(open_ledger("memory://")) == []


# --- the schema check itself can fail -------------------------------------------


@pytest.fixture
def failed_event(tmp_path: Path) -> dict[str, Any]:
    ledger = open_ledger("memory://")
    run_id = create(ledger, tmp_path)
    ledger.start_run(run_id, actor="a")
    ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=write_artifact(tmp_path / "out"), actor="a"
    )
    ledger.fail_run(run_id, "diverged", actor="a")
    event = exported(ledger)[-1]
    assert event["eventType"] == "FAIL"
    return event


def _set(event: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    holder: Any = event
    for key in parents:
        holder = holder[int(key)] if isinstance(holder, list) else holder[key]
    if value is _DELETE:
        del holder[last]
    else:
        holder[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("eventTime", "yesterday", "date-time"),
        ("producer", "not a uri", "'uri'"),
        ("run/runId", "run-1", "'uuid'"),
        ("eventType", "DONE", "DONE"),
        ("job/name", _DELETE, "'name' is a required property"),
        ("run/facets/errorMessage/programmingLanguage", _DELETE, "programmingLanguage"),
        ("outputs/0/facets/version/datasetVersion", 7, "7 is not of type 'string'"),
        ("outputs/0/facets/datasetType/_producer", _DELETE, "_producer"),
    ],
)
def test_the_schemas_refuse_a_broken_event(
    failed_event: dict[str, Any], path: str, value: Any, named: str
) -> None:
    broken = copy.deepcopy(failed_event)
    _set(broken, path, value)
    found = event_problems(broken)
    assert any(named in problem for problem in found), found


def test_a_facet_under_another_key_than_its_own_is_refused(failed_event: dict[str, Any]) -> None:
    broken = copy.deepcopy(failed_event)
    facets = broken["inputs"][0]["facets"]
    facets["datasetVersion"] = facets.pop("version")
    assert event_problems(broken) == [
        "inputs/0/facets/datasetVersion: https://openlineage.io/spec/facets/1-0-1/"
        "DatasetVersionDatasetFacet.json names its facet ['version']"
    ]


def test_a_facet_of_an_unshipped_schema_is_not_fetched(failed_event: dict[str, Any]) -> None:
    broken = copy.deepcopy(failed_event)
    url = "https://openlineage.io/spec/facets/1-0-0/ProcessingEngineRunFacet.json"
    broken["run"]["facets"]["processing_engine"] = {
        "_producer": "urn:x",
        "_schemaURL": f"{url}#/$defs/ProcessingEngineRunFacet",
        "version": "1",
    }
    with pytest.raises(Unresolvable):
        event_problems(broken)


def test_the_formats_are_checked() -> None:
    from jsonschema import Draft202012Validator

    assert set(CHECKED_FORMATS) <= set(Draft202012Validator.FORMAT_CHECKER.checkers)


def test_a_run_opened_without_an_export_id_names_its_export_by_the_fingerprint() -> None:
    """As a history imported from elsewhere may open a run: another first event, a shorter spec."""
    run_id = "6f1c3b9e-2a4d-4e5f-8a7b-9c0d1e2f3a4b"
    opening = {
        "position": 1,
        "aggregateId": run_id,
        "aggregateType": "TrainingRun",
        "version": 1,
        "type": "ImportedFromSomewhere",
        "timestamp": "2025-06-01T08:00:00Z",
        "payload": {"spec": {"targetModelFamily": READER_FAMILY, "datasetFingerprint": "abc"}},
    }
    started = {**opening, "position": 2, "version": 2, "type": "Started", "payload": {}}
    gathered = Gathered()

    assert lineage_event(opening, gathered, "urn:test") is None
    event = lineage_event(started, gathered, "urn:test")

    assert event is not None
    document = json.loads(to_json(event))
    assert_valid(document)
    assert document["inputs"][0]["name"] == "dataset-abc"
    assert document["inputs"][0]["facets"]["version"]["datasetVersion"] == "abc"
