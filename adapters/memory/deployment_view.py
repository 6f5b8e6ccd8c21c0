"""The SPEC §9 tables of the in-memory view (part of `adapters.memory.view`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from eventsourcing.persistence import IntegrityError

from trainledger.domain.shadow_stats import ShadowCounts, count_observations
from trainledger.projections.deployment_facts import (
    ObservationRecord,
    PromotionFact,
    SettlementFact,
    SlotFact,
)
from trainledger.projections.facts import FactBatch, ViewDump


def _at(when: int, as_of: int | None) -> bool:
    return as_of is None or when <= as_of


class DeploymentTables:
    """Promotion decisions and slot events by their aggregate's version; observations by id."""

    def __init__(self) -> None:
        self.promotions: dict[str, dict[int, PromotionFact]] = defaultdict(dict)
        self.slot_events: dict[str, dict[int, SlotFact]] = defaultdict(dict)
        self.observations: dict[str, ObservationRecord] = {}

    def refuse_duplicates(self, batch: FactBatch) -> None:
        """As the SQL tables' keys would refuse a page (checked before anything changes)."""
        keyed: list[tuple[str, list[tuple[str, int] | str], set[tuple[str, int] | str]]] = [
            (
                "promotion decision",
                [(p.checkpoint_id, p.promotion_version) for p in batch.promotions],
                {(k, v) for k, versions in self.promotions.items() for v in versions},
            ),
            (
                "slot event",
                [(s.profile, s.slot_version) for s in batch.slot_events],
                {(k, v) for k, versions in self.slot_events.items() for v in versions},
            ),
            (
                "observation",
                [o.observation_id for o in batch.observations],
                set(self.observations),
            ),
        ]
        for kind, keys, existing in keyed:
            if len(set(keys)) != len(keys) or not existing.isdisjoint(keys):
                raise IntegrityError(f"a {kind} of this page is already in the view")

    def apply(self, batch: FactBatch) -> None:
        for decision in batch.promotions:
            self.promotions[decision.checkpoint_id][decision.promotion_version] = decision
        for event in batch.slot_events:
            self.slot_events[event.profile][event.slot_version] = event
        for observation in batch.observations:
            self.observations[observation.observation_id] = observation
        for settlement in batch.settlements:
            self._settle(settlement)

    def _settle(self, settlement: SettlementFact) -> None:
        found = self.observations.get(settlement.observation_id)
        if found is not None and found.settled_at is None:
            self.observations[settlement.observation_id] = found._replace(
                settled_at=settlement.settled_at,
                outcome=settlement.outcome,
                timed_out=settlement.timed_out,
                threw_exception=settlement.threw_exception,
                invalid_output=settlement.invalid_output,
                profile_rejected=settlement.profile_rejected,
                settled_by=settlement.settled_by,
            )

    def dump(self) -> ViewDump:
        return {
            "promotions": sorted(
                d for versions in self.promotions.values() for d in versions.values()
            ),
            "slot_events": sorted(
                e for versions in self.slot_events.values() for e in versions.values()
            ),
            "shadow": sorted(self.observations.values()),
        }


class MemoryDeploymentReads:
    """The reads of promotions, slots and observations; mixed into the memory reader."""

    deployment: DeploymentTables

    def promotion_decisions(
        self, checkpoint_ids: Sequence[str] | None, as_of: int | None
    ) -> list[PromotionFact]:
        promotions = self.deployment.promotions
        keys = sorted(promotions) if checkpoint_ids is None else sorted(set(checkpoint_ids))
        return [
            promotions[key][version]
            for key in keys
            if key in promotions
            for version in sorted(promotions[key])
            if _at(promotions[key][version].decided_at, as_of)
        ]

    def slot_events(
        self,
        *,
        profiles: Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        as_of: int | None = None,
    ) -> list[SlotFact]:
        events = self.deployment.slot_events
        keys = sorted(events) if profiles is None else sorted(set(profiles))
        return [
            event
            for key in keys
            if key in events
            for version in sorted(events[key])
            if _at((event := events[key][version]).happened_at, as_of)
            and (
                checkpoint_id is None
                or checkpoint_id in (event.checkpoint_id, event.previous_checkpoint_id)
            )
        ]

    def shadow_counts(
        self, checkpoint_id: str, window_start: int, window_end: int, cutoff: int
    ) -> ShadowCounts:
        observations = self.deployment.observations.values()
        mine = (o for o in observations if o.checkpoint_id == checkpoint_id)
        return count_observations(mine, window_start, window_end, cutoff)

    def deployment_counts(self, as_of: int | None) -> tuple[int, int]:
        promotable = 0
        for checkpoint_id in self.deployment.promotions:
            decisions = self.promotion_decisions([checkpoint_id], as_of)
            promotable += bool(decisions) and decisions[-1].state == "promotable"
        routed = 0
        for profile in self.deployment.slot_events:
            events = self.slot_events(profiles=[profile], as_of=as_of)
            routed += bool(events) and events[-1].kind == "enable-routing"
        return promotable, routed
