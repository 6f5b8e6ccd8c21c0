"""Export and import of the whole log: how a ledger moves between stores.

The export is JSONL, one stored event per line in log order. Each line is what
`history` and `events` print for the event (`event_document`), plus what is
needed to restore it exactly:

- `eventHash`: the event's own chain hash (the next event of its aggregate
  carries it as `previousHash`);
- `topic`: the stored event type, and `originatorTopic` on an aggregate's
  first event (its aggregate type);
- `storedState`: only for an event written by an older version of its class
  (and upcast when read): the state exactly as stored, which its hash covers;
- `reservations`: the unique keys the ledger holds: the idempotency record
  of a key on the first event carrying that key (a key whose command never
  finished, such as a `train` stopped after marking its run running, has
  none and stays free), an evalId on its `EvalAttached` event. `value` is
  the stored value as text (`valueBase64` if it is not UTF-8).

`import` reads the whole file and checks everything before writing anything:
JSON and field shapes, positions strictly increasing, each aggregate's
versions 1, 2, 3, ... with a first event that opens it, every event
reconstructs to exactly the document in the file, its recomputed hash equals
`eventHash` and its `previousHash` equals its predecessor's hash, every
evalId has its reservation, and every event replays by the rules (`domain.replay`).
Then it writes all events and reservations in one transaction into a store
that must be empty. Events keep their ids, versions, timestamps, actors and
hashes; positions are renumbered from 1 in the same order when the source
had gaps (PostgreSQL sequences skip numbers after failed appends).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import orjson
import pydantic
from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, Mapper, StoredEvent

from trainledger.domain.catalogue import stored_classes
from trainledger.domain.chain import AggregateChains, ChainBreak, stored_state
from trainledger.domain.errors import (
    ExportRefusedError,
    ImportRefusedError,
    LedgerError,
    StoreNotEmptyError,
)
from trainledger.domain.experiment import describe_validation_error
from trainledger.domain.model import LedgerAggregate
from trainledger.domain.replay import check_replay
from trainledger.domain.views import event_document
from trainledger.service.ports import (
    EVAL_ID,
    IDEMPOTENCY,
    LedgerRecorder,
    Reservation,
    state_codec,
)
from trainledger.service.reservation_check import (
    anchor_imported_seals,
    check_imported_meanings,
    check_imported_reservation,
)

PAGE = 1000
HASH_PATTERN = "^[0-9a-f]{64}$"
RESERVATION_KINDS = (IDEMPOTENCY, EVAL_ID)
DOCUMENT_KEYS = (
    "position",
    "aggregateId",
    "aggregateType",
    "version",
    "type",
    "timestamp",
    "actor",
    "idempotencyKey",
    "previousHash",
    "payload",
)


def _reservation_store(recorder: ApplicationRecorder) -> LedgerRecorder:
    if not isinstance(recorder, LedgerRecorder):
        raise ExportRefusedError(f"{type(recorder).__name__} cannot list its reservations")
    return recorder


def event_classes() -> dict[str, type[LedgerAggregate.Event]]:
    """Every event type of every aggregate, by stored topic.

    Import resolves types from this table only, never from a topic in the
    file, so a crafted file cannot make the ledger import arbitrary code.
    """
    return {
        topic: cls
        for topic, cls in stored_classes().items()
        if issubclass(cls, LedgerAggregate.Event)
        and cls not in (LedgerAggregate.Event, LedgerAggregate.Created)
    }


# --- export ------------------------------------------------------------------


def export_log(app: Application[UUID]) -> Iterator[dict[str, Any]]:
    """Every event of the log in order, as export lines (see the module doc).

    The log is read up to its position when the export starts; events
    appended meanwhile are left for the next export.
    """
    recorder = app.recorder
    stop = recorder.max_notification_id() or 0
    # Reservations are read after `stop` is fixed: those of events up to it
    # were committed with them. Later ones simply find no event here.
    reservations = _reservation_store(recorder).reservations()
    unknown = sorted({r.kind for r in reservations} - set(RESERVATION_KINDS))
    if unknown:
        raise ExportRefusedError(f"reservations of kind {', '.join(unknown)} cannot be exported")
    # Seals read after the reservations cover every one of them; a seal past
    # `stop` is of a later append, whose reservation is left for the next export.
    sealed_at = {(s.kind, s.key): s.position for s in _reservation_store(recorder).seals()}
    if sealed_at:
        reservations = [r for r in reservations if sealed_at.get((r.kind, r.key), 0) <= stop]
    idempotency = {r.key: r for r in reservations if r.kind == IDEMPOTENCY}
    evals = {r.key: r for r in reservations if r.kind == EVAL_ID}
    keys_seen: set[str] = set()
    codec = state_codec(app.mapper)
    after = 0
    while after < stop:
        page = recorder.select_notifications(
            start=after, limit=PAGE, stop=stop, inclusive_of_start=False
        )
        if not page:
            break
        for notification in page:
            event: Any = app.mapper.to_domain_event(notification)
            line = event_document(event, notification.id)
            line["eventHash"] = event.event_hash
            line["topic"] = notification.topic
            if isinstance(event, LedgerAggregate.Created):
                line["originatorTopic"] = event.originator_topic
            stored = codec.decode_state(notification.state)
            if stored != codec.decode_state(app.mapper.to_stored_event(event).state):
                line["storedState"] = stored
            anchored: list[Reservation] = []
            key = event.idempotency_key
            if key is not None and key not in keys_seen:
                keys_seen.add(key)
                # No record: the command never finished (a `train` stopped
                # after marking its run running); its key is still free.
                if key in idempotency:
                    anchored.append(idempotency[key])
            eval_id = _attached_eval_id(event)
            if eval_id is not None:
                if eval_id not in evals:
                    raise ExportRefusedError(
                        f"position {notification.id}: evalId {eval_id!r} has no reservation"
                    )
                anchored.append(evals[eval_id])
            if anchored:
                line["reservations"] = [
                    _reservation_line(r, sealed_at.get((r.kind, r.key))) for r in anchored
                ]
            yield line
        after = page[-1].id


def _attached_eval_id(event: Any) -> str | None:
    if type(event).__name__ != "EvalAttached":
        return None
    eval_id: str = event.eval.evalId
    return eval_id


def _reservation_line(reservation: Reservation, sealed_at: int | None) -> dict[str, Any]:
    line: dict[str, Any] = {"kind": reservation.kind, "key": reservation.key}
    try:
        line["value"] = reservation.value.decode("utf-8")
    except UnicodeDecodeError:
        line["valueBase64"] = base64.b64encode(reservation.value).decode("ascii")
    if sealed_at is not None:
        # Where its seal is anchored (a store that seals), so import seals it there.
        line["sealedAt"] = sealed_at
    return line


# --- import ------------------------------------------------------------------


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


class ReservationLine(_Strict):
    kind: str
    key: str = pydantic.Field(min_length=1)
    value: str | None = None
    valueBase64: str | None = None  # noqa: N815 (the export's camelCase)
    sealedAt: int | None = pydantic.Field(default=None, ge=0)  # noqa: N815

    def to_reservation(self) -> Reservation:
        if (self.value is None) == (self.valueBase64 is None):
            raise ValueError("give exactly one of value and valueBase64")
        if self.value is not None:
            return Reservation(self.kind, self.key, self.value.encode("utf-8"))
        assert self.valueBase64 is not None
        try:
            return Reservation(
                self.kind, self.key, base64.b64decode(self.valueBase64, validate=True)
            )
        except binascii.Error:
            raise ValueError("valueBase64 is not base64") from None


class ExportLine(_Strict):
    """One line of an export file, as written by `export_log`."""

    position: int = pydantic.Field(ge=1)
    aggregateId: str  # noqa: N815
    aggregateType: str  # noqa: N815
    version: int = pydantic.Field(ge=1)
    type: str
    timestamp: str
    actor: str
    idempotencyKey: str | None  # noqa: N815
    previousHash: str = pydantic.Field(pattern=HASH_PATTERN)  # noqa: N815
    payload: dict[str, Any]
    eventHash: str = pydantic.Field(pattern=HASH_PATTERN)  # noqa: N815
    topic: str
    originatorTopic: str | None = None  # noqa: N815
    storedState: dict[str, Any] | None = None  # noqa: N815
    reservations: list[ReservationLine] = []


@dataclass
class ImportPlan:
    """A whole export file, checked, ready to be written in one transaction."""

    events: list[Any] = field(default_factory=list)
    stored_events: list[StoredEvent] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    sealed: bool = False
    """The source sealed its reservations: import seals them where it did."""
    aggregates: dict[str, list[Any]] = field(default_factory=dict)
    """Each aggregate's events, in order."""
    chains: AggregateChains = field(default_factory=AggregateChains)
    line_numbers: list[int] = field(default_factory=list)  # the file's line of each event


def read_export(lines: Iterable[str | bytes], mapper: Mapper[UUID]) -> ImportPlan:
    """Check an export file completely; raise `ImportRefusedError` naming the first fault.

    `mapper` is the target store's: it turns each event into what is written.
    """
    classes = event_classes()
    plan = ImportPlan()
    states: list[tuple[str, str, Any]] = []  # each event's aggregate, topic and stored state
    keys: dict[tuple[str, str], int] = {}
    idempotency_keys: dict[str, int] = {}
    eval_events: dict[str, int] = {}
    last_position = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ImportRefusedError(f"{where}: not valid JSON ({error})") from None
        try:
            line = ExportLine.model_validate(document)
        except pydantic.ValidationError as error:
            raise ImportRefusedError(
                f"{where}: not an export line: {describe_validation_error(error)}"
            ) from None
        if line.position <= last_position:
            raise ImportRefusedError(
                f"{where}: position {line.position} does not follow position {last_position} "
                "(lines out of order or repeated)"
            )
        last_position = line.position
        event, stored, state = _rebuild_event(line, classes, mapper, where)
        _chain(plan, event, state, line, where)
        states.append((line.aggregateId, line.topic, state))
        for reservation_line in line.reservations:
            try:
                reservation = reservation_line.to_reservation()
            except ValueError as error:
                raise ImportRefusedError(f"{where}: reservation: {error}") from None
            if (reservation.kind, reservation.key) in keys:
                raise ImportRefusedError(
                    f"{where}: {reservation.kind} {reservation.key!r} is reserved twice "
                    f"(also on line {keys[(reservation.kind, reservation.key)]})"
                )
            keys[(reservation.kind, reservation.key)] = number
            first_of_key = event.idempotency_key not in idempotency_keys
            check_imported_reservation(
                reservation, event, _attached_eval_id(event), first_of_key, where
            )
            sealed_at = reservation_line.sealedAt
            if sealed_at is not None and sealed_at < line.position:
                raise ImportRefusedError(
                    f"{where}: {reservation.kind} {reservation.key!r} is sealed at position "
                    f"{sealed_at}, before the event it is about"
                )
            if plan.reservations and (sealed_at is not None) != plan.sealed:
                raise ImportRefusedError(
                    f"{where}: {reservation.kind} {reservation.key!r}: some reservations "
                    "are sealed and others not (a store seals all or none)"
                )
            plan.sealed = sealed_at is not None
            plan.reservations.append(replace(reservation, anchor=sealed_at))
        key = event.idempotency_key
        if key is not None and key not in idempotency_keys:
            idempotency_keys[key] = number
        eval_id = _attached_eval_id(event)
        if eval_id is not None:
            eval_events[eval_id] = number
            if (EVAL_ID, eval_id) not in keys:
                raise ImportRefusedError(f"{where}: evalId {eval_id!r} has no reservation")
        plan.events.append(event)
        plan.stored_events.append(stored)
        plan.positions.append(line.position)
        plan.line_numbers.append(number)
    plan.reservations = anchor_imported_seals(plan.reservations, plan.positions)
    # Rules last: a line out of order is reported as that, not as a broken rule.
    _replay(plan)
    check_imported_meanings(plan.positions, states, plan.reservations)
    return plan


def _rebuild_event(
    line: ExportLine, classes: dict[str, type[Any]], mapper: Mapper[UUID], where: str
) -> tuple[Any, StoredEvent, dict[str, Any]]:
    """The event a line describes, the stored event to write for it, and its state as stored."""
    event_class = classes.get(line.topic)
    if event_class is None:
        raise ImportRefusedError(f"{where}: unknown event topic {line.topic!r}")
    is_created = issubclass(event_class, LedgerAggregate.Created)
    if is_created != (line.originatorTopic is not None):
        raise ImportRefusedError(
            f"{where}: originatorTopic must be given on an aggregate's first event only"
        )
    if line.storedState is not None:
        return _rebuild_stored(line, mapper, where)
    state: dict[str, Any] = {
        **line.payload,
        "originator_id": line.aggregateId,
        "originator_version": line.version,
        "timestamp": line.timestamp,
        "actor": line.actor,
        "idempotency_key": line.idempotencyKey,
        "previous_hash": line.previousHash,
        "event_hash": line.eventHash,
    }
    if is_created:
        state["originator_topic"] = line.originatorTopic
    try:
        event = event_class.model_validate(state)
    except pydantic.ValidationError as error:
        raise ImportRefusedError(
            f"{where}: not a valid {line.aggregateType}.{line.type} event: "
            f"{describe_validation_error(error)}"
        ) from None
    _check_faithful(event, line, where)
    return event, mapper.to_stored_event(event), stored_state(event)


def _rebuild_stored(
    line: ExportLine, mapper: Mapper[UUID], where: str
) -> tuple[Any, StoredEvent, dict[str, Any]]:
    """An event of an older class version: written back exactly as it was stored."""
    assert line.storedState is not None
    try:
        stored = StoredEvent(
            originator_id=UUID(line.aggregateId),
            originator_version=line.version,
            topic=line.topic,
            state=state_codec(mapper).encode_state(line.storedState),
        )
        # Input, not read back from this store: validated as a new event's fields are.
        event = state_codec(mapper).read_event(stored, read_back=False)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ImportRefusedError(
            f"{where}: storedState is not a readable {line.topic} event ({error})"
        ) from None
    _check_faithful(event, line, where)
    return event, stored, line.storedState


def _check_faithful(event: Any, line: ExportLine, where: str) -> None:
    """The event says exactly what the line says (its hash is checked with its chain)."""
    # Nothing dropped, defaulted or coerced on the way in.
    rebuilt = {**event_document(event, line.position), "eventHash": event.event_hash}
    given = line.model_dump(include={*DOCUMENT_KEYS, "eventHash"})
    differing = [k for k in given if rebuilt[k] != given[k]]
    if differing:
        raise ImportRefusedError(
            f"{where}: {', '.join(differing)} do not match the {line.topic} event they describe"
        )


def _chain(
    plan: ImportPlan, event: Any, state: dict[str, Any], line: ExportLine, where: str
) -> None:
    """The event extends its aggregate's chain, by the rule `verify` applies to a store."""
    aggregate_id = str(event.originator_id)
    broken = plan.chains.check(aggregate_id, line.version, line.topic, state)
    if broken is not None:
        raise ImportRefusedError(
            f"{where}: {_chain_broken(plan.chains, broken, aggregate_id, line)}"
        )
    plan.aggregates.setdefault(aggregate_id, []).append(event)


def _chain_broken(
    chains: AggregateChains, broken: ChainBreak, aggregate_id: str, line: ExportLine
) -> str:
    """What is wrong with a line whose event does not extend its aggregate's chain."""
    known = chains.version(aggregate_id)
    event = f"aggregate {aggregate_id} version {line.version}"
    if known == 0 and broken in (ChainBreak.OUT_OF_SEQUENCE, ChainBreak.NO_CHAIN_FIELDS):
        # No originatorTopic: the line is not an aggregate's first event.
        return (
            f"aggregate {aggregate_id} starts at version {line.version}; "
            "its first event is missing or out of order"
        )
    if broken is ChainBreak.OUT_OF_SEQUENCE:
        return f"{event} follows version {known} (events missing, repeated or out of order)"
    if known == 0 and broken in (ChainBreak.NOT_A_TOPIC, ChainBreak.FOREIGN_TYPE):
        return f"originatorTopic {line.originatorTopic!r} does not own {line.topic!r}"
    if broken is ChainBreak.FOREIGN_TYPE:
        aggregate_topic = chains.aggregate_topic(aggregate_id)
        return f"event type {line.topic} does not belong to aggregate type {aggregate_topic}"
    if broken is ChainBreak.MODIFIED:
        return f"{event}: content does not match its eventHash (modified)"
    if broken is ChainBreak.UNLINKED:
        return f"{event}: hash chain broken (previousHash is not the hash of its predecessor)"
    return f"{event}: {broken.value}"


def _replay(plan: ImportPlan) -> None:
    """Apply every event in log order, each once the rules say it may follow what came before."""
    replayed: dict[UUID, Any] = {}
    for number, event in zip(plan.line_numbers, plan.events, strict=True):
        aggregate_id = event.originator_id
        try:
            check_replay(replayed, event)
            replayed[aggregate_id] = event.mutate(replayed.get(aggregate_id))
        except LedgerError as error:
            raise ImportRefusedError(f"line {number}: {error.message}") from None
        except Exception as error:
            raise ImportRefusedError(
                f"line {number}: aggregate {aggregate_id} does not replay: "
                f"{type(error).__name__}: {error}"
            ) from None


def import_log(app: Application[UUID], lines: Iterable[str | bytes]) -> dict[str, Any]:
    """Restore an export into this empty store: all or nothing."""
    plan = read_export(lines, app.mapper)
    recorder = app.recorder
    if recorder.max_notification_id() or _reservation_store(recorder).reservations():
        raise StoreNotEmptyError("the store is not empty; import restores only into an empty store")
    if not plan.events:
        return _summary(plan, [])
    try:
        positions = recorder.insert_events(
            plan.stored_events, reservations=plan.reservations, seal=plan.sealed
        )
    except IntegrityError:
        raise StoreNotEmptyError(
            "the store received events while importing; nothing was imported"
        ) from None
    return _summary(plan, list(positions or []))


def _summary(plan: ImportPlan, new_positions: list[int]) -> dict[str, Any]:
    return {
        "imported": len(plan.events),
        "aggregates": len(plan.aggregates),
        "reservations": len(plan.reservations),
        "firstPosition": new_positions[0] if new_positions else None,
        "lastPosition": new_positions[-1] if new_positions else None,
        "positionsRenumbered": new_positions != plan.positions,
    }
