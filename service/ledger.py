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

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent

from trainledger.adapters.workers import usable_cpus
from trainledger.domain.errors import (
    CheckpointNotFoundError,
    ConflictError,
    CorruptStoreError,
    DatasetError,
    DuplicateEvalError,
    EvalRefusedError,
    IdempotencyKeyReusedError,
    LedgerError,
    NotFoundError,
    ResultRefusedError,
    RunNotFoundError,
    ValidationError,
)
from trainledger.domain.trainer import (
    ABANDONED,
    ArtifactLocation,
    ArtifactLocator,
    TrainerExit,
    TrainerLaunch,
    TrainerOutcome,
    TrainerRunner,
    TrainerStarted,
    assess_exit,
    assess_result,
    budget_deadline,
    read_result,
    trainer_timeout,
)
from trainledger.domain.views import checkpoint_document, iso, run_document, training_document
from trainledger.service.queries import LedgerQueries, ReadModelFactory

# The aggregates, the contract and the experiment and integrity rules are imported
# by the commands that use them: queries answer from the projections, and loading
# those pydantic models would be most of a query's start-up time in the CLI.
if TYPE_CHECKING:
    from trainledger.domain.chain import IntegrityFailure
    from trainledger.domain.contract import EvalSummary
    from trainledger.domain.experiment import DatasetDigest, ExperimentRequest
    from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun

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

    def log_chain(self, after: int, upto: int | None) -> dict[int, str]: ...


DatasetLoader = Callable[[str], "DatasetDigest"]
ArtifactDigester = Callable[[str], "str | None"]

A = TypeVar("A", bound="LedgerAggregate")

Outcome = dict[str, Any]


def _no_dataset_loader(path: str) -> DatasetDigest:
    raise DatasetError(f"cannot read dataset {path!r}: no dataset loader configured")


def _no_artifact_digest(_: str) -> str | None:
    return None


def _no_trainer_runner(
    launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]
) -> TrainerExit:
    return TrainerExit(launch_error="no trainer runner configured")


def _no_artifact_locator(reported: str, output_dir: str) -> ArtifactLocation:
    return ArtifactLocation(reported, reported, output_dir, exists=False)


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply events in order (the library's projector, without its per-event protocol check)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


_loaded_by_command: ContextVar[list[LedgerAggregate] | None] = ContextVar(
    "loaded_by_command", default=None
)
"""The aggregates the current command loaded: candidates for the warm cache once it is saved."""


def _request_digest(command: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps([command, params], sort_keys=True, default=str).encode()
    ).hexdigest()


class TrainingLedger(LedgerQueries, Application[UUID]):
    """Training runs, checkpoints, evals and deployability, event-sourced.

    Queries (show, lineage, lists, stats, as-of) come from `LedgerQueries`,
    answered by the injected read model (`domain.queries`).
    """

    name = "trainledger"
    MAX_ATTEMPTS = 8
    WARM_AGGREGATES = 2048
    """How many aggregates, as last saved by a command here, are kept to skip a reload."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        load_dataset: DatasetLoader = _no_dataset_loader,
        digest_artifact: ArtifactDigester = _no_artifact_digest,
        run_trainer: TrainerRunner = _no_trainer_runner,
        locate_artifact: ArtifactLocator = _no_artifact_locator,
        read_model: ReadModelFactory | None = None,
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
        self.run_trainer = run_trainer
        self.locate_artifact = locate_artifact
        self.read_model = None if read_model is None else read_model(self)
        self._warm: OrderedDict[UUID, tuple[LedgerAggregate, object | None]] = OrderedDict()
        self._warm_lock = threading.Lock()
        # Stores that can tell whether anything was appended since an append of ours.
        self._last_append_token: Callable[[], object | None] = getattr(
            self.recorder, "last_append_token", lambda: None
        )
        self._unchanged_since: Callable[[Any], bool] = getattr(
            self.recorder, "unchanged_since", lambda token: False
        )

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
        from trainledger.domain.experiment import DatasetDigest, build_spec
        from trainledger.domain.model import TrainingRun

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
        from trainledger.domain.model import Checkpoint

        if not artifact_path.strip():
            raise ValidationError("an artifact path is required")
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
        try:
            names_this_checkpoint = UUID(eval_summary.checkpointId.strip()) == checkpoint_uuid
        except ValueError:
            names_this_checkpoint = False
        if names_this_checkpoint:
            # However the summary spells this checkpoint's id (case, no dashes), record it
            # canonically so that queries by checkpointId find the eval.
            eval_summary = eval_summary.model_copy(update={"checkpointId": str(checkpoint_uuid)})

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            checkpoint = self.get_checkpoint(checkpoint_uuid)
            if self.ledger_recorder.find_reservation(EVAL_ID, eval_summary.evalId) is not None:
                raise DuplicateEvalError(
                    f"evalId {eval_summary.evalId} was already used in this ledger"
                )
            checkpoint.attach_eval(eval_summary)
            if mark_deployable:
                checkpoint.mark_deployable(self.get_run(checkpoint.train_run_id))
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
            checkpoint.mark_deployable(self.get_run(checkpoint.train_run_id))
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

    # --- the trainer adapter (SPEC §4) --------------------------------------

    def train(
        self,
        run_id: str,
        *,
        trainer_script: str | None = None,
        timeout_seconds: float | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Run an external trainer for a pending run and record its outcome.

        The run is marked running (host, pid, log path) as soon as the trainer
        process exists; if that cannot be recorded, the trainer is killed. The
        trainer's result is judged against the spec recorded in the ledger and
        the outcome saved in one append. `trainer_script` defaults to the
        runner's (the bundled reference trainer), `timeout_seconds` to the
        budget plus a grace period.
        """
        params = {"runId": run_id, "trainer": trainer_script, "timeout": timeout_seconds}
        if idempotency_key is not None:
            earlier = self._earlier_outcome(idempotency_key, _request_digest("run.train", params))
            if earlier is not None:
                return earlier  # a repeat must not launch the trainer again
        if timeout_seconds is not None and not (
            math.isfinite(timeout_seconds) and timeout_seconds > 0
        ):
            raise ValidationError(
                f"timeout must be a positive number of seconds, not {timeout_seconds}"
            )
        if not actor.strip():
            raise ValidationError("an actor is required")  # before a trainer is launched
        run = self.get_run(run_id)
        run.require_can_start()
        spec = run.spec
        launch = TrainerLaunch(trainer_script, spec, timeout_seconds or trainer_timeout(spec))
        started_pids: list[int] = []

        def record_started(started: TrainerStarted) -> None:
            def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
                from trainledger.domain.model import command_context

                running = self.get_run(run.id)
                # Stamped with the key, which is reserved by the outcome's append.
                with command_context(actor, idempotency_key):
                    running.start(
                        host=started.host, pid=started.pid, trainer_log_path=started.log_path
                    )
                return [running], run_document(running), []

            start_params = {"runId": run_id, "pid": started.pid, "host": started.host}
            self._command("run.start", start_params, actor, None, body)
            started_pids.append(started.pid)

        try:
            finished = self.run_trainer(launch, record_started)
        except KeyboardInterrupt:
            if started_pids:  # the runner killed the trainer: say so rather than wait for reconcile
                reason = "interrupted: the ledger process was stopped while the trainer ran"
                with contextlib.suppress(LedgerError):
                    self.fail_run(str(run.id), reason, actor=actor)
            raise
        outcome = assess_exit(spec, finished, self.locate_artifact)
        return self._record_trainer_outcome(
            "run.train", run.id, outcome, params, actor, idempotency_key, importing=False
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
        """Process a trainer result produced elsewhere, by the rules of `train`.

        `result` is the content of a result file (named `source` in messages).
        Importing the result a run was finished with again records nothing and
        says so (`alreadyRecorded`); any other result for a finished run is
        refused. A document that holds no trainer result is refused, nothing
        recorded.
        """
        run = self.get_run(run_id)
        reading = read_result(result, f"result file {source}")
        if reading.result is None:
            raise ValidationError(f"no trainer result: {'; '.join(reading.tried)}")
        digest = reading.digest
        if run.is_terminal:
            return self._repeat_of_recorded_result(run, digest)
        outcome = assess_result(run.spec, reading, exit_code=None, locate=self.locate_artifact)
        params = {"runId": run_id, "resultDigest": digest}
        return self._record_trainer_outcome(
            "run.import-result", run.id, outcome, params, actor, idempotency_key, importing=True
        )

    def reconcile(
        self,
        *,
        now: datetime | None = None,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Fail every run still running past its budget deadline, with reason `abandoned`.

        The deadline is the start plus the trainer timeout (budget and grace): a
        live `train` would have recorded an outcome by then, so whoever started
        the run is gone. `now` (default: the current time) is the moment judged.
        """
        moment = now or datetime.now(UTC)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            abandoned: list[LedgerAggregate] = []
            documents = []
            for run_id in self._running_run_ids():
                run = self.get_run(run_id)
                if run.status != "running" or run.started_at is None:
                    continue
                deadline = budget_deadline(run.started_at, run.spec)
                if deadline < moment:
                    run.fail(ABANDONED)
                    abandoned.append(run)
                    documents.append({**run_document(run), "deadline": iso(deadline)})
            return abandoned, {"checkedAt": iso(moment), "abandoned": documents}, []

        params = {"now": iso(now)}
        return self._command("run.reconcile", params, actor, idempotency_key, body)

    def _record_trainer_outcome(
        self,
        command: str,
        run_id: UUID,
        outcome: TrainerOutcome,
        params: dict[str, Any],
        actor: str,
        idempotency_key: str | None,
        *,
        importing: bool,
    ) -> Outcome:
        """Save an outcome in one append: checkpoint, its link and the run's end."""
        from trainledger.domain.model import Checkpoint

        artifact_digest = None
        if outcome.status == "completed":
            assert outcome.artifact_path is not None
            artifact_digest = self.digest_artifact(outcome.artifact_path)
            if artifact_digest is None:
                reason = f"artifact {outcome.artifact_path} vanished before it could be hashed"
                outcome = dataclasses.replace(outcome, status="failed", reason=reason)

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.get_run(run_id)
            if importing:
                if run.is_terminal:  # finished by someone else since we looked
                    return [], self._repeat_of_recorded_result(run, outcome.result_digest), []
                if run.status == "pending":
                    run.start()
            touched: list[LedgerAggregate] = [run]
            checkpoint = None
            if outcome.status == "completed":
                assert outcome.artifact_path is not None
                checkpoint = Checkpoint.register(
                    uuid4(),
                    run,
                    family=run.family,
                    artifact_path=outcome.artifact_path,
                    artifact_digest=artifact_digest,
                    metrics=outcome.metrics,
                    checkpoint_ref=outcome.checkpoint_ref,
                )
                run.complete(
                    result_digest=outcome.result_digest, trainer_result=outcome.trainer_result
                )
                touched.insert(0, checkpoint)
            elif outcome.status == "dry_run":
                run.complete(
                    result_digest=outcome.result_digest, trainer_result=outcome.trainer_result
                )
            else:
                run.fail(
                    outcome.reason or "failed",
                    result_digest=outcome.result_digest,
                    trainer_result=outcome.trainer_result,
                )
            document = training_document(run, outcome.status, checkpoint)
            document.update(resultStatus=outcome.result_status, resultSource=outcome.result_source)
            return touched, document, []

        return self._command(command, params, actor, idempotency_key, body)

    def _repeat_of_recorded_result(self, run: TrainingRun, digest: str | None) -> Outcome:
        if digest is None or run.result_digest != digest:
            raise ResultRefusedError(
                f"run {run.id} is already {run.status} with a different result; "
                "a finished run's outcome cannot be replaced"
            )
        checkpoint = self.get_checkpoint(run.checkpoint_ids[-1]) if run.checkpoint_ids else None
        ended = "failed" if run.status == "failed" else "completed" if checkpoint else "dry_run"
        return {**training_document(run, ended, checkpoint), "alreadyRecorded": True}

    def _running_run_ids(self) -> list[UUID]:
        """The runs the run list projection shows running (it catches up first).

        Only candidates: `reconcile` judges each on the run aggregate itself.
        """
        running = self.list_runs(status="running")["runs"]
        return [UUID(run["trainRunId"]) for run in running]

    # --- reads on aggregates -----------------------------------------------

    def get_run(self, run_id: str | UUID) -> TrainingRun:
        from trainledger.domain.model import TrainingRun

        return self._get(self._parse_id(run_id, RunNotFoundError), TrainingRun)

    def get_checkpoint(self, checkpoint_id: str | UUID) -> Checkpoint:
        from trainledger.domain.model import Checkpoint

        uuid = self._parse_id(checkpoint_id, CheckpointNotFoundError)
        return self._get(uuid, Checkpoint, CheckpointNotFoundError)

    def history(self, aggregate_id: str) -> Outcome:
        """Every event of one run or checkpoint, oldest first, with log positions."""
        uuid = self._parse_id(aggregate_id, UnknownAggregateError)
        events = list(self.events.get(uuid))
        if not events:
            raise UnknownAggregateError(aggregate_id)
        positions = self.ledger_recorder.positions(uuid)
        return {"events": [event_document(e, p) for e, p in zip(events, positions, strict=True)]}

    def events_after(self, position: int = 0, limit: int = 1000) -> list[Outcome]:
        """Up to `limit` events of the global log after `position`, oldest first."""
        if position < 0 or limit < 1:
            raise ValidationError("the position must be at least 0 and the limit at least 1")
        page = self.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False
        )
        return [event_document(self.mapper.to_domain_event(n), n.id) for n in page]

    # --- integrity ----------------------------------------------------------

    VERIFY_PAGE = 2000
    PARALLEL_VERIFY_FROM = 50_000
    """A log at least this long is checked by worker processes, where the store allows."""
    VERIFY_WORKERS = 4

    def verify(
        self, *, digest: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Outcome:
        """Recompute every hash chain and a digest of the whole log, in order.

        With `digest` (from an earlier run) also prove that some prefix of the
        log still has exactly that digest. `progress(done, total)` is called
        after each page.

        A long log on a store that supports it is checked by worker
        processes, each taking a share of the aggregates: its chains, and its
        share of the views against a replay of it. Only a sound log is
        answered that way; anything else is checked again in one pass, which
        names the first bad position. Views a worker finds different are
        compared here in full, which says how.
        """
        report = self._verify_in_parallel(digest, progress)
        return report if report is not None else self._verify_in_one_pass(digest, progress)

    def _verify_in_parallel(
        self, digest: str | None, progress: Callable[[int, int], None] | None
    ) -> Outcome | None:
        from trainledger.domain.chain import IntegrityFailure

        start = getattr(self.recorder, "start_log_check", None)
        parts = min(self.VERIFY_WORKERS, usable_cpus())
        if start is None or parts < 2:
            return None
        self._catch_up_views()  # so that the views are at the end of the log the workers read
        check = start(
            digest=digest,
            parts=parts,
            minimum=self.PARALLEL_VERIFY_FROM,
            application_name=self.name,
        )
        if check is None:
            return None
        log = check.snapshot
        if progress is not None:
            progress(0, log.upto)
        try:
            sound = check.sound()
        except BaseException:  # an interrupt: stop the workers
            check.cancel()
            raise
        if not sound:
            return None
        differences = None
        if digest is None or log.digest_position is not None:
            # The rows are compared here only when the workers found some
            # share of the views different (or could not tell), to say how.
            differences = [] if check.views_match else self._view_differences()
        if progress is not None:
            progress(log.upto, log.upto)
        failure = None
        if digest is not None and log.digest_position is None:
            failure = _no_prefix_with(digest, log.upto)
        elif differences:
            failure = IntegrityFailure(log.upto, _views_differ(differences))
        return _verify_report(
            position=log.upto,
            digest=log.last_link,
            events=log.upto,
            matched_at=log.digest_position,
            differences=differences,
            failure=failure,
        )

    def _verify_in_one_pass(
        self, digest: str | None, progress: Callable[[int, int], None] | None
    ) -> Outcome:
        from trainledger.domain.chain import LogVerifier

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
            links = self.ledger_recorder.log_chain(after, page[-1].id)
            present = {n.id for n in page}
            unmatched = sorted(p for p in links if p not in present)
            for n in page:
                while unmatched and unmatched[0] < n.id:
                    verifier.missing(unmatched.pop(0))
                # the ledger writes bytes; a row edited behind its back may hold
                # text (SQL replace()) or anything else, which must not crash verify
                raw_state: Any = n.state
                if isinstance(raw_state, str):
                    raw_state = raw_state.encode()
                elif not isinstance(raw_state, bytes):
                    raw_state = repr(raw_state).encode()
                try:
                    state = decode(raw_state)
                except (ValueError, TypeError):
                    state = None
                verifier.feed(
                    n.id,
                    n.originator_id,
                    n.originator_version,
                    n.topic,
                    raw_state,
                    state if isinstance(state, dict) else None,
                    links.get(n.id),
                    check_link=True,
                )
            after = page[-1].id
            if progress is not None:
                progress(verifier.events, total)
        # Chain entries past the last stored event: events deleted from the end.
        for position in sorted(self.ledger_recorder.log_chain(after, None)):
            verifier.missing(position)
        failure = verifier.failure
        if failure is None and digest is not None and verifier.digest_matched_at is None:
            failure = _no_prefix_with(digest, verifier.position)
        # The views are only worth comparing with a replay of a sound log.
        differences = None if failure is not None else self._view_differences()
        if differences:
            from trainledger.domain.chain import IntegrityFailure

            failure = IntegrityFailure(verifier.position, _views_differ(differences))
        return _verify_report(
            position=verifier.position,
            digest=verifier.digest,
            events=verifier.events,
            matched_at=verifier.digest_matched_at,
            differences=differences,
            failure=failure,
        )

    def _catch_up_views(self) -> None:
        if self.read_model is not None:
            # What stops it, the comparison with a replay reports.
            with contextlib.suppress(LedgerError):
                self.read_model.catch_up()

    def _view_differences(self) -> list[str]:
        try:
            return self.projection_differences()
        except LedgerError as error:
            return [f"views cannot be read: {error.message}"]

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
        from trainledger.domain.model import command_context

        request_digest = "" if idempotency_key is None else _request_digest(command, params)
        for attempt in range(self.MAX_ATTEMPTS):
            if idempotency_key is not None:
                earlier = self._earlier_outcome(idempotency_key, request_digest)
                if earlier is not None:
                    return earlier
            loaded: list[LedgerAggregate] = []
            loading = _loaded_by_command.set(loaded)
            try:
                with command_context(actor, idempotency_key):
                    aggregates, outcome, reservations = body()
            finally:
                _loaded_by_command.reset(loading)
            if idempotency_key is not None:
                record = json.dumps({"request": request_digest, "outcome": outcome}).encode()
                reservations = [*reservations, Reservation(IDEMPOTENCY, idempotency_key, record)]
            try:
                self.append(aggregates, reservations)
            except IntegrityError:
                # Someone appended to one of these aggregates (or took the same
                # key) since we loaded it: back off, reload, decide again.
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            self._keep_warm(loaded, aggregates)
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
            aggregate = self._load(aggregate_id)
        except AggregateNotFoundError:
            raise not_found(aggregate_id) from None
        except (ValueError, KeyError) as error:  # pydantic's ValidationError is a ValueError
            raise CorruptStoreError(
                f"stored events of {aggregate_id} cannot be read ({type(error).__name__}); "
                "run `trainledger verify`"
            ) from None
        if not isinstance(aggregate, kind):
            raise not_found(aggregate_id)
        loaded = _loaded_by_command.get()
        if loaded is not None:
            loaded.append(aggregate)
        return aggregate

    def _load(self, aggregate_id: UUID) -> LedgerAggregate:
        """An aggregate at its latest version: a warm copy brought up to date, else replayed.

        A warm copy is taken out of the cache while a command holds it, so
        commands never share one object; it returns only once the command's
        append succeeded (`_keep_warm`). Events appended since, by any
        process, are applied to it here.
        """
        with self._warm_lock:
            warm = self._warm.pop(aggregate_id, None)
        if warm is None:
            aggregate: LedgerAggregate = self.repository.get(aggregate_id, projector_func=_project)
            return aggregate
        kept, token = warm
        if token is not None and self._unchanged_since(token):
            return kept  # nothing at all was appended by anyone else since we saved it
        newer = self.events.get(aggregate_id, gt=kept.version)
        brought_up: LedgerAggregate = _project(kept, newer)
        return brought_up

    def _keep_warm(
        self, loaded: Sequence[LedgerAggregate], saved: Sequence[LedgerAggregate]
    ) -> None:
        """Keep what a successful command loaded and saved, to skip the next reload.

        Only aggregates whose state is exactly their stored events qualify:
        nothing pending (every change was just appended). Saved ones carry
        the store's token for the append (if it gives one): while nothing
        else is appended, they are current as they are. Aggregates only read
        may have changed before the append; they are brought up to date.
        """
        token = self._last_append_token()
        with self._warm_lock:
            for aggregates, trusted in ((loaded, None), (saved, token)):
                for aggregate in aggregates:
                    if aggregate.pending_events:
                        continue
                    self._warm[aggregate.id] = (aggregate, trusted)
                    self._warm.move_to_end(aggregate.id)
            while len(self._warm) > self.WARM_AGGREGATES:
                self._warm.popitem(last=False)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's save; what it saves is no longer taken from the warm copies."""
        with self._warm_lock:
            for obj in objs:  # aggregates, or events (which name theirs)
                key: UUID | None = getattr(obj, "originator_id", None) or getattr(obj, "id", None)
                if key is not None:
                    self._warm.pop(key, None)
        return super().save(*objs, **kwargs)

    def append(
        self, aggregates: Sequence[LedgerAggregate], reservations: Sequence[Reservation] = ()
    ) -> Sequence[int] | None:
        """Append the aggregates' new events and the reservations in one transaction.

        The library's `save` without what the ledger does not use (snapshots,
        recordings, its per-event protocol checks). Returns the positions.
        """
        to_stored = self.mapper.to_stored_event
        stored: list[StoredEvent] = [
            to_stored(event) for aggregate in aggregates for event in aggregate.collect_events()
        ]
        return self.recorder.insert_events(stored, reservations=reservations)

    @staticmethod
    def _parse_eval(summary: dict[str, Any] | EvalSummary) -> EvalSummary:
        import pydantic

        from trainledger.domain.contract import EvalSummary
        from trainledger.domain.experiment import describe_validation_error as describe

        if isinstance(summary, EvalSummary):
            return summary
        try:
            return EvalSummary.model_validate(summary)
        except pydantic.ValidationError as error:
            raise EvalRefusedError(f"invalid eval summary: {describe(error)}") from None


def _no_prefix_with(digest: str, position: int) -> IntegrityFailure:
    from trainledger.domain.chain import IntegrityFailure

    return IntegrityFailure(
        position,
        f"no prefix of the log has digest {digest}: events up to the position it "
        "covered were modified, deleted, reordered or inserted",
    )


def _views_differ(differences: list[str]) -> str:
    return (
        "projections differ from a fresh replay of the log ("
        + "; ".join(differences)
        + "); run `trainledger projections rebuild`"
    )


def _verify_report(
    *,
    position: int,
    digest: str,
    events: int,
    matched_at: int | None,
    differences: list[str] | None,
    failure: IntegrityFailure | None,
) -> Outcome:
    return {
        "ok": failure is None,
        "position": position,
        "digest": digest,
        "events": events,
        "digestVerifiedUpTo": matched_at,
        "projectionsMatchReplay": None if differences is None else not differences,
        "failure": None
        if failure is None
        else {"position": failure.position, "reason": failure.reason},
    }


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
