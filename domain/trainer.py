"""The trainer protocol (SPEC §4): how a trainer's output becomes an outcome.

Only rules live here. Running the subprocess is a `TrainerRunner`'s job and
resolving an artifact path on disk an `ArtifactLocator`'s (both are ports,
implemented in `adapters.trainer` and injected into the application). The
rules decide from the facts those ports gathered, so `train` and
`import-result` are judged alike, and always against the spec as recorded in
the ledger, never a file a user can edit.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the contract's models are loaded once a result is read (start-up time)
    from trainledger.domain.contract import ExperimentSpec, TrainerResult

TIMEOUT_GRACE_SECONDS = 30.0
"""Added to the budget: a trainer may take this long to wrap up."""

STDOUT_LIMIT = 1 << 20
"""Only the tail of a trainer's stdout is kept: its result is printed last."""

RESULT_FILE_LIMIT = 16 << 20
"""A result document larger than this is not read."""

STDERR_TAIL_BYTES = 4096
"""How much of the end of a trainer's log a runner reads back."""

STDERR_TAIL_LINES = 5
"""A failed run's reason quotes this many last lines of the trainer's stderr..."""

STDERR_TAIL_CHARS = 600
"""... and at most this many characters of them."""

REASON_LIMIT = 2000
"""Failure reasons are cut to this many characters (trainers can be chatty)."""

ABANDONED = "abandoned"
"""The reason `reconcile` records for a run nobody finished in time."""

OutcomeStatus = Literal["completed", "dry_run", "failed"]


def trainer_timeout(spec: ExperimentSpec) -> float:
    """The wall-clock limit of a trainer: its budget plus a grace period, in seconds."""
    return spec.budget.maxWallClockMinutes * 60 + TIMEOUT_GRACE_SECONDS


def budget_deadline(started_at: datetime, spec: ExperimentSpec) -> datetime:
    """When a run started at `started_at` must have finished, timeout included.

    `reconcile` treats a run still running after this moment as abandoned: a
    live `train` would have killed its trainer and recorded the outcome by then.
    """
    try:
        return started_at + timedelta(seconds=trainer_timeout(spec))
    except OverflowError:  # a budget of millions of years never runs out
        return datetime.max.replace(tzinfo=started_at.tzinfo)


def log_file_name(spec: ExperimentSpec) -> str:
    """The trainer's stderr goes to this file inside the output directory."""
    return f"trainer-{spec.experimentId}.log"


def result_file_name(spec: ExperimentSpec) -> str:
    """Where a trainer may also write its result, inside the output directory."""
    return f"result-{spec.experimentId}.json"


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


# --- what the ports hand over ------------------------------------------------


@dataclass(frozen=True)
class TrainerLaunch:
    """What to run: the script (None: the runner's default) for a spec, with a limit."""

    script: str | None
    spec: ExperimentSpec
    timeout_seconds: float


@dataclass(frozen=True)
class TrainerStarted:
    """The trainer process exists: the facts the run's `Started` event records."""

    pid: int
    host: str
    log_path: str


@dataclass(frozen=True)
class TrainerExit:
    """Everything a runner observed about one trainer execution.

    `launch_error` is set when no process could be started (nothing else is
    meaningful then). `stderr_tail` is the end of what the trainer wrote to its
    log at `log_path`; `output_dir_problem` says how the output directory was
    tampered with while the trainer ran. `exit_code` is negative when a signal ended the process.
    `result_file` is the file's content when it was written by this trainer;
    otherwise `result_file_note` says why it was not read.
    """

    launch_error: str | None = None
    log_path: str = ""
    stderr_tail: str = ""
    output_dir_problem: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    timeout_seconds: float = 0.0
    stdout_tail: bytes = b""
    stdout_size: int = 0
    result_file_path: str = ""
    result_file: bytes | None = None
    result_file_note: str | None = None


class TrainerRunner(Protocol):
    """Runs a trainer; calls `on_started` as soon as the process exists.

    If `on_started` raises, the runner kills the trainer and re-raises.
    """

    def __call__(
        self, launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]
    ) -> TrainerExit: ...


@dataclass(frozen=True)
class ArtifactLocation:
    """An artifact path as the filesystem resolves it (symlinks and `..` followed)."""

    reported: str
    resolved: str
    output_dir: str
    exists: bool

    @property
    def inside_output_dir(self) -> bool:
        resolved, root = PurePath(self.resolved), PurePath(self.output_dir)
        return resolved != root and resolved.is_relative_to(root)


ArtifactLocator = Callable[[str, str], ArtifactLocation]
"""(reported artifact path, output dir) -> its location; relative paths are
resolved against the output dir."""


# --- reading a result out of a trainer's output ------------------------------


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)

# Failed decode attempts allowed while scanning one output: bounds the work an
# adversarial stdout (thousands of unterminated, nested objects) can cause.
_SCAN_ATTEMPTS = 20_000


def json_objects(text: str) -> list[dict[str, Any]]:
    """The top-level JSON objects in `text`, in order.

    A whole-JSON output is its single object; a log with a JSON result printed
    last yields that result last. Objects nested in another are not listed.
    """
    objects: list[dict[str, Any]] = []
    position, attempts = 0, 0
    while attempts < _SCAN_ATTEMPTS:
        start = text.find("{", position)
        if start < 0:
            break
        try:
            found, end = _DECODER.raw_decode(text, start)
        except ValueError:
            attempts += 1
            position = start + 1
            continue
        except RecursionError:
            # Nesting no result has: skip the rest of this line rather than
            # retry at each of its thousands of braces.
            attempts += 1
            newline = text.find("\n", start)
            position = len(text) if newline < 0 else newline + 1
            continue
        objects.append(found)
        position = end
    return objects


def result_digest(document: dict[str, Any]) -> str:
    """Digest of a result document, independent of its formatting.

    Stored with the run's outcome, so importing the same result again is
    recognised as a repeat.
    """
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ResultReading:
    """The first valid trainer result found, or what was tried instead."""

    result: TrainerResult | None
    document: dict[str, Any] | None
    source: str | None
    tried: tuple[str, ...]

    @property
    def digest(self) -> str | None:
        return None if self.document is None else result_digest(self.document)


def read_result(data: bytes, source: str) -> ResultReading:
    """Find a trainer result in one output: the last JSON object that is a valid result.

    Invalid UTF-8 is replaced, never fatal. When no object validates, `tried`
    names the problem (empty, no JSON object, or why the last object is not a
    trainer result).
    """
    # Imported here, not with the module: see its imports (start-up time).
    import pydantic

    from trainledger.domain.contract import TrainerResult
    from trainledger.domain.experiment import describe_validation_error

    if not data.strip():
        return ResultReading(None, None, None, (f"{source} was empty",))
    text = data.decode("utf-8", errors="replace")
    objects = json_objects(text)
    if not objects:
        return ResultReading(None, None, None, (f"{source} holds no JSON object",))
    first_error: str | None = None
    for document in reversed(objects):
        try:
            result = TrainerResult.model_validate(document)
        except pydantic.ValidationError as error:
            first_error = first_error or describe_validation_error(error)
            continue
        return ResultReading(result, document, source, ())
    return ResultReading(
        None,
        None,
        None,
        (f"{source}: its last JSON object is not a trainer result: {first_error}",),
    )


def read_trainer_output(finished: TrainerExit) -> ResultReading:
    """stdout first (whole, else its last JSON object), then the result file."""
    truncated = finished.stdout_size > len(finished.stdout_tail)
    stdout_name = (
        f"stdout (last {len(finished.stdout_tail)} of {finished.stdout_size} bytes)"
        if truncated
        else "stdout"
    )
    from_stdout = read_result(finished.stdout_tail, stdout_name)
    if from_stdout.result is not None:
        return from_stdout
    file_name = f"result file {finished.result_file_path}"
    if finished.result_file is None:
        note = f"{file_name} {finished.result_file_note or 'was not found'}"
        return ResultReading(None, None, None, (*from_stdout.tried, note))
    from_file = read_result(finished.result_file, file_name)
    if from_file.result is not None:
        return from_file
    return ResultReading(None, None, None, (*from_stdout.tried, *from_file.tried))
