"""Drives full lifecycles against a store until killed; prints each acknowledged command.

Used by the crash tests: `python -m tests.crash_driver URL OUTPUT_DIR SEED`.
A line on stdout means the command returned, i.e. it was acknowledged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support import READER_FAMILY, eval_summary, write_artifact
from trainledger.adapters.store import open_ledger
from trainledger.domain.experiment import ExperimentRequest


def acknowledge(op: str, **ids: str) -> None:
    sys.stdout.write(json.dumps({"op": op, **ids}) + "\n")
    sys.stdout.flush()


def main() -> None:
    url, output_dir, seed = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    ledger = open_ledger(url)
    request = ExperimentRequest(
        profile="local-reader",
        family=READER_FAMILY,
        backend="dry-run",
        benchmark_export_id="bench",
        output_dir=str(output_dir),
    )
    n = 0
    while True:
        n += 1
        created = ledger.create_experiment(
            request, dataset_fingerprint="0123456789abcdef", sample_count=1, actor="crash"
        )
        run_id = created["trainRunId"]
        acknowledge("create", run=run_id)
        ledger.start_run(run_id, actor="crash")
        acknowledge("start", run=run_id)
        checkpoint_id = ledger.register_checkpoint(
            run_id,
            family=READER_FAMILY,
            artifact_path=write_artifact(output_dir, "a"),
            actor="crash",
        )["checkpointId"]
        acknowledge("register", run=run_id, checkpoint=checkpoint_id)
        ledger.complete_run(run_id, actor="crash")
        acknowledge("complete", run=run_id)
        eval_id = f"{seed}-{n}"
        ledger.attach_eval(
            checkpoint_id,
            eval_summary(checkpoint_id, eval_id=eval_id),
            mark_deployable=True,
            actor="crash",
        )
        acknowledge("deploy", checkpoint=checkpoint_id, eval=eval_id)


if __name__ == "__main__":
    main()
