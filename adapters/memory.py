"""The in-memory store (`memory://`): the library's POPO recorders plus reservations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory

from domain.application import Reservation


class MemoryLedgerRecorder(POPOApplicationRecorder):
    gap_free_positions = True

    def __init__(self) -> None:
        super().__init__()
        self._reservations: dict[tuple[str, str], bytes] = {}

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            reservations = kwargs.get("reservations", ())
            for r in reservations:
                if (r.kind, r.key) in self._reservations:
                    raise IntegrityError(f"{r.kind} {r.key!r} already reserved")
            notification_ids = super()._insert_events(stored_events, **kwargs)
            for r in reservations:
                self._reservations[(r.kind, r.key)] = r.value
            return notification_ids

    def find_reservation(self, kind: str, key: str) -> bytes | None:
        with self._database_lock:
            return self._reservations.get((kind, key))

    def reservations(self) -> list[Reservation]:
        with self._database_lock:
            return [Reservation(k, key, v) for (k, key), v in sorted(self._reservations.items())]

    def positions(self, originator_id: UUID) -> list[int]:
        with self._database_lock:
            index = self._stored_events_index[str(originator_id)]
            return [index[version] + 1 for version in sorted(index)]


class MemoryLedgerFactory(POPOFactory):
    def application_recorder(self) -> ApplicationRecorder:
        return MemoryLedgerRecorder()
