"""What the ORPO tests need: the extra `trainledger[orpo]`, a tiny model, preference pairs.

Without the extra the tests that need it are skipped with the reason; with
TRAINLEDGER_REQUIRE_ORPO=1 (`.ci/run` sets it) they fail instead. The model is
built here, in code: a Llama-shaped causal LM of a few thousand parameters and
a word-level tokenizer over the words of `PAIRS`, saved with
`save_pretrained`. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from trainledger.adapters.orpo_trainer import missing_packages

REQUIRE_ENV = "TRAINLEDGER_REQUIRE_ORPO"

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
}

PAIRS = [
    {"prompt": "is the cat good", "chosen": " yes the cat is good", "rejected": " no dog bad"},
    {"prompt": "is the dog fast", "chosen": " yes the dog is fast", "rejected": " the mat sat"},
    {"prompt": "is the mat slow", "chosen": " no the mat is good", "rejected": " yes yes yes"},
    {"prompt": "did the cat run", "chosen": " yes the cat ran fast", "rejected": " slow mat"},
]
"""Four preference pairs of words, all in the tokenizer's vocabulary.

TRL's ORPO trainer tokenizes prompt + answer as one string: each answer starts
with a space, so the prompt's last word and the answer's first stay apart.
"""


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the extra is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_orpo() -> None:
    missing = missing_packages()
    if missing:
        unavailable(
            f"the ORPO extra is not installed (missing {', '.join(missing)}): "
            "pip install -e '.[orpo]' after a CPU torch (see README)"
        )


def vocabulary() -> list[str]:
    words = sorted({w for pair in PAIRS for text in pair.values() for w in text.split()})
    return [*SPECIAL_TOKENS.values(), *words]


def build_tiny_model(directory: Path, *, llama: bool = True) -> Path:
    """A tiny causal LM and its word-level tokenizer, saved in `directory`.

    `llama=False` builds a GPT-2-shaped one instead: it has none of the
    projections LoRA is put on.
    """
    os.environ.update(OFFLINE)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    words = vocabulary()
    ids = {word: number for number, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=ids, unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS).save_pretrained(directory)
    special = {
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
    }
    model: Any
    if llama:
        config = LlamaConfig(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **special,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=len(words), n_embd=32, n_layer=1, n_head=2, n_positions=256, **special
        )
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    return directory


def write_pairs(path: Path, pairs: list[dict[str, str]] = PAIRS) -> Path:
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
    return path


def tokens_per_pass(pairs: list[dict[str, str]] = PAIRS) -> int:
    """The tokens of one pass over `pairs`: prompt + answer, with BOS and EOS, both answers."""
    return sum(
        2 * (1 + len(pair["prompt"].split()) + 1)
        + len(pair["chosen"].split())
        + len(pair["rejected"].split())
        for pair in pairs
    )
