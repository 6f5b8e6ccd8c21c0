"""`import-seed` of the training registry: runs, checkpoints, evals, deployability.

Runs are taken in the order the seed created them; each run's checkpoints
(by createdAt) and each checkpoint's evals (in the seed's order) follow it,
so every event comes after what it needs (a checkpoint is registered while
its run runs, marked deployable after its run completed). See
`service.seed_import` for the times each event takes.
"""

from __future__ import annotations

from datetime import datetime

import pydantic

from trainledger.domain.contract import EvalSummary
from trainledger.domain.errors import LedgerError
from trainledger.domain.experiment import describe_validation_error
from trainledger.domain.model import Checkpoint, TrainingRun
from trainledger.domain.seed import (
    SeedCheckpoint,
    SeedEval,
    SeedRun,
    SeedTraining,
    unknown_field_gaps,
)
from trainledger.domain.seed_import import SeedSpec
from trainledger.domain.seed_vocabulary import SEED_ACTOR, SeedRefusedError, ledger_id
from trainledger.service.ports import EVAL_ID, Reservation
from trainledger.service.seed_recording import SeedRecording


def record_training(recording: SeedRecording, training: SeedTraining) -> None:
    """Record what is new in the training registry, run by run."""
    gaps = recording.gaps
    unknown_field_gaps(gaps, "run", ((r.trainRunId, r) for r in training.runs))
    unknown_field_gaps(gaps, "checkpoint", ((c.checkpointId, c) for c in training.checkpoints))
    unknown_field_gaps(gaps, "eval", ((e.evalId, e) for e in training.evals))
    order = sorted(range(len(training.runs)), key=lambda i: training.runs[i].createdAt)
    for index in order:
        RunImport(recording, training, index).record()


class RunImport:
    """One run of the training registry, its checkpoints, evals and deployability."""

    def __init__(self, recording: SeedRecording, training: SeedTraining, index: int) -> None:
        self.recording = recording
        self.training = training
        self.index = index
        self.seed: SeedRun = training.runs[index]
        self.where = f"{training.label}: trainingRuns[{index}] (trainRunId {self.seed.trainRunId})"
        self.checkpoints = sorted(
            training.checkpoints_of.get(self.seed.trainRunId, []), key=lambda c: c.createdAt
        )

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("run", self.seed.trainRunId, field_name, gap)

    def record(self) -> None:
        run = self.registered()
        seed, recording = self.seed, self.recording
        if seed.status != "pending" and run.status == "pending":
            moment, basis = self.start_time()
            with recording.at(moment, self.where):
                run.start()
            recording.emit(run)
            recording.count("runStarts")
            self.gap("startedAt", f"the seed records no start time; Started recorded at {basis}")
        elif seed.status != "pending":
            recording.count("runStarts", present=True)
        checkpoints = [CheckpointImport(self, c) for c in self.checkpoints]
        for checkpoint in checkpoints:
            checkpoint.record(run)
        self.finished(run)
        for checkpoint in checkpoints:
            checkpoint.deployability(run)

    def registered(self) -> TrainingRun:
        seed, recording = self.seed, self.recording
        run_id = ledger_id("run", seed.trainRunId)
        run = recording.find(run_id, TrainingRun, self.where)
        if run is not None:
            if run.family != seed.targetModelFamily or run.spec.experimentId != seed.experimentId:
                raise SeedRefusedError(
                    f"{self.where}: the ledger holds run {run_id} of experiment "
                    f"{run.spec.experimentId} (family {run.family!r}), not this one"
                )
            recording.count("runs", present=True)
            return run
        spec = SeedSpec(
            experimentId=seed.experimentId,
            targetModelFamily=seed.targetModelFamily,
            datasetFingerprint=seed.datasetFingerprint,
            datasetExportId=seed.exportId,
            configFingerprint=seed.configFingerprint,
        )
        for name in ("exportId", "sampleCount", "configFingerprint", "checkpointIds"):
            if getattr(seed, name) is None:
                self.gap(name, "not in the seed's record; recorded as unknown")
        sample_count = seed.sampleCount or None
        if seed.sampleCount == 0:
            self.gap(
                "sampleCount",
                "0 is the seed's placeholder (createExperiment registers 0 and never "
                "updates it); recorded as unknown",
            )
        record = self.training.raw_runs[self.index]
        with recording.at(seed.createdAt, self.where):
            run = TrainingRun.import_from_seed(run_id, spec, sample_count, record)
        recording.emit(run)
        recording.count("runs")
        self.gap("spec", "the seed's registry kept no experiment spec; recorded what it kept")
        return run

    def start_time(self) -> tuple[datetime, str]:
        """The seed's own time nearest the start it never recorded."""
        if self.checkpoints:
            return self.checkpoints[0].createdAt, "its first checkpoint's createdAt"
        if self.seed.completedAt is not None:
            return self.seed.completedAt, "its completedAt"
        return self.seed.createdAt, "its createdAt (the only time the seed gives)"

    def finished(self, run: TrainingRun) -> None:
        seed, recording = self.seed, self.recording
        if seed.status not in ("completed", "failed"):
            if run.is_terminal:
                self.gap(
                    "status",
                    f"the file says {seed.status}, the ledger already holds a later state; "
                    "nothing recorded",
                )
            return
        key = "runCompletions" if seed.status == "completed" else "runFailures"
        if run.is_terminal:
            if run.status != seed.status:
                raise SeedRefusedError(
                    f"{self.where}: status {seed.status}, but the ledger holds the run {run.status}"
                )
            recording.count(key, present=True)
            return
        assert seed.completedAt is not None  # checked with the file
        with recording.at(seed.completedAt, self.where):
            if seed.status == "completed":
                run.complete()
            else:
                reason = seed.failureReason
                if reason is None or not reason.strip():
                    reason = "failed in the seed (it recorded no reason)"
                    self.gap("failureReason", "the seed recorded no reason; recorded as such")
                run.fail(reason)
        recording.emit(run)
        recording.count(key)
        if seed.status == "failed":
            self.gap("failedAt", "the seed's completedAt, which it sets on failure too")


class CheckpointImport:
    """One checkpoint of a run, with its evals and its deployability."""

    def __init__(self, run_import: RunImport, seed: SeedCheckpoint) -> None:
        self.run_import = run_import
        self.recording = run_import.recording
        self.training = run_import.training
        self.seed = seed
        index = self.training.checkpoint_index[seed.checkpointId]
        self.where = (
            f"{self.training.label}: checkpoints[{index}] (checkpointId {seed.checkpointId})"
        )
        self.checkpoint: Checkpoint | None = None

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("checkpoint", self.seed.checkpointId, field_name, gap)

    def record(self, run: TrainingRun) -> None:
        seed, recording = self.seed, self.recording
        checkpoint_id = ledger_id("checkpoint", seed.checkpointId)
        checkpoint = recording.find(checkpoint_id, Checkpoint, self.where)
        if checkpoint is not None:
            if (
                checkpoint.train_run_id != run.id
                or checkpoint.family != seed.targetModelFamily
                or checkpoint.artifact_path != seed.artifactPath
            ):
                raise SeedRefusedError(
                    f"{self.where}: the ledger holds checkpoint {checkpoint_id} of run "
                    f"{checkpoint.train_run_id} at {checkpoint.artifact_path!r}, not this one"
                )
            recording.count("checkpoints", present=True)
        elif run.status != "running":
            self.gap(
                "checkpointId",
                f"not imported: the ledger holds its run {run.status}, and checkpoints are "
                "registered only while a run runs",
            )
            return
        else:
            with recording.at(seed.createdAt, self.where):
                checkpoint = Checkpoint.register(
                    checkpoint_id,
                    run,
                    family=seed.targetModelFamily,
                    artifact_path=seed.artifactPath,
                    artifact_digest=None,
                )
            recording.emit(checkpoint, run)
            recording.count("checkpoints")
            self.gap("artifactDigest", "the seed records no artifact digest; none recorded")
            if seed.checkpointId in self.training.unlisted:
                self.gap("checkpointIds", "its run's checkpointIds does not list it")
        self.checkpoint = checkpoint
        for summary in self.training.evals_of.get(seed.checkpointId, []):
            self.attach(checkpoint, summary)

    def attach(self, checkpoint: Checkpoint, seed: SeedEval) -> None:
        recording = self.recording
        index = self.training.eval_index[seed.evalId]
        where = f"{self.training.label}: evalSummaries[{index}] (evalId {seed.evalId})"
        summary = self.summary(checkpoint, seed)
        if summary is None:
            return
        held = next((e for e in checkpoint.evals if e.evalId == seed.evalId), None)
        if held is not None:
            if held != summary:
                raise SeedRefusedError(f"{where}: differs from the eval the ledger holds")
            recording.count("evals", present=True)
            return
        reserved = recording.ledger.ledger_recorder.find_reservation(EVAL_ID, seed.evalId)
        if reserved is not None:
            raise SeedRefusedError(
                f"{where}: evalId {seed.evalId} is already used in the ledger "
                f"(by checkpoint {reserved.decode(errors='replace')})"
            )
        was_deployable = checkpoint.deployable
        with recording.at(seed.createdAt, where):
            checkpoint.attach_eval(summary)
        recording.emit(checkpoint)
        recording.reservations.append(
            Reservation(EVAL_ID, seed.evalId, str(checkpoint.id).encode())
        )
        recording.count("evals")
        if was_deployable and not checkpoint.deployable:
            recording.count("deployabilityRevocations")
            self.gap(
                "deployable",
                "revoked by its failing eval (the ledger's rule; the seed kept it deployable)",
            )

    def summary(self, checkpoint: Checkpoint, seed: SeedEval) -> EvalSummary | None:
        try:
            return EvalSummary(
                evalId=seed.evalId,
                checkpointId=str(checkpoint.id),
                benchmarkId=seed.benchmarkId,
                targetModelFamily=seed.targetModelFamily,
                mode=seed.mode,
                baselineScore=seed.baselineScore,
                candidateScore=seed.candidateScore,
                delta=seed.delta,
                verdict=seed.verdict,
            )
        except pydantic.ValidationError as error:
            self.recording.gaps.add(
                "eval",
                seed.evalId,
                "summary",
                f"not imported: the ledger refuses it ({describe_validation_error(error)})",
            )
            return None

    def deployability(self, run: TrainingRun) -> None:
        checkpoint, seed, recording = self.checkpoint, self.seed, self.recording
        if checkpoint is None:
            return
        evals = self.training.evals_of.get(seed.checkpointId, [])
        marks = [c for c in checkpoint.deployability_history if c.deployable]
        if not seed.deployable:
            if seed.lastEvalSummaryRef is None and evals and not marks:
                self.gap(
                    "lastEvalSummaryRef",
                    "cleared, as the seed's revoke clears it: whether and when it was "
                    "deployable is not recorded; its evals are imported, the latest is current",
                )
            if checkpoint.deployable and marks and marks[-1].actor == SEED_ACTOR:
                with recording.at(self.recording.now, self.where):
                    checkpoint.revoke(
                        "deployability withdrawn in the seed (it records neither when nor why)"
                    )
                recording.emit(checkpoint)
                recording.count("deployabilityRevocations")
                self.gap("deployable", "withdrawn in the seed; revoked at the import's time")
            return
        ref = seed.lastEvalSummaryRef
        if ref is None:
            self.gap("deployable", "the seed shows it deployable without an eval; not marked")
            return
        if any(mark.eval_id == ref for mark in marks):
            recording.count("deployabilityMarks", present=True)
            return
        current = checkpoint.current_eval
        if current is None or current.evalId != ref:
            held = "none" if current is None else current.evalId
            self.gap(
                "deployable",
                f"the seed marks it on eval {ref}, the ledger's current eval is {held}; not marked",
            )
            return
        try:
            checkpoint.require_deployable(run, require_digest=False)
        except LedgerError as error:
            self.gap("deployable", f"the seed shows it deployable; not marked: {error.message}")
            return
        linked = next(e for e in evals if e.evalId == ref)
        assert run.completed_at is not None  # require_deployable: the run is completed
        moment = max(linked.createdAt, run.completed_at)
        with recording.at(moment, self.where):
            checkpoint.mark_deployable(run, require_digest=False)
        recording.emit(checkpoint)
        recording.count("deployabilityMarks")
        self.gap(
            "deployable",
            "the seed records no time of marking; recorded at its eval's createdAt or its "
            "run's completion, whichever is later",
        )
