"""Creating an experiment: the rules of SPEC §3.1, checked in order.

`build_spec` is pure: ids, the clock, the dataset's digest and the
local-editor switch are decided by the caller and passed in.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from trainledger.domain.contract import (
    Budget,
    ExpectedArtifact,
    ExperimentSpec,
    Hyperparameters,
    code_hash,
    config_fingerprint,
    dataset_fingerprint,
)
from trainledger.domain.errors import (
    DatasetError,
    FamilyProfileMismatchError,
    HardwareTierError,
    ProfileNotEnabledError,
    ValidationError,
)
from trainledger.domain.vocabulary import (
    ADAPTER_FORMAT,
    BACKENDS,
    FINGERPRINT_PATTERN,
    HARDWARE_TIERS,
    TRAINING_MODES,
    WORKER_PROFILES,
)

PROFILE_FAMILY_PATTERNS: dict[str, tuple[str, ...]] = {
    "local-reader": (
        "reader",
        "read",
        "claude-haiku",
        "qwen-lite",
        "phi-mini",
        "gpt-4o-mini",
        "gpt-4o-nano",
    ),
    "local-editor": ("editor", "edit", "code", "claude-sonnet", "gpt-4o-mini"),
}

_TOKEN_SPLIT = re.compile(r"[-_.:/\s]+")

MAX_INTEGER = 2**63 - 1


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(text.lower()) if t]


def family_suits_profile(family: str, profile: str) -> bool:
    """A pattern matches when its tokens occur consecutively in the family's tokens."""
    family_tokens = _tokens(family)
    for pattern in PROFILE_FAMILY_PATTERNS[profile]:
        wanted = _tokens(pattern)
        width = len(wanted)
        if any(
            family_tokens[i : i + width] == wanted for i in range(len(family_tokens) - width + 1)
        ):
            return True
    return False


PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
"""The fields of an ORPO preference sample, each a string."""


def sample_problem(line: bytes) -> str | None:
    """Why one non-blank line of a JSONL dataset is not a preference sample, or None."""
    try:
        sample = json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        return "is not JSON"
    if not isinstance(sample, dict):
        kind = "array" if isinstance(sample, list) else type(sample).__name__
        return f"is a JSON {kind}, not an object"
    missing = [name for name in PREFERENCE_FIELDS if name not in sample]
    if missing:
        return f"lacks the preference field(s) {', '.join(missing)}"
    not_text = [name for name in PREFERENCE_FIELDS if not isinstance(sample[name], str)]
    if not_text:
        return f"field(s) {', '.join(not_text)} must be strings"
    return None


@dataclass(frozen=True)
class DatasetDigest:
    """What the ledger knows of a dataset: its content digest and sample count.

    `problem` names the first line of a dataset file that is not a
    preference sample (see `sample_problem`); `build_spec` refuses such a file.
    """

    fingerprint: str
    sample_count: int | None
    path: str | None = None
    problem: str | None = None

    @classmethod
    def from_content(
        cls, content_digest16: str, sample_count: int, path: str, problem: str | None = None
    ) -> DatasetDigest:
        fingerprint = dataset_fingerprint(content_digest16, sample_count)
        return cls(fingerprint, sample_count, path, problem)

    def require_samples(self) -> None:
        """A dataset file must hold at least one sample, and only preference samples."""
        if self.path is None:
            return  # a fingerprint given instead of a file: nothing to read
        expected = f"a JSONL file of objects with {', '.join(PREFERENCE_FIELDS)}"
        if self.problem is not None:
            raise DatasetError(f"dataset {self.path}: {self.problem}; expected {expected}")
        if not self.sample_count:
            raise DatasetError(f"dataset {self.path} holds no samples; expected {expected}")

    @classmethod
    def explicit(cls, fingerprint: str, sample_count: int | None) -> DatasetDigest:
        if not re.fullmatch(FINGERPRINT_PATTERN, fingerprint):
            raise ValidationError(
                f"dataset fingerprint {fingerprint!r} must be 16 lowercase hex characters"
            )
        if sample_count is not None and sample_count < 0:
            raise ValidationError("sample count must be >= 0")
        if sample_count is not None and sample_count > MAX_INTEGER:
            raise ValidationError(f"sample count is too large, got {sample_count}")
        return cls(fingerprint, sample_count, None)


@dataclass(frozen=True)
class ExperimentRequest:
    """What a user asks for; values are checked by `build_spec`."""

    profile: str
    family: str
    backend: str
    benchmark_export_id: str
    output_dir: str
    dataset_export_id: str | None = None
    dataset_export_path: str | None = None
    """Where the trainer finds the dataset, when a fingerprint is given instead of a file."""
    tier: str | None = None
    base_model: str | None = None
    """The local directory of the base model (SPEC §12): `baseModel` in the spec."""
    training_mode: str = "orpo"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=dict)


def _check_enum(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValidationError(f"unknown {name} {value!r}; expected one of: {', '.join(allowed)}")


def _merge(model: type[pydantic.BaseModel], label: str, overrides: Mapping[str, Any]) -> Any:
    known = set(model.model_fields)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValidationError(
            f"unknown {label} key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{label} {key} must be a number, got {value!r}")
        # an int too large for a double is as unrepresentable in JSON as inf
        if abs(value) > sys.float_info.max or not math.isfinite(value):
            raise ValidationError(f"{label} {key} must be finite, got {value!r}")
        # events are stored as JSON whose integers are 64-bit
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            raise ValidationError(f"{label} {key} is too large, got {value!r}")
    try:
        return model(**overrides)
    except pydantic.ValidationError as error:
        raise ValidationError(f"invalid {label}: {describe_validation_error(error)}") from None


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """One line naming each failing field and why."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "value"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        parts.append(f"{where}: {item['msg']}{shown}")
    return "; ".join(parts)


def build_spec(
    request: ExperimentRequest,
    load_dataset: Callable[[], DatasetDigest],
    *,
    experiment_id: str,
    now_ms: int,
    local_editor_enabled: bool,
    locate_base_model: Callable[[str], str] | None = None,
) -> ExperimentSpec:
    """Validate a request against the rules, in order, and build the spec.

    `load_dataset` is called only once rules 1-5 hold, so a bad enum is
    reported before a missing dataset file. `locate_base_model` checks a
    named base model and says where it is (it raises when it is unusable);
    without it the name is recorded as given.
    """
    # 1. enumerations are checked, never defaulted silently
    _check_enum("backend", request.backend, BACKENDS)
    if request.tier is not None:
        _check_enum("hardware tier", request.tier, HARDWARE_TIERS)
    _check_enum("worker profile", request.profile, WORKER_PROFILES)
    _check_enum("training mode", request.training_mode, TRAINING_MODES)
    # 2. local-editor is gated
    if request.profile == "local-editor" and not local_editor_enabled:
        raise ProfileNotEnabledError(
            "profile 'local-editor' is not enabled; set TRAINLEDGER_ENABLE_LOCAL_EDITOR=1"
        )
    # 3. the family must suit the profile
    if not request.family.strip():
        raise ValidationError("model family must not be empty")
    if not family_suits_profile(request.family, request.profile):
        patterns = ", ".join(PROFILE_FAMILY_PATTERNS[request.profile])
        raise FamilyProfileMismatchError(
            f"model family {request.family!r} is not valid for profile {request.profile!r} "
            f"(a token must match one of: {patterns})"
        )
    # 4. hardware tier
    tier = request.tier or ("cpu-experimental" if request.backend == "dry-run" else "consumer-gpu")
    if tier == "cpu-experimental" and request.backend != "dry-run":
        raise HardwareTierError(
            f"hardware tier 'cpu-experimental' is only allowed with backend 'dry-run', "
            f"not {request.backend!r}"
        )
    # 5. hyperparameters and budget
    hyperparameters: Hyperparameters = _merge(
        Hyperparameters, "hyperparameter", request.hyperparameters
    )
    budget: Budget = _merge(Budget, "budget", request.budget)
    for label, value in (
        ("benchmark export id", request.benchmark_export_id),
        ("output dir", request.output_dir),
    ):
        if not value.strip():
            raise ValidationError(f"{label} must not be empty")
    # 6-7. fingerprints (the dataset is read only now), ids, the rest of the spec
    dataset = load_dataset()
    dataset.require_samples()
    if dataset.path is not None and request.dataset_export_path is not None:
        raise ValidationError("a dataset export path goes with a fingerprint, not a dataset file")
    base_model = request.base_model
    if base_model is not None:
        if not isinstance(base_model, str):
            raise ValidationError(f"base model must be a path, not {type(base_model).__name__}")
        if not base_model.strip():
            raise ValidationError("base model must not be empty")
        if locate_base_model is not None:
            base_model = locate_base_model(base_model)
    return ExperimentSpec(
        experimentId=experiment_id,
        backend=request.backend,
        trainingMode="orpo",
        targetWorkerProfile=request.profile,
        targetModelFamily=request.family,
        baseModel=base_model,
        hardwareTier=tier,
        datasetExportId=request.dataset_export_id or f"dataset-{dataset.fingerprint}",
        # A fingerprint without a path: "" says there is no file, and a trainer
        # that treats the path as a string (the seed's contract) does not crash.
        datasetExportPath=(
            dataset.path if dataset.path is not None else request.dataset_export_path or ""
        ),
        datasetFingerprint=dataset.fingerprint,
        benchmarkExportId=request.benchmark_export_id,
        outputDir=request.output_dir,
        configFingerprint=config_fingerprint(hyperparameters),
        codeHash=code_hash(),
        hyperparameters=hyperparameters,
        budget=budget,
        expectedArtifact=ExpectedArtifact(
            checkpointName=f"checkpoint-{request.family}-{now_ms}",
            adapterFormat=ADAPTER_FORMAT,
        ),
    )
