"""Helpers for the projection tests: scripted histories and an oracle from aggregates.

The oracle answers every query from the aggregates themselves (the domain's
own `run_document` / `checkpoint_document` of each aggregate at a version),
never from a projection, so the views are checked against an independent
computation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from tests.support import READER_FAMILY, eval_summary, existing_artifact
from trainledger.domain.errors import LedgerError
from trainledger.domain.experiment import ExperimentRequest
from trainledger.domain.model import Checkpoint, TrainingRun
from trainledger.domain.views import checkpoint_document, run_document
from trainledger.service.ledger import TrainingLedger

OTHER_FAMILY = "claude-haiku-3"
DATASETS = ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc")
ACTOR = "projection-tests"


def create_run(
    ledger: TrainingLedger, family: str = READER_FAMILY, dataset: str = DATASETS[0]
) -> str:
    request = ExperimentRequest(
        profile="local-reader",
        family=family,
        backend="dry-run",
        benchmark_export_id="bench-1",
        output_dir="/tmp/trainledger-projection-tests",
        dataset_export_id=None,
        tier=None,
        hyperparameters={},
        budget={},
    )
    created = ledger.create_experiment(
        request, dataset_fingerprint=dataset, sample_count=12, actor=ACTOR
    )
    run_id: str = created["trainRunId"]
    return run_id


def scripted_history(ledger: TrainingLedger, runs: int, seed: int = 7) -> None:
    """A history with every kind of event: all statuses, several checkpoints per run,
    evals of every verdict, marks, revocations (explicit and by a failing eval)."""
    rng = random.Random(seed)
    for i in range(runs):
        family = READER_FAMILY if i % 3 else OTHER_FAMILY
        run_id = create_run(ledger, family, DATASETS[i % len(DATASETS)])
        fate = rng.random()
        if fate < 0.15:
            continue  # stays pending
        if fate < 0.25:
            ledger.fail_run(run_id, "abandoned before start", actor=ACTOR)
            continue
        ledger.start_run(run_id, actor=ACTOR, host="gpu-1", pid=1000 + i)
        checkpoints = [
            ledger.register_checkpoint(
                run_id, family=family, artifact_path=existing_artifact(), actor=ACTOR
            )["checkpointId"]
            for n in range(rng.randint(0, 2))
        ]
        if fate < 0.35:
            continue  # stays running
        if fate < 0.45:
            ledger.fail_run(run_id, "loss diverged", actor=ACTOR)
        else:
            ledger.complete_run(run_id, actor=ACTOR)
        for n, checkpoint_id in enumerate(checkpoints):
            verdict = rng.choice(["pass", "fail", "compare_only"])
            summary = eval_summary(
                checkpoint_id, f"eval-{i}-{n}", targetModelFamily=family, verdict=verdict
            )
            try:
                ledger.attach_eval(
                    checkpoint_id, summary, mark_deployable=rng.random() < 0.7, actor=ACTOR
                )
            except LedgerError:  # not deployable (failed run or failing eval): attach alone
                ledger.attach_eval(checkpoint_id, summary, actor=ACTOR)
            roll = rng.random()
            if roll < 0.2 and ledger.show_checkpoint(checkpoint_id)["deployable"]:
                ledger.revoke_deployability(checkpoint_id, "superseded", actor=ACTOR)
            elif roll < 0.4:
                again = eval_summary(
                    checkpoint_id, f"eval-{i}-{n}-b", targetModelFamily=family, verdict="fail"
                )
                ledger.attach_eval(checkpoint_id, again, actor=ACTOR)


def copy_log(source: TrainingLedger, target: TrainingLedger) -> int:
    """Append the source's whole log to the target's, as stored (a fast way to a big store)."""
    after, copied = 0, 0
    while True:
        page = source.recorder.select_notifications(
            start=after, limit=2000, inclusive_of_start=False
        )
        if not page:
            return copied
        target.recorder.insert_events(
            [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in page]
        )
        after, copied = page[-1].id, copied + len(page)


@dataclass
class LoggedEvent:
    position: int
    aggregate_id: str
    version: int
    type: str
    timestamp: str
    payload: dict[str, Any]


def logged_events(ledger: TrainingLedger) -> list[LoggedEvent]:
    events: list[LoggedEvent] = []
    while True:
        page = ledger.events_after(events[-1].position if events else 0, 1000)
        if not page:
            return events
        events += [
            LoggedEvent(
                e["position"],
                e["aggregateId"],
                e["version"],
                e["type"],
                e["timestamp"],
                e["payload"],
            )
            for e in page
        ]


@dataclass
class Oracle:
    """Every query answered from aggregates at their versions after a log prefix."""

    runs: list[dict[str, Any]] = field(default_factory=list)  # newest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # newest first
    evals: list[dict[str, Any]] = field(default_factory=list)  # newest first

    @classmethod
    def after(cls, ledger: TrainingLedger, events: Iterable[LoggedEvent]) -> Oracle:
        """The answers once the given events (a prefix of the log) had happened."""
        events = list(events)
        versions: dict[str, int] = {}
        created: dict[str, int] = {}
        for event in events:
            versions[event.aggregate_id] = event.version
            created.setdefault(event.aggregate_id, event.position)
        oracle = cls()
        for aggregate_id in sorted(versions, key=created.__getitem__, reverse=True):
            aggregate: object = ledger.repository.get(
                UUID(aggregate_id), version=versions[aggregate_id]
            )
            if isinstance(aggregate, TrainingRun):
                oracle.runs.append(run_document(aggregate))
            elif isinstance(aggregate, Checkpoint):
                oracle.checkpoints.append(checkpoint_document(aggregate))
        oracle.evals = [e.payload["eval"] for e in reversed(events) if e.type == "EvalAttached"]
        return oracle

    def stats(self) -> dict[str, int]:
        def runs(status: str) -> int:
            return sum(r["status"] == status for r in self.runs)

        def evals(*verdicts: str) -> int:
            return sum(e["verdict"] in verdicts for e in self.evals)

        return {
            "totalRuns": len(self.runs),
            "completedRuns": runs("completed"),
            "failedRuns": runs("failed"),
            "pendingRuns": runs("pending"),
            "runningRuns": runs("running"),
            "totalCheckpoints": len(self.checkpoints),
            "deployableCheckpoints": sum(c["deployable"] for c in self.checkpoints),
            "totalEvals": len(self.evals),
            "passingEvals": evals("pass", "compare_only"),
            "failingEvals": evals("fail"),
            "promotableCheckpoints": 0,
            "routedProfiles": 0,
        }


EVAL_EXTRAS = ("attachedAt", "actor")


def summaries(evals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Eval list items without what the list adds to the summary (when, by whom)."""
    return [{k: v for k, v in e.items() if k not in EVAL_EXTRAS} for e in evals]


def moment_of(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)
