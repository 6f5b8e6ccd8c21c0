"""Named errors of the ledger's rules.

Every refusal a user can meet is a `LedgerError`: it carries a stable `code`
(for `--json` output and scripts) and a one-line message naming the rule.
"""

from __future__ import annotations

from typing import ClassVar


class LedgerError(Exception):
    """A command or query was refused; nothing was recorded."""

    code: ClassVar[str] = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(LedgerError):
    """Input does not satisfy the contract (enums, ranges, shapes)."""

    code = "invalid_input"


class ControlCharacterError(ValidationError):
    """Text holds NUL, another C0 control character (but tab and newline) or a lone surrogate."""

    code = "control_character"


class ProfileNotEnabledError(LedgerError):
    code = "profile_not_enabled"


class FamilyProfileMismatchError(LedgerError):
    code = "family_not_valid_for_profile"


class HardwareTierError(LedgerError):
    code = "invalid_hardware_tier"


class DatasetError(LedgerError):
    code = "dataset_unreadable"


class NotFoundError(LedgerError):
    code = "not_found"


class RunNotFoundError(NotFoundError):
    def __init__(self, run_id: object) -> None:
        super().__init__(f"training run {run_id} not found")


class CheckpointNotFoundError(NotFoundError):
    def __init__(self, checkpoint_id: object) -> None:
        super().__init__(f"checkpoint {checkpoint_id} not found")


class AmbiguousIdError(LedgerError):
    """An id prefix that more than one run or checkpoint starts with."""

    code = "ambiguous_id"


class InvalidTransitionError(LedgerError):
    code = "invalid_transition"


class FamilyMismatchError(LedgerError):
    code = "family_mismatch"


class EvalRefusedError(LedgerError):
    code = "eval_refused"


class DuplicateEvalError(EvalRefusedError):
    code = "duplicate_eval"


class DeployabilityError(LedgerError):
    code = "not_deployable"


class PromotionRefusedError(LedgerError):
    """The promotion gate, or a promotion step, refused (SPEC §9.1)."""

    code = "promotion_refused"


class DeploymentRefusedError(LedgerError):
    """A deployment slot refused a bind, a rollback or a routing change (SPEC §9.3)."""

    code = "deployment_refused"


class ObservationNotFoundError(NotFoundError):
    def __init__(self, observation_id: object) -> None:
        super().__init__(f"shadow observation {observation_id} not found")


class ObservationRefusedError(LedgerError):
    """A shadow observation that cannot be routed or settled (SPEC §9.2)."""

    code = "observation_refused"


class IdempotencyKeyReusedError(LedgerError):
    code = "idempotency_key_reused"


class ConflictError(LedgerError):
    """Concurrent writers kept changing the same aggregate; retries ran out."""

    code = "conflict"


class ResultRefusedError(LedgerError):
    """A trainer result cannot be imported for this run."""

    code = "result_refused"


class StoreError(LedgerError):
    """The store URL is malformed or the store cannot be opened."""

    code = "store_error"


class NoLedgerError(StoreError):
    """A query named a store that holds no ledger; only a command that records creates one."""

    code = "no_ledger"


class CorruptStoreError(StoreError):
    """A stored event cannot be read back: the store was modified outside the ledger."""

    code = "corrupt_store"


class ImportRefusedError(LedgerError):
    """An export file cannot be imported; nothing was written."""

    code = "import_refused"


class StoreNotEmptyError(ImportRefusedError):
    """`import` only restores into an empty store."""

    code = "store_not_empty"


class ExportRefusedError(LedgerError):
    """The log cannot be exported faithfully."""

    code = "export_refused"


class ViewsInconsistentError(StoreError):
    """A projection's tables refused the log's events: they were changed outside the ledger."""

    code = "views_inconsistent"


class TrainerNotStartedError(LedgerError):
    """The trainer could not be started (no such script, not a file); nothing was recorded."""

    code = "trainer_not_started"


class ArtifactError(LedgerError):
    """An artifact cannot be hashed within its bounds, or leads outside itself."""

    code = "artifact_refused"


class UnauthenticatedError(LedgerError):
    """No token, or one that is unknown or revoked (the service answers 401)."""

    code = "unauthenticated"


class ForbiddenError(LedgerError):
    """The token's role is too low for what was asked (the service answers 403)."""

    code = "forbidden"


class TokenNotFoundError(NotFoundError):
    def __init__(self, name: object) -> None:
        super().__init__(f"no token named {name!r}")


class TokenNameTakenError(LedgerError):
    code = "token_name_taken"


class TokenRevokedError(LedgerError):
    code = "token_revoked"


class BaseModelError(LedgerError):
    """The base model an experiment names is not a model directory (SPEC §12)."""

    code = "base_model_unusable"
