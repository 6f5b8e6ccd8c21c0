"""A `postgresql://` store URL as the library's settings for the ledger's PostgreSQL store."""

from __future__ import annotations

import getpass
import os
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.utils import get_topic

from trainledger.adapters.postgres.recorder import LedgerPostgresFactory
from trainledger.domain.errors import StoreError

POSTGRES_OPTIONS: dict[str, tuple[str, int, int]] = {
    # URL option: (library setting, default, minimum)
    "pool_size": ("POSTGRES_POOL_SIZE", 2, 1),
    "max_overflow": ("POSTGRES_MAX_OVERFLOW", 8, 0),
    "lock_timeout": ("POSTGRES_LOCK_TIMEOUT", 30, 0),
    "connect_timeout": ("POSTGRES_CONNECT_TIMEOUT", 10, 1),
}


def postgres_env(url: str, shown: str) -> dict[str, str]:
    """The library's settings for `postgresql://user:pass@host:port/db?option=value`.

    Options: pool_size, max_overflow, lock_timeout (seconds to wait for the
    events table lock), connect_timeout (seconds), schema. Without a password
    in the URL, libpq's PGPASSWORD or ~/.pgpass apply. `shown` is the URL as
    messages may print it (password redacted).
    """
    parts = urlsplit(url)
    dbname = unquote(parts.path.removeprefix("/"))
    if not dbname or "/" in dbname:
        raise StoreError(f"store URL {shown!r} names no database (postgresql://.../dbname)")
    try:
        port = parts.port or 5432
    except ValueError:
        raise StoreError(f"store URL {shown!r} has an invalid port") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {*POSTGRES_OPTIONS, "schema"})
    if unknown:
        raise StoreError(f"store URL {shown!r}: unknown option(s) {', '.join(unknown)}")
    password = parts.password
    env = {
        "PERSISTENCE_MODULE": get_topic(LedgerPostgresFactory),
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": unquote(parts.hostname or "localhost"),
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": unquote(parts.username or getpass.getuser()),
        "POSTGRES_PASSWORD": (
            unquote(password) if password is not None else os.environ.get("PGPASSWORD", "")
        ),
        "POSTGRES_SCHEMA": query.get("schema", [""])[-1],
    }
    for option, (setting, default, minimum) in POSTGRES_OPTIONS.items():
        raw = query.get(option, [str(default)])[-1]
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise StoreError(
                f"store URL {shown!r}: {option} must be an integer >= {minimum}, not {raw!r}"
            )
        env[setting] = str(value)
    return env
