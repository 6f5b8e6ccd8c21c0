"""The whole log: `verify` its integrity, move it between stores with `export` and `import`.

Moving a ledger is `service.archive`'s work; these verbs read, call and print.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from trainledger.cli import output
from trainledger.cli.app import INTEGRITY_EXIT, Session, cli, pass_session
from trainledger.cli.text import import_text, verify_text
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


@cli.command("export")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["jsonl"]),
    default="jsonl",
    show_default=True,
    help="One event per line, in log order, with its reservations.",
)
@pass_session
def export(session: Session, export_format: str) -> None:
    """Write the whole log to stdout, restorable with `import` into any backend."""
    # Imported here, as in `import_`: archiving costs every other verb's start-up.
    from trainledger.service.archive import export_log

    for line in export_log(session.ledger):
        output.write_json_line(line)


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
