"""Trainer orchestration (SPEC §4): run a trainer, judge its result, record the outcome.

The rules that judge a trainer's output live in `domain.trainer`; running
the subprocess and resolving artifact paths are ports (`TrainerRunner`,
`ArtifactLocator`, `ArtifactDigester`) the ledger was given. Here they are
put together: `train` marks the run running as soon as the trainer process
exists, then records the outcome (checkpoint, its link and the run's end)
in one append; `import_result` judges a result produced elsewhere by the
same rules; `reconcile` fails runs nobody finished in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from trainledger.domain.errors import (
    ArtifactError,
    LedgerError,
    ResultRefusedError,
    TrainerNotStartedError,
    ValidationError,
)
from trainledger.domain.trainer import (
    ABANDONED,
    TrainerLaunch,
    TrainerStarted,
    budget_deadline,
    read_result,
    trainer_timeout,
)
from trainledger.domain.trainer_outcome import (
    TrainerOutcome,
    assess_exit,
    assess_result,
)
from trainledger.domain.views import iso, run_document, training_document
from trainledger.service import arguments
from trainledger.service.ports import Reservation
from trainledger.service.unit_of_work import Outcome, request_digest

if TYPE_CHECKING:
    from trainledger.domain.model import LedgerAggregate, TrainingRun
    from trainledger.service.ledger import TrainingLedger


class Training:
    """The trainer adapter's commands, on the ledger's unit of work and ports."""

    def __init__(self, ledger: TrainingLedger) -> None:
        self.ledger = ledger

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
            earlier = self.ledger.unit_of_work.earlier_outcome(
                idempotency_key, request_digest("run.train", params)
            )
            if earlier is not None:
                return earlier  # a repeat must not launch the trainer again
        arguments.optional(timeout_seconds, (int, float), "a timeout")
        arguments.optional(trainer_script, str, "a trainer script")
        if timeout_seconds is not None and not (
            math.isfinite(timeout_seconds) and timeout_seconds > 0
        ):
            raise ValidationError(
                f"timeout must be a positive number of seconds, not {timeout_seconds}"
            )
        if not actor.strip():
            raise ValidationError("an actor is required")  # before a trainer is launched
        run = self.ledger.unit_of_work.get_run(run_id)
        run.require_can_start()
        spec = run.experiment_spec()
        launch = TrainerLaunch(trainer_script, spec, timeout_seconds or trainer_timeout(spec))
        started_pids: list[int] = []

        def record_started(started: TrainerStarted) -> None:
            def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
                from trainledger.domain.model import command_context

                running = self.ledger.unit_of_work.get_run(run.id)
                # Stamped with the key, which is reserved by the outcome's append.
                with command_context(actor, idempotency_key):
                    running.start(
                        host=started.host, pid=started.pid, trainer_log_path=started.log_path
                    )
                return [running], run_document(running), []

            start_params = {"runId": run_id, "pid": started.pid, "host": started.host}
            self.ledger.unit_of_work.run("run.start", start_params, actor, None, body)
            started_pids.append(started.pid)

        # Hashing the artifact is covered by the trainer's timeout too.
        deadline = time.monotonic() + launch.timeout_seconds
        try:
            finished = self.ledger.run_trainer(launch, record_started)
        except KeyboardInterrupt:
            if started_pids:  # the runner killed the trainer: say so rather than wait for reconcile
                reason = "interrupted: the ledger process was stopped while the trainer ran"
                with contextlib.suppress(LedgerError):
                    self.ledger.fail_run(str(run.id), reason, actor=actor)
            raise
        if finished.launch_error is not None:
            # No trainer ran, so nothing is recorded: the run stays pending.
            raise TrainerNotStartedError(f"cannot start the trainer: {finished.launch_error}")
        outcome = assess_exit(spec, finished, self.ledger.locate_artifact)
        return self._record_trainer_outcome(
            "run.train",
            run.id,
            outcome,
            params,
            actor,
            idempotency_key,
            importing=False,
            deadline=deadline,
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
        arguments.require(result, bytes, "a trainer result")
        run = self.ledger.unit_of_work.get_run(run_id)
        reading = read_result(result, f"result file {source}")
        if reading.result is None:
            raise ValidationError(f"no trainer result: {'; '.join(reading.tried)}")
        digest = reading.digest
        if run.is_terminal:
            return self._repeat_of_recorded_result(run, digest)
        outcome = assess_result(
            run.experiment_spec(), reading, exit_code=None, locate=self.ledger.locate_artifact
        )
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
        moment = arguments.moment(now, "now") or self.ledger.now()
        from trainledger.domain.contract import ExperimentSpec

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            abandoned: list[LedgerAggregate] = []
            documents = []
            for run_id in self._running_run_ids():
                run = self.ledger.unit_of_work.get_run(run_id)
                if run.status != "running" or run.started_at is None:
                    continue
                spec = run.spec
                if not isinstance(spec, ExperimentSpec):
                    continue  # imported from the seed: it recorded no budget to judge by
                deadline = budget_deadline(run.started_at, spec)
                if deadline < moment:
                    run.fail(ABANDONED)
                    abandoned.append(run)
                    documents.append({**run_document(run), "deadline": iso(deadline)})
            return abandoned, {"checkedAt": iso(moment), "abandoned": documents}, []

        params = {"now": iso(now)}
        return self.ledger.unit_of_work.run("run.reconcile", params, actor, idempotency_key, body)

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
        deadline: float | None = None,
    ) -> Outcome:
        """Save an outcome in one append: checkpoint, its link and the run's end."""
        from trainledger.domain.model import Checkpoint

        artifact_digest = None
        if outcome.status == "completed":
            assert outcome.artifact_path is not None
            try:
                artifact_digest = self.ledger.digest_artifact(
                    outcome.artifact_path, deadline=deadline
                )
                problem = (
                    None
                    if artifact_digest is not None
                    else f"artifact {outcome.artifact_path} vanished before it could be hashed"
                )
            except ArtifactError as error:
                problem = error.message
            if problem is not None:
                outcome = dataclasses.replace(
                    outcome, status="failed", reason=f"trainer result rejected: {problem}"
                )

        def body() -> tuple[list[LedgerAggregate], Outcome, list[Reservation]]:
            run = self.ledger.unit_of_work.get_run(run_id)
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

        return self.ledger.unit_of_work.run(command, params, actor, idempotency_key, body)

    def _repeat_of_recorded_result(self, run: TrainingRun, digest: str | None) -> Outcome:
        if digest is None or run.result_digest != digest:
            raise ResultRefusedError(
                f"run {run.id} is already {run.status} with a different result; "
                "a finished run's outcome cannot be replaced"
            )
        checkpoint = (
            self.ledger.unit_of_work.get_checkpoint(run.checkpoint_ids[-1])
            if run.checkpoint_ids
            else None
        )
        ended = "failed" if run.status == "failed" else "completed" if checkpoint else "dry_run"
        return {**training_document(run, ended, checkpoint), "alreadyRecorded": True}

    def _running_run_ids(self) -> list[UUID]:
        """The runs the run list projection shows running (it catches up first).

        Only candidates: `reconcile` judges each on the run aggregate itself.
        """
        running = self.ledger.list_runs(status="running")["runs"]
        return [UUID(run["trainRunId"]) for run in running]
