"""The worker threads of the service, each with a ledger of its own on the store.

A request's work (a command, a query, a token check) runs on one of these
threads, never on the event loop: the ledger's calls block on the store.
Each thread opens its own `TrainingLedger` on first use, so nothing of a
ledger (its connections, its read model's catch-up) is shared between two
requests at once; on SQLite and PostgreSQL several ledgers on one store are
what several processes are already (SPEC §8). An in-memory store is one
ledger, so it gets one thread.

`close` waits for the work in flight to finish, then closes every ledger:
a command running when the service stops completes (its one append commits)
or, not yet begun, never starts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

from trainledger.service.ledger import TrainingLedger

T = TypeVar("T")

LedgerOpener = Callable[[], TrainingLedger]


class LedgerPool:
    """Threads, each holding its own ledger; `call` runs a function with one of them."""

    def __init__(self, open_ledger: LedgerOpener, store_url: str, workers: int = 4) -> None:
        shared = urlsplit(store_url).scheme.lower() == "memory"
        self.workers = 1 if shared else max(1, workers)
        self._open = open_ledger
        self._local = threading.local()
        self._opened: list[TrainingLedger] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="trainledger-http")

    def _ledger(self) -> TrainingLedger:
        ledger: TrainingLedger | None = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self._open()
            self._local.ledger = ledger
            with self._lock:
                self._opened.append(ledger)
        return ledger

    def run(self, work: Callable[[TrainingLedger], T]) -> T:
        """Run `work` with this thread's ledger (on a worker thread only)."""
        return work(self._ledger())

    async def call(self, work: Callable[[TrainingLedger], T]) -> T:
        """Run `work(ledger)` on a worker thread and wait for it, without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run, work)

    def close(self) -> None:
        """Let the work in flight finish, then close every ledger."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for ledger in opened:
            ledger.close()
