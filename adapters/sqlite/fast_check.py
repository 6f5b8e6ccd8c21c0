"""Checking rows of whole aggregates against the recorded log chain, fast (`verify`'s workers).

A conservative verdict: anything unexpected counts as unsound, and the
one-pass check (`domain.chain.LogVerifier`) then says what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from trainledger.domain.chain import GENESIS_HASH, LOG_GENESIS, NOT_PAYLOAD

LinkedRow = tuple[int, str, int, str, bytes, str | None, str | None]
"""A stored event as the fast check reads it: position, id (32 hex digits), version,
topic, state, and the log chain links recorded at the position before and at its own."""

Decoded = tuple[int, str, int, str, bytes]
"""A row the fast check passed: position, id, version, topic, and its state as stored (the
bytes, not decoded)."""


# What `FastLogCheck.check` takes out of a state to leave the payload, one by one.
_ENVELOPE_TAKEN = frozenset(
    {"eventHash", "previousHash", "originatorTopic", "class_version", "timestamp", "actor"}
    | {"idempotencyKey"}
)
assert _ENVELOPE_TAKEN == NOT_PAYLOAD, "FastLogCheck.check must take out what is not payload"


class FastLogCheck:
    """Check rows of whole aggregates against the recorded log chain, fast.

    Fed the rows of some set of aggregates, in log order (in as many calls as
    suits), it checks that each row has the link the recorder wrote at its
    position, recomputed from the link at the position before, and extends
    its aggregate's chain as `AggregateChains.check` demands. The same rules
    as `LogVerifier`, in one loop without calls per row: a conservative
    verdict (anything unexpected counts as unsound) for a log that
    `LogVerifier` then reads again to say what is wrong.
    """

    def __init__(self) -> None:
        # hex id: version, event hash, "aggregate topic.", id as written in the log chain
        self._heads: dict[str, tuple[int, str, str, str]] = {}
        self._type_names: dict[str, str] = {}  # topic: the event's type name
        self.checked = 0
        """How many rows passed so far."""

    def check(
        self,
        rows: Sequence[LinkedRow],
        decoded: list[Any] | None = None,
        as_type: type[tuple[Any, ...]] = tuple,
    ) -> int | None:
        """The position of the first row that does not pass, or None.

        `decoded`, if given, gets each row that passed with its state as stored,
        bytes (a `Decoded`), made as `as_type` (a tuple type of that shape).
        """
        return self._check_in_python(rows, decoded, as_type)

    def _check_in_python(
        self, rows: Sequence[LinkedRow], decoded: list[Any] | None, as_type: type[tuple[Any, ...]]
    ) -> int | None:
        sha256 = hashlib.sha256
        loads = orjson.loads
        dumps = orjson.dumps
        sort_keys = orjson.OPT_SORT_KEYS
        fromhex = bytes.fromhex
        new = tuple.__new__
        heads = self._heads
        type_names = self._type_names
        keep = None if decoded is None else decoded.append
        checked = position = 0
        try:
            for position, hex_id, version, topic, raw, recorded_before, link in rows:
                head = heads.get(hex_id)
                if head is None:
                    if version != 1 or len(hex_id) != 32:
                        return position
                    aggregate_id = (
                        f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
                    )
                elif version != head[0] + 1:
                    return position
                else:
                    aggregate_id = head[3]
                before = LOG_GENESIS if position == 1 else recorded_before
                if type(raw) is not bytes or before is None:
                    return position
                header = f"{position}\0{aggregate_id}\0{version}\0{topic}\0".encode()
                if sha256(fromhex(before) + header + sha256(raw).digest()).hexdigest() != link:
                    return position
                state = loads(raw)  # for the document; the record keeps `raw`
                if head is None:
                    prefix = state["originatorTopic"] + "."
                    expected_previous = GENESIS_HASH
                else:
                    prefix = head[2]
                    expected_previous = head[1]
                if not topic.startswith(prefix):
                    return position
                type_name = type_names.get(topic)
                if type_name is None:
                    type_name = type_names[topic] = topic.rsplit(".", 1)[-1]
                # The canonical document (`domain.chain.canonical_event_bytes`):
                # the envelope's chain fields, and the rest of the state as payload.
                payload = state.copy()
                recorded = payload.pop("eventHash")
                previous = payload.pop("previousHash")
                payload.pop("originatorTopic", None)
                payload.pop("class_version", None)
                document = {
                    "aggregateId": aggregate_id,
                    "version": version,
                    "type": type_name,
                    "timestamp": payload.pop("timestamp"),
                    "actor": payload.pop("actor"),
                    "idempotencyKey": payload.pop("idempotencyKey", None),
                    "previousHash": previous,
                    "payload": payload,
                }
                if (
                    previous != expected_previous
                    or sha256(dumps(document, option=sort_keys)).hexdigest() != recorded
                ):
                    return position
                heads[hex_id] = (version, recorded, prefix, aggregate_id)
                if keep is not None:
                    keep(new(as_type, (position, hex_id, version, topic, raw)))
                checked += 1
        except (ValueError, KeyError, TypeError, AttributeError):
            return position
        finally:
            self.checked += checked
        return None
