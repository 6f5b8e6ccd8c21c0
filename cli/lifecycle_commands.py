"""The lifecycle verbs: experiment, run, checkpoint and eval, and the contract's schemas.

Each parses its options, calls the ledger once and prints the answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from trainledger.cli import output
from trainledger.cli.app import (
    LedgerId,
    Session,
    as_of_option,
    checkpoint,
    cli,
    eval_group,
    experiment,
    idempotency_option,
    pass_session,
    run,
)
from trainledger.cli.text import checkpoint_text, experiment_text, or_nothing, run_text
from trainledger.domain.errors import ValidationError
from trainledger.domain.vocabulary import (
    BACKENDS,
    EVAL_MODES,
    HARDWARE_TIERS,
    VERDICTS,
    WORKER_PROFILES,
)

# --- experiment --------------------------------------------------------------


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
@click.option(
    "--profile",
    type=click.Choice(WORKER_PROFILES),
    required=True,
    help="Worker profile (local-editor needs TRAINLEDGER_ENABLE_LOCAL_EDITOR=1).",
)
@click.option("--family", required=True, help="Target model family.")
@click.option("--backend", type=click.Choice(BACKENDS), required=True, help="Training backend.")
@click.option(
    "--base-model",
    default=None,
    metavar="PATH",
    help="Local directory of the base model to train from (the spec's baseModel).",
)
@click.option("--dataset", "dataset_path", default=None, metavar="PATH", help="JSONL dataset file.")
@click.option(
    "--dataset-fingerprint",
    default=None,
    metavar="FP",
    help="16-hex fingerprint instead of a file.",
)
@click.option("--sample-count", type=int, default=None, help="Samples, with --dataset-fingerprint.")
@click.option(
    "--dataset-export-id", default=None, metavar="ID", help="The dataset export's id, if any."
)
@click.option(
    "--dataset-export-path",
    default=None,
    metavar="PATH",
    help="With --dataset-fingerprint: where the trainer finds the dataset (else the spec's "
    'datasetExportPath is "": no file).',
)
@click.option(
    "--benchmark-export-id", required=True, metavar="ID", help="The benchmark to evaluate on."
)
@click.option("--output-dir", required=True, help="Where the trainer writes its artifacts.")
@click.option(
    "--tier",
    type=click.Choice(HARDWARE_TIERS),
    default=None,
    help="Hardware tier (default: the backend's).",
)
@click.option("--hp", "hp", multiple=True, metavar="KEY=VALUE", help="Hyperparameter override.")
@click.option(
    "--budget-minutes", type=float, default=None, metavar="N", help="Wall-clock budget, minutes."
)
@click.option(
    "--budget-tokens", type=int, default=None, metavar="N", help="Budget of training tokens."
)
@idempotency_option
@pass_session
def experiment_create(
    session: Session,
    profile: str,
    family: str,
    backend: str,
    base_model: str | None,
    dataset_path: str | None,
    dataset_fingerprint: str | None,
    sample_count: int | None,
    dataset_export_id: str | None,
    dataset_export_path: str | None,
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
    if dataset_export_path is not None and dataset_fingerprint is None:
        raise click.UsageError("--dataset-export-path goes with --dataset-fingerprint")
    if dataset_export_path is not None and not dataset_export_path.strip():
        raise click.UsageError("--dataset-export-path must not be empty")
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
        dataset_export_path=(
            None if dataset_export_path is None else str(Path(dataset_export_path).absolute())
        ),
        tier=tier,
        base_model=base_model,
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
    session.emit(created, experiment_text)


# --- run ---------------------------------------------------------------------


@run.command("start")
@click.argument("run_id", type=LedgerId("run"))
@idempotency_option
@pass_session
def run_start(session: Session, run_id: str, idempotency_key: str | None) -> None:
    """pending → running."""
    document = session.ledger.start_run(
        run_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, run_text)


@run.command("complete")
@click.argument("run_id", type=LedgerId("run"))
@idempotency_option
@pass_session
def run_complete(session: Session, run_id: str, idempotency_key: str | None) -> None:
    """running → completed."""
    document = session.ledger.complete_run(
        run_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, run_text)


@run.command("fail")
@click.argument("run_id", type=LedgerId("run"))
@click.option("--reason", required=True, help="Why the run failed.")
@idempotency_option
@pass_session
def run_fail(session: Session, run_id: str, reason: str, idempotency_key: str | None) -> None:
    """pending | running → failed, with a reason."""
    document = session.ledger.fail_run(
        run_id, reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, run_text)


@run.command("show")
@click.argument("run_id", type=LedgerId("run"))
@as_of_option
@pass_session
def run_show(session: Session, run_id: str, as_of: datetime | None) -> None:
    """A run: status, timestamps, spec fingerprints, checkpoints.

    With --as-of before the run existed: an empty answer ({} with --json).
    """
    document = session.ledger.show_run(run_id, as_of=as_of)
    session.emit(document, or_nothing(run_text, "run", run_id, as_of))


# --- checkpoint --------------------------------------------------------------


@checkpoint.command("register")
@click.argument("run_id", type=LedgerId("run"))
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
    session.emit(document, checkpoint_text)


@checkpoint.command("show")
@click.argument("checkpoint_id", type=LedgerId("checkpoint"))
@as_of_option
@pass_session
def checkpoint_show(session: Session, checkpoint_id: str, as_of: datetime | None) -> None:
    """A checkpoint: artifact, evals, deployability and its history.

    With --as-of before it was registered: an empty answer ({} with --json).
    """
    document = session.ledger.show_checkpoint(checkpoint_id, as_of=as_of)
    text = or_nothing(checkpoint_text, "checkpoint", checkpoint_id, as_of)
    session.emit(document, text)


@checkpoint.command("mark-deployable")
@click.argument("checkpoint_id", type=LedgerId("checkpoint"))
@idempotency_option
@pass_session
def checkpoint_mark_deployable(
    session: Session, checkpoint_id: str, idempotency_key: str | None
) -> None:
    """Mark deployable: needs a current eval that did not fail and a completed run."""
    document = session.ledger.mark_deployable(
        checkpoint_id, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, checkpoint_text)


@checkpoint.command("revoke")
@click.argument("checkpoint_id", type=LedgerId("checkpoint"))
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
    session.emit(document, checkpoint_text)


# --- eval --------------------------------------------------------------------


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
@click.argument("checkpoint_id", type=LedgerId("checkpoint"))
@click.option(
    "--file", "eval_file", default=None, metavar="EVAL.json", help="Eval summary JSON file."
)
@click.option("--eval-id", default=None, metavar="ID", help="The eval's id (unique).")
@click.option("--benchmark-id", default=None, metavar="ID", help="The benchmark evaluated on.")
@click.option("--family", default=None, help="Target model family (the checkpoint's).")
@click.option("--mode", type=click.Choice(EVAL_MODES), default=None, help="Eval mode.")
@click.option("--baseline", type=float, default=None, metavar="X", help="Baseline score.")
@click.option("--candidate", type=float, default=None, metavar="Y", help="Candidate score.")
@click.option("--delta", type=float, default=None, help="Default: candidate - baseline.")
@click.option("--verdict", type=click.Choice(VERDICTS), default=None, help="The eval's verdict.")
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
    session.emit(document, checkpoint_text)


# --- schema ------------------------------------------------------------------


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
