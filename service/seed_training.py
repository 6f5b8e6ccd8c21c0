"""`import-seed` of the training registry: runs, checkpoints, evals, deployability.

Each record is planned as steps at the seed's times (`SeedRecording.plan`);
played in time order, every step finds what it needs already recorded (a
run is started before its checkpoint registers, completed before its
checkpoint is marked deployable), and decides against what the ledger holds
at that moment. See `service.seed_import` for the time each event takes.
"""

from __future__ import annotations

import functools
from datetime import datetime

import pydantic

from trainledger.domain.contract import EvalSummary
from trainledger.domain.deployment import DeploymentSlot, after_deployability_loss
from trainledger.domain.errors import LedgerError
from trainledger.domain.experiment import describe_validation_error
from trainledger.domain.ids import promotion_id, slot_id
from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun
from trainledger.domain.promotion import Promotion
from trainledger.domain.seed import (
    SeedCheckpoint,
    SeedEval,
    SeedRun,
    SeedTraining,
    unknown_field_gaps,
)
from trainledger.domain.seed_import import SeedSpec
from trainledger.domain.seed_vocabulary import SEED_ACTOR, SeedRefusedError, ledger_id
from trainledger.domain.vocabulary import WORKER_PROFILES
from trainledger.service.ports import EVAL_ID, Reservation
from trainledger.service.seed_recording import Rank, SeedRecording


def plan_training(recording: SeedRecording, training: SeedTraining) -> None:
    """Plan every record of the training registry on the recording's timeline."""
    gaps = recording.gaps
    unknown_field_gaps(gaps, "run", ((r.trainRunId, r) for r in training.runs))
    unknown_field_gaps(gaps, "checkpoint", ((c.checkpointId, c) for c in training.checkpoints))
    unknown_field_gaps(gaps, "eval", ((e.evalId, e) for e in training.evals))
    for index in range(len(training.runs)):
        RunImport(recording, training, index).plan()


def after_loss(
    recording: SeedRecording,
    checkpoint: Checkpoint,
    *,
    revoked: str | None,
    failed_eval: str | None,
) -> list[LedgerAggregate]:
    """What a revoke or a failing eval changes beyond the checkpoint (SPEC §9), on the
    aggregates this import holds (`domain.deployment.after_deployability_loss`)."""
    if revoked is None and failed_eval is None:
        return []
    where = f"checkpoint {checkpoint.id}"
    promotion = recording.find(promotion_id(checkpoint.id), Promotion, where)
    slots = [recording.find(slot_id(p), DeploymentSlot, where) for p in WORKER_PROFILES]
    return after_deployability_loss(
        checkpoint,
        promotion,
        [slot for slot in slots if slot is not None],
        revoked=revoked,
        failed_eval=failed_eval,
    )


class RunImport:
    """One run of the training registry: its steps, and its checkpoints'."""

    def __init__(self, recording: SeedRecording, training: SeedTraining, index: int) -> None:
        self.recording = recording
        self.training = training
        self.index = index
        self.seed: SeedRun = training.runs[index]
        self.where = f"{training.label}: trainingRuns[{index}] (trainRunId {self.seed.trainRunId})"
        self.checkpoints = sorted(
            training.checkpoints_of.get(self.seed.trainRunId, []), key=lambda c: c.createdAt
        )
        self.run: TrainingRun | None = None

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("run", self.seed.trainRunId, field_name, gap)

    def plan(self) -> None:
        seed, recording = self.seed, self.recording
        recording.plan(seed.createdAt, Rank.RUN_OPENED, self.open)
        if seed.status != "pending":
            recording.plan(self.start_time()[0], Rank.RUN_STARTED, self.start)
        for checkpoint in self.checkpoints:
            CheckpointImport(self, checkpoint).plan()
        if seed.completedAt is not None:
            recording.plan(seed.completedAt, Rank.RUN_FINISHED, self.finish)

    def open(self) -> None:
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
            self.run = run
            return
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
        if seed.sampleCount == 0:
            self.gap(
                "sampleCount",
                "0 is the seed's placeholder (createExperiment registers 0 and never "
                "updates it); recorded as unknown",
            )
        record = self.training.raw_runs[self.index]
        with recording.at(seed.createdAt, self.where):
            run = TrainingRun.import_from_seed(run_id, spec, seed.sampleCount or None, record)
        recording.emit(run)
        recording.count("runs")
        self.gap("spec", "the seed's registry kept no experiment spec; recorded what it kept")
        self.run = run

    def start_time(self) -> tuple[datetime, str]:
        """The seed's own time nearest the start it never recorded."""
        if self.checkpoints:
            return self.checkpoints[0].createdAt, "its first checkpoint's createdAt"
        if self.seed.completedAt is not None:
            return self.seed.completedAt, "its completedAt"
        return self.seed.createdAt, "its createdAt (the only time the seed gives)"

    def start(self) -> None:
        run, recording = self.run, self.recording
        assert run is not None
        if run.status != "pending":
            recording.count("runStarts", present=True)
            return
        moment, basis = self.start_time()
        with recording.at(moment, self.where):
            run.start()
        recording.emit(run)
        recording.count("runStarts")
        self.gap("startedAt", f"the seed records no start time; Started recorded at {basis}")

    def finish(self) -> None:
        seed, run, recording = self.seed, self.run, self.recording
        assert run is not None
        assert seed.completedAt is not None  # checked with the file
        key = "runCompletions" if seed.status == "completed" else "runFailures"
        if run.is_terminal:
            if run.status != seed.status:
                raise SeedRefusedError(
                    f"{self.where}: status {seed.status}, but the ledger holds the run {run.status}"
                )
            recording.count(key, present=True)
            return
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
            self.gap("failedAt", "recorded at its completedAt (the seed sets it on failure too)")


class CheckpointImport:
    """One checkpoint of a run: its registration, evals and deployability."""

    def __init__(self, run_import: RunImport, seed: SeedCheckpoint) -> None:
        self.run_import = run_import
        self.recording = run_import.recording
        self.training = run_import.training
        self.seed = seed
        index = self.training.checkpoint_index[seed.checkpointId]
        self.where = (
            f"{self.training.label}: checkpoints[{index}] (checkpointId {seed.checkpointId})"
        )
        self.evals = self.training.evals_of.get(seed.checkpointId, [])
        self.checkpoint: Checkpoint | None = None

    def gap(self, field_name: str, gap: str) -> None:
        self.recording.gaps.add("checkpoint", self.seed.checkpointId, field_name, gap)

    def plan(self) -> None:
        seed, recording = self.seed, self.recording
        recording.plan(seed.createdAt, Rank.CHECKPOINT, self.register)
        for summary in self.evals:
            recording.plan(summary.createdAt, Rank.EVAL, functools.partial(self.attach, summary))
        backing = self.backing_eval()
        if seed.deployable and backing is not None:
            end = self.run_import.seed.completedAt
            moment = backing.createdAt if end is None else max(backing.createdAt, end)
            recording.plan(moment, Rank.DEPLOYABILITY, self.mark)
        elif seed.deployable:
            recording.plan(seed.createdAt, Rank.DEPLOYABILITY, self.mark)
        else:
            recording.plan(recording.now, Rank.DEPLOYABILITY, self.withdrawn)

    def backing_eval(self) -> SeedEval | None:
        """The eval a deployable checkpoint was marked on, as the seed's flow marks: right
        after attaching a passing eval (`attachEvalAndMarkDeployable`), so the first of the
        evals since its last failing one (None: it links no eval, or its latest failed)."""
        if self.seed.lastEvalSummaryRef is None:
            return None
        backing = None
        for summary in self.evals:
            backing = None if summary.verdict == "fail" else backing or summary
        return backing

    def register(self) -> None:
        seed, recording, run = self.seed, self.recording, self.run_import.run
        assert run is not None
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
            self.checkpoint = checkpoint
            return
        if run.status != "running":
            self.gap(
                "checkpointId",
                f"not imported: the ledger holds its run {run.status}, and checkpoints are "
                "registered only while a run runs",
            )
            return
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
        self.checkpoint = checkpoint
        self.gap("artifactDigest", "the seed records no artifact digest; none recorded")
        if seed.checkpointId in self.training.unlisted:
            self.gap("checkpointIds", "its run's checkpointIds does not list it")
        latest = self.training.stale_links.get(seed.checkpointId)
        if latest is not None:
            self.gap(
                "lastEvalSummaryRef",
                "links an eval that is not its latest (the seed links the eval attached "
                "last); its latest eval is its current eval here",
            )
        if not seed.deployable and seed.lastEvalSummaryRef is None and self.evals:
            self.gap(
                "lastEvalSummaryRef",
                "cleared, as the seed's revoke clears it: whether and when it was deployable "
                "is not recorded; its evals are imported, the latest is current",
            )

    def attach(self, seed: SeedEval) -> None:
        checkpoint, recording = self.checkpoint, self.recording
        if checkpoint is None:
            recording.gaps.add(
                "eval", seed.evalId, "checkpointId", "its checkpoint was not imported"
            )
            return
        where = (
            f"{self.training.label}: evalSummaries[{self.training.eval_index[seed.evalId]}] "
            f"(evalId {seed.evalId})"
        )
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
            revoked = was_deployable and not checkpoint.deployable
            failed = seed.evalId if summary.verdict == "fail" else None
            consequences = after_loss(
                recording,
                checkpoint,
                revoked=f"eval {seed.evalId} failed" if revoked else None,
                failed_eval=failed,
            )
        recording.emit(checkpoint, *consequences)
        recording.reservations.append(
            Reservation(EVAL_ID, seed.evalId, str(checkpoint.id).encode())
        )
        recording.count("evals")
        if revoked:
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

    def mark(self) -> None:
        """The seed shows it deployable: mark it so, as its flow did, if that is new."""
        checkpoint, seed, recording = self.checkpoint, self.seed, self.recording
        run = self.run_import.run
        if checkpoint is None or run is None:
            return
        if seed.lastEvalSummaryRef is None:
            self.gap("deployable", "the seed shows it deployable without an eval; not marked")
            return
        backing = self.backing_eval()
        if backing is None:
            self.gap(
                "deployable",
                "the seed shows it deployable on a failing eval (it kept deployability when "
                "a failing eval was attached; the ledger revokes it then); not marked",
            )
            return
        since = {e.evalId for e in self.evals[self.evals.index(backing) :]}
        if any(c.deployable and c.eval_id in since for c in checkpoint.deployability_history):
            recording.count("deployabilityMarks", present=True)
            return
        current = checkpoint.current_eval
        if current is None or current.evalId != backing.evalId:
            held = "none" if current is None else current.evalId
            self.gap(
                "deployable",
                f"the seed's flow marks it on eval {backing.evalId}, the ledger's current eval "
                f"then is {held}; not marked",
            )
            return
        try:
            checkpoint.require_deployable(run, require_digest=False)
        except LedgerError as error:
            self.gap("deployable", f"the seed shows it deployable; not marked: {error.message}")
            return
        assert run.completed_at is not None  # require_deployable: the run is completed
        with recording.at(max(backing.createdAt, run.completed_at), self.where):
            checkpoint.mark_deployable(run, require_digest=False)
        recording.emit(checkpoint)
        recording.count("deployabilityMarks")
        self.gap(
            "deployable",
            "the seed records no time of marking; recorded on the first passing eval since its "
            "last failing one, at that eval's time or its run's completion if later",
        )

    def withdrawn(self) -> None:
        """The seed shows it not deployable: revoke a deployability only the seed gave it."""
        checkpoint, recording = self.checkpoint, self.recording
        if checkpoint is None or not checkpoint.deployable:
            return
        marks = [c for c in checkpoint.deployability_history if c.deployable]
        if not marks or marks[-1].actor != SEED_ACTOR:
            return  # made deployable in the ledger, not by the seed: the ledger's to revoke
        reason = "deployability withdrawn in the seed (it records neither when nor why)"
        with recording.at(recording.now, self.where):
            checkpoint.revoke(reason)
            consequences = after_loss(recording, checkpoint, revoked=reason, failed_eval=None)
        recording.emit(checkpoint, *consequences)
        recording.count("deployabilityRevocations")
        self.gap("deployable", "withdrawn in the seed; revoked at the import's time")
