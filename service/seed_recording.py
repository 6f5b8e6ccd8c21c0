"""The pieces of one `import-seed` attempt: the files as read, and what it records.

A `SeedRecording` is one run of the import's unit-of-work body: it finds what
the ledger holds under each seed id, triggers events inside a
`command_context` whose clock tells the seed's time of the record, and keeps
the events in the order they happened (`emit`), with the reservations, the
counts and the gaps of the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from trainledger.domain.aggregate import command_context
from trainledger.domain.errors import CorruptStoreError, LedgerError
from trainledger.domain.model import Checkpoint, LedgerAggregate
from trainledger.domain.seed import Gaps, SeedTraining, id_mappings, read_training
from trainledger.domain.seed_import import SeedFile, SeedImport
from trainledger.domain.seed_rollout import (
    Reference,
    SeedRollout,
    empty_rollout,
    read_deployments,
    read_observations,
    read_promotions,
)
from trainledger.domain.seed_vocabulary import (
    DEPLOYMENT_REGISTRY,
    PROMOTION_REGISTRY,
    SEED_ACTOR,
    SEED_FILES,
    SHADOW_REGISTRY,
    TRAINING_REGISTRY,
    SeedRefusedError,
    ledger_id,
)
from trainledger.domain.views import iso
from trainledger.service.ports import Reservation
from trainledger.service.seed_import import SeedWorkspace
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
    "observations",
    "observationSettlements",
    "promotionDecisions",
    "bindings",
    "routingChanges",
)
"""What the report counts, recorded and already present."""


@dataclass
class SeedContent:
    """Every present file of a workspace, parsed and checked, alone and with each other."""

    workspace: SeedWorkspace
    training: SeedTraining | None
    rollout: SeedRollout
    unresolved: list[Reference]
    """Checkpoints the §9 files name that the training registry does not hold."""

    @classmethod
    def read(cls, workspace: SeedWorkspace) -> SeedContent:
        """Parse and check every present file; `SeedRefusedError` names the first fault."""
        files = workspace.files
        if all(files.get(path) is None for path in SEED_FILES):
            raise SeedRefusedError(
                f"{workspace.location}: no seed registry file found "
                f"(looked for {', '.join(SEED_FILES)})"
            )
        label = workspace.label
        data = files.get(TRAINING_REGISTRY)
        training = None if data is None else read_training(label(TRAINING_REGISTRY), data)
        rollout = empty_rollout()
        if (data := files.get(PROMOTION_REGISTRY)) is not None:
            rollout.promotion_label = label(PROMOTION_REGISTRY)
            rollout.promotions = read_promotions(rollout.promotion_label, data)
        if (data := files.get(SHADOW_REGISTRY)) is not None:
            rollout.shadow_label = label(SHADOW_REGISTRY)
            rollout.observations = read_observations(rollout.shadow_label, data)
        if (data := files.get(DEPLOYMENT_REGISTRY)) is not None:
            rollout.deployment_label = label(DEPLOYMENT_REGISTRY)
            rollout.deployments = read_deployments(rollout.deployment_label, data)
        return cls(workspace, training, rollout, rollout.unresolved(training))

    def require_references(self, recording: SeedRecording) -> None:
        """Refuse a §9 record naming a checkpoint neither the files nor the ledger hold."""
        for reference in self.unresolved:
            checkpoint_id = ledger_id("checkpoint", reference.checkpoint)
            if recording.find(checkpoint_id, Checkpoint, reference.where) is None:
                raise SeedRefusedError(
                    f"{reference.where}: checkpoint {reference.checkpoint} is neither in the "
                    "training registry nor in the ledger"
                )


class Rank(IntEnum):
    """What happens first among steps of the same moment (what a step needs comes first)."""

    RUN_OPENED = 0
    RUN_STARTED = 1
    CHECKPOINT = 2
    EVAL = 3
    RUN_FINISHED = 4
    DEPLOYABILITY = 5
    OBSERVATION_ROUTED = 6
    OBSERVATION_SETTLED = 7
    PROMOTION = 8
    BINDING = 9
    ROUTING = 10


@dataclass(order=True)
class Step:
    """Something the seed's files show happened at a moment, to record if it is new."""

    moment: datetime
    rank: Rank
    sequence: int
    action: Callable[[], None] = field(compare=False)


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
        self.steps: list[Step] = []
        self.observations: dict[UUID, list[Any]] = {}
        """Observations this import records, by checkpoint (shadow evidence counts them)."""

    # --- the ledger's side -------------------------------------------------

    @contextmanager
    def at(self, moment: datetime, what: str) -> Iterator[None]:
        """Events triggered in the block take `moment`; a refusal by a rule refuses the
        import, naming `what`."""
        with self.clocked(moment):
            try:
                yield
            except SeedRefusedError:
                raise
            except LedgerError as error:
                raise SeedRefusedError(f"{what}: {error.message}") from None

    @staticmethod
    @contextmanager
    def clocked(moment: datetime) -> Iterator[None]:
        """Events triggered in the block take `moment` (a refusal is the caller's)."""
        with command_context(SEED_ACTOR, None, clock=lambda: moment):
            yield

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

    # --- the timeline ------------------------------------------------------------

    def plan(self, moment: datetime, rank: Rank, action: Callable[[], None]) -> None:
        """Run `action` at `moment` of the seed's history (ties: by `rank`, then as planned)."""
        self.steps.append(Step(moment, rank, len(self.steps), action))

    def play(self) -> None:
        """Run every planned step in the order of the seed's history."""
        for step in sorted(self.steps):
            step.action()
        self.steps = []


def record_workspace(
    ledger: TrainingLedger,
    workspace: SeedWorkspace,
    digests: Mapping[str, str | None],
    *,
    imported_by: str,
    dry_run: bool,
    content: SeedContent | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Check every file (unless `content` holds them checked), then record what is new in
    one append (or, `dry_run`, nothing)."""
    from trainledger.service.seed_rollout import plan_rollout
    from trainledger.service.seed_training import plan_training

    content = content or SeedContent.read(workspace)
    files = [
        SeedFile(path=f["path"], sha256=f["sha256"], size=f["size"])
        for f in workspace.files_document(digests)
    ]

    def body() -> tuple[Sequence[LedgerAggregate.Event], Outcome, list[Reservation]]:
        recording = SeedRecording(ledger, content, ledger.now())
        if content.training is not None:
            plan_training(recording, content.training)
        plan_rollout(recording, content.rollout)
        content.require_references(recording)
        recording.play()
        report = _report(workspace, digests, recording, dry_run)
        if not recording.events:
            return [], {**report, "nothingNew": True, "importId": None, "importedAt": None}, []
        with command_context(SEED_ACTOR, None, clock=lambda: recording.now):
            record = SeedImport.record(
                workspace.resolved or workspace.location,
                files,
                imported_by,
                {k: report[k] for k in ("recorded", "alreadyPresent", "gaps", "idMap")},
            )
        recording.emit(record)
        outcome = {**report, "importId": str(record.id), "events": len(recording.events)}
        return recording.events, outcome, recording.reservations

    if dry_run:
        with command_context(SEED_ACTOR, None, clock=ledger.clock):
            _, outcome, _ = body()
        return outcome
    params = {"files": dict(digests)}
    return ledger.unit_of_work.run("import-seed", params, SEED_ACTOR, idempotency_key, body)


def _report(
    workspace: SeedWorkspace,
    digests: Mapping[str, str | None],
    recording: SeedRecording,
    dry_run: bool,
) -> dict[str, Any]:
    for path, digest in digests.items():
        if digest is None:
            recording.gaps.add("file", path, "", "missing; skipped")
    training = recording.content.training
    id_map: dict[str, str] = {}
    if training is not None:
        id_map.update(id_mappings("run", (r.trainRunId for r in training.runs)))
        id_map.update(id_mappings("checkpoint", (c.checkpointId for c in training.checkpoints)))
    rollout = recording.content.rollout
    id_map.update(id_mappings("observation", (o.observationId for o in rollout.observations)))
    id_map.update(id_mappings("checkpoint", (r.checkpoint for r in rollout.references())))
    return {
        "workspace": workspace.location,
        "dryRun": dry_run,
        "nothingNew": False,
        "files": workspace.files_document(digests),
        "recorded": recording.tally.recorded,
        "alreadyPresent": recording.tally.present,
        "gaps": recording.gaps.documents(),
        "idMap": id_map,
        "importedAt": iso(recording.now),
        "events": len(recording.events),
    }
