"""The service layer: one `Application`, the ledger's Python API.

Every CLI verb is one call here. Each command loads the aggregates it needs,
calls their command methods, and saves every touched aggregate in one append
(one transaction), together with its reservations: the idempotency key and,
for evals, the globally unique evalId. A concurrent append to the same
aggregate (or of the same reservation) surfaces as the library's
`IntegrityError`; the command is then re-run on fresh state, and refused with
`ConflictError` once retries run out.

Infrastructure is chosen by environment (see `adapters.store.open_ledger`);
ports for reading the outside world (dataset files, artifact digests) are
injected.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID, uuid4

import pydantic
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.contract import EvalSummary
from domain.errors import (
    CheckpointNotFoundError,
    ConflictError,
    CorruptStoreError,
    DatasetError,
    DuplicateEvalError,
    EvalRefusedError,
    IdempotencyKeyReusedError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
)
from domain.experiment import DatasetDigest, ExperimentRequest, build_spec
from domain.experiment import describe_validation_error as describe
from domain.integrity import IntegrityFailure, LogVerifier
from domain.model import Checkpoint, LedgerAggregate, TrainingRun, command_context
from domain.views import checkpoint_document, iso, run_document

IDEMPOTENCY = "idempotency"
EVAL_ID = "eval"


@dataclass(frozen=True)
class Reservation:
    """A unique key written in the same transaction as a command's events."""

    kind: str
    key: str
    value: bytes


@runtime_checkable
class LedgerRecorder(Protocol):
    """What the ledger needs from its recorder beyond the library's API."""

    def find_reservation(self, kind: str, key: str) -> bytes | None: ...

    def positions(self, originator_id: UUID) -> list[int]: ...


DatasetLoader = Callable[[str], DatasetDigest]
ArtifactDigester = Callable[[str], "str | None"]

A = TypeVar("A", bound=LedgerAggregate)

Outcome = dict[str, Any]


def _no_dataset_loader(path: str) -> DatasetDigest:
    raise DatasetError(f"cannot read dataset {path!r}: no dataset loader configured")


def _no_artifact_digest(_: str) -> str | None:
    return None


class TrainingLedger(Application[UUID]):
    """Training runs, checkpoints, evals and deployability, event-sourced."""

    name = "trainledger"
    MAX_ATTEMPTS = 8

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        load_dataset: DatasetLoader = _no_dataset_loader,
        digest_artifact: ArtifactDigester = _no_artifact_digest,
    ) -> None:
        super().__init__(env)
        if not isinstance(self.recorder, LedgerRecorder):
            raise TypeError(
                f"{type(self.recorder).__name__} lacks reservations; "
                "open the ledger with adapters.store.open_ledger"
            )
        self.ledger_recorder: LedgerRecorder = self.recorder
        self.load_dataset = load_dataset
        self.digest_artifact = digest_artifact

    # --- commands -----------------------------------------------------------

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
                now_ms=time.time_ns() // 1_000_000,
                local_editor_enabled=os.environ.get("TRAINLEDGER_ENABLE_LOCAL_EDITOR") == "1",
            )
            run = TrainingRun.register(uuid4(), spec, load().sample_count)
            outcome = {
                "trainRunId": str(run.id),
                "experimentId": spec.experimentId,
                "spec": spec.model_dump(mode="json"),
            }
            return [run], outcome, []

        params = {
            "request": request.__dict__,
            "datasetPath": dataset_path,
            "datasetFingerprint": dataset_fingerprint,
            "sampleCount": sample_count,
        }
        return self._command("experiment.create", params, actor, idempotency_key, body)

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
            run = self.get_run(run_id)
            run.start(host=host, pid=pid, trainer_log_path=trainer_log_path)
            return [run], run_document(run), []

        params = {"runId": run_id, "host": host, "pid": pid, "log": trainer_log_path}
        return self._command("run.start", params, actor, idempotency_key, body)

    def complete_run(
        self, run_id: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Move a running run to completed."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.get_run(run_id)
            run.complete()
            return [run], run_document(run), []

        return self._command("run.complete", {"runId": run_id}, actor, idempotency_key, body)

    def fail_run(
        self, run_id: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Fail a pending or running run, with a reason."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.get_run(run_id)
            run.fail(reason)
            return [run], run_document(run), []

        params = {"runId": run_id, "reason": reason}
        return self._command("run.fail", params, actor, idempotency_key, body)

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
        digest = self.digest_artifact(artifact_path)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.get_run(run_id)
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
        return self._command("checkpoint.register", params, actor, idempotency_key, body)

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
        checkpoint_uuid = self._parse_id(checkpoint_id, CheckpointNotFoundError)
        eval_summary = self._parse_eval(summary)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self._get(checkpoint_uuid, Checkpoint, CheckpointNotFoundError)
            if self.ledger_recorder.find_reservation(EVAL_ID, eval_summary.evalId) is not None:
                raise DuplicateEvalError(
                    f"evalId {eval_summary.evalId} was already used in this ledger"
                )
            checkpoint.attach_eval(eval_summary)
            if mark_deployable:
                checkpoint.mark_deployable(self._get(checkpoint.train_run_id, TrainingRun))
            reservation = Reservation(EVAL_ID, eval_summary.evalId, str(checkpoint.id).encode())
            return [checkpoint], checkpoint_document(checkpoint), [reservation]

        params = {
            "checkpointId": checkpoint_id,
            "eval": eval_summary.model_dump(mode="json"),
            "markDeployable": mark_deployable,
        }
        return self._command("eval.attach", params, actor, idempotency_key, body)

    def mark_deployable(
        self, checkpoint_id: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Mark a checkpoint deployable: current eval not `fail`, run completed."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.get_checkpoint(checkpoint_id)
            checkpoint.mark_deployable(self._get(checkpoint.train_run_id, TrainingRun))
            return [checkpoint], checkpoint_document(checkpoint), []

        params = {"checkpointId": checkpoint_id}
        return self._command("checkpoint.mark", params, actor, idempotency_key, body)

    def revoke_deployability(
        self, checkpoint_id: str, reason: str, *, actor: str, idempotency_key: str | None = None
    ) -> Outcome:
        """Withdraw deployability, with a reason; evals and history stay."""

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.get_checkpoint(checkpoint_id)
            checkpoint.revoke(reason)
            return [checkpoint], checkpoint_document(checkpoint), []

        params = {"checkpointId": checkpoint_id, "reason": reason}
        return self._command("checkpoint.revoke", params, actor, idempotency_key, body)

    # --- reads on aggregates -----------------------------------------------

    def get_run(self, run_id: str | UUID) -> TrainingRun:
        return self._get(self._parse_id(run_id, RunNotFoundError), TrainingRun)

    def get_checkpoint(self, checkpoint_id: str | UUID) -> Checkpoint:
        uuid = self._parse_id(checkpoint_id, CheckpointNotFoundError)
        return self._get(uuid, Checkpoint, CheckpointNotFoundError)

    def show_run(self, run_id: str) -> Outcome:
        """The run as it is now."""
        return run_document(self.get_run(run_id))

    def show_checkpoint(self, checkpoint_id: str) -> Outcome:
        """The checkpoint as it is now, with all evals and deployability history."""
        return checkpoint_document(self.get_checkpoint(checkpoint_id))

    def history(self, aggregate_id: str) -> Outcome:
        """Every event of one run or checkpoint, oldest first, with log positions."""
        uuid = self._parse_id(aggregate_id, UnknownAggregateError)
        events = list(self.events.get(uuid))
        if not events:
            raise UnknownAggregateError(aggregate_id)
        positions = self.ledger_recorder.positions(uuid)
        return {"events": [event_document(e, p) for e, p in zip(events, positions, strict=True)]}

    # --- integrity ----------------------------------------------------------

    VERIFY_PAGE = 2000

    def verify(
        self, *, digest: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Outcome:
        """Recompute every hash chain and a digest of the whole log, in order.

        With `digest` (from an earlier run) also prove that some prefix of the
        log still has exactly that digest. `progress(done, total)` is called
        after each page.
        """
        verifier = LogVerifier(
            gap_free=bool(getattr(self.recorder, "gap_free_positions", False)),
            expected_digest=digest,
        )
        total = self.recorder.max_notification_id() or 0
        decode = self.mapper.transcoder.decode
        after = 0
        while True:
            page = self.recorder.select_notifications(
                start=after, limit=self.VERIFY_PAGE, inclusive_of_start=False
            )
            if not page:
                break
            for n in page:
                try:
                    state = decode(n.state)
                except ValueError:
                    state = None
                verifier.feed(
                    n.id,
                    n.originator_id,
                    n.originator_version,
                    n.topic,
                    n.state,
                    state if isinstance(state, dict) else None,
                )
            after = page[-1].id
            if progress is not None:
                progress(verifier.events, total)
        failure = verifier.failure
        if failure is None and digest is not None and verifier.digest_matched_at is None:
            failure = IntegrityFailure(
                verifier.position,
                f"no prefix of the log has digest {digest}: events up to the position it "
                "covered were modified, deleted, reordered or inserted",
            )
        return {
            "ok": failure is None,
            "position": verifier.position,
            "digest": verifier.digest,
            "events": verifier.events,
            "digestVerifiedUpTo": verifier.digest_matched_at,
            "failure": None
            if failure is None
            else {"position": failure.position, "reason": failure.reason},
        }

    # --- machinery ----------------------------------------------------------

    def _command(
        self,
        command: str,
        params: dict[str, Any],
        actor: str,
        idempotency_key: str | None,
        body: Callable[[], tuple[Sequence[LedgerAggregate], Outcome, list[Reservation]]],
    ) -> Outcome:
        if not actor.strip():
            raise ValidationError("an actor is required")
        if idempotency_key is not None and not idempotency_key.strip():
            raise ValidationError("an idempotency key must not be empty")
        request_digest = hashlib.sha256(
            json.dumps([command, params], sort_keys=True, default=str).encode()
        ).hexdigest()
        for attempt in range(self.MAX_ATTEMPTS):
            if idempotency_key is not None:
                earlier = self._earlier_outcome(idempotency_key, request_digest)
                if earlier is not None:
                    return earlier
            with command_context(actor, idempotency_key):
                aggregates, outcome, reservations = body()
            if idempotency_key is not None:
                record = json.dumps({"request": request_digest, "outcome": outcome}).encode()
                reservations = [*reservations, Reservation(IDEMPOTENCY, idempotency_key, record)]
            try:
                self.save(*aggregates, reservations=reservations)
            except IntegrityError:
                # Someone appended to one of these aggregates (or took the same
                # key) since we loaded it: back off, reload, decide again.
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            return outcome
        raise ConflictError(
            f"{command}: concurrent changes to the same records; gave up after "
            f"{self.MAX_ATTEMPTS} attempts, retry the command"
        )

    def _earlier_outcome(self, key: str, request_digest: str) -> Outcome | None:
        stored = self.ledger_recorder.find_reservation(IDEMPOTENCY, key)
        if stored is None:
            return None
        record = json.loads(stored)
        if record["request"] != request_digest:
            raise IdempotencyKeyReusedError(
                f"idempotency key {key!r} was already used for a different command"
            )
        outcome: Outcome = record["outcome"]
        return outcome

    @staticmethod
    def _parse_id(value: str | UUID, not_found: Callable[[object], NotFoundError]) -> UUID:
        if isinstance(value, UUID):
            return value
        try:
            return UUID(value.strip())
        except ValueError:
            raise not_found(value) from None

    def _get(
        self,
        aggregate_id: UUID,
        kind: type[A],
        not_found: Callable[[object], NotFoundError] = RunNotFoundError,
    ) -> A:
        try:
            aggregate: LedgerAggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise not_found(aggregate_id) from None
        except (pydantic.ValidationError, ValueError, KeyError) as error:
            raise CorruptStoreError(
                f"stored events of {aggregate_id} cannot be read ({type(error).__name__}); "
                "run `trainledger verify`"
            ) from None
        if not isinstance(aggregate, kind):
            raise not_found(aggregate_id)
        return aggregate

    @staticmethod
    def _parse_eval(summary: dict[str, Any] | EvalSummary) -> EvalSummary:
        if isinstance(summary, EvalSummary):
            return summary
        try:
            return EvalSummary.model_validate(summary)
        except pydantic.ValidationError as error:
            raise EvalRefusedError(f"invalid eval summary: {describe(error)}") from None


class UnknownAggregateError(NotFoundError):
    def __init__(self, aggregate_id: object) -> None:
        super().__init__(f"no run or checkpoint with id {aggregate_id}")


def event_document(event: Any, position: int | None) -> dict[str, Any]:
    """One event as `history`, `events` and `export` print it."""
    return {
        "position": position,
        "aggregateId": str(event.originator_id),
        "aggregateType": type(event).__qualname__.split(".")[0],
        "version": event.originator_version,
        "type": event.short_type,
        "timestamp": iso(event.timestamp),
        "actor": event.actor,
        "idempotencyKey": event.idempotency_key,
        "previousHash": event.previous_hash,
        "payload": event.payload(),
    }
