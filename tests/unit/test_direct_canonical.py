"""The C check's canonical document, written straight from the stored bytes.

`domain._fastcheck.canonical` rearranges the tokens of a stored state into
`domain.chain.canonical_event_bytes` without decoding it, trusting each token
to be what orjson writes for its value. Where it cannot be sure it answers
None (and the check takes the orjson path). Here, states written by orjson,
and the same values written other ways (whitespace, escapes, other spellings
of numbers, keys repeated or reordered), show that whenever it answers, its
bytes are exactly those of the Python function over the decoded state.

The check does not decode a state it can read straight, so it must also
answer None for all that orjson.loads rejects: states with bytes inserted,
replaced or deleted show that whenever it answers, orjson.loads takes them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.chain import canonical_event_bytes
from domain.integrity import NATIVE_CHECK

if NATIVE_CHECK is None:
    if os.environ.get("CI"):
        pytest.fail("the C loop (domain/_fastcheck.c) was not built", pytrace=False)
    pytest.skip(
        "the C loop (domain/_fastcheck.c) was not built: no C compiler or OpenSSL headers",
        allow_module_level=True,
    )

canonical = NATIVE_CHECK.canonical
AGGREGATE_ID = "83d6471a-a23c-45fa-87a5-0612a799d52b"

keys = st.text(max_size=8) | st.sampled_from(["a", "b", "ab", "é", "z", "actor", "payload"])
floats = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
    | st.sampled_from([0.0, -0.0, 0.1, 1e-5, 1.5e-7, 1e16, 12.5, 100.0])
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | floats
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


@st.composite
def states(draw: st.DrawFn) -> dict[str, Any]:
    """A stored event's state: the envelope, and a payload of any JSON values."""
    state: dict[str, Any] = {
        "timestamp": draw(st.just("2026-11-28T11:47:15.353482Z") | st.text(max_size=5)),
        "actor": draw(st.text(max_size=6) | st.none() | st.integers(-(2**63), 2**63 - 1)),
        "previousHash": "0" * 64,
        "eventHash": "a" * 64,
    }
    if draw(st.booleans()):
        state["idempotencyKey"] = draw(st.none() | st.text(max_size=6))
    if draw(st.booleans()):
        state["originatorTopic"] = "domain.model:TrainingRun"
    if draw(st.booleans()):
        state["class_version"] = 2
    for key, value in draw(st.dictionaries(keys, values, max_size=6)).items():
        state.setdefault(key, value)
    order = draw(st.permutations(list(state)))
    return {key: state[key] for key in order}


def other_spelling(value: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> str:
    """JSON text for `value` that orjson would not necessarily write."""
    space = str(draw(st.sampled_from(["", " ", "\n "])))
    if isinstance(value, dict):
        members = [
            f"{json.dumps(k, ensure_ascii=bool(draw(st.booleans())))}{space}:{space}"
            f"{other_spelling(v, draw)}"
            for k, v in value.items()
        ]
        return "{" + space + f",{space}".join(members) + space + "}"
    if isinstance(value, list):
        return "[" + ",".join(other_spelling(v, draw) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(draw(st.sampled_from([str(value), f"{value}.0", f"{value}e0", f"{value}E+0"])))
    if isinstance(value, float):
        spellings = [repr(value), f"{value:.17g}", f"{value:e}", orjson.dumps(value).decode()]
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            spellings.append(f"{int(value)}.00")
        return str(draw(st.sampled_from(spellings)))
    return json.dumps(value, ensure_ascii=bool(draw(st.booleans())))


def python_canonical(raw: bytes, version: int = 3, type_name: str = "Completed") -> bytes:
    return canonical_event_bytes(AGGREGATE_ID, version, type_name, orjson.loads(raw))


@settings(max_examples=500, deadline=None)
@given(state=states(), version=st.integers(1, 10**12))
def test_as_orjson_writes_a_state_the_document_is_exactly_pythons(
    state: dict[str, Any], version: int
) -> None:
    raw = orjson.dumps(state)
    written = canonical(raw, AGGREGATE_ID, version, "Completed")
    if written is not None:
        assert written == python_canonical(raw, version)


@settings(max_examples=300, deadline=None)
@given(state=states())
def test_a_plain_state_is_never_left_to_the_orjson_path(state: dict[str, Any]) -> None:
    """Strings without escapes, small integers and plain floats: the common case."""

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(plain(k) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(map(plain, value))
        if isinstance(value, str):
            return not any(c in value for c in '"\\') and all(ord(c) >= 0x20 for c in value)
        if isinstance(value, float):
            return "e" not in repr(value) and repr(value) != "-0.0"
        if isinstance(value, int) and not isinstance(value, bool):
            return abs(value) < 10**18
        return True

    if plain(state):
        raw = orjson.dumps(state)
        assert canonical(raw, AGGREGATE_ID, 3, "Completed") == python_canonical(raw)


@settings(max_examples=500, deadline=None)
@given(data=st.data(), state=states())
def test_spelled_otherwise_it_is_exactly_pythons_or_none(
    data: st.DataObject, state: dict[str, Any]
) -> None:
    text = other_spelling(state, data.draw)
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return  # not a state the check would get this far with
    raw = text.encode()
    written = canonical(raw, AGGREGATE_ID, 3, "Completed")
    if written is not None:
        assert written == python_canonical(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":1,"x":2}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":"\\u0041"}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":-0}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":1.50}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":1e-05}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h","x":12345678901234567890}',
        b'{"timestamp":"t","actor":"a","previousHash":"p","x":1}',
        b'{"timestamp":"t","previousHash":"p","eventHash":"h"}',
        b"[1,2]",
        b'{"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h"} x',
    ],
)
def test_what_it_cannot_be_sure_of_it_leaves(raw: bytes) -> None:
    assert canonical(raw, AGGREGATE_ID, 3, "Completed") is None


ENVELOPE = b'"timestamp":"t","actor":"a","previousHash":"p","eventHash":"h"'

# What orjson.loads rejects where a value or a key stands.
NOT_JSON_VALUES = [
    *(b"01", b"-01", b"00", b"1-2", b"-", b"--1", b"+1", b".5", b"-.5", b"5.", b"1.e5", b"1e"),
    *(b"1e+", b"1E-", b"0x1", b"1_0", b"Infinity", b"-Infinity", b"NaN", b"inf", b"nan"),
    *(b"tru", b"nul", b"True", b"None", b"'a'", b"", b"1 2", b"[1,]", b"[,1]", b"[1 2]"),
    *(b'{"a":1,}', b'{"a"}', b'{"a":}', b"{1:2}", b'"\x00"', b'"a\x01b"', b'"\x1f"'),
    *(b'"tab\there"', b'"\n"', b'"\r"', b'"abcdefgh\x00"', b'"\xff"', b'"\x80"', b'"\xbf"'),
    *(b'"\xc0\x80"', b'"\xc1\xbf"', b'"\xc3"', b'"\xc3x"', b'"\xe2\x82"', b'"\xe0\x9f\xbf"'),
    *(b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xf0\x8f\xbf\xbf"', b'"\xf4\x90\x80\x80"'),
    *(b'"\xf5\x80\x80\x80"', b'"\xf8\x88\x80\x80\x80"', b'"abcdefg\xff"', b'"a'),
    *(b'"abcdefghijklmno\xe2\x82"', b'"abcdefghijklmnopqrstuvw\x7f\x1f"'),
]
NOT_JSON_KEYS = [b'"\xff"', b'"a\x01"', b'"\xc0\x80"', b'"\xed\xa0\x80"', b"a", b"1", b"'a'"]


@pytest.mark.parametrize("value", NOT_JSON_VALUES)
def test_what_orjson_rejects_as_a_value_it_leaves(value: bytes) -> None:
    for raw in (
        b"{" + ENVELOPE + b',"x":' + value + b"}",
        b'{"x":' + value + b"," + ENVELOPE + b"}",
    ):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        assert canonical(raw, AGGREGATE_ID, 3, "Completed") is None, raw


@pytest.mark.parametrize("key", NOT_JSON_KEYS)
def test_what_orjson_rejects_as_a_key_it_leaves(key: bytes) -> None:
    for raw in (b"{" + ENVELOPE + b"," + key + b":1}", b'{"x":{' + key + b":1}," + ENVELOPE + b"}"):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        assert canonical(raw, AGGREGATE_ID, 3, "Completed") is None, raw


# Bytes at every place in a string: some orjson rejects, some it takes (and some escaped).
STRING_BYTES = [
    *(b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xc3", b"\xff", b"\xc3\xa9", b"\xe2\x82\xac"),
    *(b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf", b"\xf0\x9f\x98\x80", b"\xf4\x8f\xbf\xbf"),
    *(b"\\", b"\\n", b'\\"', b" ", b"~"),
]


@pytest.mark.parametrize("byte", STRING_BYTES)
def test_a_byte_anywhere_in_a_string_is_seen(byte: bytes) -> None:
    """At every place in strings of up to 24 bytes (the scan reads 8 at a time): the
    answer is Python's where orjson takes the state, else None."""
    for size in range(25):
        for at in range(size + 1):
            text = b"abcdefghijklmnopqrstuvwxyz"[:size]
            string = b'"' + text[:at] + byte + text[at:] + b'"'
            for raw in (
                b"{" + ENVELOPE + b',"x":' + string + b"}",
                b"{" + ENVELOPE + b"," + string + b":0}",
            ):
                try:
                    orjson.loads(raw)
                except orjson.JSONDecodeError:
                    assert canonical(raw, AGGREGATE_ID, 3, "Completed") is None, raw
                else:
                    written = canonical(raw, AGGREGATE_ID, 3, "Completed")
                    if b"\\" not in byte:
                        assert written is not None, raw
                    if written is not None:
                        assert written == python_canonical(raw), raw


NUMBER_BITS = [b"-", b"+", b"0", b"00", b".", b"e", b"E", b"e+", b"-0", b"1-", b" ", b"x"]
MUTATIONS = [
    *(b"\x00", b"\x01", b"\t", b"\n", b"\r", b"\x1f", b" ", b"\x7f", b"\x80", b"\xbf", b"\xc0"),
    *(b"\xc2", b"\xc3\xa9", b"\xe0\x80", b"\xe2\x82", b"\xed\xa0\x80", b"\xef\xbf\xbf"),
    *(b"\xf0\x9f\x98\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b'"', b"\\", b"-", b"+"),
    *(b".", b"e", b"E", b"0", b"1", b"9", b"01", b"1-2", b".5", b"5.", b"-0", b"1.e5", b"inf"),
    *(b"nan", b"Infinity", b",", b":", b"{", b"}", b"[", b"]", b"true", b"null", b"a"),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A state as orjson writes it, then bytes inserted, replaced or deleted, most
    often where a number or string starts or ends, or inside one."""
    raw = orjson.dumps(draw(states()))
    for _ in range(draw(st.integers(1, 3))):
        interesting = [i for i, byte in enumerate(raw) if byte in b'0123456789"-.eE:,[]{}']
        numbers = re.finditer(rb"(?<=[:,\[])-?[0-9][0-9.eE+-]*", raw)
        in_numbers = [i for number in numbers for i in range(number.start(), number.end() + 1)]
        at = draw(st.integers(0, len(raw)) | st.sampled_from(interesting or [0]))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "number"]))
        if kind == "number" and in_numbers:  # a number's grammar broken: "1-2", "012", "-"
            at = draw(st.sampled_from(in_numbers))
            raw = raw[:at] + draw(st.sampled_from(NUMBER_BITS)) + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 3)) :]
        elif kind != "number":
            new = draw(st.sampled_from(MUTATIONS) | st.binary(min_size=1, max_size=4))
            raw = raw[:at] + new + raw[at + (len(new) if kind == "replace" else 0) :]
    return raw


@settings(max_examples=600, deadline=None)
@given(raw=mutated())
def test_whenever_it_answers_orjson_takes_the_bytes(raw: bytes) -> None:
    """The check reads such states without decoding them: never where orjson would not."""
    written = canonical(raw, AGGREGATE_ID, 3, "Completed")
    if written is not None:
        state = orjson.loads(raw)  # raises if the state is not JSON
        assert written == canonical_event_bytes(AGGREGATE_ID, 3, "Completed", state)


def test_deep_and_wide_states_are_left_to_orjson() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    wide = {f"k{i}": i for i in range(200)}
    for payload in (deep, wide):
        state = {"timestamp": "t", "actor": "a", "previousHash": "p", "eventHash": "h"}
        raw = orjson.dumps({**state, "x": payload})
        assert canonical(raw, AGGREGATE_ID, 3, "Completed") is None
    shallow = orjson.dumps({**state, "x": {"b": [1, {"d": 2, "c": 3}], "a": None}})
    assert canonical(shallow, AGGREGATE_ID, 3, "Completed") == python_canonical(shallow)
