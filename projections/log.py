"""Reading the application's log in pages, as records the projection translates.

`LogReader` uses the library's recorder API (`select_notifications`), for any
store. On SQLite, `SQLiteLogReader` reads the same rows straight from the
events table, which spares building a `Notification` and two UUID objects
per event: a rebuild spends most of its time there otherwise.

Stored states are decoded as JSON without building domain objects; a state of
an older `class_version` is upcast by the application's mapper first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic

from projections.projection import READ_VERSIONS, EventRecord, record_of_event, unreadable

StoredRow = tuple[int, str, int, str, bytes]
"""position, aggregate id (32 hex digits), version, topic, stored state."""


@functools.cache
def _current_class_version(topic: str) -> int:
    try:
        return int(getattr(resolve_topic(topic), "class_version", 1))
    except Exception:  # an event class that no longer exists: read it as stored
        return 1


def _hex_id(originator_id: UUID | str) -> str:
    return (originator_id if isinstance(originator_id, UUID) else UUID(originator_id)).hex


class LogReader:
    """Pages of the log after a position, through the library's recorder API."""

    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[Any]) -> None:
        self.recorder = recorder
        self.mapper = mapper
        # topic: its class's current class_version (the ledger's known without loading them)
        self._versioned: dict[str, int] = dict(READ_VERSIONS)

    @staticmethod
    def of(recorder: ApplicationRecorder, mapper: Mapper[Any]) -> LogReader:
        """The fastest reader for this recorder."""
        if (
            isinstance(recorder, SQLiteApplicationRecorder)
            and recorder.datastore.originator_id_type == "uuid"
        ):
            return SQLiteLogReader(recorder, mapper)
        return LogReader(recorder, mapper)

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def page(self, after: int, limit: int, stop: int | None = None) -> list[EventRecord]:
        """Up to `limit` events after position `after` (and at most `stop`), oldest first."""
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )
        return self.records(
            (n.id, _hex_id(n.originator_id), n.originator_version, n.topic, n.state)
            for n in notifications
        )

    def records(self, rows: Iterable[StoredRow]) -> list[EventRecord]:
        """Stored rows as records (a rebuild spends much of its time in this loop)."""
        mapper = self.mapper
        decode = mapper.transcoder.decode
        unwrap = self._unwrap if mapper.cipher or mapper.compressor else None
        versioned = self._versioned
        record = EventRecord._make
        records = []
        for position, aggregate_id, version, topic, stored in rows:
            try:
                state = decode(stored if unwrap is None else unwrap(stored))
                if not isinstance(state, dict):
                    raise TypeError(f"a JSON {type(state).__name__}, not an object")
            except (ValueError, TypeError) as error:
                raise unreadable(position, error) from None
            current = versioned.get(topic)
            if current is None:
                current = versioned[topic] = _current_class_version(topic)
            if current > 1 and state.get("class_version", 1) < current:
                upcast = self._upcast(position, aggregate_id, version, topic, stored)
                records.append(record_of_event(upcast, position))
            else:
                records.append(record((position, aggregate_id, version, topic, state)))
        return records

    def _unwrap(self, stored: bytes) -> bytes:
        if self.mapper.cipher:
            stored = self.mapper.cipher.decrypt(stored)
        if self.mapper.compressor:
            stored = self.mapper.compressor.decompress(stored)
        return stored

    def _upcast(
        self, position: int, aggregate_id: str, version: int, topic: str, stored: bytes
    ) -> Any:
        # The mapper decrypts, decompresses and upcasts the state as stored.
        notification = Notification(
            id=position,
            originator_id=UUID(hex=aggregate_id),
            originator_version=version,
            topic=topic,
            state=stored,
        )
        try:
            return self.mapper.to_domain_event(notification)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise unreadable(position, error) from None


class SQLiteLogReader(LogReader):
    """Pages read from the SQLite events table directly (ids there are hex already)."""

    recorder: SQLiteApplicationRecorder

    def page(self, after: int, limit: int, stop: int | None = None) -> list[EventRecord]:
        table = self.recorder.events_table_name
        sql = f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
        params: Sequence[int] = (after, limit)
        if stop is None:
            sql += "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        else:
            sql += "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
            params = (after, stop, limit)
        with self.recorder.datastore.transaction(commit=False) as c:
            raw = c.sqlite_cursor
            raw.row_factory = None  # plain tuples: no per-row `sqlite3.Row`
            raw.execute(sql, params)
            rows: list[StoredRow] = raw.fetchall()
        return self.records(rows)
