"""The worker threads of the service, each with a ledger of its own on the store.

A request's work (a command, a query, a token check) runs on one of these
threads, never on the event loop: the ledger's calls block on the store.
Each thread opens its own `TrainingLedger` on first use, so nothing of a
ledger (its connections, its read model's catch-up) is shared between two
requests at once; on SQLite and PostgreSQL several ledgers on one store are
what several processes are already (SPEC §8). An in-memory store is one
ledger, so it gets one thread. The ledgers share one set of warm copies
(`service.unit_of_work.WarmCopies`): a client's next command, on whichever
thread, decides on the aggregates its last one saved.

`close` waits for the work in flight to finish, then closes every ledger:
a command running when the service stops completes (its one append commits)
or, not yet begun, never starts.

A request may have a check to pass first (`checking_first`: the caller's
token, `auth.Admission`): it runs on the worker thread right before the
request's first work, in the same turn, so that the request goes to a
worker thread once instead of twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar
from urllib.parse import urlsplit

from trainledger.service.ledger import TrainingLedger
from trainledger.service.unit_of_work import WarmCopies

T = TypeVar("T")

LedgerOpener = Callable[[], TrainingLedger]
Check = Callable[[TrainingLedger], None]


class PendingCheck:
    """A check not run yet: `take` hands it out once."""

    def __init__(self, check: Check) -> None:
        self._check: Check | None = check

    def take(self) -> Check | None:
        check, self._check = self._check, None
        return check


_PENDING: ContextVar[PendingCheck | None] = ContextVar("trainledger_pending_check", default=None)


class LedgerPool:
    """Threads, each holding its own ledger; `call` runs a function with one of them."""

    def __init__(self, open_ledger: LedgerOpener, store_url: str, workers: int = 2) -> None:
        shared = urlsplit(store_url).scheme.lower() == "memory"
        self.workers = 1 if shared else max(1, workers)
        self._open = open_ledger
        self._local = threading.local()
        self._opened: list[TrainingLedger] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="trainledger-http")
        self.warm = WarmCopies()

    def _ledger(self) -> TrainingLedger:
        ledger: TrainingLedger | None = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self._open()
            ledger.unit_of_work.warm = self.warm
            self._local.ledger = ledger
            with self._lock:
                self._opened.append(ledger)
        return ledger

    def run(self, work: Callable[[TrainingLedger], T]) -> T:
        """Run `work` with this thread's ledger (on a worker thread only)."""
        return work(self._ledger())

    async def call(self, work: Callable[[TrainingLedger], T]) -> T:
        """Run `work(ledger)` on a worker thread and wait for it, without blocking the loop.

        The request's pending check, if any, runs first, on the same thread.
        """
        pending = _PENDING.get()
        check = None if pending is None else pending.take()
        if check is not None:
            work = _after(check, work)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run, work)

    @contextmanager
    def checking_first(self, check: Check) -> Iterator[PendingCheck]:
        """Within the block (one request's task), `check` runs before the first `call`'s work."""
        pending = PendingCheck(check)
        token = _PENDING.set(pending)
        try:
            yield pending
        finally:
            _PENDING.reset(token)

    def close(self) -> None:
        """Let the work in flight finish, then close every ledger."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for ledger in opened:
            ledger.close()


def _after(check: Check, work: Callable[[TrainingLedger], T]) -> Callable[[TrainingLedger], T]:
    def checked(ledger: TrainingLedger) -> T:
        check(ledger)
        return work(ledger)

    return checked
