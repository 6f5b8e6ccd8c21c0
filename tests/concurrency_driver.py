"""One of several writer processes racing on a store; used by the concurrency tests.

    python -m tests.concurrency_driver URL WORKER PLAN_FILE READY_DIR

PLAN_FILE (JSON) names the shared records every worker fights over. The
worker opens the ledger, touches READY_DIR/ready-WORKER, waits for
READY_DIR/go, then runs its own full lifecycles interleaved with commands on
the shared records. Each command prints one JSON line: `{"op", "ok": true,
"result"}` when acknowledged, `{"op", "ok": false, "code", "message"}` when
refused by a rule. Anything else is a crash: traceback on stderr, exit 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tests.support import READER_FAMILY, eval_summary, write_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import LedgerError
from trainledger.domain.experiment import ExperimentRequest
from trainledger.service.ledger import TrainingLedger

LIFECYCLES = 3


def request(output_dir: str) -> ExperimentRequest:
    return ExperimentRequest(
        profile="local-reader",
        family=READER_FAMILY,
        backend="dry-run",
        benchmark_export_id="bench-race",
        output_dir=output_dir,
    )


def create(ledger: TrainingLedger, output_dir: str, actor: str, key: str | None) -> Any:
    return ledger.create_experiment(
        request(output_dir),
        dataset_fingerprint="0123456789abcdef",
        sample_count=4,
        actor=actor,
        idempotency_key=key,
    )


def stats(ledger: TrainingLedger) -> Any:
    assert ledger.read_model is not None
    return ledger.read_model.stats(None)


def record(op: str, command: Callable[[], Any]) -> Any:
    try:
        result = command()
    except LedgerError as refusal:
        line: dict[str, Any] = {
            "op": op,
            "ok": False,
            "code": refusal.code,
            "message": str(refusal),
        }
        result = None
    else:
        line = {"op": op, "ok": True, "result": result}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return result


def main() -> None:
    url, worker, plan_file, ready_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    plan = json.loads(Path(plan_file).read_text())
    actor = f"worker-{worker}"
    out = plan["outputDir"]
    ledger = open_ledger(url)
    Path(ready_dir, f"ready-{worker}").touch()
    go = Path(ready_dir, "go")
    while not go.exists():
        time.sleep(0.005)

    shared: list[tuple[str, Callable[[], Any]]] = [
        ("start-shared", lambda: ledger.start_run(plan["pendingRun"], actor=actor)),
        (
            "finish-shared",
            (lambda: ledger.complete_run(plan["runningRun"], actor=actor))
            if worker % 2
            else (lambda: ledger.fail_run(plan["runningRun"], f"{actor} gave up", actor=actor)),
        ),
        (
            "register-shared",
            lambda: ledger.register_checkpoint(
                plan["sharedRun"],
                family=READER_FAMILY,
                artifact_path=write_artifact(Path(out), actor),
                actor=actor,
            ),
        ),
        (
            "eval-shared-unique",
            lambda: ledger.attach_eval(
                plan["checkpoint"],
                eval_summary(plan["checkpoint"], eval_id=f"race-{worker}"),
                actor=actor,
            ),
        ),
        (
            "eval-shared-same-id",
            lambda: ledger.attach_eval(
                plan["checkpoint"],
                eval_summary(plan["checkpoint"], eval_id="race-same"),
                actor=actor,
            ),
        ),
        ("mark-shared", lambda: ledger.mark_deployable(plan["checkpoint"], actor=actor)),
        ("create-same-key", lambda: create(ledger, out, "someone", "race-same-key")),
    ]
    # Each worker meets the shared commands at a different point of its own work.
    shared = shared[worker % len(shared) :] + shared[: worker % len(shared)]

    for n in range(LIFECYCLES):
        created = record("create", partial(create, ledger, out, actor, f"{actor}-run-{n}"))
        run_id = created["trainRunId"]
        if shared:
            record(*shared.pop(0))
        record("start", partial(ledger.start_run, run_id, actor=actor))
        checkpoint = record(
            "register",
            partial(
                ledger.register_checkpoint,
                run_id,
                family=READER_FAMILY,
                artifact_path=write_artifact(Path(out), f"{actor}-{n}"),
                actor=actor,
            ),
        )
        if shared:
            record(*shared.pop(0))
        record("complete", partial(ledger.complete_run, run_id, actor=actor))
        checkpoint_id = checkpoint["checkpointId"]
        verdict = "fail" if n == 2 else "pass"
        record(
            "eval",
            partial(
                ledger.attach_eval,
                checkpoint_id,
                eval_summary(checkpoint_id, eval_id=f"{actor}-eval-{n}", verdict=verdict),
                mark_deployable=verdict == "pass",
                actor=actor,
                idempotency_key=f"{actor}-eval-{n}",
            ),
        )
        if shared:
            record(*shared.pop(0))
        # A query catches the views up, racing the other workers' catch-ups.
        record("stats", partial(stats, ledger))
        if n == 1:
            record(
                "revoke",
                partial(ledger.revoke_deployability, checkpoint_id, "rotated", actor=actor),
            )
    for op, command in shared:
        record(op, command)
    ledger.close()


if __name__ == "__main__":
    main()
