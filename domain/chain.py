"""The chain rules, the only copy: each aggregate's hash chain and the log chain.

An aggregate's hash chain: how a stored event is serialised and hashed.

Every event carries the hash of its aggregate's previous event (see
`domain.model`). Computed from the stored state alone, so `verify` and
`import` check chains on raw rows, and the recorders, the projections and
`verify` use it without loading the event models (start-up time).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from trainledger.domain.errors import ValidationError

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


CanonicalJson = Callable[[Any], bytes]
"""Writes a JSON value in the canonical form (`canonical_json` is the definition).

The rule of what is hashed is `canonical_document`'s alone; a writer only
spells it. An accelerated writer (`adapters.canonical_json`) is wired in by
the adapters and must produce the same bytes for every JSON value.
"""


def canonical_document(
    aggregate_id: str, version: int, type_name: str, state: dict[str, Any]
) -> dict[str, Any]:
    """The document an event's chain hash is computed over.

    Built from the stored state alone, so `verify` can recompute chains from
    raw rows without reconstructing domain objects.
    """
    payload = dict(state)
    for key in NOT_PAYLOAD:
        payload.pop(key, None)
    return {
        "aggregateId": aggregate_id,
        "version": version,
        "type": type_name,
        "timestamp": state["timestamp"],
        "actor": state["actor"],
        "idempotencyKey": state.get("idempotencyKey"),
        "previousHash": state["previousHash"],
        "payload": payload,
    }


def canonical_json(document: Any) -> bytes:
    """The canonical form of a JSON value: the definition, and the default writer.

    Compact JSON with the keys of every object sorted, strings as UTF-8 and
    numbers in their shortest round-trip form (`1e-7`, `0.0003`, `2`): what
    0.1.0 wrote with orjson's sorted keys, and pydantic's serializer writes
    for the same values (`tests/unit/test_chain.py` holds the two equal).
    """
    return _json_writer()(_sorted(document))


def canonical_event_bytes(
    aggregate_id: str,
    version: int,
    type_name: str,
    state: dict[str, Any],
    write: CanonicalJson = canonical_json,
) -> bytes:
    """The serialisation an event's chain hash is computed over."""
    return write(canonical_document(aggregate_id, version, type_name, state))


def _sorted(value: Any) -> Any:
    """A JSON value with the keys of every object in sorted order."""
    if type(value) is dict:
        return {key: _sorted(value[key]) for key in sorted(value)}
    if type(value) is list:
        return [_sorted(item) for item in value]
    return value


@functools.cache
def _json_writer() -> Callable[[Any], bytes]:
    # Imported on first use: the recorders import this module for the log
    # chain, which a query's process needs without pydantic (start-up time).
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_json


def chain_hash(
    aggregate_id: str,
    version: int,
    type_name: str,
    state: dict[str, Any],
    write: CanonicalJson = canonical_json,
) -> str:
    return hash_of(canonical_event_bytes(aggregate_id, version, type_name, state, write))


def hash_of(written: bytes) -> str:
    """The chain hash of an event's `canonical_event_bytes`."""
    return hashlib.sha256(written).hexdigest()


# --- the log chain and checking a stored log ----------------------------------
#
# Checking the stored log: hash chains, version order and a digest of the whole log.
#
# Works on stored rows (position, aggregate id, version, topic, decoded state)
# rather than domain objects, so tampering that would stop an event from
# deserialising is reported like any other, and so it is fast.
#
# What it proves: every aggregate's events follow each other without gaps, each
# carries the hash of its predecessor as written, every stored row matches the
# log chain the recorder wrote beside it (a hash over all rows in log order, so a
# row moved, swapped, inserted or deleted anywhere is named at its position), and
# (with a digest from an earlier run) the log up to that digest's position is
# byte-for-byte unchanged. An attacker who can rewrite the file can also
# recompute the chains; only the digest, kept somewhere else, catches that.

LOG_GENESIS = hashlib.sha256(b"trainledger-log-v1").hexdigest()
"""The log chain's value before the first event; the digest of an empty log."""

_HEX = frozenset("0123456789abcdef")


def parse_digest(value: object) -> str:
    """A digest as `verify` printed it (64 hex digits, any case), or `ValidationError`."""
    if not isinstance(value, str):
        raise ValidationError(f"a digest is a string of 64 hex digits, not {type(value).__name__}")
    digest = value.lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValidationError(
            f"a digest is 64 hex digits as `verify` prints it; {value[:80]!r} is not one"
        )
    return digest


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


class ChainBreak(Enum):
    """Why an event does not extend its aggregate's chain.

    The rule's verdicts; `verify` and `import` each say them in their own terms.
    """

    UNREADABLE = "the stored state is not a JSON object"
    OUT_OF_SEQUENCE = "not its aggregate's next version"
    NO_CHAIN_FIELDS = "a chain field is missing, or the state cannot be hashed"
    NOT_A_TOPIC = "the aggregate's first event names no aggregate type"
    FOREIGN_TYPE = "the event's type is not one of its aggregate's type"
    MODIFIED = "the content does not match its recorded hash"
    UNLINKED = "previousHash is not its predecessor's hash"


@dataclass(slots=True)
class _Chain:
    version: int
    head: str
    aggregate_topic: str


class AggregateChains:
    """Every aggregate's chain so far; checks an aggregate's next stored event.

    Events must be fed in log order, but only each aggregate's own order
    matters: the log may be split by aggregate and each part checked alone.
    `write` spells the canonical form (default: `canonical_json`).
    """

    def __init__(self, write: CanonicalJson = canonical_json) -> None:
        self._chains: dict[str, _Chain] = {}
        self._write = write

    def check(
        self, aggregate_id: str, version: int, topic: str, state: dict[str, Any] | None
    ) -> ChainBreak | None:
        """Why this stored event breaks its aggregate's chain, or None (then it extends it).

        `state` is the event's state as stored (None: it could not be decoded);
        its type is the last part of `topic`, its aggregate's type the rest.
        """
        if state is None:
            return ChainBreak.UNREADABLE
        chain = self._chains.get(aggregate_id)
        if version != (1 if chain is None else chain.version + 1):
            return ChainBreak.OUT_OF_SEQUENCE
        try:
            previous = state["previousHash"]
            recorded = state["eventHash"]
            aggregate_topic = state["originatorTopic"] if chain is None else chain.aggregate_topic
            owner, dot, type_name = topic.rpartition(".")
            recomputed = chain_hash(aggregate_id, version, type_name, state, self._write)
        except (KeyError, TypeError, AttributeError):
            return ChainBreak.NO_CHAIN_FIELDS
        if not isinstance(aggregate_topic, str):
            return ChainBreak.NOT_A_TOPIC
        if not dot or owner != aggregate_topic:  # the topic is "{aggregate topic}.{type name}"
            return ChainBreak.FOREIGN_TYPE
        if recorded != recomputed:
            return ChainBreak.MODIFIED
        if previous != (GENESIS_HASH if chain is None else chain.head):
            return ChainBreak.UNLINKED
        if chain is None:
            self._chains[aggregate_id] = _Chain(version, recorded, aggregate_topic)
        else:
            chain.version, chain.head = version, recorded
        return None

    def version(self, aggregate_id: str) -> int:
        """The last version of an aggregate that extended its chain (0: none yet)."""
        chain = self._chains.get(aggregate_id)
        return 0 if chain is None else chain.version

    def aggregate_topic(self, aggregate_id: str) -> str | None:
        """The aggregate's type, as its first event named it (None: no event yet)."""
        chain = self._chains.get(aggregate_id)
        return None if chain is None else chain.aggregate_topic


class SealedDigests:
    """Fed the log chain's link at each position in order, with the seals read alongside.

    Keeps the links at the seals' anchors, and says whether a digest is one
    `verify` printed for a state ending at a position: the plain link while
    nothing was sealed, then the link with the last seal of that state.

    `seals`: (anchor position, link) of every seal, in seal order (which is
    anchor order), as a list or read a page at a time: only the seals up to
    the position asked are held, never all of them.
    """

    def __init__(self, seals: Iterable[tuple[int, str]]) -> None:
        self._seals = iter(seals)
        self._next = next(self._seals, None)
        self._earlier: str | None = None
        """The link of the last seal anchored before `_asked`."""
        self._asked = -1
        self._here: list[str] = []
        """The links of the seals anchored at `_asked`."""
        self.anchor_links: dict[int, str] = {}

    def at(self, position: int, link: str, expected: str | None) -> bool:
        if position > self._asked:
            if self._here:
                self._earlier = self._here[-1]
            self._here = []
            while self._next is not None and self._next[0] < position:
                self._earlier = self._next[1]
                self._next = next(self._seals, None)
            # Seals come in anchor order: those anchored here follow the earlier ones.
            while self._next is not None and self._next[0] == position:
                self._here.append(self._next[1])
                self._next = next(self._seals, None)
            self._asked = position
        same = self._here if position == self._asked else []
        if same:
            self.anchor_links[position] = link
        if expected is None:
            return False
        earlier = [] if self._earlier is None else [self._earlier]
        if not earlier and link == expected:
            return True
        return any(log_digest(link, s) == expected for s in earlier + same)


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
    sealed: SealedDigests = field(default_factory=lambda: SealedDigests([]))
    """The seals, for the digests of sealed states and the links at their anchors."""

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
                broken = self.chains.check(aggregate_id, version, topic, state)
                if broken is not None:
                    reason = self._reason(broken, aggregate_id, version, topic, state)
                    self.failure = IntegrityFailure(position, reason)
        self.position = position
        self.events += 1
        matched = self.sealed.at(position, self.digest, self.expected_digest)
        if matched:
            self.digest_matched_at = position

    def _reason(
        self,
        broken: ChainBreak,
        aggregate_id: str,
        version: int,
        topic: str,
        state: dict[str, Any] | None,
    ) -> str:
        if broken is ChainBreak.UNREADABLE or state is None:
            return "stored event state is not valid JSON"
        if broken is ChainBreak.OUT_OF_SEQUENCE:
            return (
                f"aggregate {aggregate_id}: version {version} where "
                f"{self.chains.version(aggregate_id) + 1} was expected "
                "(events deleted, inserted or reordered)"
            )
        if broken is ChainBreak.NO_CHAIN_FIELDS:
            return "stored event lacks its chain fields"
        if broken is ChainBreak.NOT_A_TOPIC:
            return "stored event's originatorTopic is not a topic"
        if broken is ChainBreak.FOREIGN_TYPE:
            known = self.chains.aggregate_topic(aggregate_id)
            aggregate_topic = state.get("originatorTopic") if known is None else known
            return f"event type {topic} does not belong to aggregate type {aggregate_topic}"
        if broken is ChainBreak.MODIFIED:
            return (
                f"aggregate {aggregate_id} version {version}: content does not match its "
                "recorded hash (event modified or swapped)"
            )
        return (
            f"aggregate {aggregate_id} version {version}: hash chain broken "
            "(its predecessor was modified, replaced or removed)"
        )


# --- sealing reservations -----------------------------------------------------
#
# A reservation (an idempotency record, an evalId) is written beside the events
# of its append, with a seal: a chain over every reservation in commit order,
# each link covering the log chain's link at the seal's anchor (the last event
# of its append, or the log's end for an append without events), the kind, the
# key and the value's hash. Within one append seals are in (kind, key) order.
# A store written before seals existed has reservations and no seals; the first
# append that seals anything seals every reservation the store holds.

SEAL_GENESIS = hashlib.sha256(b"trainledger-seal-v1").hexdigest()
"""The seal chain's value before the first seal."""


def seal_link(previous: str, anchor_link: str, kind: str, key: str, value: bytes) -> str:
    """The seal chain after one more reservation, anchored where `anchor_link` is the log's."""
    return hashlib.sha256(
        bytes.fromhex(previous)
        + bytes.fromhex(anchor_link)
        + f"{kind}\0{key}\0".encode()
        + hashlib.sha256(value).digest()
    ).hexdigest()


def seal_anchor(anchor: int | None, positions: list[int], end: int) -> int:
    """A seal's anchor position: by default `end` (the append's last event, or the
    log's end); an import names the 1-based index of one of the append's events
    at `positions`, or 0 (the empty log before them)."""
    if anchor is None:
        return end
    return 0 if anchor == 0 else positions[anchor - 1]


def seal_links(
    previous: str, reservations: list[tuple[int, str, str, str, bytes]]
) -> list[tuple[int, str, str, str, str]]:
    """Seals for reservations sealed together: (position, kind, key, value hash, link).

    Each reservation is (anchor position, log link there, kind, key, value);
    they are sealed in (position, kind, key) order.
    """
    sealed = []
    for position, anchor_link, kind, key, value in sorted(
        reservations, key=lambda r: (r[0], r[2], r[3])
    ):
        previous = seal_link(previous, anchor_link, kind, key, value)
        sealed.append((position, kind, key, hashlib.sha256(value).hexdigest(), previous))
    return sealed


def log_digest(log_link_value: str, last_seal: str | None) -> str:
    """What `verify` prints: the log chain's link, and once anything is sealed, the seals too.

    A store without seals (as 0.1.0 wrote them) keeps its plain log-chain digest.
    """
    if last_seal is None:
        return log_link_value
    return hashlib.sha256(
        b"trainledger-digest-v2\0" + bytes.fromhex(log_link_value) + bytes.fromhex(last_seal)
    ).hexdigest()
