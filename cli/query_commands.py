"""The queries: lineage, impact, lists, stats, history, the event log, and rebuilding views.

Every query answers from the projections, caught up first; `--as-of` answers
as it was at that moment (see `service.queries`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from trainledger.cli import output
from trainledger.cli.app import (
    LedgerId,
    Session,
    as_of_option,
    checkpoint,
    cli,
    eval_group,
    pass_session,
    projections_group,
    run,
)
from trainledger.cli.pictures import (
    empty_lineage_dot,
    empty_lineage_mermaid,
    lineage_dot,
    lineage_mermaid,
    lineage_text,
    nothing_as_of,
)
from trainledger.cli.text import (
    checkpoints_text,
    evals_text,
    history_text,
    impact_text,
    rebuild_text,
    runs_text,
    stats_text,
)
from trainledger.domain.vocabulary import RUN_STATUSES, VERDICTS

LINEAGE_FORMATS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "text": lineage_text,
    "dot": lineage_dot,
    "mermaid": lineage_mermaid,
}
EMPTY_LINEAGE_FORMATS: dict[str, Callable[[str], list[str]]] = {
    "text": lambda note: [note],
    "dot": empty_lineage_dot,
    "mermaid": empty_lineage_mermaid,
}

# positions and limits go to SQL as signed 64-bit integers
MAX_SQL_INTEGER = 2**63 - 1

limit_option = click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_SQL_INTEGER),
    default=None,
    help="At most N, newest first.",
)


@cli.command("lineage")
@click.argument("checkpoint_id", type=LedgerId("checkpoint"))
@click.option(
    "--format",
    "picture",
    type=click.Choice(["json", *LINEAGE_FORMATS]),
    default=None,
    help="json, a text tree (default without --json), Graphviz dot, or a Mermaid flowchart.",
)
@as_of_option
@pass_session
def lineage(
    session: Session, checkpoint_id: str, picture: str | None, as_of: datetime | None
) -> None:
    """Where a checkpoint comes from and what was decided about it.

    Its run (spec, dataset fingerprint), artifact digest, current eval, all
    evals, and every deployability decision with its actor and reason. With
    --as-of before the checkpoint was registered: an empty answer ({} in
    json, one line in text, an empty graph in dot and mermaid).
    """
    document = session.ledger.lineage(checkpoint_id, as_of=as_of)
    if picture == "json" or (picture is None and session.json_mode):
        click.echo(output.dumps(document, pretty=True))
        return
    if document:
        lines = LINEAGE_FORMATS[picture or "text"](document)
    else:
        note = nothing_as_of("checkpoint", checkpoint_id, as_of)
        lines = EMPTY_LINEAGE_FORMATS[picture or "text"](note)
    output.lines(lines)


@cli.command("impact")
@click.option(
    "--dataset",
    "dataset_fingerprint",
    required=True,
    metavar="FP",
    help="The dataset's fingerprint (16 hex digits).",
)
@as_of_option
@pass_session
def impact(session: Session, dataset_fingerprint: str, as_of: datetime | None) -> None:
    """The runs trained on a dataset, their checkpoints, and which are deployable."""
    session.emit(
        session.ledger.impact(dataset_fingerprint, as_of=as_of), impact_text, short_ids=True
    )


@run.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None, help="Runs in this state.")
@click.option("--family", default=None, help="Target model family.")
@click.option(
    "--dataset",
    "dataset_fingerprint",
    default=None,
    metavar="FP",
    help="Runs trained on this dataset fingerprint.",
)
@as_of_option
@limit_option
@pass_session
def run_list(
    session: Session,
    status: str | None,
    family: str | None,
    dataset_fingerprint: str | None,
    as_of: datetime | None,
    limit: int | None,
) -> None:
    """Training runs, newest first."""
    document = session.ledger.list_runs(
        status=status,
        family=family,
        dataset_fingerprint=dataset_fingerprint,
        as_of=as_of,
        limit=limit,
    )
    session.emit(document, runs_text, short_ids=True)


@checkpoint.command("list")
@click.option(
    "--run",
    "run_id",
    type=LedgerId("run"),
    default=None,
    metavar="ID",
    help="Checkpoints of one run.",
)
@click.option("--family", default=None, help="Target model family.")
@click.option(
    "--deployable/--not-deployable",
    default=None,
    help="Only the checkpoints that are (or are not) deployable.",
)
@as_of_option
@limit_option
@pass_session
def checkpoint_list(
    session: Session,
    run_id: str | None,
    family: str | None,
    deployable: bool | None,
    as_of: datetime | None,
    limit: int | None,
) -> None:
    """Checkpoints, newest first."""
    document = session.ledger.list_checkpoints(
        run_id=run_id, family=family, deployable=deployable, as_of=as_of, limit=limit
    )
    session.emit(document, checkpoints_text, short_ids=True)


@eval_group.command("list")
@click.option(
    "--checkpoint",
    "checkpoint_id",
    type=LedgerId("checkpoint"),
    default=None,
    metavar="ID",
    help="Evals of one checkpoint.",
)
@click.option(
    "--benchmark", "benchmark_id", default=None, metavar="ID", help="Evals on one benchmark."
)
@click.option(
    "--verdict", type=click.Choice(VERDICTS), default=None, help="Evals with this verdict."
)
@click.option("--family", default=None, help="Target model family.")
@as_of_option
@limit_option
@pass_session
def eval_list(
    session: Session,
    checkpoint_id: str | None,
    benchmark_id: str | None,
    verdict: str | None,
    family: str | None,
    as_of: datetime | None,
    limit: int | None,
) -> None:
    """Evals, newest first."""
    document = session.ledger.list_evals(
        checkpoint_id=checkpoint_id,
        benchmark_id=benchmark_id,
        verdict=verdict,
        family=family,
        as_of=as_of,
        limit=limit,
    )
    session.emit(document, evals_text, short_ids=True)


@cli.command("stats")
@as_of_option
@pass_session
def stats(session: Session, as_of: datetime | None) -> None:
    """Runs by status, checkpoints, deployable ones, evals by verdict."""
    session.emit(session.ledger.stats(as_of=as_of), stats_text)


@cli.command("history")
@click.argument("aggregate_id", type=LedgerId())
@pass_session
def history(session: Session, aggregate_id: str) -> None:
    """Every event of one run or checkpoint, oldest first."""
    session.emit(session.ledger.history(aggregate_id), history_text, short_ids=True)


EVENTS_PAGE = 500


@cli.command("events")
@click.option(
    "--after",
    type=click.IntRange(min=0, max=MAX_SQL_INTEGER),
    default=0,
    metavar="POSITION",
    help="Only events after this log position.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_SQL_INTEGER),
    default=None,
    help="At most N events.",
)
@click.option("--follow", is_flag=True, help="Keep waiting for new events (Ctrl-C stops).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@pass_session
def events(session: Session, after: int, limit: int | None, follow: bool, interval: float) -> None:
    """The global event log after a position, as JSONL (one event per line)."""
    position, left = after, limit
    try:
        while left is None or left > 0:
            page = session.ledger.events_after(position, min(EVENTS_PAGE, left or EVENTS_PAGE))
            for document in page:
                output.write_json_line(document)
            sys.stdout.flush()
            if page:
                position = page[-1]["position"]
                left = None if left is None else left - len(page)
            elif follow:
                time.sleep(interval)
            else:
                break
    except KeyboardInterrupt:
        pass


@projections_group.command("rebuild")
@pass_session
def projections_rebuild(session: Session) -> None:
    """Drop every view and rebuild it from the whole log, with a progress bar.

    Reports the events applied and the rate.
    """
    with output.progress(session.json_mode, "rebuilding views") as progress:
        report = session.ledger.rebuild_projections(progress)
    session.emit(report, rebuild_text)
