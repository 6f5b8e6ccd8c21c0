"""Import re-checks the domain rules while it replays, even on a file whose hashes all hold.

Each fault below is a consistent export (versions, positions and hash chains
recomputed after the edit), so only the rules of `domain/model.py` can refuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.test_archive import Lines, as_file, exported, is_empty
from trainledger.domain.chain import GENESIS_HASH, chain_hash
from trainledger.domain.errors import ImportRefusedError
from trainledger.service.archive import import_log
from trainledger.service.ledger import TrainingLedger


def rehashed(lines: Lines) -> Lines:
    """Positions, each aggregate's versions and every hash chain made consistent again."""
    versions: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for position, line in enumerate(lines, start=1):
        aggregate_id = line["aggregateId"]
        line["position"] = position
        line["version"] = versions.get(aggregate_id, 0) + 1
        versions[aggregate_id] = line["version"]
        line["previousHash"] = hashes.get(aggregate_id, GENESIS_HASH)
        state = {
            "timestamp": line["timestamp"],
            "actor": line["actor"],
            "idempotencyKey": line["idempotencyKey"],
            "previousHash": line["previousHash"],
            **line["payload"],
        }
        line["eventHash"] = chain_hash(aggregate_id, line["version"], line["type"], state)
        hashes[aggregate_id] = line["eventHash"]
    return lines


def like(line: dict[str, Any], type_name: str, **payload: Any) -> dict[str, Any]:
    """A new event of the same aggregate as `line`, with no reservations."""
    made = {k: v for k, v in line.items() if k not in ("reservations", "originatorTopic")}
    topic = line["topic"].rsplit(".", 1)[0]
    return {**made, "type": type_name, "topic": f"{topic}.{type_name}", "payload": payload}


def fail_after_completed(lines: Lines) -> Lines:
    completed = lines[4]
    failed = like(completed, "Failed", reason="forged", resultDigest=None, trainerResult=None)
    return [*lines, failed]


def mark_without_eval(lines: Lines) -> Lines:
    return lines[:5] + lines[6:]


def fail_the_first_eval(lines: Lines) -> Lines:
    lines[5]["payload"]["eval"]["verdict"] = "fail"
    return lines


def mark_before_the_run_completes(lines: Lines) -> Lines:
    return [*lines[:4], lines[5], lines[6], lines[4], *lines[7:]]


def link_another_runs_checkpoint(lines: Lines) -> Lines:
    other_run, checkpoint = lines[9], lines[2]
    linked = like(other_run, "CheckpointLinked", checkpointId=checkpoint["aggregateId"])
    return [*lines[:10], linked, *lines[10:]]


# The populated log, by line: 1 run Registered, 2 Started, 3 checkpoint Registered,
# 4 CheckpointLinked, 5 Completed, 6 EvalAttached eval-1, 7 MarkedDeployable,
# 8 EvalAttached eval-2, 9 DeployabilityRevoked, 10 run Registered, 11 Failed.
RULE_BREAKING: dict[str, tuple[Callable[[Lines], Lines], str]] = {
    "Failed after Completed": (
        fail_after_completed,
        "line 12: run .* is completed; cannot move to failed",
    ),
    "MarkedDeployable without an eval": (mark_without_eval, "line 6: checkpoint .* has no eval"),
    "MarkedDeployable on a failing eval": (
        fail_the_first_eval,
        "line 7: checkpoint .* current eval eval-1 has verdict fail",
    ),
    "MarkedDeployable before its run completed": (
        mark_before_the_run_completes,
        "line 6: checkpoint .* run .* is running, not completed",
    ),
    "CheckpointLinked to another run's checkpoint": (
        link_another_runs_checkpoint,
        "line 11: .*checkpoint .* belongs to run",
    ),
}


def test_the_unbroken_file_rehashed_still_imports(
    source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ = source
    lines = exported(ledger)
    assert import_log(target, as_file(rehashed(json.loads(json.dumps(lines)))))["imported"] == 11
    assert exported(target) == lines


@pytest.mark.parametrize("fault", sorted(RULE_BREAKING))
def test_a_rehashed_file_breaking_a_rule_is_refused_naming_the_line(
    fault: str, source: tuple[TrainingLedger, dict[str, str]], target: TrainingLedger
) -> None:
    ledger, _ = source
    corrupt, message = RULE_BREAKING[fault]
    lines = rehashed(corrupt(json.loads(json.dumps(exported(ledger)))))
    with pytest.raises(ImportRefusedError, match=message):
        import_log(target, as_file(lines))
    assert is_empty(target)
