"""Checking the stored log: hash chains, version order and a digest of the whole log.

Works on stored rows (position, aggregate id, version, topic, decoded state)
rather than domain objects, so tampering that would stop an event from
deserialising is reported like any other, and so it is fast.

What it proves: every aggregate's events follow each other without gaps, each
carries the hash of its predecessor as written, and (with a digest from an
earlier run) the log up to that digest's position is byte-for-byte unchanged.
An attacker who can rewrite the file can also recompute the chains; only the
digest, kept somewhere else, catches that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from domain.model import GENESIS_HASH, chain_hash

DIGEST_SEED = b"trainledger-log-v1"


@dataclass(frozen=True)
class IntegrityFailure:
    position: int
    reason: str


@dataclass
class _Chain:
    version: int
    head: str
    aggregate_topic: str


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
    _chains: dict[str, _Chain] = field(default_factory=dict)
    _running: Any = field(default_factory=lambda: hashlib.sha256(DIGEST_SEED))

    @property
    def digest(self) -> str:
        return self._running.hexdigest()  # type: ignore[no-any-return]

    def feed(
        self,
        position: int,
        originator_id: UUID | str,
        version: int,
        topic: str,
        raw_state: bytes,
        state: dict[str, Any] | None,
    ) -> None:
        """Check one stored event; `state` is None when it could not be decoded."""
        aggregate_id = str(originator_id)
        self._running.update(
            f"{position}\0{aggregate_id}\0{version}\0{topic}\0".encode()
            + hashlib.sha256(raw_state).digest()
        )
        if self.failure is None:
            if self.gap_free and position > self.position + 1:
                missing = self.position + 1
                self.failure = IntegrityFailure(missing, f"position {missing} is missing (deleted)")
            else:
                reason = self._check(position, aggregate_id, version, topic, state)
                if reason is not None:
                    self.failure = IntegrityFailure(position, reason)
        self.position = position
        self.events += 1
        if self.expected_digest is not None and self.digest == self.expected_digest:
            self.digest_matched_at = position

    def _check(
        self,
        position: int,
        aggregate_id: str,
        version: int,
        topic: str,
        state: dict[str, Any] | None,
    ) -> str | None:
        if position <= self.position:
            return f"position {position} is out of order after position {self.position}"
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
