"""The read model: the ledger projection kept caught up, and the queries on it.

Catching up reads the log after the view's tracked position in pages
(`select_notifications`; the SQLite recorder cannot subscribe), translated
into facts (`LogReader.fact_pages`), and applies each page in one transaction
together with its tracking position. If another process moved the view
meanwhile (its own catch-up, or a rebuild), the page is refused whole and the
loop carries on from where the view now is: each event is applied exactly
once, and a process killed at any point leaves the view at the end of its last
committed page. A rebuild, or the replay `verify` compares the views with,
reads the whole log: on SQLite, worker processes translate it while this one
applies the pages (`adapters.sqlite.log_workers`).

Every query reads one consistent state of the view (`LedgerView.reader`)
caught up with the log, so a command's effect is visible to the next query.
Where the view lives in the log's SQLite file, the query's own transaction
tells that it is caught up; otherwise, or when it is behind, it catches up
first.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking

from trainledger.domain.errors import ViewsInconsistentError
from trainledger.domain.views import iso
from trainledger.projections.deployment_read_model import DeploymentReadModel
from trainledger.projections.documents import (
    checkpoint_document,
    eval_document,
    grouped,
    run_document,
)
from trainledger.projections.facts import CheckpointRecord, RunRecord, micros
from trainledger.projections.filters import (
    CheckpointFilter,
    Document,
    EvalFilter,
    Progress,
    RunFilter,
)
from trainledger.projections.log import FactPage, LogReader
from trainledger.projections.projection import RUN_OPENINGS, LedgerProjection, run_spec
from trainledger.projections.view import FactReader, LedgerView, StaleTrackingError


def canonical_id(text: str) -> str | None:
    """An id as the views store it (32 hex digits), or None when it is not a UUID."""
    try:
        return UUID(text.strip()).hex
    except (ValueError, AttributeError):
        return None


def _micros(as_of: datetime | None) -> int | None:
    return None if as_of is None else micros(as_of)


@contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    # A rebuild or a replay allocates millions of short-lived, acyclic
    # objects, and a query's answer thousands (`impact`: documents for every
    # run and checkpoint of a dataset): the cycle collector would only walk
    # them over and over, and move a large answer into its oldest generation,
    # whose collection walks the whole process (at 1,000 runs, p99 82 against
    # a median of 60 ms; bench/README, "impact"). Reference counting frees
    # them; an answer its caller keeps is walked once, by the first collection
    # after the pause. Queries of other threads may overlap: the first to end
    # lets the collector run again, and one that was off before any of them
    # began stays off.
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class ProjectionReadModel(DeploymentReadModel):
    """Implements `service.queries.ReadModel` on a `LedgerView`."""

    CATCH_UP_PAGE = 1000
    REBUILD_PAGE = 50_000

    def __init__(
        self,
        application_name: str,
        log: LogReader,
        view: LedgerView,
        *,
        replay_view: Callable[[], LedgerView],
    ) -> None:
        self.application_name = application_name
        self.log = log
        self.view = view
        self.replay_view = replay_view
        """Makes the empty view `differences_from_replay` replays the log into."""
        self.projection = LedgerProjection(view)
        self._lock = threading.RLock()

    # --- keeping the view up to date ----------------------------------------

    def catch_up(self) -> int:
        """Apply every event recorded since the view's position; return how many."""
        return self.apply_log(page_size=self.CATCH_UP_PAGE)

    def apply_log(
        self,
        *,
        page_size: int,
        progress: Progress | None = None,
        stop: int | None = None,
    ) -> int:
        """Apply the log after the view's position (up to `stop`), page by page."""
        with self._lock:
            position = self.view.position(self.application_name)
            with self.log.fact_pages(position, page_size, stop) as pages:
                return self._apply(pages, position, page_size, progress, stop)

    def _apply(
        self,
        pages: Generator[FactPage, None, None],
        position: int,
        page_size: int,
        progress: Progress | None,
        stop: int | None,
    ) -> int:
        """Apply `pages`, the translated log after `position`; return how many events."""
        name = self.application_name
        total = 0
        if progress is not None:
            last = self.log.last_position()
            total = max(0, (last if stop is None else min(stop, last)) - position)
        applied = 0
        with ExitStack() as translating:
            while True:
                for page in pages:
                    try:
                        self.view.apply(page.facts, Tracking(name, page.last), position)
                    except StaleTrackingError:
                        moved = self.view.position(name)
                        if moved == position:
                            raise
                        position = moved
                        break
                    except IntegrityError as error:
                        raise ViewsInconsistentError(
                            f"the views refused events {page.first}..{page.last} ({error}); "
                            "run `trainledger projections rebuild`"
                        ) from None
                    applied += page.events
                    position = page.last
                    if progress is not None:
                        progress(applied, max(total, applied))
                else:
                    return applied
                # Another process moved the view on: carry on from where it is.
                pages.close()
                translating.close()
                pages = translating.enter_context(self.log.fact_pages(position, page_size, stop))

    def rebuild(self, progress: Progress | None = None) -> Document:
        """Drop every view and apply the whole log again, in large pages."""
        with self._lock:
            started = time.perf_counter()
            # The log is read and translated from its start while the views are emptied.
            translation = self.log.fact_pages(0, self.REBUILD_PAGE, whole_log=True)
            with translation as pages, _cycle_collection_paused():
                self.view.reset(self.application_name)
                try:
                    applied = self._apply(pages, 0, self.REBUILD_PAGE, progress, None)
                finally:
                    self.view.finish_rebuild()
            seconds = time.perf_counter() - started
        return {
            "eventsApplied": applied,
            "position": self.view.position(self.application_name),
            "seconds": round(seconds, 3),
            "eventsPerSecond": round(applied / seconds) if seconds > 0 else None,
        }

    def tracked_position(self) -> int:
        """The log position the view has applied up to."""
        return self.view.position(self.application_name)

    def differences_from_replay(self) -> list[str]:
        """Compare the views with a replay of the log into a fresh in-memory view."""
        self.catch_up()
        replay = ProjectionReadModel(
            self.application_name, self.log, self.replay_view(), replay_view=self.replay_view
        )
        with ExitStack() as translating, _cycle_collection_paused():
            with self.view.reader() as reader:
                position = reader.position(self.application_name)
                # The log is read and translated while the views are read.
                pages = translating.enter_context(
                    self.log.fact_pages(0, self.REBUILD_PAGE, stop=position, whole_log=True)
                )
                live = reader.dump()
            replay._apply(pages, 0, self.REBUILD_PAGE, None, position)
            with replay.view.reader() as reader:
                replayed = reader.dump()
        return [
            f"{table}: {len(live[table])} rows in the view, {len(replayed[table])} "
            f"in a replay, {len(set(live[table]) ^ set(replayed[table]))} differ"
            for table in sorted(live)
            if live[table] != replayed[table]
        ]

    # --- queries ---------------------------------------------------------------

    @contextmanager
    def _current(self) -> Iterator[FactReader]:
        """A reader of the view caught up with the log.

        Where the view lives with the log, one transaction tells that it is
        caught up and answers the query; otherwise (or when it is behind) the
        view catches up first. The cycle collector waits meanwhile
        (`_cycle_collection_paused`).
        """
        with _cycle_collection_paused():
            with self.view.reader() as reader:
                end = reader.log_position()
                if end is not None and end == reader.position(self.application_name):
                    yield reader
                    return
            self.catch_up()
            with self.view.reader() as reader:
                yield reader

    def run(self, run_id: str, as_of: datetime | None) -> Document | None:
        key, at = canonical_id(run_id), _micros(as_of)
        if key is None:
            return None
        with self._current() as reader:
            found = reader.runs(ids=[key], as_of=at)
            return self._run_documents(reader, found, at)[0] if found else None

    def checkpoint(self, checkpoint_id: str, as_of: datetime | None) -> Document | None:
        key, at = canonical_id(checkpoint_id), _micros(as_of)
        if key is None:
            return None
        with self._current() as reader:
            found = reader.checkpoints(ids=[key], as_of=at)
            return self._checkpoint_documents(reader, found, at)[0] if found else None

    def lineage(self, checkpoint_id: str, as_of: datetime | None) -> Document | None:
        key, at = canonical_id(checkpoint_id), _micros(as_of)
        if key is None:
            return None
        with self._current() as reader:
            found = reader.checkpoints(ids=[key], as_of=at)
            if not found:
                return None
            # Read once, for the checkpoint's document and the lineage's list.
            evals = sorted(
                reader.evals(checkpoint_ids=[key], as_of=at), key=lambda e: e.checkpoint_version
            )
            checkpoint = checkpoint_document(found[0], evals, reader.deployability([key], at))
            runs = reader.runs(ids=[found[0].run_id], as_of=at)
            run = self._run_documents(reader, runs, at)[0] if runs else None
            deployment = self.lineage_parts(reader, key, at)
        spec = run["spec"] if run else {}
        return {
            "checkpointId": checkpoint["checkpointId"],
            "trainRunId": checkpoint["trainRunId"],
            "asOf": iso(as_of),
            "datasetFingerprint": spec.get("datasetFingerprint"),
            "deployable": checkpoint["deployable"],
            "dataset": {
                "datasetFingerprint": spec.get("datasetFingerprint"),
                "datasetExportId": spec.get("datasetExportId"),
                "datasetExportPath": spec.get("datasetExportPath"),
                "sampleCount": run["sampleCount"] if run else None,
            },
            "run": run,
            "checkpoint": checkpoint,
            "currentEval": checkpoint["currentEval"],
            "evals": [eval_document(e) for e in evals],
            "deployabilityHistory": checkpoint["deployabilityHistory"],
            **deployment,
        }

    def impact(self, dataset_fingerprint: str, as_of: datetime | None) -> Document:
        at = _micros(as_of)
        with self._current() as reader:
            runs = reader.runs(dataset_fingerprint=dataset_fingerprint, as_of=at)
            run_documents = self._run_documents(reader, runs, at)
            checkpoints = reader.checkpoints(run_ids=[r.run_id for r in runs], as_of=at)
            checkpoint_documents = self._checkpoint_documents(reader, checkpoints, at)
            by_run = grouped(checkpoint_documents, lambda c: str(c["trainRunId"]))
            deployable = [c["checkpointId"] for c in checkpoint_documents if c["deployable"]]
            for run in run_documents:  # each document is this answer's own: extended, not copied
                run["checkpoints"] = by_run.get(run["trainRunId"], [])
        return {
            "datasetFingerprint": dataset_fingerprint,
            "asOf": iso(as_of),
            "runs": run_documents,
            "checkpoints": checkpoint_documents,
            "deployableCheckpointIds": deployable,
            "totalRuns": len(run_documents),
            "totalCheckpoints": len(checkpoint_documents),
            "deployableCheckpoints": len(deployable),
        }

    def runs(self, where: RunFilter, as_of: datetime | None, limit: int | None) -> list[Document]:
        at = _micros(as_of)
        with self._current() as reader:
            found = reader.runs(
                status=where.status,
                family=where.family,
                dataset_fingerprint=where.dataset_fingerprint,
                as_of=at,
                limit=limit,
            )
            return self._run_documents(reader, found, at)

    def checkpoints(
        self, where: CheckpointFilter, as_of: datetime | None, limit: int | None
    ) -> list[Document]:
        at = _micros(as_of)
        run_ids = None
        if where.run_id is not None:
            key = canonical_id(where.run_id)
            if key is None:
                return []
            run_ids = [key]
        with self._current() as reader:
            found = reader.checkpoints(
                run_ids=run_ids,
                family=where.family,
                deployable=where.deployable,
                as_of=at,
                limit=limit,
            )
            return self._checkpoint_documents(reader, found, at)

    def evals(self, where: EvalFilter, as_of: datetime | None, limit: int | None) -> list[Document]:
        checkpoint_ids = None
        if where.checkpoint_id is not None:
            key = canonical_id(where.checkpoint_id)
            if key is None:
                return []
            checkpoint_ids = [key]
        with self._current() as reader:
            found = reader.evals(
                checkpoint_ids=checkpoint_ids,
                benchmark_id=where.benchmark_id,
                verdict=where.verdict,
                family=where.family,
                as_of=_micros(as_of),
                limit=limit,
            )
        return [eval_document(e) for e in found]

    def stats(self, as_of: datetime | None) -> Document:
        with self._current() as reader:
            counts = reader.counts(_micros(as_of))
        runs, verdicts = counts.runs_by_status, counts.evals_by_verdict
        return {
            "totalRuns": sum(runs.values()),
            "completedRuns": runs.get("completed", 0),
            "failedRuns": runs.get("failed", 0),
            "pendingRuns": runs.get("pending", 0),
            "runningRuns": runs.get("running", 0),
            "totalCheckpoints": counts.checkpoints,
            "deployableCheckpoints": counts.deployable_checkpoints,
            "totalEvals": sum(verdicts.values()),
            "passingEvals": verdicts.get("pass", 0) + verdicts.get("compare_only", 0),
            "failingEvals": verdicts.get("fail", 0),
            "promotableCheckpoints": counts.promotable_checkpoints,
            "routedProfiles": counts.routed_profiles,
        }

    def ids_with_prefixes(self, prefixes: Sequence[str], limit: int) -> list[tuple[str, str]]:
        with self._current() as reader:
            return reader.ids_with_prefixes(prefixes, limit)

    # --- documents ---------------------------------------------------------------

    def _run_documents(
        self, reader: FactReader, runs: Sequence[RunRecord], at: int | None
    ) -> list[Document]:
        links = grouped(reader.links([r.run_id for r in runs], at), lambda k: k.run_id)
        specs = self._specs(reader, runs)
        return [run_document(run, links.get(run.run_id, []), at, specs[run.run_id]) for run in runs]

    def _specs(self, reader: FactReader, runs: Sequence[RunRecord]) -> dict[str, dict[str, Any]]:
        """Each run's spec, from its registration in the log (the views do not keep specs).

        Read in the view's own transaction where the view lives with the log.
        """
        positions = [run.position for run in runs]
        stored = reader.stored_events(positions)
        registrations = (
            self.log.events_at(positions) if stored is None else self.log.records(stored)
        )
        specs = {e.aggregate_id: run_spec(e) for e in registrations if e.topic in RUN_OPENINGS}
        for run in runs:
            if run.run_id not in specs:
                raise ViewsInconsistentError(
                    f"the views hold run {run.run_id} registered at position {run.position}, "
                    "where the log holds no such event; run `trainledger verify`"
                )
        return specs

    @staticmethod
    def _checkpoint_documents(
        reader: FactReader, checkpoints: Sequence[CheckpointRecord], at: int | None
    ) -> list[Document]:
        ids = [c.checkpoint_id for c in checkpoints]
        evals = grouped(reader.evals(checkpoint_ids=ids, as_of=at), lambda e: e.checkpoint_id)
        changes = grouped(reader.deployability(ids, at), lambda d: d.checkpoint_id)
        return [
            checkpoint_document(c, evals.get(c.checkpoint_id, []), changes.get(c.checkpoint_id, []))
            for c in checkpoints
        ]
