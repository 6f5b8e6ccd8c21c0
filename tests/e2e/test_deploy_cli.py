"""SPEC §9 through the real CLI, on SQLite and PostgreSQL: the promotion gate, the bind
preconditions, rollbacks, as-of on a slot, revokes stopping routing, shadow statistics.

Checkpoints are made deployable through the Python API on the same store (the
lifecycle's own CLI is tested elsewhere); where a test needs the shadow window
to have lasted an hour, that part is recorded through the API with a clock
set hours in the past, never by sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import Cli, SteppingClock, deployable_lifecycle
from trainledger.adapters.store import open_ledger
from trainledger.service.ledger import TrainingLedger

READER = "local-reader"


@pytest.fixture
def cli(store_url: str, tmp_path: Path) -> Cli:
    return Cli(store_url, cwd=tmp_path)


@pytest.fixture
def api(store_url: str) -> Iterator[TrainingLedger]:
    ledger = open_ledger(store_url)
    yield ledger
    ledger.close()


def deployable(api: TrainingLedger, tmp_path: Path, eval_id: str) -> str:
    checkpoint_id: str = deployable_lifecycle(api, tmp_path / eval_id, eval_id=eval_id)[1]
    return checkpoint_id


def shadow_ready(cli: Cli, api: TrainingLedger, tmp_path: Path, eval_id: str) -> str:
    checkpoint = deployable(api, tmp_path, eval_id)
    assert cli.ok("promotion", "evaluate", checkpoint)["state"] == "candidate_only"
    advanced = cli.ok("promotion", "advance", checkpoint, "--review", "--note", "read it")
    assert advanced["state"] == "shadow_ready"
    return checkpoint


def position(cli: Cli) -> int:
    """The log's last position, read in-process."""
    assert cli.store is not None
    ledger = open_ledger(cli.store, create=False)
    try:
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def refused(cli: Cli, *args: str, code: int = 1, match: str = "") -> str:
    """The refusal contract: exit code, one `error:` line, nothing recorded."""
    before = position(cli)
    result = cli(*args)
    assert result.code == code, f"{args}: exit {result.code}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert match in lines[0], lines[0]
    assert position(cli) == before
    return lines[0]


def test_the_gate_records_its_checks_and_refuses_what_it_must(
    cli: Cli, api: TrainingLedger, tmp_path: Path
) -> None:
    checkpoint = deployable(api, tmp_path, "e1")
    refused(cli, "promotion", "advance", checkpoint, "--review", "--note", "n", match="never")
    refused(cli, "promotion", "advance", checkpoint, "--note", "n", code=2, match="--review")
    decided = cli.ok("promotion", "evaluate", checkpoint)
    (decision,) = decided["decisions"]
    assert set(decision) >= {"state", "checks", "evidence", "evalId", "actor", "timestamp"}
    assert (decision["evidence"], decision["evalId"], decision["actor"]) == ("eval", "e1", "tester")
    assert [c["name"] for c in decision["checks"]] == [
        "delta",
        "arbiterRejectRate",
        "executabilityRejectRate",
        "reviewedSubsetQuality",
    ]
    assert all(set(c) == {"name", "value", "threshold", "passed"} for c in decision["checks"])
    strict = cli.ok("promotion", "evaluate", checkpoint, "--min-delta", "0.5")
    assert strict["state"] == "rejected"
    assert strict["decisions"][-1]["checks"][0] == {
        "name": "delta",
        "value": 0.25,
        "threshold": 0.5,
        "passed": False,
    }
    refused(cli, "promotion", "advance", checkpoint, "--review", "--note", "n", match="rejected")
    refused(cli, "promotion", "reject", checkpoint, "--reason", "no", match="already rejected")
    again = cli.ok("promotion", "evaluate", checkpoint)
    assert again["state"] == "candidate_only"
    assert cli.ok("promotion", "reject", checkpoint, "--reason", "not now")["state"] == "rejected"
    shown = cli.ok("promotion", "show", checkpoint)
    assert [d["kind"] for d in shown["decisions"]] == ["evaluate", "evaluate", "evaluate", "reject"]
    assert shown["decisions"][-1]["reason"] == "not now"
    listed = cli.ok("promotion", "list", "--state", "rejected")["promotions"]
    assert [p["checkpointId"] for p in listed] == [checkpoint]
    assert cli.ok("promotion", "list", "--state", "promotable")["promotions"] == []
    first = shown["decisions"][0]["timestamp"]
    assert cli.ok("promotion", "show", checkpoint, "--as-of", first)["state"] == "candidate_only"
    refused(cli, "promotion", "show", "00000000-0000-4000-8000-000000000000", match="not found")
    refused(cli, "promotion", "list", "--state", "maybe", code=2)


def test_a_bind_that_breaks_a_precondition_is_refused(
    cli: Cli, api: TrainingLedger, tmp_path: Path
) -> None:
    checkpoint = deployable(api, tmp_path, "e1")
    refused(cli, "deploy", "bind", READER, checkpoint, match="never evaluated")
    cli.ok("promotion", "evaluate", checkpoint)
    refused(cli, "deploy", "bind", READER, checkpoint, match="candidate_only")
    cli.ok("promotion", "advance", checkpoint, "--review", "--note", "n")
    refused(cli, "deploy", "bind", "local-editor", checkpoint, match="does not suit")
    refused(cli, "deploy", "bind", "local-writer", checkpoint, match="unknown worker profile")
    refused(cli, "deploy", "bind", READER, "0123abcd", match="0123abcd")
    cli.ok("checkpoint", "revoke", checkpoint, "--reason", "bad data")
    refused(cli, "deploy", "bind", READER, checkpoint, match="not deployable")
    never = cli.ok("deploy", "show", READER)
    assert (never["activeCheckpointId"], never["bindings"]) == (None, [])
    refused(cli, "deploy", "enable-routing", READER, match="never bound")
    refused(cli, "deploy", "rollback", READER, match="never bound")


def test_rollback_walks_back_three_bindings_and_to_a_named_one(
    cli: Cli, api: TrainingLedger, tmp_path: Path
) -> None:
    a, b, c, d = (shadow_ready(cli, api, tmp_path, f"e{i}") for i in range(4))
    for checkpoint in (a, b, c, d):
        slot = cli.ok("deploy", "bind", READER, checkpoint, "--note", f"try {checkpoint[:4]}")
        assert (slot["activeCheckpointId"], slot["routingEnabled"]) == (checkpoint, False)
    cli.ok("deploy", "enable-routing", READER)
    walked = [cli.ok("deploy", "rollback", READER) for _ in range(3)]
    assert [s["activeCheckpointId"] for s in walked] == [c, b, a]
    assert not any(s["routingEnabled"] for s in walked)
    refused(cli, "deploy", "rollback", READER, match="nothing to roll back to")
    cli.ok("deploy", "bind", READER, c)
    cli.ok("deploy", "bind", READER, d)
    refused(cli, "deploy", "rollback", READER, "--to", b, match="never bound")
    api.revoke_deployability(c, "regressed", actor="ops")
    refused(cli, "deploy", "rollback", READER, match="no longer deployable")
    slot = cli.ok("deploy", "rollback", READER, "--to", a)
    assert slot["activeCheckpointId"] == a
    assert [(x["kind"], x["checkpointId"]) for x in slot["bindings"]][-3:] == [
        ("bind", c),
        ("bind", d),
        ("rollback", a),
    ]
    assert slot["bindings"][-1]["previousCheckpointId"] == d
    history = cli.ok("deploy", "history", READER)["events"]
    assert [e["type"] for e in history][:2] == ["Opened", "Bound"]
    assert cli.ok("deploy", "list")["slots"][0]["activeCheckpointId"] == a


def test_a_slot_answers_as_of_any_moment(cli: Cli, api: TrainingLedger, tmp_path: Path) -> None:
    a, b = (shadow_ready(cli, api, tmp_path, f"e{i}") for i in range(2))
    first = cli.ok("deploy", "bind", READER, a, "--note", "first")
    cli.ok("deploy", "enable-routing", READER)
    second = cli.ok("deploy", "bind", READER, b)
    between = first["boundAt"]
    then = cli.ok("deploy", "show", READER, "--as-of", between)
    assert (then["activeCheckpointId"], then["boundBy"], then["routingEnabled"]) == (
        a,
        "tester",
        False,
    )
    assert [x["note"] for x in then["bindings"]] == ["first"]
    now = cli.ok("deploy", "show", READER)
    assert now["activeCheckpointId"] == b
    assert now["boundAt"] == second["boundAt"]
    before = cli.ok("deploy", "show", READER, "--as-of", "2000-01-01T00:00:00Z")
    assert before["activeCheckpointId"] is None
    listed = cli.ok("deploy", "list", "--as-of", between)["slots"]
    assert {s["profile"]: s["activeCheckpointId"] for s in listed} == {
        READER: a,
        "local-editor": None,
    }
    lineage = cli.ok("lineage", a)
    assert [(x["profile"], x["active"]) for x in lineage["bindings"]] == [(READER, False)]
    assert lineage["promotion"]["state"] == "shadow_ready"


def test_revoking_the_active_checkpoint_stops_routing_in_the_same_append(
    cli: Cli, api: TrainingLedger, tmp_path: Path
) -> None:
    checkpoint = shadow_ready(cli, api, tmp_path, "e1")
    cli.ok("deploy", "bind", READER, checkpoint)
    assert cli.ok("deploy", "enable-routing", READER)["routingEnabled"] is True
    assert cli.ok("stats")["routedProfiles"] == 1
    refused(cli, "deploy", "enable-routing", READER, match="already enabled")
    end = position(cli)
    cli.ok("checkpoint", "revoke", checkpoint, "--reason", "leaked eval set")
    appended = [json.loads(line) for line in cli("events", "--after", str(end)).stdout.splitlines()]
    assert [(e["position"], e["aggregateType"], e["type"]) for e in appended] == [
        (end + 1, "Checkpoint", "DeployabilityRevoked"),
        (end + 2, "Promotion", "Rejected"),
        (end + 3, "DeploymentSlot", "RoutingDisabled"),
    ]
    slot = cli.ok("deploy", "show", READER)
    assert (slot["activeCheckpointId"], slot["routingEnabled"]) == (checkpoint, False)
    assert cli.ok("promotion", "show", checkpoint)["state"] == "rejected"
    assert cli.ok("stats")["routedProfiles"] == 0
    last = cli.ok("deploy", "history", READER)["events"][-1]
    assert last["type"] == "RoutingDisabled"
    assert "leaked eval set" in last["payload"]["reason"]
    refused(cli, "deploy", "enable-routing", READER, match="no longer deployable")
    refused(cli, "deploy", "disable-routing", READER, "--reason", "x", match="not enabled")


def test_shadow_observations_settle_once_and_count(
    cli: Cli, api: TrainingLedger, tmp_path: Path
) -> None:
    checkpoint = deployable(api, tmp_path, "e1")
    routed = [
        cli.ok("shadow", "route", checkpoint, "--profile", READER, "--task-fingerprint", f"t{i}")
        for i in range(6)
    ]
    assert all(set(r) >= {"observationId", "routedAt"} for r in routed)
    ids = [r["observationId"] for r in routed]
    cli.ok("shadow", "complete", ids[0], "--outcome", "accepted")
    cli.ok("shadow", "complete", ids[1], "--outcome", "accepted")
    cli.ok("shadow", "complete", ids[2], "--outcome", "rejected", "--invalid-output")
    cli.ok("shadow", "complete", ids[3], "--outcome", "escalated", "--profile-rejected")
    cli.ok("shadow", "complete", ids[4], "--outcome", "rejected", "--timed-out")
    refused(cli, "shadow", "complete", ids[0], "--outcome", "rejected", match="already completed")
    refused(cli, "shadow", "complete", ids[5], "--outcome", "maybe", code=2)
    refused(cli, "shadow", "complete", "not-an-id", "--outcome", "accepted", match="not found")
    unknown = "00000000-0000-4000-8000-000000000000"
    refused(cli, "shadow", "complete", unknown, "--outcome", "accepted", match="not found")
    refused(cli, "shadow", "route", unknown, "--profile", READER, match="not found")
    refused(cli, "shadow", "route", checkpoint, "--profile", "local-editor", match="does not suit")
    stats: dict[str, Any] = cli.ok("shadow", "stats", checkpoint)
    assert {k: stats[k] for k in ("totalCount", "acceptedCount", "rejectedCount")} == {
        "totalCount": 5,
        "acceptedCount": 2,
        "rejectedCount": 2,
    }
    assert stats["escalatedCount"] == 1
    assert stats["significant"] is True
    assert stats["rejectRate"] == pytest.approx(0.4)
    assert stats["escalationRate"] == pytest.approx(0.2)
    assert stats["invalidOutputRate"] == pytest.approx(0.2)
    assert stats["timedOutRate"] == pytest.approx(0.2)
    assert stats["pendingCount"] == 1
    an_hour_on = datetime.fromisoformat(routed[-1]["routedAt"]) + timedelta(hours=1, seconds=1)
    later = cli.ok("shadow", "stats", checkpoint, "--as-of", an_hour_on.isoformat())
    assert (later["totalCount"], later["rejectedCount"], later["pendingCount"]) == (6, 3, 0)
    earlier = cli.ok("shadow", "stats", checkpoint, "--as-of", routed[0]["routedAt"])
    assert (earlier["totalCount"], earlier["pendingCount"]) == (0, 1)
    refused(cli, "shadow", "stats", checkpoint, "--window-hours", "0", match="window")
    # the gate now reads shadow evidence: rejects 40 % > 20 %
    decided = cli.ok("promotion", "evaluate", checkpoint)
    assert (decided["state"], decided["decisions"][-1]["evidence"]) == ("rejected", "shadow")


def test_a_promotable_checkpoint_after_an_hour_of_shadow(store_url: str, tmp_path: Path) -> None:
    """The shadow window recorded hours ago through the API (a clock in the past), then the
    last steps through the CLI, at the real time."""
    clock = SteppingClock(datetime.now(UTC) - timedelta(hours=3))
    past = open_ledger(store_url, clock=clock)
    checkpoint = deployable_lifecycle(past, tmp_path, eval_id="e1")[1]
    past.deployments.evaluate(checkpoint, actor="gate")
    past.deployments.advance(checkpoint, review=True, note="n", actor="rev")
    for _ in range(5):
        observation = past.deployments.route(checkpoint, READER, actor="r")["observationId"]
        clock.advance(minutes=1)
        past.deployments.complete(observation, "accepted", actor="w")
    past.close()
    cli = Cli(store_url, cwd=tmp_path)
    # the evidence since the window started (3 h ago): 5 settled, all accepted
    promoted = cli.ok("promotion", "advance", checkpoint, "--review", "--note", "shadow clean")
    assert promoted["state"] == "promotable"
    checks = {c["name"]: c for c in promoted["decisions"][-1]["checks"]}
    assert checks["settledObservations"]["value"] == 5
    assert checks["shadowWindowHours"]["value"] >= 2.9
    assert promoted["decisions"][-1]["evidence"] == "shadow"
    refused(
        cli, "promotion", "advance", checkpoint, "--review", "--note", "n", match="never demotes"
    )
    assert cli.ok("stats")["promotableCheckpoints"] == 1
    cli.ok("deploy", "bind", READER, checkpoint)
    cli.ok("deploy", "enable-routing", READER)
    lineage = cli.ok("lineage", checkpoint)
    assert lineage["promotion"]["state"] == "promotable"
    assert lineage["bindings"][0]["active"] is True
    for picture in ("dot", "mermaid", "text"):
        drawn = cli("lineage", checkpoint, "--format", picture)
        assert drawn.code == 0
        assert "promotable" in drawn.stdout
    assert cli.ok("verify")["ok"] is True
