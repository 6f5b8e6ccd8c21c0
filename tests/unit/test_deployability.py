"""Deployability rests on an eval; re-marking moves it onto a newer one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import READER_FAMILY, deployable_lifecycle, eval_summary, reader_request
from trainledger.domain.errors import DeployabilityError
from trainledger.service.ledger import TrainingLedger


def deployable_checkpoint(ledger: TrainingLedger, tmp_path: Path) -> str:
    return deployable_lifecycle(ledger, tmp_path, eval_id="e1")[1]


def test_attach_and_mark_on_a_deployable_checkpoint_rests_it_on_the_new_eval(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    checkpoint_id = deployable_checkpoint(ledger, tmp_path)
    after = ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id, "e2"), mark_deployable=True, actor="b"
    )
    assert after["deployable"] is True
    assert [(c["evalId"], c["actor"]) for c in after["deployabilityHistory"]] == [
        ("e1", "a"),
        ("e2", "b"),
    ]
    with pytest.raises(DeployabilityError, match="already deployable on eval e2"):
        ledger.mark_deployable(checkpoint_id, actor="b")


def test_failing_eval_revokes_and_names_the_eval(ledger: TrainingLedger, tmp_path: Path) -> None:
    checkpoint_id = deployable_checkpoint(ledger, tmp_path)
    after = ledger.attach_eval(
        checkpoint_id, eval_summary(checkpoint_id, "e2", verdict="fail"), actor="b"
    )
    assert after["deployable"] is False
    assert after["deployabilityHistory"][-1]["reason"] == "eval e2 failed"
    assert [e["evalId"] for e in after["evals"]] == ["e1", "e2"]


def test_a_checkpoint_without_an_artifact_digest_is_kept_but_never_deployable(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    run_id = ledger.create_experiment(
        reader_request(tmp_path), dataset_fingerprint="0123456789abcdef", actor="a"
    )["trainRunId"]
    ledger.start_run(run_id, actor="a")
    missing = str(tmp_path / "no-such-adapter")
    checkpoint_id = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=missing, actor="a"
    )["checkpointId"]
    ledger.complete_run(run_id, actor="a")
    with pytest.raises(DeployabilityError, match="no recorded artifact digest"):
        ledger.attach_eval(
            checkpoint_id, eval_summary(checkpoint_id, "e1"), mark_deployable=True, actor="a"
        )
    assert ledger.get_checkpoint(checkpoint_id).evals == []  # nothing recorded
    ledger.attach_eval(checkpoint_id, eval_summary(checkpoint_id, "e1"), actor="a")
    with pytest.raises(DeployabilityError, match="no recorded artifact digest"):
        ledger.mark_deployable(checkpoint_id, actor="a")
    kept = ledger.get_checkpoint(checkpoint_id)
    assert kept.artifact_path == missing
    assert kept.deployable is False
