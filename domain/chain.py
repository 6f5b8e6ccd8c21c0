"""Each aggregate's hash chain: how a stored event is serialised and hashed.

Every event carries the hash of its aggregate's previous event (see
`domain.model`). Computed from the stored row alone, so `verify` and
`import` check chains on raw rows, and the recorders, the projections and
`verify` use it without loading the event models (start-up time).

An event's own hash (`eventHash`) is, since chain format 2, a hash over its
stored row: aggregate id, version, topic, and the state bytes exactly as
stored, with the value of `eventHash` itself written as 64 zeros (`seal`).
Checking it takes one byte substitution and one hash, no re-serialisation.
Events written before that carry a format 1 hash (`chain_hash`), over a
canonical re-serialisation of the decoded state; both are accepted
(`event_hash_matches`), so a log written by an older version verifies as it is.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

GENESIS_HASH = "0" * 64
"""The `previous_hash` of every aggregate's first event."""

SEALED_HASH = "0" * 64
"""What `eventHash` reads in the bytes an event's own (format 2) hash covers."""

HASH_MEMBER = b'"eventHash":"'
"""How the `eventHash` member of a stored state begins, as serialised."""

SEALED_MEMBER = HASH_MEMBER + SEALED_HASH.encode() + b'"'

ROW_HASH_TAG = b"trainledger-event-v2\0"
"""Begins what a format 2 hash covers, so it can never be taken for another hash's input."""

# Envelope fields every stored event state has (camelCase, as stored);
# whatever else it holds is the event's payload.
STORED_ENVELOPE = frozenset(
    {"originatorTopic", "timestamp", "actor", "idempotencyKey", "previousHash", "eventHash"}
)

NOT_PAYLOAD = STORED_ENVELOPE | {"class_version"}


def stored_state(event: BaseModel) -> dict[str, Any]:
    """The event as stored: camelCase JSON values, without id and version."""
    return event.model_dump(
        mode="json", by_alias=True, exclude={"originator_id", "originator_version"}
    )


def state_to_store(event: BaseModel) -> dict[str, Any]:
    """What is serialised into the stored row: `stored_state`, and the class
    version of an event class past its first (which tells what to upcast)."""
    state = stored_state(event)
    class_version = getattr(type(event), "class_version", 1)
    if class_version > 1:
        state["class_version"] = class_version
    return state


def row_header(aggregate_id: str, version: int, topic: str) -> bytes:
    """The stored row's envelope as the hashes cover it (the log chain's too, after the position).

    `aggregate_id` in the UUID's text form, with dashes."""
    return f"{aggregate_id}\0{version}\0{topic}\0".encode()


def seal(raw_state: bytes, event_hash: str) -> bytes:
    """The stored state with the value of its `eventHash` member zeroed.

    A state that does not hold `event_hash` there comes back unchanged; its
    hash then cannot equal `event_hash` (that would be a fixed point of SHA-256).
    """
    return raw_state.replace(HASH_MEMBER + event_hash.encode() + b'"', SEALED_MEMBER, 1)


def row_hash(header: bytes, sealed_state: bytes) -> str:
    """Format 2: the hash of a stored row (`row_header`), its state `seal`ed."""
    return hashlib.sha256(ROW_HASH_TAG + header + sealed_state).hexdigest()


def hash_of_new_event(event: BaseModel, aggregate_id: str, version: int, topic: str) -> str:
    """The format 2 hash of an event about to be stored in the row it names.

    Serialises the state exactly as the mapper (`adapters.persistence`) will,
    with `eventHash` zeroed.
    """
    state = state_to_store(event)
    state["eventHash"] = SEALED_HASH
    return row_hash(row_header(aggregate_id, version, topic), orjson.dumps(state))


def canonical_event_bytes(
    aggregate_id: str, version: int, type_name: str, state: dict[str, Any]
) -> bytes:
    """Format 1: the serialisation an event's chain hash was computed over.

    Built from the decoded state alone: the envelope's chain fields and, as
    payload, the rest of the state, with sorted keys.
    """
    document = {
        "aggregateId": aggregate_id,
        "version": version,
        "type": type_name,
        "timestamp": state["timestamp"],
        "actor": state["actor"],
        "idempotencyKey": state.get("idempotencyKey"),
        "previousHash": state["previousHash"],
        "payload": {k: v for k, v in state.items() if k not in NOT_PAYLOAD},
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def chain_hash(aggregate_id: str, version: int, type_name: str, state: dict[str, Any]) -> str:
    """Format 1: the hash of an event written before chain format 2."""
    return hashlib.sha256(
        canonical_event_bytes(aggregate_id, version, type_name, state)
    ).hexdigest()


def event_hash_matches(
    aggregate_id: str, version: int, topic: str, raw_state: bytes, state: dict[str, Any]
) -> bool:
    """Whether a stored event's recorded `eventHash` is the hash of its row, in either format.

    `state` is `raw_state` decoded; raises KeyError, TypeError or
    AttributeError when it lacks the chain fields.
    """
    recorded = state["eventHash"]
    header = row_header(aggregate_id, version, topic)
    if row_hash(header, seal(raw_state, recorded)) == recorded:
        return True
    type_name = topic.rsplit(".", 1)[-1]
    return bool(chain_hash(aggregate_id, version, type_name, state) == recorded)
