"""The `trainledger` command: parses, calls the ledger once, prints.

This is the composition root: it opens the ledger on the store URL and hands
it to each verb. No rule lives here.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from eventsourcing.domain import EventSourcingError

from trainledger.adapters.store import DEFAULT_STORE, STORE_ENV, open_ledger
from trainledger.cli import output
from trainledger.domain.errors import LedgerError, ValidationError
from trainledger.service.ledger import TrainingLedger
from trainledger.service.queries import parse_moment

USAGE_EXIT = 2


@dataclass
class Session:
    """Global options and the ledger, opened on first use."""

    store: str
    json_mode: bool
    actor: str
    _ledger: TrainingLedger | None = field(default=None, repr=False)

    @property
    def ledger(self) -> TrainingLedger:
        if self._ledger is None:
            self._ledger = open_ledger(self.store)
        return self._ledger

    def emit(self, document: Any, text: Callable[[Any], Any]) -> None:
        output.emit(self.json_mode, document, text)


pass_session = click.make_pass_decorator(Session)

idempotency_option = click.option(
    "--idempotency-key",
    metavar="K",
    default=None,
    help="Repeat-safe key: a repeat returns the first outcome and records nothing.",
)


def _parse_as_of(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_moment(value)


as_of_option = click.option(
    "--as-of",
    "as_of",
    metavar="TIMESTAMP",
    default=None,
    callback=_parse_as_of,
    help="Answer as it was then (ISO-8601 with a time zone, e.g. 2025-01-31T12:00:00Z).",
)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    metavar="URL",
    help="sqlite:///path.db, sqlite:////abs/path.db, postgresql://..., memory://",
)
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document.")
@click.option(
    "--actor", envvar="TRAINLEDGER_ACTOR", default=None, help="Who is acting (default: OS user)."
)
@click.version_option(package_name="trainledger")
@click.pass_context
def cli(ctx: click.Context, store: str, json_mode: bool, actor: str | None) -> None:
    """trainledger: an event-sourced ledger of training runs, checkpoints and evals."""
    ctx.obj = Session(
        store=store, json_mode=json_mode, actor=default_actor() if actor is None else actor
    )
    ctx.call_on_close(lambda: ctx.obj._ledger and ctx.obj._ledger.close())


# --- experiment --------------------------------------------------------------


@cli.group()
def experiment() -> None:
    """Create experiments (pending training runs)."""


def parse_assignment(text: str) -> tuple[str, float | int]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValidationError(f"--hp {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValidationError(f"--hp {key}: {raw!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"--hp {key}: {raw!r} is not a number")
    return key.strip(), value


@experiment.command("create")
@click.option("--profile", required=True, help="local-reader | local-editor")
@click.option("--family", required=True, help="Target model family.")
@click.option("--backend", required=True, help="peft-trl-orpo | unsloth-orpo | dry-run")
@click.option("--dataset", "dataset_path", default=None, help="JSONL dataset file.")
@click.option("--dataset-fingerprint", default=None, help="16-hex fingerprint instead of a file.")
@click.option("--sample-count", type=int, default=None, help="Samples, with --dataset-fingerprint.")
@click.option("--dataset-export-id", default=None)
@click.option("--benchmark-export-id", required=True)
@click.option("--output-dir", required=True, help="Where the trainer writes its artifacts.")
@click.option("--tier", default=None, help="consumer-gpu | small-gpu | cpu-experimental")
@click.option("--hp", "hp", multiple=True, metavar="KEY=VALUE", help="Hyperparameter override.")
@click.option("--budget-minutes", type=float, default=None)
@click.option("--budget-tokens", type=int, default=None)
@idempotency_option
@pass_session
def experiment_create(
    session: Session,
    profile: str,
    family: str,
    backend: str,
    dataset_path: str | None,
    dataset_fingerprint: str | None,
    sample_count: int | None,
    dataset_export_id: str | None,
    benchmark_export_id: str,
    output_dir: str,
    tier: str | None,
    hp: tuple[str, ...],
    budget_minutes: float | None,
    budget_tokens: int | None,
    idempotency_key: str | None,
) -> None:
    """Validate an experiment and register its pending training run."""
    # Imported here: the contract's pydantic models cost every other verb's start-up.
    from trainledger.domain.experiment import ExperimentRequest

    if (dataset_path is None) == (dataset_fingerprint is None):
        raise click.UsageError("give exactly one of --dataset or --dataset-fingerprint")
    if sample_count is not None and dataset_fingerprint is None:
        raise click.UsageError("--sample-count goes with --dataset-fingerprint")
    hyperparameters = dict(parse_assignment(a) for a in hp)
    budget: dict[str, Any] = {}
    if budget_minutes is not None:
        budget["maxWallClockMinutes"] = budget_minutes
    if budget_tokens is not None:
        budget["maxTrainTokens"] = budget_tokens
    request = ExperimentRequest(
        profile=profile,
        family=family,
        backend=backend,
        benchmark_export_id=benchmark_export_id,
        output_dir=str(Path(output_dir).absolute()),
        dataset_export_id=dataset_export_id,
        tier=tier,
        hyperparameters=hyperparameters,
        budget=budget,
    )
    created = session.ledger.create_experiment(
        request,
        dataset_path=dataset_path,
        dataset_fingerprint=dataset_fingerprint,
        sample_count=sample_count,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(created, output.experiment_text)


# --- run ---------------------------------------------------------------------


@cli.group()
def run() -> None:
    """Move training runs through their lifecycle and inspect them."""


@run.command("start")
@click.argument("run_id")
@idempotency_option
@pass_session
def run_start(session: Session, run_id: str, idempotency_key: str | None) -> None:
    """pending → running."""
    document = session.ledger.start_run(
        run_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, output.run_text)


@run.command("complete")
@click.argument("run_id")
@idempotency_option
@pass_session
def run_complete(session: Session, run_id: str, idempotency_key: str | None) -> None:
    """running → completed."""
    document = session.ledger.complete_run(
        run_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, output.run_text)


@run.command("fail")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why the run failed.")
@idempotency_option
@pass_session
def run_fail(session: Session, run_id: str, reason: str, idempotency_key: str | None) -> None:
    """pending | running → failed, with a reason."""
    document = session.ledger.fail_run(
        run_id, reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, output.run_text)


@run.command("show")
@click.argument("run_id")
@as_of_option
@pass_session
def run_show(session: Session, run_id: str, as_of: datetime | None) -> None:
    """A run: status, timestamps, spec fingerprints, checkpoints.

    With --as-of before the run existed: an empty answer ({} with --json).
    """
    document = session.ledger.show_run(run_id, as_of=as_of)
    session.emit(document, output.or_nothing(output.run_text, "run", run_id, as_of))


# --- checkpoint --------------------------------------------------------------


@cli.group()
def checkpoint() -> None:
    """Register checkpoints, manage deployability, inspect them."""


@checkpoint.command("register")
@click.argument("run_id")
@click.option("--family", required=True, help="Must equal the run's family.")
@click.option("--artifact", "artifact_path", required=True, help="Adapter file or directory.")
@idempotency_option
@pass_session
def checkpoint_register(
    session: Session, run_id: str, family: str, artifact_path: str, idempotency_key: str | None
) -> None:
    """Register a checkpoint of a running run (digest recorded when the path exists)."""
    document = session.ledger.register_checkpoint(
        run_id,
        family=family,
        artifact_path=str(Path(artifact_path).absolute()) if artifact_path.strip() else "",
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, output.checkpoint_text)


@checkpoint.command("show")
@click.argument("checkpoint_id")
@as_of_option
@pass_session
def checkpoint_show(session: Session, checkpoint_id: str, as_of: datetime | None) -> None:
    """A checkpoint: artifact, evals, deployability and its history.

    With --as-of before it was registered: an empty answer ({} with --json).
    """
    document = session.ledger.show_checkpoint(checkpoint_id, as_of=as_of)
    text = output.or_nothing(output.checkpoint_text, "checkpoint", checkpoint_id, as_of)
    session.emit(document, text)


@checkpoint.command("mark-deployable")
@click.argument("checkpoint_id")
@idempotency_option
@pass_session
def checkpoint_mark_deployable(
    session: Session, checkpoint_id: str, idempotency_key: str | None
) -> None:
    """Mark deployable: needs a current eval that did not fail and a completed run."""
    document = session.ledger.mark_deployable(
        checkpoint_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, output.checkpoint_text)


@checkpoint.command("revoke")
@click.argument("checkpoint_id")
@click.option("--reason", required=True, help="Why deployability is withdrawn.")
@idempotency_option
@pass_session
def checkpoint_revoke(
    session: Session, checkpoint_id: str, reason: str, idempotency_key: str | None
) -> None:
    """Revoke deployability; evals and history are kept."""
    document = session.ledger.revoke_deployability(
        checkpoint_id, reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, output.checkpoint_text)


# --- eval --------------------------------------------------------------------


@cli.group("eval")
def eval_group() -> None:
    """Attach benchmark evaluations to checkpoints."""


def read_json_file(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError(f"cannot read {what} {path!r}: {error}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise ValidationError(f"{what} {path!r} is not valid JSON: {error}") from None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a finite number")


@eval_group.command("attach")
@click.argument("checkpoint_id")
@click.option("--file", "eval_file", default=None, help="Eval summary JSON file.")
@click.option("--eval-id", default=None)
@click.option("--benchmark-id", default=None)
@click.option("--family", default=None)
@click.option("--mode", default=None, help="prompt_assisted | reduced_prompt")
@click.option("--baseline", type=float, default=None)
@click.option("--candidate", type=float, default=None)
@click.option("--delta", type=float, default=None, help="Default: candidate - baseline.")
@click.option("--verdict", default=None, help="pass | fail | compare_only")
@click.option("--mark-deployable", is_flag=True, help="Also mark deployable, atomically.")
@idempotency_option
@pass_session
def eval_attach(
    session: Session,
    checkpoint_id: str,
    eval_file: str | None,
    eval_id: str | None,
    benchmark_id: str | None,
    family: str | None,
    mode: str | None,
    baseline: float | None,
    candidate: float | None,
    delta: float | None,
    verdict: str | None,
    mark_deployable: bool,
    idempotency_key: str | None,
) -> None:
    """Attach an eval summary (from --file or options); it becomes the current eval."""
    options = {
        "evalId": eval_id,
        "benchmarkId": benchmark_id,
        "targetModelFamily": family,
        "mode": mode,
        "baselineScore": baseline,
        "candidateScore": candidate,
        "delta": delta,
        "verdict": verdict,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if eval_file is not None:
        if given:
            raise click.UsageError("give the eval either with --file or with options, not both")
        summary = read_json_file(eval_file, "eval file")
        if not isinstance(summary, dict):
            raise ValidationError(f"eval file {eval_file!r} must hold a JSON object")
    else:
        missing = [
            flag
            for flag, key in (
                ("--eval-id", "evalId"),
                ("--benchmark-id", "benchmarkId"),
                ("--family", "targetModelFamily"),
                ("--mode", "mode"),
                ("--baseline", "baselineScore"),
                ("--candidate", "candidateScore"),
                ("--verdict", "verdict"),
            )
            if key not in given
        ]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or give --file)")
        summary = {"checkpointId": checkpoint_id, **given}
    document = session.ledger.attach_eval(
        checkpoint_id,
        summary,
        mark_deployable=mark_deployable,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, output.checkpoint_text)


# --- history and schema ------------------------------------------------------


@cli.command("history")
@click.argument("aggregate_id")
@pass_session
def history(session: Session, aggregate_id: str) -> None:
    """Every event of one run or checkpoint, oldest first."""
    session.emit(session.ledger.history(aggregate_id), output.history_text)


INTEGRITY_EXIT = 3


@cli.command("verify")
@click.option("--digest", default=None, metavar="D", help="A digest from an earlier verify.")
@pass_session
def verify(session: Session, digest: str | None) -> None:
    """Recompute every hash chain and the log digest; exit 3 if anything was tampered with."""
    with output.progress(session.json_mode, "verifying") as progress:
        report = session.ledger.verify(digest=digest, progress=progress)
    session.emit(report, output.verify_text)
    if not report["ok"]:
        failure = report["failure"]
        output.note(
            f"error: integrity failure at position {failure['position']}: {failure['reason']}"
        )
        sys.exit(INTEGRITY_EXIT)


@cli.command("schema")
@click.argument("name", type=click.Choice(["eval", "result", "spec"]))
def schema(name: str) -> None:
    """JSON Schema of the experiment spec, trainer result or eval summary."""
    # Imported here: the contract's pydantic models cost every other verb's start-up.
    import pydantic

    from trainledger.domain.contract import EvalSummary, ExperimentSpec, TrainerResult

    models: dict[str, type[pydantic.BaseModel]] = {
        "spec": ExperimentSpec,
        "result": TrainerResult,
        "eval": EvalSummary,
    }
    click.echo(output.dumps(models[name].model_json_schema(), pretty=True))


# --- entry point -------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map every failure to a one-line message and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    json_mode = "--json" in args
    try:
        # Without standalone mode, click returns a command's `ctx.exit(code)` / `Exit(code)`.
        returned = cli.main(args=args, prog_name="trainledger", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        output.emit_error(json_mode, "aborted", "aborted")
        sys.exit(1)
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        output.emit_error(json_mode, "usage", f"{error.format_message()}{hint}")
        sys.exit(USAGE_EXIT)
    except click.ClickException as error:
        output.emit_error(json_mode, "usage", error.format_message())
        sys.exit(error.exit_code)
    except LedgerError as error:
        output.emit_error(json_mode, error.code, error.message)
        sys.exit(error.exit_code)
    except EventSourcingError as error:
        output.emit_error(json_mode, "store_error", f"store error: {error}")
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as error:
        if os.environ.get("TRAINLEDGER_DEBUG") == "1":
            raise
        output.emit_error(
            json_mode, "internal_error", f"internal error: {type(error).__name__}: {error}"
        )
        sys.exit(1)
    sys.exit(returned if isinstance(returned, int) else 0)


# Verbs of the trainer adapter, the queries and the store live in their own
# modules; importing them registers them on the groups above.
from trainledger.cli import query_commands, store_commands, trainer_commands  # noqa: E402

__all__ = ["cli", "main", "query_commands", "store_commands", "trainer_commands"]
