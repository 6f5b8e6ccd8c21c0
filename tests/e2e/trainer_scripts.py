"""Trainer scripts the trainer-adapter tests write into temporary directories.

Every script starts with `PRELUDE`: it parses `--spec`/`--output-dir` like a
real trainer and offers helpers to build a result that echoes the spec, to
write an adapter directory and the result file. The test adds the body that
makes it well-behaved, lying, chatty, crashing or hanging.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from tests.support import READER_FAMILY, SAMPLE_DATASET
from trainledger.domain.experiment import ExperimentRequest
from trainledger.service.ledger import TrainingLedger

PRELUDE = """\
import argparse, json, os, signal, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--spec", required=True)
parser.add_argument("--output-dir", required=True)
args = parser.parse_args()
with open(args.spec) as handle:
    spec = json.load(handle)
out = args.output_dir
ECHOED = ("experimentId", "backend", "targetWorkerProfile", "targetModelFamily",
          "datasetFingerprint", "configFingerprint", "codeHash")

def result(status="completed", **fields):
    document = {name: spec[name] for name in ECHOED}
    document["status"] = status
    document.update(fields)
    return document

def adapter(name="adapter"):
    path = os.path.join(out, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as handle:
        handle.write('{"peft_type": "LORA", "r": 4}')
    with open(os.path.join(path, "adapter_model.bin"), "wb") as handle:
        handle.write(bytes(range(256)))
    return {"artifactPath": path, "adapterFormat": "peft-adapter"}

def completed(**fields):
    return result("completed", artifact=adapter(), metrics={"trainLoss": 0.5}, finalLoss=0.25,
                  **fields)

def write_result_file(document):
    name = os.path.join(out, "result-" + spec["experimentId"] + ".json")
    with open(name, "w") as handle:
        json.dump(document, handle)

def note(name, value):
    # Atomically: a test may read the note the moment it appears.
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as handle:
        handle.write(str(value))
    os.replace(path + ".tmp", path)

"""


def write_trainer(directory: Path, body: str, name: str = "main.py") -> Path:
    """A trainer script: the prelude plus `body` (dedented)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text(PRELUDE + textwrap.dedent(body))
    return script


def create_run(
    ledger: TrainingLedger,
    output_dir: Path,
    *,
    backend: str = "peft-trl-orpo",
    tier: str | None = None,
    budget_minutes: float | None = None,
) -> str:
    """A pending run on the bundled sample dataset; its trainRunId."""
    created = ledger.create_experiment(
        ExperimentRequest(
            profile="local-reader",
            family=READER_FAMILY,
            backend=backend,
            benchmark_export_id="bench-1",
            output_dir=str(output_dir),
            tier=tier or ("cpu-experimental" if backend == "dry-run" else "small-gpu"),
            budget={} if budget_minutes is None else {"maxWallClockMinutes": budget_minutes},
        ),
        dataset_path=str(SAMPLE_DATASET),
        actor="tester",
    )
    run_id: str = created["trainRunId"]
    return run_id


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            stat = ""
        if stat and stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


SEED_STYLE_TRAINER = """\
# Written the way the seed's trainers are: the spec's datasetExportPath is
# taken as a string (the seed's contract types it `string`) and checked.
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--spec", required=True)
parser.add_argument("--output-dir", required=True)
args = parser.parse_args()
spec = json.load(open(args.spec))
dataset_path = spec["datasetExportPath"]
echoed = {name: spec[name] for name in ("experimentId", "backend", "targetWorkerProfile",
          "targetModelFamily", "datasetFingerprint", "configFingerprint", "codeHash")}
if not os.path.isfile(dataset_path):
    print(json.dumps({**echoed, "status": "failed",
                      "failureReason": f"dataset export not found: {dataset_path!r}"}))
    sys.exit(1)
print(json.dumps({**echoed, "status": "dry_run"}))
"""
