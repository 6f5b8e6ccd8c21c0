"""The abstract view of the ledger's projection: one per store backend.

A view is a tracking recorder (the library's `TrackingRecorder`): it records
the position of the last event it applied in the same transaction as the facts
that event recorded. `apply` is a compare-and-set on that position, so a page
of events is applied exactly once even when several processes catch up, or
one rebuilds, at the same time; a crash loses at most an uncommitted page,
which the next catch-up applies again.

Concrete views are adapters: `adapters.sqlite.view.SQLiteLedgerView` (tables
in the store's own SQLite file), `adapters.postgres.view.PostgresLedgerView`
(the same tables and SQL, bar the parameter style) and
`adapters.memory.view.MemoryLedgerView` (dictionaries, for `memory://`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder

from trainledger.domain.shadow_stats import ShadowCounts
from trainledger.projections.deployment_facts import PromotionFact, SlotFact
from trainledger.projections.facts import (
    CheckpointRecord,
    Counts,
    DeployabilityFact,
    EvalFact,
    FactBatch,
    LinkFact,
    RunRecord,
    ViewDump,
)

StoredRow = tuple[int, str, int, str, bytes]
"""A stored event as the log holds it: position, aggregate id (32 hex digits),
version, topic, stored state (as written: maybe encrypted, compressed or of an
older `class_version`; `projections.log.EventDecoder` makes records of them)."""


class StaleTrackingError(IntegrityError):
    """The view's position moved since it was read: someone else applied those events."""


class FactReader(ABC):
    """Reads of one consistent state of a view.

    `as_of` (microseconds since the epoch, None for now) keeps only what was
    recorded at or before that moment. Runs, checkpoints and evals come newest
    first (by log position); links and deployability changes in version order.
    """

    @abstractmethod
    def position(self, application_name: str) -> int:
        """The position of the last event applied to this state (0: none)."""

    def log_position(self) -> int | None:
        """The log's last position as of this state, where the view lives with the log.

        None when this reader cannot tell (the view is kept apart from the log).
        """
        return None

    def stored_events(self, positions: Sequence[int]) -> list[StoredRow] | None:
        """The log's stored rows at these positions, where the view lives with the log.

        None when this reader cannot read them (the view is kept apart from the log).
        """
        return None

    @abstractmethod
    def runs(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | None = None,
        family: str | None = None,
        dataset_fingerprint: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]: ...

    @abstractmethod
    def checkpoints(
        self,
        *,
        ids: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        family: str | None = None,
        deployable: bool | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]: ...

    @abstractmethod
    def evals(
        self,
        *,
        checkpoint_ids: Sequence[str] | None = None,
        benchmark_id: str | None = None,
        verdict: str | None = None,
        family: str | None = None,
        as_of: int | None = None,
        limit: int | None = None,
    ) -> list[EvalFact]: ...

    @abstractmethod
    def links(self, run_ids: Sequence[str], as_of: int | None) -> list[LinkFact]: ...

    @abstractmethod
    def deployability(
        self, checkpoint_ids: Sequence[str], as_of: int | None
    ) -> list[DeployabilityFact]: ...

    @abstractmethod
    def counts(self, as_of: int | None) -> Counts: ...

    # --- SPEC §9 -------------------------------------------------------------

    @abstractmethod
    def promotion_decisions(
        self, checkpoint_ids: Sequence[str] | None, as_of: int | None
    ) -> list[PromotionFact]:
        """The promotion decisions of these checkpoints (None: all), by checkpoint and version."""

    @abstractmethod
    def slot_events(
        self,
        *,
        profiles: Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        as_of: int | None = None,
    ) -> list[SlotFact]:
        """Slot events of these profiles (None: all), or those naming a checkpoint (as the
        one bound or the one replaced), by profile and version."""

    @abstractmethod
    def shadow_counts(
        self, checkpoint_id: str, window_start: int, window_end: int, cutoff: int
    ) -> ShadowCounts:
        """The checkpoint's observations routed in [window_start, window_end], as they stood
        at window_end; pending ones routed at or before `cutoff` are overdue."""

    @abstractmethod
    def ids_with_prefixes(self, prefixes: Sequence[str], limit: int) -> list[tuple[str, str]]:
        """(kind, id) of the runs and checkpoints whose id starts with one of `prefixes`.

        Kinds are "run" and "checkpoint"; ids and prefixes are lowercase hex
        digits. At most `limit` ids of each kind for each prefix, in id order.
        """

    @abstractmethod
    def dump(self) -> ViewDump:
        """Every row of every table, in a canonical order and shape."""


class LedgerView(TrackingRecorder, ABC):
    """Where the ledger projection keeps its facts, with its tracking position."""

    @abstractmethod
    def apply(self, batch: FactBatch, tracking: Tracking, previous: int) -> None:
        """Record a page's facts and move tracking from `previous` to the page's last position.

        One transaction. Raises `StaleTrackingError`, recording nothing, when
        the view's position is not `previous`.
        """

    @abstractmethod
    def reset(self, application_name: str) -> None:
        """Drop every fact and move tracking back to the start, in one transaction."""

    def finish_rebuild(self) -> None:
        """Called once a rebuild has applied the whole log (e.g. to build indexes)."""

    @abstractmethod
    def reader(self) -> AbstractContextManager[FactReader]:
        """A reader of one consistent state of the view."""

    def position(self, application_name: str) -> int:
        """The position of the last event applied (0: none)."""
        return self.max_tracking_id(application_name) or 0
