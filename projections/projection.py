"""The ledger projection: events in, facts out (see `projections.facts`).

`LedgerProjection` is the library's `Projection` over a `LedgerView`. Its
`process_event` takes one domain event, as the library's projection runner
delivers them; the catch-up loop (`projections.read_model`) instead has whole
pages of stored events translated (`projections.log`). Both paths go through
the same translations, `record_facts`, one per stored topic (`TRANSLATIONS`).
A stored event of an older `class_version` is first upcast by the
application's mapper.

Why the projection reads stored events with structs of its own rather than
with the event models of `domain.model`: the models are the schema, and
they validate an event once, when it is recorded (its hash then seals it;
`verify` checks it). Reading the log back, the projection only needs a few
fields of each stored state, and decodes just those from the JSON with
msgspec, validating nothing: validating every stored event with pydantic
would cost more than everything else a rebuild does, and importing pydantic
and the models would cost every CLI query its start-up time (a query must
not import them; `tests/e2e/test_cli_startup.py`). So the structs below name
stored fields of the models, and `TRANSLATIONS` is keyed by the stored topics
(data: each event class's `TOPIC`); tests hold both to the models
(`tests/unit/test_projection_log.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec
import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from trainledger.domain.chain import stored_state
from trainledger.domain.errors import CorruptStoreError
from trainledger.projections.deployment_translations import DEPLOYMENT_TRANSLATIONS
from trainledger.projections.facts import (
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
from trainledger.projections.translation import (
    EventRecord,
    StoredState,
    Translation,
    hex_id,
    json_or_none,
    json_text,
    raw_text,
    stored_class_version,
)
from trainledger.projections.view import LedgerView

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["EventRecord", "StoredState", "Translation", "stored_class_version"]


class RunRegisteredState(StoredState):
    spec: msgspec.Raw
    sample_count: Any = None


class SpecState(msgspec.Struct, gc=False, rename="camel"):
    """What the run's view row takes from the spec (`run_spec` reads it whole, from the log)."""

    experiment_id: Any
    target_model_family: Any
    dataset_fingerprint: Any


class RunStartedState(StoredState):
    host: Any = None
    pid: Any = None
    trainer_log_path: Any = None


class RunCompletedState(StoredState):
    result_digest: Any = None
    trainer_result: Any = None


class RunFailedState(StoredState):
    reason: Any
    result_digest: Any = None
    trainer_result: Any = None


class CheckpointLinkedState(StoredState):
    checkpoint_id: str


class CheckpointRegisteredState(StoredState):
    train_run_id: str
    family: Any
    artifact_path: Any
    artifact_digest: Any = None
    checkpoint_ref: Any = None
    metrics: Any = None


class EvalAttachedState(StoredState):
    actor: Any
    eval: msgspec.Raw


class EvalSummaryState(msgspec.Struct, gc=False, rename="camel"):
    """What the eval's view row takes apart from its summary (kept whole, as stored)."""

    eval_id: Any
    benchmark_id: Any
    target_model_family: Any
    verdict: Any


class MarkedDeployableState(StoredState):
    actor: Any
    eval_id: Any


class DeployabilityRevokedState(StoredState):
    actor: Any
    reason: Any
    eval_id: Any = None


# The values inside a state that a translation reads in turn.
_spec_state = msgspec.json.Decoder(SpecState).decode
_eval_summary_state = msgspec.json.Decoder(EvalSummaryState).decode


def _run_registered(event: EventRecord, state: RunRegisteredState, page: PageFacts) -> None:
    spec = _spec_state(state.spec)
    page.run(
        RunRecord(
            event.aggregate_id,
            spec.experiment_id,
            spec.target_model_family,
            spec.dataset_fingerprint,
            state.sample_count,
            timestamp_micros(state.timestamp),
            event.position,
        )
    )


def _run_started(event: EventRecord, state: RunStartedState, page: PageFacts) -> None:
    page.start(
        StartFact(
            timestamp_micros(state.timestamp),
            state.host,
            state.pid,
            state.trainer_log_path,
            event.aggregate_id,
        )
    )


def _run_completed(event: EventRecord, state: RunCompletedState, page: PageFacts) -> None:
    page.completion(
        CompletionFact(
            timestamp_micros(state.timestamp),
            state.result_digest,
            json_or_none(state.trainer_result),
            event.aggregate_id,
        )
    )


def _run_failed(event: EventRecord, state: RunFailedState, page: PageFacts) -> None:
    page.failure(
        FailureFact(
            timestamp_micros(state.timestamp),
            state.reason,
            state.result_digest,
            json_or_none(state.trainer_result),
            event.aggregate_id,
        )
    )


def _checkpoint_linked(event: EventRecord, state: CheckpointLinkedState, page: PageFacts) -> None:
    page.batch.links.append(
        LinkFact(
            event.aggregate_id,
            event.version,
            hex_id(state.checkpoint_id),
            timestamp_micros(state.timestamp),
        )
    )


def _checkpoint_registered(
    event: EventRecord, state: CheckpointRegisteredState, page: PageFacts
) -> None:
    page.checkpoint(
        CheckpointRecord(
            event.aggregate_id,
            hex_id(state.train_run_id),
            state.family,
            state.artifact_path,
            state.artifact_digest,
            state.checkpoint_ref,
            json_text(state.metrics or {}),
            timestamp_micros(state.timestamp),
            event.position,
        )
    )


def _eval_attached(event: EventRecord, state: EvalAttachedState, page: PageFacts) -> None:
    summary = _eval_summary_state(state.eval)
    page.batch.evals.append(
        EvalFact(
            summary.eval_id,
            event.aggregate_id,
            event.version,
            summary.benchmark_id,
            summary.target_model_family,
            summary.verdict,
            raw_text(state.eval),
            timestamp_micros(state.timestamp),
            state.actor,
            event.position,
        )
    )


def _marked_deployable(event: EventRecord, state: MarkedDeployableState, page: PageFacts) -> None:
    page.deployability(_deployability_change(event, state, 1, None))


def _deployability_revoked(
    event: EventRecord, state: DeployabilityRevokedState, page: PageFacts
) -> None:
    page.deployability(_deployability_change(event, state, 0, state.reason))


def _deployability_change(
    event: EventRecord,
    state: MarkedDeployableState | DeployabilityRevokedState,
    deployable: int,
    reason: str | None,
) -> DeployabilityFact:
    return DeployabilityFact(
        event.aggregate_id,
        event.version,
        deployable,
        timestamp_micros(state.timestamp),
        state.actor,
        state.eval_id,
        reason,
    )


RUN_REGISTERED = "domain.model:TrainingRun.Registered"
RUN_IMPORTED = "domain.model:TrainingRun.ImportedFromSeed"
RUN_OPENINGS = (RUN_REGISTERED, RUN_IMPORTED)
"""The first events of a run: both hold its spec (a seed run's, what the seed kept of it)."""

TRANSLATIONS: dict[str, Translation[Any]] = {
    RUN_REGISTERED: Translation(RunRegisteredState, _run_registered),
    RUN_IMPORTED: Translation(RunRegisteredState, _run_registered),
    "domain.model:TrainingRun.Started": Translation(RunStartedState, _run_started),
    "domain.model:TrainingRun.Completed": Translation(RunCompletedState, _run_completed),
    "domain.model:TrainingRun.Failed": Translation(RunFailedState, _run_failed),
    "domain.model:TrainingRun.CheckpointLinked": Translation(
        CheckpointLinkedState, _checkpoint_linked
    ),
    "domain.model:Checkpoint.Registered": Translation(
        CheckpointRegisteredState, _checkpoint_registered
    ),
    "domain.model:Checkpoint.EvalAttached": Translation(EvalAttachedState, _eval_attached),
    "domain.model:Checkpoint.MarkedDeployable": Translation(
        MarkedDeployableState, _marked_deployable
    ),
    "domain.model:Checkpoint.DeployabilityRevoked": Translation(
        DeployabilityRevokedState, _deployability_revoked
    ),
    **DEPLOYMENT_TRANSLATIONS,
}
"""Every event the projection reads, by its topic as stored (each event class's
`TOPIC`: a test checks the table against `domain.model`, the topics, read
versions and field names)."""

READ_VERSIONS: dict[str, int] = {
    topic: translation.read_version for topic, translation in TRANSLATIONS.items()
}
"""The `class_version` each topic's translation reads (`Translation.read_version`)."""


def record_facts(events: Iterable[EventRecord]) -> FactBatch:
    """The facts a page of events records (events of unknown topics record none)."""
    page = PageFacts()
    translate_into(page, events)
    return page.finished()


def translate_into(page: PageFacts, events: Iterable[EventRecord]) -> None:
    """Add the facts these events record to `page` (a page may be fed several times)."""
    translations = TRANSLATIONS
    for event in events:
        translation = translations.get(event.topic)
        if translation is None:
            continue
        try:
            translation.facts(event, translation.decode(event.state), page)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise unreadable(event.position, error) from None


def unreadable(position: int, error: Exception) -> CorruptStoreError:
    return CorruptStoreError(
        f"the stored event at position {position} cannot be read "
        f"({type(error).__name__}: {error}); run `trainledger verify`"
    )


def run_spec(registration: EventRecord) -> dict[str, Any]:
    """A run's spec, from its first event (`RUN_OPENINGS`; the views do not keep it)."""
    try:
        state = TRANSLATIONS[registration.topic].decode(registration.state)
        spec: dict[str, Any] = orjson.loads(memoryview(state.spec))
    except ValueError as error:
        raise unreadable(registration.position, error) from None
    return spec


def record_of_event(event: DomainEventProtocol[Any], position: int) -> EventRecord:
    """A domain event in the shape it is stored in (the JSON the mapper writes)."""
    state = orjson.dumps(stored_state(cast("BaseModel", event)))
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
