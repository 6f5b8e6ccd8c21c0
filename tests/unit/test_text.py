"""The text rule (domain/text.py): what it refuses anywhere in a JSON-like value, and where."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from trainledger.adapters.canonical_json import orjson_canonical_json
from trainledger.domain.chain import canonical_json
from trainledger.domain.text import may_hold_refused, text_problem

# Text made mostly of the characters the rule is about, so both answers are common.
TEXT = st.text(alphabet=st.sampled_from(["a", " ", "\t", "\n", "\r", "\x00", "\x1f", "\ud800"]))
VALUES = st.recursive(
    TEXT | st.integers() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def refused_alone(text: str) -> bool:
    """The rule on one string, character by character."""
    for index, character in enumerate(text):
        if character in "\t\n" or " " <= character < "\ud800" or character > "\udfff":
            continue
        if character == "\r" and text[index + 1 : index + 2] == "\n":
            continue
        return True
    return False


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for k, v in value.items() for text in [*strings(k), *strings(v)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


@given(VALUES)
def test_a_value_is_refused_exactly_when_one_of_its_strings_is(value: Any) -> None:
    assert (text_problem(value) is not None) == any(refused_alone(s) for s in strings(value))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": ["ok", "line\r"]}, "a[1] holds a control character (U+000D)"),
        ({"a": {"b\x00": 1}}, "a key of a holds a control character (U+0000)"),
        (["fine\r\n", {"c": "x\ud800"}], "[1].c is not valid Unicode text (a lone surrogate"),
        ({"a": "end\r", "b": "\nstart"}, "a holds a control character (U+000D)"),
    ],
)
def test_the_problem_names_the_first_refused_character_by_its_path(
    value: Any, problem: str
) -> None:
    found = text_problem(value)
    assert found is not None
    assert found.startswith(problem)


def test_text_that_ends_a_line_the_windows_way_is_recorded() -> None:
    assert text_problem({"note": "one\r\ntwo\ttabbed\n", "k": ["\r\n"]}) is None


# Everything a JSON writer escapes or that spells an escape's letters, for the seal's search.
ESCAPY = st.text(
    alphabet=st.sampled_from(
        ["a", "b", "f", "r", "u", "0", "1", "d", "8", "\\", '"', "\t", "\n", "\r", "\x7f"]
        + [chr(c) for c in range(0x20)]
        + ["\ud800", "\udfff", "\u2028", "\U0001f600"]
    )
)
ESCAPY_VALUES = st.recursive(
    ESCAPY | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ESCAPY, inner, max_size=4),
    max_leaves=12,
)


class Stored(BaseModel):
    """Fields typed as a new event's are (a dict's keys go through pydantic's JSON mode)."""

    value: Any
    table: dict[str, Any]


@pytest.mark.parametrize("write", [canonical_json, orjson_canonical_json])
@given(ESCAPY_VALUES, st.dictionaries(ESCAPY, ESCAPY_VALUES, max_size=3))
@example(None, {"lone \ud800 in a key": 1})
def test_json_text_said_to_hold_nothing_refused_holds_nothing_refused(
    write: Any, value: Any, table: dict[str, Any]
) -> None:
    # A new event's seal looks at the values only when its written bytes might hold
    # something refused (domain/aggregate.py), or when they cannot be written.
    given_values = {"value": value, "table": table}
    try:
        written = write(Stored(**given_values).model_dump(mode="json"))
    except (TypeError, ValueError):
        assert text_problem(given_values) is not None  # a lone surrogate, which the rule names
        return
    if not may_hold_refused(written):
        assert text_problem(given_values) is None


def test_json_text_of_plain_printable_text_is_passed_by_the_search_alone() -> None:
    written = canonical_json({"reason": "out of memory: 40 GiB\n\tat step 7", "n": 1e-7})
    assert may_hold_refused(written) is False
    # Look-alikes only send the values to the full rule, which records them.
    for text in ("C:\\build\\fast\\run", "one\r\ntwo", "\\u0000 as typed"):
        assert may_hold_refused(canonical_json(text)) is True
        assert text_problem(text) is None
