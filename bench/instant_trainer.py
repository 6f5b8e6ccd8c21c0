"""A trainer that returns at once: echoes the spec's identity as a `dry_run` result.

    python bench/instant_trainer.py --spec SPEC.json --output-dir DIR

Standard library only, so its own run time is little more than the
interpreter's start-up: `bench` subtracts it from `train` to get the
adapter's overhead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ECHOED = (
    "experimentId",
    "backend",
    "targetWorkerProfile",
    "targetModelFamily",
    "datasetFingerprint",
    "configFingerprint",
    "codeHash",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    print(json.dumps({**{key: spec[key] for key in ECHOED}, "status": "dry_run"}))


if __name__ == "__main__":
    main()
