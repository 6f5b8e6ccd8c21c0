"""Each aggregate's hash chain: how a stored event is serialised and hashed.

Every event carries the hash of its aggregate's previous event (see
`domain.model`). Computed from the stored state alone, so `verify` and
`import` check chains on raw rows, and the recorders, the projections and
`verify` use it without loading the event models (start-up time).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

GENESIS_HASH = "0" * 64
"""The `previous_hash` of every aggregate's first event."""

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


def canonical_event_bytes(
    aggregate_id: str, version: int, type_name: str, state: dict[str, Any]
) -> bytes:
    """The serialisation an event's chain hash is computed over.

    Built from the stored state alone, so `verify` can recompute chains from
    raw rows without reconstructing domain objects.
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
    return hashlib.sha256(
        canonical_event_bytes(aggregate_id, version, type_name, state)
    ).hexdigest()
