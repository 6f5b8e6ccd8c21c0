"""Judging a trainer's result against the spec the ledger recorded (SPEC §4.6-4.7).

`assess_exit` (after `train`) and `assess_result` (for `run import-result`)
turn what a trainer produced into a `TrainerOutcome`: what the ledger
records. Always against the spec as recorded, never a file a user can edit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainledger.domain.text import printable, text_problem
from trainledger.domain.trainer import (
    REASON_LIMIT,
    STDERR_TAIL_CHARS,
    STDERR_TAIL_LINES,
    ArtifactLocation,
    ArtifactLocator,
    OutcomeStatus,
    ResultReading,
    TrainerExit,
    format_seconds,
    read_trainer_output,
)
from trainledger.domain.vocabulary import ADAPTER_FORMAT

if TYPE_CHECKING:  # the contract's models are loaded once a result is read (start-up time)
    from trainledger.domain.contract import ExperimentSpec, TrainerResult


@dataclass(frozen=True)
class TrainerOutcome:
    """What the ledger records for a trainer execution or an imported result.

    `completed` registers a checkpoint of `artifact_path` (with `metrics`) and
    completes the run; `dry_run` completes it without a checkpoint; `failed`
    fails it with `reason`. `trainer_result` is the whole result document as
    received (unknown fields kept, SPEC §4.6), recorded with the run's end;
    None when there was no valid result or it cannot be stored.
    """

    status: OutcomeStatus
    reason: str | None = None
    result_status: str | None = None
    result_source: str | None = None
    result_digest: str | None = None
    artifact_path: str | None = None
    checkpoint_ref: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    trainer_result: dict[str, Any] | None = None

    @classmethod
    def failure(cls, reason: str, reading: ResultReading | None = None) -> TrainerOutcome:
        return cls(
            status="failed",
            reason=clean_reason(reason),
            result_status=reading.result.status if reading and reading.result else None,
            result_source=reading.source if reading else None,
            result_digest=reading.digest if reading else None,
            trainer_result=storable_result(reading),
        )


def clean_text(text: str) -> str:
    """Text that any store can hold: what `domain.text` refuses (lone surrogates from
    JSON escapes, control characters from a terminal) replaced."""
    return printable(text)


def clean_reason(reason: str) -> str:
    reason = clean_text(reason).strip() or "no reason given"
    if len(reason) > REASON_LIMIT:
        reason = reason[: REASON_LIMIT - 15] + " … (truncated)"
    return reason


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _exit_note(exit_code: int | None) -> str:
    if exit_code is None or exit_code == 0:
        return ""
    if exit_code < 0:
        return f"trainer was killed by signal {-exit_code}"
    return f"trainer exited with code {exit_code}"


def contract_mismatches(spec: ExperimentSpec, result: TrainerResult) -> list[str]:
    """Each checked field the result reports differently from the spec."""
    return [
        f"{name}: expected {_shown(getattr(spec, name))}, got {_shown(getattr(result, name))}"
        for name in result.CHECKED_FIELDS
        if getattr(result, name) != getattr(spec, name)
    ]


_MAX_INT = 2**63 - 1
_MAX_DEPTH = 32


def unportable_json(value: Any, where: str, depth: int = 0) -> str | None:
    """Why a JSON value cannot be stored as-is (every store must round-trip it), or None."""
    if depth > _MAX_DEPTH:
        return f"{where} is nested deeper than {_MAX_DEPTH} levels"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -_MAX_INT - 1 <= value <= _MAX_INT else f"{where} is out of 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is not finite"
    if isinstance(value, str):
        return text_problem(value, where)
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = unportable_json(item, f"{where}[{index}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or text_problem(key) is not None:
                return (
                    f"{where} has a key that is not valid Unicode text or holds a control character"
                )
            problem = unportable_json(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
        return None
    return f"{where} is not a JSON value"


def unportable_result(document: dict[str, Any]) -> str | None:
    """Why a trainer result document cannot be stored as-is, or None.

    Each top-level field is checked as `unportable_json` checks metrics, so a
    problem in `metrics` is named the same way by both checks.
    """
    for key, value in document.items():
        if not isinstance(key, str) or text_problem(key) is not None:
            return (
                "the result has a key that is not valid Unicode text or holds a control character"
            )
        problem = unportable_json(value, key)
        if problem:
            return problem
    return None


def storable_result(reading: ResultReading | None) -> dict[str, Any] | None:
    """The result document a reading found, if every store can hold it as-is."""
    if reading is None or reading.document is None or unportable_result(reading.document):
        return None
    return reading.document


def checkpoint_metrics(result: TrainerResult) -> dict[str, Any]:
    """The trainer's `metrics` object, with its top-level `finalLoss` when given."""
    metrics = dict(result.metrics or {})
    if result.finalLoss is not None:
        metrics["finalLoss"] = result.finalLoss
    return metrics


def assess_result(
    spec: ExperimentSpec,
    reading: ResultReading,
    *,
    exit_code: int | None,
    locate: ArtifactLocator,
) -> TrainerOutcome:
    """Judge a valid trainer result against the recorded spec (SPEC §4.6-7).

    Every problem is listed in the failure reason. A non-zero `exit_code`
    never yields a completed run; `None` means there was no process (import).
    """
    result = reading.result
    assert result is not None, "assess_result needs a reading that found a result"
    problems = contract_mismatches(spec, result)
    exit_note = _exit_note(exit_code)
    location: ArtifactLocation | None = None
    if result.status == "dry_run":
        if spec.backend != "dry-run":
            problems.append(
                f"status dry_run is only valid for a dry-run spec, not backend {spec.backend!r}"
            )
        if result.artifact is not None:
            problems.append("a dry_run result must carry no artifact")
    elif result.status == "completed":
        if spec.backend == "dry-run":
            # The seed's contract: a dry run must not produce a deployable checkpoint.
            problems.append(
                "status completed is not valid for a dry-run spec: "
                "a dry-run spec must not produce a checkpoint"
            )
        if result.artifact is None:
            problems.append("a completed result needs an artifact, and it has none")
        else:
            if result.artifact.adapterFormat != ADAPTER_FORMAT:
                problems.append(
                    f"artifact.adapterFormat: expected {ADAPTER_FORMAT!r}, "
                    f"got {_shown(result.artifact.adapterFormat)}"
                )
            location = locate(clean_text(result.artifact.artifactPath), spec.outputDir)
            if not location.inside_output_dir:
                problems.append(
                    f"artifact path {_shown(location.reported)} resolves to "
                    f"{location.resolved}, outside the output directory {location.output_dir}"
                )
            elif not location.exists:
                problems.append(f"artifact path {location.resolved} does not exist")
        for name, value in (
            ("metrics", checkpoint_metrics(result)),
            ("checkpointRef", result.checkpointRef),
        ):
            problem = unportable_json(value, name)
            if problem:
                problems.append(problem)
    if result.status != "failed":
        # the whole document is recorded with the run's end: it must be storable
        problem = unportable_result(reading.document or {})
        if problem and problem not in problems:
            problems.append(problem)
    if result.status == "failed":
        trainer_reason = (result.failureReason or "").strip()
        if problems:
            told = f" (the trainer reported: {trainer_reason})" if trainer_reason else ""
            return TrainerOutcome.failure(
                f"trainer result rejected: {'; '.join(problems)}{told}", reading
            )
        if not trainer_reason:
            trainer_reason = "the trainer reported failure without a reason"
            if exit_note:
                trainer_reason += f" ({exit_note})"
        return TrainerOutcome.failure(trainer_reason, reading)
    if exit_note:
        problems.insert(0, f"{exit_note} although its result says {result.status}")
    if problems:
        return TrainerOutcome.failure(f"trainer result rejected: {'; '.join(problems)}", reading)
    accepted = TrainerOutcome(
        status="dry_run",
        result_status=result.status,
        result_source=reading.source,
        result_digest=reading.digest,
        trainer_result=reading.document,
    )
    if result.status == "dry_run":
        return accepted
    assert location is not None
    return dataclasses.replace(
        accepted,
        status="completed",
        artifact_path=location.resolved,
        checkpoint_ref=result.checkpointRef or result.checkpointId,
        metrics=checkpoint_metrics(result),
    )


def assess_exit(
    spec: ExperimentSpec, finished: TrainerExit, locate: ArtifactLocator
) -> TrainerOutcome:
    """Decide the outcome of one trainer execution (SPEC §4.4-7).

    A failure's reason ends with the last lines of the trainer's stderr and
    the log's path, so a crash inside the trainer shows in `run show`.
    """
    if finished.launch_error is not None:
        return TrainerOutcome.failure(finished.launch_error)
    if finished.timed_out:
        outcome = TrainerOutcome.failure(
            f"timeout after {format_seconds(finished.timeout_seconds)} s"
        )
    elif finished.output_dir_problem is not None:
        outcome = TrainerOutcome.failure(finished.output_dir_problem)
    else:
        outcome = _assess_output(spec, finished, locate)
    if outcome.status != "failed" or not finished.stderr_tail.strip():
        return outcome
    quoted = stderr_quote(finished.stderr_tail)
    ending = f"; trainer log {finished.log_path} ends: {quoted}"
    head = clean_reason(outcome.reason or "")[: max(0, REASON_LIMIT - len(ending))]
    return dataclasses.replace(outcome, reason=clean_reason(head + ending))


def stderr_quote(tail: str) -> str:
    """The last few lines of a trainer's stderr on one line, bounded, control characters shown."""
    lines = [line.strip() for line in clean_text(tail).splitlines() if line.strip()]
    quoted = " | ".join(lines[-STDERR_TAIL_LINES:])
    quoted = "".join("\ufffd" if (ord(c) < 32 or 0x7F <= ord(c) < 0xA0) else c for c in quoted)
    if len(quoted) > STDERR_TAIL_CHARS:
        quoted = "…" + quoted[-(STDERR_TAIL_CHARS - 1) :]
    return quoted


def _assess_output(
    spec: ExperimentSpec, finished: TrainerExit, locate: ArtifactLocator
) -> TrainerOutcome:
    reading = read_trainer_output(finished)
    if reading.result is None:
        exit_note = _exit_note(finished.exit_code)
        context = f" ({exit_note})" if exit_note else ""
        return TrainerOutcome.failure(
            f"no valid trainer result{context}; tried {'; '.join(reading.tried)}"
        )
    return assess_result(spec, reading, exit_code=finished.exit_code, locate=locate)
