"""Child process of the projection crash tests: applies the log in small pages, saying so.

    python -m tests.projection_crash_driver URL catch-up|rebuild|rebuild-by-workers PAGE_SIZE

Prints one line per committed page (`applied N`), so the parent can SIGKILL
it while it is still working.
"""

from __future__ import annotations

import sys
from typing import cast

from trainledger.adapters.sqlite.log import SQLiteLogReader
from trainledger.adapters.store import open_ledger
from trainledger.projections.read_model import ProjectionReadModel


def main(url: str, mode: str, page_size: int) -> None:
    ledger = open_ledger(url)
    read_model = cast(ProjectionReadModel, ledger.read_model)

    def report(applied: int, total: int) -> None:
        print(f"applied {applied} of {total}", flush=True)

    if mode.startswith("rebuild"):
        read_model.REBUILD_PAGE = page_size
        if mode == "rebuild-by-workers":
            cast(SQLiteLogReader, read_model.log).WORKERS_FROM = 1
        read_model.rebuild(report)
    else:
        read_model.apply_log(page_size=page_size, progress=report)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
