"""The trainer contract: JS numbers, fingerprints, digests, eval summaries (SPEC §3.1-3.4)."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trainledger.adapters.files import digest_artifact, load_dataset
from trainledger.domain import contract, vocabulary
from trainledger.domain.contract import (
    EvalSummary,
    Hyperparameters,
    code_hash,
    config_fingerprint,
    dataset_fingerprint,
    js_number,
)
from trainledger.domain.errors import DatasetError, ValidationError
from trainledger.domain.experiment import DatasetDigest

SEED_DEFAULT_FINGERPRINT = "dc867911eece7ac3"


def sha16(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


# --- JavaScript number formatting ---------------------------------------------

# Expected texts are what node prints for `JSON.stringify(x)`.
JS_TEXTS: list[tuple[float | int, str]] = [
    (0.0003, "0.0003"),
    (2, "2"),
    (2.0, "2"),
    (32.0, "32"),
    (-0.0, "0"),
    (0.05, "0.05"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (1e-6, "0.000001"),
    (1.234e-6, "0.000001234"),
    (-1.5e-9, "-1.5e-9"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e20, "100000000000000000000"),
    (123e18, "123000000000000000000"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (2_000_000, "2000000"),
    (2**53, "9007199254740992"),
    # JS numbers are doubles: integers beyond 2**53 print as their double does.
    (2**53 + 1, "9007199254740992"),
    (2**60, "1152921504606847000"),
    (10**22, "1e+22"),
]


@pytest.mark.parametrize(("value", "text"), JS_TEXTS)
def test_js_number_prints_what_javascript_prints(value: float | int, text: str) -> None:
    assert js_number(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False, 10**400])
def test_js_number_refuses_what_json_cannot_hold(value: float | int) -> None:
    with pytest.raises(ValueError, match="finite"):
        js_number(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e-6)
@example(9.999999999999999e-7)
@example(1e-7)
@example(1e21)
@example(9.999999999999998e20)
def test_js_number_round_trips_and_uses_exponents_only_outside_js_range(x: float) -> None:
    text = js_number(x)
    assert float(text) == x
    magnitude = abs(x)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        assert "e" not in text
    else:
        assert re.fullmatch(r"-?\d(\.\d+)?e[+-][1-9]\d*", text), text
    assert not text.endswith(".0")
    assert not re.search(r"\.\d*0(e|$)", text), "trailing zeros after the point"


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_js_number_prints_safe_integers_plainly(n: int) -> None:
    assert js_number(n) == str(n)


@given(st.integers(min_value=-(10**300), max_value=10**300))
def test_js_number_treats_integers_as_doubles(n: int) -> None:
    assert js_number(n) == js_number(float(n))


# --- config fingerprint -------------------------------------------------------


def test_default_hyperparameters_give_the_seeds_config_fingerprint() -> None:
    assert config_fingerprint(Hyperparameters()) == SEED_DEFAULT_FINGERPRINT


def test_config_fingerprint_is_sha256_of_sorted_compact_js_json() -> None:
    by_hand = (
        '{"batchSize":2,"gradientAccumulation":8,"learningRate":0.0003,"loraAlpha":32,'
        '"loraDropout":0.05,"loraRank":16,"maxSeqLength":2048,"maxSteps":1000,'
        '"warmupRatio":0.1}'
    )
    assert sha16(by_hand) == SEED_DEFAULT_FINGERPRINT
    tiny_rate = by_hand.replace('"learningRate":0.0003', '"learningRate":1e-7')
    assert config_fingerprint(Hyperparameters(learningRate=1e-7)) == sha16(tiny_rate)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learningRate", 1e-4),
        ("batchSize", 4),
        ("gradientAccumulation", 16),
        ("loraRank", 8),
        ("loraAlpha", 16),
        ("loraDropout", 0.1),
        ("warmupRatio", 0.05),
        ("maxSteps", 500),
        ("maxSeqLength", 4096),
    ],
)
def test_changing_any_hyperparameter_changes_the_config_fingerprint(
    field: str, value: float
) -> None:
    changed = Hyperparameters.model_validate({field: value})
    fingerprint = config_fingerprint(changed)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert fingerprint != SEED_DEFAULT_FINGERPRINT


def test_equal_values_written_differently_give_the_same_fingerprint() -> None:
    same = Hyperparameters.model_validate(
        {"learningRate": 0.0003, "batchSize": 2.0, "loraAlpha": 32, "maxSteps": 1e3}
    )
    assert config_fingerprint(same) == SEED_DEFAULT_FINGERPRINT


# --- dataset fingerprint ------------------------------------------------------


def test_dataset_fingerprint_is_h2_of_content_digest_and_non_blank_lines(tmp_path: Path) -> None:
    content = b'{"prompt": "a"}\n\n   \n{"prompt": "b"}\n\t\n{"prompt": "c"}'
    dataset = tmp_path / "data.jsonl"
    dataset.write_bytes(content)
    h1 = hashlib.sha256(content).hexdigest()[:16]
    h2 = hashlib.sha256(f"{h1}:3".encode()).hexdigest()[:16]

    digest = load_dataset(str(dataset))

    assert digest.fingerprint == h2
    assert digest.sample_count == 3
    assert digest.path == str(dataset.resolve())
    assert dataset_fingerprint(h1, 3) == h2


def test_an_empty_dataset_has_zero_samples(tmp_path: Path) -> None:
    dataset = tmp_path / "empty.jsonl"
    dataset.write_bytes(b"\n\n")
    h1 = sha16(b"\n\n")
    assert load_dataset(str(dataset)) == DatasetDigest(sha16(f"{h1}:0"), 0, str(dataset.resolve()))


def test_a_missing_dataset_is_an_error_not_a_hash_of_its_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetError, match="not a file"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("fingerprint", ["A6468E43D3336456", "a6468e43", "a6468e43d3336456ff", ""])
def test_an_explicit_dataset_fingerprint_must_be_16_lowercase_hex(fingerprint: str) -> None:
    with pytest.raises(ValidationError, match="16 lowercase hex"):
        DatasetDigest.explicit(fingerprint, 10)


def test_an_explicit_dataset_fingerprint_is_taken_as_given() -> None:
    assert DatasetDigest.explicit("a6468e43d3336456", 48) == DatasetDigest(
        "a6468e43d3336456", 48, None
    )
    with pytest.raises(ValidationError, match="sample count"):
        DatasetDigest.explicit("a6468e43d3336456", -1)


def test_code_hash_is_sha256_of_the_contract_sources() -> None:
    sources = [contract.__file__, vocabulary.__file__]
    assert code_hash() == sha16(b"".join(Path(source).read_bytes() for source in sources))


# --- artifact digest ----------------------------------------------------------


def test_a_file_artifact_digest_is_sha256_of_its_bytes(tmp_path: Path) -> None:
    artifact = tmp_path / "adapter.safetensors"
    artifact.write_bytes(b"weights")
    assert digest_artifact(str(artifact)) == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_a_directory_artifact_digest_covers_names_and_bytes_in_sorted_order(
    tmp_path: Path,
) -> None:
    adapter = tmp_path / "adapter"
    (adapter / "sub").mkdir(parents=True)
    (adapter / "b.json").write_bytes(b"{}")
    (adapter / "sub" / "a.bin").write_bytes(b"xyz")
    by_hand = hashlib.sha256(b"b.json\x002\x00{}" + b"sub/a.bin\x003\x00xyz").hexdigest()
    assert digest_artifact(str(adapter)) == f"sha256:{by_hand}"

    (adapter / "sub" / "a.bin").rename(adapter / "sub" / "c.bin")
    assert digest_artifact(str(adapter)) != f"sha256:{by_hand}"


def test_a_missing_artifact_has_no_digest(tmp_path: Path) -> None:
    assert digest_artifact(str(tmp_path / "nowhere")) is None


# --- eval summaries -----------------------------------------------------------


def summary(**overrides: Any) -> dict[str, Any]:
    return {
        "evalId": "eval-1",
        "checkpointId": "5b1f3a2e-0000-4000-8000-000000000000",
        "benchmarkId": "bench-1",
        "targetModelFamily": "qwen2.5-7b-reader",
        "mode": "prompt_assisted",
        "baselineScore": 0.5,
        "candidateScore": 0.75,
        "verdict": "pass",
        **overrides,
    }


@pytest.mark.parametrize("given_delta", [{}, {"delta": None}])
def test_an_omitted_delta_is_computed(given_delta: dict[str, Any]) -> None:
    assert EvalSummary.model_validate(summary(**given_delta)).delta == 0.25


def test_the_published_schema_does_not_require_delta() -> None:
    schema = EvalSummary.model_json_schema()
    assert "delta" in schema["properties"]
    assert set(schema["required"]) == set(summary()) - {"delta"}


def test_a_delta_within_tolerance_is_kept() -> None:
    assert EvalSummary.model_validate(summary(delta=0.25 + 5e-10)).delta == 0.25 + 5e-10
    computed = EvalSummary.model_validate(summary(baselineScore=0.1, candidateScore=0.3))
    assert computed.delta == pytest.approx(0.2)
    assert EvalSummary.model_validate(summary(baselineScore=0.1, candidateScore=0.3, delta=0.2))


@pytest.mark.parametrize("delta", [0.25 + 2e-9, 0.25 - 2e-9, -0.25, 0.0])
def test_a_delta_off_by_more_than_1e_9_is_refused(delta: float) -> None:
    with pytest.raises(pydantic.ValidationError, match="differs from candidateScore"):
        EvalSummary.model_validate(summary(delta=delta))


@pytest.mark.parametrize("field", ["baselineScore", "candidateScore", "delta"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_refused(field: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match="finite"):
        EvalSummary.model_validate(summary(**{field: value}))


def test_scores_whose_difference_overflows_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        EvalSummary.model_validate(summary(baselineScore=-1.7e308, candidateScore=1.7e308))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "zero_shot"),
        ("mode", "PROMPT_ASSISTED"),
        ("verdict", "maybe"),
        ("verdict", "PASS"),
        ("evalId", ""),
        ("benchmarkId", ""),
        ("baselineScore", "high"),
    ],
)
def test_unknown_enum_values_and_empty_ids_are_refused(field: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        EvalSummary.model_validate(summary(**{field: value}))


def test_an_eval_summary_refuses_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError, match="score"):
        EvalSummary.model_validate(summary(score=1))
    valid = EvalSummary.model_validate(summary())
    with pytest.raises(pydantic.ValidationError):
        valid.verdict = "fail"  # type: ignore[misc]
