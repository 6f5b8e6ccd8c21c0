"""Turns at a SQLite file's write lock, for the threads of one process and, when asked, for
the processes of one service.

A writer that finds the file locked waits in SQLite's busy handler, which
sleeps (1, 2, 5, 10, ... 100 ms) between looks: the lock may have been free
for most of that sleep. Between the threads of one process (`trainledger
serve` keeps a ledger per worker thread) a lock of the process hands the
turn on as soon as it is given back: a thread takes its turn here before
`BEGIN IMMEDIATE`, which then finds the file free unless another process
holds it, and gives it back after its commit or rollback.

Between processes that sleep is all there is, unless they share the turn
too. `trainledger serve --processes N` runs N processes on one store, and
there `share_between_processes()` makes each turn also an exclusive `flock`
of a file beside the store (`<store>-turn`: it holds nothing, is made on
first use and stays, since a process that opened it after it was removed
would lock another file). A process waits for it in short looks (at most
1 ms apart), not in SQLite's long sleeps: at 8 clients on 4 processes that
took a write's p99 from ~100 ms to ~20 ms (bench/README.md). Processes that
do not share the turn (a CLI command beside the service) still wait in
SQLite's busy handler, as before.

Nothing depends on a turn for correctness: SQLite still serialises the
writers; a turn only keeps them from sleeping. A turn is waited for no
longer than the store's lock timeout, past which it fails as SQLite's own
wait does: "database is locked".
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

from eventsourcing.persistence import OperationalError

from trainledger.adapters.sqlite.store_file import database_file

TURN_FILE_SUFFIX = "-turn"
_LONGEST_LOOK = 0.001
"""Seconds between two looks at another process's turn, at most."""

_sharing = threading.Event()
"""Set: this process takes turns with the others that set it (inherited by a fork)."""


def share_between_processes() -> None:
    """From now on, this process and the processes it forks take turns with each other
    (call it before opening ledgers, in the process that forks the others)."""
    _sharing.set()


class Turn:
    """This process's turn at one SQLite file's write lock (see the module doc)."""

    def __init__(self, database: str) -> None:
        self._threads = threading.Lock()
        self._path = _turn_file(database)
        self._file: int | None = None
        self._file_pid = 0
        """The process that opened `_file`: a forked process opens its own."""
        self._holding: int | None = None

    def take(self, timeout: float) -> None:
        """Wait for the turn up to `timeout` seconds; `OperationalError` past it."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            raise OperationalError("database is locked")
        if not _sharing.is_set() or self._path is None:
            return
        try:
            self._take_file(deadline)
        except BaseException:
            self._threads.release()
            raise

    def taken(self) -> bool:
        """Whether a thread of this process holds the turn."""
        return self._threads.locked()

    def give_back(self) -> None:
        if self._holding is not None:
            fcntl.flock(self._holding, fcntl.LOCK_UN)
            self._holding = None
        self._threads.release()

    def _take_file(self, deadline: float) -> None:
        file = self._open_file()
        pause = _LONGEST_LOOK / 16
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError("database is locked") from None
                time.sleep(pause)
                pause = min(2 * pause, _LONGEST_LOOK)
            else:
                self._holding = file
                return

    def _open_file(self) -> int:
        if self._file is None or self._file_pid != os.getpid():
            assert self._path is not None
            self._file = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._file_pid = os.getpid()
        return self._file


def _turn_file(database: str) -> str | None:
    """The turn file of a database named as the pool names it (a path or a `file:` URI);
    None for an in-memory database."""
    path = database_file(database)
    return None if path is None else f"{path}{TURN_FILE_SUFFIX}"


_TURNS: dict[str, Turn] = {}
_GUARD = threading.Lock()


def turn_of(database: str) -> Turn:
    """The one turn of this process for the database named `database` (as the pool names it)."""
    with _GUARD:
        turn = _TURNS.get(database)
        if turn is None:
            turn = _TURNS[database] = Turn(database)
        return turn
