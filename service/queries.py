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
from collections.abc import Iterable
from datetime import UTC, datetime
from uuid import UUID

from trainledger.domain.errors import (
    AmbiguousIdError,
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
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,31}")

ID_KINDS = ("run", "checkpoint")
SHORT_ID = 8
"""Short ids (tables, candidates) have at least this many hex digits, more where needed."""
CANDIDATES_SHOWN = 10


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

    def resolve_id(self, text: str, kinds: tuple[str, ...] = ID_KINDS) -> str:
        """The full id of the one run or checkpoint (of `kinds`) whose id starts with `text`.

        A full id, or text that is no hex prefix, is returned as given (the
        command's own lookup finds it or says it is not found), as is a prefix
        that matches nothing. A prefix more than one id starts with is refused,
        naming them.
        """
        prefix = _id_prefix(text)
        if prefix is None:
            return text
        found = self.read_model.ids_with_prefixes([prefix], CANDIDATES_SHOWN + 1)
        matches = [(kind, key) for kind, key in found if kind in kinds]
        if len(matches) == 1:
            return str(UUID(matches[0][1]))
        if not matches:
            return text
        short = self.short_ids(str(UUID(key)) for _, key in matches)
        named = ", ".join(f"{kind} {short[str(UUID(key))]}" for kind, key in matches)
        more = ", ..." if len(matches) > CANDIDATES_SHOWN else ""
        raise AmbiguousIdError(
            f"id prefix {text.strip()!r} is ambiguous: {named}{more}; give more characters"
        )

    def short_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Each id's shortest unique prefix among runs and checkpoints (at least 8 digits)."""
        digits = {i: i.replace("-", "").lower() for i in dict.fromkeys(ids)}
        if not digits:
            return {}
        neighbours = self.read_model.ids_with_prefixes(
            [d[:SHORT_ID] for d in digits.values()], 2 * CANDIDATES_SHOWN
        )
        by_prefix: dict[str, list[str]] = {}
        for _, key in neighbours:
            by_prefix.setdefault(key[:SHORT_ID], []).append(key)
        short = {}
        for identifier, key in digits.items():
            shared = [
                _common_length(key, other)
                for other in by_prefix.get(key[:SHORT_ID], [])
                if other != key
            ]
            short[identifier] = key[: max([SHORT_ID, *(n + 1 for n in shared)])]
        return short

    def rebuild_projections(self, progress: Progress | None = None) -> Document:
        """Drop every view and rebuild it from the whole log."""
        return self.read_model.rebuild(progress)

    def projection_differences(self) -> list[str]:
        """How the views differ from a fresh replay of the log (empty when equal)."""
        return self.read_model.differences_from_replay()


def _id_prefix(text: str) -> str | None:
    digits = text.strip().lower().replace("-", "")
    return digits if _HEX_PREFIX.fullmatch(digits) else None


def _common_length(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


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
