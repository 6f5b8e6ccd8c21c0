"""The canonical form written by orjson: an accelerator of `domain.chain.canonical_json`.

The rule (which document is hashed, `domain.chain.canonical_document`) and
its definition (`canonical_json`: compact JSON, keys of every object sorted,
numbers in their shortest round-trip form) stay the domain's. orjson spells
the same bytes in one call, where the definition sorts every object's keys
in Python first: `verify` spends most of its time on the canonical form, and
this is about five times faster for a stored event (bench/README.md, "verify
(second pass)"). `tests/unit/test_canonical_json.py` holds the two equal on
arbitrary JSON values. Wired by the adapters (`adapters.store.open_ledger`,
`verify`'s worker processes); the ledger's default stays the definition.
"""

from __future__ import annotations

from typing import Any

import orjson

from trainledger.domain.chain import canonical_json

_SORTED = orjson.OPT_SORT_KEYS


def orjson_canonical_json(document: Any) -> bytes:
    """`canonical_json(document)`, written by orjson."""
    try:
        return orjson.dumps(document, option=_SORTED)
    except orjson.JSONEncodeError:
        # What orjson does not write (an integer past 64 bits): the definition does.
        return canonical_json(document)
