"""`import-seed` of a 2,000-run seed workspace, and its no-op repeat, once.

    .venv/bin/python -m bench.seed_import [--runs 2000] [--rounds 3]

Writes the workspace of `bench.seed_workspace.write_large_workspace` into a
scratch directory, then per round imports it into a fresh SQLite store and
imports it again (which must record nothing), through the Python API and
through the CLI in a fresh process. Prints each figure's median seconds and
the repeat's share of the import; the benchmark issue's target is a repeat
in under 10% of the import. Not part of `make bench` (its runner is the
benchmark issue's); nothing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.seed_workspace import write_large_workspace


def _api(workspace: Path, store: Path) -> tuple[float, float, int]:
    from trainledger.adapters.seed_files import read_seed_workspace
    from trainledger.adapters.store import open_ledger
    from trainledger.service.seed_import import import_seed

    ledger = open_ledger(f"sqlite:///{store}")
    try:
        started = time.perf_counter()
        first = import_seed(ledger, read_seed_workspace(str(workspace)), imported_by="bench")
        middle = time.perf_counter()
        again = import_seed(ledger, read_seed_workspace(str(workspace)), imported_by="bench")
        ended = time.perf_counter()
    finally:
        ledger.close()
    assert again["nothingNew"]
    assert again["events"] == 0
    return middle - started, ended - middle, first["events"]


def cli_argv(store: Path) -> list[str]:
    """`trainledger --store STORE --json`, as a fresh process of this interpreter."""
    return [sys.executable, "-m", "trainledger.cli", "--store", f"sqlite:///{store}", "--json"]


def _cli(workspace: Path, store: Path) -> tuple[float, float]:
    argv = cli_argv(store)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        done = subprocess.run(
            [*argv, "import-seed", str(workspace)], capture_output=True, check=True
        )
        times.append(time.perf_counter() - started)
    assert json.loads(done.stdout)["nothingNew"]
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="trainledger-seed-bench-"))
    try:
        workspace = write_large_workspace(scratch / "workspace", args.runs)
        api: list[tuple[float, float]] = []
        cli: list[tuple[float, float]] = []
        events = 0
        for round_ in range(args.rounds):
            first, again, events = _api(workspace, scratch / f"api-{round_}.db")
            api.append((first, again))
            cli.append(_cli(workspace, scratch / f"cli-{round_}.db"))
        for name, figures in (("API", api), ("CLI", cli)):
            first = statistics.median(f for f, _ in figures)
            again = statistics.median(a for _, a in figures)
            print(
                f"{name}: import of {args.runs} runs ({events} events) {first:.2f} s, "
                f"no-op repeat {again:.3f} s ({again / first:.1%} of the import)"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
