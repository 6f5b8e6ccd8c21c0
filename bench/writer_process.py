"""One writer of the concurrent-writers figure: `python -m bench.writer_process URL FIRST_N`.

Opens the ledger, runs one untimed lifecycle, prints `ready`, waits for a line
`go SECONDS` on stdin, then runs lifecycles until that many seconds have
passed and prints one JSON line: lifecycles finished inside the window and
every command's latency in seconds.
"""

from __future__ import annotations

import json
import sys
import time

from bench.workload import run_lifecycle
from trainledger.adapters.store import open_ledger


def main() -> None:
    url, first = sys.argv[1], int(sys.argv[2])
    ledger = open_ledger(url)
    n = first
    run_lifecycle(ledger, n)
    n += 1
    print("ready", flush=True)
    command = sys.stdin.readline().split()
    seconds = float(command[1])
    latencies: list[float] = []
    finished = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        run_lifecycle(ledger, n, latencies.append)
        n += 1
        if time.perf_counter() <= deadline:
            finished += 1
    ledger.close()
    print(json.dumps({"lifecycles": finished, "seconds": seconds, "latencies": latencies}))


if __name__ == "__main__":
    main()
