"""Deployment slots (SPEC §9.3): what serves each worker profile, as events.

One `DeploymentSlot` per profile (its id is derived from the profile's name,
`slot_id`). A bind records the checkpoint and the one it replaced; routing is
off after every bind and rollback. The slot keeps its bindings as a stack:
a bind pushes, a rollback pops back to the binding before (or to a named
earlier one), so repeated rollbacks walk back through history and never
ping-pong between two checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from trainledger.domain.aggregate import LedgerAggregate
from trainledger.domain.errors import DeploymentRefusedError, ValidationError
from trainledger.domain.experiment import family_suits_profile
from trainledger.domain.ids import require_profile, slot_id
from trainledger.domain.model import Checkpoint
from trainledger.domain.promotion import BINDABLE_STATES, Promotion
from trainledger.domain.vocabulary import WorkerProfile

BindingKind = Literal["bind", "rollback"]


@dataclass(frozen=True)
class Binding:
    """One binding of a slot (oldest first in `DeploymentSlot.bindings`)."""

    checkpoint_id: UUID
    previous_checkpoint_id: UUID | None
    kind: BindingKind
    note: str | None
    actor: str
    timestamp: datetime


class DeploymentSlot(LedgerAggregate):
    """The slot of one worker profile: its bindings and its routing."""

    profile: WorkerProfile
    bindings: list[Binding]
    stack: list[UUID]
    """The bindings a rollback walks back through, the active one last."""
    routing_enabled: bool

    def __init__(self) -> None:
        """State is set by `Opened.apply`."""

    class Opened(LedgerAggregate.Created):
        profile: WorkerProfile

        def apply(self, slot: DeploymentSlot) -> None:
            slot.profile = self.profile
            slot.bindings = []
            slot.stack = []
            slot.routing_enabled = False

    class Bound(LedgerAggregate.Event):
        profile: WorkerProfile
        checkpoint_id: UUID
        previous_checkpoint_id: UUID | None = None
        kind: BindingKind = "bind"
        note: str | None = None

        def apply(self, slot: DeploymentSlot) -> None:
            if self.kind == "bind":
                slot.stack = [*slot.stack, self.checkpoint_id]
            else:  # back to the latest earlier binding of that checkpoint
                earlier = slot.stack[:-1]
                cut = len(earlier) - 1 - earlier[::-1].index(self.checkpoint_id)
                slot.stack = earlier[: cut + 1]
            slot.routing_enabled = False
            slot.bindings = [
                *slot.bindings,
                Binding(
                    self.checkpoint_id,
                    self.previous_checkpoint_id,
                    self.kind,
                    self.note,
                    self.actor,
                    self.timestamp,
                ),
            ]

    class RoutingEnabled(LedgerAggregate.Event):
        profile: WorkerProfile
        checkpoint_id: UUID

        def apply(self, slot: DeploymentSlot) -> None:
            slot.routing_enabled = True

    class RoutingDisabled(LedgerAggregate.Event):
        profile: WorkerProfile
        checkpoint_id: UUID
        reason: str

        def apply(self, slot: DeploymentSlot) -> None:
            slot.routing_enabled = False

    @classmethod
    def for_profile(cls, profile: str) -> DeploymentSlot:
        """The slot of a profile never bound (saved with its first binding)."""
        require_profile(profile)
        slot: DeploymentSlot = cls._open(cls.Opened, slot_id(profile), profile=profile)
        return slot

    @property
    def active_checkpoint_id(self) -> UUID | None:
        return self.stack[-1] if self.stack else None

    @property
    def current_binding(self) -> Binding | None:
        return self.bindings[-1] if self.bindings else None

    def require_bindable(
        self, checkpoint: Checkpoint, promotion: Promotion | None, *, what: str = "bind"
    ) -> None:
        """Refuse a checkpoint that is not deployable, not promoted far enough, or of a
        family that does not suit the profile (SPEC §3.1 rule 3)."""
        if not checkpoint.deployable:
            raise DeploymentRefusedError(
                f"cannot {what} checkpoint {checkpoint.id} to {self.profile}: it is not deployable"
            )
        state = None if promotion is None else promotion.state
        if state not in BINDABLE_STATES:
            raise DeploymentRefusedError(
                f"cannot {what} checkpoint {checkpoint.id} to {self.profile}: its promotion "
                f"state is {state or 'none (never evaluated)'}, needs "
                f"{' or '.join(BINDABLE_STATES)}"
            )
        if not family_suits_profile(checkpoint.family, self.profile):
            raise DeploymentRefusedError(
                f"cannot {what} checkpoint {checkpoint.id} to {self.profile}: family "
                f"{checkpoint.family!r} does not suit the profile"
            )

    def bind(self, checkpoint: Checkpoint, promotion: Promotion | None, note: str | None) -> None:
        """Make `checkpoint` the active one; routing is off until enabled."""
        self.require_bindable(checkpoint, promotion)
        if checkpoint.id == self.active_checkpoint_id:
            raise DeploymentRefusedError(
                f"checkpoint {checkpoint.id} is already bound to {self.profile}"
            )
        if note is not None and not note.strip():
            raise ValidationError("a note must not be empty")
        self._trigger(
            self.Bound,
            profile=self.profile,
            checkpoint_id=checkpoint.id,
            previous_checkpoint_id=self.active_checkpoint_id,
            kind="bind",
            note=note,
        )

    def rollback_target(self, to: UUID | None) -> UUID:
        """The checkpoint a rollback (to `to`, or to the binding before) would bind."""
        earlier = self.stack[:-1]
        if not earlier:
            raise DeploymentRefusedError(
                f"nothing to roll back to: {self.profile} has no binding before "
                + (f"{self.active_checkpoint_id}" if self.stack else "(never bound)")
            )
        if to is None:
            return earlier[-1]
        if to == self.active_checkpoint_id:
            raise DeploymentRefusedError(f"checkpoint {to} is the active binding of {self.profile}")
        if to not in earlier:
            raise DeploymentRefusedError(
                f"checkpoint {to} was never bound to {self.profile} before the active one"
                + (" (it was bound once, and rolled back from)" if self._ever_bound(to) else "")
            )
        return to

    def _ever_bound(self, checkpoint_id: UUID) -> bool:
        return any(binding.checkpoint_id == checkpoint_id for binding in self.bindings)

    def rollback(self, target: Checkpoint) -> None:
        """Bind `target` again (see `rollback_target`); it must still be deployable."""
        if target.id != self.rollback_target(target.id):
            raise ValueError("roll back to the checkpoint `rollback_target` named")
        if not target.deployable:
            raise DeploymentRefusedError(
                f"cannot roll {self.profile} back to checkpoint {target.id}: it is no longer "
                "deployable (roll back --to an older binding)"
            )
        self._trigger(
            self.Bound,
            profile=self.profile,
            checkpoint_id=target.id,
            previous_checkpoint_id=self.active_checkpoint_id,
            kind="rollback",
        )

    def require_routable(self, checkpoint: Checkpoint, promotion: Promotion | None) -> UUID:
        """Refuse to route unless the active checkpoint is still deployable and not rejected."""
        active = self.require_active()
        if checkpoint.id != active:
            raise ValueError("routing needs the slot's active checkpoint")
        if self.routing_enabled:
            raise DeploymentRefusedError(f"routing of {self.profile} is already enabled")
        if not checkpoint.deployable:
            raise DeploymentRefusedError(
                f"cannot enable routing of {self.profile}: its checkpoint {active} is no longer "
                "deployable"
            )
        if promotion is not None and promotion.state == "rejected":
            raise DeploymentRefusedError(
                f"cannot enable routing of {self.profile}: the promotion of its checkpoint "
                f"{active} is rejected"
            )
        return active

    def enable_routing(self, checkpoint: Checkpoint, promotion: Promotion | None) -> None:
        """Route work to the active checkpoint, if it is still deployable and not rejected."""
        active = self.require_routable(checkpoint, promotion)
        self._trigger(self.RoutingEnabled, profile=self.profile, checkpoint_id=active)

    def disable_routing(self, reason: str) -> None:
        """Stop routing work to the active checkpoint, with a reason."""
        if not reason.strip():
            raise ValidationError("a reason is required to disable routing")
        if not self.routing_enabled:
            raise DeploymentRefusedError(f"routing of {self.profile} is not enabled")
        active = self.active_checkpoint_id
        assert active is not None
        self._trigger(
            self.RoutingDisabled, profile=self.profile, checkpoint_id=active, reason=reason
        )

    def routes_to(self, checkpoint_id: UUID) -> bool:
        """Whether the slot routes work to `checkpoint_id` now."""
        return self.routing_enabled and self.active_checkpoint_id == checkpoint_id

    def disable_routing_after(self, checkpoint_id: UUID, reason: str) -> bool:
        """Disable routing if it routes to `checkpoint_id` (a revoke's consequence)."""
        if not self.routes_to(checkpoint_id):
            return False
        self.disable_routing(reason)
        return True

    def require_active(self) -> UUID:
        """The active checkpoint's id; refused when the slot has none."""
        active = self.active_checkpoint_id
        if active is None:
            raise DeploymentRefusedError(f"{self.profile} has no bound checkpoint")
        return active


def after_deployability_loss(
    checkpoint: Checkpoint,
    promotion: Promotion | None,
    slots: list[DeploymentSlot],
    *,
    revoked: str | None,
    failed_eval: str | None,
) -> list[LedgerAggregate]:
    """What a revoke or a failing eval does beyond the checkpoint, in the same append.

    A failing eval (`failed_eval`) or a revoke of deployability (`revoked`,
    its reason) rejects the checkpoint's promotion, and either disables the
    routing of every slot whose active checkpoint it is (SPEC §9.1, §9.3): a
    routed checkpoint is always deployable and not rejected. Returns the
    aggregates that changed.
    """
    changed: list[LedgerAggregate] = []
    if revoked is not None:
        because = f"deployability of checkpoint {checkpoint.id} revoked: {revoked}"
    elif failed_eval is not None:
        because = f"eval {failed_eval} of checkpoint {checkpoint.id} failed"
    else:
        return changed
    if promotion is not None and promotion.reject_after(because, eval_id=failed_eval):
        changed.append(promotion)
    if revoked is not None or (promotion is not None and promotion.state == "rejected"):
        changed += stop_routing_to(checkpoint.id, slots, because)
    return changed


def stop_routing_to(
    checkpoint_id: UUID, slots: list[DeploymentSlot], because: str
) -> list[LedgerAggregate]:
    """Disable every slot's routing to a checkpoint that is no longer deployable or whose
    promotion was rejected (in the same append as that change); the slots that changed."""
    return [slot for slot in slots if slot.disable_routing_after(checkpoint_id, because)]
