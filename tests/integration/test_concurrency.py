"""Several OS processes write the same store at once: nothing lost, nothing doubled.

4 writers on SQLite, 8 on PostgreSQL, each running full lifecycles and
fighting over shared records: one pending run all try to start, one running
run some try to complete and others to fail, one run all register
checkpoints on, one checkpoint all attach evals to (one evalId all try to
use) and try to mark deployable, one idempotency key all use. Meanwhile
this process tails the global log like a projection would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification

from tests.concurrency_driver import LIFECYCLES
from tests.support import READER_FAMILY, REPO, eval_summary, reader_request, write_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.model import Checkpoint, TrainingRun
from trainledger.service.ledger import TrainingLedger
from trainledger.service.ports import EVAL_ID

WORKERS = {"sqlite": 4, "postgresql": 8}
SHARED_OPS = 7
# What a command may be refused with when it lost a race; anything else fails the test.
RACE_REFUSALS = {
    "start-shared": {"invalid_transition", "conflict"},
    "finish-shared": {"invalid_transition", "conflict"},
    "eval-shared-same-id": {"duplicate_eval", "eval_refused", "conflict"},
    "mark-shared": {"not_deployable", "conflict"},
}


def seed_shared_records(ledger: TrainingLedger, output_dir: Path) -> dict[str, str]:
    request = reader_request(output_dir, benchmark="bench-race")

    def new_run() -> str:
        created = ledger.create_experiment(
            request, dataset_fingerprint="0123456789abcdef", sample_count=4, actor="setup"
        )
        run_id: str = created["trainRunId"]
        return run_id

    pending, running, shared, finished = new_run(), new_run(), new_run(), new_run()
    for run_id in (running, shared, finished):
        ledger.start_run(run_id, actor="setup")
    checkpoint = ledger.register_checkpoint(
        finished, family=READER_FAMILY, artifact_path=write_artifact(output_dir, "c"), actor="setup"
    )["checkpointId"]
    ledger.complete_run(finished, actor="setup")
    ledger.attach_eval(checkpoint, eval_summary(checkpoint, eval_id="setup-eval"), actor="setup")
    return {
        "pendingRun": pending,
        "runningRun": running,
        "sharedRun": shared,
        "checkpoint": checkpoint,
        "outputDir": str(output_dir),
    }


class LogTail(threading.Thread):
    """Reads the global log as it grows, the way a projection catches up."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ledger = open_ledger(url)
        self.seen: list[int] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def poll(self) -> None:
        after = self.seen[-1] if self.seen else 0
        page = self.ledger.recorder.select_notifications(
            start=after, limit=50, inclusive_of_start=False
        )
        self.seen += [n.id for n in page]

    def run(self) -> None:
        try:
            while not self.done.is_set():
                self.poll()
                time.sleep(0.002)
            self.poll()
        except BaseException as error:
            self.error = error
        finally:
            self.ledger.close()


def read_log(ledger: TrainingLedger, page_size: int = 7) -> list[Notification]:
    log: list[Notification] = []
    while True:
        after = log[-1].id if log else 0
        page = ledger.recorder.select_notifications(
            start=after, limit=page_size, inclusive_of_start=False
        )
        if not page:
            return log
        log += page


def race(url: str, workers: int, plan: dict[str, str], tmp_path: Path) -> list[dict[str, Any]]:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    ready = tmp_path / "ready"
    ready.mkdir()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.concurrency_driver",
                url,
                str(w),
                str(plan_file),
                str(ready),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    deadline = time.monotonic() + 60
    while len(list(ready.glob("ready-*"))) < workers:
        crashed = [p for p in processes if p.poll() is not None]
        assert not crashed, crashed[0].communicate()[1]
        assert time.monotonic() < deadline, "workers did not open the store"
        time.sleep(0.01)
    (ready / "go").touch()
    lines: list[dict[str, Any]] = []
    for worker, process in enumerate(processes):
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"worker {worker} crashed:\n{stderr}"
        assert "Traceback" not in stderr, stderr
        lines += [{**json.loads(line), "worker": worker} for line in stdout.splitlines()]
    return lines


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_and_keep_every_invariant(
    store_url: str, tmp_path: Path
) -> None:
    backend = store_url.split(":", 1)[0]
    workers = WORKERS[backend]
    ledger = open_ledger(store_url)
    plan = seed_shared_records(ledger, tmp_path / "out")
    tail = LogTail(store_url)
    tail.start()
    started = time.monotonic()
    lines = race(store_url, workers, plan, tmp_path)
    elapsed = time.monotonic() - started
    tail.done.set()
    tail.join(timeout=30)
    assert tail.error is None, tail.error

    # Every command answered: acknowledged, or refused only as a lost race allows.
    assert len(lines) == workers * (LIFECYCLES * 6 + 1 + SHARED_OPS)
    refusals = [line for line in lines if not line["ok"]]
    for line in refusals:
        assert line["code"] in RACE_REFUSALS.get(line["op"], set()), line
    acknowledged = [line for line in lines if line["ok"]]
    by_op = Counter(line["op"] for line in acknowledged)
    assert by_op["start-shared"] == 1
    assert by_op["finish-shared"] == 1
    assert by_op["eval-shared-same-id"] == 1
    assert 1 <= by_op["mark-shared"] <= workers
    for op in ("register-shared", "eval-shared-unique", "create-same-key"):
        assert by_op[op] == workers, op
    for op in ("create", "start", "register", "complete", "eval", "stats"):
        assert by_op[op] == workers * LIFECYCLES, op

    # The log: every event once, in order, nothing a tailing reader skipped.
    log = read_log(ledger)
    ids = [n.id for n in log]
    assert ids == sorted(set(ids))
    assert tail.seen == ids, "a reader tailing the log skipped events committed later"
    if backend == "sqlite":
        assert ids == list(range(1, len(ids) + 1))
    versions = Counter((n.originator_id, n.originator_version) for n in log)
    assert max(versions.values()) == 1
    per_aggregate: dict[UUID, list[int]] = {}
    for n in log:
        per_aggregate.setdefault(UUID(str(n.originator_id)), []).append(n.originator_version)
    for aggregate_id, seen_versions in per_aggregate.items():
        assert seen_versions == list(range(1, len(seen_versions) + 1)), aggregate_id
    report = ledger.verify()
    assert report["ok"], report["failure"]
    assert report["events"] == len(log)

    # Every acknowledged command is in the log.
    runs = {rid: ledger.get_run(rid) for rid in per_aggregate if _is(ledger, rid, TrainingRun)}
    checkpoints = {
        cid: ledger.get_checkpoint(cid) for cid in per_aggregate if _is(ledger, cid, Checkpoint)
    }
    assert len(runs) + len(checkpoints) == len(per_aggregate)
    for line in acknowledged:
        result = line["result"]
        if "trainRunId" in result and "status" in result:  # a run document
            run = runs[UUID(result["trainRunId"])]
            assert run.version >= result["version"]
            if line["op"] in ("finish-shared", "complete"):
                assert run.status == result["status"]
        if "checkpointId" in result:
            checkpoint = checkpoints[UUID(result["checkpointId"])]
            assert checkpoint.version >= result["version"]
            assert checkpoint.id in runs[checkpoint.train_run_id].checkpoint_ids
    same_key_runs = {
        line["result"]["trainRunId"] for line in lines if line["op"] == "create-same-key"
    }
    assert len(same_key_runs) == 1

    # The shared records ended in exactly one of the allowed outcomes.
    assert runs[UUID(plan["pendingRun"])].status == "running"
    assert runs[UUID(plan["runningRun"])].status in ("completed", "failed")
    shared_run = runs[UUID(plan["sharedRun"])]
    assert len(shared_run.checkpoint_ids) == workers
    shared_checkpoint = checkpoints[UUID(plan["checkpoint"])]
    eval_ids = [e.evalId for e in shared_checkpoint.evals]
    assert sorted(eval_ids) == sorted(
        ["setup-eval", "race-same", *(f"race-{w}" for w in range(workers))]
    )
    assert shared_checkpoint.deployable
    # Marking again only rests deployability on a newer eval: racing marks on
    # the same current eval made one event, never two.
    marks = [c.eval_id for c in shared_checkpoint.deployability_history if c.deployable]
    assert len(marks) == by_op["mark-shared"]
    assert len(set(marks)) == len(marks)

    # Invariants, replayed from the log.
    all_eval_ids: list[str] = []
    for checkpoint in checkpoints.values():
        run = runs[checkpoint.train_run_id]
        assert checkpoint.id in run.checkpoint_ids
        assert checkpoint.family == run.family
        if checkpoint.deployable:
            assert run.status == "completed"
            assert checkpoint.current_eval is not None
            assert checkpoint.current_eval.verdict != "fail"
        for summary in checkpoint.evals:
            all_eval_ids.append(summary.evalId)
            stored = ledger.ledger_recorder.find_reservation(EVAL_ID, summary.evalId)
            assert stored == str(checkpoint.id).encode()
    assert len(all_eval_ids) == len(set(all_eval_ids))
    for run in runs.values():
        assert run.is_terminal or run.status in ("pending", "running")
        if run.status == "pending":
            assert run.started_at is None
            assert not run.checkpoint_ids
        for checkpoint_id in run.checkpoint_ids:
            assert checkpoints[checkpoint_id].train_run_id == run.id
    # The views, caught up by racing processes, equal a fresh replay and the aggregates.
    read_model = ledger.read_model
    assert read_model is not None
    assert read_model.differences_from_replay() == []
    statuses = Counter(run.status for run in runs.values())
    all_evals = [e for c in checkpoints.values() for e in c.evals]
    assert read_model.stats(None) == {
        "totalRuns": len(runs),
        "completedRuns": statuses["completed"],
        "failedRuns": statuses["failed"],
        "pendingRuns": statuses["pending"],
        "runningRuns": statuses["running"],
        "totalCheckpoints": len(checkpoints),
        "deployableCheckpoints": sum(c.deployable for c in checkpoints.values()),
        "totalEvals": len(all_evals),
        "passingEvals": sum(e.verdict != "fail" for e in all_evals),
        "failingEvals": sum(e.verdict == "fail" for e in all_evals),
        "promotableCheckpoints": 0,
        "routedProfiles": 0,
    }
    # Shown with -s: how the race went.
    print(
        f"{backend}: {workers} writers, {len(acknowledged)} acknowledged, "
        f"{len(refusals)} refused {dict(Counter(r['code'] for r in refusals))}, "
        f"{len(log)} events in {elapsed:.1f}s"
    )
    ledger.close()


def _is(ledger: TrainingLedger, aggregate_id: UUID, kind: type[Any]) -> bool:
    return isinstance(ledger.repository.get(aggregate_id), kind)
