"""`import-seed`: the seed's registries recorded as ledger history, in one append.

The files are read and checked whole first (`domain.seed`, `domain.seed_rollout`):
one that does not parse, has the wrong shape, repeats an id, names a record
that does not exist or has times out of order is refused with its path and
the reason, and nothing is written. Then one unit-of-work body compares each
record with what the ledger holds under its id and records only what is new,
through the aggregates' own commands, each inside a `command_context` whose
clock tells the seed's time of that record (actor `seed-import`):

- a run is `TrainingRun.ImportedFromSeed` at its createdAt (what the seed
  kept of its spec, its record as read); Started at the seed's time nearest
  the start it never recorded (its first checkpoint's createdAt, else its
  completedAt, else its createdAt); Completed or Failed at its completedAt;
- a checkpoint is registered at its createdAt (no artifact digest: the seed
  kept none), each eval attached at its createdAt, in the seed's order;
- a checkpoint the seed shows deployable is marked deployable on the eval it
  links, at that eval's time or its run's completion, whichever is later
  (the seed recorded no time); a deployability the seed withdrew since an
  earlier import is revoked at the import's time (the seed recorded neither
  time nor reason).

What the files cannot show, or the ledger's rules do not take as the seed
had it, is listed in the report's gaps, never filled in. Everything goes in
one append, events in the order they happened to each record (a checkpoint
registered before its run links it), with a `SeedImport` record of the import:
its time, the files and their sha256 digests, and the report. The same files
again (the import of their digests is recorded) record nothing and say so;
a later version records only what is new. `dry_run` decides the same and
writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

import pydantic
from eventsourcing.application import AggregateNotFoundError

from trainledger.domain.aggregate import command_context
from trainledger.domain.contract import EvalSummary
from trainledger.domain.errors import CorruptStoreError, LedgerError
from trainledger.domain.experiment import describe_validation_error
from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun
from trainledger.domain.seed import (
    SEED_FILES,
    TRAINING_REGISTRY,
    Gaps,
    SeedCheckpoint,
    SeedEval,
    SeedRefusedError,
    SeedRun,
    SeedTraining,
    id_mappings,
    ledger_id,
    read_training,
    unknown_field_gaps,
)
from trainledger.domain.seed_import import (
    SEED_ACTOR,
    SeedFile,
    SeedImport,
    SeedSpec,
    seed_import_id,
)
from trainledger.domain.views import iso
from trainledger.service.ports import EVAL_ID, Reservation
from trainledger.service.unit_of_work import Outcome

if TYPE_CHECKING:
    from trainledger.service.ledger import TrainingLedger

A = TypeVar("A", bound=LedgerAggregate)

COUNTED = (
    "runs",
    "runStarts",
    "runCompletions",
    "runFailures",
    "checkpoints",
    "evals",
    "deployabilityMarks",
    "deployabilityRevocations",
)
"""What the report counts, recorded and already present, for the training registry."""


@dataclass(frozen=True)
class SeedWorkspace:
    """A seed workspace as read: each registry file's bytes (None: missing)."""

    location: str
    """The workspace as the user named it (messages name files under it)."""
    files: Mapping[str, bytes | None]

    def label(self, relative: str) -> str:
        return f"{self.location.rstrip('/')}/{relative}"

    def described(self) -> list[SeedFile]:
        return [
            SeedFile(
                path=path,
                sha256=None if data is None else hashlib.sha256(data).hexdigest(),
                size=None if data is None else len(data),
            )
            for path, data in ((p, self.files.get(p)) for p in SEED_FILES)
        ]


@dataclass
class SeedContent:
    """Every present file of a workspace, parsed and checked on its own."""

    workspace: SeedWorkspace
    training: SeedTraining | None

    @classmethod
    def read(cls, workspace: SeedWorkspace) -> SeedContent:
        if all(workspace.files.get(path) is None for path in SEED_FILES):
            raise SeedRefusedError(
                f"{workspace.location}: no seed registry file found "
                f"(looked for {', '.join(SEED_FILES)})"
            )
        data = workspace.files.get(TRAINING_REGISTRY)
        training = None if data is None else read_training(workspace.label(TRAINING_REGISTRY), data)
        return cls(workspace, training)


@dataclass
class Tally:
    recorded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    present: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))


class SeedRecording:
    """One attempt of the import's body: what is new, recorded in the order it happened."""

    def __init__(self, ledger: TrainingLedger, content: SeedContent, now: datetime) -> None:
        self.ledger = ledger
        self.content = content
        self.now = now
        self.events: list[LedgerAggregate.Event] = []
        self.reservations: list[Reservation] = []
        self.tally = Tally()
        self.gaps = Gaps()
        self.loaded: dict[UUID, LedgerAggregate] = {}

    # --- the ledger's side -------------------------------------------------

    @contextmanager
    def at(self, moment: datetime, what: str) -> Iterator[None]:
        """Events triggered in the block take `moment`; a refusal by a rule names `what`."""
        with command_context(SEED_ACTOR, None, clock=lambda: moment):
            try:
                yield
            except SeedRefusedError:
                raise
            except LedgerError as error:
                raise SeedRefusedError(f"{what}: {error.message}") from None

    def emit(self, *aggregates: LedgerAggregate) -> None:
        """Take the events just triggered on these aggregates, in this order, for the append."""
        for aggregate in aggregates:
            self.events.extend(cast("Sequence[LedgerAggregate.Event]", aggregate.collect_events()))
            self.loaded[aggregate.id] = aggregate

    def find(self, aggregate_id: UUID, kind: type[A], what: str) -> A | None:
        """The aggregate the ledger holds under this id (None: none); another kind refuses."""
        aggregate = self.loaded.get(aggregate_id)
        if aggregate is None:
            try:
                aggregate = self.ledger.unit_of_work.load(aggregate_id)
            except AggregateNotFoundError:
                return None
            except (ValueError, KeyError) as error:
                raise CorruptStoreError(
                    f"stored events of {aggregate_id} cannot be read ({type(error).__name__}); "
                    "run `trainledger verify`"
                ) from None
            self.loaded[aggregate_id] = aggregate
        if not isinstance(aggregate, kind):
            raise SeedRefusedError(
                f"{what}: the ledger holds {aggregate_id} as a {type(aggregate).__name__}, "
                f"not a {kind.__name__}"
            )
        return aggregate

    def count(self, key: str, *, present: bool = False) -> None:
        (self.tally.present if present else self.tally.recorded)[key] += 1

    # --- the training registry -----------------------------------------------

    def training(self, training: SeedTraining) -> None:
        gaps = self.gaps
        unknown_field_gaps(gaps, "run", ((r.trainRunId, r) for r in training.runs))
        unknown_field_gaps(gaps, "checkpoint", ((c.checkpointId, c) for c in training.checkpoints))
        unknown_field_gaps(gaps, "eval", ((e.evalId, e) for e in training.evals))
        order = sorted(range(len(training.runs)), key=lambda i: training.runs[i].createdAt)
        for index in order:
            RunImport(self, training, index).record()


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
        index = self.training.evals.index(seed)
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


def import_seed(
    ledger: TrainingLedger,
    workspace: SeedWorkspace,
    *,
    imported_by: str,
    dry_run: bool = False,
) -> Outcome:
    """Record a seed workspace's registries as history (see the module doc): all or nothing."""
    content = SeedContent.read(workspace)
    files = workspace.described()
    import_id = seed_import_id({f.path: f.sha256 for f in files})
    earlier = _earlier_import(ledger, import_id)
    if earlier is not None:
        return _nothing_new(workspace, files, dry_run, earlier)

    def body() -> tuple[Sequence[LedgerAggregate.Event], Outcome, list[Reservation]]:
        recording = SeedRecording(ledger, content, ledger.now())
        if content.training is not None:
            recording.training(content.training)
        report = _report(workspace, files, recording, dry_run)
        if not recording.events:
            return [], {**report, "nothingNew": True, "importId": None, "importedAt": None}, []
        with command_context(SEED_ACTOR, None, clock=lambda: recording.now):
            record = SeedImport.record(
                workspace.location,
                files,
                imported_by,
                {k: report[k] for k in ("recorded", "alreadyPresent", "gaps", "idMap")},
            )
        recording.emit(record)
        outcome = {
            **report,
            "importId": str(record.id),
            "importedAt": iso(record.created_on),
            "events": len(recording.events),
        }
        return recording.events, outcome, recording.reservations

    if dry_run:
        with command_context(SEED_ACTOR, None, clock=ledger.clock):
            _, outcome, _ = body()
        return outcome
    return ledger.unit_of_work.run("import-seed", {}, SEED_ACTOR, None, body)


def _earlier_import(ledger: TrainingLedger, import_id: UUID) -> SeedImport | None:
    try:
        record = ledger.unit_of_work.load(import_id)
    except AggregateNotFoundError:
        return None
    return record if isinstance(record, SeedImport) else None


def _files_document(files: list[SeedFile]) -> list[dict[str, Any]]:
    return [
        {"path": f.path, "present": f.sha256 is not None, "sha256": f.sha256, "size": f.size}
        for f in files
    ]


def _report(
    workspace: SeedWorkspace, files: list[SeedFile], recording: SeedRecording, dry_run: bool
) -> Outcome:
    for file in files:
        if file.sha256 is None:
            recording.gaps.add("file", file.path, "file", "missing; skipped")
    training = recording.content.training
    id_map: dict[str, str] = {}
    if training is not None:
        id_map.update(id_mappings("run", (r.trainRunId for r in training.runs)))
        id_map.update(id_mappings("checkpoint", (c.checkpointId for c in training.checkpoints)))
    recorded = recording.tally.recorded
    return {
        "workspace": workspace.location,
        "dryRun": dry_run,
        "nothingNew": False,
        "files": _files_document(files),
        "recorded": recorded,
        "alreadyPresent": recording.tally.present,
        "gaps": recording.gaps.documents(),
        "idMap": id_map,
        "importedAt": iso(recording.now),
        "events": len(recording.events),
    }


def _nothing_new(
    workspace: SeedWorkspace, files: list[SeedFile], dry_run: bool, earlier: SeedImport
) -> Outcome:
    report = earlier.report
    return {
        "workspace": workspace.location,
        "dryRun": dry_run,
        "nothingNew": True,
        "files": _files_document(files),
        "recorded": dict.fromkeys(report.get("recorded", {}), 0),
        "alreadyPresent": {
            key: report.get("recorded", {}).get(key, 0) + count
            for key, count in report.get("alreadyPresent", {}).items()
        },
        "gaps": [],
        "idMap": report.get("idMap", {}),
        "importId": None,
        "importedAt": None,
        "events": 0,
        "sameFilesImportedAs": str(earlier.id),
        "sameFilesImportedAt": iso(earlier.created_on),
    }
