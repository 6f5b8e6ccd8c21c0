"""The accelerated canonical form (`adapters.canonical_json`) is the definition's, byte for byte.

`domain.chain.canonical_json` defines the bytes every chain hash covers;
orjson writes them faster for `verify`. Any JSON value a stored state can
hold must come out the same both ways, and a ledger opened by the adapters
recomputes the same hashes as one built with the domain's default.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trainledger.adapters.canonical_json import orjson_canonical_json
from trainledger.domain.chain import (
    NOT_PAYLOAD,
    AggregateChains,
    ChainBreak,
    canonical_event_bytes,
    canonical_json,
    chain_hash,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too: orjson hands those to the definition
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-7, 0.0003, 1e16, 1e22, 5e-324, -0.0, 0.1, 2.0, 1.7976931348623157e308])
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(value=json_values)
@example(value={"é": "\u2028\x00\x1f\x7f\ufeff😀", "B": [{"z": 1, "a": 2}], "a": {"y": {"b": 1}}})
@example(value={"big": 2**64, "small": -(2**63) - 1, "list": [2**100, {"b": 1, "a": 0.0003}]})
@example(value={"\U0001f600": 1, "\uffff": 2, "Z": 3, "a": 4, "": 5, "é": 6})
def test_orjson_writes_the_definitions_bytes(value: Any) -> None:
    assert orjson_canonical_json(value) == canonical_json(value)


@settings(max_examples=500)
@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_a_stored_state_hashes_the_same_either_way(payload: dict[str, Any]) -> None:
    state = json.loads(
        json.dumps(
            {
                "timestamp": "2026-12-02T02:20:37.123456Z",
                "actor": "alice",
                "idempotencyKey": None,
                "previousHash": "0" * 64,
                "originatorTopic": "trainledger.domain.run:TrainingRun",
                **{k: v for k, v in payload.items() if k not in NOT_PAYLOAD},
            }
        )
    )
    aggregate_id = "8f3efc08-02ab-4218-8488-0268e534126a"
    pure = canonical_event_bytes(aggregate_id, 1, "Registered", state)
    assert (
        canonical_event_bytes(aggregate_id, 1, "Registered", state, orjson_canonical_json) == pure
    )
    # ... so both chains take the same event, and refuse the same tampering.
    state["eventHash"] = chain_hash(aggregate_id, 1, "Registered", state)
    topic = "trainledger.domain.run:TrainingRun.Registered"
    assert AggregateChains(orjson_canonical_json).check(aggregate_id, 1, topic, state) is None
    tampered = {**state, "actor": "mallory"}
    for write in (canonical_json, orjson_canonical_json):
        assert AggregateChains(write).check(aggregate_id, 1, topic, tampered) is ChainBreak.MODIFIED
