"""How events are stored: pydantic models as camelCase JSON, serialised with orjson.

Chosen through the library's environment settings (`MAPPER_TOPIC`,
`TRANSCODER_TOPIC`), see `adapters.store`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, register_topic

from trainledger.domain.chain import stored_state

if TYPE_CHECKING:
    from pydantic import BaseModel


@functools.cache
def stored_classes() -> dict[str, type[Any]]:
    """The ledger's aggregate and event classes by stored topic, registered with the library.

    Topics are resolved from this table only, never by importing a module a
    stored topic names (the library's `resolve_topic` would): stored topics
    keep the module names of 0.1.0 (see `domain.model`). Loaded on first use:
    queries never decode an event into its model (start-up time).
    """
    from trainledger.domain import catalogue

    classes = catalogue.stored_classes()
    for topic, cls in classes.items():
        register_topic(topic, cls)
    return classes


def event_class(topic: str) -> type[Any]:
    """The event class stored under `topic`; ValueError for a topic the ledger never wrote."""
    try:
        return stored_classes()[topic]
    except KeyError:
        raise ValueError(f"unknown event topic {topic!r}") from None


class OrjsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


class PydanticMapper(Mapper[Any]):
    """Maps pydantic events to stored events, upcasting old class versions."""

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        event_cls = type(domain_event)
        state = stored_state(cast("BaseModel", domain_event))
        class_version = getattr(event_cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(event_cls),
            state=self.encode_state(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        """An event read back from the ledger's own store (`DomainEvent.read_back`)."""
        return cast(DomainEventProtocol[Any], self.read_event(stored_event, read_back=True))

    def read_event(self, stored_event: StoredEvent, *, read_back: bool) -> Any:
        """The domain event of a stored event; `read_back=False` for one that did not come
        from the ledger's store (an import file's stored state): validated as new input."""
        state = self.decode_state(stored_event.state)
        event_cls = event_class(stored_event.topic)
        from_version = state.pop("class_version", 1)
        class_version = getattr(event_cls, "class_version", 1)
        # Upcasters reshape the state; `eventHash` still holds the hash of the
        # event as written, which is what the chain covers.
        while from_version < class_version:
            getattr(event_cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        if read_back:
            return event_cls.read_back(state)
        return event_cls.model_validate(state)

    def encode_state(self, state: dict[str, Any]) -> bytes:
        """A stored state as written: transcoded, then compressed and encrypted if configured."""
        data = self.transcoder.encode(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return data

    def decode_state(self, data: bytes) -> dict[str, Any]:
        """A stored state as read: decrypted and decompressed if configured, then decoded."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        state: dict[str, Any] = self.transcoder.decode(data)
        return state
