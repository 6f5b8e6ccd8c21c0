"""`impact` now, made in SQL on SQLite (adapters/sqlite/impact_reads.py), equals the
documents made from the facts and those of the aggregates themselves.

Random histories (runs of three datasets started, failed with a trainer's result,
completed; checkpoints with metrics; evals of every verdict, marks, revokes, failing
evals that take deployability away) at random clocks (before and after 1970, whole
seconds and microseconds), compared byte for byte as JSON: the same keys in the same
order, the same values.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import hypothesis.strategies as st
import orjson
from hypothesis import HealthCheck, given, settings

from tests.projection_support import ACTOR, DATASETS, OTHER_FAMILY, create_run
from tests.support import READER_FAMILY, eval_summary, existing_artifact
from trainledger.adapters.sqlite.impact_reads import IMPACT, TRIGGERS
from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import TrainerResult
from trainledger.domain.errors import LedgerError
from trainledger.domain.views import checkpoint_document, run_document
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger


class Clock:
    """Each event `step` later than the one before."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@contextmanager
def sqlite_ledger(clock: Clock) -> Iterator[TrainingLedger]:
    directory = Path(tempfile.mkdtemp(prefix="trainledger-impact-"))
    ledger = open_ledger(f"sqlite:///{directory / 'ledger.db'}?synchronous=normal", clock=clock)
    try:
        yield ledger
    finally:
        ledger.close()
        shutil.rmtree(directory, ignore_errors=True)


def from_facts(ledger: TrainingLedger, dataset: str) -> dict[str, Any]:
    read_model = cast(ProjectionReadModel, ledger.read_model)
    read_model.catch_up()
    with read_model.view.reader() as reader:
        return read_model.impact_from_facts(reader, dataset, None)


def of_aggregates(ledger: TrainingLedger, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer again, each run and checkpoint document made from its aggregate."""
    runs = []
    for run in answer["runs"]:
        document = run_document(ledger.get_run(run["trainRunId"]))
        checkpoints = [c["checkpointId"] for c in run["checkpoints"]]
        document["checkpoints"] = [
            checkpoint_document(ledger.get_checkpoint(c)) for c in checkpoints
        ]
        runs.append(document)
    return {
        **answer,
        "runs": runs,
        "checkpoints": [
            checkpoint_document(ledger.get_checkpoint(c["checkpointId"]))
            for c in answer["checkpoints"]
        ],
    }


def check(ledger: TrainingLedger, run_ids: list[str], checkpoint_ids: list[str]) -> None:
    seen_runs, seen_checkpoints = set(), set()
    for dataset in (*DATASETS, "dddddddddddddddd"):
        made = ledger.impact(dataset)
        assert orjson.dumps(made) == orjson.dumps(from_facts(ledger, dataset))
        assert made == of_aggregates(ledger, made)
        seen_runs |= {r["trainRunId"] for r in made["runs"]}
        seen_checkpoints |= {c["checkpointId"] for c in made["checkpoints"]}
        assert made["totalCheckpoints"] == sum(len(r["checkpoints"]) for r in made["runs"])
    assert seen_runs == set(run_ids)
    assert seen_checkpoints == set(checkpoint_ids)


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["create", "start", "register", "complete", "fail", "attach", "mark", "revoke"]
        ),
        st.integers(0, 50),
        st.sampled_from(["pass", "fail", "compare_only"]),
        st.booleans(),
    ),
    max_size=40,
)
METRICS = st.dictionaries(
    st.text(max_size=5),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    max_size=3,
)


def apply(
    ledger: TrainingLedger,
    op: tuple[str, int, str, bool],
    metrics: dict[str, Any],
    runs: list[str],
    checkpoints: list[str],
) -> None:
    kind, n, verdict, flag = op
    run = runs[n % len(runs)] if runs else None
    checkpoint = checkpoints[n % len(checkpoints)] if checkpoints else None
    try:
        if kind == "create" or run is None:
            family = OTHER_FAMILY if flag else READER_FAMILY
            runs.append(create_run(ledger, family, DATASETS[n % len(DATASETS)]))
        elif kind == "start":
            ledger.start_run(run, actor=ACTOR, host="gpu-ü" if flag else None, pid=n)
        elif kind == "register":
            created = ledger.register_checkpoint(
                run,
                family=ledger.get_run(run).family,
                artifact_path=existing_artifact(),
                metrics=metrics,
                actor=ACTOR,
            )
            checkpoints.append(created["checkpointId"])
        elif kind == "complete":
            ledger.complete_run(run, actor=ACTOR)
        elif kind == "fail" and flag:
            spec = ledger.get_run(run).spec
            result = {name: getattr(spec, name) for name in TrainerResult.CHECKED_FIELDS}
            result.update(status="failed", failureReason="OOM", finalLoss=0.25, node="n\u00e9")
            ledger.import_result(run, json.dumps(result).encode(), source="r.json", actor=ACTOR)
        elif kind == "fail":
            ledger.fail_run(run, "diverged", actor=ACTOR)
        elif checkpoint is None:
            return
        elif kind == "attach":
            family = ledger.get_checkpoint(checkpoint).family
            summary = eval_summary(
                checkpoint, f"eval-{n}-{len(runs)}", targetModelFamily=family, verdict=verdict
            )
            ledger.attach_eval(checkpoint, summary, mark_deployable=flag, actor=ACTOR)
        elif kind == "mark":
            ledger.mark_deployable(checkpoint, actor=ACTOR)
        else:
            ledger.revoke_deployability(checkpoint, "superseded", actor=ACTOR)
    except LedgerError:
        pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    metrics=METRICS,
    start=st.datetimes(
        min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    step=st.sampled_from(
        [timedelta(microseconds=1), timedelta(seconds=1), timedelta(milliseconds=250)]
    ),
    whole=st.booleans(),
)
def test_impact_now_equals_the_documents_of_the_facts_and_of_the_aggregates(
    ops: list[tuple[str, int, str, bool]],
    metrics: dict[str, Any],
    start: datetime,
    step: timedelta,
    whole: bool,
) -> None:
    clock = Clock(start.replace(microsecond=0) if whole else start, step)
    with sqlite_ledger(clock) as ledger:
        runs: list[str] = []
        checkpoints: list[str] = []
        for op in ops:
            apply(ledger, op, metrics, runs, checkpoints)
        check(ledger, runs, checkpoints)
        ledger.rebuild_projections()
        check(ledger, runs, checkpoints)


def test_a_run_with_several_checkpoints_interleaved_with_another_run() -> None:
    """Checkpoints come newest first across the runs, not run by run."""
    with sqlite_ledger(Clock(datetime(2026, 1, 5, tzinfo=UTC), timedelta(seconds=1))) as ledger:
        first, second = create_run(ledger), create_run(ledger)
        checkpoints = []
        for run in (first, second):
            ledger.start_run(run, actor=ACTOR)
        for run in (second, first, second, first):
            created = ledger.register_checkpoint(
                run, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
            )
            checkpoints.append(created["checkpointId"])
        made = ledger.impact(DATASETS[0])
        assert [c["checkpointId"] for c in made["checkpoints"]] == checkpoints[::-1]
        assert [r["trainRunId"] for r in made["runs"]] == [second, first]
        check(ledger, [first, second], checkpoints)


def test_documents_without_their_triggers_are_made_again_on_open(tmp_path: Path) -> None:
    """A rebuild interrupted after dropping the triggers (or a view made before them): the
    next open makes every run's document again; meanwhile impact answers from the facts."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock(datetime(2026, 1, 5, tzinfo=UTC), timedelta(seconds=1))
    ledger = open_ledger(url, clock=clock)
    runs = [create_run(ledger, READER_FAMILY, DATASETS[i % 2]) for i in range(4)]
    ledger.start_run(runs[0], actor=ACTOR)
    expected = {dataset: ledger.impact(dataset) for dataset in DATASETS}
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        for name in TRIGGERS:
            db.execute(f"DROP TRIGGER {name}")
        db.execute(f"DELETE FROM {IMPACT}")
    ledger = open_ledger(url, clock=clock)
    try:
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            assert db.execute(f"SELECT COUNT(*) FROM {IMPACT}").fetchone() == (4,)
        for dataset in DATASETS:
            assert ledger.impact(dataset) == expected[dataset]
        check(ledger, runs, [])
    finally:
        ledger.close()
