"""The unit of work: load, decide, append once; retry on a conflict; answer repeats.

A command is a `body`: it loads the aggregates it needs (`get_run`,
`get_checkpoint`), calls their command methods and returns the aggregates
it touched, its outcome document and the reservations it takes (a globally
unique evalId). `UnitOfWork.run` saves all of it in one append (one
transaction), with the idempotency record of the command's key when given.

A concurrent append to the same aggregate, or of the same reservation,
surfaces as the library's `IntegrityError`: the body is run again on fresh
state, after a short random back-off, and the command is refused with
`ConflictError` once the attempts run out. A command repeated with its
idempotency key returns the outcome recorded the first time and records
nothing (a different command under the same key is refused).

A long-lived process mostly commands what it has just written (a run is
created, started, given a checkpoint and completed in turn), so the unit of
work keeps the aggregates it saved (`WarmCopies`) and a command's first
attempt decides on those copies instead of loading them again. A copy may be
stale (another writer may have appended since), so such a decision counts
only when the store confirms it, exactly as strongly as a fresh load would:
an aggregate it changes is checked by the append itself (its next version is
unique), and so is one it only read: the append is refused if that one has
a newer event (`service.ports.UNCHANGED`, checked in the append's own
transaction; a decision that appends nothing checks before it answers). A
refusal, a failed check or a conflict sends the command back to decide on
fresh state at once.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError, OperationalError

from trainledger.domain.chain import canonical_json
from trainledger.domain.errors import (
    CheckpointNotFoundError,
    ConflictError,
    CorruptStoreError,
    IdempotencyKeyReusedError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
)
from trainledger.domain.text import refuse_control_characters
from trainledger.service.arguments import require
from trainledger.service.ports import IDEMPOTENCY, CanonicalWriter, LedgerRecorder, Reservation

# The aggregates are loaded by the commands that use them: queries answer from
# the projections, and loading the pydantic models would be most of a query's
# start-up time in the CLI.
if TYPE_CHECKING:
    from eventsourcing.persistence import Recording

    from trainledger.domain.aggregate import Clock
    from trainledger.domain.model import Checkpoint, LedgerAggregate, TrainingRun

A = TypeVar("A", bound="LedgerAggregate")

Outcome = dict[str, Any]

Body = Callable[
    [], tuple[Sequence["LedgerAggregate | LedgerAggregate.Event"], Outcome, list[Reservation]]
]
"""A command's decision: the aggregates it touched (or their new events, in the order
they are to be appended), its outcome, its reservations."""


def request_digest(command: str, params: dict[str, Any]) -> str:
    """What an idempotency record remembers of the command it answered."""
    return hashlib.sha256(
        json.dumps([command, params], sort_keys=True, default=str).encode()
    ).hexdigest()


def parse_id(value: str | UUID, not_found: Callable[[object], NotFoundError]) -> UUID:
    """An id as the user typed it; one that is not a UUID is simply not found."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(require(value, str, "an id").strip())
    except ValueError:
        raise not_found(value) from None


def lock_timed_out(error: OperationalError) -> bool:
    """Whether the store gave up waiting for its write lock (the library reports both
    backends' lock timeouts as an `OperationalError` carrying the driver's message)."""
    message = str(error).lower()
    return "database is locked" in message or "lock timeout" in message


class LedgerApplication(Application[UUID]):
    """The library's application, with a `save` that collects aggregates by their class."""

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's `save`: the same steps, but its `ProcessingEvent.collect_events`
        asks of each object whether it is an event and then whether it collects events,
        two runtime-protocol checks that Python 3.11 answers by walking the protocols'
        attributes (~5 % of a command's CPU). An aggregate is known by its class here."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, as it calls it
        return recordings


class WarmCopies:
    """The aggregates a unit of work saved last, as saved, for its next commands on them.

    A copy is taken out while a command decides on it and put back only after
    the command's append succeeded, so a failed or refused decision leaves
    nothing behind, and two commands never share one copy. The oldest copies
    go first beyond `size`. Units of work on one store in several threads may
    share one (each step is one atomic operation of the dict); a copy one of
    them left behind is only ever stale, which the decision's check covers."""

    SIZE = 1024

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._copies: OrderedDict[UUID, LedgerAggregate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._copies)

    def take(self, aggregate_id: UUID) -> LedgerAggregate | None:
        return self._copies.pop(aggregate_id, None)

    def keep(self, aggregate: LedgerAggregate) -> None:
        """Keep a copy that has nothing pending (one with pending events is not as saved)."""
        if aggregate.pending_events:
            return
        self._copies.pop(aggregate.id, None)
        self._copies[aggregate.id] = aggregate
        while len(self._copies) > self.size:
            try:
                self._copies.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break


@dataclass
class Loads:
    """What one attempt of a command loaded; `warm` is where it may take copies from."""

    warm: WarmCopies | None
    refused: bool = False
    """Whether the store refused an earlier attempt's append (`UnitOfWork.after_refusal`)."""
    fresh: list[LedgerAggregate] = field(default_factory=list)
    copies: list[LedgerAggregate] = field(default_factory=list)


_LOADS: ContextVar[Loads | None] = ContextVar("trainledger_loads", default=None)
"""The loads of the attempt this thread (or task) is deciding; None outside a command."""


class UnitOfWork:
    """Runs commands on one application: one append each, retried on conflicts."""

    MAX_ATTEMPTS = 8

    def __init__(
        self,
        app: Application[UUID],
        recorder: LedgerRecorder,
        clock: Clock | None = None,
        canonical_json: CanonicalWriter = canonical_json,
    ) -> None:
        """`canonical_json` spells the canonical form of new events' hashes (default: the
        definition, `domain.chain.canonical_json`)."""
        self.app = app
        self.recorder = recorder
        self.clock = clock
        self.canonical_json = canonical_json
        self.warm = WarmCopies()

    def run(
        self,
        command: str,
        params: dict[str, Any],
        actor: str,
        idempotency_key: str | None,
        body: Body,
    ) -> Outcome:
        """Decide with `body` and append what it decided, as one transaction."""
        if not isinstance(actor, str) or not actor.strip():
            raise ValidationError("an actor is required")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key.strip()
        ):
            raise ValidationError("an idempotency key must not be empty (a string)")
        refuse_control_characters(actor, "actor")
        refuse_control_characters(idempotency_key, "idempotency key")
        digest = "" if idempotency_key is None else request_digest(command, params)
        warm: WarmCopies | None = self.warm
        refused = False
        for attempt in range(self.MAX_ATTEMPTS):
            if idempotency_key is not None:
                earlier = self.earlier_outcome(idempotency_key, digest)
                if earlier is not None:
                    return earlier
            loads = Loads(warm, refused)
            try:
                with self.loading(loads), self.context(actor, idempotency_key):
                    aggregates, outcome, reservations = body()
            except Exception:
                if not loads.copies:
                    raise
                warm = None  # refused on copies that may be stale: decide on the store's state
                continue
            # The copies the decision only read: the append confirms them (`UNCHANGED`).
            unchanged = [(c.id, c.version) for c in loads.copies if not c.pending_events]
            if idempotency_key is not None:
                record = json.dumps({"request": digest, "outcome": outcome}).encode()
                reservations = [*reservations, Reservation(IDEMPOTENCY, idempotency_key, record)]
            if (
                unchanged
                and not reservations
                and not any(a.pending_events for a in aggregates if isinstance(a, BaseAggregate))
                and not self.still_latest(unchanged)
            ):  # nothing to append, so nothing to confirm them: checked here
                warm = None
                continue
            try:
                self.app.save(*aggregates, reservations=reservations, unchanged=unchanged)
            except IntegrityError:
                # Someone appended to one of these aggregates (or to one the
                # decision read on a copy, or took the same key) since we loaded
                # it: back off, reload, decide again. A decision on copies was
                # most likely only stale: again at once.
                if not loads.copies:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                warm, refused = None, True
                continue
            except OperationalError as error:
                if not lock_timed_out(error):
                    raise
                raise ConflictError(
                    f"{command}: the store stayed locked by other writers past its lock "
                    "timeout; nothing was recorded, retry the command"
                ) from None
            for aggregate in (*loads.copies, *loads.fresh, *aggregates):
                if isinstance(aggregate, BaseAggregate):
                    self.warm.keep(aggregate)
            return outcome
        raise ConflictError(
            f"{command}: concurrent changes to the same records; gave up after "
            f"{self.MAX_ATTEMPTS} attempts, retry the command"
        )

    @contextmanager
    def loading(self, loads: Loads) -> Iterator[None]:
        """Route this thread's loads through `loads` while a command decides."""
        token = _LOADS.set(loads)
        try:
            yield
        finally:
            _LOADS.reset(token)

    def after_refusal(self) -> bool:
        """Whether the command deciding now was refused by the store before: an append of
        it met a concurrent change or a unique key already taken (its reservations').

        A decision can leave a taken key to the append, which refuses it with nothing
        recorded, and look it up only then to say which (one wait fewer per command)."""
        loads = _LOADS.get()
        return loads is not None and loads.refused

    def still_latest(self, unchanged: Iterable[tuple[UUID, int]]) -> bool:
        """Whether no event was stored after these versions of the copies a decision only
        read, when it appends nothing (an append confirms them itself, `UNCHANGED`)."""
        return not any(
            self.app.recorder.select_events(aggregate_id, gt=version, limit=1)
            for aggregate_id, version in unchanged
        )

    def context(self, actor: str, idempotency_key: str | None) -> AbstractContextManager[None]:
        """The command context of this unit of work's commands (`domain.aggregate`)."""
        from trainledger.domain.model import command_context

        return command_context(actor, idempotency_key, clock=self.clock, write=self.canonical_json)

    def earlier_outcome(self, key: str, digest: str) -> Outcome | None:
        """The outcome recorded under an idempotency key, if the key was used."""
        stored = self.recorder.find_reservation(IDEMPOTENCY, key)
        if stored is None:
            return None
        sealed, value_hash = self.recorder.seal_of(IDEMPOTENCY, key)
        if sealed and value_hash != hashlib.sha256(stored).hexdigest():
            # Read after the record: had it been written by the ledger, its seal
            # (same transaction) would be here and match.
            raise CorruptStoreError(
                f"the idempotency record of key {key!r} does not match its seal "
                "(changed or added behind the ledger's back); run `trainledger verify`"
            )
        record = json.loads(stored)
        if record["request"] != digest:
            raise IdempotencyKeyReusedError(
                f"idempotency key {key!r} was already used for a different command"
            )
        outcome: Outcome = record["outcome"]
        return outcome

    # --- loading aggregates ------------------------------------------------

    def get_run(self, run_id: str | UUID) -> TrainingRun:
        from trainledger.domain.model import TrainingRun

        return self.get(parse_id(run_id, RunNotFoundError), TrainingRun, RunNotFoundError)

    def get_checkpoint(self, checkpoint_id: str | UUID) -> Checkpoint:
        from trainledger.domain.model import Checkpoint

        uuid = parse_id(checkpoint_id, CheckpointNotFoundError)
        return self.get(uuid, Checkpoint, CheckpointNotFoundError)

    def get(
        self, aggregate_id: UUID, kind: type[A], not_found: Callable[[object], NotFoundError]
    ) -> A:
        """The aggregate at its latest version; store damage is a clear error."""
        aggregate = self.find(aggregate_id, kind)
        if aggregate is None:
            raise not_found(aggregate_id)
        return aggregate

    def find(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """The aggregate at its latest version, None if there is none of that kind."""
        try:
            aggregate = self.load(aggregate_id)
        except AggregateNotFoundError:
            return None
        except (ValueError, KeyError) as error:  # pydantic's ValidationError is a ValueError
            raise CorruptStoreError(
                f"stored events of {aggregate_id} cannot be read ({type(error).__name__}); "
                "run `trainledger verify`"
            ) from None
        return aggregate if isinstance(aggregate, kind) else None

    def load(self, aggregate_id: UUID) -> LedgerAggregate:
        """The aggregate replayed from its stored events; while a command decides, the
        copy this unit of work saved last, if it has one (confirmed in `run`)."""
        loads = _LOADS.get()
        if loads is not None and loads.warm is not None:
            copy = loads.warm.take(aggregate_id)
            if copy is not None:
                loads.copies.append(copy)
                return copy
        aggregate: LedgerAggregate = self.app.repository.get(aggregate_id, projector_func=_replay)
        if loads is not None:
            loads.fresh.append(aggregate)
        return aggregate


def _replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply events in order: the library's projector without its per-event protocol check
    (an `isinstance` against a runtime Protocol per event: a tenth of a command's time)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate
