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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainledger.domain.seed_vocabulary import SEED_FILES, seed_import_id
from trainledger.domain.views import iso
from trainledger.service.unit_of_work import Outcome, request_digest

COMMAND = "import-seed"

if TYPE_CHECKING:
    from trainledger.service.ledger import TrainingLedger
    from trainledger.service.seed_recording import SeedContent


@dataclass(frozen=True)
class SeedWorkspace:
    """A seed workspace as read: each registry file's bytes (None: missing)."""

    location: str
    """The workspace as the user named it (messages name files under it)."""
    files: Mapping[str, bytes | None]
    resolved: str | None = None
    """Its absolute path, as the import records it (default: `location`)."""

    def label(self, relative: str) -> str:
        return f"{self.location.rstrip('/')}/{relative}"

    def digests(self) -> dict[str, str | None]:
        """Each registry file's sha256 (None: missing), by its path in the workspace."""
        return {
            path: None if data is None else hashlib.sha256(data).hexdigest()
            for path, data in ((p, self.files.get(p)) for p in SEED_FILES)
        }

    def files_document(self, digests: Mapping[str, str | None]) -> list[dict[str, Any]]:
        return [
            {
                "path": path,
                "present": digest is not None,
                "sha256": digest,
                "size": None if (data := self.files.get(path)) is None else len(data),
            }
            for path, digest in digests.items()
        ]


def import_seed(
    ledger: TrainingLedger,
    workspace: SeedWorkspace,
    *,
    imported_by: str,
    dry_run: bool = False,
    content: SeedContent | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Record a seed workspace's registries as history (see the module doc): all or nothing.

    Files whose digests an earlier import recorded are not read again: they
    were checked and recorded then (and the models are not even loaded).
    `content`: the files already checked (`check_workspace`). With an
    `idempotency_key`, a repeat returns the first outcome (SPEC §3.6).
    """
    digests = workspace.digests()
    params = {"files": digests}
    if idempotency_key is not None and not dry_run:
        digest = request_digest(COMMAND, params)
        first = ledger.unit_of_work.earlier_outcome(idempotency_key, digest)
        if first is not None:
            return first
    earlier = _earlier_import(ledger, seed_import_id(digests))
    if earlier is not None:
        return _nothing_new(workspace, digests, dry_run, earlier)
    # Imported here: the models cost a repeat its answer's time.
    from trainledger.service.seed_recording import record_workspace

    return record_workspace(
        ledger,
        workspace,
        digests,
        imported_by=imported_by,
        dry_run=dry_run,
        content=content,
        idempotency_key=idempotency_key,
    )


def check_workspace(workspace: SeedWorkspace) -> SeedContent:
    """Parse and check every file of the workspace, recording nothing (`SeedRefusedError`)."""
    from trainledger.service.seed_recording import SeedContent

    return SeedContent.read(workspace)


def _earlier_import(ledger: TrainingLedger, import_id: Any) -> dict[str, Any] | None:
    """The stored state of the import of these files, if one recorded it."""
    stored = ledger.recorder.select_events(import_id, limit=1)
    if not stored:
        return None
    state: dict[str, Any] = ledger.state_codec.decode_state(stored[0].state)
    state["id"] = str(import_id)
    return state


def _nothing_new(
    workspace: SeedWorkspace,
    digests: Mapping[str, str | None],
    dry_run: bool,
    earlier: dict[str, Any],
) -> Outcome:
    report = earlier.get("report", {})
    recorded, present = report.get("recorded", {}), report.get("alreadyPresent", {})
    return {
        "workspace": workspace.location,
        "dryRun": dry_run,
        "nothingNew": True,
        "files": workspace.files_document(digests),
        "recorded": dict.fromkeys(recorded, 0),
        "alreadyPresent": {key: recorded.get(key, 0) + present.get(key, 0) for key in recorded},
        "gaps": [],
        "idMap": report.get("idMap", {}),
        "importId": None,
        "importedAt": None,
        "events": 0,
        "sameFilesImportedAs": earlier["id"],
        "sameFilesImportedAt": iso_text(earlier.get("timestamp")),
    }


def iso_text(stored: Any) -> str | None:
    """A stored timestamp as the ledger prints it (`...Z`)."""
    if not isinstance(stored, str):
        return None
    from datetime import datetime

    return iso(datetime.fromisoformat(stored))
