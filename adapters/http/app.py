"""The service's FastAPI application: its settings, its parts, and its life.

`create_app(settings)` is what `trainledger serve` runs on uvicorn. The
routers are one module per resource (`commands`, `queries`, `tokens`,
`stream`, `pages`): a new resource (SPEC §9's promotions, shadow
observations and deployments) is one more module in `ROUTERS`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from trainledger.adapters.http import errors
from trainledger.adapters.http.auth import Admission
from trainledger.adapters.http.ledgers import LedgerOpener, LedgerPool
from trainledger.adapters.http.limits import MAX_BODY, BodyLimit, SecurityHeaders

Document = dict[str, Any]
Nodes = list[tuple[str, list[str]]]
Edges = list[tuple[str, str, str, bool]]


@dataclass(frozen=True)
class LineagePictures:
    """How a lineage is drawn (the CLI's renderings, handed over by the composition root)."""

    formats: Mapping[str, Callable[[Document], list[str]]]
    """dot and mermaid, as `trainledger lineage --format` prints them."""
    empty: Mapping[str, Callable[[str], list[str]]]
    """The same for an empty as-of answer, titled with a note."""
    graph: Callable[[Document], tuple[Nodes, Edges]]
    """The lineage's nodes (id, label lines) and edges (from, to, label, dashed)."""
    nothing_as_of: Callable[[str, str, datetime | None], str]
    """The note of an empty as-of answer."""


@dataclass
class Settings:
    """What one service is: its store, whether it checks tokens, how it draws."""

    store_url: str
    open_ledger: LedgerOpener
    pictures: LineagePictures
    auth: bool = True
    local_actor: str = "local"
    """The actor of writes without authentication (`--no-auth`)."""
    workers: int = 2
    max_body: int = MAX_BODY
    poll_interval: float = 0.2
    """Seconds between the event stream's looks at the log's end."""
    heartbeat: float = 15.0
    """Seconds between the event stream's keep-alive comments."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the service is asked to stop: event streams end."""


class Service:
    """What the routes share: the settings, the ledgers' threads, who may come in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = LedgerPool(settings.open_ledger, settings.store_url, settings.workers)
        self.admission = Admission(self.pool, auth=settings.auth, local_actor=settings.local_actor)


def create_app(settings: Settings) -> FastAPI:
    """The service on one store (see the module doc)."""
    from trainledger.adapters.http import commands, deployments, pages, queries, stream, tokens

    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            settings.stopping.set()
            service.pool.close()

    app = FastAPI(
        title="trainledger",
        summary="The training ledger as a service (SPEC §10).",
        version=_version(),
        docs_url=None,  # Swagger UI loads its assets from a CDN: /docs is a page of ours
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)
    for module in (commands, queries, deployments, tokens, stream, pages):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=settings.max_body)
    app.add_middleware(SecurityHeaders)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "tl_... token"}
        }
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trainledger")
    except PackageNotFoundError:
        return "0"
