"""Checking a large SQLite log in worker processes, one share of the aggregates each.

`verify` recomputes a hash chain per aggregate and the log chain over every
row, and compares the views with a replay of the log. All three split: an
aggregate's chain depends only on its own events, the link the recorder
wrote at each position can be checked against the link it wrote at the
position before, and every view row is made by one aggregate's events
(`projections.shares`). So each worker reads the rows of its share of the
aggregates (by the first hex digit of the id), each with the links at its
position and the one before, checks them, replays them, and reports a digest
of each view table its share makes; together the workers read every row
once. The parent meanwhile takes the same digests of the live views.

The result is only ever "all sound" or "look closer": the parent process then
runs the one-pass check (`TrainingLedger.verify`), which names the first bad
position exactly as it always does. A worker that fails in any way counts as
"look closer".

Run as `python -m adapters.sqlite_verify DATABASE UPTO PART PARTS`: prints
`{"events": N, "problem": POSITION-or-null, "views": {TABLE: DIGEST}-or-null}`.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain.integrity import FastLogCheck
from domain.workers import worker_env

if TYPE_CHECKING:
    from projections.shares import ShareDigests

HEX_DIGITS = "0123456789abcdef"
"""Shares by the id's first digit, as `projections.shares.share_of` does."""


@dataclass(frozen=True)
class LogSnapshot:
    """What the parent read in one transaction before starting the workers."""

    upto: int
    """The last position; rows and links 1..upto are all present exactly once."""
    last_link: str
    digest_position: int | None
    """The position whose recorded link is the expected digest, if asked and any."""


def snapshot(
    cursor: sqlite3.Cursor, events_table: str, chain_table: str, digest: str | None
) -> LogSnapshot | None:
    """The log's extent, or None when rows or links are not exactly positions 1..N.

    Read inside one transaction, so rows and links are of the same moment.
    """
    rows, low, high = cursor.execute(
        f"SELECT COUNT(*), MIN(rowid), MAX(rowid) FROM {events_table}"
    ).fetchone()
    links, first, last = cursor.execute(
        f"SELECT COUNT(*), MIN(position), MAX(position) FROM {chain_table}"
    ).fetchone()
    if not rows or (rows, low, high) != (links, first, last) or low != 1 or high != rows:
        return None
    (last_link,) = cursor.execute(
        f"SELECT link FROM {chain_table} WHERE position=?", (high,)
    ).fetchone()
    digest_position = None
    if digest is not None:
        (digest_position,) = cursor.execute(
            f"SELECT MAX(position) FROM {chain_table} WHERE link=?", (digest,)
        ).fetchone()
    return LogSnapshot(int(high), str(last_link), digest_position)


CHUNK = 20_000
"""Rows read, checked and replayed at a time."""


def check_part(
    database: str, upto: int, part: int, parts: int
) -> tuple[int, int | None, ShareDigests | None]:
    """Check and replay one share: (rows checked, first problem or None, view digests)."""
    # Imported here: the parent imports this module without needing the projections.
    from projections.projection import EventRecord
    from projections.shares import ShareReplay

    connection = sqlite3.connect(database, isolation_level=None)
    check = FastLogCheck()
    replay = ShareReplay()
    try:
        connection.execute("BEGIN")  # one snapshot for the whole read
        rows = connection.execute(
            "SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, "
            "b.link, l.link FROM stored_events e "
            "JOIN ledger_log_chain l ON l.position = e.rowid "
            "LEFT JOIN ledger_log_chain b ON b.position = e.rowid - 1 "
            "WHERE e.rowid <= ? AND instr(?, substr(e.originator_id, 1, 1)) % ? = ? "
            "ORDER BY e.rowid",
            (upto, HEX_DIGITS, parts, part),
        )
        while chunk := rows.fetchmany(CHUNK):
            decoded: list[EventRecord] = []
            problem = check.check(chunk, decoded, EventRecord)
            if problem is not None:
                return check.checked, problem, None
            replay.add(decoded)
        return check.checked, None, replay.digests()
    except sqlite3.Error:
        return 0, 0, None
    finally:
        connection.close()


@dataclass
class ParallelLogCheck:
    """Worker processes checking the log; `sound()` waits for their verdict."""

    snapshot: LogSnapshot
    workers: list[subprocess.Popen[bytes]]
    view_digests: list[ShareDigests] | None = None
    """After `sound()`: each share's digests of the views a replay of it makes, in
    share order; None unless every worker sent them."""

    @staticmethod
    def start(database: str, log: LogSnapshot, parts: int) -> ParallelLogCheck:
        env = worker_env()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, database, str(log.upto), str(part), str(parts)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            for part in range(parts)
        ]
        return ParallelLogCheck(log, workers)

    def sound(self) -> bool:
        """True when every worker checked its rows and found nothing wrong."""
        checked = 0
        verdict = True
        views: list[ShareDigests] | None = []
        for worker in self.workers:
            output, _ = worker.communicate()
            try:
                report = json.loads(output)
                checked += int(report["events"])
                verdict = verdict and worker.returncode == 0 and report["problem"] is None
                digests = report["views"]
            except (ValueError, KeyError, TypeError):
                verdict, digests = False, None
            if views is not None and isinstance(digests, dict):
                views.append({str(table): str(digest) for table, digest in digests.items()})
            else:
                views = None
        self.view_digests = views
        return verdict and checked == self.snapshot.upto

    def cancel(self) -> None:
        """Stop the workers (also after `sound()` was interrupted part-way)."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


def main(argv: list[str]) -> int:
    # Hundreds of thousands of acyclic objects kept: the cycle collector would only walk them.
    gc.disable()
    database, upto, part, parts = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    checked, problem, views = check_part(database, upto, part, parts)
    sys.stdout.write(json.dumps({"events": checked, "problem": problem, "views": views}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
