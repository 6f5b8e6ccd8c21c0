"""A throwaway PostgreSQL cluster for the test session, and store fixtures.

`postgres_cluster` (session scope) runs `initdb` and `pg_ctl` on a temporary
data directory, on a free port on 127.0.0.1, as the `postgres` user when the
tests run as root (initdb refuses root), and removes everything at the end,
also when tests fail. Under pytest-xdist each worker starts its own cluster.
`postgres_url` is a fresh database per test; `store_url` runs a test once per
backend (SQLite and PostgreSQL).

Without PostgreSQL binaries the PostgreSQL tests are skipped, with the
reason; with TRAINLEDGER_REQUIRE_POSTGRES=1 (CI) they fail instead. The
binaries are looked up in TRAINLEDGER_PG_BIN, then PATH, then the usual
`/usr/lib/postgresql/<version>/bin` of Debian and Ubuntu packages.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest

REQUIRE_ENV = "TRAINLEDGER_REQUIRE_POSTGRES"
BIN_ENV = "TRAINLEDGER_PG_BIN"
SERVICE_USER = "postgres"
SUPERUSER = "trainledger"
# Only for this throwaway cluster: the tests also prove it never gets printed.
SUPERUSER_PASSWORD = "pg-test-secret-7f3a"


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, if PostgreSQL is installed."""
    candidates: list[str] = []
    if os.environ.get(BIN_ENV):
        candidates.append(os.environ[BIN_ENV])
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        directory = Path(candidate)
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresCluster:
    """One running server; `url(db)` names a database on it."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if completed.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({completed.returncode}): "
                f"{completed.stderr.strip()} {tail}"
            )

    def start(self) -> None:
        password_file = self.root / "pwfile"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        self._chown(password_file)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(password_file),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        settings = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.root / "server.log"),
            "--wait",
            "--timeout=60",
            "-o",
            " ".join(settings),
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "stop", "--pgdata", str(self.data_dir), "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            shutil.chown(path, user=self.run_as, group=None)

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_service_user() -> str | None:
    """The user to run PostgreSQL as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    if not _user_exists(SERVICE_USER):
        # Another xdist worker may be adding it at the same moment: check again.
        add = ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", SERVICE_USER]
        added = subprocess.run(add, capture_output=True, text=True, check=False)
        if added.returncode != 0 and not _user_exists(SERVICE_USER):
            raise RuntimeError(f"cannot create the {SERVICE_USER} user: {added.stderr.strip()}")
    return SERVICE_USER


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def start_cluster(bin_dir: Path) -> PostgresCluster:
    run_as = ensure_service_user()
    last_error: Exception | None = None
    for _ in range(3):  # another process may take the free port before the server does
        root = Path(tempfile.mkdtemp(prefix="trainledger-pg-"))
        cluster = PostgresCluster(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
        if run_as is not None:
            shutil.chown(root, user=run_as, group=None)
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            last_error = error
            cluster.stop()
            time.sleep(0.2)
            continue
        return cluster
    raise RuntimeError(f"could not start a PostgreSQL test cluster: {last_error}")


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL 15 server for this test session (or xdist worker)."""
    bin_dir = find_binaries()
    if bin_dir is None:
        unavailable(
            f"PostgreSQL binaries (initdb, pg_ctl) not found on PATH, in {BIN_ENV} "
            "or /usr/lib/postgresql/*/bin"
        )
    cluster = start_cluster(bin_dir)
    # Teardown below runs when tests fail too; atexit covers an interrupted
    # session, and SIGTERM (a CI timeout, `kill`) is turned into an interrupt
    # so pytest unwinds through this teardown instead of dying with the
    # server left running.
    atexit.register(cluster.stop)
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database on the session's cluster."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    with contextlib.suppress(psycopg.Error):
        postgres_cluster.drop_database(name)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
