"""The read model's answers about promotions, shadow observations and slots (SPEC §9).

A mixin of `ProjectionReadModel`: each answer reads one consistent state of
the views, caught up with the log (`_current`), and makes the same
documents the commands answer with (`domain.views`) from the facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from trainledger.domain.ids import slot_id
from trainledger.domain.shadow_stats import ShadowCounts
from trainledger.domain.views import binding_document, promotion_document, slot_document
from trainledger.domain.vocabulary import WORKER_PROFILES
from trainledger.projections.deployment_facts import PromotionFact, SlotFact
from trainledger.projections.documents import time_text, uuid_text
from trainledger.projections.facts import micros
from trainledger.projections.filters import Document
from trainledger.projections.view import FactReader

BINDING_KINDS = ("bind", "rollback")


def _key(checkpoint_id: str) -> str | None:
    try:
        return UUID(checkpoint_id.strip()).hex
    except (ValueError, AttributeError):
        return None


def _micros(as_of: datetime | None) -> int | None:
    return None if as_of is None else micros(as_of)


def promotion_from_facts(checkpoint_key: str, facts: Sequence[PromotionFact]) -> Document:
    from trainledger.domain.ids import promotion_id

    checkpoint = UUID(hex=checkpoint_key)
    return promotion_document(
        str(checkpoint),
        str(promotion_id(checkpoint)),
        [orjson.loads(fact.decision) for fact in facts],
    )


def _binding(fact: SlotFact) -> Document:
    return binding_document(
        checkpoint_id=uuid_text(fact.checkpoint_id),
        previous_checkpoint_id=None
        if fact.previous_checkpoint_id is None
        else uuid_text(fact.previous_checkpoint_id),
        kind=fact.kind,
        note=fact.note,
        bound_at=time_text(fact.happened_at),
        bound_by=fact.actor,
    )


def slot_from_facts(profile: str, facts: Sequence[SlotFact]) -> Document:
    bindings = [_binding(f) for f in facts if f.kind in BINDING_KINDS]
    routing = bool(facts) and facts[-1].kind == "enable-routing"
    return slot_document(profile, str(slot_id(profile)), bindings, routing)


def checkpoint_bindings(checkpoint_key: str, facts: Sequence[SlotFact]) -> list[Document]:
    """The bindings of a checkpoint to any profile (oldest first), each saying whether it is
    still the profile's active one."""
    by_profile: dict[str, list[SlotFact]] = {}
    for fact in facts:
        by_profile.setdefault(fact.profile, []).append(fact)
    found: list[Document] = []
    for profile, events in sorted(by_profile.items()):
        bound = [f for f in events if f.kind in BINDING_KINDS]
        for fact in bound:
            if fact.checkpoint_id == checkpoint_key:
                active = fact is bound[-1]
                found.append({"profile": profile, **_binding(fact), "active": active})
    found.sort(key=lambda b: (b["boundAt"] or "", b["profile"]))
    return found


class DeploymentReadModel:
    """The SPEC §9 queries of `ProjectionReadModel`."""

    def _current(self) -> AbstractContextManager[FactReader]:
        raise NotImplementedError

    def _checkpoint_exists(self, reader: FactReader, key: str, at: int | None) -> bool:
        return bool(reader.checkpoints(ids=[key], as_of=at))

    def promotion(self, checkpoint_id: str, as_of: datetime | None) -> Document | None:
        """The checkpoint's promotion; None when the checkpoint did not exist (then)."""
        key, at = _key(checkpoint_id), _micros(as_of)
        if key is None:
            return None
        with self._current() as reader:
            if not self._checkpoint_exists(reader, key, at):
                return None
            return promotion_from_facts(key, reader.promotion_decisions([key], at))

    def promotions(self, state: str | None, as_of: datetime | None) -> list[Document]:
        """Every checkpoint's promotion decided on (then), newest decision first."""
        with self._current() as reader:
            facts = reader.promotion_decisions(None, _micros(as_of))
        by_checkpoint: dict[str, list[PromotionFact]] = {}
        for fact in facts:
            by_checkpoint.setdefault(fact.checkpoint_id, []).append(fact)
        latest = sorted(by_checkpoint.items(), key=lambda kv: kv[1][-1].position, reverse=True)
        documents = [promotion_from_facts(key, decided) for key, decided in latest]
        return [d for d in documents if state is None or d["state"] == state]

    def shadow_counts(
        self, checkpoint_id: str, window_start: datetime, window_end: datetime, cutoff: datetime
    ) -> ShadowCounts | None:
        """A checkpoint's observation counts in a window; None for an unknown checkpoint."""
        key = _key(checkpoint_id)
        if key is None:
            return None
        with self._current() as reader:
            if not self._checkpoint_exists(reader, key, None):
                return None
            return reader.shadow_counts(
                key, micros(window_start), micros(window_end), micros(cutoff)
            )

    def slot(self, profile: str, as_of: datetime | None) -> Document:
        with self._current() as reader:
            facts = reader.slot_events(profiles=[profile], as_of=_micros(as_of))
        return slot_from_facts(profile, facts)

    def slots(self, as_of: datetime | None) -> list[Document]:
        with self._current() as reader:
            facts = reader.slot_events(as_of=_micros(as_of))
        return [slot_from_facts(p, [f for f in facts if f.profile == p]) for p in WORKER_PROFILES]

    @staticmethod
    def lineage_parts(reader: FactReader, checkpoint_key: str, at: int | None) -> dict[str, Any]:
        """What `lineage` shows of a checkpoint's promotion and bindings."""
        promotion = promotion_from_facts(
            checkpoint_key, reader.promotion_decisions([checkpoint_key], at)
        )
        touching = {f.profile for f in reader.slot_events(checkpoint_id=checkpoint_key, as_of=at)}
        facts = reader.slot_events(profiles=sorted(touching), as_of=at) if touching else []
        return {"promotion": promotion, "bindings": checkpoint_bindings(checkpoint_key, facts)}
