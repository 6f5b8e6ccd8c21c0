"""The facts of a run's lifecycle complete its row, column by column."""

from __future__ import annotations

from projections.facts import CompletionFact, FailureFact, RunRecord, StartFact

REGISTERED = RunRecord("r" * 32, "experiment", "family", "f" * 16, "{}", 12, 1_000, 1)


def test_each_lifecycle_fact_sets_exactly_its_own_columns() -> None:
    started = StartFact(2_000, "gpu-1", 42, "/log", REGISTERED.run_id).applied_to(REGISTERED)
    assert started == REGISTERED._replace(
        started_at=2_000, host="gpu-1", pid=42, trainer_log_path="/log"
    )
    completed = CompletionFact(3_000, "sha256:r", REGISTERED.run_id).applied_to(started)
    assert completed == started._replace(completed_at=3_000, result_digest="sha256:r")
    failed = FailureFact(4_000, "oom", "sha256:f", REGISTERED.run_id).applied_to(started)
    assert failed == started._replace(
        failed_at=4_000, failure_reason="oom", result_digest="sha256:f"
    )
