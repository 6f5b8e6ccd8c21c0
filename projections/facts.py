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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from trainledger.projections.deployment_facts import (
    ObservationRecord,
    PromotionFact,
    SettlementFact,
    SlotFact,
)

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

    def set_on(self, row: list[Any]) -> None:
        """Set this fact's columns on a run's row (its `RunRecord` fields, as a list)."""
        _set_columns(row, _START_COLUMNS, self)

    def applied_to(self, run: RunRecord) -> RunRecord:
        """The run's row with this fact's columns set."""
        return _run_with(run, self)


class CompletionFact(NamedTuple):
    """`TrainingRun.Completed`."""

    completed_at: int
    result_digest: str | None
    trainer_result: str | None  # JSON, the trainer's result document as received
    run_id: str

    def set_on(self, row: list[Any]) -> None:
        _set_columns(row, _COMPLETION_COLUMNS, self)

    def applied_to(self, run: RunRecord) -> RunRecord:
        return _run_with(run, self)


class FailureFact(NamedTuple):
    """`TrainingRun.Failed`."""

    failed_at: int
    failure_reason: str
    result_digest: str | None
    trainer_result: str | None  # JSON, the trainer's result document as received
    run_id: str

    def set_on(self, row: list[Any]) -> None:
        _set_columns(row, _FAILURE_COLUMNS, self)

    def applied_to(self, run: RunRecord) -> RunRecord:
        return _run_with(run, self)


RunUpdate = StartFact | CompletionFact | FailureFact
"""A fact of a run's lifecycle: it sets the `RunRecord` columns named like its fields."""


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

    def set_on(self, row: list[Any]) -> None:
        """Set a checkpoint's row (its `CheckpointRecord` fields, as a list) deployable
        or not, unless it already holds a later change."""
        if self.checkpoint_version > row[_DEPLOYABILITY_VERSION]:
            row[_DEPLOYABLE] = self.deployable
            row[_DEPLOYABILITY_VERSION] = self.checkpoint_version

    def applied_to(self, checkpoint: CheckpointRecord) -> CheckpointRecord:
        """The checkpoint's row, deployable (or not) from this change's version on."""
        row = list(checkpoint)
        self.set_on(row)
        return CheckpointRecord._make(row)


class RunRecord(NamedTuple):
    """A run's row: `TrainingRun.Registered`, completed by the facts of its lifecycle."""

    run_id: str
    experiment_id: str
    family: str
    dataset_fingerprint: str
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
    """A checkpoint's row: `Checkpoint.Registered`, and its deployability now."""

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


def _columns(fields: tuple[str, ...]) -> tuple[int, ...]:
    """Where a lifecycle fact's fields are in a run's row (all but its last, the run id)."""
    assert fields[-1] == "run_id"
    return tuple(RunRecord._fields.index(name) for name in fields[:-1])


_START_COLUMNS = _columns(StartFact._fields)
_COMPLETION_COLUMNS = _columns(CompletionFact._fields)
_FAILURE_COLUMNS = _columns(FailureFact._fields)
_DEPLOYABLE = CheckpointRecord._fields.index("deployable")
_DEPLOYABILITY_VERSION = CheckpointRecord._fields.index("deployability_version")


def _set_columns(row: list[Any], columns: tuple[int, ...], values: tuple[Any, ...]) -> None:
    for column, value in zip(columns, values, strict=False):
        row[column] = value


def _run_with(run: RunRecord, fact: RunUpdate) -> RunRecord:
    row = list(run)
    fact.set_on(row)
    return RunRecord._make(row)


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
    earlier pages. Updates of one row touch different columns (a run ends
    once: completed or failed), and a checkpoint's deployability only moves
    forward in version, so applying by kind gives the same state as applying
    in log order.
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
    promotions: list[PromotionFact] = field(default_factory=list)
    slot_events: list[SlotFact] = field(default_factory=list)
    observations: list[ObservationRecord] = field(default_factory=list)
    settlements: list[SettlementFact] = field(default_factory=list)
    """Applied after the observations: an observation settled in its own page too."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as plain tuples (log workers send batches, without the
        # pickler's memo): not each fact with a reference to its class, to be
        # called back through its `__new__`; each list is made back with `_make`.
        kinds = (getattr(self, kind.name) for kind in fields(self))
        return (_batch_of_tuples, tuple([tuple(fact) for fact in facts] for facts in kinds))


def _batch_of_tuples(*kinds: list[tuple[Any, ...]]) -> FactBatch:
    facts: list[Any] = [
        list(map(make, values)) for make, values in zip(_FACT_MAKERS, kinds, strict=True)
    ]
    return FactBatch(*facts)


_FACT_MAKERS: tuple[Callable[[Iterable[Any]], tuple[Any, ...]], ...] = (
    RunRecord._make,
    StartFact._make,
    CompletionFact._make,
    FailureFact._make,
    LinkFact._make,
    CheckpointRecord._make,
    EvalFact._make,
    DeployabilityFact._make,
    DeployabilityFact._make,
    PromotionFact._make,
    SlotFact._make,
    ObservationRecord._make,
    SettlementFact._make,
)
"""What makes the facts of each of `FactBatch`'s lists from plain tuples, in order."""


class PageFacts:
    """Collects the facts of a page of events, in log order, into a `FactBatch`.

    The row of a run or checkpoint registered in the page stays open (a list)
    while the page is read: its later facts set their columns in place. So
    with a rebuild's large pages most rows are written once, whole, and only
    the facts about rows of earlier pages are left as updates.
    """

    def __init__(self) -> None:
        self.batch = FactBatch()
        self._runs: list[list[Any]] = []
        self._open_runs: dict[str, list[Any]] = {}
        self._checkpoints: list[list[Any]] = []
        self._open_checkpoints: dict[str, list[Any]] = {}

    # A rebuild calls these once per event: they set a row's columns by their
    # index (`_STARTED_AT` and the like, checked where they are defined)
    # rather than through `set_on`'s loop.

    def run(self, run: RunRecord) -> None:
        row = list(run)
        self._runs.append(row)
        self._open_runs[run.run_id] = row

    def start(self, fact: StartFact) -> None:
        row = self._open_runs.get(fact.run_id)
        if row is None:
            self.batch.starts.append(fact)
        else:
            row[_STARTED_AT:_STARTED_END] = fact[:-1]

    def completion(self, fact: CompletionFact) -> None:
        row = self._open_runs.get(fact.run_id)
        if row is None:
            self.batch.completions.append(fact)
        else:
            completed_at, result_digest, trainer_result, _ = fact
            row[_COMPLETED_AT] = completed_at
            row[_RESULT_DIGEST] = result_digest
            row[_TRAINER_RESULT] = trainer_result

    def failure(self, fact: FailureFact) -> None:
        row = self._open_runs.get(fact.run_id)
        if row is None:
            self.batch.failures.append(fact)
        else:
            failed_at, failure_reason, result_digest, trainer_result, _ = fact
            row[_FAILED_AT] = failed_at
            row[_FAILURE_REASON] = failure_reason
            row[_RESULT_DIGEST] = result_digest
            row[_TRAINER_RESULT] = trainer_result

    def checkpoint(self, checkpoint: CheckpointRecord) -> None:
        row = list(checkpoint)
        self._checkpoints.append(row)
        self._open_checkpoints[checkpoint.checkpoint_id] = row

    def deployability(self, change: DeployabilityFact) -> None:
        self.batch.deployability.append(change)
        row = self._open_checkpoints.get(change.checkpoint_id)
        if row is None:
            self.batch.deployability_updates.append(change)
        else:
            change.set_on(row)

    def finished(self) -> FactBatch:
        """The page's batch, its open rows closed."""
        batch = self.batch
        batch.runs = list(map(RunRecord._make, self._runs))
        batch.checkpoints = list(map(CheckpointRecord._make, self._checkpoints))
        return batch


_STARTED_AT = _START_COLUMNS[0]
_STARTED_END = _START_COLUMNS[-1] + 1
_COMPLETED_AT, _RESULT_DIGEST, _TRAINER_RESULT = _COMPLETION_COLUMNS
_FAILED_AT, _FAILURE_REASON, _, _ = _FAILURE_COLUMNS
assert tuple(range(_STARTED_AT, _STARTED_END)) == _START_COLUMNS
assert _FAILURE_COLUMNS == (_FAILED_AT, _FAILURE_REASON, _RESULT_DIGEST, _TRAINER_RESULT)


@dataclass(frozen=True)
class Counts:
    """What `stats` is made of."""

    runs_by_status: dict[str, int]
    checkpoints: int
    deployable_checkpoints: int
    evals_by_verdict: dict[str, int]
    promotable_checkpoints: int = 0
    routed_profiles: int = 0


ViewDump = dict[str, list[tuple[object, ...]]]
"""Every row of every view table, sorted: how two views are compared."""
