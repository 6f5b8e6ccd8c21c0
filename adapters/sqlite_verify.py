"""Checking a large SQLite log in worker processes, one part of the aggregates each.

`verify` recomputes a hash chain per aggregate and the log chain over every
row. Both split: an aggregate's chain depends only on its own events, and the
link the recorder wrote at each position can be checked against the link it
wrote at the position before. So each worker reads the rows of its share of
the aggregates (by the first hex digit of the id) with every recorded link,
and checks them; together the workers check every row.

The result is only ever "all sound" or "look closer": the parent process then
runs the one-pass check (`TrainingLedger.verify`), which names the first bad
position exactly as it always does. A worker that fails in any way counts as
"look closer".

Run as `python -m adapters.sqlite_verify DATABASE UPTO PART PARTS`: prints
`{"events": N, "problem": POSITION-or-null}`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from domain.integrity import first_unsound
from domain.workers import worker_env

HEX_DIGITS = "0123456789abcdef"


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


def check_part(database: str, upto: int, part: int, parts: int) -> tuple[int, int | None]:
    """Check the rows of one part of the aggregates: (rows checked, first problem or None)."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN")  # one snapshot for both reads
        links: Iterator[tuple[int, str]] = iter(
            connection.execute(
                "SELECT position, link FROM ledger_log_chain WHERE position<=? ORDER BY position",
                (upto,),
            )
        )
        rows = connection.cursor().execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
            "WHERE rowid<=? AND instr(?, substr(originator_id, 1, 1)) % ?=? ORDER BY rowid",
            (upto, HEX_DIGITS, parts, part),
        )
        return first_unsound(rows, links)
    except sqlite3.Error:
        return 0, 0
    finally:
        connection.close()


@dataclass
class ParallelLogCheck:
    """Worker processes checking the log; `sound()` waits for their verdict."""

    snapshot: LogSnapshot
    workers: list[subprocess.Popen[bytes]]

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
        for worker in self.workers:
            output, _ = worker.communicate()
            try:
                report = json.loads(output)
                checked += int(report["events"])
                verdict = verdict and worker.returncode == 0 and report["problem"] is None
            except (ValueError, KeyError, TypeError):
                verdict = False
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
    database, upto, part, parts = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    checked, problem = check_part(database, upto, part, parts)
    sys.stdout.write(json.dumps({"events": checked, "problem": problem}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
