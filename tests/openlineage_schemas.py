"""Validating OpenLineage events by the published JSON schemas, resolved locally.

The schemas are the files in `tests/fixtures/openlineage` (copied from the
OpenLineage repository, see its README), registered under their `$id`s: every
`schemaURL` and `$ref` resolves from them, and one that names anything else
fails, never fetched. Formats are checked too (`date-time`, `uri`, `uuid`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.support import REPO

SCHEMAS = REPO / "tests" / "fixtures" / "openlineage"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
CHECKED_FORMATS = ("date-time", "uri", "uuid")


@functools.cache
def registry() -> Registry[Any]:
    """Every shipped schema under its `$id`; nothing else resolves.

    A `Registry` without a `retrieve` function never fetches: an unknown URI
    raises `referencing.exceptions.NoSuchResource` (a test failure).
    """
    resources = []
    for path in sorted(SCHEMAS.rglob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], DRAFT202012.create_resource(contents)))
    return Registry().with_resources(resources)


def problems(instance: Any, schema_url: str) -> list[str]:
    """What is wrong with `instance` by the schema at `schema_url` (empty: valid)."""
    validator = Draft202012Validator(
        {"$ref": schema_url},
        registry=registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def facets(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every facet of an event: (where, its key, the facet)."""
    holders: list[tuple[str, dict[str, Any] | None]] = [
        ("run", event.get("run", {}).get("facets")),
        ("job", event.get("job", {}).get("facets")),
    ]
    for side, own in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for index, dataset in enumerate(event.get(side, [])):
            holders += [(f"{side}/{index}/{kind}", dataset.get(kind)) for kind in ("facets", own)]
    for where, holder in holders:
        for key, facet in (holder or {}).items():
            yield where, key, facet


def event_problems(event: dict[str, Any]) -> list[str]:
    """What is wrong with a RunEvent by the RunEvent schema and each facet's own schema.

    A facet is checked by the definition its `_schemaURL` names, and its key by
    the facet file's root schema, which names the one key the facet goes under.
    """
    found = [] if event.get("schemaURL") == RUN_EVENT else [f"schemaURL is not {RUN_EVENT}"]
    found += problems(event, RUN_EVENT)
    for where, key, facet in facets(event):
        url = facet.get("_schemaURL")
        if not isinstance(url, str):
            found.append(f"{where}/{key}: no _schemaURL")
            continue
        found += [f"{where}/{key}/{problem}" for problem in problems(facet, url)]
        document = url.partition("#")[0]
        root = registry().contents(document)
        if key not in root.get("properties", {}):
            found.append(f"{where}/{key}: {document} names its facet {list(root['properties'])}")
        found += [f"{where}/{problem}" for problem in problems({key: facet}, document)]
    return found


def assert_valid(event: dict[str, Any]) -> None:
    found = event_problems(event)
    assert found == [], f"invalid OpenLineage event: {found}\n{json.dumps(event, indent=2)}"
