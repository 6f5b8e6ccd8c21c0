"""The ids of the aggregates that exist once per checkpoint or per profile (SPEC §9).

Derived (UUID5), so a command finds a checkpoint's promotion or a profile's
deployment slot without an index. A module of its own, free of pydantic:
queries read it (start-up time).
"""

from __future__ import annotations

from uuid import UUID, uuid5

from trainledger.domain.errors import ValidationError
from trainledger.domain.vocabulary import WORKER_PROFILES

PROMOTION_NAMESPACE = UUID("5d0c2f63-4a51-4f0e-9b8e-7f1f3b6c2a10")
SLOT_NAMESPACE = UUID("b7e6d1a4-3c2f-4e8b-a9d5-0f6c1e2b3a47")


def promotion_id(checkpoint_id: UUID) -> UUID:
    """The id of a checkpoint's promotion aggregate."""
    return uuid5(PROMOTION_NAMESPACE, f"promotion/{checkpoint_id}")


def require_profile(profile: object) -> str:
    """The worker profile, refused unless the contract knows it (a profile names a slot)."""
    if not isinstance(profile, str) or profile not in WORKER_PROFILES:
        raise ValidationError(
            f"unknown worker profile {profile!r} (allowed: {', '.join(WORKER_PROFILES)})"
        )
    return profile


def slot_id(profile: str) -> UUID:
    """The id of a profile's deployment slot."""
    return uuid5(SLOT_NAMESPACE, f"deployment-slot/{profile}")
