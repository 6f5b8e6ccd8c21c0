"""Turns at a SQLite file's write lock, for the threads of one process.

A writer that finds the file locked waits in SQLite's busy handler, which
sleeps (1, 2, 5, 10, ... 100 ms) between looks: the lock may have been free
for most of that sleep. Between processes that is all there is. Between the
threads of one process (`trainledger serve` keeps a ledger per worker
thread) a lock of the process hands the turn on as soon as it is given
back: a thread takes its turn here before `BEGIN IMMEDIATE`, which then
finds the file free unless another process holds it, and gives it back
after its commit or rollback. Nothing depends on it for correctness (SQLite
still serialises the writers); it only keeps the threads from sleeping.

A turn is waited for no longer than the store's lock timeout, past which it
fails as SQLite's own wait does: "database is locked".
"""

from __future__ import annotations

import threading

from eventsourcing.persistence import OperationalError

_TURNS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def turn_of(database: str) -> threading.Lock:
    """The one lock of this process for the database named `database` (as the pool names it)."""
    with _GUARD:
        return _TURNS.setdefault(database, threading.Lock())


def take(turn: threading.Lock, timeout: float) -> None:
    """Wait for `turn` up to `timeout` seconds; `OperationalError` past it."""
    if not turn.acquire(timeout=timeout):
        raise OperationalError("database is locked")
