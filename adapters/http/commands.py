"""The writes of SPEC §3-§4 over HTTP: experiments, runs, results, checkpoints, evals.

Each route parses its body, calls the ledger once on a worker thread and
answers with the document the CLI prints with `--json`. The actor is the
caller's token name, whatever the body or headers say; `Idempotency-Key`
is the command's idempotency key (SPEC §3.6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from trainledger.adapters.http.answers import answer
from trainledger.adapters.http.auth import Caller, LedgerRoute
from trainledger.domain.errors import ValidationError
from trainledger.service.ledger import TrainingLedger

router = APIRouter(prefix="/v1", route_class=LedgerRoute, tags=["commands"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A repeat with the same key returns the first outcome and records nothing.",
    ),
]


class RequestBody(BaseModel):
    """A request body: camelCase names, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, frozen=True
    )

    actor: str | None = Field(None, description="Ignored: the actor is the token's name.")


class ExperimentBody(RequestBody):
    profile: str
    family: str
    backend: str
    benchmark_export_id: str
    output_dir: str = Field(
        description="On the service's host; a relative path is taken "
        "from the service's working directory."
    )
    tier: str | None = None
    dataset_path: str | None = Field(None, description="A JSONL file on the service's host.")
    dataset_fingerprint: str | None = None
    sample_count: int | None = None
    dataset_export_id: str | None = None
    dataset_export_path: str | None = None
    hyperparameters: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    base_model: str | None = Field(
        None, description="A local model directory on the service's host (SPEC §12)."
    )


class ReasonBody(RequestBody):
    reason: str


class CheckpointBody(RequestBody):
    family: str
    artifact_path: str = Field(description="The adapter file or directory, on the service's host.")
    metrics: dict[str, Any] | None = None


def _absolute(path: str) -> str:
    return str(Path(path).absolute()) if path.strip() else path


@router.post("/experiments", status_code=201, summary="Create an experiment (a pending run)")
async def create_experiment(
    request: Request, body: ExperimentBody, caller: Caller, key: IdempotencyKey = None
) -> Any:
    from trainledger.domain.experiment import ExperimentRequest

    if (body.dataset_path is None) == (body.dataset_fingerprint is None):
        raise ValidationError("give exactly one of datasetPath or datasetFingerprint")
    if body.sample_count is not None and body.dataset_fingerprint is None:
        raise ValidationError("sampleCount goes with datasetFingerprint")
    experiment = ExperimentRequest(
        profile=body.profile,
        family=body.family,
        backend=body.backend,
        benchmark_export_id=body.benchmark_export_id,
        output_dir=_absolute(body.output_dir),
        dataset_export_id=body.dataset_export_id,
        dataset_export_path=(
            None if body.dataset_export_path is None else _absolute(body.dataset_export_path)
        ),
        tier=body.tier,
        hyperparameters=body.hyperparameters,
        budget=body.budget,
        base_model=None if body.base_model is None else _absolute(body.base_model),
    )

    def work(ledger: TrainingLedger) -> Any:
        return ledger.create_experiment(
            experiment,
            dataset_path=body.dataset_path,
            dataset_fingerprint=body.dataset_fingerprint,
            sample_count=body.sample_count,
            actor=caller.name,
            idempotency_key=key,
        )

    return await answer(request, work)


def _run_id(ledger: TrainingLedger, text: str) -> str:
    return ledger.queries.resolve_id(text, ("run",))


def full_checkpoint_id(ledger: TrainingLedger, text: str) -> str:
    return ledger.queries.resolve_id(text, ("checkpoint",))


@router.post("/runs/{run_id}/start", summary="pending → running")
async def start_run(
    request: Request, run_id: str, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.start_run(
            _run_id(ledger, run_id), actor=caller.name, idempotency_key=key
        ),
    )


@router.post("/runs/{run_id}/complete", summary="running → completed")
async def complete_run(
    request: Request, run_id: str, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.complete_run(
            _run_id(ledger, run_id), actor=caller.name, idempotency_key=key
        ),
    )


@router.post("/runs/{run_id}/fail", summary="pending | running → failed, with a reason")
async def fail_run(
    request: Request, run_id: str, body: ReasonBody, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.fail_run(
            _run_id(ledger, run_id), body.reason, actor=caller.name, idempotency_key=key
        ),
    )


@router.post(
    "/runs/{run_id}/result",
    summary="Record a trainer result produced elsewhere (the body is the result JSON)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def import_result(
    request: Request, run_id: str, caller: Caller, key: IdempotencyKey = None
) -> Any:
    result = await request.body()
    return await answer(
        request,
        lambda ledger: ledger.import_result(
            _run_id(ledger, run_id),
            result,
            source="(request body)",
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post(
    "/runs/{run_id}/checkpoints",
    status_code=201,
    summary="Register a checkpoint of a running run",
)
async def register_checkpoint(
    request: Request,
    run_id: str,
    body: CheckpointBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.register_checkpoint(
            _run_id(ledger, run_id),
            family=body.family,
            artifact_path=_absolute(body.artifact_path),
            metrics=body.metrics,
            actor=caller.name,
            idempotency_key=key,
        ),
    )


@router.post(
    "/checkpoints/{checkpoint_id}/evals",
    status_code=201,
    summary="Attach an eval summary (checkpointId may be left out)",
)
async def attach_eval(
    request: Request,
    checkpoint_id: str,
    summary: Annotated[dict[str, Any], Body()],
    caller: Caller,
    key: IdempotencyKey = None,
    mark_deployable: Annotated[bool, Query(alias="markDeployable")] = False,
) -> Any:
    from trainledger.domain.contract import EvalSummary
    from trainledger.domain.experiment import describe_validation_error

    def work(ledger: TrainingLedger) -> Any:
        full_id = full_checkpoint_id(ledger, checkpoint_id)
        try:
            fields = {k: v for k, v in summary.items() if k != "actor"}  # the token's name
            parsed = EvalSummary.model_validate({"checkpointId": full_id, **fields})
        except pydantic.ValidationError as error:
            raise ValidationError(
                f"invalid eval summary: {describe_validation_error(error)}"
            ) from None
        return ledger.attach_eval(
            full_id,
            parsed,
            mark_deployable=mark_deployable,
            actor=caller.name,
            idempotency_key=key,
        )

    return await answer(request, work)


@router.post("/checkpoints/{checkpoint_id}/deployable", summary="Mark a checkpoint deployable")
async def mark_deployable(
    request: Request, checkpoint_id: str, caller: Caller, key: IdempotencyKey = None
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.mark_deployable(
            full_checkpoint_id(ledger, checkpoint_id), actor=caller.name, idempotency_key=key
        ),
    )


@router.post("/checkpoints/{checkpoint_id}/revoke", summary="Revoke deployability, with a reason")
async def revoke_deployability(
    request: Request,
    checkpoint_id: str,
    body: ReasonBody,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await answer(
        request,
        lambda ledger: ledger.revoke_deployability(
            full_checkpoint_id(ledger, checkpoint_id),
            body.reason,
            actor=caller.name,
            idempotency_key=key,
        ),
    )
