"""The trainer contract: experiment spec, trainer result, eval summary.

Field names are the seed's camelCase names so that existing trainer scripts
keep working. Every model is frozen; the spec and eval refuse unknown fields,
the trainer result keeps them (trainers add their own diagnostics).
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from trainledger.domain import vocabulary
from trainledger.domain.text import is_read_back, text_problem
from trainledger.domain.vocabulary import (
    ADAPTER_FORMAT,
    FINGERPRINT_PATTERN,
    Backend,
    EvalMode,
    HardwareTier,
    ResultStatus,
    TrainingMode,
    Verdict,
    WorkerProfile,
)


def _refuse_control_characters(data: Any, info: ValidationInfo) -> Any:
    """The ledger's text rule (`domain.text`) on a document before it is validated.

    Not on a model inside an event read back from the store (`domain.text.READ_BACK`):
    it was checked when the event was created, and each nested model would walk
    its part of the document again.
    """
    if is_read_back(info.context):
        return data
    problem = text_problem(data)
    if problem is not None:
        raise ValueError(problem)
    return data


class Contract(BaseModel):
    """Base of the contract models: frozen, strict about unknown fields, printable text."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    _printable = model_validator(mode="before")(_refuse_control_characters)


class Hyperparameters(Contract):
    learningRate: float = Field(3e-4, gt=0, le=1)  # noqa: N815
    batchSize: int = Field(2, ge=1)  # noqa: N815
    gradientAccumulation: int = Field(8, ge=1)  # noqa: N815
    loraRank: int = Field(16, ge=1, le=1024)  # noqa: N815
    loraAlpha: int | float = Field(32, gt=0)  # noqa: N815
    loraDropout: float = Field(0.05, ge=0, lt=1)  # noqa: N815
    warmupRatio: float = Field(0.1, ge=0, le=1)  # noqa: N815
    maxSteps: int = Field(1000, ge=1)  # noqa: N815
    maxSeqLength: int = Field(2048, ge=128, le=8192)  # noqa: N815


class Budget(Contract):
    maxWallClockMinutes: int | float = Field(240, ge=1)  # noqa: N815
    maxTrainTokens: int = Field(2_000_000, ge=1)  # noqa: N815


class ExpectedArtifact(Contract):
    checkpointName: str  # noqa: N815
    adapterFormat: Literal["peft-adapter"] = ADAPTER_FORMAT  # noqa: N815


class ExperimentSpec(Contract):
    """What a trainer is asked to do; recorded whole in the run's first event."""

    experimentId: str  # noqa: N815
    backend: Backend
    trainingMode: TrainingMode = "orpo"  # noqa: N815
    targetWorkerProfile: WorkerProfile  # noqa: N815
    targetModelFamily: str = Field(min_length=1)  # noqa: N815
    baseModel: str | None = Field(None, min_length=1)  # noqa: N815
    """The local directory of the base model a trainer starts from (SPEC §12), if named."""
    hardwareTier: HardwareTier  # noqa: N815
    datasetExportId: str  # noqa: N815
    datasetExportPath: str | None = None  # noqa: N815
    datasetFingerprint: str = Field(pattern=FINGERPRINT_PATTERN)  # noqa: N815
    benchmarkExportId: str  # noqa: N815
    outputDir: str  # noqa: N815
    configFingerprint: str = Field(pattern=FINGERPRINT_PATTERN)  # noqa: N815
    codeHash: str = Field(pattern=FINGERPRINT_PATTERN)  # noqa: N815
    hyperparameters: Hyperparameters
    budget: Budget
    expectedArtifact: ExpectedArtifact  # noqa: N815

    @model_serializer(mode="wrap")
    def _without_absent_base_model(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A spec that names no base model is written as before `baseModel` existed.

        Specs are stored inside events, whose hashes cover what was written:
        the documents of older runs (and their export) stay byte-identical.
        """
        document: dict[str, Any] = handler(self)
        if document.get("baseModel", "") is None:
            del document["baseModel"]
        return document


class ResultArtifact(BaseModel):
    """The artifact a trainer reports; extra fields are kept."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    artifactPath: str = Field(min_length=1)  # noqa: N815
    adapterFormat: str = "peft-adapter"  # noqa: N815
    checkpointName: str | None = None  # noqa: N815


class TrainerResult(BaseModel):
    """What a trainer reports on stdout or in its result file.

    Optional fields may be absent or null; unknown extra fields are kept.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    # Its text is judged with the rest of what makes a result storable
    # (`trainer_outcome.unportable_json`, by the same rule), not refused on reading.

    experimentId: str  # noqa: N815
    backend: str
    status: ResultStatus
    targetWorkerProfile: str  # noqa: N815
    targetModelFamily: str  # noqa: N815
    datasetFingerprint: str  # noqa: N815
    configFingerprint: str  # noqa: N815
    codeHash: str  # noqa: N815
    createdAt: str | None = None  # noqa: N815
    checkpointId: str | None = None  # noqa: N815
    checkpointRef: str | None = None  # noqa: N815
    artifact: ResultArtifact | None = None
    metrics: dict[str, Any] | None = None
    finalLoss: float | None = None  # noqa: N815
    failureReason: str | None = None  # noqa: N815

    CHECKED_FIELDS: ClassVar[tuple[str, ...]] = (
        "experimentId",
        "backend",
        "targetWorkerProfile",
        "targetModelFamily",
        "datasetFingerprint",
        "configFingerprint",
        "codeHash",
    )


def _delta_may_be_omitted(schema: dict[str, Any]) -> None:
    """The published JSON Schema must not require what the model computes when omitted."""
    schema["required"] = [name for name in schema["required"] if name != "delta"]


class EvalSummary(Contract):
    """One benchmark evaluation of a checkpoint.

    `delta` may be omitted (it is then candidate - baseline); when given it
    must agree with the scores within 1e-9.
    """

    model_config = ConfigDict(json_schema_extra=_delta_may_be_omitted)

    DELTA_TOLERANCE: ClassVar[float] = 1e-9

    evalId: str = Field(min_length=1)  # noqa: N815
    checkpointId: str  # noqa: N815
    benchmarkId: str = Field(min_length=1)  # noqa: N815
    targetModelFamily: str = Field(min_length=1)  # noqa: N815
    mode: EvalMode
    baselineScore: float  # noqa: N815
    candidateScore: float  # noqa: N815
    delta: float
    verdict: Verdict

    @model_validator(mode="before")
    @classmethod
    def _compute_missing_delta(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("delta") is None:
            baseline, candidate = data.get("baselineScore"), data.get("candidateScore")
            if isinstance(baseline, int | float) and isinstance(candidate, int | float):
                try:
                    return {**data, "delta": float(candidate) - float(baseline)}
                except OverflowError:  # not a score: the fields' own validation says so
                    return data
        return data

    @model_validator(mode="after")
    def _delta_agrees_with_scores(self) -> EvalSummary:
        expected = self.candidateScore - self.baselineScore
        if not math.isfinite(expected) or abs(self.delta - expected) > self.DELTA_TOLERANCE:
            raise ValueError(
                f"delta {self.delta!r} differs from candidateScore - baselineScore "
                f"({expected!r}) by more than {self.DELTA_TOLERANCE}"
            )
        return self


# --- fingerprints -----------------------------------------------------------


def js_number(value: float | int) -> str:
    """Format a number the way JavaScript's `JSON.stringify` does.

    The seed computed fingerprints in TypeScript, so `2.0` must print `2`,
    `3e-4` must print `0.0003` and `1e-7` must print `1e-7`.
    """
    try:
        # JavaScript numbers are doubles: an int beyond 2**53 prints as its double.
        number = float(value)
    except OverflowError:
        number = math.inf
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    decimal = Decimal(repr(abs(number)))
    digits_tuple = decimal.normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    exponent = digits_tuple.exponent
    assert isinstance(exponent, int)
    k = len(digits)
    n = exponent + k  # position of the decimal point relative to the digits
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _js_json(value: Any) -> str:
    """Compact JSON with sorted keys and JavaScript number formatting."""
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{_js_json(v)}" for k, v in sorted(value.items()))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_js_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return js_number(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def short_sha256(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


def config_fingerprint(hyperparameters: Hyperparameters) -> str:
    """sha256 of the hyperparameters as sorted compact JS-style JSON, 16 hex."""
    return short_sha256(_js_json(hyperparameters.model_dump()))


def dataset_fingerprint(content_digest16: str, sample_count: int) -> str:
    """h2 = sha256(f"{h1}:{sampleCount}")[:16], h1 = sha256(file bytes)[:16]."""
    return short_sha256(f"{content_digest16}:{sample_count}")


@cache
def code_hash() -> str:
    """sha256 over the sources of the contract (this module, then its vocabulary), 16 hex.

    Ties every spec and result to the contract version that produced them.
    """
    return short_sha256(Path(__file__).read_bytes() + Path(vocabulary.__file__).read_bytes())
