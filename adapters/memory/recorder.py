"""The in-memory store (`memory://`): the library's POPO recorders plus reservations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory

from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, log_links, seal_anchor, seal_links
from trainledger.service.ports import (
    UNCHANGED,
    LogCheck,
    Reservation,
    Seal,
    changed_since_read,
)


class MemoryLedgerRecorder(POPOApplicationRecorder):
    gap_free_positions = True

    def __init__(self) -> None:
        super().__init__()
        self._reservations: dict[tuple[str, str], bytes] = {}
        self._log_chain: dict[int, str] = {}
        self._log_head = LOG_GENESIS
        self._seals: list[Seal] = []

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            for aggregate_id, version in kwargs.get(UNCHANGED, ()):
                if max(self._stored_events_index.get(str(aggregate_id), ()), default=0) > version:
                    raise IntegrityError(changed_since_read(aggregate_id))
            reservations = kwargs.get("reservations", ())
            for r in reservations:
                if (r.kind, r.key) in self._reservations:
                    raise IntegrityError(f"{r.kind} {r.key!r} already reserved")
            notification_ids = super()._insert_events(stored_events, **kwargs)
            assert notification_ids is not None
            rows = [
                (n, s.originator_id, s.originator_version, s.topic, s.state)
                for n, s in zip(notification_ids, stored_events, strict=True)
            ]
            for position, link in log_links(self._log_head, rows):
                self._log_chain[position] = self._log_head = link
            for r in reservations:
                self._reservations[(r.kind, r.key)] = r.value
            if reservations and kwargs.get("seal", True):
                self._seal(list(notification_ids), reservations)
            return notification_ids

    def _seal(self, positions: list[int], reservations: Sequence[Reservation]) -> None:
        """As the SQL stores seal: in commit order, and everything the first time."""
        given = {(r.kind, r.key): r.anchor for r in reservations}
        if self._seals:
            items = [(r.anchor, r.kind, r.key, r.value) for r in reservations]
        else:
            items = [(given.get(k), k[0], k[1], v) for k, v in self._reservations.items()]
        end = positions[-1] if positions else max(self._log_chain, default=0)
        links = {**self._log_chain, 0: LOG_GENESIS}
        anchors = [seal_anchor(a, positions, end) for a, _, _, _ in items]
        seals = seal_links(
            self._seals[-1].link if self._seals else SEAL_GENESIS,
            [
                (p, links[p], kind, key, value)
                for p, (_, kind, key, value) in zip(anchors, items, strict=True)
            ],
        )
        start = len(self._seals) + 1
        self._seals.extend(Seal(n, *seal) for n, seal in enumerate(seals, start=start))

    def seals(self) -> list[Seal]:
        with self._database_lock:
            return list(self._seals)

    def sealed_reservations(self, after_seq: int, limit: int) -> list[tuple[Seal, bytes | None]]:
        with self._database_lock:
            after = [s for s in self._seals if s.seq > after_seq][:limit]
            return [(s, self._reservations.get((s.kind, s.key))) for s in after]

    def unsealed_reservations(self) -> list[Reservation]:
        with self._database_lock:
            sealed = {(s.kind, s.key) for s in self._seals}
            return [
                Reservation(k, key, v)
                for (k, key), v in sorted(self._reservations.items())
                if (k, key) not in sealed
            ]

    def seal_of(self, kind: str, key: str) -> tuple[bool, str | None]:
        with self._database_lock:
            found = [s.value_hash for s in self._seals if (s.kind, s.key) == (kind, key)]
            return bool(self._seals), found[0] if found else None

    def find_reservation(self, kind: str, key: str) -> bytes | None:
        with self._database_lock:
            return self._reservations.get((kind, key))

    def reservations(self) -> list[Reservation]:
        with self._database_lock:
            return [Reservation(k, key, v) for (k, key), v in sorted(self._reservations.items())]

    def log_chain(self, after: int, upto: int | None) -> dict[int, str]:
        with self._database_lock:
            return {
                p: link
                for p, link in self._log_chain.items()
                if p > after and (upto is None or p <= upto)
            }

    def store_problems(self) -> list[str]:
        return []

    def log_chain_end(self) -> int:
        with self._database_lock:
            return max(self._log_chain, default=0)

    def positions(self, originator_id: UUID) -> list[int]:
        with self._database_lock:
            index = self._stored_events_index[str(originator_id)]
            return [index[version] + 1 for version in sorted(index)]

    def start_log_check(
        self, *, digest: str | None, parts: int, minimum: int, application_name: str
    ) -> LogCheck | None:
        """No worker processes here: `verify` checks this log in one pass."""
        return None


class MemoryLedgerFactory(POPOFactory):
    def application_recorder(self) -> ApplicationRecorder:
        return MemoryLedgerRecorder()
