"""The whole log: `verify` its integrity, move it between stores with `export` and `import`.

Moving a ledger is `service.archive`'s work; these verbs read, call and print.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from trainledger.cli import output
from trainledger.cli.app import INTEGRITY_EXIT, Session, cli, pass_session
from trainledger.cli.text import import_text, posted_text, verify_text
from trainledger.domain.chain import parse_digest
from trainledger.domain.errors import ValidationError


def _digest(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else parse_digest(value)
    except ValidationError as error:
        raise click.BadParameter(error.message) from None


@cli.command("verify")
@click.option(
    "--digest",
    default=None,
    metavar="D",
    callback=_digest,
    help="A digest from an earlier verify (64 hex digits): prove the log up to it is unchanged.",
)
@pass_session
def verify(session: Session, digest: str | None) -> None:
    """Recompute every hash chain and the log digest; exit 3 if anything was tampered with."""
    with output.progress(session.json_mode, "verifying") as progress:
        report = session.ledger.verify(digest=digest, progress=progress)
    session.emit(report, verify_text)
    if not report["ok"]:
        failure = report["failure"]
        output.note(
            f"error: integrity failure at position {failure['position']}: {failure['reason']}"
        )
        sys.exit(INTEGRITY_EXIT)


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value.strip()


@cli.command("export")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["jsonl", "openlineage"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one stored event per line, in log order, with its reservations; "
    "openlineage: one OpenLineage RunEvent per line (START, then COMPLETE or FAIL, per run).",
)
@click.option(
    "--post",
    "post_url",
    metavar="URL",
    default=None,
    callback=_http_url,
    help="With --format openlineage: send each event to URL/api/v1/lineage (Marquez) "
    "instead of printing it; stops at the first refusal. An API key, sent as a Bearer "
    "token, is read from env TRAINLEDGER_OPENLINEAGE_API_KEY.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="With --post: seconds to wait for the endpoint's answer to each event (default 10).",
)
@pass_session
def export(
    session: Session, export_format: str, post_url: str | None, timeout: float | None
) -> None:
    """Write the whole log to stdout, restorable with `import` into any backend.

    With --format openlineage, the runs' lineage as OpenLineage events
    instead, printed or (--post URL) sent to an OpenLineage endpoint.
    """
    if post_url is not None and export_format != "openlineage":
        raise click.UsageError("--post needs --format openlineage")
    if timeout is not None and post_url is None:
        raise click.UsageError("--timeout needs --post URL")
    if export_format == "openlineage":
        _export_openlineage(session, post_url, timeout)
        return
    # Imported here, as in `import_`: archiving costs every other verb's start-up.
    from trainledger.service.archive import export_log

    for line in export_log(session.ledger):
        output.write_json_line(line)


def _export_openlineage(session: Session, post_url: str | None, timeout: float | None) -> None:
    # Imported here: the OpenLineage client takes a noticeable time to load.
    from trainledger.service.openlineage import run_events, to_json

    events = run_events(session.ledger)
    if post_url is None:
        for event in events:
            sys.stdout.write(to_json(event) + "\n")
        return
    from trainledger.adapters import openlineage_http as http

    posted = http.post_events(
        events,
        post_url,
        timeout=http.DEFAULT_TIMEOUT if timeout is None else timeout,
        api_key=os.environ.get(http.API_KEY_ENV) or None,
    )
    session.emit({"posted": posted, "endpoint": http.shown(http.endpoint(post_url))}, posted_text)


@cli.command("import")
@click.argument("file", metavar="FILE")
@pass_session
def import_(session: Session, file: str) -> None:
    """Restore an export (FILE, or - for stdin) into this empty store, all or nothing.

    Every line is checked first (order, versions, hash chains, reservations);
    a single fault refuses the whole file and writes nothing.
    """
    from trainledger.service.archive import import_log  # here, as in `export` (start-up time)

    try:
        if file == "-":
            lines = sys.stdin.buffer.read().splitlines()
        else:
            lines = Path(file).read_bytes().splitlines()
    except OSError as error:
        raise ValidationError(f"cannot read {file!r}: {error.strerror}") from None
    summary = import_log(session.ledger, lines)
    session.emit(summary, import_text)
