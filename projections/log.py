"""Reading the application's log in pages, as records the projection translates.

`LogReader` uses the library's recorder API (`select_notifications`), for any
store. On SQLite, `SQLiteLogReader` reads the same rows straight from the
events table, which spares building a `Notification` and two UUID objects
per event: a rebuild spends most of its time there otherwise. A long stretch
of the log it has translated by worker processes (`projections.log_workers`)
while the view applies what they send.

Stored states are read as JSON without building domain objects (each
translation decodes the fields it needs); a state of an older `class_version`
is upcast by the application's mapper first.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic

from domain.workers import usable_cpus
from projections.facts import FactBatch, PageFacts
from projections.projection import (
    READ_VERSIONS,
    EventRecord,
    record_facts,
    record_of_event,
    stored_class_version,
    translate_into,
    unreadable,
)

if TYPE_CHECKING:
    from projections.log_workers import WorkerPages

StoredRow = tuple[int, str, int, str, bytes]
"""position, aggregate id (32 hex digits), version, topic, stored state."""

SELECT_ROWS = "SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
"""The stored rows of the SQLite events table, as `StoredRow`s."""


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
    try:
        return int(getattr(resolve_topic(topic), "class_version", 1))
    except Exception:  # an event class that no longer exists: read it as stored
        return 1


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
        # `tuple.__new__(EventRecord, values)`: the NamedTuple without its Python `__new__`.
        record = functools.partial(tuple.__new__, EventRecord)
        if unwrap is None and not self._may_need_upcasting(rows):
            return list(map(record, rows))  # each row is its record, as stored
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
                records.append(record((position, aggregate_id, version, topic, state)))
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


class SQLiteLogReader(LogReader):
    """Pages read from the SQLite events table directly (ids there are hex already)."""

    recorder: SQLiteApplicationRecorder

    WORKERS_FROM = 50_000
    """A whole log at least this long is translated by worker processes."""
    WORKERS = 2
    """How many, with two cores or more: with the parent writing, they keep two busy."""

    def page(self, after: int, limit: int, stop: int | None = None) -> list[EventRecord]:
        sql = SELECT_ROWS.format(table=self.recorder.events_table_name)
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

    @contextmanager
    def fact_pages(
        self, after: int, limit: int, stop: int | None = None, *, whole_log: bool = False
    ) -> Iterator[Generator[FactPage, None, None]]:
        pool = self.recorder.datastore.pool
        workers = None
        if whole_log and self.WORKERS > 0 and usable_cpus() > 1 and not pool.is_sqlite_memory_mode:
            # Imported here: most processes never start workers.
            from projections.log_workers import WorkerPages

            upto = self.last_position() if stop is None else min(stop, self.last_position())
            if upto - after >= self.WORKERS_FROM:
                workers = WorkerPages.start(
                    database=pool.db_name,
                    events_table=self.recorder.events_table_name,
                    mapper=self.mapper,
                    after=after,
                    upto=upto,
                    page_size=limit,
                    parts=self.WORKERS,
                )
        if workers is None:
            yield self._translated(after, limit, stop)
            return
        with workers:
            yield self._translated_by(workers, after, limit, stop)

    def _translated_by(
        self, workers: WorkerPages, after: int, limit: int, stop: int | None
    ) -> Generator[FactPage, None, None]:
        try:
            for page in workers:
                yield page
                after = page.last
        finally:
            workers.close()
        # The rest: what the workers did not translate (they failed), and
        # what was appended since they started.
        yield from self._translated(after, limit, stop)
