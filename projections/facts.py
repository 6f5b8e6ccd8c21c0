"""What the views store: timestamped facts, each recorded by one event.

Every fact carries the time of the event that recorded it (microseconds since
the epoch, UTC) and no fact is ever overwritten, only completed (a run's row
gains its start, then its completion). So a view holds the whole history: the
current answer uses every fact, an as-of answer only the facts stamped at or
before the moment asked for. That is how `--as-of` is answered from the same
indexed tables as the current state, without replaying the log: a current
query reads indexed columns (a run's `status`, a checkpoint's `deployable`),
an as-of query derives them from the facts' times, scanning what existed then.

"As of T" means: made of the events whose timestamp is at or before T. Within
one aggregate, later versions carry later timestamps (they are stamped in
order when recorded), so this is the state after a prefix of each history.

The field order of each fact is the order of its SQL parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A moment as microseconds since the epoch (how views store time)."""
    return (moment - EPOCH) // MICROSECOND


def moment(micros_since_epoch: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros_since_epoch)


_SECONDS: dict[str, int] = {}


def timestamp_micros(text: str) -> int:
    """An event's ISO-8601 timestamp as microseconds since the epoch.

    Events are stamped in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, many in the
    same second: a rebuild parses each second once.
    """
    if len(text) == 27 and text[19] == "." and text[26] == "Z":
        second = text[:19]
        seconds = _SECONDS.get(second)
        if seconds is None:
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            seconds = _SECONDS[second] = micros(datetime.fromisoformat(second + "+00:00"))
        return seconds + int(text[20:26])
    return micros(datetime.fromisoformat(text))


class StartFact(NamedTuple):
    """`TrainingRun.Started`."""

    started_at: int
    host: str | None
    pid: int | None
    trainer_log_path: str | None
    run_id: str

    def applied_to(self, run: RunRecord) -> RunRecord:
        """The run's row with this fact's columns set."""
        start = (self.started_at, self.host, self.pid, self.trainer_log_path)
        return RunRecord._make((*run[:8], *start, *run[12:]))


class CompletionFact(NamedTuple):
    """`TrainingRun.Completed`."""

    completed_at: int
    result_digest: str | None
    trainer_result: str | None  # JSON, the trainer's result document as received
    run_id: str

    def applied_to(self, run: RunRecord) -> RunRecord:
        completion = (self.completed_at, self.result_digest)
        return RunRecord._make((*run[:12], *completion, *run[14:16], self.trainer_result))


class FailureFact(NamedTuple):
    """`TrainingRun.Failed`."""

    failed_at: int
    failure_reason: str
    result_digest: str | None
    trainer_result: str | None  # JSON, the trainer's result document as received
    run_id: str

    def applied_to(self, run: RunRecord) -> RunRecord:
        failure = (self.result_digest, self.failed_at, self.failure_reason, self.trainer_result)
        return RunRecord._make((*run[:13], *failure))


_RunUpdate = TypeVar("_RunUpdate", StartFact, CompletionFact, FailureFact)


class LinkFact(NamedTuple):
    """`TrainingRun.CheckpointLinked`: the run produced the checkpoint."""

    run_id: str
    run_version: int
    checkpoint_id: str
    linked_at: int


class EvalFact(NamedTuple):
    """`Checkpoint.EvalAttached`."""

    eval_id: str
    checkpoint_id: str
    checkpoint_version: int
    benchmark_id: str
    family: str
    verdict: str
    summary: str  # JSON, the eval summary as attached
    attached_at: int
    actor: str
    position: int


class DeployabilityFact(NamedTuple):
    """`Checkpoint.MarkedDeployable` (deployable=1) or `DeployabilityRevoked` (0)."""

    checkpoint_id: str
    checkpoint_version: int
    deployable: int
    changed_at: int
    actor: str
    eval_id: str | None
    reason: str | None

    def applied_to(self, checkpoint: CheckpointRecord) -> CheckpointRecord:
        """The checkpoint's row, deployable (or not) from this change's version on."""
        return CheckpointRecord._make((*checkpoint[:9], self.deployable, self.checkpoint_version))


class RunRecord(NamedTuple):
    """A run's row: `TrainingRun.Registered`, completed by the facts of its lifecycle.

    The lifecycle columns come last, in this order (`applied_to` relies on it).
    """

    run_id: str
    experiment_id: str
    family: str
    dataset_fingerprint: str
    spec: str
    sample_count: int | None
    created_at: int
    position: int
    started_at: int | None = None
    host: str | None = None
    pid: int | None = None
    trainer_log_path: str | None = None
    completed_at: int | None = None
    result_digest: str | None = None
    failed_at: int | None = None
    failure_reason: str | None = None
    trainer_result: str | None = None  # JSON, set by the completion or the failure


class CheckpointRecord(NamedTuple):
    """A checkpoint's row: `Checkpoint.Registered`, and its deployability now.

    The deployability columns come last (`DeployabilityFact.applied_to` relies on it).
    """

    checkpoint_id: str
    run_id: str
    family: str
    artifact_path: str
    artifact_digest: str | None
    checkpoint_ref: str | None
    metrics: str
    created_at: int
    position: int
    deployable: int = 0
    deployability_version: int = 0


def status_at(run: RunRecord, at: int | None) -> str:
    """The run's status at a moment (None: now), from the times of its transitions."""

    def happened(when: int | None) -> bool:
        return when is not None and (at is None or when <= at)

    if happened(run.failed_at):
        return "failed"
    if happened(run.completed_at):
        return "completed"
    if happened(run.started_at):
        return "running"
    return "pending"


@dataclass
class FactBatch:
    """The facts recorded by a page of events, applied in one transaction.

    Rows (runs, checkpoints) and appended facts (links, evals, deployability
    changes) are inserted first, then the updates of rows registered in
    earlier pages. Updates of one row touch different columns, and a
    checkpoint's deployability only moves forward in version, so applying by
    kind gives the same state as applying in log order.
    """

    runs: list[RunRecord] = field(default_factory=list)
    starts: list[StartFact] = field(default_factory=list)
    completions: list[CompletionFact] = field(default_factory=list)
    failures: list[FailureFact] = field(default_factory=list)
    links: list[LinkFact] = field(default_factory=list)
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    evals: list[EvalFact] = field(default_factory=list)
    deployability: list[DeployabilityFact] = field(default_factory=list)
    deployability_updates: list[DeployabilityFact] = field(default_factory=list)
    """The deployability changes of checkpoints registered in earlier pages."""

    def fold(self) -> FactBatch:
        """Complete the rows registered in this page with the page's later facts.

        The updates left are those of rows of earlier pages: with a rebuild's
        large pages, most rows are written once, whole.
        """
        runs = {run.run_id: i for i, run in enumerate(self.runs)}

        def unfolded(facts: list[_RunUpdate]) -> list[_RunUpdate]:
            left = []
            for fact in facts:
                i = runs.get(fact.run_id)
                if i is None:
                    left.append(fact)
                else:
                    self.runs[i] = fact.applied_to(self.runs[i])
            return left

        self.starts = unfolded(self.starts)
        self.completions = unfolded(self.completions)
        self.failures = unfolded(self.failures)
        checkpoints = {c.checkpoint_id: i for i, c in enumerate(self.checkpoints)}
        self.deployability_updates = []
        for change in self.deployability:
            i = checkpoints.get(change.checkpoint_id)
            if i is None:
                self.deployability_updates.append(change)
            elif change.checkpoint_version > self.checkpoints[i].deployability_version:
                self.checkpoints[i] = change.applied_to(self.checkpoints[i])
        return self


@dataclass(frozen=True)
class Counts:
    """What `stats` is made of."""

    runs_by_status: dict[str, int]
    checkpoints: int
    deployable_checkpoints: int
    evals_by_verdict: dict[str, int]


ViewDump = dict[str, list[tuple[object, ...]]]
"""Every row of every view table, sorted: how two views are compared."""
