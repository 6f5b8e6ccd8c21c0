"""The service layer's application: the ledger's Python API, one call per CLI verb.

`TrainingLedger` is the library's `Application`, configured by environment
(`adapters.store.store_env`) and given its ports by the composition root
(`adapters.store.open_ledger`). It is composed of:

- the commands of SPEC §3 (here), each a body run by the unit of work
  (`service.unit_of_work`: one append, retries, idempotency, reservations);
- the trainer adapter's commands (`service.training`);
- `verify` (`service.verify`);
- the queries (`service.queries`), answered by the injected read model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from trainledger.domain.errors import (
    CheckpointNotFoundError,
    DuplicateEvalError,
    EvalRefusedError,
    NotFoundError,
    ValidationError,
)
from trainledger.domain.text import refuse_control_characters
from trainledger.domain.trainer import (
    ArtifactLocator,
    TrainerRunner,
)
from trainledger.domain.views import checkpoint_document, event_document, run_document
from trainledger.projections.filters import Document, Progress
from trainledger.service import arguments, defaults
from trainledger.service.access import Access
from trainledger.service.deployment import Deployments
from trainledger.service.ports import (
    EVAL_ID,
    ArtifactDigester,
    BaseModelLocator,
    CanonicalWriter,
    DatasetLoader,
    LedgerRecorder,
    ReadModelFactory,
    Reservation,
    StateCodec,
    state_codec,
)
from trainledger.service.queries import Queries
from trainledger.service.training import Training
from trainledger.service.unit_of_work import LedgerApplication, Outcome, UnitOfWork, parse_id
from trainledger.service.verify import Verification

# The aggregates, the contract and the experiment rules are imported by the
# commands that use them: queries answer from the projections, and loading
# those pydantic models would be most of a query's start-up time in the CLI.
if TYPE_CHECKING:
    from trainledger.domain.aggregate import Clock
    from trainledger.domain.contract import EvalSummary
    from trainledger.domain.experiment import DatasetDigest, ExperimentRequest
    from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun

LOCAL_EDITOR_ENV = "TRAINLEDGER_ENABLE_LOCAL_EDITOR"
"""Set to 1 to allow experiments for the `local-editor` profile (SPEC §3.1 rule 2)."""


class UnknownAggregateError(NotFoundError):
    def __init__(self, aggregate_id: object) -> None:
        super().__init__(f"no run or checkpoint with id {aggregate_id}")


class TrainingLedger(LedgerApplication):
    """Training runs, checkpoints, evals and deployability, event-sourced."""

    name = "trainledger"
    PARALLEL_VERIFY_FROM = 50_000
    """A log at least this long is checked by worker processes, where the store allows."""
    VERIFY_WORKERS = 4

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        read_model: ReadModelFactory,
        load_dataset: DatasetLoader = defaults.no_dataset_loader,
        locate_base_model: BaseModelLocator = defaults.base_model_as_given,
        digest_artifact: ArtifactDigester = defaults.no_artifact_digest,
        run_trainer: TrainerRunner = defaults.no_trainer_runner,
        locate_artifact: ArtifactLocator = defaults.no_artifact_locator,
        canonical_json: CanonicalWriter = defaults.canonical_json,
        clock: Clock | None = None,
    ) -> None:
        """`clock` tells the time of new events (default: now, UTC); tests inject one.

        `canonical_json` spells the canonical form when `verify` recomputes
        hash chains (default: the definition, `domain.chain.canonical_json`).
        """
        super().__init__(env)
        if not isinstance(self.recorder, LedgerRecorder):
            raise TypeError(
                f"{type(self.recorder).__name__} is not a LedgerRecorder; "
                "open the ledger with trainledger.adapters.store.open_ledger"
            )
        self.ledger_recorder: LedgerRecorder = self.recorder
        self.state_codec: StateCodec = state_codec(self.mapper)
        self.load_dataset = load_dataset
        self.locate_base_model = locate_base_model
        self.digest_artifact = digest_artifact
        self.run_trainer = run_trainer
        self.locate_artifact = locate_artifact
        self.canonical_json = canonical_json
        self.clock = clock
        self.read_model = read_model(self)
        self.unit_of_work = UnitOfWork(self, self.ledger_recorder, clock, canonical_json)
        self.queries = Queries(self.read_model)
        self.training = Training(self)
        self.verification = Verification(self)
        self.deployments = Deployments(self)
        """Promotion, shadow observations and deployment slots (SPEC §9)."""
        self.access = Access(self)
        """The tokens of the ledger as a service (SPEC §10)."""

    def now(self) -> datetime:
        """The ledger's time: what its clock says (or now, UTC)."""
        return datetime.now(UTC) if self.clock is None else self.clock()

    # --- commands (SPEC §3) ---------------------------------------------------

    def create_experiment(
        self,
        request: ExperimentRequest,
        *,
        dataset_path: str | None = None,
        dataset_fingerprint: str | None = None,
        sample_count: int | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Validate a request and register a pending run holding the whole spec.

        Give either `dataset_path` (a JSONL file, fingerprinted here) or an
        explicit `dataset_fingerprint` (with its `sample_count`).
        """
        from trainledger.domain.experiment import DatasetDigest, ExperimentRequest, build_spec
        from trainledger.domain.model import TrainingRun

        arguments.require(request, ExperimentRequest, "an experiment request")
        arguments.optional(dataset_path, str, "a dataset path")
        arguments.optional(dataset_fingerprint, str, "a dataset fingerprint")
        arguments.optional(sample_count, int, "a sample count")
        if (dataset_path is None) == (dataset_fingerprint is None):
            raise ValidationError("give either a dataset path or a dataset fingerprint")

        @functools.cache
        def load() -> DatasetDigest:
            if dataset_path is not None:
                return self.load_dataset(dataset_path)
            assert dataset_fingerprint is not None
            return DatasetDigest.explicit(dataset_fingerprint, sample_count)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            spec = build_spec(
                request,
                load,
                experiment_id=str(uuid4()),
                now_ms=int(self.now().timestamp() * 1000),
                local_editor_enabled=self.env.get(LOCAL_EDITOR_ENV) == "1",
                locate_base_model=self.locate_base_model,
            )
            run = TrainingRun.register(uuid4(), spec, load().sample_count)
            outcome = {
                "trainRunId": str(run.id),
                "experimentId": spec.experimentId,
                "spec": spec.model_dump(mode="json"),
            }
            return [run], outcome, []

        # A request naming no base model remembers what it did before `base_model`
        # existed, so the idempotency records of older stores still match.
        asked = {k: v for k, v in request.__dict__.items() if k != "base_model" or v is not None}
        params = {
            "request": asked,
            "datasetPath": dataset_path,
            "datasetFingerprint": dataset_fingerprint,
            "sampleCount": sample_count,
        }
        return self.unit_of_work.run("experiment.create", params, actor, idempotency_key, body)

    def start_run(
        self,
        run_id: str,
        *,
        actor: str,
        idempotency_key: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        trainer_log_path: str | None = None,
    ) -> Outcome:
        """Move a pending run to running."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.unit_of_work.get_run(run_id)
            run.start(host=host, pid=pid, trainer_log_path=trainer_log_path)
            return [run], run_document(run), []

        params = {"runId": run_id, "host": host, "pid": pid, "log": trainer_log_path}
        return self.unit_of_work.run("run.start", params, actor, idempotency_key, body)

    def complete_run(
        self, run_id: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Move a running run to completed."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.unit_of_work.get_run(run_id)
            run.complete()
            return [run], run_document(run), []

        return self.unit_of_work.run(
            "run.complete", {"runId": run_id}, actor, idempotency_key, body
        )

    def fail_run(
        self, run_id: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Fail a pending or running run, with a reason."""
        arguments.require(reason, str, "a failure reason")

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.unit_of_work.get_run(run_id)
            run.fail(reason)
            return [run], run_document(run), []

        params = {"runId": run_id, "reason": reason}
        return self.unit_of_work.run("run.fail", params, actor, idempotency_key, body)

    def register_checkpoint(
        self,
        run_id: str,
        *,
        family: str,
        artifact_path: str,
        metrics: dict[str, Any] | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Register a checkpoint of a running run; checkpoint and link in one append.

        The artifact's content digest is recorded when the path exists.
        """
        from trainledger.domain.model import Checkpoint

        arguments.require(family, str, "a family")
        if not arguments.require(artifact_path, str, "an artifact path").strip():
            raise ValidationError("an artifact path is required")
        digest = self.digest_artifact(artifact_path)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.unit_of_work.get_run(run_id)
            checkpoint = Checkpoint.register(
                uuid4(),
                run,
                family=family,
                artifact_path=artifact_path,
                artifact_digest=digest,
                metrics=metrics,
            )
            return [checkpoint, run], checkpoint_document(checkpoint), []

        params = {"runId": run_id, "family": family, "artifact": artifact_path, "digest": digest}
        return self.unit_of_work.run("checkpoint.register", params, actor, idempotency_key, body)

    def attach_eval(
        self,
        checkpoint_id: str,
        summary: dict[str, Any] | EvalSummary,
        *,
        mark_deployable: bool = False,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Attach an eval summary; with `mark_deployable`, mark in the same append."""
        checkpoint_uuid = parse_id(checkpoint_id, CheckpointNotFoundError)
        eval_summary = self._parse_eval(summary)
        try:
            names_this_checkpoint = UUID(eval_summary.checkpointId.strip()) == checkpoint_uuid
        except ValueError:
            names_this_checkpoint = False
        if names_this_checkpoint:
            # However the summary spells this checkpoint's id (case, no dashes), record it
            # canonically so that queries by checkpointId find the eval.
            eval_summary = eval_summary.model_copy(update={"checkpointId": str(checkpoint_uuid)})

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.unit_of_work.get_checkpoint(checkpoint_uuid)
            # The evalId's reservation is unique: the append refuses one used on another
            # checkpoint, and only then is it looked up (one wait fewer per attach).
            reused = checkpoint.has_eval(eval_summary.evalId) or self.unit_of_work.after_refusal()
            if (
                reused
                and self.ledger_recorder.find_reservation(EVAL_ID, eval_summary.evalId) is not None
            ):
                raise DuplicateEvalError(
                    f"evalId {eval_summary.evalId} was already used in this ledger"
                )
            was_deployable = checkpoint.deployable
            checkpoint.attach_eval(eval_summary)
            if mark_deployable:
                checkpoint.mark_deployable(self.unit_of_work.get_run(checkpoint.train_run_id))
            failed = eval_summary.verdict == "fail"
            consequences = self.deployments.after_deployability_loss(
                checkpoint,
                revoked=f"eval {eval_summary.evalId} failed"
                if was_deployable and not checkpoint.deployable
                else None,
                failed_eval=eval_summary.evalId if failed else None,
            )
            reservation = Reservation(EVAL_ID, eval_summary.evalId, str(checkpoint.id).encode())
            return [checkpoint, *consequences], checkpoint_document(checkpoint), [reservation]

        params = {
            "checkpointId": checkpoint_id,
            "eval": eval_summary.model_dump(mode="json"),
            "markDeployable": mark_deployable,
        }
        attached = self.unit_of_work.run("eval.attach", params, actor, idempotency_key, body)
        if eval_summary.verdict == "fail":
            self.deployments.stop_unroutable(checkpoint_uuid, actor=actor)
        return attached

    def mark_deployable(
        self, checkpoint_id: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Mark a checkpoint deployable: current eval not `fail`, run completed."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.unit_of_work.get_checkpoint(checkpoint_id)
            checkpoint.mark_deployable(self.unit_of_work.get_run(checkpoint.train_run_id))
            return [checkpoint], checkpoint_document(checkpoint), []

        params = {"checkpointId": checkpoint_id}
        return self.unit_of_work.run("checkpoint.mark", params, actor, idempotency_key, body)

    def revoke_deployability(
        self, checkpoint_id: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Withdraw deployability, with a reason; evals and history stay.

        The checkpoint's promotion is rejected, and routing to it disabled, in
        the same append (`Deployments.after_deployability_loss`)."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.unit_of_work.get_checkpoint(checkpoint_id)
            checkpoint.revoke(reason)
            consequences = self.deployments.after_deployability_loss(
                checkpoint, revoked=reason, failed_eval=None
            )
            return [checkpoint, *consequences], checkpoint_document(checkpoint), []

        params = {"checkpointId": checkpoint_id, "reason": reason}
        revoked = self.unit_of_work.run("checkpoint.revoke", params, actor, idempotency_key, body)
        self.deployments.stop_unroutable(revoked["checkpointId"], actor=actor)
        return revoked

    # --- the trainer adapter (SPEC §4) ----------------------------------------

    def train(
        self,
        run_id: str,
        *,
        trainer_script: str | None = None,
        timeout_seconds: float | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Run an external trainer for a pending run and record its outcome (`Training.train`)."""
        return self.training.train(
            run_id,
            trainer_script=trainer_script,
            timeout_seconds=timeout_seconds,
            actor=actor,
            idempotency_key=idempotency_key,
        )

    def import_result(
        self,
        run_id: str,
        result: bytes,
        *,
        source: str,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Process a trainer result produced elsewhere, by the rules of `train`."""
        return self.training.import_result(
            run_id, result, source=source, actor=actor, idempotency_key=idempotency_key
        )

    def reconcile(
        self, *, now: datetime | None = None, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Fail every run still running past its budget deadline, with reason `abandoned`."""
        return self.training.reconcile(now=now, actor=actor, idempotency_key=idempotency_key)

    # --- queries (SPEC §5), answered by the read model -------------------------

    def show_run(self, run_id: str, *, as_of: datetime | None = None) -> Document:
        return self.queries.show_run(run_id, as_of=as_of)

    def show_checkpoint(self, checkpoint_id: str, *, as_of: datetime | None = None) -> Document:
        return self.queries.show_checkpoint(checkpoint_id, as_of=as_of)

    def lineage(self, checkpoint_id: str, *, as_of: datetime | None = None) -> Document:
        return self.queries.lineage(checkpoint_id, as_of=as_of)

    def impact(self, dataset_fingerprint: str, *, as_of: datetime | None = None) -> Document:
        return self.queries.impact(dataset_fingerprint, as_of=as_of)

    def list_runs(self, **filters: Any) -> Document:
        """See `Queries.list_runs`."""
        return self.queries.list_runs(**filters)

    def list_checkpoints(self, **filters: Any) -> Document:
        """See `Queries.list_checkpoints`."""
        return self.queries.list_checkpoints(**filters)

    def list_evals(self, **filters: Any) -> Document:
        """See `Queries.list_evals`."""
        return self.queries.list_evals(**filters)

    def stats(self, *, as_of: datetime | None = None) -> Document:
        return self.queries.stats(as_of=as_of)

    def rebuild_projections(self, progress: Progress | None = None) -> Document:
        return self.queries.rebuild_projections(progress)

    def projection_differences(self) -> list[str]:
        return self.queries.projection_differences()

    # --- aggregates and the log ---------------------------------------------------

    def get_run(self, run_id: str | UUID) -> TrainingRun:
        """The run aggregate at its latest version, replayed from its events."""
        return self.unit_of_work.get_run(run_id)

    def get_checkpoint(self, checkpoint_id: str | UUID) -> Checkpoint:
        """The checkpoint aggregate at its latest version, replayed from its events."""
        return self.unit_of_work.get_checkpoint(checkpoint_id)

    def history(self, aggregate_id: str) -> Outcome:
        """Every event of one run or checkpoint, oldest first, with log positions."""
        uuid = parse_id(aggregate_id, UnknownAggregateError)
        events = list(self.events.get(uuid))
        if not events:
            raise UnknownAggregateError(aggregate_id)
        positions = self.ledger_recorder.positions(uuid)
        return {"events": [event_document(e, p) for e, p in zip(events, positions, strict=True)]}

    def events_after(self, position: int = 0, limit: int = 1000) -> list[Outcome]:
        """Up to `limit` events of the global log after `position`, oldest first."""
        position = arguments.whole(position, "the position")
        limit = arguments.whole(limit, "the limit", low=1)
        page = self.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False
        )
        return [event_document(self.mapper.to_domain_event(n), n.id) for n in page]

    def verify(
        self, *, digest: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Outcome:
        """Recompute every hash chain and the log's digest, compare the views (`Verification`)."""
        return self.verification.verify(digest=digest, progress=progress)

    @staticmethod
    def _parse_eval(summary: dict[str, Any] | EvalSummary) -> EvalSummary:
        import pydantic

        from trainledger.domain.contract import EvalSummary
        from trainledger.domain.experiment import describe_validation_error as describe

        if isinstance(summary, EvalSummary):
            return summary
        refuse_control_characters(summary, "eval")
        try:
            return EvalSummary.model_validate(summary)
        except pydantic.ValidationError as error:
            raise EvalRefusedError(f"invalid eval summary: {describe(error)}") from None
