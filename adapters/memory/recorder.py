"""The in-memory store (`memory://`): the library's POPO recorders plus reservations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory

from trainledger.domain.chain import LOG_GENESIS, log_links
from trainledger.service.ports import LogCheck, Reservation


class MemoryLedgerRecorder(POPOApplicationRecorder):
    gap_free_positions = True

    def __init__(self) -> None:
        super().__init__()
        self._reservations: dict[tuple[str, str], bytes] = {}
        self._log_chain: dict[int, str] = {}
        self._log_head = LOG_GENESIS

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
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
            return notification_ids

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
