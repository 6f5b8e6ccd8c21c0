"""Every aggregate and event class of the ledger, by its stored topic.

Importing this module imports every module that declares stored classes, so
`stored_classes` lists them all (the mapper resolves topics from it only).
"""

from __future__ import annotations

from trainledger.domain import access, deployment, model, promotion, seed_import, shadow
from trainledger.domain.aggregate import stored_classes

MODULES = (model, promotion, shadow, deployment, access, seed_import)
"""The modules whose classes are stored (each a `STORED_MODULES` entry)."""

__all__ = ["MODULES", "stored_classes"]
