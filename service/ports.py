"""The ports of the service layer: what it needs from the outside world.

Each is a Protocol implemented by an adapter and handed to `TrainingLedger`
by the composition root (`adapters.store.open_ledger`). The recorder is the
library's, chosen by environment (`PERSISTENCE_MODULE`); the ledger's own
needs of it (reservations, the log chain, a parallel check) are declared
here as `LedgerRecorder`, which every backend's recorder implements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from uuid import UUID

from trainledger.projections.filters import (
    CheckpointFilter,
    Document,
    EvalFilter,
    Progress,
    RunFilter,
)

if TYPE_CHECKING:
    from eventsourcing.persistence import StoredEvent

    from trainledger.domain.experiment import DatasetDigest
    from trainledger.domain.shadow_stats import ShadowCounts

IDEMPOTENCY = "idempotency"
"""Reservation kind: an idempotency key, valued with its command's outcome."""
EVAL_ID = "eval"
"""Reservation kind: a globally unique evalId, valued with its checkpoint's id."""


UNCHANGED = "unchanged"
"""The append's keyword for what a decision read but did not change: (aggregate id,
version) pairs. Every recorder refuses the append, keeping nothing, with the library's
`IntegrityError` (as for a concurrent change to an aggregate the append extends) when
any of them has an event past that version, checked in the append's own transaction."""


def changed_since_read(aggregate_id: UUID) -> str:
    """The refusal's message, on every store."""
    return f"{aggregate_id} changed after the decision read it"


@dataclass(frozen=True)
class Reservation:
    """A unique key written in the same transaction as a command's events."""

    kind: str
    key: str
    value: bytes
    anchor: int | None = None
    """Import only: its seal's anchor, as the 1-based index of an event of this
    append (0: the empty log before them); by default the append's last event
    (`domain.chain.seal_anchor`)."""


@dataclass(frozen=True)
class Seal:
    """A reservation's seal: its place in the seal chain (`domain.chain.seal_link`)."""

    seq: int
    position: int
    """Its anchor: the last event of its append, or the log's end for one without events."""
    kind: str
    key: str
    value_hash: str
    """sha256 of the reservation's value, hex: what a lookup checks the value against."""
    link: str


class LogExtent(Protocol):
    """What a parallel log check read before its workers started."""

    @property
    def upto(self) -> int:
        """The last position; rows and links 1..upto are all present exactly once."""

    @property
    def last_link(self) -> str:
        """The log chain's link at `upto`: the digest of the log."""

    @property
    def digest_position(self) -> int | None:
        """The position whose link is the digest asked about, if any."""


class LogCheck(Protocol):
    """Worker processes checking a long log; `sound()` waits for their verdict."""

    @property
    def snapshot(self) -> LogExtent: ...

    @property
    def views_match(self) -> bool | None:
        """After `sound()`: whether the views equal a replay (None: could not tell)."""

    def sound(self) -> bool:
        """True when every worker checked its rows and found nothing wrong."""

    def cancel(self) -> None:
        """Stop the workers."""


@runtime_checkable
class LedgerRecorder(Protocol):
    """What the ledger needs from its recorder beyond the library's API."""

    gap_free_positions: bool
    """The backend never skips a position (SQLite): a missing one was deleted."""

    def find_reservation(self, kind: str, key: str) -> bytes | None: ...

    def reservations(self) -> list[Reservation]: ...

    def seals(self) -> list[Seal]:
        """Every reservation's seal, in seal chain order (empty: a store without seals)."""

    def sealed_reservations(self, after_seq: int, limit: int) -> list[tuple[Seal, bytes | None]]:
        """Up to `limit` seals after seal `after_seq`, in seal chain order, each with its
        reservation's value (None: no such reservation), read together."""

    def unsealed_reservations(self) -> list[Reservation]:
        """The reservations that have no seal."""

    def seal_of(self, kind: str, key: str) -> tuple[bool, str | None]:
        """Whether the store seals reservations, and this one's sealed value hash."""

    def positions(self, originator_id: UUID) -> list[int]:
        """The log positions of one aggregate's events, in version order."""

    def log_chain(self, after: int, upto: int | None) -> dict[int, str]:
        """The log chain links the ledger wrote for positions in (after, upto]."""

    def log_chain_end(self) -> int:
        """The last position the log chain has a link for (0: none)."""

    def store_problems(self) -> list[str]:
        """What the database's own consistency check finds wrong (empty: nothing)."""

    def start_log_check(
        self, *, digest: str | None, parts: int, minimum: int, application_name: str
    ) -> LogCheck | None:
        """Start workers checking a log of at least `minimum` rows (None: not here)."""


@runtime_checkable
class StateCodec(Protocol):
    """How the store's mapper writes and reads a stored event's state (`PydanticMapper`)."""

    def encode_state(self, state: dict[str, Any]) -> bytes: ...

    def decode_state(self, data: bytes) -> dict[str, Any]: ...

    def read_event(self, stored_event: StoredEvent, *, read_back: bool) -> Any:
        """The domain event of a stored event (`read_back`: from the ledger's own store)."""


def state_codec(mapper: object) -> StateCodec:
    """The mapper as a `StateCodec` (the ledger's mapper is one)."""
    if not isinstance(mapper, StateCodec):
        raise TypeError(f"{type(mapper).__name__} is not a StateCodec")
    return mapper


class ReadModel(Protocol):
    """The port the queries are answered through.

    Ids are given as the user typed them; an id that is not a UUID finds
    nothing. Every method catches up with the log first.
    """

    def catch_up(self) -> int:
        """Apply every event recorded since the last catch-up; return how many."""
        ...

    def rebuild(self, progress: Progress | None = None) -> Document:
        """Drop every view and apply the whole log again."""
        ...

    def tracked_position(self) -> int:
        """The log position the views have applied up to (their tracking record)."""
        ...

    def differences_from_replay(self) -> list[str]:
        """How the views differ from a fresh replay of the log (empty: they are equal)."""
        ...

    def run(self, run_id: str, as_of: datetime | None) -> Document | None: ...

    def checkpoint(self, checkpoint_id: str, as_of: datetime | None) -> Document | None: ...

    def lineage(self, checkpoint_id: str, as_of: datetime | None) -> Document | None: ...

    def impact(self, dataset_fingerprint: str, as_of: datetime | None) -> Document: ...

    def runs(
        self, where: RunFilter, as_of: datetime | None, limit: int | None
    ) -> list[Document]: ...

    def checkpoints(
        self, where: CheckpointFilter, as_of: datetime | None, limit: int | None
    ) -> list[Document]: ...

    def evals(
        self, where: EvalFilter, as_of: datetime | None, limit: int | None
    ) -> list[Document]: ...

    def stats(self, as_of: datetime | None) -> Document: ...

    def ids_with_prefixes(self, prefixes: Sequence[str], limit: int) -> list[tuple[str, str]]:
        """(kind, id) of the runs and checkpoints whose id (32 lowercase hex digits)
        starts with one of `prefixes`: at most `limit` of each kind for each prefix."""
        ...

    # --- SPEC §9 ---------------------------------------------------------------

    def promotion(self, checkpoint_id: str, as_of: datetime | None) -> Document | None:
        """The checkpoint's promotion document; None when the checkpoint did not exist."""
        ...

    def promotions(self, state: str | None, as_of: datetime | None) -> list[Document]: ...

    def shadow_counts(
        self, checkpoint_id: str, window_start: datetime, window_end: datetime, cutoff: datetime
    ) -> ShadowCounts | None:
        """The checkpoint's observations in a window; None for an unknown checkpoint."""
        ...

    def slot(self, profile: str, as_of: datetime | None) -> Document: ...

    def slots(self, as_of: datetime | None) -> list[Document]: ...


ReadModelFactory = Callable[[Any], ReadModel]
"""Builds the read model of an application (called with the application, once)."""

DatasetLoader = Callable[[str], "DatasetDigest"]
"""Reads and fingerprints a JSONL dataset file."""

BaseModelLocator = Callable[[str], str]
"""Checks that a path names a base model directory and says where it is (`BaseModelError`)."""

CanonicalWriter = Callable[[Any], bytes]
"""Spells a JSON value in the canonical form the chain hashes cover
(`domain.chain.canonical_json`, the definition and the default; the adapters
wire an accelerator that writes the same bytes, `adapters.canonical_json`)."""


class ArtifactDigester(Protocol):
    """The content digest of an artifact file or directory; None when the path does not exist.

    Raises `ArtifactError` when the artifact is too large, leads outside itself,
    or is not hashed by `deadline` (a `time.monotonic()` value).
    """

    def __call__(self, path: str, *, deadline: float | None = None) -> str | None: ...
