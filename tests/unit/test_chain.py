"""The canonical form of an event is byte for byte what 0.1.0 hashed.

0.1.0 serialised the canonical document with orjson (keys sorted); the
domain now writes it with pydantic's serializer, to import nothing but
pydantic. Every stored hash depends on the two agreeing, on every JSON
value a stored state can hold (the store of 0.1.0 in tests/fixtures checks
the same on real events).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trainledger.domain.chain import NOT_PAYLOAD, canonical_event_bytes

STATE_ENVELOPE = {
    "timestamp": "2026-12-02T02:20:37.123456Z",
    "actor": "alice",
    "idempotencyKey": None,
    "previousHash": "0" * 64,
    "eventHash": "1" * 64,
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=1000)
@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
@example(payload={"timestamp": {"0": None, "": None}})  # a forged envelope value
@example(payload={"learningRate": 1e-7, "big": 1e16, "small": 5e-324, "r": 0.0003, "n": -0.0})
@example(
    payload={
        "é": "\u2028\x00\x1f\x7f\ufeff😀",
        "B": [{"z": 1, "a": 2}],
        "a": {"y": {"b": 1, "a": 0}},
    }
)
def test_the_canonical_form_is_what_0_1_0_hashed(payload: dict[str, Any]) -> None:
    # A state as stored: decoded from the JSON the mapper wrote.
    state = json.loads(orjson.dumps({**STATE_ENVELOPE, **payload}))
    aggregate_id = "8f3efc08-02ab-4218-8488-0268e534126a"
    written = canonical_event_bytes(aggregate_id, 3, "Started", state)
    # The document 0.1.0 hashed (its fields are held by the 0.1.0 store's hashes) ...
    document = orjson.loads(written)
    assert document["payload"] == {k: v for k, v in state.items() if k not in NOT_PAYLOAD}
    assert [document[k] for k in ("aggregateId", "version", "type")] == [aggregate_id, 3, "Started"]
    # ... spelled byte for byte as orjson spelled it, keys sorted.
    assert written == orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
