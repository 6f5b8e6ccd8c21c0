"""`GET /v1/events/stream`: the event log as Server-Sent Events (SPEC §10).

Each event is sent as `id: <log position>` and `data: <the event document,
as trainledger events prints it>`. A client resuming with `Last-Event-ID`
(or `?after=`) gets every event after that position, in order, none
skipped and none repeated. Then the stream follows the log: it looks at
the log's last position every `poll_interval` seconds (one cheap query) and
sends what was appended since, by any process. A comment line is sent as a
heartbeat when nothing happened for `heartbeat` seconds. The stream ends
when the client goes away (Starlette stops the generator) or when the
service is asked to stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from trainledger.adapters.http.auth import LedgerRoute, service_of
from trainledger.adapters.http.queries import MAX_SQL_INTEGER
from trainledger.domain.errors import ValidationError
from trainledger.service.ledger import TrainingLedger

router = APIRouter(prefix="/v1", route_class=LedgerRoute, tags=["events"])

PAGE = 500


def _resume_position(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not text.isdigit() or int(text) > MAX_SQL_INTEGER:
            raise ValidationError(f"Last-Event-ID {text!r} is not a log position")
        return int(text)
    return after or 0


def _page_after(position: int) -> Callable[[TrainingLedger], list[dict[str, Any]]]:
    return lambda ledger: ledger.events_after(position, PAGE)


def _last_position(ledger: TrainingLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


@router.get(
    "/events/stream",
    summary="Server-Sent Events: every event after Last-Event-ID, then new ones as appended",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def event_stream(
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_SQL_INTEGER)] = None,
) -> StreamingResponse:
    service = service_of(request)
    settings = service.settings
    position = _resume_position(last_event_id, after)

    async def events() -> AsyncIterator[bytes]:
        nonlocal position
        yield b": trainledger event stream\nretry: 1000\n\n"
        quiet_since = time.monotonic()
        end = position + 1  # look at the log at once
        while not settings.stopping.is_set():
            if end > position:
                page = await service.pool.call(_page_after(position))
                for document in page:
                    data = orjson.dumps(document).decode()
                    yield f"id: {document['position']}\ndata: {data}\n\n".encode()
                    position = document["position"]
                if len(page) == PAGE:
                    continue
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settings.heartbeat:
                yield b": heartbeat\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(settings.poll_interval)
            end = await service.pool.call(_last_position)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
