"""Checking the stored log: hash chains, version order and a digest of the whole log.

Works on stored rows (position, aggregate id, version, topic, decoded state)
rather than domain objects, so tampering that would stop an event from
deserialising is reported like any other, and so it is fast.

What it proves: every aggregate's events follow each other without gaps, each
carries the hash of its predecessor as written, every stored row matches the
log chain the recorder wrote beside it (a hash over all rows in log order, so a
row moved, swapped, inserted or deleted anywhere is named at its position), and
(with a digest from an earlier run) the log up to that digest's position is
byte-for-byte unchanged. An attacker who can rewrite the file can also
recompute the chains; only the digest, kept somewhere else, catches that.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from domain.chain import GENESIS_HASH, NOT_PAYLOAD, chain_hash

LOG_GENESIS = hashlib.sha256(b"trainledger-log-v1").hexdigest()
"""The log chain's value before the first event; the digest of an empty log."""


def log_link(
    previous: str,
    position: int,
    originator_id: UUID | str,
    version: int,
    topic: str,
    raw_state: bytes,
) -> str:
    """The log chain after one more stored row: covers its position and bytes."""
    row = f"{position}\0{originator_id!s}\0{version}\0{topic}\0".encode()
    return hashlib.sha256(
        bytes.fromhex(previous) + row + hashlib.sha256(raw_state).digest()
    ).hexdigest()


def log_links(
    previous: str, rows: list[tuple[int, UUID | str, int, str, bytes]]
) -> list[tuple[int, str]]:
    """(position, link) for rows appended after a log chain value `previous`."""
    links = []
    for position, originator_id, version, topic, raw_state in rows:
        previous = log_link(previous, position, originator_id, version, topic, raw_state)
        links.append((position, previous))
    return links


@dataclass(frozen=True)
class IntegrityFailure:
    position: int
    reason: str


@dataclass
class _Chain:
    version: int
    head: str
    aggregate_topic: str


class AggregateChains:
    """Every aggregate's chain so far; checks an aggregate's next stored event.

    Events must be fed in log order, but only each aggregate's own order
    matters: the log may be split by aggregate and each part checked alone.
    """

    def __init__(self) -> None:
        self._chains: dict[str, _Chain] = {}

    def check(
        self, aggregate_id: str, version: int, topic: str, state: dict[str, Any] | None
    ) -> str | None:
        """Why this event breaks its aggregate's chain, or None (then it extends it)."""
        if state is None:
            return "stored event state is not valid JSON"
        chain = self._chains.get(aggregate_id)
        expected_version = 1 if chain is None else chain.version + 1
        if version != expected_version:
            return (
                f"aggregate {aggregate_id}: version {version} where {expected_version} was "
                "expected (events deleted, inserted or reordered)"
            )
        try:
            previous = state["previousHash"]
            recorded = state["eventHash"]
            aggregate_topic = state["originatorTopic"] if chain is None else chain.aggregate_topic
            type_name = topic.rsplit(".", 1)[-1]
            recomputed = chain_hash(aggregate_id, version, type_name, state)
        except (KeyError, TypeError, AttributeError):
            return "stored event lacks its chain fields"
        if not isinstance(aggregate_topic, str):
            return "stored event's originatorTopic is not a topic"
        if not topic.startswith(aggregate_topic + "."):
            return f"event type {topic} does not belong to aggregate type {aggregate_topic}"
        if recorded != recomputed:
            return (
                f"aggregate {aggregate_id} version {version}: content does not match its "
                "recorded hash (event modified or swapped)"
            )
        expected_previous = GENESIS_HASH if chain is None else chain.head
        if previous != expected_previous:
            return (
                f"aggregate {aggregate_id} version {version}: hash chain broken "
                "(its predecessor was modified, replaced or removed)"
            )
        self._chains[aggregate_id] = _Chain(version, recorded, aggregate_topic)
        return None


@dataclass
class LogVerifier:
    """Feed stored events in log order; the first failure is kept.

    `gap_free` says the backend never skips a position (SQLite), so a missing
    position means a deleted row.
    """

    gap_free: bool = True
    expected_digest: str | None = None
    failure: IntegrityFailure | None = None
    position: int = 0
    events: int = 0
    digest_matched_at: int | None = None
    chains: AggregateChains = field(default_factory=AggregateChains)
    digest: str = LOG_GENESIS
    """The log chain over every row fed so far: what `--digest` takes later."""

    def missing(self, position: int) -> None:
        """The recorder's log chain has a row here, the events table does not."""
        if self.failure is None:
            self.failure = IntegrityFailure(position, f"position {position} is missing (deleted)")

    def feed(
        self,
        position: int,
        originator_id: UUID | str,
        version: int,
        topic: str,
        raw_state: bytes,
        state: dict[str, Any] | None,
        recorded_link: str | None = None,
        *,
        check_link: bool = False,
    ) -> None:
        """Check one stored event; `state` is None when it could not be decoded.

        With `check_link`, `recorded_link` is the log chain value the recorder
        wrote for this position when it appended the row (None: it wrote none).
        """
        aggregate_id = str(originator_id)
        self.digest = log_link(self.digest, position, aggregate_id, version, topic, raw_state)
        if self.failure is None and check_link and recorded_link != self.digest:
            self.failure = IntegrityFailure(
                position,
                f"position {position} was not appended by the ledger (no log chain entry)"
                if recorded_link is None
                else f"position {position} differs from what was appended there "
                "(event modified, moved, swapped or replaced)",
            )
        if self.failure is None:
            if self.gap_free and position > self.position + 1:
                missing = self.position + 1
                self.failure = IntegrityFailure(missing, f"position {missing} is missing (deleted)")
            elif position <= self.position:
                self.failure = IntegrityFailure(
                    position, f"position {position} is out of order after position {self.position}"
                )
            else:
                reason = self.chains.check(aggregate_id, version, topic, state)
                if reason is not None:
                    self.failure = IntegrityFailure(position, reason)
        self.position = position
        self.events += 1
        if self.expected_digest is not None and self.digest == self.expected_digest:
            self.digest_matched_at = position


LinkedRow = tuple[int, str, int, str, bytes, str | None, str | None]
"""A stored event as the fast check reads it: position, id (32 hex digits), version,
topic, state, and the log chain links recorded at the position before and at its own."""

Decoded = tuple[int, str, int, str, bytes]
"""A row the fast check passed: position, id, version, topic, and its state as stored (the
bytes, not decoded: the C loop decodes a state only where it cannot read it straight)."""


# What `FastLogCheck.check` takes out of a state to leave the payload, one by one.
_ENVELOPE_TAKEN = frozenset(
    {"eventHash", "previousHash", "originatorTopic", "class_version", "timestamp", "actor"}
    | {"idempotencyKey"}
)
assert _ENVELOPE_TAKEN == NOT_PAYLOAD, "FastLogCheck.check must take out what is not payload"


PURE_PYTHON = "TRAINLEDGER_PURE_PYTHON"
"""Set (to anything but empty) in the environment: the check loop runs in Python even
where the C one was built (`verify`'s workers inherit it; the bench compares the two)."""


def _native_check() -> Any:
    """The C loop of `FastLogCheck.check` (`domain/_fastcheck.c`), or None if not built."""
    if os.environ.get(PURE_PYTHON):
        return None
    try:
        from domain import _fastcheck
    except ImportError:
        return None
    _fastcheck.configure(
        orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS, LOG_GENESIS, GENESIS_HASH
    )
    return _fastcheck


NATIVE_CHECK = _native_check()
"""The C loop, when the package was built with it (a C compiler and OpenSSL's headers)."""


class FastLogCheck:
    """Check rows of whole aggregates against the recorded log chain, fast.

    Fed the rows of some set of aggregates, in log order (in as many calls as
    suits), it checks that each row has the link the recorder wrote at its
    position, recomputed from the link at the position before, and extends
    its aggregate's chain as `AggregateChains.check` demands. The same rules
    as `LogVerifier`, in one loop without calls per row: a conservative
    verdict (anything unexpected counts as unsound) for a log that
    `LogVerifier` then reads again to say what is wrong.

    The loop runs in C (`NATIVE_CHECK`) where the package was built with it,
    else in Python (`native=False` asks for Python); both give the same verdicts.
    """

    def __init__(self, *, native: bool = True) -> None:
        # hex id: version, event hash, "aggregate topic.", id as written in the log chain
        self._heads: dict[str, tuple[int, str, str, str]] = {}
        self._type_names: dict[str, str] = {}  # topic: the event's type name
        self._native = NATIVE_CHECK if native else None
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
        if self._native is not None:
            problem: int | None
            checked: int
            problem, checked = self._native.check(
                rows, self._heads, self._type_names, decoded, as_type
            )
            self.checked += checked
            return problem
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
