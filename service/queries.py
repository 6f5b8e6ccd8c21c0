"""The read side of the ledger: the queries of SPEC §5 and the port that answers them.

Queries are answered from projections, never by loading aggregates. The
application holds a `ReadModel` (the port, `service.ports`; implemented in
`projections/`, injected by `adapters.store.open_ledger`). The read model
catches up with the log before it answers, so a command's effect is visible
to the next query.

`as_of` (a datetime with a time zone) asks for the answer as it was then: the
state made of the events whose timestamp is at or before that moment. A moment
before an entity existed gives an empty answer, not an error (issue 4: "a time
before the first event gives an empty answer, not an error"): lists are empty,
counts are zero, and `show_run`, `show_checkpoint` and `lineage` of an id that
did not exist then answer `{}`. Asking about the past is not a mistake; only
without `as_of` does an unknown id raise a not-found error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from trainledger.domain.errors import (
    CheckpointNotFoundError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
)
from trainledger.domain.vocabulary import FINGERPRINT_PATTERN, RUN_STATUSES, VERDICTS
from trainledger.projections.filters import (
    CheckpointFilter,
    Document,
    EvalFilter,
    Progress,
    RunFilter,
)
from trainledger.service import arguments
from trainledger.service.ports import ReadModel

_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)


def parse_moment(text: str) -> datetime:
    """An ISO-8601 timestamp with a time zone (`2025-01-31T12:00:00Z`), as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"--as-of {text!r} is not an ISO-8601 timestamp (e.g. 2025-01-31T12:00:00Z)"
        ) from None
    return require_zone(moment)


def require_zone(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(
            f"as-of time {moment.isoformat()} has no time zone; "
            "add one, e.g. 2025-01-31T12:00:00Z or +02:00"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # within hours of year 1 or 9999: before, or after, every event
        edge = datetime.min if moment.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC)


class Queries:
    """The queries of the Python API, on a read model; `TrainingLedger` holds one.

    Every query accepts `as_of` (see the module docstring).
    """

    def __init__(self, read_model: ReadModel) -> None:
        self.read_model = read_model

    def show_run(self, run_id: str, *, as_of: datetime | None = None) -> Document:
        """The run as it is now, or as it was at `as_of` (`{}` if it did not exist then)."""
        moment = _moment(as_of)
        found = self.read_model.run(arguments.require(run_id, str, "a run id"), moment)
        if found is None:
            return _nothing_then(moment, RunNotFoundError(run_id))
        return found

    def show_checkpoint(self, checkpoint_id: str, *, as_of: datetime | None = None) -> Document:
        """The checkpoint with all its evals and its deployability history.

        `{}` if, at `as_of`, it was not registered yet.
        """
        moment = _moment(as_of)
        found = self.read_model.checkpoint(_checkpoint_id(checkpoint_id), moment)
        if found is None:
            return _nothing_then(moment, CheckpointNotFoundError(checkpoint_id))
        return found

    def lineage(self, checkpoint_id: str, *, as_of: datetime | None = None) -> Document:
        """Where a checkpoint comes from and what was decided about it.

        The run (with its spec and dataset fingerprint), the checkpoint (with
        its artifact digest), its current eval, all evals, and the
        deployability history with actors and reasons. `{}` if, at `as_of`,
        the checkpoint was not registered yet.
        """
        moment = _moment(as_of)
        found = self.read_model.lineage(_checkpoint_id(checkpoint_id), moment)
        if found is None:
            return _nothing_then(moment, CheckpointNotFoundError(checkpoint_id))
        return found

    def impact(self, dataset_fingerprint: str, *, as_of: datetime | None = None) -> Document:
        """The runs trained on a dataset, their checkpoints, which are deployable."""
        fingerprint = arguments.require(dataset_fingerprint, str, "a dataset fingerprint")
        fingerprint = fingerprint.strip().lower()
        if not _FINGERPRINT.match(fingerprint):
            raise ValidationError(
                f"dataset fingerprint {dataset_fingerprint!r} is not 16 hex characters"
            )
        return self.read_model.impact(fingerprint, _moment(as_of))

    def list_runs(
        self,
        *,
        status: str | None = None,
        family: str | None = None,
        dataset_fingerprint: str | None = None,
        as_of: datetime | None = None,
        limit: int | None = None,
    ) -> Document:
        """Runs, newest first, optionally of one status, family or dataset."""
        _require_member("status", status, RUN_STATUSES)
        _optional_text(family=family, dataset_fingerprint=dataset_fingerprint)
        where = RunFilter(status, family, dataset_fingerprint and dataset_fingerprint.lower())
        return {"runs": self.read_model.runs(where, _moment(as_of), _limit(limit))}

    def list_checkpoints(
        self,
        *,
        run_id: str | None = None,
        family: str | None = None,
        deployable: bool | None = None,
        as_of: datetime | None = None,
        limit: int | None = None,
    ) -> Document:
        """Checkpoints, newest first, optionally of one run or family, by deployability."""
        _optional_text(run_id=run_id, family=family)
        arguments.optional(deployable, bool, "deployable")
        where = CheckpointFilter(run_id, family, deployable)
        return {"checkpoints": self.read_model.checkpoints(where, _moment(as_of), _limit(limit))}

    def list_evals(
        self,
        *,
        checkpoint_id: str | None = None,
        benchmark_id: str | None = None,
        verdict: str | None = None,
        family: str | None = None,
        as_of: datetime | None = None,
        limit: int | None = None,
    ) -> Document:
        """Evals, newest first, optionally of one checkpoint, benchmark, verdict or family."""
        _require_member("verdict", verdict, VERDICTS)
        _optional_text(checkpoint_id=checkpoint_id, benchmark_id=benchmark_id, family=family)
        where = EvalFilter(checkpoint_id, benchmark_id, verdict, family)
        return {"evals": self.read_model.evals(where, _moment(as_of), _limit(limit))}

    def stats(self, *, as_of: datetime | None = None) -> Document:
        """Counts of runs by status, checkpoints, deployable ones, and evals by verdict."""
        return self.read_model.stats(_moment(as_of))

    def rebuild_projections(self, progress: Progress | None = None) -> Document:
        """Drop every view and rebuild it from the whole log."""
        return self.read_model.rebuild(progress)

    def projection_differences(self) -> list[str]:
        """How the views differ from a fresh replay of the log (empty when equal)."""
        return self.read_model.differences_from_replay()


def _moment(as_of: datetime | None) -> datetime | None:
    moment = arguments.moment(as_of)
    return None if moment is None else require_zone(moment)


def _nothing_then(moment: datetime | None, missing: NotFoundError) -> Document:
    """The answer for an id found nowhere: empty as of a moment, else not found."""
    if moment is None:
        raise missing
    return {}


def _require_member(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValidationError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def _checkpoint_id(checkpoint_id: object) -> str:
    return arguments.require(checkpoint_id, str, "a checkpoint id")


def _optional_text(**filters: object) -> None:
    for name, value in filters.items():
        arguments.optional(value, str, name)


def _limit(limit: int | None) -> int | None:
    return None if limit is None else arguments.whole(limit, "limit", low=1)
