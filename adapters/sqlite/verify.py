"""Checking a large SQLite log in worker processes, one share of the aggregates each.

`verify` recomputes a hash chain per aggregate and the log chain over every
row, and compares the views with a replay of the log. All three split: an
aggregate's chain depends only on its own events, the link the recorder
wrote at each position can be checked against the link it wrote at the
position before, and every view row is made by one aggregate's events
(`projections.shares`). So each worker reads the rows of its share of the
aggregates (by ranges of their ids), each with the links at its
position and the one before, checks them, replays them, and compares the
replay with its share of the live views, read in the same transaction;
together the workers read every row once.

The result is only ever "all sound" or "look closer": the parent process then
runs the one-pass check (`TrainingLedger.verify`), which names the first bad
position exactly as it always does. A worker that fails in any way counts as
"look closer".

The workers take the shares in turn, each share a few hundred thousand
events at most (`SHARE_EVENTS`), so a worker's memory stays bounded however
long the log: it holds one share's rows, chains and replay at a time.

Run as `python -m trainledger.adapters.sqlite.verify DATABASE UPTO WORKER WORKERS SHARES
APPLICATION`: checks shares WORKER, WORKER + WORKERS, ... of SHARES and prints
`{"events": N, "problem": POSITION-or-null, "views": SAME-or-null}`, where
SAME says whether those shares of the views (those of the application's
name) equal their replay.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

from trainledger.adapters.sqlite.fast_check import FastLogCheck
from trainledger.adapters.workers import stop_workers, worker_env


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
"""Rows checked and replayed at a time."""
SHARE_EVENTS = 350_000
"""About how many events a share holds: what bounds a worker's memory.

A worker holds one share at a time: its rows, their chains, its replay of
the views and its rows of the live views (about 1 KB an event in all).
"""


def share_count(upto: int, workers: int) -> int:
    """How many shares a log of `upto` events is checked in: a multiple of `workers`."""
    from trainledger.adapters.sqlite.shares import ID_SPACE  # see `check_part`

    rounds = -(-upto // (SHARE_EVENTS * workers))
    return min(max(rounds, 1) * workers, ID_SPACE)


def check_part(
    database: str, upto: int, part: int, parts: int, application_name: str
) -> tuple[int, int | None, bool | None]:
    """Check and replay one share of the aggregates.

    Returns (rows checked, the first problem or None, whether the share of the
    views equals its replay: None when that could not be told).

    A share that is a large part of the log is read by scanning the tables
    in order (cheaper than walking the index); a small one through the ids'
    index.
    """
    # Imported here: the parent imports this module without needing the projections.
    from trainledger.adapters.sqlite.shares import (
        ShareReplay,
        live_rows,
        same_views,
        share_condition,
        tracked_position,
    )
    from trainledger.projections.projection import EventRecord

    scan = parts <= SCAN_UP_TO
    connection = sqlite3.connect(database, isolation_level=None)
    check = FastLogCheck()
    replay = ShareReplay()
    share, params = share_condition("originator_id", part, parts, scan=scan)
    # A small share: its positions from the ids' index, then its rows in log order.
    rows_of_share = (
        f"e.rowid <= ? AND {share}"
        if scan
        else f"e.rowid IN (SELECT rowid FROM stored_events WHERE {share}) AND +e.rowid <= ?"
    )
    try:
        try:
            connection.execute("BEGIN")  # one snapshot of the log and the views
            rows = connection.execute(
                "SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, "
                "b.link, l.link FROM stored_events e "
                "JOIN ledger_log_chain l ON l.position = e.rowid "
                "LEFT JOIN ledger_log_chain b ON b.position = e.rowid - 1 "
                f"WHERE {rows_of_share} ORDER BY e.rowid",
                (upto, *params) if scan else (*params, upto),
            )
            while chunk := rows.fetchmany(CHUNK):
                problem = check.check(chunk)
                if problem is not None:
                    return check.checked, problem, None
                # The states as stored: the replay decodes the fields it reads.
                replay.add([EventRecord(p, i, v, t, s) for p, i, v, t, s, _, _ in chunk])
        except sqlite3.Error:
            return 0, 0, None
        try:
            cursor = connection.cursor()
            replayed = replay.rows()
            if replayed is None or tracked_position(cursor, application_name) != upto:
                return check.checked, None, None
            live = live_rows(cursor, part, parts, scan=scan)
            return check.checked, None, same_views(live, replayed)
        except (sqlite3.Error, TypeError):  # no views here, or rows that do not even sort
            return check.checked, None, None
    finally:
        connection.close()


SCAN_UP_TO = 4
"""A share of one of this many is read by scanning the tables, a smaller one by index."""


def check_shares(
    database: str, upto: int, mine: range, parts: int, application_name: str
) -> tuple[int, int | None, bool | None]:
    """`check_part` for each of some shares in turn: their verdicts together.

    Stops at the first problem; the views are equal only if every share's were.
    """
    checked = 0
    views: bool | None = True
    for part in mine:
        rows, problem, same = check_part(database, upto, part, parts, application_name)
        checked += rows
        if problem is not None:
            return checked, problem, None
        views = None if same is None or views is None else views and same
        gc.collect()  # the share's objects, before the next one's
    return checked, None, views


@dataclass
class ParallelLogCheck:
    """Worker processes checking the log; `sound()` waits for their verdict."""

    snapshot: LogSnapshot
    workers: list[subprocess.Popen[bytes]]
    views_match: bool | None = None
    """After `sound()`: whether the views equal a replay of the log up to the
    snapshot (every share's did), or None when some worker could not tell."""

    @staticmethod
    def start(
        database: str, log: LogSnapshot, parts: int, application_name: str
    ) -> ParallelLogCheck:
        """`parts` workers, each checking every `parts`-th share (`share_count`) in turn."""
        env = worker_env()
        shares = share_count(log.upto, parts)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    __name__,
                    database,
                    str(log.upto),
                    str(part),
                    str(parts),
                    str(shares),
                    application_name,
                ],
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
        shares: list[object] = []
        for worker in self.workers:
            output, _ = worker.communicate()
            try:
                report = json.loads(output)
                checked += int(report["events"])
                verdict = verdict and worker.returncode == 0 and report["problem"] is None
                shares.append(report["views"])
            except (ValueError, KeyError, TypeError):
                verdict = False
                shares.append(None)
        self.views_match = (
            None if None in shares or not all(type(s) is bool for s in shares) else all(shares)
        )
        return verdict and checked == self.snapshot.upto

    def cancel(self) -> None:
        """Stop the workers (also after `sound()` was interrupted part-way)."""
        stop_workers(self.workers)


def main(argv: list[str]) -> int:
    # Hundreds of thousands of acyclic objects kept: the cycle collector would only walk them.
    gc.disable()
    database, upto, worker, workers, shares = argv[0], *map(int, argv[1:5])
    checked, problem, views = check_shares(
        database, upto, range(worker, shares, workers), shares, argv[5]
    )
    sys.stdout.write(json.dumps({"events": checked, "problem": problem, "views": views}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
