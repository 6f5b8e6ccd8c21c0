"""Store URLs and the one function that opens a ledger on them.

    sqlite:///relative/path.db       (relative to the working directory)
    sqlite:////absolute/path.db      (?synchronous=normal to trade durability for speed,
                                      ?mode=ro to open it read-only, as a file
                                      this process cannot write always is)
    postgresql://user:pass@host:port/db
    memory://

`open_ledger` is the Python API's entry point and the CLI's composition root.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.application import Application
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    Mapper,
    OperationalError,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from trainledger.adapters.canonical_json import orjson_canonical_json
from trainledger.adapters.files import digest_artifact, load_dataset, locate_base_model
from trainledger.adapters.memory.recorder import MemoryLedgerFactory
from trainledger.adapters.memory.view import MemoryLedgerView
from trainledger.adapters.persistence import OrjsonTranscoder, PydanticMapper
from trainledger.adapters.sqlite.log import SQLiteLogReader
from trainledger.adapters.sqlite.recorder import (
    CREATE_ENV,
    READ_ONLY_ENV,
    SYNCHRONOUS_ENV,
    SYNCHRONOUS_MODES,
    LedgerSQLiteFactory,
)
from trainledger.adapters.sqlite.view import SQLiteLedgerView
from trainledger.adapters.trainer import SubprocessTrainerRunner, locate_artifact
from trainledger.domain.errors import ConflictError, StoreError
from trainledger.projections.log import LogReader
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.projections.view import LedgerView
from trainledger.service.ledger import TrainingLedger
from trainledger.service.unit_of_work import lock_timed_out

if TYPE_CHECKING:
    from trainledger.domain.aggregate import Clock

DEFAULT_STORE: Final = "sqlite:///.trainledger/ledger.db"
STORE_ENV: Final = "TRAINLEDGER_STORE"
# The library's setting for the tracking recorder class: the projection's view
# for the store (a store without one gets an in-memory view per process).
VIEW_TOPIC_ENV: Final = "TRACKING_RECORDER_TOPIC"


def redact(url: str) -> str:
    """The URL with every password replaced, for messages and logs.

    Both the `user:password@` of the address and a query option naming a
    password (libpq's `?password=`, `?sslpassword=`) are hidden.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if parts.query:
        options = [option.partition("=") for option in parts.query.split("&")]
        parts = parts._replace(
            query="&".join(
                f"{name}{equals}{'***' if 'password' in unquote(name).lower() else value}"
                for name, equals, value in options
            )
        )
    return parts.geturl()


def store_env(url: str) -> dict[str, str]:
    """Translate a store URL into the library's environment settings."""
    env = {
        "MAPPER_TOPIC": get_topic(PydanticMapper),
        "TRANSCODER_TOPIC": get_topic(OrjsonTranscoder),
    }
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        env["PERSISTENCE_MODULE"] = get_topic(MemoryLedgerFactory)
        env[VIEW_TOPIC_ENV] = get_topic(MemoryLedgerView)
        return env
    if scheme == "sqlite":
        shown = redact(url)
        if parts.netloc:
            raise StoreError(
                f"store URL {shown!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise StoreError(f"store URL {shown!r} names no database file")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"synchronous", "mode", "lock_timeout"})
        if unknown:
            raise StoreError(f"store URL {shown!r}: unknown option(s) {', '.join(unknown)}")
        synchronous = query.get("synchronous", ["full"])[-1].lower()
        if synchronous not in SYNCHRONOUS_MODES:
            raise StoreError(
                f"store URL {shown!r}: synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        mode = query.get("mode", ["rw"])[-1].lower()
        if mode not in ("ro", "rw"):
            raise StoreError(f"store URL {shown!r}: mode must be ro or rw")
        lock_timeout = query.get("lock_timeout", ["30"])[-1]
        if not (lock_timeout.isdigit() and int(lock_timeout) >= 1):
            raise StoreError(
                f"store URL {shown!r}: lock_timeout must be a whole number of seconds >= 1"
            )
        env.update(
            PERSISTENCE_MODULE=get_topic(LedgerSQLiteFactory),
            SQLITE_DBNAME=path,
            SQLITE_LOCK_TIMEOUT=lock_timeout,
        )
        env[VIEW_TOPIC_ENV] = get_topic(SQLiteLedgerView)
        env[SYNCHRONOUS_ENV] = synchronous
        env[READ_ONLY_ENV] = "1" if mode == "ro" else "0"
        return env
    if scheme in ("postgresql", "postgres"):
        # Imported here: psycopg costs every SQLite command a tenth of a second.
        from trainledger.adapters.postgres.settings import postgres_env
        from trainledger.adapters.postgres.view import PostgresLedgerView

        env.update(postgres_env(url, shown=redact(url)))
        env[VIEW_TOPIC_ENV] = get_topic(PostgresLedgerView)
        return env
    raise StoreError(
        f"unsupported store URL {redact(url)!r}; use sqlite:///path.db, "
        "postgresql://user:pass@host:port/db or memory://"
    )


def log_reader(recorder: ApplicationRecorder, mapper: Mapper[Any]) -> LogReader:
    """The fastest reader of this recorder's log."""
    if (
        isinstance(recorder, SQLiteApplicationRecorder)
        and recorder.datastore.originator_id_type == "uuid"
    ):
        return SQLiteLogReader(recorder, mapper)
    return LogReader(recorder, mapper)


def open_read_model(app: Application[Any]) -> ProjectionReadModel:
    """The read model of an application, on the view its environment names.

    `TRACKING_RECORDER_TOPIC` (the library's setting) names the view class for
    the store; the application's infrastructure factory builds it on the
    store's own datastore. A store without one gets an in-memory view, filled
    from the log by the first query of each process.
    """
    view: LedgerView
    if app.env.get(InfrastructureFactory.TRACKING_RECORDER_TOPIC):
        tracking = app.factory.tracking_recorder()
        if not isinstance(tracking, LedgerView):
            raise TypeError(f"{type(tracking).__name__} is not a LedgerView")
        view = tracking
    else:
        view = MemoryLedgerView()
    log = log_reader(app.recorder, app.mapper)
    if (
        isinstance(view, SQLiteLedgerView)
        and isinstance(log, SQLiteLogReader)
        and view.datastore is log.recorder.datastore
    ):
        view.log_table = log.recorder.events_table_name
    return ProjectionReadModel(app.name, log, view, replay_view=MemoryLedgerView)


def open_ledger(
    url: str | None = None, *, create: bool = True, clock: Clock | None = None
) -> TrainingLedger:
    """Open the ledger at a store URL (default: `TRAINLEDGER_STORE`, then the SQLite file).

    With `create=False` (what a query opens with) the store must hold a
    ledger already: a path or database with none is `NoLedgerError`, and
    nothing is written. A file that is not a ledger is refused either way.
    """
    url = url or os.environ.get(STORE_ENV) or DEFAULT_STORE
    env = store_env(url)
    env[CREATE_ENV] = "1" if create else "0"
    try:
        return TrainingLedger(
            env,
            read_model=open_read_model,
            load_dataset=load_dataset,
            locate_base_model=locate_base_model,
            digest_artifact=digest_artifact,
            run_trainer=SubprocessTrainerRunner(),
            locate_artifact=locate_artifact,
            canonical_json=orjson_canonical_json,
            clock=clock,
        )
    except StoreError:
        raise
    except OperationalError as error:
        if lock_timed_out(error):
            raise ConflictError(
                f"store {redact(url)} stayed locked by other writers past its lock timeout; "
                "retry the command"
            ) from None
        raise StoreError(f"cannot open store {redact(url)}: {error}") from None
    except Exception as error:
        raise StoreError(f"cannot open store {redact(url)}: {error}") from None
