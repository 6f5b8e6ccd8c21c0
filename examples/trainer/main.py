#!/usr/bin/env python3
"""A small, real, CPU-only trainer speaking trainledger's trainer protocol.

    python3 main.py --spec SPEC.json --output-dir DIR
    trainledger train RUN_ID --scripts-dir examples/trainer

It trains a low-rank ("LoRA-style") preference scorer on the experiment's
JSONL dataset of {prompt, chosen, rejected} pairs. Pure Python, no downloads:

- each response becomes hashed unigram and bigram features (signed hashing
  into BUCKETS buckets, truncated to maxSeqLength tokens);
- its score is scale * B . dropout(A x), with A (loraRank x BUCKETS) random
  and B zero at the start, scale = loraAlpha / loraRank, as in LoRA;
- the loss is the pairwise logistic loss -log sigmoid(score(chosen) -
  score(rejected)), the odds-ratio term of ORPO on a scorer;
- Adam, learningRate with linear warmup (warmupRatio) and linear decay,
  batchSize pairs per micro-batch, gradientAccumulation micro-batches per
  step, for min(maxSteps, EPOCHS epochs) steps, stopping early at the
  budget's maxTrainTokens or wall clock.

It writes the adapter directory `<outputDir>/<checkpointName>/` with
`adapter_config.json` and `adapter_model.safetensors` (the trained A and B),
then the result, seed-style: progress lines on stdout before the final JSON
(also on stderr), and the same JSON in `<outputDir>/result-<experimentId>.json`.
A `dry-run` spec gets a `dry_run` result without training.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import re
import struct
import sys
import time
import zlib
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BUCKETS = 512
EPOCHS = 3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
WEIGHT_INIT = 0.1
TOKEN = re.compile(r"\w+")

ECHOED_FIELDS = (
    "experimentId",
    "backend",
    "targetWorkerProfile",
    "targetModelFamily",
    "datasetFingerprint",
    "configFingerprint",
    "codeHash",
)


class TrainingError(Exception):
    """The run cannot proceed; the message becomes the result's failureReason."""


def log(message: str) -> None:
    line = f"[example-trainer] {message}"
    print(line, flush=True)
    print(line, file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------


def load_pairs(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The dataset's (prompt, chosen, rejected) triples, after checking its fingerprint."""
    path = spec.get("datasetExportPath")
    if not path:
        raise TrainingError("the spec names no dataset file (datasetExportPath)")
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise TrainingError(f"cannot read dataset {path}: {error.strerror}") from None
    lines = [line for line in content.splitlines() if line.strip()]
    content_digest = hashlib.sha256(content).hexdigest()[:16]
    fingerprint = hashlib.sha256(f"{content_digest}:{len(lines)}".encode()).hexdigest()[:16]
    if fingerprint != spec["datasetFingerprint"]:
        raise TrainingError(
            f"dataset {path} has fingerprint {fingerprint}, the spec says "
            f"{spec['datasetFingerprint']}: it changed since the experiment was created"
        )
    pairs = []
    for number, line in enumerate(lines, start=1):
        try:
            sample = json.loads(line)
            pairs.append((str(sample["prompt"]), str(sample["chosen"]), str(sample["rejected"])))
        except (ValueError, KeyError, TypeError) as error:
            raise TrainingError(
                f"dataset {path} sample {number} is not a preference pair: {error}"
            ) from None
    if not pairs:
        raise TrainingError(f"dataset {path} holds no samples")
    return pairs


def features(prompt: str, response: str, max_tokens: int) -> tuple[dict[int, float], int]:
    """Signed hashed unigram and bigram features of a response, L2-normalised; and its tokens."""
    prompt_tokens = TOKEN.findall(prompt.lower())
    tokens = TOKEN.findall(response.lower())[: max(0, max_tokens - len(prompt_tokens))]
    vector: dict[int, float] = {}
    grams = [f"u:{t}" for t in tokens] + [f"b:{a}_{b}" for a, b in itertools.pairwise(tokens)]
    for gram in grams:
        hashed = zlib.crc32(gram.encode())
        bucket, sign = hashed % BUCKETS, 1.0 if hashed & (1 << 31) else -1.0
        vector[bucket] = vector.get(bucket, 0.0) + sign
    norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
    return {k: v / norm for k, v in vector.items() if v}, len(prompt_tokens) + len(tokens)


# --- the model -----------------------------------------------------------------


class LowRankScorer:
    """score(x) = scale * sum_k B[k] * (A[k] . x), with Adam state for A and B."""

    def __init__(self, rank: int, alpha: float, dropout: float, rng: random.Random) -> None:
        self.rank, self.scale, self.dropout = rank, alpha / rank, dropout
        self.a = [[rng.gauss(0.0, WEIGHT_INIT) for _ in range(BUCKETS)] for _ in range(rank)]
        self.b = [0.0] * rank
        self.moments_a = [[(0.0, 0.0)] * BUCKETS for _ in range(rank)]
        self.moments_b = [(0.0, 0.0)] * rank

    def hidden(self, x: dict[int, float]) -> list[float]:
        return [sum(row[j] * v for j, v in x.items()) for row in self.a]

    def score(self, x: dict[int, float], mask: list[float] | None = None) -> float:
        h = self.hidden(x)
        if mask is not None:
            h = [hk * mk for hk, mk in zip(h, mask, strict=True)]
        return self.scale * sum(bk * hk for bk, hk in zip(self.b, h, strict=True))

    def pair_loss(self, chosen: dict[int, float], rejected: dict[int, float]) -> float:
        margin = self.score(chosen) - self.score(rejected)
        return softplus(-margin)

    def accumulate(
        self,
        chosen: dict[int, float],
        rejected: dict[int, float],
        grads_a: dict[tuple[int, int], float],
        grads_b: list[float],
        rng: random.Random,
    ) -> float:
        """Add one pair's gradients (with dropout on the hidden units); return its loss."""
        keep = 1.0 - self.dropout
        mask = [(1.0 / keep if rng.random() < keep else 0.0) for _ in range(self.rank)]
        h_c = [hk * mk for hk, mk in zip(self.hidden(chosen), mask, strict=True)]
        h_r = [hk * mk for hk, mk in zip(self.hidden(rejected), mask, strict=True)]
        margin = self.scale * sum(bk * (c - r) for bk, c, r in zip(self.b, h_c, h_r, strict=True))
        d_margin = -sigmoid(-margin)  # d/d margin of softplus(-margin)
        for k in range(self.rank):
            grads_b[k] += d_margin * self.scale * (h_c[k] - h_r[k])
            coefficient = d_margin * self.scale * self.b[k] * mask[k]
            if coefficient:
                for x, sign in ((chosen, 1.0), (rejected, -1.0)):
                    for j, v in x.items():
                        grads_a[(k, j)] = grads_a.get((k, j), 0.0) + sign * coefficient * v
        return softplus(-margin)

    def adam_step(
        self, grads_a: dict[tuple[int, int], float], grads_b: list[float], lr: float, step: int
    ) -> None:
        """Adam on B, and lazily on the entries of A that received a gradient."""
        beta1, beta2 = ADAM_BETAS
        correction1, correction2 = 1 - beta1**step, 1 - beta2**step

        def update(value: float, grad: float, moments: tuple[float, float]) -> tuple[float, Any]:
            m = beta1 * moments[0] + (1 - beta1) * grad
            v = beta2 * moments[1] + (1 - beta2) * grad * grad
            m_hat, v_hat = m / correction1, v / correction2
            return value - lr * m_hat / (math.sqrt(v_hat) + ADAM_EPSILON), (m, v)

        for k, grad in enumerate(grads_b):
            self.b[k], self.moments_b[k] = update(self.b[k], grad, self.moments_b[k])
        for (k, j), grad in grads_a.items():
            self.a[k][j], self.moments_a[k][j] = update(self.a[k][j], grad, self.moments_a[k][j])


def softplus(z: float) -> float:
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def learning_rate(base: float, step: int, total: int, warmup_ratio: float) -> float:
    warmup = max(1, round(total * warmup_ratio)) if warmup_ratio > 0 else 0
    if step <= warmup:
        return base * step / warmup
    return base * max(0.0, (total - step + 1) / max(1, total - warmup))


# --- training ------------------------------------------------------------------


Example = tuple[dict[int, float], dict[int, float], int]


def evaluate(model: LowRankScorer, examples: list[Example]) -> tuple[float, float]:
    """Mean pair loss and preference accuracy over the whole dataset (no dropout)."""
    losses, correct = 0.0, 0
    for chosen, rejected, _ in examples:
        margin = model.score(chosen) - model.score(rejected)
        losses += softplus(-margin)
        correct += margin > 0
    return losses / len(examples), correct / len(examples)


def train(spec: dict[str, Any], pairs: list[tuple[str, str, str]]) -> tuple[LowRankScorer, dict]:
    hp, budget = spec["hyperparameters"], spec["budget"]
    rng = random.Random(spec["configFingerprint"] + spec["datasetFingerprint"])
    model = LowRankScorer(int(hp["loraRank"]), float(hp["loraAlpha"]), hp["loraDropout"], rng)
    examples: list[Example] = []
    for prompt, chosen, rejected in pairs:
        x_c, tokens_c = features(prompt, chosen, int(hp["maxSeqLength"]))
        x_r, tokens_r = features(prompt, rejected, int(hp["maxSeqLength"]))
        examples.append((x_c, x_r, tokens_c + tokens_r))
    batch, accumulation = int(hp["batchSize"]), int(hp["gradientAccumulation"])
    pairs_per_step = batch * accumulation
    steps = min(int(hp["maxSteps"]), math.ceil(EPOCHS * len(examples) / pairs_per_step))
    initial_loss, initial_accuracy = evaluate(model, examples)
    log(
        f"training {len(examples)} pairs for {steps} steps of {batch}x{accumulation} pairs, "
        f"rank {model.rank}, lr {hp['learningRate']}; initial loss {initial_loss:.4f}"
    )
    started, tokens_seen = time.monotonic(), 0
    stopped_by = "maxSteps" if steps == int(hp["maxSteps"]) else f"{EPOCHS} epochs"
    order: list[int] = []
    step = 0
    for step in range(1, steps + 1):
        grads_a: dict[tuple[int, int], float] = {}
        grads_b = [0.0] * model.rank
        step_loss = 0.0
        for _ in range(pairs_per_step):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            chosen, rejected, tokens = examples[order.pop()]
            step_loss += model.accumulate(chosen, rejected, grads_a, grads_b, rng)
            tokens_seen += tokens
        scale = 1.0 / pairs_per_step
        grads_a = {key: g * scale for key, g in grads_a.items()}
        grads_b = [g * scale for g in grads_b]
        lr = learning_rate(float(hp["learningRate"]), step, steps, float(hp["warmupRatio"]))
        model.adam_step(grads_a, grads_b, lr, step)
        if step == steps or step % max(1, steps // 5) == 0:
            log(f"step {step}/{steps} loss {step_loss * scale:.4f} lr {lr:.3g}")
        if tokens_seen >= int(budget["maxTrainTokens"]):
            stopped_by = "budget.maxTrainTokens"
            break
        if time.monotonic() - started > float(budget["maxWallClockMinutes"]) * 60:
            stopped_by = "budget.maxWallClockMinutes"
            break
    final_loss, accuracy = evaluate(model, examples)
    metrics = {
        "initialLoss": round(initial_loss, 6),
        "finalLoss": round(final_loss, 6),
        "initialPreferenceAccuracy": round(initial_accuracy, 6),
        "preferenceAccuracy": round(accuracy, 6),
        "steps": step,
        "epochs": round(step * pairs_per_step / len(examples), 3),
        "samples": len(examples),
        "tokensSeen": tokens_seen,
        "stoppedBy": stopped_by,
        "trainSeconds": round(time.monotonic() - started, 3),
    }
    log(f"done: loss {initial_loss:.4f} -> {final_loss:.4f}, accuracy {accuracy:.2%}")
    return model, metrics


# --- the adapter ---------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], list[float]]]) -> None:
    """The safetensors format: u64 header size, JSON header, little-endian F32 data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        data = array("f", values)
        if sys.byteorder == "big":
            data.byteswap()
        blob = data.tobytes()
        span = [offset, offset + len(blob)]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": span}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def write_adapter(spec: dict[str, Any], model: LowRankScorer, output_dir: Path) -> Path:
    hp = spec["hyperparameters"]
    adapter = output_dir / spec["expectedArtifact"]["checkpointName"]
    adapter.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "PREFERENCE_SCORING",
        "base_model_name_or_path": spec["targetModelFamily"],
        "r": model.rank,
        "lora_alpha": hp["loraAlpha"],
        "lora_dropout": hp["loraDropout"],
        "target_modules": ["preference_head"],
        "inference_mode": True,
        "feature_hashing": {"buckets": BUCKETS, "grams": ["unigram", "bigram"], "hash": "crc32"},
    }
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    prefix = "base_model.model.preference_head"
    write_safetensors(
        adapter / "adapter_model.safetensors",
        {
            f"{prefix}.lora_A.weight": ([model.rank, BUCKETS], [v for row in model.a for v in row]),
            f"{prefix}.lora_B.weight": ([1, model.rank], list(model.b)),
        },
    )
    return adapter


# --- the protocol ----------------------------------------------------------------


def result_document(spec: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    return {
        **{name: spec.get(name) for name in ECHOED_FIELDS},
        "status": status,
        "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **fields,
    }


def report(document: dict[str, Any], output_dir: Path) -> None:
    text = json.dumps(document, indent=2)
    experiment_id = str(document.get("experimentId") or "unknown")
    try:
        (output_dir / f"result-{experiment_id}.json").write_text(text + "\n")
    except OSError as error:
        print(f"could not write the result file: {error.strerror}", file=sys.stderr)
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A small CPU-only preference trainer.")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    spec: dict[str, Any] = {}
    try:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        output_dir.mkdir(parents=True, exist_ok=True)
        log(f"experiment {spec['experimentId']} ({spec['backend']}, {spec['targetModelFamily']})")
        pairs = load_pairs(spec)
        if spec["backend"] == "dry-run":
            log(f"dry run: {len(pairs)} pairs readable, output directory {output_dir} usable")
            report(result_document(spec, "dry_run"), output_dir)
            return 0
        model, metrics = train(spec, pairs)
        adapter = write_adapter(spec, model, output_dir)
    except (TrainingError, OSError, ValueError, KeyError, TypeError) as error:
        reason = str(error)
        if not isinstance(error, TrainingError):
            reason = f"{type(error).__name__}: {error}"
        log(f"failed: {reason}")
        report(result_document(spec, "failed", failureReason=reason), output_dir)
        return 1
    checkpoint_name = spec["expectedArtifact"]["checkpointName"]
    log(f"adapter written to {adapter}")
    artifact = {
        "artifactPath": str(adapter.absolute()),
        "adapterFormat": "peft-adapter",
        "checkpointName": checkpoint_name,
    }
    report(
        result_document(
            spec,
            "completed",
            checkpointRef=checkpoint_name,
            artifact=artifact,
            metrics=metrics,
            finalLoss=metrics["finalLoss"],
        ),
        output_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
