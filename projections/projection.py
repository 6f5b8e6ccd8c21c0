"""The ledger projection: events in, facts out (see `projections.facts`).

`LedgerProjection` is the library's `Projection` over a `LedgerView`. Its
`process_event` takes one domain event, as the library's projection runner
delivers them; the catch-up loop (`projections.read_model`) instead has whole
pages of stored events translated (`projections.log`), read as JSON without
building domain objects (validating every stored event with pydantic would
cost more than everything else a rebuild does). Both paths go through the
same translation, `record_facts`, keyed by the event's topic. A stored event
of an older `class_version` is first upcast by the application's mapper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.chain import stored_state
from domain.errors import CorruptStoreError
from projections.facts import (
    CheckpointRecord,
    CompletionFact,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    FailureFact,
    LinkFact,
    PageFacts,
    RunRecord,
    StartFact,
    timestamp_micros,
)
from projections.view import LedgerView

if TYPE_CHECKING:
    from pydantic import BaseModel


class EventRecord(NamedTuple):
    """A stored event as the projection reads it: its envelope and JSON state.

    Ids are kept as 32 hex digits, as the views store them.
    """

    position: int
    aggregate_id: str
    version: int
    topic: str
    state: dict[str, Any]


def _hex(uuid_text: str) -> str:
    return uuid_text.replace("-", "")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _json(value)


# The translations below make their facts with `_new(Kind, (values...))`, which
# is `tuple.__new__`: the NamedTuple without the Python-level call of its own
# `__new__` (a rebuild makes a fact or two per event).
_new = tuple.__new__


def _run_registered(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    spec = state["spec"]
    page.run(
        _new(
            RunRecord,
            (
                event.aggregate_id,
                spec["experimentId"],
                spec["targetModelFamily"],
                spec["datasetFingerprint"],
                _json(spec),
                state.get("sampleCount"),
                timestamp_micros(state["timestamp"]),
                event.position,
                *_RUN_UNSET,
            ),
        )
    )


def _run_started(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.start(
        _new(
            StartFact,
            (
                timestamp_micros(state["timestamp"]),
                state.get("host"),
                state.get("pid"),
                state.get("trainerLogPath"),
                event.aggregate_id,
            ),
        )
    )


def _run_completed(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.completion(
        _new(
            CompletionFact,
            (
                timestamp_micros(state["timestamp"]),
                state.get("resultDigest"),
                _json_or_none(state.get("trainerResult")),
                event.aggregate_id,
            ),
        )
    )


def _run_failed(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.failure(
        _new(
            FailureFact,
            (
                timestamp_micros(state["timestamp"]),
                state["reason"],
                state.get("resultDigest"),
                _json_or_none(state.get("trainerResult")),
                event.aggregate_id,
            ),
        )
    )


def _checkpoint_linked(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.batch.links.append(
        _new(
            LinkFact,
            (
                event.aggregate_id,
                event.version,
                _hex(state["checkpointId"]),
                timestamp_micros(state["timestamp"]),
            ),
        )
    )


def _checkpoint_registered(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.checkpoint(
        _new(
            CheckpointRecord,
            (
                event.aggregate_id,
                _hex(state["trainRunId"]),
                state["family"],
                state["artifactPath"],
                state.get("artifactDigest"),
                state.get("checkpointRef"),
                _json(state.get("metrics") or {}),
                timestamp_micros(state["timestamp"]),
                event.position,
                *_CHECKPOINT_UNSET,
            ),
        )
    )


def _eval_attached(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    summary = state["eval"]
    page.batch.evals.append(
        _new(
            EvalFact,
            (
                summary["evalId"],
                event.aggregate_id,
                event.version,
                summary["benchmarkId"],
                summary["targetModelFamily"],
                summary["verdict"],
                _json(summary),
                timestamp_micros(state["timestamp"]),
                state["actor"],
                event.position,
            ),
        )
    )


def _marked_deployable(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.deployability(
        _new(
            DeployabilityFact,
            (
                event.aggregate_id,
                event.version,
                1,
                timestamp_micros(state["timestamp"]),
                state["actor"],
                state["evalId"],
                None,
            ),
        )
    )


def _deployability_revoked(event: EventRecord, page: PageFacts) -> None:
    state = event.state
    page.deployability(
        _new(
            DeployabilityFact,
            (
                event.aggregate_id,
                event.version,
                0,
                timestamp_micros(state["timestamp"]),
                state["actor"],
                state.get("evalId"),
                state["reason"],
            ),
        )
    )


# The defaults of the columns a registration leaves for later facts.
_RUN_UNSET = tuple(RunRecord._field_defaults.values())
_CHECKPOINT_UNSET = tuple(CheckpointRecord._field_defaults.values())
assert len(RunRecord._fields) == 8 + len(_RUN_UNSET)
assert len(CheckpointRecord._fields) == 9 + len(_CHECKPOINT_UNSET)


Translation = Callable[[EventRecord, PageFacts], None]

# Keyed by the topics as stored (`get_topic` of the event classes of `domain.model`,
# which a test checks), so that reading the log needs no event model (start-up time).
TRANSLATIONS: dict[str, Translation] = {
    "domain.model:TrainingRun.Registered": _run_registered,
    "domain.model:TrainingRun.Started": _run_started,
    "domain.model:TrainingRun.Completed": _run_completed,
    "domain.model:TrainingRun.Failed": _run_failed,
    "domain.model:TrainingRun.CheckpointLinked": _checkpoint_linked,
    "domain.model:Checkpoint.Registered": _checkpoint_registered,
    "domain.model:Checkpoint.EvalAttached": _eval_attached,
    "domain.model:Checkpoint.MarkedDeployable": _marked_deployable,
    "domain.model:Checkpoint.DeployabilityRevoked": _deployability_revoked,
}

# The `class_version` of the state each translation reads, which is the event
# class's own (a test checks): an event stored at an older version is upcast by
# the mapper first (`projections.log`), and a newer event needs no event model.
READ_VERSIONS: dict[str, int] = dict.fromkeys(TRANSLATIONS, 1)


def record_facts(events: Iterable[EventRecord]) -> FactBatch:
    """The facts a page of events records (events of unknown topics record none)."""
    page = PageFacts()
    translate_into(page, events)
    return page.finished()


def translate_into(page: PageFacts, events: Iterable[EventRecord]) -> None:
    """Add the facts these events record to `page` (a page may be fed several times)."""
    translations = TRANSLATIONS
    for event in events:
        translate = translations.get(event.topic)
        if translate is None:
            continue
        try:
            translate(event, page)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise unreadable(event.position, error) from None


def unreadable(position: int, error: Exception) -> CorruptStoreError:
    return CorruptStoreError(
        f"the stored event at position {position} cannot be read "
        f"({type(error).__name__}: {error}); run `trainledger verify`"
    )


def record_of_event(event: DomainEventProtocol[Any], position: int) -> EventRecord:
    """A domain event in the shape it is stored in (what the mapper writes)."""
    state = stored_state(cast("BaseModel", event))
    return EventRecord(
        position, event.originator_id.hex, event.originator_version, get_topic(type(event)), state
    )


class LedgerProjection(Projection[LedgerView]):
    """Runs, checkpoints, evals and deployability, as timestamped facts."""

    name = "ledger"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply one event (the library's projection-runner entry point)."""
        previous = self.view.position(tracking.application_name)
        if previous >= tracking.notification_id:
            return
        self.process_records([record_of_event(domain_event, tracking.notification_id)], tracking)

    def process_records(self, records: Sequence[EventRecord], tracking: Tracking) -> None:
        """Apply a page of events that follows the view's current position."""
        previous = self.view.position(tracking.application_name)
        self.apply_page(records, tracking, previous)

    def apply_page(self, records: Sequence[EventRecord], tracking: Tracking, previous: int) -> None:
        """Apply a page of events in one transaction, if the view is still at `previous`."""
        self.view.apply(record_facts(records), tracking, previous)
