"""Verbs of the trainer adapter: `train`, `run import-result`, `run reconcile`.

`train` and `run import-result` exit 1 when the run ends failed (the run is
printed all the same, and with `--json` the document also has an `error`), so
a script can chain them with `&&`.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from trainledger.adapters.trainer import read_capped
from trainledger.cli import output
from trainledger.cli.app import (
    ERROR_EXIT,
    LedgerId,
    Session,
    Stopped,
    cli,
    idempotency_option,
    pass_session,
    run,
)
from trainledger.cli.text import reconcile_text, training_text
from trainledger.domain.errors import ValidationError


def finish_training(session: Session, document: dict[str, Any]) -> None:
    """Print a training outcome; a run that has just failed fails the command."""
    failed = document["status"] == "failed" and not document.get("alreadyRecorded")
    message = f"run {document['trainRunId']} failed: {document['failureReason']}"
    if failed and session.json_mode:
        document = {**document, "error": {"code": "training_failed", "message": message}}
    session.emit(document, training_text)
    if failed:
        output.emit_error(False, "training_failed", message)
        raise click.exceptions.Exit(ERROR_EXIT)


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Being stopped (SIGTERM) is handled like Ctrl-C: the trainer is stopped, the run failed."""
    raise Stopped


@cli.command("train")
@click.argument("run_id", type=LedgerId("run"))
@click.option(
    "--scripts-dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Run DIR/main.py (the seed's trainer layout).",
)
@click.option(
    "--trainer",
    "trainer_path",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PATH",
    help="Run this trainer script (default: the bundled reference trainer).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Kill the trainer after S seconds (default: budget minutes x 60 + 30).",
)
@idempotency_option
@pass_session
def train(
    session: Session,
    run_id: str,
    scripts_dir: Path | None,
    trainer_path: Path | None,
    timeout: float | None,
    idempotency_key: str | None,
) -> None:
    """Run a trainer for a pending run and record its outcome.

    The trainer is called as `python3 SCRIPT --spec SPEC --output-dir DIR`;
    a `completed` result registers its checkpoint, `dry_run` completes the run
    without one, anything else fails the run with the reason.
    """
    if scripts_dir is not None and trainer_path is not None:
        raise click.UsageError("give --scripts-dir or --trainer, not both")
    script = scripts_dir / "main.py" if scripts_dir is not None else trainer_path
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    document = session.ledger.train(
        run_id,
        trainer_script=None if script is None else str(script.absolute()),
        timeout_seconds=timeout,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    finish_training(session, document)


@run.command("import-result")
@click.argument("run_id", type=LedgerId("run"))
@click.option("--result", "result_path", required=True, metavar="FILE", help="Result JSON.")
@idempotency_option
@pass_session
def run_import_result(
    session: Session, run_id: str, result_path: str, idempotency_key: str | None
) -> None:
    """Record a trainer result produced elsewhere, by the rules of `train`.

    Importing the result the run already ended with changes nothing (and says
    so); a different result for a finished run is refused.
    """
    try:
        result = read_capped(result_path)
    except ValueError as error:
        raise ValidationError(f"result file {result_path!r} {error}") from None
    except OSError as error:
        raise ValidationError(
            f"cannot read result file {result_path!r}: {error.strerror}"
        ) from None
    document = session.ledger.import_result(
        run_id,
        result,
        source=result_path,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    finish_training(session, document)


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"--now {text!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValidationError(f"--now {text!r} needs a time zone, e.g. 2025-01-31T12:00:00Z")
    return moment.astimezone(UTC)


@run.command("reconcile")
@click.option(
    "--now",
    "now_text",
    default=None,
    metavar="TIMESTAMP",
    help="Judge deadlines as of this ISO-8601 time (default: now).",
)
@idempotency_option
@pass_session
def run_reconcile(session: Session, now_text: str | None, idempotency_key: str | None) -> None:
    """Fail runs left running past their budget deadline, with reason `abandoned`.

    A run's deadline is its start plus the budget and the trainer timeout's
    grace: by then a live `train` would have recorded an outcome.
    """
    report = session.ledger.reconcile(
        now=None if now_text is None else parse_now(now_text),
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(report, reconcile_text)
