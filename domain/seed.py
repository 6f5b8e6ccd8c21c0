"""The seed's training registry, read and checked before anything is recorded.

The seed (principles-disciple 1.7.8, `packages/openclaw-plugin/src/core/` in
github.com/csuzngjh/principles) keeps each registry as one JSON file, written
whole (`JSON.stringify(registry, null, 2)`) after every change. The shapes
below are its TypeScript interfaces, `model-training-registry.ts`:

`.state/nocturnal/training-registry.json`:
`{trainingRuns: TrainingRun[], checkpoints: Checkpoint[], evalSummaries: EvalSummary[]}`

- `TrainingRun {trainRunId, experimentId, targetModelFamily, datasetFingerprint,
  exportId, sampleCount, configFingerprint, createdAt, completedAt?, status,
  failureReason?, checkpointIds}`; status `pending|running|completed|failed`
  (pending → running → completed|failed), overwritten in place: there is no
  start time, `completedAt` is set on completion and on failure alike.
  `createExperiment` registers `sampleCount: 0` and never updates it.
- `Checkpoint {checkpointId, trainRunId, targetModelFamily, artifactPath,
  createdAt, deployable, lastEvalSummaryRef?}`: registered while its run runs;
  `deployable` is set in place (no time); revoking sets it false and clears
  `lastEvalSummaryRef`, the link to the eval.
- `EvalSummary {evalId, checkpointId, benchmarkId, targetModelFamily, mode,
  baselineScore, candidateScore, delta, verdict, createdAt}`; mode
  `prompt_assisted|reduced_prompt`, verdict `pass|fail|compare_only`;
  attaching one appends it and sets its checkpoint's `lastEvalSummaryRef`
  (a checkpoint's evals are taken in the order of their times).

Ids are `crypto.randomUUID()` (evalIds are the caller's). Times are
`toISOString()` (UTC, milliseconds, `Z`). The seed read a file it could not
parse as empty, and validated nothing it read: here every field the seed
always writes must be there with its type (`exportId`, `sampleCount`,
`configFingerprint` and `checkpointIds` may be missing: nothing needs them),
unknown fields are kept (a run's whole record is recorded; others are
reported), and duplicate ids, dangling references and times out of order
refuse the file. The files of SPEC §9 are `domain.seed_rollout`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from trainledger.domain.seed_vocabulary import SeedRefusedError, ledger_id
from trainledger.domain.vocabulary import EvalMode, RunStatus, Verdict

Id = Annotated[str, Field(min_length=1)]


class SeedRecord(BaseModel):
    """A record of a seed file: types as the seed wrote them, unknown fields kept."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True, allow_inf_nan=False)

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class SeedRun(SeedRecord):
    trainRunId: Id  # noqa: N815
    experimentId: Id  # noqa: N815
    targetModelFamily: Id  # noqa: N815
    datasetFingerprint: str  # noqa: N815
    exportId: str | None = None  # noqa: N815
    sampleCount: int | None = Field(default=None, ge=0)  # noqa: N815
    configFingerprint: str | None = None  # noqa: N815
    createdAt: AwareDatetime  # noqa: N815
    completedAt: AwareDatetime | None = None  # noqa: N815
    status: RunStatus
    failureReason: str | None = None  # noqa: N815
    checkpointIds: list[Id] | None = None  # noqa: N815


class SeedCheckpoint(SeedRecord):
    checkpointId: Id  # noqa: N815
    trainRunId: Id  # noqa: N815
    targetModelFamily: Id  # noqa: N815
    artifactPath: str  # noqa: N815
    createdAt: AwareDatetime  # noqa: N815
    deployable: bool
    lastEvalSummaryRef: Id | None = None  # noqa: N815


class SeedEval(SeedRecord):
    evalId: Id  # noqa: N815
    checkpointId: Id  # noqa: N815
    benchmarkId: Id  # noqa: N815
    targetModelFamily: Id  # noqa: N815
    mode: EvalMode
    baselineScore: float  # noqa: N815
    candidateScore: float  # noqa: N815
    delta: float
    verdict: Verdict
    createdAt: AwareDatetime  # noqa: N815


class SeedFileModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True)


class TrainingRegistryFile(SeedFileModel):
    trainingRuns: list[SeedRun]  # noqa: N815
    checkpoints: list[SeedCheckpoint]
    evalSummaries: list[SeedEval]  # noqa: N815


F = TypeVar("F", bound=SeedFileModel)


def parse_file(label: str, data: bytes, model: type[F]) -> tuple[F, dict[str, Any]]:
    """A seed file checked against its shape, and its JSON as read; refused with `label`."""
    if not data.strip():
        raise SeedRefusedError(f"{label}: the file is empty (the seed would have read it as empty)")
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as error:
        cut = error.pos >= len(error.doc.rstrip())
        hint = "; the file ends before its JSON does (truncated?)" if cut else ""
        raise SeedRefusedError(f"{label}: not valid JSON ({error}{hint})") from None
    except (ValueError, RecursionError) as error:  # not UTF-8, nested too deep
        raise SeedRefusedError(f"{label}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise SeedRefusedError(
            f"{label}: wrong shape: expected a JSON object with "
            f"{', '.join(model.model_fields)}, got {type(raw).__name__}"
        )
    try:
        return model.model_validate_json(data), raw
    except pydantic.ValidationError as error:
        raise SeedRefusedError(f"{label}: wrong shape: {describe(error, raw)}") from None


_ID_FIELDS = (
    "evalId",
    "observationId",
    "promotionId",
    "deploymentId",
    "checkpointId",
    "trainRunId",
)
"""The field naming a record in messages (the first one it has)."""


def describe(error: pydantic.ValidationError, raw: Any) -> str:
    """The first failing field, where it is in the file (`trainingRuns[3].createdAt`) and why."""
    item = error.errors()[0]
    where, record = "", raw
    for part in item["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
            record = record[part] if isinstance(record, list) and part < len(record) else None
            name = next((n for n in _ID_FIELDS if isinstance(record, dict) and n in record), None)
            if name is not None and isinstance(record, dict) and isinstance(record[name], str):
                where += f" ({name} {record[name]})"
        else:
            where += f".{part}" if where else str(part)
            record = record.get(part) if isinstance(record, dict) else None
    message = str(item["msg"])
    if item["type"] == "missing":
        message = "required field missing"
    got = item.get("input")
    shown = "" if isinstance(got, dict | list) or item["type"] == "missing" else f", got {got!r}"
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {message}{shown}{tail}"


@dataclass(frozen=True)
class Gap:
    """Something a seed file cannot show, or the ledger could not take as it was."""

    record: str
    """One of `RECORDS`."""
    field: str
    gap: str
    """What is missing, and how it was recorded (or that it was not)."""


@dataclass
class Gaps:
    """The import's list of gaps, grouped by what is missing (each group lists its ids)."""

    groups: dict[Gap, dict[str, None]] = field(default_factory=dict)
    """Each gap's ids, in the order found (a dict: each id once)."""

    def add(self, record: str, seed_id: str, field_name: str, gap: str) -> None:
        self.groups.setdefault(Gap(record, field_name, gap), {})[seed_id] = None

    def documents(self) -> list[dict[str, Any]]:
        """The groups, by kind of record (in `RECORDS` order), then as they were found."""
        groups = sorted(self.groups.items(), key=lambda item: RECORDS.index(item[0].record))
        return [
            {"record": g.record, "field": g.field, "gap": g.gap, "count": len(ids), "ids": [*ids]}
            for g, ids in groups
        ]


RECORDS = ("file", "run", "checkpoint", "eval", "observation", "promotion", "deployment")


def where(label: str, collection: str, index: int, name: str, seed_id: str) -> str:
    return f"{label}: {collection}[{index}] ({name} {seed_id})"


def refuse_duplicates(
    label: str, collection: str, name: str, ids: Iterable[str], kind: str | None
) -> None:
    """Two records of one id refuse the file (`kind`: ids are `ledger_id`s, so the same
    UUID in two spellings is one id)."""
    seen: dict[str, int] = {}
    for index, seed_id in enumerate(ids):
        key = seed_id if kind is None else str(ledger_id(kind, seed_id))
        if key in seen:
            raise SeedRefusedError(
                f"{where(label, collection, index, name, seed_id)}: duplicate id "
                f"(also {collection}[{seen[key]}])"
            )
        seen[key] = index


def refuse_before(what: str, later: datetime, earlier: datetime, earlier_name: str) -> None:
    if later < earlier:
        raise SeedRefusedError(
            f"{what}: timestamps out of order ({later.isoformat()} is before "
            f"{earlier_name} {earlier.isoformat()})"
        )


@dataclass
class SeedTraining:
    """The training registry, checked: its records in the seed's order, indexed by id."""

    label: str
    runs: list[SeedRun]
    raw_runs: list[dict[str, Any]]
    checkpoints: list[SeedCheckpoint]
    evals: list[SeedEval]
    run_index: dict[str, int] = field(default_factory=dict)
    checkpoint_index: dict[str, int] = field(default_factory=dict)
    evals_of: dict[str, list[SeedEval]] = field(default_factory=dict)
    """Each checkpoint's evals (by its seed id), in the order the seed attached them."""
    checkpoints_of: dict[str, list[SeedCheckpoint]] = field(default_factory=dict)
    eval_index: dict[str, int] = field(default_factory=dict)
    listed_by: dict[str, str] = field(default_factory=dict)
    """Each checkpoint listed in a run's `checkpointIds`, with that run."""
    unlisted: set[str] = field(default_factory=set)
    stale_links: dict[str, str] = field(default_factory=dict)
    """Checkpoints whose `lastEvalSummaryRef` is not their latest eval (which is named):
    the seed always links the eval attached last, so the file was edited."""
    """Checkpoints their run's `checkpointIds` does not list (kept: `trainRunId` links them)."""

    def run(self, seed_id: str) -> SeedRun:
        return self.runs[self.run_index[seed_id]]

    def checkpoint(self, seed_id: str) -> SeedCheckpoint | None:
        index = self.checkpoint_index.get(seed_id)
        return None if index is None else self.checkpoints[index]


def read_training(label: str, data: bytes) -> SeedTraining:
    """Parse and check `training-registry.json`; `SeedRefusedError` names the first fault."""
    registry, raw = parse_file(label, data, TrainingRegistryFile)
    training = SeedTraining(
        label,
        registry.trainingRuns,
        raw["trainingRuns"],
        registry.checkpoints,
        registry.evalSummaries,
    )
    runs, checkpoints = training.runs, training.checkpoints
    refuse_duplicates(label, "trainingRuns", "trainRunId", (r.trainRunId for r in runs), "run")
    refuse_duplicates(
        label, "checkpoints", "checkpointId", (c.checkpointId for c in checkpoints), "checkpoint"
    )
    refuse_duplicates(label, "evalSummaries", "evalId", (e.evalId for e in training.evals), None)
    training.run_index = {run.trainRunId: i for i, run in enumerate(training.runs)}
    training.checkpoint_index = {c.checkpointId: i for i, c in enumerate(training.checkpoints)}
    training.eval_index = {e.evalId: i for i, e in enumerate(training.evals)}
    for index, run in enumerate(training.runs):
        _check_run(training, index, run)
    for index, checkpoint in enumerate(training.checkpoints):
        _check_checkpoint(training, index, checkpoint)
    for index, summary in enumerate(training.evals):
        _check_eval(training, index, summary)
    for evals in training.evals_of.values():
        evals.sort(key=lambda e: e.createdAt)  # the seed appends; its queries sort by time
    for index, checkpoint in enumerate(training.checkpoints):
        _check_eval_link(training, index, checkpoint)
    return training


def _check_run(training: SeedTraining, index: int, run: SeedRun) -> None:
    at = where(training.label, "trainingRuns", index, "trainRunId", run.trainRunId)
    if run.completedAt is not None:
        refuse_before(f"{at}: completedAt", run.completedAt, run.createdAt, "createdAt")
    elif run.status in ("completed", "failed"):
        raise SeedRefusedError(
            f"{at}: status {run.status} without completedAt (the seed sets it on both)"
        )
    if run.completedAt is not None and run.status not in ("completed", "failed"):
        raise SeedRefusedError(f"{at}: completedAt on a run that is {run.status}")
    for listed in run.checkpointIds or []:
        if listed not in training.checkpoint_index:
            raise SeedRefusedError(f"{at}: checkpointIds names {listed}, which is not registered")
        lister = training.listed_by.setdefault(listed, run.trainRunId)
        if lister != run.trainRunId:
            raise SeedRefusedError(f"{at}: checkpointIds names {listed}, also listed by {lister}")


def _check_checkpoint(training: SeedTraining, index: int, checkpoint: SeedCheckpoint) -> None:
    at = where(training.label, "checkpoints", index, "checkpointId", checkpoint.checkpointId)
    if checkpoint.trainRunId not in training.run_index:
        raise SeedRefusedError(f"{at}: trainRunId {checkpoint.trainRunId} is not a training run")
    run = training.run(checkpoint.trainRunId)
    if checkpoint.targetModelFamily != run.targetModelFamily:
        raise SeedRefusedError(
            f"{at}: family {checkpoint.targetModelFamily!r} differs from its run's "
            f"{run.targetModelFamily!r}"
        )
    refuse_before(f"{at}: createdAt", checkpoint.createdAt, run.createdAt, "its run's createdAt")
    if run.completedAt is not None:
        refuse_before(
            f"{at}: its run's completedAt", run.completedAt, checkpoint.createdAt, "its createdAt"
        )
    lister = training.listed_by.get(checkpoint.checkpointId)
    if lister is not None and lister != run.trainRunId:
        raise SeedRefusedError(
            f"{at}: listed by run {lister}, but its trainRunId is {run.trainRunId}"
        )
    if lister is None and run.checkpointIds is not None:
        training.unlisted.add(checkpoint.checkpointId)
    training.checkpoints_of.setdefault(run.trainRunId, []).append(checkpoint)


def _check_eval(training: SeedTraining, index: int, summary: SeedEval) -> None:
    at = where(training.label, "evalSummaries", index, "evalId", summary.evalId)
    checkpoint = training.checkpoint(summary.checkpointId)
    if checkpoint is None:
        raise SeedRefusedError(f"{at}: checkpointId {summary.checkpointId} is not a checkpoint")
    if summary.targetModelFamily != checkpoint.targetModelFamily:
        raise SeedRefusedError(
            f"{at}: family {summary.targetModelFamily!r} differs from its checkpoint's "
            f"{checkpoint.targetModelFamily!r}"
        )
    refuse_before(
        f"{at}: createdAt", summary.createdAt, checkpoint.createdAt, "its checkpoint's createdAt"
    )
    training.evals_of.setdefault(checkpoint.checkpointId, []).append(summary)


def _check_eval_link(training: SeedTraining, index: int, checkpoint: SeedCheckpoint) -> None:
    ref = checkpoint.lastEvalSummaryRef
    if ref is None:
        return
    at = where(training.label, "checkpoints", index, "checkpointId", checkpoint.checkpointId)
    evals = training.evals_of.get(checkpoint.checkpointId, [])
    if ref not in training.eval_index:
        raise SeedRefusedError(f"{at}: lastEvalSummaryRef {ref} is not an eval summary")
    linked = training.evals[training.eval_index[ref]]
    if linked.checkpointId != checkpoint.checkpointId:
        raise SeedRefusedError(
            f"{at}: lastEvalSummaryRef {ref} is an eval of checkpoint {linked.checkpointId}"
        )
    if evals[-1].evalId != ref:
        training.stale_links[checkpoint.checkpointId] = evals[-1].evalId


def unknown_field_gaps(gaps: Gaps, record: str, items: Iterable[tuple[str, SeedRecord]]) -> None:
    """Report fields the seed's format does not have (a run's are kept in its record)."""
    found: dict[str, list[str]] = {}
    for seed_id, item in items:
        for name in item.unknown_fields():
            found.setdefault(name, []).append(seed_id)
    kept = "kept in the run's seedRecord" if record == "run" else "not imported"
    for name, ids in found.items():
        for seed_id in ids:
            gaps.add(record, seed_id, name, f"a field the seed's format does not have; {kept}")


def id_mappings(kind: str, ids: Iterable[str]) -> Mapping[str, str]:
    """Seed ids that are not UUIDs, each with the ledger id it is recorded under."""
    mapped: dict[str, str] = {}
    for seed_id in ids:
        try:
            UUID(seed_id)
        except ValueError:
            mapped[seed_id] = str(ledger_id(kind, seed_id))
    return mapped
