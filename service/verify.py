"""`verify` (SPEC §6): recompute every hash chain and the log's digest, compare the views.

The rules are `domain.chain`'s. A long log on a store that supports it is
checked by worker processes, each taking a share of the aggregates: its
chains, and its share of the views against a replay of it. Only a sound log
is answered that way; anything else is checked again in one pass, which
names the first bad position. Views a worker finds different are compared
here in full, which says how.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import TYPE_CHECKING, Any, TypeVar

from trainledger.domain.chain import (
    AggregateChains,
    IntegrityFailure,
    LogVerifier,
    SealedDigests,
    log_digest,
    parse_digest,
)
from trainledger.domain.errors import LedgerError
from trainledger.service.reservation_check import (
    ReservationCheck,
    ReservationProblem,
    last_seal_link,
    seal_problem,
)
from trainledger.service.unit_of_work import Outcome

if TYPE_CHECKING:
    from trainledger.service.ledger import TrainingLedger
    from trainledger.service.ports import Seal


class Verification:
    """`verify` on one ledger: its recorder, its mapper and its views."""

    PAGE = 2000
    """Events read at a time by the one-pass check."""

    def __init__(self, ledger: TrainingLedger) -> None:
        self.ledger = ledger

    def verify(
        self, *, digest: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Outcome:
        """Recompute every hash chain and a digest of the whole log, in order.

        With `digest` (from an earlier run) also prove that some prefix of the
        log still has exactly that digest. `progress(done, total)` is called
        after each page.

        A long log on a store that supports it is checked by worker
        processes, each taking a share of the aggregates: its chains, and its
        share of the views against a replay of it. Only a sound log is
        answered that way; anything else is checked again in one pass, which
        names the first bad position. Views a worker finds different are
        compared here in full, which says how.
        """
        if digest is not None:
            digest = parse_digest(digest)
        checked = self._verify_in_parallel(digest, progress)
        if checked is None:
            report = self._verify_in_one_pass(digest, progress)
            return self._check_store(report, self.ledger.ledger_recorder.store_problems())
        return self._check_store(*checked)

    def _check_store(self, report: Outcome, problems: list[str]) -> Outcome:
        """The database's own consistency check and the views' tracking record.

        A damaged index answers queries wrongly (a list lost a row) while the
        rows the log check reads are sound; a tracking position moved past the
        end of the log makes the views skip every event written below it.
        `problems`: what the database's own consistency check found.
        """
        if problems:
            failure = IntegrityFailure(
                report["position"],
                "the database's own consistency check failed: " + "; ".join(problems[:5]),
            )
            return {**report, "ok": False, "failure": report["failure"] or _failure(failure)}
        if self.ledger.read_model is not None:
            tracked = self.ledger.read_model.tracked_position()
            end = max(
                self.ledger.recorder.max_notification_id() or 0,
                self.ledger.ledger_recorder.log_chain_end(),
            )
            if tracked > end:
                failure = IntegrityFailure(
                    end,
                    f"the views' tracking position {tracked} is past the end of the log "
                    f"({end}): moved by hand; run `trainledger projections rebuild`",
                )
                return {**report, "ok": False, "failure": report["failure"] or _failure(failure)}
        return report

    def _verify_in_parallel(
        self, digest: str | None, progress: Callable[[int, int], None] | None
    ) -> tuple[Outcome, list[str]] | None:
        """The report, and what the database's consistency check found meanwhile."""
        self._catch_up_views()  # so that the views are at the end of the log the workers read
        check = self.ledger.ledger_recorder.start_log_check(
            digest=digest,
            parts=self.ledger.VERIFY_WORKERS,
            minimum=self.ledger.PARALLEL_VERIFY_FROM,
            application_name=self.ledger.name,
        )
        if check is None:
            return None
        log = check.snapshot
        if progress is not None:
            progress(0, log.upto)

        def checked() -> tuple[bool, tuple[bool, str | None, int | None], list[str]]:
            # The parent's own part while the workers run: the database's
            # consistency check (SQLite's, which releases the GIL) in a thread
            # of its own, and the seals meanwhile. One after the other (at a
            # million lifecycles ~10 then ~40 CPU-s) they could end after the
            # workers, one core idle while the check ran alone.
            problems = _Background(self.ledger.ledger_recorder.store_problems)
            seals = self._sealed_up_to(log.upto, digest)
            return check.sound(), seals, problems.result()

        try:
            sound, (sealed, last_seal, sealed_match), problems = _waiting(
                checked, log.upto, progress
            )
        except BaseException:  # an interrupt: stop the workers
            check.cancel()
            raise
        if not sound or not sealed:
            return None
        matched_at = log.digest_position if last_seal is None else sealed_match
        differences = None
        if digest is None or matched_at is not None:
            # The rows are compared here only when the workers found some
            # share of the views different (or could not tell), to say how.
            differences = [] if check.views_match else self._view_differences()
        if progress is not None:
            progress(log.upto, log.upto)
        failure = None
        if digest is not None and matched_at is None:
            failure = _no_prefix_with(digest, log.upto)
        elif differences:
            failure = IntegrityFailure(log.upto, _views_differ(differences))
        report = _verify_report(
            position=log.upto,
            digest=log_digest(log.last_link, last_seal),
            events=log.upto,
            matched_at=matched_at,
            differences=differences,
            failure=failure,
        )
        return report, problems

    def _sealed_up_to(self, upto: int, digest: str | None) -> tuple[bool, str | None, int | None]:
        """The seals of a log up to `upto`, read while the workers check it.

        (True, the last seal link or None, the position a sealed state's digest
        matched), or (False, ...) when the one-pass check must look (also when
        the workers find the log unsound, which makes this moot): a store
        without seals has its reservations checked by meaning, which needs
        every event; a seal that does not hold is named there.
        """
        recorder = self.ledger.ledger_recorder
        if not recorder.sealed_reservations(0, 1):
            return not recorder.reservations(), None, None
        matched = None
        anchor_link: Callable[[int], str | None]
        if digest is None:  # the links the workers checked at the seals' anchors
            anchor_link = _AnchorLinks(recorder.log_chain, self.PAGE // 2).at
        else:  # every position's, matched with the seals as the one-pass check does
            sealed = SealedDigests(self._seal_links(upto))
            after = 0
            while after < upto:
                page = recorder.log_chain(after, min(upto, after + self.PAGE * 10))
                for position in sorted(page):
                    if sealed.at(position, page[position], digest):
                        matched = position
                after = min(upto, after + self.PAGE * 10)
            anchor_link = sealed.anchor_links.get
        last_seal = None

        def sealed_up_to() -> Iterator[tuple[Seal, bytes | None]]:
            nonlocal last_seal
            for seal, value in self._sealed_reservations():
                if seal.position <= upto:
                    last_seal = seal.link
                yield seal, value

        problem = seal_problem(sealed_up_to(), anchor_link, recorder.unsealed_reservations, upto)
        return problem is None, last_seal, matched

    def _seal_links(self, upto: int) -> Iterator[tuple[int, str]]:
        """(anchor, link) of every seal anchored up to `upto`, in seal order, a page at a time."""
        for seal, _ in self._sealed_reservations():
            if seal.position > upto:  # seals come in anchor order: a concurrent append's
                return
            yield seal.position, seal.link

    def _last_seal_link(self, upto: int) -> str | None:
        return last_seal_link((seal for seal, _ in self._sealed_reservations()), upto)

    def _sealed_reservations(self) -> Iterator[tuple[Seal, bytes | None]]:
        """Every seal in seal chain order, with its reservation's value, a page at a time."""
        after = 0
        while page := self.ledger.ledger_recorder.sealed_reservations(after, self.PAGE * 10):
            yield from page
            after = page[-1][0].seq

    def _verify_in_one_pass(
        self, digest: str | None, progress: Callable[[int, int], None] | None
    ) -> Outcome:
        recorder = self.ledger.ledger_recorder
        # Reservations first: the events they are about were committed with or
        # before them, so are all within the log read below.
        reservations = recorder.reservations()
        # The log as of now: every event up to here was committed with its link
        # (events first: a link read later may be of an event committed since,
        # which the pages below then read too). Whatever other processes append
        # meanwhile is left for the next verify, never taken for a deletion.
        total = self.ledger.recorder.max_notification_id() or 0
        upto = max(total, recorder.log_chain_end())
        verifier = LogVerifier(
            gap_free=recorder.gap_free_positions,
            chains=AggregateChains(self.ledger.canonical_json),
            expected_digest=digest,
            sealed=SealedDigests(self._seal_links(upto)),
        )
        meanings = ReservationCheck()
        decode = self.ledger.state_codec.decode_state
        after = 0
        while after < upto:
            page = self.ledger.recorder.select_notifications(
                start=after, limit=self.PAGE, stop=upto, inclusive_of_start=False
            )
            if not page:
                break
            links = self.ledger.ledger_recorder.log_chain(after, page[-1].id)
            present = {n.id for n in page}
            unmatched = sorted(p for p in links if p not in present)
            for n in page:
                while unmatched and unmatched[0] < n.id:
                    verifier.missing(unmatched.pop(0))
                # the ledger writes bytes; a row edited behind its back may hold
                # text (SQL replace()) or anything else, which must not crash verify
                raw_state: Any = n.state
                if isinstance(raw_state, str):
                    raw_state = raw_state.encode()
                elif not isinstance(raw_state, bytes):
                    raw_state = repr(raw_state).encode()
                try:
                    state = decode(raw_state)
                except (ValueError, TypeError):
                    state = None
                verifier.feed(
                    n.id,
                    n.originator_id,
                    n.originator_version,
                    n.topic,
                    raw_state,
                    state if isinstance(state, dict) else None,
                    links.get(n.id),
                    check_link=True,
                )
                if isinstance(state, dict):
                    meanings.feed(n.id, str(n.originator_id), n.topic, state)
            after = page[-1].id
            if progress is not None:
                progress(verifier.events, total)
        # Chain entries past the last stored event: events deleted from the end.
        for position in sorted(self.ledger.ledger_recorder.log_chain(after, upto)):
            verifier.missing(position)
        failure = verifier.failure
        if failure is None:
            failure = _reservation_failure(
                meanings.meaning_problem(reservations, verifier.position)
                or seal_problem(
                    self._sealed_reservations(),
                    verifier.sealed.anchor_links.get,
                    recorder.unsealed_reservations,
                    verifier.position,
                )
            )
        if failure is None and digest is not None and verifier.digest_matched_at is None:
            failure = _no_prefix_with(digest, verifier.position)
        # The views are only worth comparing with a replay of a sound log.
        differences = None if failure is not None else self._view_differences()
        if differences:
            failure = IntegrityFailure(verifier.position, _views_differ(differences))
        return _verify_report(
            position=verifier.position,
            digest=log_digest(verifier.digest, self._last_seal_link(verifier.position)),
            events=verifier.events,
            matched_at=verifier.digest_matched_at,
            differences=differences,
            failure=failure,
        )

    def _catch_up_views(self) -> None:
        if self.ledger.read_model is not None:
            # What stops it, the comparison with a replay reports.
            with contextlib.suppress(LedgerError):
                self.ledger.read_model.catch_up()

    def _view_differences(self) -> list[str]:
        try:
            return self.ledger.projection_differences()
        except LedgerError as error:
            return [f"views cannot be read: {error.message}"]


T = TypeVar("T")

PROGRESS_EVERY = 0.1
"""Seconds between progress reports while worker processes check the log."""
EXPECTED_RATE = 500_000
"""Events a second the workers are expected to check, for the progress estimate."""


def _waiting(sound: Callable[[], T], total: int, progress: Callable[[int, int], None] | None) -> T:
    """`sound()` (which waits for the workers), with `progress` moving meanwhile.

    The workers report only when done, so the progress shown is an estimate
    from the time taken, which approaches the total but never reaches it
    before they are done.
    """
    if progress is None:
        return sound()
    # Not an executor's context: an interrupt must reach the caller (which
    # stops the workers) without waiting for them.
    waiter = ThreadPoolExecutor(max_workers=1)
    try:
        verdict = waiter.submit(sound)
        started = time.monotonic()
        expected = max(total / EXPECTED_RATE, PROGRESS_EVERY)
        while True:
            try:
                return verdict.result(timeout=PROGRESS_EVERY)
            except FuturesTimeout:
                elapsed = time.monotonic() - started
                progress(int(total * elapsed / (elapsed + expected)), total)
    finally:
        waiter.shutdown(wait=False)


class _Background:
    """`work()` in a thread of its own, started at once; `result()` waits for it.

    A daemon thread, unlike an executor's: an interrupt of the caller (which
    stops verify's workers) does not wait for it, nor does the process's exit.
    """

    def __init__(self, work: Callable[[], list[str]]) -> None:
        self._work = work
        self._result: list[str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as error:  # handed to the caller of `result()`
            self._error = error

    def result(self) -> list[str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class _AnchorLinks:
    """The log chain's links at the seals' anchors, asked in increasing order.

    Reads a page of links from each anchor not yet read: as many reads as
    anchors where they are sparse, the log chain once where they are dense.
    """

    def __init__(self, log_chain: Callable[[int, int], dict[int, str]], page: int) -> None:
        self._log_chain = log_chain
        self._page = page
        self._links: dict[int, str] = {}
        self._after = self._upto = 0

    def at(self, position: int) -> str | None:
        if not self._after < position <= self._upto:
            self._after, self._upto = position - 1, position - 1 + self._page
            self._links = self._log_chain(self._after, self._upto)
        return self._links.get(position)


def _reservation_failure(problem: ReservationProblem | None) -> IntegrityFailure | None:
    return None if problem is None else IntegrityFailure(problem.position, problem.reason)


def _no_prefix_with(digest: str, position: int) -> IntegrityFailure:
    return IntegrityFailure(
        position,
        f"no prefix of the log has digest {digest}: events up to the position it "
        "covered were modified, deleted, reordered or inserted",
    )


def _views_differ(differences: list[str]) -> str:
    return (
        "projections differ from a fresh replay of the log ("
        + "; ".join(differences)
        + "); run `trainledger projections rebuild`"
    )


def _failure(failure: IntegrityFailure) -> dict[str, Any]:
    return {"position": failure.position, "reason": failure.reason}


def _verify_report(
    *,
    position: int,
    digest: str,
    events: int,
    matched_at: int | None,
    differences: list[str] | None,
    failure: IntegrityFailure | None,
) -> Outcome:
    return {
        "ok": failure is None,
        "position": position,
        "digest": digest,
        "events": events,
        "digestVerifiedUpTo": matched_at,
        "projectionsMatchReplay": None if differences is None else not differences,
        "failure": None
        if failure is None
        else {"position": failure.position, "reason": failure.reason},
    }
