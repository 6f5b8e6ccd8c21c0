"""The seed's vocabulary: its files, the import's actor, how seed ids become ledger ids.

Without pydantic (as `domain.vocabulary`), so that `import-seed` of files it
imported before answers without loading the models (`service.seed_import`).
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID, uuid5

from trainledger.domain.errors import ImportRefusedError

TRAINING_REGISTRY = ".state/nocturnal/training-registry.json"
DEPLOYMENT_REGISTRY = ".state/nocturnal/deployment-registry.json"
PROMOTION_REGISTRY = "promotion-registry.json"
SHADOW_REGISTRY = "shadow-registry.json"
SEED_FILES = (TRAINING_REGISTRY, DEPLOYMENT_REGISTRY, PROMOTION_REGISTRY, SHADOW_REGISTRY)
"""The seed's registry files, relative to its workspace (where it wrote them)."""

SEED_ACTOR = "seed-import"
"""The actor of every event recorded from the seed's files."""

SEED_ID_NAMESPACE = UUID("6a1f3e9c-7b2d-4c5a-8e0f-1d9b4a6c2e73")
SEED_IMPORT_NAMESPACE = UUID("0f5b7a8e-2d4c-4b1e-9a6f-3c8d2e1b7f40")


class SeedRefusedError(ImportRefusedError):
    """A seed file cannot be imported (its path and the reason); nothing was written."""

    code = "seed_refused"


def ledger_id(kind: str, seed_id: str) -> UUID:
    """The ledger's id of a seed record: the seed's own UUID, in its canonical spelling.

    An id that is not a UUID (the seed wrote none such, but files are edited)
    is mapped to the same UUID every time: uuid5 of `kind/id` in
    `SEED_ID_NAMESPACE`; the import's report lists each mapping.
    """
    try:
        return UUID(seed_id)
    except ValueError:
        return uuid5(SEED_ID_NAMESPACE, f"{kind}/{seed_id}")


def seed_import_id(digests: Mapping[str, str | None]) -> UUID:
    """The id of the import of exactly these files (relative path → sha256, None if missing)."""
    listing = "\n".join(f"{path} {digest or '-'}" for path, digest in sorted(digests.items()))
    return uuid5(SEED_IMPORT_NAMESPACE, f"seed-import\n{listing}")
