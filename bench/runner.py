"""`python -m bench`: run the figures, write results.json, RESULTS.md and the plot."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import processes, reads, seed_figure, service, shadow, writes
from bench.context import BenchContext, Sizes
from bench.report import write
from bench.stats import Figure, Json

FigureFunction = Callable[[BenchContext], Figure]

FIGURES: dict[str, tuple[int, FigureFunction]] = {
    "write_path": (1, writes.write_path),
    "comparator": (2, writes.comparator),
    "floor": (3, writes.floor),
    "rebuild": (4, reads.rebuild),
    "queries": (5, reads.queries),
    "cli": (5, reads.cli),
    "verify": (6, reads.verify),
    "trainer": (7, processes.trainer),
    "concurrent": (8, processes.concurrent),
    "shadow": (9, shadow.shadow),
    "service": (10, service.service),
    "seed_import": (11, seed_figure.seed_import),
}

BENCH_DIR = Path(__file__).resolve().parent


def store_sizes(name: str, sizes: Sizes) -> tuple[int, ...]:
    """History sizes of bulk-loaded stores a figure uses (built once, ascending)."""
    return {
        "write_path": sizes.write_path,
        "comparator": sizes.comparator,
        "floor": (sizes.floor,),
        "rebuild": (sizes.large,),
        "queries": (sizes.large,),
        "cli": (sizes.large,),
        "verify": (sizes.large,),
        "concurrent": (sizes.concurrent_history,),
    }.get(name, ())


def machine() -> Json:
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": version("eventsourcing"),
        "pydantic": version("pydantic"),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure trainledger against its targets and the registry it replaces.",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="FIGURE",
        help=f"run only this figure (repeatable, or comma-separated): {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few repeats, for smoke runs"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write results (default: bench/, or a temporary directory with --quick)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory with the stores"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    args.figures = [n for n in FIGURES if n in names] if names else list(FIGURES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    out: Path = args.out or (
        Path(tempfile.gettempdir()) / "trainledger-bench-quick" if args.quick else BENCH_DIR
    )
    scratch = Path(tempfile.mkdtemp(prefix="trainledger-bench-"))
    ctx = BenchContext(sizes=sizes, quick=args.quick, scratch=scratch)
    figures: list[Json] = []
    failed = False
    try:
        ctx.shelf.prepare(size for name in args.figures for size in store_sizes(name, sizes))
        for name in args.figures:
            number, function = FIGURES[name]
            ctx.log(f"figure {number} {name}: starting")
            start = time.perf_counter()
            try:
                figure = function(ctx)
            except Exception:
                failed = True
                figure = Figure(name, name)
                figure.notes.append("failed: " + traceback.format_exc().strip().splitlines()[-1])
                traceback.print_exc()
            figure.seconds = time.perf_counter() - start
            document = figure.to_json()
            document["number"] = number
            document["measuredAt"] = datetime.now(UTC).isoformat(timespec="seconds")
            figures.append(document)
            for target in figure.targets:
                verdict = {True: "met", False: "MISSED", None: "n/a"}[target.met]
                ctx.log(f"  target {target.text}: {target.detail} ({verdict})")
            for reason in figure.unavailable:
                ctx.log(f"  not available yet: {reason}")
            ctx.log(f"figure {number} {name}: done in {figure.seconds:.1f} s")
    finally:
        if args.keep:
            ctx.log(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    command = "python -m bench" + (" --quick" if args.quick else "")
    if len(args.figures) < len(FIGURES):
        command += " --only " + ",".join(args.figures)
    results: Json = {
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "bulkLoad": [
            {"lifecycles": count, "seconds": round(seconds, 2)}
            for count, seconds in ctx.shelf.load_rates
        ],
        "figures": figures,
    }
    for note in write(results, out):
        ctx.log(note)
    ctx.log(f"results written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
