"""The bundled reference trainer: the trainer protocol, for the dry-run and peft-trl-orpo backends.

    python -m trainledger.adapters.reference_trainer --spec SPEC.json --output-dir DIR

It validates the spec (the contract model, the config fingerprint, and the
dataset fingerprint when the dataset file is named) and probes that the output
directory is writable. A dry-run spec then gets a `dry_run` result. A
`peft-trl-orpo` spec is trained for real (`adapters/orpo_trainer.py`: LoRA
adapters with TRL's ORPO trainer, from the spec's `baseModel`) when the
optional extra `trainledger[orpo]` is installed, and refused clearly
otherwise. `unsloth-orpo` is left to your own trainer (`train --scripts-dir
DIR` or `--trainer PATH`, see `examples/trainer/main.py`). The result goes to
stdout as one JSON document, and to `DIR/result-<experimentId>.json`;
progress goes to stderr.

Exit codes: 0 dry run or training done; 1 the spec, its base model, its
dataset or the output directory is unusable; 3 the backend cannot run here;
4 training failed or ran out of budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where its
# sibling modules would shadow top-level ones: drop it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import hashlib
import importlib.util
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pydantic

from trainledger.domain.contract import (
    ExperimentSpec,
    TrainerResult,
    config_fingerprint,
    dataset_fingerprint,
)

BACKEND_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "peft-trl-orpo": ("torch", "transformers", "peft", "trl", "datasets"),
    "unsloth-orpo": ("torch", "trl", "peft", "unsloth"),
}
TRAINED_HERE = ("peft-trl-orpo",)
"""The backends this trainer trains (when their packages are installed)."""

EXIT_UNUSABLE = 1
EXIT_BACKEND_UNAVAILABLE = 3


class RefusedError(Exception):
    """The run cannot proceed; the message is the result's failureReason."""

    def __init__(self, reason: str, exit_code: int = EXIT_UNUSABLE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


def log(message: str) -> None:
    print(f"[reference-trainer] {message}", file=sys.stderr, flush=True)


def load_spec(path: str) -> tuple[dict[str, Any], ExperimentSpec]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RefusedError(f"cannot read spec {path}: {error}") from None
    if not isinstance(raw, dict):
        raise RefusedError(f"spec {path} is not a JSON object")
    try:
        return raw, ExperimentSpec.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise RefusedError(f"invalid spec: {problems}") from None


def check_fingerprints(spec: ExperimentSpec) -> None:
    """The spec's fingerprints must describe what this trainer would train on."""
    recomputed = config_fingerprint(spec.hyperparameters)
    if recomputed != spec.configFingerprint:
        raise RefusedError(
            f"configFingerprint {spec.configFingerprint} does not match the "
            f"hyperparameters (they give {recomputed})"
        )
    if not spec.datasetExportPath:
        log("no dataset path in the spec; dataset fingerprint taken as given")
        return
    dataset = Path(spec.datasetExportPath)
    try:
        content = dataset.read_bytes()
    except OSError as error:
        raise RefusedError(f"cannot read dataset {dataset}: {error.strerror}") from None
    samples = sum(1 for line in content.splitlines() if line.strip())
    found = dataset_fingerprint(hashlib.sha256(content).hexdigest()[:16], samples)
    if found != spec.datasetFingerprint:
        raise RefusedError(
            f"dataset {dataset} changed since the experiment was created: fingerprint "
            f"{found}, the spec says {spec.datasetFingerprint}"
        )
    log(f"dataset {dataset}: {samples} samples, fingerprint {found} as recorded")


def probe_output_dir(output_dir: Path) -> None:
    probe = output_dir / f".reference-trainer-probe-{os.getpid()}"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        if probe.read_bytes() != b"probe":
            raise RefusedError(f"output directory {output_dir} does not read back what was written")
    except OSError as error:
        raise RefusedError(
            f"output directory {output_dir} is not writable: {error.strerror}"
        ) from None
    finally:
        probe.unlink(missing_ok=True)
    log(f"output directory {output_dir} is writable")


def check_backend(backend: str) -> None:
    required = BACKEND_REQUIREMENTS.get(backend)
    if required is None:
        return
    missing = [name for name in required if importlib.util.find_spec(name) is None]
    if missing:
        install = " (pip install 'trainledger[orpo]')" if backend in TRAINED_HERE else ""
        raise RefusedError(
            f"backend {backend} needs the optional packages {', '.join(required)}; "
            f"missing here: {', '.join(missing)}. Install them{install}, or train with your "
            "own trainer (train --scripts-dir DIR or --trainer PATH)",
            EXIT_BACKEND_UNAVAILABLE,
        )
    if backend not in TRAINED_HERE:
        raise RefusedError(
            f"backend {backend}: the bundled reference trainer trains only "
            f"{', '.join(TRAINED_HERE)} (and dry runs); train with your own trainer "
            "(train --scripts-dir DIR or --trainer PATH)",
            EXIT_BACKEND_UNAVAILABLE,
        )


def result_document(raw: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    return {
        **{name: raw.get(name) for name in TrainerResult.CHECKED_FIELDS},
        "status": status,
        "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **fields,
    }


def report(document: dict[str, Any], output_dir: Path) -> None:
    """Print the result on stdout and, when possible, write the result file."""
    text = json.dumps(document, indent=2)
    experiment_id = document.get("experimentId")
    if isinstance(experiment_id, str) and experiment_id and "/" not in experiment_id:
        try:
            (output_dir / f"result-{experiment_id}.json").write_text(text + "\n", "utf-8")
        except OSError as error:
            log(f"could not write the result file: {error.strerror}")
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--spec", required=True, help="Experiment spec JSON.")
    parser.add_argument("--output-dir", required=True, help="Where results go.")
    args = parser.parse_args(argv)
    started = time.monotonic()  # the wall-clock budget counts from here
    output_dir = Path(args.output_dir)
    raw: dict[str, Any] = {}
    try:
        raw, spec = load_spec(args.spec)
        log(f"experiment {spec.experimentId}: backend {spec.backend}, {spec.hardwareTier}")
        check_backend(spec.backend)
        check_fingerprints(spec)
        probe_output_dir(output_dir)
    except RefusedError as refusal:
        log(f"refused: {refusal.reason}")
        report(result_document(raw, "failed", failureReason=refusal.reason), output_dir)
        return refusal.exit_code
    if spec.backend in TRAINED_HERE:
        return train_orpo(raw, spec, output_dir, started)
    log("dry run done: the spec is valid and the output directory usable")
    report(result_document(raw, "dry_run", finalLoss=None, metrics=None), output_dir)
    return 0


def train_orpo(raw: dict[str, Any], spec: ExperimentSpec, output_dir: Path, started: float) -> int:
    """Train the spec with ORPO (`adapters/orpo_trainer.py`) and report the outcome."""
    from trainledger.adapters.orpo_trainer import TrainingError, train

    try:
        fields = train(spec, output_dir, started=started)
    except TrainingError as failure:
        log(f"failed: {failure.reason}")
        report(result_document(raw, "failed", failureReason=failure.reason), output_dir)
        return failure.exit_code
    report(result_document(raw, "completed", **fields), output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
