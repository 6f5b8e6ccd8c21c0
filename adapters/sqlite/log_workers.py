"""Translating a long stretch of the SQLite log in worker processes.

A rebuild spends about half its time reading, decoding and translating
events, and the other half writing their facts to the view; in one process
the two take turns. Here worker processes read the events straight from the
database file (under WAL a reader does not disturb the view's writer), each
one every `parts`-th page of the stretch, and send each page's facts back
pickled; the parent applies the pages in log order as they arrive, so
reading and writing overlap.

A worker that fails in any way (it cannot start, cannot open the file, meets
an event it cannot read, dies) only ends the stream early: the parent carries
on in its own process from the last page it got, which reports an unreadable
event exactly as it always does.

Run as `python -m trainledger.adapters.sqlite.log_workers`, with its `TranslationJob`
pickled on stdin; it writes one pickled `FactPage` (or None, for a page
without events) per page of its part, in order, each after its length in
bytes (8, little-endian).
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from types import TracebackType
from typing import IO, Any

from eventsourcing.persistence import Mapper

from trainledger.adapters.workers import stop_workers, worker_env
from trainledger.projections.log import EventDecoder, FactPage

SELECT_ROWS = "SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
"""The stored rows of the SQLite events table, as `StoredRow`s."""


@dataclass(frozen=True)
class TranslationJob:
    """The pages of positions `after`+1..`upto`, `page_size` positions each; one part of them."""

    database: str
    events_table: str
    mapper: Mapper[Any]
    after: int
    upto: int
    page_size: int
    parts: int
    part: int = 0

    def pages(self) -> list[tuple[int, int]]:
        """Every page of the job, as (after, last) positions.

        The first pages are smaller (doubling up to `page_size`), so that the
        view starts writing soon after the workers start reading; so are the
        last ones (halving again), so that little is left for the view to
        write once the workers are done.
        """
        ramp, size = [], max(1, self.page_size // 16)
        while size < self.page_size:
            ramp.append(size)
            size *= 2
        first: list[int] = []
        last: list[int] = []
        remaining = self.upto - self.after
        for size in ramp:
            for end in (first, last):
                if remaining > 0:
                    end.append(min(size, remaining))
                    remaining -= end[-1]
        middle = []
        while remaining > 0:
            middle.append(min(self.page_size, remaining))
            remaining -= middle[-1]
        pages, low = [], self.after
        for size in (*first, *middle, *reversed(last)):
            pages.append((low, low + size))
            low += size
        return pages


def translate_part(job: TranslationJob, out: IO[bytes]) -> None:
    """The worker: translate the job's part of its pages and write them to `out`.

    A thread writes the pages, so that translating goes on while the parent
    is busy with pages of other workers, or with its own work.
    """
    decoder = EventDecoder(job.mapper)
    select = SELECT_ROWS.format(table=job.events_table) + "WHERE rowid > ? AND rowid <= ?"
    pending: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    writer = threading.Thread(target=_write_all, args=(pending, out), daemon=True)
    writer.start()
    connection = sqlite3.connect(job.database, uri=True)
    try:
        for after, last in job.pages()[job.part :: job.parts]:
            if not writer.is_alive():  # the parent stopped reading
                break
            rows = connection.execute(select, (after, last))
            page = FactPage.gathered(
                decoder.records(stretch) for stretch in iter(partial(rows.fetchmany, STRETCH), [])
            )
            data = _pickled(page)
            pending.put(len(data).to_bytes(8, "little") + data)
    finally:
        connection.close()
        pending.put(None)
        writer.join()


def _pickled(page: FactPage | None) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # Without the memo (a page holds no object twice that matters, and no
    # cycle): about a quarter less work at both ends.
    pickler.fast = True
    pickler.dump(page)
    return buffer.getvalue()


def _write_all(pending: queue.SimpleQueue[bytes | None], out: IO[bytes]) -> None:
    while (data := pending.get()) is not None:
        out.write(data)
        out.flush()


STRETCH = 2000
"""Events read, decoded and translated at a time: a page's decoded events never all
stay in memory (fewer fresh pages for the allocator to fault in, and warmer caches)."""
PIPE_BYTES = 1 << 20
WORKER_NICENESS = 5


def _widen(pipe: IO[bytes]) -> None:
    """A larger pipe buffer, where the system allows: a page passes in fewer turns."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


class WorkerPages:
    """The pages of a job in log order, as the worker processes translate them.

    Iterating stops at the first page a worker does not deliver, or after the
    last one; leaving the context stops the workers.
    """

    def __init__(self, job: TranslationJob, workers: list[subprocess.Popen[bytes]]) -> None:
        self.job = job
        self.workers = workers

    @staticmethod
    def start(
        *,
        database: str,
        events_table: str,
        mapper: Mapper[Any],
        after: int,
        upto: int,
        page_size: int,
        parts: int,
    ) -> WorkerPages | None:
        """Start the workers; None when they cannot be (the caller then works alone)."""
        job = TranslationJob(database, events_table, mapper, after, upto, page_size, parts)
        try:
            jobs = [pickle.dumps(replace(job, part=part)) for part in range(parts)]
        except Exception:  # a mapper that cannot be sent (say, a cipher's key object)
            return None
        env = worker_env()
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for part_job in jobs:
                worker = subprocess.Popen(
                    [sys.executable, "-m", __name__],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
                workers.append(worker)
                assert worker.stdin is not None
                assert worker.stdout is not None
                _widen(worker.stdout)
                worker.stdin.write(part_job)
                worker.stdin.close()
        except OSError:
            WorkerPages(job, workers).close()
            return None
        return WorkerPages(job, workers)

    def __iter__(self) -> Iterator[FactPage]:
        for number, (after, last) in enumerate(self.job.pages()):
            worker = self.workers[number % len(self.workers)]
            assert worker.stdout is not None
            try:
                size = int.from_bytes(worker.stdout.read(8), "little")
                page = pickle.loads(worker.stdout.read(size))
            except Exception:  # whatever a failed worker left: stop here
                return
            if page is None:
                continue
            if not (isinstance(page, FactPage) and after < page.first <= page.last <= last):
                return
            yield page

    def close(self) -> None:
        stop_workers(self.workers)

    def __enter__(self) -> WorkerPages:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def main() -> int:
    # Millions of short-lived, acyclic objects: the cycle collector would only walk them.
    gc.disable()
    # The parent writing the pages is the one to keep going: on a busy machine
    # a worker that got ahead gives it the core.
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)
    # A `TranslationJob` of the module by its name (this one runs as __main__).
    job = pickle.load(sys.stdin.buffer)
    translate_part(job, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
