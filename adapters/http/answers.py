"""A route's JSON answer: the ledger's document, encoded once, as the CLI's `--json` prints it.

`answer` runs a route's work on a worker thread (`LedgerPool.call`) and
hands back its document already encoded with orjson (the CLI's encoder and
options, `cli/output.py`): FastAPI sends a `Response` as it is, without
judging the document against a response model or encoding it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from trainledger.adapters.http.auth import service_of
from trainledger.service.ledger import TrainingLedger

OPTIONS = orjson.OPT_NON_STR_KEYS


class JSONAnswer(Response):
    """A document as JSON, encoded by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=OPTIONS)


async def answer(request: Request, work: Callable[[TrainingLedger], Any]) -> JSONAnswer:
    """`work(ledger)`'s document, run on a worker thread, as the answer with the status its
    route declares (`status_code=` of the route's decorator, which the OpenAPI shows too)."""
    route = request.scope.get("route")
    status = getattr(route, "status_code", None) or 200
    return JSONAnswer(await service_of(request).pool.call(work), status_code=status)
