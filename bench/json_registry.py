"""The comparator: the design of the registry trainledger replaces.

The seed (principles-disciple 1.7.8, `core/model-training-registry` with
`utils/file-lock`) keeps every training run, checkpoint and eval summary in
one JSON file. Every write:

1. takes a lock file beside it: `open(O_WRONLY | O_CREAT | O_EXCL)`, writes
   its pid, fsyncs and closes it, then reads the pid back to make sure it holds
   the lock (on EEXIST: clear a stale lock, back off 10 ms doubling to 500 ms);
2. reads and parses the whole file;
3. finds the record by a linear scan, checks the same rules, modifies it;
4. writes the whole registry (JSON, 2-space indent) to `<file>.tmp` and renames
   it over the file;
5. releases the lock (reads the pid back, unlinks the lock file if it is its own).

The seed does not fsync the data file (only the lock file): that is the
default here too, so the comparator is exactly as durable as the original
and no slower. `fsync_data=True` adds the fsync a durable design needs before
the rename (the variant the issue describes), measured side by side.

This port uses orjson, which parses and writes JSON at least as fast as the
seed's V8 `JSON.parse`/`JSON.stringify`, so it errs in the seed's favour.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import orjson

Record = dict[str, Any]
Registry = dict[str, list[Record]]
T = TypeVar("T")

REGISTRY_FILE = Path(".state") / "nocturnal" / "training-registry.json"
TRANSITIONS = {
    "pending": ("running",),
    "running": ("completed", "failed"),
    "completed": (),
    "failed": (),
}
MAX_RETRIES = 50
BASE_RETRY_DELAY = 0.010
MAX_RETRY_DELAY = 0.500
LOCK_STALE_SECONDS = 10.0


def _now() -> str:
    """`new Date().toISOString()`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def empty_registry() -> Registry:
    return {"trainingRuns": [], "checkpoints": [], "evalSummaries": []}


class RegistryError(Exception):
    pass


class JsonFileRegistry:
    """The seed's training registry: one JSON file, rewritten whole under a lock file."""

    def __init__(self, state_dir: Path, *, fsync_data: bool = False) -> None:
        self.path = state_dir / REGISTRY_FILE
        self.lock_path = Path(f"{self.path}.lock")
        self.fsync_data = fsync_data
        self.pid = os.getpid()

    # --- file lock (utils/file-lock) ---------------------------------------------

    def _try_acquire(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, str(self.pid).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _lock_pid(self) -> int | None:
        try:
            return int(self.lock_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _clear_stale_lock(self) -> None:
        try:
            age = time.time() - self.lock_path.stat().st_mtime
        except OSError:
            return
        pid = self._lock_pid()
        if age > LOCK_STALE_SECONDS or pid is None or not _alive(pid):
            with contextlib.suppress(OSError):
                self.lock_path.unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        for attempt in range(MAX_RETRIES):
            if self._try_acquire() and self._lock_pid() == self.pid:
                break
            self._clear_stale_lock()
            delay = min(BASE_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY)
            time.sleep(delay * (1 + 0.2 * random.random()))
        else:
            raise RegistryError(f"failed to acquire lock for {self.path}")
        try:
            yield
        finally:
            if self._lock_pid() == self.pid:
                with contextlib.suppress(OSError):
                    self.lock_path.unlink()

    # --- whole-file read and write ----------------------------------------------

    def read(self) -> Registry:
        if not self.path.exists():
            return empty_registry()
        try:
            registry: Registry = orjson.loads(self.path.read_bytes())
        except orjson.JSONDecodeError:
            return empty_registry()
        return registry

    def write(self, registry: Registry) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{self.path}.tmp")
        data = orjson.dumps(registry, option=orjson.OPT_INDENT_2)
        with open(tmp, "wb") as handle:
            handle.write(data)
            if self.fsync_data:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _update(self, change: Callable[[Registry], T]) -> T:
        with self._locked():
            registry = self.read()
            result = change(registry)
            self.write(registry)
            return result

    # --- commands ---------------------------------------------------------------

    def register_training_run(self, params: Record) -> Record:
        def change(registry: Registry) -> Record:
            run = {
                "trainRunId": str(uuid4()),
                **params,
                "createdAt": _now(),
                "status": "pending",
                "checkpointIds": [],
            }
            registry["trainingRuns"].append(run)
            return run

        return self._update(change)

    def update_run_status(self, run_id: str, status: str, reason: str | None = None) -> Record:
        def change(registry: Registry) -> Record:
            runs = registry["trainingRuns"]
            index = _find(runs, "trainRunId", run_id, "Training run")
            run = runs[index]
            if status not in TRANSITIONS[run["status"]]:
                raise RegistryError(f"invalid transition {run['status']} -> {status}")
            updated = {**run, "status": status}
            # JSON.stringify drops the keys the seed sets to `undefined`.
            updated.pop("completedAt", None)
            updated.pop("failureReason", None)
            if status in ("completed", "failed"):
                updated["completedAt"] = _now()
            if status == "failed":
                updated["failureReason"] = reason
            runs[index] = updated
            return updated

        return self._update(change)

    def register_checkpoint(self, run_id: str, family: str, artifact_path: str) -> Record:
        def change(registry: Registry) -> Record:
            runs = registry["trainingRuns"]
            index = _find(runs, "trainRunId", run_id, "Training run")
            run = runs[index]
            if run["targetModelFamily"] != family:
                raise RegistryError("target model family mismatch")
            checkpoint = {
                "checkpointId": str(uuid4()),
                "trainRunId": run_id,
                "targetModelFamily": family,
                "artifactPath": artifact_path,
                "createdAt": _now(),
                "deployable": False,
            }
            registry["checkpoints"].append(checkpoint)
            runs[index] = {
                **run,
                "checkpointIds": [*run["checkpointIds"], checkpoint["checkpointId"]],
            }
            return checkpoint

        return self._update(change)

    def attach_eval_summary(self, checkpoint_id: str, summary: Record) -> Record:
        def change(registry: Registry) -> Record:
            checkpoints = registry["checkpoints"]
            index = _find(checkpoints, "checkpointId", checkpoint_id, "Checkpoint")
            checkpoint = checkpoints[index]
            if summary["targetModelFamily"] != checkpoint["targetModelFamily"]:
                raise RegistryError("family mismatch")
            evaluation = {**summary, "createdAt": _now()}
            registry["evalSummaries"].append(evaluation)
            checkpoints[index] = {**checkpoint, "lastEvalSummaryRef": summary["evalId"]}
            return evaluation

        return self._update(change)

    def mark_checkpoint_deployable(self, checkpoint_id: str) -> Record:
        def change(registry: Registry) -> Record:
            checkpoints = registry["checkpoints"]
            index = _find(checkpoints, "checkpointId", checkpoint_id, "Checkpoint")
            checkpoint = checkpoints[index]
            ref = checkpoint.get("lastEvalSummaryRef")
            evaluation = next((e for e in registry["evalSummaries"] if e["evalId"] == ref), None)
            if evaluation is None or evaluation["verdict"] == "fail":
                raise RegistryError("no passing eval")
            run = next(
                (
                    r
                    for r in registry["trainingRuns"]
                    if r["trainRunId"] == checkpoint["trainRunId"]
                ),
                None,
            )
            if run is None or run["status"] != "completed":
                raise RegistryError("parent run not completed")
            checkpoints[index] = {**checkpoint, "deployable": True}
            return checkpoints[index]

        return self._update(change)


def _find(records: list[Record], key: str, value: str, kind: str) -> int:
    for index, record in enumerate(records):
        if record[key] == value:
            return index
    raise RegistryError(f"{kind} not found: {value}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


# --- the benchmark's lifecycle on the comparator -------------------------------------


def run_params(family: str, dataset: str, n: int) -> Record:
    return {
        "experimentId": str(uuid4()),
        "targetModelFamily": family,
        "datasetFingerprint": dataset,
        "exportId": f"export-{n}",
        "sampleCount": 1000,
        "configFingerprint": "dc867911eece7ac3",
    }


def eval_summary(checkpoint_id: str, family: str, benchmark: str, verdict: str) -> Record:
    return {
        "evalId": f"eval-{uuid4().hex}",
        "checkpointId": checkpoint_id,
        "benchmarkId": benchmark,
        "targetModelFamily": family,
        "mode": "prompt_assisted",
        "baselineScore": 0.5,
        "candidateScore": 0.75,
        "delta": 0.25,
        "verdict": verdict,
    }


def bulk_registry(lifecycles: list[tuple[str, str, str, str, str]]) -> Registry:
    """A registry holding finished lifecycles: (family, dataset, benchmark, verdict, artifact)."""
    registry = empty_registry()
    for n, (family, dataset, benchmark, verdict, artifact) in enumerate(lifecycles):
        now = _now()
        run_id, checkpoint_id = str(uuid4()), str(uuid4())
        summary = eval_summary(checkpoint_id, family, benchmark, verdict)
        registry["trainingRuns"].append(
            {
                "trainRunId": run_id,
                **run_params(family, dataset, n),
                "createdAt": now,
                "status": "completed",
                "checkpointIds": [checkpoint_id],
                "completedAt": now,
            }
        )
        registry["checkpoints"].append(
            {
                "checkpointId": checkpoint_id,
                "trainRunId": run_id,
                "targetModelFamily": family,
                "artifactPath": artifact,
                "createdAt": now,
                "deployable": True,
                "lastEvalSummaryRef": summary["evalId"],
            }
        )
        registry["evalSummaries"].append({**summary, "createdAt": now})
    return registry
