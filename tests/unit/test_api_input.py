"""The Python API refuses bad input with a `LedgerError`, whatever the caller hands over.

Wrong types, integers too large for any store, lone surrogates, control
characters, positions beyond the log: each is a named refusal (issue 15
item 17), never an AttributeError or OverflowError from deep inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import eval_summary, reader_request
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import LedgerError
from trainledger.service.ledger import TrainingLedger

odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**400),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from(["\ud800", "a\x00b", "\x1b[2J", "", " "]),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(datetime(2020, 1, 1)),  # no time zone
)

Call = Callable[[TrainingLedger, str, Any], object]

CALLS: dict[str, Call] = {
    "start_run id": lambda ledger, run, value: ledger.start_run(value, actor="a"),
    "start_run actor": lambda ledger, run, value: ledger.start_run(run, actor=value),
    "start_run key": lambda ledger, run, value: ledger.start_run(
        run, actor="a", idempotency_key=value
    ),
    "fail_run reason": lambda ledger, run, value: ledger.fail_run(run, value, actor="a"),
    "register family": lambda ledger, run, value: ledger.register_checkpoint(
        run, family=value, artifact_path="x", actor="a"
    ),
    "register artifact": lambda ledger, run, value: ledger.register_checkpoint(
        run, family="qwen2.5-7b-reader", artifact_path=value, actor="a"
    ),
    "attach_eval summary": lambda ledger, run, value: ledger.attach_eval(run, value, actor="a"),
    "attach_eval score": lambda ledger, run, value: ledger.attach_eval(
        run, eval_summary(run, baselineScore=value), actor="a"
    ),
    "create sample count": lambda ledger, run, value: ledger.create_experiment(
        reader_request(Path("out")),
        dataset_fingerprint="0123456789abcdef",
        sample_count=value,
        actor="a",
    ),
    "create request": lambda ledger, run, value: ledger.create_experiment(
        value, dataset_fingerprint="0123456789abcdef", sample_count=3, actor="a"
    ),
    "events_after position": lambda ledger, run, value: ledger.events_after(value),
    "events_after limit": lambda ledger, run, value: ledger.events_after(0, value),
    "list_runs limit": lambda ledger, run, value: ledger.list_runs(limit=value),
    "list_runs status": lambda ledger, run, value: ledger.list_runs(status=value),
    "show_run as_of": lambda ledger, run, value: ledger.show_run(run, as_of=value),
    "history id": lambda ledger, run, value: ledger.history(value),
    "lineage id": lambda ledger, run, value: ledger.lineage(value),
    "import_result": lambda ledger, run, value: ledger.import_result(
        run, value, source="s", actor="a"
    ),
    "reconcile now": lambda ledger, run, value: ledger.reconcile(now=value, actor="a"),
    "train timeout": lambda ledger, run, value: ledger.train(run, timeout_seconds=value, actor="a"),
    "verify digest": lambda ledger, run, value: ledger.verify(digest=value),
}


@pytest.fixture(scope="module")
def ledger_and_run() -> tuple[TrainingLedger, str]:
    ledger = open_ledger("memory://")
    created = ledger.create_experiment(
        reader_request(Path("out")),
        dataset_fingerprint="0123456789abcdef",
        sample_count=3,
        actor="a",
    )
    return ledger, created["trainRunId"]


@pytest.mark.parametrize("call", sorted(CALLS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=odd)
def test_bad_input_is_a_ledger_error(
    ledger_and_run: tuple[TrainingLedger, str], call: str, value: Any
) -> None:
    ledger, run = ledger_and_run
    with contextlib.suppress(LedgerError):  # anything else fails the test
        CALLS[call](ledger, run, value)


def test_a_position_beyond_any_log_is_refused_by_name(
    ledger_and_run: tuple[TrainingLedger, str],
) -> None:
    ledger, _ = ledger_and_run
    with pytest.raises(LedgerError, match="position"):
        ledger.events_after(10**30)
    with pytest.raises(LedgerError, match="as_of"):
        ledger.stats(as_of="2026-01-01")  # type: ignore[arg-type]
    assert ledger.events_after(2**62) == []
    assert ledger.stats(as_of=datetime(2000, 1, 1, tzinfo=UTC))["totalRuns"] == 0
