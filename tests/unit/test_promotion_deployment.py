"""SPEC §9 through the Python API: the gate, shadow evidence, slots, rollbacks, revokes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import SteppingClock, deployable_lifecycle, eval_summary
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import (
    DeploymentRefusedError,
    LedgerError,
    ObservationNotFoundError,
    ObservationRefusedError,
    PromotionRefusedError,
)
from trainledger.service.ledger import TrainingLedger

PROFILE = "local-reader"


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def ledger(clock: SteppingClock) -> TrainingLedger:
    return open_ledger("memory://", clock=clock)


def promoted(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path, eval_id: str, *, settle: int = 5
) -> str:
    """A deployable checkpoint taken to promotable: evaluate, advance, shadow, wait, advance."""
    _, checkpoint = deployable_lifecycle(ledger, tmp_path / eval_id, eval_id=eval_id)
    d = ledger.deployments
    assert d.evaluate(checkpoint, actor="gate")["state"] == "candidate_only"
    assert d.advance(checkpoint, review=True, note="looked", actor="rev")["state"] == "shadow_ready"
    for _ in range(settle):
        observation = d.route(checkpoint, PROFILE, actor="router")["observationId"]
        d.complete(observation, "accepted", actor="worker")
    clock.advance(hours=1)
    if settle >= 5:
        assert d.advance(checkpoint, review=True, note="ok", actor="rev")["state"] == "promotable"
    return checkpoint


def test_the_gate_records_each_check_with_value_threshold_and_verdict(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    _, checkpoint = deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    decided = ledger.deployments.evaluate(checkpoint, actor="gate")
    (decision,) = decided["decisions"]
    assert decision["evidence"] == "eval"
    assert decision["evalId"] == "e1"
    assert {c["name"]: (c["value"], c["threshold"], c["passed"]) for c in decision["checks"]} == {
        "delta": (0.25, 0.05, True),
        "arbiterRejectRate": (0.0, 0.2, True),
        "executabilityRejectRate": (0.0, 0.15, True),
        "reviewedSubsetQuality": (0.75, 0.65, True),
    }
    strict = ledger.deployments.evaluate(checkpoint, min_delta=0.3, actor="gate")
    assert strict["state"] == "rejected"
    assert strict["decisions"][-1]["checks"][0]["passed"] is False
    assert ledger.deployments.show_promotion(checkpoint) == strict


def test_promotable_needs_a_window_of_an_hour_and_five_settled_observations(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    checkpoint = promoted(ledger, clock, tmp_path, "e1", settle=4)
    d = ledger.deployments
    with pytest.raises(PromotionRefusedError, match="4 observations settled"):
        d.advance(checkpoint, review=True, note="n", actor="rev")
    observation = d.route(checkpoint, PROFILE, actor="router")["observationId"]
    d.complete(observation, "accepted", actor="worker")
    assert d.advance(checkpoint, review=True, note="n", actor="rev")["state"] == "promotable"
    with pytest.raises(PromotionRefusedError, match="never demotes"):
        d.advance(checkpoint, review=True, note="n", actor="rev")
    last = d.show_promotion(checkpoint)["decisions"][-1]
    assert last["evidence"] == "shadow"
    assert {c["name"] for c in last["checks"]} >= {"shadowWindowHours", "settledObservations"}


def test_a_young_window_is_refused_naming_it(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    _, checkpoint = deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    d = ledger.deployments
    d.evaluate(checkpoint, actor="gate")
    d.advance(checkpoint, review=True, note="n", actor="rev")
    for _ in range(6):
        d.complete(d.route(checkpoint, PROFILE, actor="r")["observationId"], "accepted", actor="w")
    clock.advance(minutes=30)
    with pytest.raises(PromotionRefusedError, match=r"shadow window has lasted 0\.5"):
        d.advance(checkpoint, review=True, note="n", actor="rev")


def test_pending_observations_time_out_against_the_candidate(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    _, checkpoint = deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    d = ledger.deployments
    for _ in range(3):
        d.route(checkpoint, PROFILE, actor="r")
    done = d.route(checkpoint, PROFILE, actor="r")["observationId"]
    d.complete(done, "accepted", actor="w")
    young = d.shadow_stats(checkpoint)
    assert (young["totalCount"], young["pendingCount"], young["rejectRate"]) == (1, 3, 0.0)
    clock.advance(hours=1, minutes=1)
    old = d.shadow_stats(checkpoint)
    assert (old["totalCount"], old["rejectedCount"], old["timedOutRate"]) == (4, 3, 0.75)
    with pytest.raises(ObservationRefusedError, match="already completed"):
        d.complete(done, "rejected", actor="w")
    with pytest.raises(ObservationNotFoundError):
        d.complete("00000000-0000-4000-8000-000000000000", "accepted", actor="w")
    with pytest.raises(LedgerError, match="unknown outcome"):
        d.complete(done, "maybe", actor="w")


def test_rollback_walks_back_through_three_bindings_and_to(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    d = ledger.deployments
    a, b, c = (promoted(ledger, clock, tmp_path, f"e{i}") for i in range(3))
    for checkpoint in (a, b, c):
        d.bind(PROFILE, checkpoint, actor="ops")
    d.enable_routing(PROFILE, actor="ops")
    assert d.rollback(PROFILE, actor="ops")["activeCheckpointId"] == b
    slot: dict[str, Any] = d.rollback(PROFILE, actor="ops")
    assert (slot["activeCheckpointId"], slot["routingEnabled"]) == (a, False)
    with pytest.raises(DeploymentRefusedError, match="nothing to roll back to"):
        d.rollback(PROFILE, actor="ops")
    d.bind(PROFILE, b, actor="ops")
    d.bind(PROFILE, c, actor="ops")
    assert d.rollback(PROFILE, to=a, actor="ops")["activeCheckpointId"] == a
    assert [x["kind"] for x in d.show_slot(PROFILE)["bindings"]] == [
        "bind",
        "bind",
        "bind",
        "rollback",
        "rollback",
        "bind",
        "bind",
        "rollback",
    ]


def test_revoking_the_active_checkpoint_stops_routing_and_rejects_in_the_same_append(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    d = ledger.deployments
    checkpoint = promoted(ledger, clock, tmp_path, "e1")
    d.bind(PROFILE, checkpoint, actor="ops")
    d.enable_routing(PROFILE, actor="ops")
    assert ledger.stats()["routedProfiles"] == 1
    assert ledger.stats()["promotableCheckpoints"] == 1
    ledger.attach_eval(checkpoint, eval_summary(checkpoint, "e-bad", verdict="fail"), actor="ev")
    slot = d.show_slot(PROFILE)
    assert slot["routingEnabled"] is False
    assert d.show_promotion(checkpoint)["state"] == "rejected"
    assert ledger.stats()["routedProfiles"] == 0
    with pytest.raises(DeploymentRefusedError, match="no longer deployable"):
        d.enable_routing(PROFILE, actor="ops")
    assert ledger.projection_differences() == []


def _revoke_behind_the_slots_back(ledger: TrainingLedger, checkpoint_id: str) -> None:
    """What a revoke committed at the same moment as an enable-routing leaves: the
    checkpoint revoked, the slot's routing (enabled meanwhile) untouched."""
    from trainledger.domain.aggregate import command_context

    checkpoint = ledger.get_checkpoint(checkpoint_id)
    with command_context("racer"):
        checkpoint.revoke("raced")
    ledger.save(checkpoint)


def test_routing_raced_by_a_revoke_is_stopped_by_whichever_commits_second(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path, monkeypatch: Any
) -> None:
    d = ledger.deployments
    checkpoint = promoted(ledger, clock, tmp_path, "e1")
    d.bind(PROFILE, checkpoint, actor="ops")
    # the revoke commits between the enable's append and its check
    check = d.stop_unroutable

    def revoked_meanwhile(checkpoint_id: Any, *, actor: str) -> Any:
        _revoke_behind_the_slots_back(ledger, checkpoint)
        return check(checkpoint_id, actor=actor)

    monkeypatch.setattr(d, "stop_unroutable", revoked_meanwhile)
    slot = d.enable_routing(PROFILE, actor="ops")
    assert slot["routingEnabled"] is False
    events = ledger.deployments.slot_history(PROFILE)["events"]
    assert [e["type"] for e in events][-2:] == ["RoutingEnabled", "RoutingDisabled"]
    assert "no longer deployable" in events[-1]["payload"]["reason"]


def test_a_revoke_raced_by_an_enable_stops_the_routing_after_it(
    ledger: TrainingLedger, clock: SteppingClock, tmp_path: Path
) -> None:
    d = ledger.deployments
    checkpoint = promoted(ledger, clock, tmp_path, "e1")
    other = promoted(ledger, clock, tmp_path, "e2")
    d.bind(PROFILE, checkpoint, actor="ops")
    d.enable_routing(PROFILE, actor="ops")
    _revoke_behind_the_slots_back(ledger, checkpoint)  # as if enabled while it revoked
    assert d.show_slot(PROFILE)["routingEnabled"] is True
    assert d.stop_unroutable(other, actor="ops") == {}
    healed = d.stop_unroutable(checkpoint, actor="ops")
    assert healed[PROFILE]["routingEnabled"] is False
    assert d.show_slot(PROFILE)["routingEnabled"] is False
