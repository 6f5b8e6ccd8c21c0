"""Reading the application's log in pages, as records the projection translates.

`LogReader` uses the library's recorder API (`select_notifications`), for any
store; a backend may read the same rows faster (`adapters.sqlite.log`).

Stored states are read as JSON without building domain objects (each
translation decodes the fields it needs); a state of an older `class_version`
is upcast by the application's mapper first.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification

from trainledger.projections.facts import FactBatch, PageFacts
from trainledger.projections.projection import (
    READ_VERSIONS,
    EventRecord,
    record_facts,
    record_of_event,
    stored_class_version,
    translate_into,
    unreadable,
)
from trainledger.projections.view import StoredRow


class FactPage(NamedTuple):
    """The facts recorded by a page of events: those at positions `first`..`last`."""

    first: int
    last: int
    events: int
    facts: FactBatch

    @staticmethod
    def of(records: Sequence[EventRecord]) -> FactPage:
        return FactPage(
            records[0].position, records[-1].position, len(records), record_facts(records)
        )

    @staticmethod
    def gathered(stretches: Iterable[Sequence[EventRecord]]) -> FactPage | None:
        """The facts of a page read a stretch at a time (None when it has no events).

        Each stretch is translated and dropped before the next is read, so
        that the decoded events of a large page never pile up in memory.
        """
        page = PageFacts()
        first = last = events = 0
        for records in stretches:
            if not records:
                continue
            if not events:
                first = records[0].position
            translate_into(page, records)
            events += len(records)
            last = records[-1].position
        return FactPage(first, last, events, page.finished()) if events else None


@functools.cache
def _current_class_version(topic: str) -> int:
    # The event models are imported only for a topic the projection does not
    # read (`READ_VERSIONS` knows the rest): a query need not pay pydantic's
    # start-up time.
    from trainledger.domain.model import stored_classes

    event_class = stored_classes().get(topic)
    if event_class is None:  # an event class that no longer exists: read it as stored
        return 1
    return int(getattr(event_class, "class_version", 1))


def _hex_id(originator_id: UUID | str) -> str:
    return (originator_id if isinstance(originator_id, UUID) else UUID(originator_id)).hex


class EventDecoder:
    """Stored rows as the records the projection reads, with the application's mapper."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        # topic: its class's current class_version (the ledger's known without loading them)
        self._versioned: dict[str, int] = dict(READ_VERSIONS)

    def records(self, rows: Iterable[StoredRow]) -> list[EventRecord]:
        """Stored rows as records: their states unwrapped, and upcast where older.

        States stay JSON: each translation decodes the fields it reads.
        """
        rows = rows if isinstance(rows, list) else list(rows)
        mapper = self.mapper
        unwrap = self._unwrap if mapper.cipher or mapper.compressor else None
        if unwrap is None and not self._may_need_upcasting(rows):
            return list(map(EventRecord._make, rows))  # each row is its record, as stored
        records = []
        for position, aggregate_id, version, topic, stored in rows:
            current = self._current(topic)
            try:
                state = stored if unwrap is None else unwrap(stored)
                older = current > 1 and stored_class_version(state) < current
            except (ValueError, TypeError) as error:
                raise unreadable(position, error) from None
            if older:
                upcast = self._upcast(position, aggregate_id, version, topic, stored)
                records.append(record_of_event(upcast, position))
            else:
                records.append(EventRecord(position, aggregate_id, version, topic, state))
        return records

    def _current(self, topic: str) -> int:
        """The current class_version of the event class of a topic."""
        current = self._versioned.get(topic)
        if current is None:
            current = self._versioned[topic] = _current_class_version(topic)
        return current

    def _may_need_upcasting(self, rows: list[StoredRow]) -> bool:
        """Whether some row's event class is past its first version."""
        return any(self._current(topic) > 1 for topic in {row[3] for row in rows})

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


class LogReader(EventDecoder):
    """Pages of the log after a position, through the library's recorder API."""

    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[Any]) -> None:
        super().__init__(mapper)
        self.recorder = recorder

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

    def events_at(self, positions: Iterable[int]) -> list[EventRecord]:
        """The events at these positions (those the log holds), in log order."""
        rows: list[StoredRow] = []
        for position in sorted(set(positions)):
            rows.extend(
                (n.id, _hex_id(n.originator_id), n.originator_version, n.topic, n.state)
                for n in self.recorder.select_notifications(start=position, limit=1, stop=position)
            )
        return self.records(rows)

    @contextmanager
    def fact_pages(
        self, after: int, limit: int, stop: int | None = None, *, whole_log: bool = False
    ) -> Iterator[Generator[FactPage, None, None]]:
        """The facts of the log after position `after` (up to `stop`), `limit` events a page.

        A context: translating may start on entering it, ahead of the pages
        being read, and stops on leaving it. `whole_log` says the caller reads
        on to the end (a rebuild, a replay), which a reader may do faster.
        """
        yield self._translated(after, limit, stop)

    def _translated(
        self, after: int, limit: int, stop: int | None
    ) -> Generator[FactPage, None, None]:
        while True:
            page = self.page(after, limit, stop)
            if not page:
                return
            yield FactPage.of(page)
            after = page[-1].position
