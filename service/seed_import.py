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

from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from trainledger.domain.aggregate import command_context
from trainledger.domain.model import LedgerAggregate
from trainledger.domain.seed import id_mappings
from trainledger.domain.seed_import import SEED_ACTOR, SeedFile, SeedImport, seed_import_id
from trainledger.domain.views import iso
from trainledger.service.ports import Reservation
from trainledger.service.seed_recording import SeedContent, SeedRecording, SeedWorkspace
from trainledger.service.seed_training import record_training
from trainledger.service.unit_of_work import Outcome

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trainledger.service.ledger import TrainingLedger

__all__ = ["SeedWorkspace", "import_seed"]


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
            record_training(recording, content.training)
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
