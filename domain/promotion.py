"""Promotion of a checkpoint (SPEC §9.1): every gate decision is an event.

One `Promotion` per checkpoint (its id is derived from the checkpoint's,
`promotion_id`), opened by its first decision. States: `candidate_only`
(the gate passed), `shadow_ready` (reviewed; the shadow window runs),
`promotable` (the gate passed again on shadow evidence after the window),
`rejected` (a gate check failed, a person rejected it, or its deployability
was revoked). Each decision records the checks with their measured values
and thresholds, the evidence they read and the eval. Nothing is demoted by
`advance`, and a rejection keeps the whole history.

The shadow statistics the gate reads are counted by the application from
the observations (`domain.shadow`) and handed in as `ShadowEvidence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from trainledger.domain.aggregate import LedgerAggregate
from trainledger.domain.errors import PromotionRefusedError, ValidationError
from trainledger.domain.ids import promotion_id
from trainledger.domain.model import Checkpoint
from trainledger.domain.shadow_stats import MIN_SETTLED, ShadowEvidence
from trainledger.domain.vocabulary import PromotionState

Evidence = Literal["shadow", "eval"]
BINDABLE_STATES = ("shadow_ready", "promotable")
"""The promotion states a deployment slot may bind (SPEC §9.3)."""

ARBITER_BASELINE = 0.15
EXECUTABILITY_BASELINE = 0.10
QUALITY_BASELINE = 0.70
MIN_SHADOW_WINDOW = timedelta(hours=1)


class GateCheck(BaseModel):
    """One check of a decision: what was measured, against what, and the verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    value: float
    threshold: float
    passed: bool

    @classmethod
    def at_least(cls, name: str, value: float, threshold: float) -> GateCheck:
        threshold = round(threshold, 12)  # 0.70 - 0.05, not 0.6499999999999999
        return cls(name=name, value=value, threshold=threshold, passed=value >= threshold)

    @classmethod
    def at_most(cls, name: str, value: float, threshold: float) -> GateCheck:
        threshold = round(threshold, 12)
        return cls(name=name, value=value, threshold=threshold, passed=value <= threshold)


@dataclass(frozen=True)
class GateThresholds:
    """The gate's settings: `promotion evaluate --min-delta X --margin X`."""

    min_delta: float = 0.05
    margin: float = 0.05

    def __post_init__(self) -> None:
        for name, value in (("min-delta", self.min_delta), ("margin", self.margin)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValidationError(f"--{name} must be a finite number")
        if not 0 <= self.margin <= 1:
            raise ValidationError(f"--margin must be between 0 and 1, not {self.margin}")


def gate_checks(
    checkpoint: Checkpoint, shadow: ShadowEvidence | None, thresholds: GateThresholds
) -> tuple[Evidence, str, list[GateCheck]]:
    """The gate on the checkpoint's current eval: (evidence, evalId, checks).

    Rates come from shadow evidence when it is significant (≥ 5 settled
    observations); otherwise from the eval as proxies.
    """
    current = checkpoint.current_eval
    if current is None:
        raise PromotionRefusedError(
            f"checkpoint {checkpoint.id} has no eval; attach one before the promotion gate"
        )
    evidence: Evidence
    if shadow is not None and shadow.significant:
        evidence = "shadow"
        arbiter, executability = shadow.arbiter_reject_rate, shadow.executability_reject_rate
    else:
        evidence = "eval"
        failed = current.verdict == "fail"
        arbiter, executability = (1.0, 0.1) if failed else (0.0, 0.0)
    margin = thresholds.margin
    delta = current.delta if current.delta is not None else 0.0
    checks = [
        GateCheck.at_least("delta", delta, thresholds.min_delta),
        GateCheck.at_most("arbiterRejectRate", arbiter, ARBITER_BASELINE + margin),
        GateCheck.at_most(
            "executabilityRejectRate", executability, EXECUTABILITY_BASELINE + margin
        ),
        GateCheck.at_least(
            "reviewedSubsetQuality", current.candidateScore, QUALITY_BASELINE - margin
        ),
    ]
    return evidence, current.evalId, checks


@dataclass(frozen=True)
class Decision:
    """One entry of a promotion's history."""

    kind: str  # evaluate | advance | reject
    state: str
    checks: tuple[GateCheck, ...]
    evidence: str | None
    eval_id: str | None
    actor: str
    timestamp: datetime
    note: str | None = None
    reason: str | None = None


class Promotion(LedgerAggregate):
    """The promotion of one checkpoint: its gate decisions."""

    ORDER: ClassVar[dict[str, int]] = {"candidate_only": 1, "shadow_ready": 2, "promotable": 3}

    checkpoint_id: UUID
    state: PromotionState | None
    decisions: list[Decision]
    shadow_started_at: datetime | None
    thresholds: GateThresholds

    def __init__(self) -> None:
        """State is set by `Opened.apply`."""

    class Opened(LedgerAggregate.Created):
        checkpoint_id: UUID

        def apply(self, promotion: Promotion) -> None:
            promotion.checkpoint_id = self.checkpoint_id
            promotion.state = None
            promotion.decisions = []
            promotion.shadow_started_at = None
            promotion.thresholds = GateThresholds()

    class Evaluated(LedgerAggregate.Event):
        checkpoint_id: UUID
        state: PromotionState
        checks: list[GateCheck]
        evidence: Evidence
        eval_id: str
        min_delta: float
        margin: float

        def apply(self, promotion: Promotion) -> None:
            promotion.state = self.state
            promotion.thresholds = GateThresholds(self.min_delta, self.margin)
            promotion._decided(self, "evaluate", evidence=self.evidence, eval_id=self.eval_id)

    class Advanced(LedgerAggregate.Event):
        checkpoint_id: UUID
        state: PromotionState
        note: str
        checks: list[GateCheck] = []
        evidence: Evidence | None = None
        eval_id: str | None = None

        def apply(self, promotion: Promotion) -> None:
            promotion.state = self.state
            if self.state == "shadow_ready":
                promotion.shadow_started_at = self.timestamp
            promotion._decided(
                self, "advance", evidence=self.evidence, eval_id=self.eval_id, note=self.note
            )

    class Rejected(LedgerAggregate.Event):
        checkpoint_id: UUID
        reason: str
        eval_id: str | None = None

        def apply(self, promotion: Promotion) -> None:
            promotion.state = "rejected"
            promotion._decided(self, "reject", eval_id=self.eval_id, reason=self.reason)

    def _decided(
        self,
        event: Any,
        kind: str,
        *,
        evidence: str | None = None,
        eval_id: str | None = None,
        note: str | None = None,
        reason: str | None = None,
    ) -> None:
        checks = tuple(getattr(event, "checks", ()))
        decision = Decision(
            kind,
            self.state or "",
            checks,
            evidence,
            eval_id,
            event.actor,
            event.timestamp,
            note,
            reason,
        )
        self.decisions = [*self.decisions, decision]

    @classmethod
    def for_checkpoint(cls, checkpoint: Checkpoint) -> Promotion:
        """The promotion of a checkpoint never decided on (saved with its first decision)."""
        promotion: Promotion = cls._open(
            cls.Opened, promotion_id(checkpoint.id), checkpoint_id=checkpoint.id
        )
        return promotion

    def _require_own(self, checkpoint: Checkpoint) -> None:
        if checkpoint.id != self.checkpoint_id:
            raise ValueError("a promotion decides on its own checkpoint only")

    def evaluate(
        self,
        checkpoint: Checkpoint,
        shadow: ShadowEvidence | None,
        thresholds: GateThresholds,
    ) -> None:
        """Run the gate on the current eval and record the decision.

        A failed check rejects; a pass makes a checkpoint `candidate_only`,
        and leaves one that is `shadow_ready` or `promotable` where it is.
        """
        self._require_own(checkpoint)
        evidence, eval_id, checks = gate_checks(checkpoint, shadow, thresholds)
        state: PromotionState
        if not all(check.passed for check in checks):
            state = "rejected"
        elif self.state in ("shadow_ready", "promotable"):
            state = self.state
        else:
            state = "candidate_only"
        self._trigger(
            self.Evaluated,
            checkpoint_id=self.checkpoint_id,
            state=state,
            checks=checks,
            evidence=evidence,
            eval_id=eval_id,
            min_delta=thresholds.min_delta,
            margin=thresholds.margin,
        )

    def advance(
        self,
        checkpoint: Checkpoint,
        *,
        reviewed: bool,
        note: str,
        shadow_since_start: ShadowEvidence | None,
        now: datetime,
    ) -> None:
        """candidate_only → shadow_ready; shadow_ready → promotable once the shadow
        window has lasted `MIN_SHADOW_WINDOW`, ≥ 5 observations settled since it
        started and the gate passes on them. Refused otherwise, naming what is missing."""
        self._require_own(checkpoint)
        if not reviewed:
            raise PromotionRefusedError("advancing a promotion needs a review (--review)")
        if not note.strip():
            raise ValidationError("advancing a promotion needs a note (--note)")
        if self.state is None:
            raise PromotionRefusedError(
                f"checkpoint {self.checkpoint_id} was never evaluated; run `promotion evaluate`"
            )
        if self.state == "rejected":
            raise PromotionRefusedError(
                f"checkpoint {self.checkpoint_id} is rejected; a rejected promotion does "
                "not advance (evaluate it again on a new eval)"
            )
        if self.state == "promotable":
            raise PromotionRefusedError(
                f"checkpoint {self.checkpoint_id} is already promotable; advance never demotes"
            )
        if self.state == "candidate_only":
            self._trigger(
                self.Advanced, checkpoint_id=self.checkpoint_id, state="shadow_ready", note=note
            )
            return
        checks, evidence, eval_id = self._promotable_checks(checkpoint, shadow_since_start, now)
        failed = [check for check in checks if not check.passed]
        if failed:
            missing = "; ".join(_describe(check) for check in failed)
            raise PromotionRefusedError(
                f"checkpoint {self.checkpoint_id} is not promotable yet: {missing}"
            )
        self._trigger(
            self.Advanced,
            checkpoint_id=self.checkpoint_id,
            state="promotable",
            note=note,
            checks=checks,
            evidence=evidence,
            eval_id=eval_id,
        )

    def _promotable_checks(
        self, checkpoint: Checkpoint, shadow: ShadowEvidence | None, now: datetime
    ) -> tuple[list[GateCheck], Evidence | None, str]:
        assert self.shadow_started_at is not None
        settled = 0 if shadow is None else shadow.settled
        hours = (now - self.shadow_started_at).total_seconds() / 3600
        window = [
            GateCheck.at_least(
                "shadowWindowHours", round(hours, 6), MIN_SHADOW_WINDOW / timedelta(hours=1)
            ),
            GateCheck.at_least("settledObservations", settled, MIN_SETTLED),
        ]
        if shadow is None or not shadow.significant:
            current = checkpoint.current_eval
            eval_id = current.evalId if current else ""
            return window, None, eval_id
        evidence, eval_id, gate = gate_checks(checkpoint, shadow, self.thresholds)
        return [*gate, *window], evidence, eval_id

    def reject(self, reason: str, *, eval_id: str | None = None) -> None:
        """→ rejected, with a reason; the history stays."""
        if not reason.strip():
            raise ValidationError("a reason is required to reject a promotion")
        if self.state == "rejected":
            raise PromotionRefusedError(f"checkpoint {self.checkpoint_id} is already rejected")
        self._trigger(
            self.Rejected, checkpoint_id=self.checkpoint_id, reason=reason, eval_id=eval_id
        )

    def reject_after(self, reason: str, *, eval_id: str | None = None) -> bool:
        """Reject, unless never decided on or rejected already (a revoke's consequence)."""
        if self.state is None or self.state == "rejected":
            return False
        self.reject(reason, eval_id=eval_id)
        return True


def _describe(check: GateCheck) -> str:
    comparison = {
        "shadowWindowHours": "the shadow window has lasted {value:g} h, needs {threshold:g} h",
        "settledObservations": "{value:g} observations settled since the window started, "
        "needs {threshold:g}",
    }.get(check.name, "{name} is {value:g} (threshold {threshold:g})")
    return comparison.format(name=check.name, value=check.value, threshold=check.threshold)
