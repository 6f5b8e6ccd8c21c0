"""The queries of SPEC §5 over HTTP, `?asOf=` on each that takes it, and `verify`.

Answers are the CLI's `--json` documents. A lineage also comes as Graphviz
dot, Mermaid or SVG (`?format=`), drawn on the service (`svg`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from trainledger.adapters.http.answers import JSONAnswer, answer
from trainledger.adapters.http.auth import LedgerRoute, service_of
from trainledger.adapters.http.svg import lineage_svg
from trainledger.service.ledger import TrainingLedger
from trainledger.service.queries import parse_moment

router = APIRouter(prefix="/v1", route_class=LedgerRoute, tags=["queries"])

MAX_SQL_INTEGER = 2**63 - 1

AsOf = Annotated[
    str | None,
    Query(
        alias="asOf",
        description="Answer as it was then: ISO-8601 with a time zone (2025-01-31T12:00:00Z).",
    ),
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_SQL_INTEGER, description="At most N, newest first.")
]


def as_of_moment(text: str | None) -> datetime | None:
    return None if text is None or not text.strip() else parse_moment(text)


@router.get("/runs", summary="Training runs, newest first")
async def list_runs(
    request: Request,
    as_of: AsOf = None,
    limit: Limit = None,
    status: str | None = None,
    family: str | None = None,
    dataset: Annotated[str | None, Query(description="A dataset fingerprint.")] = None,
) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request,
        lambda ledger: ledger.list_runs(
            status=status, family=family, dataset_fingerprint=dataset, as_of=moment, limit=limit
        ),
    )


@router.get("/runs/{run_id}", summary="One run ({} as of a moment before it existed)")
async def show_run(request: Request, run_id: str, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request,
        lambda ledger: ledger.show_run(ledger.queries.resolve_id(run_id, ("run",)), as_of=moment),
    )


@router.get("/checkpoints", summary="Checkpoints, newest first")
async def list_checkpoints(
    request: Request,
    as_of: AsOf = None,
    limit: Limit = None,
    run: Annotated[str | None, Query(description="Checkpoints of one run.")] = None,
    family: str | None = None,
    deployable: bool | None = None,
) -> Any:
    moment = as_of_moment(as_of)

    def work(ledger: TrainingLedger) -> Any:
        run_id = None if run is None else ledger.queries.resolve_id(run, ("run",))
        return ledger.list_checkpoints(
            run_id=run_id, family=family, deployable=deployable, as_of=moment, limit=limit
        )

    return await answer(request, work)


def _checkpoint(ledger: TrainingLedger, text: str) -> str:
    return ledger.queries.resolve_id(text, ("checkpoint",))


@router.get("/checkpoints/{checkpoint_id}", summary="One checkpoint, its evals and deployability")
async def show_checkpoint(request: Request, checkpoint_id: str, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(
        request,
        lambda ledger: ledger.show_checkpoint(_checkpoint(ledger, checkpoint_id), as_of=moment),
    )


LINEAGE_TYPES = {
    "dot": "text/vnd.graphviz; charset=utf-8",
    "mermaid": "text/plain; charset=utf-8",
    "svg": "image/svg+xml",
}


@router.get(
    "/checkpoints/{checkpoint_id}/lineage",
    summary="Where a checkpoint comes from: json, Graphviz dot, Mermaid or SVG",
    responses={
        200: {
            "content": {
                "image/svg+xml": {},
                "text/vnd.graphviz": {},
                "text/plain": {},
            }
        }
    },
)
async def lineage(
    request: Request,
    checkpoint_id: str,
    as_of: AsOf = None,
    format: Literal["json", "dot", "mermaid", "svg"] = "json",
) -> Any:
    moment = as_of_moment(as_of)
    full_id, document = await service_of(request).pool.call(
        lambda ledger: (
            (found := _checkpoint(ledger, checkpoint_id)),
            ledger.lineage(found, as_of=moment),
        ),
    )
    if format == "json":
        return JSONAnswer(document)
    pictures = service_of(request).settings.pictures
    if format == "svg":
        nodes, edges = pictures.graph(document) if document else ([], [])
        title = "" if document else pictures.nothing_as_of("checkpoint", full_id, moment)
        return Response(lineage_svg(nodes, edges, title=title), media_type=LINEAGE_TYPES[format])
    if document:
        lines = pictures.formats[format](document)
    else:
        lines = pictures.empty[format](pictures.nothing_as_of("checkpoint", full_id, moment))
    return Response("\n".join(lines) + "\n", media_type=LINEAGE_TYPES[format])


@router.get("/evals", summary="Evals, newest first")
async def list_evals(
    request: Request,
    as_of: AsOf = None,
    limit: Limit = None,
    checkpoint: Annotated[str | None, Query(description="Evals of one checkpoint.")] = None,
    benchmark: Annotated[str | None, Query(description="Evals on one benchmark.")] = None,
    verdict: str | None = None,
    family: str | None = None,
) -> Any:
    moment = as_of_moment(as_of)

    def work(ledger: TrainingLedger) -> Any:
        checkpoint_id = None if checkpoint is None else _checkpoint(ledger, checkpoint)
        return ledger.list_evals(
            checkpoint_id=checkpoint_id,
            benchmark_id=benchmark,
            verdict=verdict,
            family=family,
            as_of=moment,
            limit=limit,
        )

    return await answer(request, work)


@router.get("/impact", summary="The runs trained on a dataset, their checkpoints, deployable ones")
async def impact(
    request: Request,
    dataset: Annotated[str, Query(description="The dataset's fingerprint (16 hex digits).")],
    as_of: AsOf = None,
) -> Any:
    moment = as_of_moment(as_of)
    return await answer(request, lambda ledger: ledger.impact(dataset, as_of=moment))


@router.get("/stats", summary="Counts of runs, checkpoints and evals")
async def stats(request: Request, as_of: AsOf = None) -> Any:
    moment = as_of_moment(as_of)
    return await answer(request, lambda ledger: ledger.stats(as_of=moment))


@router.get("/history/{aggregate_id}", summary="Every event of one run or checkpoint")
async def history(request: Request, aggregate_id: str) -> Any:
    return await answer(
        request, lambda ledger: ledger.history(ledger.queries.resolve_id(aggregate_id))
    )


EVENTS_LIMIT = 1000


@router.get("/events", summary="The global event log after a position, oldest first")
async def events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_SQL_INTEGER)] = 0,
    limit: Annotated[int, Query(ge=1, le=EVENTS_LIMIT)] = EVENTS_LIMIT,
) -> Any:
    return await answer(request, lambda ledger: {"events": ledger.events_after(after, limit)})


@router.get("/verify", summary="Recompute every hash chain and the log's digest")
async def verify(
    request: Request,
    digest: Annotated[str | None, Query(description="A digest from an earlier verify.")] = None,
) -> Any:
    return await answer(request, lambda ledger: ledger.verify(digest=digest))
