"""`trainledger serve`: the ledger as an HTTP service (SPEC §10), on uvicorn.

The composition root of the service: it checks the store holds an admin
token (unless `--no-auth`, which binds only to loopback), hands the HTTP
adapter (`adapters.http`) the store, the ledgers' opener and the CLI's
lineage pictures, and runs it until SIGTERM or Ctrl-C. A stop lets the
requests in flight finish (a write completes or never starts: one append
each) and ends the event streams.
"""

from __future__ import annotations

import ipaddress
import threading
from types import FrameType
from urllib.parse import urlsplit

import click

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
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Threads running the ledger's calls (each with its own connection); "
    "more than 2 only cost CPU on SQLite, whose writes take turns anyway.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log a line per request on stdout (off: a tenth of a write request's CPU).",
)
@pass_session
def serve(
    session: Session, host: str, port: int, no_auth: bool, workers: int, access_log: bool
) -> None:
    """Serve the ledger over HTTP: the API under /v1, the event stream, the web pages.

    Clients authenticate with `Authorization: Bearer TOKEN` (`trainledger token
    create`); the actor of every write is the token's name. The service
    refuses to start without an admin token, unless --no-auth.
    """
    import uvicorn

    from trainledger.adapters.http.app import LineagePictures, Settings, create_app

    if no_auth and not is_loopback(host):
        raise click.UsageError(f"--no-auth serves only on a loopback address, not {host!r}")
    store = session.store
    shared = urlsplit(store).scheme.lower() == "memory"
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
    settings = Settings(
        store_url=store,
        open_ledger=(lambda: first) if shared else (lambda: open_ledger(store, create=False)),
        pictures=LineagePictures(
            formats={"dot": lineage_dot, "mermaid": lineage_mermaid},
            empty={"dot": empty_lineage_dot, "mermaid": empty_lineage_mermaid},
            graph=lineage_graph,
            nothing_as_of=nothing_as_of,
        ),
        auth=not no_auth,
        local_actor=session.actor,
        workers=workers,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=GRACE_SECONDS,
        timeout_keep_alive=5,
        limit_concurrency=512,
        server_header=False,
        proxy_headers=False,
    )
    auth = "no authentication" if no_auth else "bearer tokens"
    shown = redact(store) if "@" in store or "password" in store.lower() else store
    output.note(f"trainledger: serving {shown} on http://{host}:{port} ({auth})")
    StoppingServer(config, settings.stopping).run()


class StoppingServer:
    """uvicorn's server, telling the service's event streams to end when asked to stop."""

    def __init__(self, config: object, stopping: threading.Event) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                stopping.set()
                super().handle_exit(sig, frame)

        assert isinstance(config, uvicorn.Config)
        self.server = Server(config)

    def run(self) -> None:
        self.server.run()
