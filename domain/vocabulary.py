"""The contract's vocabulary: its enumerations and patterns, without its models.

Part of the trainer contract (`domain.contract` builds its pydantic models on
these, and `code_hash` covers both sources); a module of its own so that
queries can check a status or verdict without loading pydantic (start-up time).
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["peft-trl-orpo", "unsloth-orpo", "dry-run"]
HardwareTier = Literal["consumer-gpu", "small-gpu", "cpu-experimental"]
WorkerProfile = Literal["local-reader", "local-editor"]
TrainingMode = Literal["orpo"]
EvalMode = Literal["prompt_assisted", "reduced_prompt"]
Verdict = Literal["pass", "fail", "compare_only"]
ResultStatus = Literal["completed", "failed", "dry_run"]
RunStatus = Literal["pending", "running", "completed", "failed"]
PromotionState = Literal["rejected", "candidate_only", "shadow_ready", "promotable"]

BACKENDS: tuple[str, ...] = get_args(Backend)
HARDWARE_TIERS: tuple[str, ...] = get_args(HardwareTier)
WORKER_PROFILES: tuple[str, ...] = get_args(WorkerProfile)
TRAINING_MODES: tuple[str, ...] = get_args(TrainingMode)
EVAL_MODES: tuple[str, ...] = get_args(EvalMode)
VERDICTS: tuple[str, ...] = get_args(Verdict)
RESULT_STATUSES: tuple[str, ...] = get_args(ResultStatus)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
PROMOTION_STATES: tuple[str, ...] = get_args(PromotionState)

ADAPTER_FORMAT: Literal["peft-adapter"] = "peft-adapter"
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"
