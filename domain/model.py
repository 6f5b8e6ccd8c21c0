"""Aggregates of the ledger: training runs and checkpoints.

Events are declared inside their aggregate and are frozen pydantic models
(`domain.aggregate`). Public command methods check the rules and raise named
errors; each event's `apply` only changes state, so replaying history never
re-runs a check. Everything non-deterministic (ids, clock, digests, host,
pid) is decided before an event is triggered and stored in it.

Their stored topics are `domain.model:...`, this module's name in 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from trainledger.domain.aggregate import (
    DomainEvent,
    LedgerAggregate,
    command_context,
    stored_classes,
)
from trainledger.domain.contract import EvalSummary, ExperimentSpec
from trainledger.domain.errors import (
    DeployabilityError,
    EvalRefusedError,
    FamilyMismatchError,
    InvalidTransitionError,
    ValidationError,
)
from trainledger.domain.seed_import import SeedSpec
from trainledger.domain.vocabulary import RunStatus

__all__ = [
    "Checkpoint",
    "DeployabilityChange",
    "DomainEvent",
    "LedgerAggregate",
    "TrainingRun",
    "command_context",
    "stored_classes",
]


class TrainingRun(LedgerAggregate):
    """One training run: pending → running → completed | failed."""

    TRANSITIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "pending": ("running", "failed"),
        "running": ("completed", "failed"),
        "completed": (),
        "failed": (),
    }

    spec: ExperimentSpec | SeedSpec
    """A `SeedSpec` for a run imported from the seed (`ImportedFromSeed`)."""
    sample_count: int | None
    status: RunStatus
    started_at: datetime | None
    host: str | None
    pid: int | None
    completed_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None
    checkpoint_ids: list[UUID]
    trainer_log_path: str | None
    result_digest: str | None
    trainer_result: dict[str, Any] | None

    def __init__(self) -> None:
        """State is set by `Registered.apply`."""

    class Registered(LedgerAggregate.Created):
        spec: ExperimentSpec
        sample_count: int | None = None

        def apply(self, run: TrainingRun) -> None:
            run._pending(self.spec, self.sample_count)

    class ImportedFromSeed(LedgerAggregate.Created):
        """A run as the seed's registry recorded it (`import-seed`).

        `seed_record` is its record exactly as the seed's file held it (unknown
        fields too); its transitions follow as events of their own.
        """

        spec: SeedSpec
        sample_count: int | None = None
        seed_record: dict[str, Any]

        def apply(self, run: TrainingRun) -> None:
            run._pending(self.spec, self.sample_count)

    class Started(LedgerAggregate.Event):
        host: str | None = None
        pid: int | None = None
        trainer_log_path: str | None = None

        def apply(self, run: TrainingRun) -> None:
            run.status = "running"
            run.started_at = self.timestamp
            run.host, run.pid, run.trainer_log_path = self.host, self.pid, self.trainer_log_path

    class Completed(LedgerAggregate.Event):
        result_digest: str | None = None
        trainer_result: dict[str, Any] | None = None
        """The whole trainer result document as received (unknown fields kept).

        Added with a default and no class_version: events stored before it
        load with None, and their hashes (over the state as stored) still hold.
        """

        def apply(self, run: TrainingRun) -> None:
            run.status = "completed"
            run.completed_at = self.timestamp
            run.result_digest = self.result_digest
            run.trainer_result = self.trainer_result

    class Failed(LedgerAggregate.Event):
        reason: str
        result_digest: str | None = None
        trainer_result: dict[str, Any] | None = None
        """As `Completed.trainer_result`: the result the trainer gave, if any."""

        def apply(self, run: TrainingRun) -> None:
            run.status = "failed"
            run.failed_at = self.timestamp
            run.failure_reason = self.reason
            run.result_digest = self.result_digest
            run.trainer_result = self.trainer_result

    class CheckpointLinked(LedgerAggregate.Event):
        checkpoint_id: UUID

        def apply(self, run: TrainingRun) -> None:
            run.checkpoint_ids = [*run.checkpoint_ids, self.checkpoint_id]

    def _pending(self, spec: ExperimentSpec | SeedSpec, sample_count: int | None) -> None:
        self.spec = spec
        self.sample_count = sample_count
        self.status = "pending"
        self.started_at = self.completed_at = self.failed_at = None
        self.host = self.failure_reason = self.trainer_log_path = self.result_digest = None
        self.pid = self.trainer_result = None
        self.checkpoint_ids = []

    @classmethod
    def register(cls, run_id: UUID, spec: ExperimentSpec, sample_count: int | None) -> TrainingRun:
        """Open a pending run holding the whole experiment spec."""
        run: TrainingRun = cls._open(cls.Registered, run_id, spec=spec, sample_count=sample_count)
        return run

    @classmethod
    def import_from_seed(
        cls, run_id: UUID, spec: SeedSpec, sample_count: int | None, seed_record: dict[str, Any]
    ) -> TrainingRun:
        """Open a pending run as the seed registered it, with what it kept of the spec."""
        run: TrainingRun = cls._open(
            cls.ImportedFromSeed,
            run_id,
            spec=spec,
            sample_count=sample_count,
            seed_record=seed_record,
        )
        return run

    def experiment_spec(self) -> ExperimentSpec:
        """The whole spec a trainer needs; a run imported from the seed has none."""
        if not isinstance(self.spec, ExperimentSpec):
            raise InvalidTransitionError(
                f"run {self.id} was imported from the seed, whose registry kept no "
                "experiment spec; it cannot be trained (create a new experiment)"
            )
        return self.spec

    @property
    def family(self) -> str:
        return self.spec.targetModelFamily

    @property
    def is_terminal(self) -> bool:
        return not self.TRANSITIONS[self.status]

    def require_transition(self, target: str) -> None:
        """Refuse unless the lifecycle allows moving from the current status to `target`."""
        allowed = self.TRANSITIONS[self.status]
        if target not in allowed:
            allowed_text = ", ".join(allowed) if allowed else "none (terminal state)"
            raise InvalidTransitionError(
                f"run {self.id} is {self.status}; cannot move to {target} "
                f"(allowed from {self.status}: {allowed_text})"
            )

    def require_can_start(self) -> None:
        """Refuse unless the run may move to running (checked before a trainer launches)."""
        self.require_transition("running")

    def start(
        self,
        *,
        host: str | None = None,
        pid: int | None = None,
        trainer_log_path: str | None = None,
    ) -> None:
        """pending → running."""
        self.require_transition("running")
        self._trigger(self.Started, host=host, pid=pid, trainer_log_path=trainer_log_path)

    def complete(
        self,
        *,
        result_digest: str | None = None,
        trainer_result: dict[str, Any] | None = None,
    ) -> None:
        """running → completed."""
        self.require_transition("completed")
        self._trigger(self.Completed, result_digest=result_digest, trainer_result=trainer_result)

    def fail(
        self,
        reason: str,
        *,
        result_digest: str | None = None,
        trainer_result: dict[str, Any] | None = None,
    ) -> None:
        """pending | running → failed, with a reason."""
        self.require_can_fail(reason)
        self._trigger(
            self.Failed, reason=reason, result_digest=result_digest, trainer_result=trainer_result
        )

    def require_can_fail(self, reason: str) -> None:
        """Refuse a failure without a reason, or from a terminal status."""
        if not reason.strip():
            raise ValidationError("a failure reason is required")
        self.require_transition("failed")

    def require_can_link(self, checkpoint: Checkpoint) -> None:
        """Refuse to link a checkpoint of another run, or one linked already."""
        if checkpoint.train_run_id != self.id:
            raise InvalidTransitionError(
                f"checkpoint {checkpoint.id} belongs to run {checkpoint.train_run_id}, "
                f"not to run {self.id}"
            )
        if checkpoint.id in self.checkpoint_ids:
            raise InvalidTransitionError(
                f"checkpoint {checkpoint.id} is already linked to run {self.id}"
            )

    def link_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Record that this run produced the checkpoint (saved with it)."""
        self.require_can_link(checkpoint)
        self._trigger(self.CheckpointLinked, checkpoint_id=checkpoint.id)

    def require_accepts_checkpoint(self, family: str) -> None:
        """Refuse a checkpoint of another family, or unless the run is running."""
        if family != self.family:
            raise FamilyMismatchError(
                f"checkpoint family {family!r} differs from run family {self.family!r}"
            )
        if self.status != "running":
            raise InvalidTransitionError(
                f"run {self.id} is {self.status}; checkpoints can only be registered "
                "while it is running"
            )


@dataclass(frozen=True)
class DeployabilityChange:
    """One entry of a checkpoint's deployability history."""

    deployable: bool
    timestamp: datetime
    actor: str
    eval_id: str | None
    reason: str | None


class Checkpoint(LedgerAggregate):
    """A checkpoint produced by a run: its evals and deployability."""

    train_run_id: UUID
    family: str
    artifact_path: str
    artifact_digest: str | None
    metrics: dict[str, Any]
    checkpoint_ref: str | None
    evals: list[EvalSummary]
    deployable: bool
    deployability_history: list[DeployabilityChange]

    def __init__(self) -> None:
        """State is set by `Registered.apply`."""

    class Registered(LedgerAggregate.Created):
        train_run_id: UUID
        family: str
        artifact_path: str
        artifact_digest: str | None = None
        metrics: dict[str, Any] = {}
        checkpoint_ref: str | None = None

        def apply(self, checkpoint: Checkpoint) -> None:
            checkpoint.train_run_id = self.train_run_id
            checkpoint.family = self.family
            checkpoint.artifact_path = self.artifact_path
            checkpoint.artifact_digest = self.artifact_digest
            checkpoint.metrics = dict(self.metrics)
            checkpoint.checkpoint_ref = self.checkpoint_ref
            checkpoint.evals = []
            checkpoint.deployable = False
            checkpoint.deployability_history = []

    class EvalAttached(LedgerAggregate.Event):
        eval: EvalSummary

        def apply(self, checkpoint: Checkpoint) -> None:
            checkpoint.evals = [*checkpoint.evals, self.eval]

    class MarkedDeployable(LedgerAggregate.Event):
        eval_id: str

        def apply(self, checkpoint: Checkpoint) -> None:
            checkpoint.deployable = True
            checkpoint.deployability_history = [
                *checkpoint.deployability_history,
                DeployabilityChange(True, self.timestamp, self.actor, self.eval_id, None),
            ]

    class DeployabilityRevoked(LedgerAggregate.Event):
        reason: str
        eval_id: str | None = None

        def apply(self, checkpoint: Checkpoint) -> None:
            checkpoint.deployable = False
            checkpoint.deployability_history = [
                *checkpoint.deployability_history,
                DeployabilityChange(False, self.timestamp, self.actor, self.eval_id, self.reason),
            ]

    @classmethod
    def register(
        cls,
        checkpoint_id: UUID,
        run: TrainingRun,
        *,
        family: str,
        artifact_path: str,
        artifact_digest: str | None,
        metrics: dict[str, Any] | None = None,
        checkpoint_ref: str | None = None,
    ) -> Checkpoint:
        """Register a checkpoint of a running run and link it to the run.

        The caller saves both aggregates in one append.
        """
        cls.require_registrable(run, family=family, artifact_path=artifact_path)
        checkpoint: Checkpoint = cls._open(
            cls.Registered,
            checkpoint_id,
            train_run_id=run.id,
            family=family,
            artifact_path=artifact_path,
            artifact_digest=artifact_digest,
            metrics=metrics or {},
            checkpoint_ref=checkpoint_ref,
        )
        run.link_checkpoint(checkpoint)
        return checkpoint

    @staticmethod
    def require_registrable(run: TrainingRun, *, family: str, artifact_path: str) -> None:
        """Refuse a checkpoint the run cannot accept, or one without an artifact path."""
        run.require_accepts_checkpoint(family)
        if not artifact_path.strip():
            raise ValidationError("an artifact path is required")

    @property
    def current_eval(self) -> EvalSummary | None:
        return self.evals[-1] if self.evals else None

    def require_accepts_eval(self, summary: EvalSummary) -> None:
        """Refuse an eval of another checkpoint or family, or an evalId used here already."""
        if summary.checkpointId != str(self.id):
            raise EvalRefusedError(
                f"eval {summary.evalId} names checkpoint {summary.checkpointId}, not {self.id}"
            )
        if summary.targetModelFamily != self.family:
            raise FamilyMismatchError(
                f"eval family {summary.targetModelFamily!r} differs from checkpoint "
                f"family {self.family!r}"
            )
        if self.has_eval(summary.evalId):
            raise EvalRefusedError(f"evalId {summary.evalId} was already used")

    def has_eval(self, eval_id: str) -> bool:
        """Whether an eval of this id is attached here."""
        return any(existing.evalId == eval_id for existing in self.evals)

    def attach_eval(self, summary: EvalSummary) -> None:
        """Attach an eval; it becomes the current one.

        A `fail` eval on a deployable checkpoint revokes deployability in the
        same append. Global evalId uniqueness is checked by the application.
        """
        self.require_accepts_eval(summary)
        self._trigger(self.EvalAttached, eval=summary)
        if summary.verdict == "fail" and self.deployable:
            self._trigger(
                self.DeployabilityRevoked,
                reason=f"eval {summary.evalId} failed",
                eval_id=summary.evalId,
            )

    def require_deployable(self, run: TrainingRun, *, require_digest: bool = True) -> EvalSummary:
        """Refuse unless the checkpoint may be marked deployable now; its current eval.

        `require_digest=False` leaves out the artifact-digest rule (added after
        0.1.0), for checking history that may predate it (`domain.replay`).
        """
        if run.id != self.train_run_id:
            raise ValueError("mark_deployable needs the checkpoint's own run")
        current = self.current_eval
        if current is None:
            raise DeployabilityError(f"checkpoint {self.id} has no eval; attach one first")
        if current.verdict == "fail":
            raise DeployabilityError(
                f"checkpoint {self.id}: current eval {current.evalId} has verdict fail"
            )
        if run.status != "completed":
            raise DeployabilityError(
                f"checkpoint {self.id}: run {run.id} is {run.status}, not completed"
            )
        if require_digest and self.artifact_digest is None:
            # Registered with a path that did not exist: kept, but what would be
            # deployed is unknown, so it never becomes deployable.
            raise DeployabilityError(
                f"checkpoint {self.id} has no recorded artifact digest (its artifact "
                f"{self.artifact_path} did not exist when it was registered); "
                "register the checkpoint again with an existing artifact"
            )
        marked = [c for c in self.deployability_history if c.deployable]
        if self.deployable and marked and marked[-1].eval_id == current.evalId:
            raise DeployabilityError(
                f"checkpoint {self.id} is already deployable on eval {current.evalId}"
            )
        return current

    def mark_deployable(self, run: TrainingRun, *, require_digest: bool = True) -> None:
        """Needs a current eval that did not fail, a completed run and an artifact digest.

        Marking again is allowed only to rest deployability on a newer eval.
        `require_digest=False`: a marking the seed recorded (it kept no digests).
        """
        current = self.require_deployable(run, require_digest=require_digest)
        # Deployable already, but on an older eval: re-marking records that the
        # newer eval now backs the decision.
        self._trigger(self.MarkedDeployable, eval_id=current.evalId)

    def revoke(self, reason: str) -> None:
        """Withdraw deployability; the eval link and history stay."""
        self.require_revocable(reason)
        self._trigger(self.DeployabilityRevoked, reason=reason)

    def require_revocable(self, reason: str) -> None:
        """Refuse to revoke without a reason, or a checkpoint that is not deployable."""
        if not reason.strip():
            raise ValidationError("a reason is required to revoke deployability")
        if not self.deployable:
            raise DeployabilityError(f"checkpoint {self.id} is not deployable")
