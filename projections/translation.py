"""The pieces every translation of stored events is made of (`projections.projection`).

A stored event is read as an `EventRecord` (its envelope and its JSON state);
a `Translation` decodes the fields of the state it needs (a `StoredState`
struct) and records facts from them (`PageFacts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
import orjson

from trainledger.projections.facts import PageFacts


class EventRecord(NamedTuple):
    """A stored event as the projection reads it: its envelope and JSON state.

    Ids are kept as 32 hex digits, as the views store them. The state is the
    JSON as stored (decrypted and decompressed, upcast to the event class's
    current version if it was older): each translation decodes only the
    fields it reads (`StoredState`).
    """

    position: int
    aggregate_id: str
    version: int
    topic: str
    state: bytes


def hex_id(uuid_text: str) -> str:
    return uuid_text.replace("-", "")


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_or_none(value: Any) -> str | None:
    return None if value is None else json_text(value)


def raw_text(raw: msgspec.Raw) -> str:
    """A JSON value as stored, as text (the views keep eval summaries so)."""
    return str(raw, "utf-8")


class StoredState(msgspec.Struct, gc=False, rename="camel"):
    """The fields of a stored event's state that its translation reads.

    Decoding only these (and skipping the rest of the JSON) is a good part of
    what makes a rebuild fast; a test checks each name against the event
    model's stored (camelCase) fields. Types are checked only where the
    translation needs one; a state that does not decode is unreadable. Each
    struct is paired with its topic and translation in `TRANSLATIONS`.
    """

    timestamp: str


class _Versioned(msgspec.Struct, gc=False):
    class_version: int = 1


_read_version = msgspec.json.Decoder(_Versioned).decode


def stored_class_version(state: bytes) -> int:
    """The `class_version` a stored state was written at (1 if it does not say)."""
    return _read_version(state).class_version


S = TypeVar("S", bound=StoredState)


class Translation(Generic[S]):
    """How the projection reads the stored events of one topic.

    `state` names the fields of the stored state it decodes, `facts` makes
    the facts they record, and `read_version` is the `class_version` of the
    state it reads: the event class's own (a test checks), so that an event
    stored at an older version is upcast by the mapper first
    (`projections.log`), and a current one is read without the event model.
    """

    __slots__ = ("decode", "facts", "read_version", "state")

    def __init__(
        self,
        state: type[S],
        facts: Callable[[EventRecord, S, PageFacts], None],
        read_version: int = 1,
    ) -> None:
        self.state = state
        self.decode: Callable[[bytes], S] = msgspec.json.Decoder(state).decode
        self.facts = facts
        self.read_version = read_version
