"""Pages of the SQLite log read straight from the events table.

The same rows as `projections.log.LogReader` reads through the library's
recorder API, without building a `Notification` and two UUID objects per
event: a rebuild spends most of its time there otherwise. A long stretch of
the log it has translated by worker processes (`log_workers`) while the view
applies what they send.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager

from eventsourcing.sqlite import SQLiteApplicationRecorder

from trainledger.adapters.sqlite.log_workers import SELECT_ROWS, WorkerPages
from trainledger.adapters.workers import usable_cpus
from trainledger.projections.log import FactPage, LogReader
from trainledger.projections.projection import EventRecord
from trainledger.projections.view import StoredRow


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
