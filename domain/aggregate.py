"""The ledger's event and aggregate base classes: context, chain, stored topics.

Every event carries the actor, the idempotency key (when given) and the hash
of its aggregate's previous event, so each aggregate's history is a hash
chain (`domain.chain`). Events are triggered inside `command_context`, which
the unit of work opens for each command.

Stored topics are data: every class keeps the topic it was first stored
under (`TOPIC`, which the library's `get_topic` reads, and whose
registration the library checks), whatever the module's import name is now;
`stored_classes` lists them, for the mapper to resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self
from uuid import UUID

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from trainledger.domain.chain import (
    GENESIS_HASH,
    NOT_PAYLOAD,
    CanonicalJson,
    canonical_event_bytes,
    canonical_json,
    hash_of,
    stored_state,
)
from trainledger.domain.text import READ_BACK, may_hold_refused, refuse_control_characters

STORED_MODULES: dict[str, str] = {
    "trainledger.domain.model": "domain.model",
    "trainledger.domain.promotion": "domain.promotion",
    "trainledger.domain.shadow": "domain.shadow",
    "trainledger.domain.deployment": "domain.deployment",
    "trainledger.domain.seed_import": "domain.seed_import",
    "trainledger.domain.access": "domain.access",
}
"""The module name each module's classes were first stored under (0.1.0 had no
`trainledger` package): the topics in the log, and inside its hashes."""

_stored: dict[str, type[Any]] = {}


def _keep_topic(cls: type[Any]) -> None:
    module = STORED_MODULES.get(cls.__module__, cls.__module__)
    cls.TOPIC = f"{module}:{cls.__qualname__}"
    _stored[cls.TOPIC] = cls


def stored_classes() -> dict[str, type[Any]]:
    """Every aggregate and event class of the ledger, by the topic it is stored under."""
    return dict(_stored)


Clock = Callable[[], datetime]
"""What tells the time of new events (an aware UTC datetime)."""


@dataclass(frozen=True)
class CommandContext:
    """Who is issuing the current command, under which idempotency key, at what time."""

    actor: str
    idempotency_key: str | None = None
    clock: Clock | None = None
    """None: the library's clock (now, UTC)."""
    write: CanonicalJson = canonical_json
    """Spells the canonical form of the new events' hashes (`domain.chain`)."""

    def timestamp(self) -> datetime | None:
        return None if self.clock is None else self.clock()


_command_context: ContextVar[CommandContext | None] = ContextVar("command_context", default=None)


@contextmanager
def command_context(
    actor: str,
    idempotency_key: str | None = None,
    *,
    clock: Clock | None = None,
    write: CanonicalJson = canonical_json,
) -> Iterator[None]:
    """Stamp every event triggered inside the block with this actor, key and clock.

    `write` spells the canonical form the new events are hashed over: the
    definition, or an accelerator giving the same bytes (the ledger's own).
    """
    token = _command_context.set(CommandContext(actor, idempotency_key, clock, write))
    try:
        yield
    finally:
        _command_context.reset(token)


def _current_context() -> CommandContext:
    context = _command_context.get()
    if context is None:
        raise RuntimeError("events must be triggered inside command_context(...)")
    return context


class DomainEvent(BaseModel):
    """Base of every stored event: frozen, unknown fields refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )

    TOPIC: ClassVar[str]
    """The topic the event is stored under (see the module docstring)."""

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    actor: str
    idempotency_key: str | None = None
    previous_hash: str = GENESIS_HASH
    event_hash: str = ""
    """Hash of this event as written (see `canonical_event_bytes`); set on creation."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _keep_topic(cls)

    @model_validator(mode="after")
    def _seal(self) -> DomainEvent:
        if not self.event_hash:  # a new event; one read back keeps what it recorded
            context = _command_context.get()
            try:
                written = canonical_event_bytes(
                    str(self.originator_id),
                    self.originator_version,
                    self.short_type,
                    stored_state(self),
                    canonical_json if context is None else context.write,
                )
            except (TypeError, ValueError):  # no JSON writes a lone surrogate
                self._refuse_control_characters()
                raise
            # The text rule, on the bytes hashed (every text the event stores is in them).
            if may_hold_refused(written):
                self._refuse_control_characters()
            object.__setattr__(self, "event_hash", hash_of(written))
        return self

    def _refuse_control_characters(self) -> None:
        # The values as given: JSON mode would already have escaped or mangled them.
        refuse_control_characters(self.model_dump(), self.short_type)

    @classmethod
    def read_back(cls, state: dict[str, Any]) -> Self:
        """The event as the ledger stored it (its fields by name or alias), validated
        without the text rule, which it passed when it was created (`domain.text`)."""
        return cls.model_validate(state, context=READ_BACK)

    @property
    def short_type(self) -> str:
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        """The event's own fields, without the envelope, as camelCase JSON values."""
        state = stored_state(self)
        return {k: v for k, v in state.items() if k not in NOT_PAYLOAD}

    def chain_hash(self) -> str:
        """Hash of this event as written; the next event of the aggregate carries it."""
        return self.event_hash


class LedgerAggregate(BaseAggregate[UUID]):
    """Base aggregate: stamps events with context and keeps the chain head."""

    chain_head: str
    TOPIC: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Before the library's hook, which registers an aggregate's explicit
        # topic and those of its events (each set by `DomainEvent`'s hook).
        _keep_topic(cls)
        super().__init_subclass__(**kwargs)

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.chain_head = self.chain_hash()
            return aggregate

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str

        def mutate(self, aggregate: Any) -> Any:
            aggregate = CanInitAggregate.mutate(self, aggregate)
            aggregate.chain_head = self.chain_hash()
            return aggregate

    @classmethod
    def _open(cls, event_class: type[Any], aggregate_id: UUID, **fields: Any) -> Any:
        context = _current_context()
        return cls._create(
            event_class,
            id=aggregate_id,
            timestamp=context.timestamp(),
            actor=context.actor,
            idempotency_key=context.idempotency_key,
            previous_hash=GENESIS_HASH,
            **fields,
        )

    def _trigger(self, event_class: type[Any], **fields: Any) -> None:
        context = _current_context()
        self.trigger_event(
            event_class,
            timestamp=context.timestamp(),
            actor=context.actor,
            idempotency_key=context.idempotency_key,
            previous_hash=self.chain_head,
            **fields,
        )
