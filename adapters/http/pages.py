"""The web pages (SPEC §10): server-rendered, no script, every asset served here.

`/` (stats, deployment slots, latest runs and checkpoints), `/runs/{id}`,
`/checkpoints/{id}` (the lineage drawn as SVG, evals, deployability,
promotion decisions, bindings), `/datasets/{fp}` (impact),
each with an as-of form (`?asOf=`); `/login` takes a token into an HttpOnly,
SameSite=Strict cookie (Secure over https), `/logout` drops it; `/docs`
lists the API's endpoints from its OpenAPI document. Templates autoescape
everything; the one piece of markup inserted as is, the SVG, escapes its
own text (`svg`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from trainledger.adapters.http.auth import COOKIE, LedgerRoute, service_of
from trainledger.adapters.http.errors import status_of
from trainledger.adapters.http.queries import as_of_moment
from trainledger.adapters.http.svg import lineage_svg
from trainledger.domain.errors import LedgerError, UnauthenticatedError
from trainledger.service.ledger import TrainingLedger

HERE = Path(__file__).parent
STATIC = HERE / "static"
router = APIRouter(route_class=LedgerRoute, include_in_schema=False)
PAGE: dict[str, Any] = {"x-page": True}
PUBLIC: dict[str, Any] = {"x-role": "public"}
LATEST = 10

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def short(identifier: str | None) -> str:
    return "-" if identifier is None else identifier[:8]


templates.filters["short"] = short


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    html = templates.get_template(template).render(
        principal=principal, auth=service_of(request).settings.auth, **values
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


async def page(
    request: Request,
    template: str,
    work: Callable[[TrainingLedger, Any], dict[str, Any]],
    as_of: str | None,
) -> HTMLResponse:
    """A page of what `work` answers; a refusal (a bad asOf, an unknown id) is a page too."""
    try:
        moment = as_of_moment(as_of)
        values = await service_of(request).pool.call(work_at(work, moment))
    except UnauthenticatedError:
        raise  # the caller's token, checked with the work: the sign-in form
    except LedgerError as error:
        return render(
            request, "error.html", status_of(error), code=error.code, message=error.message
        )
    return render(request, template, as_of=as_of or "", **values)


def work_at(work: Callable[..., dict[str, Any]], moment: Any) -> Callable[[TrainingLedger], Any]:
    return lambda ledger: work(ledger, moment)


@router.get("/", openapi_extra=PAGE)
async def dashboard(request: Request, asOf: str | None = None) -> Response:  # noqa: N803
    def work(ledger: TrainingLedger, moment: Any) -> dict[str, Any]:
        return {
            "stats": ledger.stats(as_of=moment),
            "runs": ledger.list_runs(as_of=moment, limit=LATEST)["runs"],
            "checkpoints": ledger.list_checkpoints(as_of=moment, limit=LATEST)["checkpoints"],
            "deployments": ledger.deployments.list_slots(as_of=moment)["slots"],
        }

    return await page(request, "dashboard.html", work, asOf)


@router.get("/runs/{run_id}", openapi_extra=PAGE)
async def run_page(request: Request, run_id: str, asOf: str | None = None) -> Response:  # noqa: N803
    def work(ledger: TrainingLedger, moment: Any) -> dict[str, Any]:
        full = ledger.queries.resolve_id(run_id, ("run",))
        run = ledger.show_run(full, as_of=moment)
        checkpoints = ledger.list_checkpoints(run_id=full, as_of=moment)["checkpoints"]
        return {"run_id": full, "run": run, "checkpoints": checkpoints}

    return await page(request, "run.html", work, asOf)


@router.get("/checkpoints/{checkpoint_id}", openapi_extra=PAGE)
async def checkpoint_page(
    request: Request,
    checkpoint_id: str,
    asOf: str | None = None,  # noqa: N803
) -> Response:
    pictures = service_of(request).settings.pictures

    def work(ledger: TrainingLedger, moment: Any) -> dict[str, Any]:
        full = ledger.queries.resolve_id(checkpoint_id, ("checkpoint",))
        lineage = ledger.lineage(full, as_of=moment)
        if lineage:
            svg = lineage_svg(*pictures.graph(lineage))
        else:
            svg = lineage_svg([], [], title=pictures.nothing_as_of("checkpoint", full, moment))
        return {"checkpoint_id": full, "lineage": lineage, "svg": Markup(svg)}

    return await page(request, "checkpoint.html", work, asOf)


@router.get("/datasets/{fingerprint}", openapi_extra=PAGE)
async def dataset_page(
    request: Request,
    fingerprint: str,
    asOf: str | None = None,  # noqa: N803
) -> Response:
    def work(ledger: TrainingLedger, moment: Any) -> dict[str, Any]:
        return {"impact": ledger.impact(fingerprint, as_of=moment), "fingerprint": fingerprint}

    return await page(request, "dataset.html", work, asOf)


# --- signing in and out ---------------------------------------------------------


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this service only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", openapi_extra=PUBLIC)
async def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", next=_local(next), message=None)


@router.post("/login", openapi_extra=PUBLIC)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _local((form.get("next") or ["/"])[0])
    service = service_of(request)
    try:
        await service.pool.call(lambda ledger: ledger.access.authenticate(token))
    except UnauthenticatedError:
        return render(
            request, "login.html", 401, next=target, message="That token is unknown or revoked."
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", openapi_extra=PUBLIC)
async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/docs", openapi_extra=PUBLIC)
async def docs(request: Request) -> Response:
    """The endpoints of the API, from its OpenAPI document (no assets from elsewhere)."""
    schema = request.app.openapi()
    endpoints = [
        {
            "method": method.upper(),
            "path": path,
            "summary": operation.get("summary", ""),
            "role": operation.get("x-role")
            or ("reader" if method.lower() in ("get", "head") else "writer"),
        }
        for path, operations in schema.get("paths", {}).items()
        for method, operation in operations.items()
    ]
    return render(request, "docs.html", endpoints=endpoints)


@router.get("/static/{name}", openapi_extra=PUBLIC)
async def static(name: str) -> Response:
    media = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    path = STATIC / name
    if "/" in name or path.suffix not in media or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        path.read_bytes(),
        media_type=media[path.suffix],
        headers={"Cache-Control": "public, max-age=3600"},
    )
