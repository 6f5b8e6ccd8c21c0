"""Import re-checks SPEC §9's rules while it replays, on files whose hashes all hold.

Each fault is a consistent export of a history of promotions, observations and
a slot (positions, versions and chains recomputed after the edit), so only the
guards of `domain/promotion.py`, `domain/shadow.py` and `domain/deployment.py`
can refuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import SteppingClock, deployable_lifecycle
from tests.unit.test_archive import Lines, as_file, exported, is_empty
from tests.unit.test_import_rules import rehashed
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import ImportRefusedError
from trainledger.service.archive import import_log
from trainledger.service.ledger import TrainingLedger

READER = "local-reader"


@pytest.fixture
def history(tmp_path: Path) -> Iterator[Lines]:
    """Two checkpoints taken to shadow_ready, an observation, three bindings, routing,
    and a revoke that rejects the promotion and stops routing."""
    ledger = open_ledger("memory://", clock=SteppingClock())
    d = ledger.deployments
    a = deployable_lifecycle(ledger, tmp_path / "a", eval_id="ea")[1]
    b = deployable_lifecycle(ledger, tmp_path / "b", eval_id="eb")[1]
    for checkpoint in (a, b):
        d.evaluate(checkpoint, actor="gate")
        d.advance(checkpoint, review=True, note="n", actor="rev")
    d.complete(d.route(a, READER, actor="r")["observationId"], "accepted", actor="w")
    d.bind(READER, a, actor="ops")
    d.bind(READER, b, actor="ops")
    d.rollback(READER, actor="ops")
    d.enable_routing(READER, actor="ops")
    ledger.revoke_deployability(a, "leak", actor="ops")
    yield exported(ledger)
    ledger.close()


def index(lines: Lines, aggregate_type: str, type_name: str, nth: int = 0) -> int:
    found = [
        i
        for i, line in enumerate(lines)
        if line["aggregateType"] == aggregate_type and line["type"] == type_name
    ]
    return found[nth]


def bind_a_candidate(lines: Lines) -> Lines:
    del lines[index(lines, "Promotion", "Advanced")]
    return lines


def settle_twice(lines: Lines) -> Lines:
    at = index(lines, "ShadowObservation", "Settled")
    return [*lines[: at + 1], json.loads(json.dumps(lines[at])), *lines[at + 1 :]]


def roll_back_to_the_active(lines: Lines) -> Lines:
    rollback = index(lines, "DeploymentSlot", "Bound", 2)
    lines[rollback]["payload"]["checkpointId"] = lines[rollback]["payload"]["previousCheckpointId"]
    return lines


def route_a_revoked_checkpoint(lines: Lines) -> Lines:
    enabled = lines.pop(index(lines, "DeploymentSlot", "RoutingEnabled"))
    del lines[index(lines, "DeploymentSlot", "RoutingDisabled")]
    return [*lines, enabled]


def reject_twice(lines: Lines) -> Lines:
    rejected = lines[index(lines, "Promotion", "Rejected")]
    return [*lines, json.loads(json.dumps(rejected))]


def evaluate_failed_checks_as_passing(lines: Lines) -> Lines:
    evaluated = lines[index(lines, "Promotion", "Evaluated")]
    evaluated["payload"]["checks"][0]["passed"] = False
    return lines


FAULTS: dict[str, tuple[Callable[[Lines], Lines], str]] = {
    "a bind of a candidate_only checkpoint": (bind_a_candidate, "candidate_only"),
    "an observation settled twice": (settle_twice, "already completed"),
    "a rollback to the active checkpoint": (roll_back_to_the_active, "is the active binding"),
    "routing to a revoked checkpoint": (route_a_revoked_checkpoint, "no longer deployable"),
    "a promotion rejected twice": (reject_twice, "rejected twice"),
    "a pass decided on a failed check": (evaluate_failed_checks_as_passing, "failed checks"),
}


def test_the_history_rehashed_imports_and_answers_the_same(
    history: Lines, target: TrainingLedger
) -> None:
    assert import_log(target, as_file(rehashed(json.loads(json.dumps(history)))))["imported"]
    assert exported(target) == history
    slot: dict[str, Any] = target.deployments.show_slot(READER)
    assert [b["kind"] for b in slot["bindings"]] == ["bind", "bind", "rollback"]
    assert slot["routingEnabled"] is False
    assert target.verify()["ok"] is True


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_rehashed_history_breaking_a_rule_is_refused(
    fault: str, history: Lines, target: TrainingLedger
) -> None:
    corrupt, message = FAULTS[fault]
    lines = rehashed(corrupt(json.loads(json.dumps(history))))
    with pytest.raises(ImportRefusedError, match=message):
        import_log(target, as_file(lines))
    assert is_empty(target)
