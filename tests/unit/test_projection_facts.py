"""The facts of a run's lifecycle complete its row, column by column; ids and times print
as the ledger prints them."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainledger.domain.views import iso
from trainledger.projections.documents import time_text, uuid_text
from trainledger.projections.facts import (
    CheckpointRecord,
    CompletionFact,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    FailureFact,
    LinkFact,
    PageFacts,
    RunRecord,
    StartFact,
    micros,
    moment,
    timestamp_micros,
)

REGISTERED = RunRecord("r" * 32, "experiment", "family", "f" * 16, 12, 1_000, 1)


def test_each_lifecycle_fact_sets_exactly_its_own_columns() -> None:
    started = StartFact(2_000, "gpu-1", 42, "/log", REGISTERED.run_id).applied_to(REGISTERED)
    assert started == REGISTERED._replace(
        started_at=2_000, host="gpu-1", pid=42, trainer_log_path="/log"
    )
    completed = CompletionFact(3_000, "sha256:r", '{"a":1}', REGISTERED.run_id).applied_to(started)
    assert completed == started._replace(
        completed_at=3_000, result_digest="sha256:r", trainer_result='{"a":1}'
    )
    failed = FailureFact(4_000, "oom", "sha256:f", '{"b":2}', REGISTERED.run_id).applied_to(started)
    assert failed == started._replace(
        failed_at=4_000, failure_reason="oom", result_digest="sha256:f", trainer_result='{"b":2}'
    )
    assert FailureFact(4_000, "oom", None, None, REGISTERED.run_id).applied_to(
        started
    ) == started._replace(failed_at=4_000, failure_reason="oom")


def test_a_deployability_change_sets_the_checkpoints_deployability_columns() -> None:
    checkpoint = CheckpointRecord("c" * 32, "r" * 32, "family", "/a", None, None, "{}", 1_000, 2)
    marked = DeployabilityFact(checkpoint.checkpoint_id, 3, 1, 2_000, "alice", "e1", None)
    assert marked.applied_to(checkpoint) == checkpoint._replace(
        deployable=1, deployability_version=3
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T09:47:31.590467Z",
        "2026-11-28T09:47:31.000001Z",
        "2026-11-28T09:47:31Z",  # pydantic leaves out a zero fraction
        "2026-11-28T11:47:31.590467+02:00",
        "1969-12-31T23:59:59.999999Z",
    ],
)
def test_event_timestamps_read_as_microseconds_since_the_epoch(text: str) -> None:
    expected = datetime.fromisoformat(text)
    assert timestamp_micros(text) == micros(expected)
    assert timestamp_micros(text) == timestamp_micros(text)  # the cached second agrees
    assert moment(timestamp_micros(text)) == expected


def test_a_page_completes_the_rows_it_registers_and_updates_only_earlier_ones() -> None:
    page = PageFacts()
    page.run(REGISTERED)
    page.start(StartFact(2_000, "gpu-1", 42, "/log", REGISTERED.run_id))
    page.completion(CompletionFact(3_000, "sha256:r", None, REGISTERED.run_id))
    earlier_run = "e" * 32
    page.failure(FailureFact(4_000, "oom", None, None, earlier_run))
    checkpoint = CheckpointRecord(
        "c" * 32, REGISTERED.run_id, "family", "/a", None, None, "{}", 1, 2
    )
    page.checkpoint(checkpoint)
    marked = DeployabilityFact(checkpoint.checkpoint_id, 3, 1, 2_000, "alice", "e1", None)
    earlier_change = DeployabilityFact("d" * 32, 5, 0, 2_500, "bob", None, "bad")
    page.deployability(marked)
    page.deployability(earlier_change)

    batch = page.finished()

    assert batch.runs == [
        REGISTERED._replace(
            started_at=2_000,
            host="gpu-1",
            pid=42,
            trainer_log_path="/log",
            completed_at=3_000,
            result_digest="sha256:r",
        )
    ]
    assert (batch.starts, batch.completions) == ([], [])
    assert batch.failures == [FailureFact(4_000, "oom", None, None, earlier_run)]
    assert batch.checkpoints == [checkpoint._replace(deployable=1, deployability_version=3)]
    assert batch.deployability == [marked, earlier_change]  # the history keeps every change
    assert batch.deployability_updates == [earlier_change]


def test_a_fact_batch_pickles_as_the_same_facts_of_the_same_kinds() -> None:
    """Log workers send batches pickled (as plain tuples, made NamedTuples again)."""
    checkpoint = CheckpointRecord("c" * 32, "r" * 32, "family", "/a", None, None, "{}", 1, 2)
    change = DeployabilityFact(checkpoint.checkpoint_id, 3, 1, 2_000, "alice", "e1", None)
    batch = FactBatch(
        runs=[REGISTERED],
        starts=[StartFact(2_000, None, None, None, "s" * 32)],
        completions=[CompletionFact(3_000, None, '{"a":1}', "t" * 32)],
        failures=[FailureFact(4_000, "oom", None, None, "u" * 32)],
        links=[LinkFact(REGISTERED.run_id, 3, checkpoint.checkpoint_id, 2_500)],
        checkpoints=[checkpoint],
        evals=[EvalFact("e1", checkpoint.checkpoint_id, 2, "b", "family", "pass", "{}", 3, "a", 9)],
        deployability=[change],
        deployability_updates=[change],
    )
    received = pickle.loads(pickle.dumps(batch))
    assert received == batch
    for name, facts in vars(batch).items():
        assert [type(fact) for fact in getattr(received, name)] == [type(f) for f in facts]


@given(st.uuids(), st.sampled_from(["hex", "upper", "braced"]))
def test_ids_print_as_uuids_do(uuid: UUID, spelling: str) -> None:
    stored = {"hex": uuid.hex, "upper": uuid.hex.upper(), "braced": f"{{{uuid}}}"}[spelling]
    assert uuid_text(stored) == str(UUID(hex=stored)) == str(uuid)


@given(
    st.integers(micros(datetime(1, 1, 1, tzinfo=UTC)), micros(datetime(9999, 12, 31, tzinfo=UTC)))
    | st.integers(0, 4_000_000_000).map(lambda seconds: seconds * 1_000_000)
)
def test_times_print_as_iso_prints_them(stored: int) -> None:
    assert time_text(stored) == iso(moment(stored))
    assert time_text(stored, stored) == iso(moment(stored))
    assert time_text(stored, stored - 1) is None
