"""Shadow observations (SPEC §9.2): a candidate checkpoint's work, observed.

One aggregate per observation: routing opens it (routedAt is the ledger's
clock), completing settles it once. So recording stays as cheap at the ten
thousandth observation of a checkpoint as at the first: no command loads a
history that grows with the checkpoint's observations. The statistics are
counted by the views (`domain.shadow_stats` says what they mean).
"""

from __future__ import annotations

from uuid import UUID

from trainledger.domain.aggregate import LedgerAggregate
from trainledger.domain.errors import ObservationRefusedError, ValidationError
from trainledger.domain.experiment import family_suits_profile
from trainledger.domain.ids import require_profile
from trainledger.domain.model import Checkpoint
from trainledger.domain.shadow_stats import SHADOW_OUTCOMES, ShadowOutcome
from trainledger.domain.vocabulary import WorkerProfile


class ShadowObservation(LedgerAggregate):
    """One task routed to a candidate checkpoint in shadow, and how it went."""

    checkpoint_id: UUID
    profile: WorkerProfile
    task_fingerprint: str | None
    outcome: ShadowOutcome | None

    def __init__(self) -> None:
        """State is set by `Routed.apply`."""

    class Routed(LedgerAggregate.Created):
        checkpoint_id: UUID
        profile: WorkerProfile
        task_fingerprint: str | None = None

        def apply(self, observation: ShadowObservation) -> None:
            observation.checkpoint_id = self.checkpoint_id
            observation.profile = self.profile
            observation.task_fingerprint = self.task_fingerprint
            observation.outcome = None

    class Settled(LedgerAggregate.Event):
        outcome: ShadowOutcome
        timed_out: bool = False
        threw_exception: bool = False
        invalid_output: bool = False
        profile_rejected: bool = False

        def apply(self, observation: ShadowObservation) -> None:
            observation.outcome = self.outcome

    @classmethod
    def route(
        cls,
        observation_id: UUID,
        checkpoint: Checkpoint,
        profile: str,
        task_fingerprint: str | None = None,
    ) -> ShadowObservation:
        """A pending observation of `checkpoint` serving `profile`."""
        cls.require_routable(checkpoint, profile)
        if task_fingerprint is not None and not task_fingerprint.strip():
            raise ValidationError("a task fingerprint must not be empty")
        observation: ShadowObservation = cls._open(
            cls.Routed,
            observation_id,
            checkpoint_id=checkpoint.id,
            profile=profile,
            task_fingerprint=task_fingerprint,
        )
        return observation

    @staticmethod
    def require_routable(checkpoint: Checkpoint, profile: str) -> None:
        """Refuse an unknown profile, or one the checkpoint's family does not suit."""
        require_profile(profile)
        if not family_suits_profile(checkpoint.family, profile):
            raise ObservationRefusedError(
                f"checkpoint {checkpoint.id} (family {checkpoint.family!r}) does not suit "
                f"profile {profile}"
            )

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    def require_settleable(self, outcome: str) -> None:
        if outcome not in SHADOW_OUTCOMES:
            raise ValidationError(
                f"unknown outcome {outcome!r} (allowed: {', '.join(SHADOW_OUTCOMES)})"
            )
        if self.settled:
            raise ObservationRefusedError(
                f"shadow observation {self.id} was already completed ({self.outcome})"
            )

    def settle(
        self,
        outcome: str,
        *,
        timed_out: bool = False,
        threw_exception: bool = False,
        invalid_output: bool = False,
        profile_rejected: bool = False,
    ) -> None:
        """Complete the observation, once."""
        self.require_settleable(outcome)
        self._trigger(
            self.Settled,
            outcome=outcome,
            timed_out=timed_out,
            threw_exception=threw_exception,
            invalid_output=invalid_output,
            profile_rejected=profile_rejected,
        )
