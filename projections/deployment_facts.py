"""The facts of promotions, shadow observations and deployment slots (SPEC §9).

Like every fact (`projections.facts`) each carries the time of the event that
recorded it and, first, the id of the aggregate whose events made it (what
`verify`'s shares of the views go by), and none is overwritten: a promotion's decisions and a slot's
events are appended; an observation's row is completed once, by its
settlement. So as-of answers read the same tables as current ones.
"""

from __future__ import annotations

from typing import NamedTuple


class PromotionFact(NamedTuple):
    """One decision of a checkpoint's promotion (`Promotion.Evaluated|Advanced|Rejected`)."""

    promotion_id: str
    checkpoint_id: str
    promotion_version: int
    state: str
    decision: str  # JSON, the decision's document (`domain.views.decision_document`)
    decided_at: int
    position: int


class SlotFact(NamedTuple):
    """One event of a deployment slot: a binding (bind, rollback) or a routing change."""

    slot_id: str
    profile: str
    slot_version: int
    kind: str  # bind | rollback | enable-routing | disable-routing
    checkpoint_id: str
    previous_checkpoint_id: str | None
    note: str | None
    reason: str | None
    actor: str
    happened_at: int
    position: int


class ObservationRecord(NamedTuple):
    """A shadow observation's row: `ShadowObservation.Routed`, completed by its settlement."""

    observation_id: str
    checkpoint_id: str
    profile: str
    task_fingerprint: str | None
    routed_at: int
    routed_by: str
    position: int
    settled_at: int | None = None
    outcome: str | None = None
    timed_out: int = 0
    threw_exception: int = 0
    invalid_output: int = 0
    profile_rejected: int = 0
    settled_by: str | None = None


class SettlementFact(NamedTuple):
    """`ShadowObservation.Settled`: the columns it sets on the row, then the row's id."""

    settled_at: int
    outcome: str
    timed_out: int
    threw_exception: int
    invalid_output: int
    profile_rejected: int
    settled_by: str
    observation_id: str
