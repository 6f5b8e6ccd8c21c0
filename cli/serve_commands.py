"""`trainledger serve`: the ledger as an HTTP service (SPEC §10), on uvicorn.

The composition root of the service: it checks the store holds an admin
token (unless `--no-auth`, which binds only to loopback), hands the HTTP
adapter (`adapters.http`) the store, the ledgers' opener and the CLI's
lineage pictures, and runs it until SIGTERM or Ctrl-C. A stop lets the
requests in flight finish (a write completes or never starts: one append
each) and ends the event streams.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from urllib.parse import urlsplit

import click

from trainledger.adapters.sqlite import write_turns
from trainledger.adapters.store import open_ledger, redact
from trainledger.cli import output
from trainledger.cli.app import Session, cli, pass_session
from trainledger.cli.pictures import (
    empty_lineage_dot,
    empty_lineage_mermaid,
    lineage_dot,
    lineage_graph,
    lineage_mermaid,
    nothing_as_of,
)
from trainledger.service.ledger import TrainingLedger

GRACE_SECONDS = 10
"""How long a stop waits for requests in flight before cancelling them."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8321, show_default=True, help="TCP port."
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without tokens, as the local actor (loopback addresses only).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the one address and store, each with its own threads: "
    "past one, requests are no longer bound to one CPU (not for memory://).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Threads running the ledger's calls in each process (each with its own "
    "connection); more than 2 only cost CPU on SQLite, whose writes take turns anyway.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log a line per request on stdout (off: a tenth of a write request's CPU).",
)
@pass_session
def serve(
    session: Session,
    host: str,
    port: int,
    no_auth: bool,
    processes: int,
    workers: int,
    access_log: bool,
) -> None:
    """Serve the ledger over HTTP: the API under /v1, the event stream, the web pages.

    Clients authenticate with `Authorization: Bearer TOKEN` (`trainledger token
    create`); the actor of every write is the token's name. The service
    refuses to start without an admin token, unless --no-auth.
    """
    if no_auth and not is_loopback(host):
        raise click.UsageError(f"--no-auth serves only on a loopback address, not {host!r}")
    store = session.store
    shared = urlsplit(store).scheme.lower() == "memory"
    if shared and processes > 1:
        raise click.UsageError("--processes: a memory:// store lives in one process")
    # A service with tokens needs a ledger holding one; without, it may start a new store.
    first = open_ledger(store, create=no_auth)
    if not no_auth and not first.access.admin_token_exists():
        first.close()
        raise click.ClickException(
            "no admin token in this ledger: issue one with "
            "`trainledger token create NAME --role admin` (or serve --no-auth on loopback)"
        )
    if not shared:
        first.close()
    service = Service(session, host, port, no_auth, workers, access_log, first if shared else None)
    auth = "no authentication" if no_auth else "bearer tokens"
    shown = redact(store) if "@" in store or "password" in store.lower() else store
    if processes == 1:
        output.note(f"trainledger: serving {shown} on http://{host}:{port} ({auth})")
        service.run()
        return
    listening = _listen(host, port)
    port = listening.getsockname()[1]
    output.note(
        f"trainledger: serving {shown} on http://{host}:{port} ({auth}, {processes} processes)"
    )
    service.run_processes(processes, listening)


def _listen(host: str, port: int) -> socket.socket:
    """The one listening socket the processes share (bound before any of them starts)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror}") from None


class Service:
    """One serving process's configuration: its app and uvicorn server are made in the
    process that runs them, after any fork (a ledger's threads and connections do not
    survive one)."""

    def __init__(
        self,
        session: Session,
        host: str,
        port: int,
        no_auth: bool,
        workers: int,
        access_log: bool,
        memory_ledger: TrainingLedger | None,
    ) -> None:
        self.session = session
        self.host, self.port = host, port
        self.no_auth, self.workers, self.access_log = no_auth, workers, access_log
        self.memory_ledger = memory_ledger

    def run(
        self,
        sockets: list[socket.socket] | None = None,
        children: list[int] | None = None,
        stops: list[int] | None = None,
    ) -> None:
        """Serve in this process until asked to stop (then stop `children` too); a signal
        in `stops`, taken before uvicorn listened for them, stops it once it has started."""
        import uvicorn

        from trainledger.adapters.http.app import LineagePictures, Settings, create_app

        store = self.session.store
        memory_ledger = self.memory_ledger
        settings = Settings(
            store_url=store,
            open_ledger=(
                (lambda: memory_ledger)
                if memory_ledger is not None
                else (lambda: open_ledger(store, create=False))
            ),
            pictures=LineagePictures(
                formats={"dot": lineage_dot, "mermaid": lineage_mermaid},
                empty={"dot": empty_lineage_dot, "mermaid": empty_lineage_mermaid},
                graph=lineage_graph,
                nothing_as_of=nothing_as_of,
            ),
            auth=not self.no_auth,
            local_actor=self.session.actor,
            workers=self.workers,
        )
        config = uvicorn.Config(
            create_app(settings),
            host=self.host,
            port=self.port,
            log_level="info",
            access_log=self.access_log,
            timeout_graceful_shutdown=GRACE_SECONDS,
            timeout_keep_alive=5,
            limit_concurrency=512,
            server_header=False,
            proxy_headers=False,
        )
        StoppingServer(config, settings.stopping, children, stops).run(sockets)

    def run_processes(self, processes: int, listening: socket.socket) -> None:
        """Serve in `processes` processes on one listening socket: this one and its forks.

        They take turns at a SQLite store's write lock (`write_turns`); a stop
        (SIGTERM, or Ctrl-C, which reaches them all) stops every one, and this
        process waits for the others before it returns.
        """
        write_turns.share_between_processes()
        parent = os.getpid()
        children: list[int] = []
        with StopsBeforeServing() as stops:
            for _ in range(processes - 1):
                pid = os.fork()
                if pid == 0:  # a serving process of its own, which never returns to the CLI
                    code = 1
                    try:
                        if _stops_with(parent):
                            self.run([listening], stops=stops.asked)
                        code = 0
                    except Exception as error:
                        output.note(f"error: a serving process failed: {error}")
                    finally:
                        os._exit(code)
                children.append(pid)
            try:
                self.run([listening], children, stops.asked)
            finally:  # ended otherwise than by a stop (which waited for them already)
                _ask_to_stop(children)
                _wait_for(children)
        stops.end_as_asked()


def _stops_with(parent: int) -> bool:
    """Have this forked process asked to stop when `parent` ends, however it ends (Linux's
    parent-death signal; elsewhere the parent's stop is the only one); False when it has
    ended already."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent  # else it ended before the signal was asked for


PR_SET_PDEATHSIG = 1


def _ask_to_stop(children: list[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _wait_for(children: list[int]) -> None:
    """Wait for the other serving processes to end (past the grace, make them)."""
    deadline = time.monotonic() + GRACE_SECONDS + 5
    for pid in children:
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.02)
        except ChildProcessError:
            pass  # already waited for


class StopsBeforeServing:
    """SIGTERM and Ctrl-C, noted from before the forks until uvicorn listens for them.

    Another serving process may answer before this one's uvicorn has started: a stop
    then would otherwise end this process at once, without waiting for the others.
    Noted instead, it stops the server as soon as it has started (`StoppingServer`);
    uvicorn hands back the signal that stopped it, and `end_as_asked` ends the
    process with it, once the others have ended.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopsBeforeServing:
        self.previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _note(self, sig: int, frame: FrameType | None) -> None:
        self.asked.append(sig)

    def end_as_asked(self) -> None:
        """End as the first stop asked (the signal's own way), if one was asked."""
        if self.asked:
            signal.raise_signal(self.asked[0])


class StoppingServer:
    """uvicorn's server, telling the service's event streams to end when asked to stop, and
    the other serving processes (`children`) too, which it waits for before it ends; a
    signal in `stops` (taken before it listened for them) stops it once started."""

    def __init__(
        self,
        config: object,
        stopping: threading.Event,
        children: list[int] | None = None,
        stops: list[int] | None = None,
    ) -> None:
        import asyncio

        import uvicorn

        others = children or []
        early = stops if stops is not None else []

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if early:  # asked to stop before uvicorn listened for it
                    self.handle_exit(early[0], None)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                stopping.set()
                _ask_to_stop(others)
                super().handle_exit(sig, frame)

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                await super().shutdown(sockets=sockets)
                # Before uvicorn ends this process with the signal that stopped it.
                await asyncio.get_running_loop().run_in_executor(None, _wait_for, others)

        assert isinstance(config, uvicorn.Config)
        self.server = Server(config)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        self.server.run(sockets=sockets)
