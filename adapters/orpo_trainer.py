"""The bundled trainer's `peft-trl-orpo` backend (SPEC §12): LoRA adapters trained with TRL's ORPO.

The reference trainer (`adapters/reference_trainer.py`) calls `train` once the
spec, its fingerprints and the output directory are checked, when the
optional extra `trainledger[orpo]` (torch, transformers, peft, trl, datasets)
is installed. It

- loads the base model and its tokenizer from the spec's `baseModel`, a local
  directory (nothing is downloaded: the Hugging Face libraries run offline);
- reads the preference pairs (`prompt`, `chosen`, `rejected`) of the spec's
  dataset file (`datasetExportPath`);
- puts LoRA adapters on the attention and MLP projections of a Llama/Qwen-shaped
  model (`LORA_TARGETS`, those the model has) with the spec's rank, alpha and
  dropout, and trains them with TRL's ORPO trainer: learningRate, batchSize,
  gradientAccumulation, warmupRatio, maxSteps and maxSeqLength as given, on
  the GPU when there is one, else on the CPU;
- stops at the budget: the wall clock (`maxWallClockMinutes`, counted from the
  trainer's start, checked after every micro-batch) and the tokens
  (`maxTrainTokens`, checked after every step). A budget exhausted before
  maxSteps steps fails the run; the adapter trained so far is kept beside the
  output, not registered;
- writes the PEFT adapter directory `<outputDir>/<checkpointName>/` and returns
  the fields of a `completed` result, with measured metrics: finalLoss (the
  last step's loss), tokensSeen (the non-padding tokens of every chosen and
  rejected sequence trained on), wallClockMinutes (since the trainer started).

Anything that stops it is a `TrainingError`, whose reason the result carries.
Progress goes to stderr; so does whatever the libraries print, as stdout is
kept for the result.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainledger.domain.experiment import PREFERENCE_FIELDS, sample_problem

if TYPE_CHECKING:
    from trainledger.domain.contract import ExperimentSpec

REQUIRED_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets")
"""What the extra `trainledger[orpo]` installs; the backend runs only with all of them."""

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The projections of a Llama/Qwen-shaped model that get LoRA adapters (the seed's list)."""

OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Set before the libraries load: a base model is a local directory, nothing is fetched."""

EXIT_UNUSABLE = 1
EXIT_TRAINING_FAILED = 4


class TrainingError(Exception):
    """ORPO training cannot go on; the reason becomes the result's failureReason."""

    def __init__(self, reason: str, exit_code: int = EXIT_TRAINING_FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


def missing_packages() -> list[str]:
    """The packages of the extra that are not installed here."""
    return [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]


def log(message: str) -> None:
    print(f"[reference-trainer] {message}", file=sys.stderr, flush=True)


# --- inputs ------------------------------------------------------------------


def base_model_directory(spec: ExperimentSpec) -> Path:
    """The spec's base model, which must be a directory here."""
    if spec.baseModel is None:
        raise TrainingError(
            "backend peft-trl-orpo needs a base model: the spec names none (create the "
            "experiment with --base-model DIR, a local model directory)",
            EXIT_UNUSABLE,
        )
    directory = Path(spec.baseModel)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise TrainingError(f"base model {directory} {what}", EXIT_UNUSABLE)
    return directory


def read_samples(spec: ExperimentSpec) -> list[dict[str, str]]:
    """The preference pairs of the spec's dataset file; at least one."""
    if not spec.datasetExportPath:
        raise TrainingError(
            "the spec names no dataset file (datasetExportPath): ORPO trains on one",
            EXIT_UNUSABLE,
        )
    path = Path(spec.datasetExportPath)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise TrainingError(
            f"cannot read dataset {path}: {error.strerror}", EXIT_UNUSABLE
        ) from None
    samples: list[dict[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem = sample_problem(line)
        if problem is not None:
            raise TrainingError(f"dataset {path} line {number} {problem}", EXIT_UNUSABLE)
        row = json.loads(line)
        samples.append({name: row[name] for name in PREFERENCE_FIELDS})
    if not samples:
        raise TrainingError(
            f"dataset {path} holds no samples: ORPO needs preference pairs "
            f"({', '.join(PREFERENCE_FIELDS)})",
            EXIT_UNUSABLE,
        )
    return samples


# --- the budget ----------------------------------------------------------------


@dataclass
class BudgetWatch:
    """The spec's budget as training goes; `exhausted` names the limit reached, if any."""

    deadline: float
    """`time.monotonic()` at which the wall-clock budget runs out."""
    max_tokens: int
    minutes: float
    tokens_seen: int = 0
    exhausted: str | None = None

    def wall_clock_left(self) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.exhausted = f"the wall-clock budget of {self.minutes:g} min (maxWallClockMinutes)"
        return False

    def tokens_left(self) -> bool:
        if self.tokens_seen < self.max_tokens:
            return True
        self.exhausted = f"the token budget of {self.max_tokens} tokens (maxTrainTokens)"
        return False


def _budget_callback(callback_class: Any, watch: BudgetWatch) -> Any:
    """A `TrainerCallback` that stops training when the budget is spent."""

    def on_substep_end(self: Any, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if not watch.wall_clock_left():
            control.should_training_stop = True
        return control

    def on_step_end(self: Any, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if state.global_step < state.max_steps and not (
            watch.wall_clock_left() and watch.tokens_left()
        ):
            control.should_training_stop = True
        return control

    methods = {"on_substep_end": on_substep_end, "on_step_end": on_step_end}
    return type("BudgetCallback", (callback_class,), methods)()


def _token_counting(trainer_class: Any, watch: BudgetWatch) -> Any:
    """The ORPO trainer, counting the tokens of every chosen and rejected sequence it trains on."""

    def compute_loss(self: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if model.training:
            for side in ("chosen", "rejected"):
                watch.tokens_seen += int(inputs[f"{side}_attention_mask"].sum().item())
        return trainer_class.compute_loss(self, model, inputs, *args, **kwargs)

    return type("TokenCountingORPOTrainer", (trainer_class,), {"compute_loss": compute_loss})


# --- training --------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Whatever is printed meanwhile (the libraries' progress) goes to the log, not stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _orpo_classes() -> tuple[Any, Any]:
    """TRL's ORPOConfig and ORPOTrainer: `trl.experimental.orpo` now, `trl` before."""
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        from trl import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


def _load(directory: Path) -> tuple[Any, Any]:
    """The tokenizer and causal LM saved in `directory`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    except Exception as error:  # the libraries raise many kinds; the reason names it
        raise TrainingError(
            f"base model {directory} could not be loaded as a causal language model with its "
            f"tokenizer: {_first_line(error)}",
            EXIT_UNUSABLE,
        ) from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise TrainingError(
                f"the tokenizer of base model {directory} has neither a padding nor an "
                "end-of-sequence token",
                EXIT_UNUSABLE,
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _lora_targets(model: Any, directory: Path) -> list[str]:
    import torch

    found = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name.rsplit(".", 1)[-1] in LORA_TARGETS and isinstance(module, torch.nn.Linear)
        },
        key=LORA_TARGETS.index,
    )
    if not found:
        raise TrainingError(
            f"base model {directory} has none of the LoRA target modules "
            f"{', '.join(LORA_TARGETS)}: peft-trl-orpo needs a Llama- or Qwen-shaped "
            "causal language model",
            EXIT_UNUSABLE,
        )
    return found


def _warmup(config_class: Any, ratio: float, max_steps: int) -> dict[str, Any]:
    """The warm-up as this transformers takes it: `warmup_ratio`, or a float `warmup_steps`."""
    import dataclasses

    if "warmup_ratio" in {f.name for f in dataclasses.fields(config_class)}:
        return {"warmup_ratio": ratio}
    # A float below 1 is a ratio of the steps; 1.0 would be read as one step.
    return {"warmup_steps": max_steps if ratio >= 1 else ratio}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip().removesuffix(":")


def train(spec: ExperimentSpec, output_dir: Path, *, started: float) -> dict[str, Any]:
    """Train the spec's LoRA adapter with ORPO; the fields of its `completed` result.

    `started` is the trainer's start (`time.monotonic()`), from which the
    wall-clock budget counts.
    """
    directory = base_model_directory(spec)
    samples = read_samples(spec)
    adapter = output_dir / spec.expectedArtifact.checkpointName
    if adapter.exists():
        raise TrainingError(f"the adapter directory {adapter} exists already", EXIT_UNUSABLE)
    hp, budget = spec.hyperparameters, spec.budget
    watch = BudgetWatch(
        deadline=started + budget.maxWallClockMinutes * 60,
        max_tokens=budget.maxTrainTokens,
        minutes=budget.maxWallClockMinutes,
    )
    os.environ.update(OFFLINE_ENVIRONMENT)
    with _stdout_to_stderr():
        import datasets
        import peft
        import torch
        import transformers
        import trl

        tokenizer, model = _load(directory)
        targets = _lora_targets(model, directory)
        on_gpu = bool(torch.cuda.is_available())
        device = "cuda" if on_gpu else "cpu"
        log(
            f"base model {directory}: {type(model).__name__}, LoRA on {', '.join(targets)}; "
            f"{len(samples)} pairs, {hp.maxSteps} steps of {hp.batchSize}x"
            f"{hp.gradientAccumulation} on {device}"
            + ("" if on_gpu else f" (no GPU here; tier {spec.hardwareTier} runs on the CPU)")
        )
        if not watch.wall_clock_left():
            raise TrainingError(
                f"budget exhausted before training started: {watch.exhausted} ran out while "
                "the base model loaded"
            )
        config_class, trainer_class = _orpo_classes()
        with tempfile.TemporaryDirectory(prefix=".orpo-work-", dir=output_dir) as work:
            arguments = config_class(
                output_dir=work,
                max_steps=hp.maxSteps,
                per_device_train_batch_size=hp.batchSize,
                gradient_accumulation_steps=hp.gradientAccumulation,
                learning_rate=hp.learningRate,
                max_length=hp.maxSeqLength,
                **_warmup(config_class, hp.warmupRatio, hp.maxSteps),
                logging_strategy="steps",
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                use_cpu=not on_gpu,
                bf16=on_gpu and bool(torch.cuda.is_bf16_supported()),
                fp16=False,
                gradient_checkpointing=on_gpu,
                dataloader_pin_memory=on_gpu,
                remove_unused_columns=False,
            )
            lora = peft.LoraConfig(
                r=hp.loraRank,
                lora_alpha=hp.loraAlpha,
                lora_dropout=hp.loraDropout,
                target_modules=targets,
                task_type="CAUSAL_LM",
            )
            trainer_started = time.monotonic()
            try:
                trainer = _token_counting(trainer_class, watch)(
                    model=model,
                    args=arguments,
                    train_dataset=datasets.Dataset.from_list(samples),
                    processing_class=tokenizer,
                    peft_config=lora,
                    callbacks=[_budget_callback(transformers.TrainerCallback, watch)],
                )
                trainer.train()
            except TrainingError:
                raise
            except Exception as error:  # the libraries raise many kinds; the reason names it
                raise TrainingError(f"ORPO training failed: {_first_line(error)}") from None
        steps = int(trainer.state.global_step)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        if watch.exhausted is not None and steps < hp.maxSteps:
            kept = _keep_partial(trainer, adapter, steps)
            raise TrainingError(
                f"budget exhausted: {watch.exhausted} ran out after {steps} of {hp.maxSteps} "
                f"steps ({watch.tokens_seen} tokens seen){kept}"
            )
        if not losses or not all(math.isfinite(loss) for loss in losses):
            raise TrainingError(f"ORPO training diverged: the losses were {losses[-5:]}")
        trainable, total = (int(n) for n in trainer.model.get_nb_trainable_parameters())
        _save_adapter(trainer, adapter)
    train_seconds = time.monotonic() - trainer_started
    metrics = {
        "finalLoss": round(float(losses[-1]), 6),
        "initialLoss": round(float(losses[0]), 6),
        "steps": steps,
        "maxSteps": hp.maxSteps,
        "stoppedBy": "maxSteps",
        "epochs": round(float(trainer.state.epoch or 0), 4),
        "samples": len(samples),
        "tokensSeen": watch.tokens_seen,
        "wallClockMinutes": round((time.monotonic() - started) / 60, 4),
        "trainSeconds": round(train_seconds, 3),
        "device": device,
        "baseModel": str(directory),
        "loraTargetModules": targets,
        "trainableParameters": trainable,
        "totalParameters": total,
        "libraries": {
            module.__name__: str(module.__version__)
            for module in (torch, transformers, peft, trl, datasets)
        },
    }
    log(
        f"trained {steps} steps in {train_seconds:.1f} s: loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}, {watch.tokens_seen} tokens; adapter {adapter}"
    )
    return {
        "checkpointRef": spec.expectedArtifact.checkpointName,
        "artifact": {
            "artifactPath": str(adapter.absolute()),
            "adapterFormat": "peft-adapter",
            "checkpointName": spec.expectedArtifact.checkpointName,
        },
        "metrics": metrics,
        "finalLoss": metrics["finalLoss"],
    }


def _save_adapter(trainer: Any, adapter: Path) -> None:
    """The PEFT adapter, written aside and moved into place whole."""
    staging = Path(tempfile.mkdtemp(prefix=f".{adapter.name}-", dir=adapter.parent))
    try:
        trainer.model.save_pretrained(staging)
        os.replace(staging, adapter)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise TrainingError(
            f"cannot write the adapter {adapter}: {_first_line(error)}", EXIT_UNUSABLE
        ) from None


def _keep_partial(trainer: Any, adapter: Path, steps: int) -> str:
    """Keep what a stopped run trained, beside the output (never registered); a note."""
    if steps == 0:
        return ""
    partial = adapter.with_name(f"{adapter.name}-partial")
    if partial.exists():
        return ""
    try:
        _save_adapter(trainer, partial)
    except TrainingError as failure:
        log(failure.reason)
        return ""
    return f"; the adapter of those steps is kept in {partial}, not registered"
