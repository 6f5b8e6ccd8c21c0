"""The SQLite file under a store URL: refused unless it is a ledger, created only to write.

A query never creates a store (a typo'd path would otherwise answer "no runs"
from a new empty file), and a file that is not an SQLite database (empty, one
byte, damaged) is never taken for a new ledger: it is refused and left as it
is. A store is created only by a command that writes, and it appears whole:
an empty WAL database is made beside the path and linked into place, so a
process opening the path at the same moment never sees a zero-byte file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote, unquote
from uuid import uuid4

from eventsourcing.sqlite import SQLiteConnectionPool

from trainledger.domain.errors import NoLedgerError, StoreError

LEDGER_TABLE = "stored_events"
SMALLEST_DATABASE = 512
"""Bytes: SQLite's smallest page; a shorter file (which SQLite reads as empty) is no database."""


def prepare_store_file(path: Path, *, create: bool, read_only: bool = False) -> None:
    """Check the file at `path` is a ledger; with `create`, make an empty one if there is none."""
    if not path.exists():
        if not create:
            raise NoLedgerError(
                f"no ledger at {path} (a command that records something creates one)"
            )
        _create_atomically(path)
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a trainledger store (not a file)")
    # Only SQLite itself opens the file: closing any other descriptor on it would
    # drop the POSIX locks this process's open connections to it hold.
    if path.stat().st_size < SMALLEST_DATABASE:
        raise StoreError(
            f"{path} is not a trainledger store (an empty or truncated file); left untouched"
        )
    tables = _tables(read_only_uri(path) if read_only else f"file:{quote(str(path))}?mode=ro")
    if LEDGER_TABLE not in tables and (tables or not create):
        if not tables:
            raise NoLedgerError(f"no ledger at {path} (an empty SQLite database)")
        raise StoreError(f"{path} is an SQLite database but not a trainledger store")


def database_file(db_name: str) -> Path | None:
    """The file a database name opens, as the library's pool names it: a plain path, or a
    `file:` URI (its path unquoted, its options dropped); None for an in-memory or a
    temporary database (an empty name: SQLite's own temporary file)."""
    if SQLiteConnectionPool.detect_memory_mode(db_name):
        return None
    if db_name.startswith("file:"):
        db_name = unquote(db_name.removeprefix("file:").split("?", 1)[0])
    return Path(db_name) if db_name else None


def _tables(uri: str) -> set[str]:
    path = database_file(uri)
    try:
        connection = sqlite3.connect(uri, uri=True)
        try:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            return {str(name) for (name,) in rows}
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(
            f"{path} is not a trainledger store (damaged: {error}); left untouched"
        ) from None


def read_only_uri(path: Path) -> str:
    """The SQLite URI that opens the store file without writing anything beside it.

    With no `-wal` file, everything is in the file itself: `immutable=1` reads
    it without the `-shm` file (which a read-only directory cannot hold), on
    the understanding that nobody writes a read-only archive meanwhile.
    """
    options = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    return f"file:{quote(str(path.absolute()))}?{options}"


def _create_atomically(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{uuid4().hex}.new")
    try:
        connection = sqlite3.connect(draft)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # writes the header
        finally:
            connection.close()
        # Another process may have linked its own first: then that one is the store.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        for leftover in (draft, Path(f"{draft}-wal"), Path(f"{draft}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
