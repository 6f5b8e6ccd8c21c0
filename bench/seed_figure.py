"""Figure 11: `import-seed` of a 2,000-run seed workspace, and its no-op repeat.

The workspace is bench/seed_workspace.py's (written as the seed wrote its
registries); each round imports it into a fresh SQLite store and imports it
again, which must record nothing (bench/seed_import.py's measurement: the
Python API, then the CLI in fresh processes).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.context import BenchContext
from bench.seed_import import _api, _cli, cli_argv
from bench.seed_workspace import write_large_workspace
from bench.stats import Figure, Summary, Target

REPEAT_SHARE_TARGET = 0.10


def seed_import(ctx: BenchContext) -> Figure:
    """11. Seed import: records per second, and the no-op repeat's share of the import."""
    runs = 200 if ctx.quick else 2_000
    figure = Figure("seed_import", f"Seed import: a {runs:,}-run seed workspace (SQLite)")
    directory = ctx.workdir("seed")
    workspace = write_large_workspace(directory / "workspace", runs)
    rounds = max(2, ctx.sizes.rounds - 2)
    first: dict[str, list[float]] = {"API": [], "CLI": []}
    again: dict[str, list[float]] = {"API": [], "CLI": []}
    startup: list[float] = []
    events = 0
    for r in range(rounds):
        seconds, repeat, events = _api(workspace, directory / f"api-{r}.db")
        first["API"].append(seconds)
        again["API"].append(repeat)
        seconds, repeat = _cli(workspace, directory / f"cli-{r}.db")
        first["CLI"].append(seconds)
        again["CLI"].append(repeat)
        startup.append(_cli_stats(directory / f"cli-{r}.db"))
        ctx.log(f"round {r + 1}: API {first['API'][-1]:.2f} s, CLI {first['CLI'][-1]:.2f} s")
    for how in ("API", "CLI"):
        figure.add(f"import ({how})", Summary.of(first[how], "s"))
        figure.add(f"no-op repeat ({how})", Summary.of(again[how], "s"))
        figure.add(f"runs imported per second ({how})", Summary.of(
            [runs / s for s in first[how]], "runs/s"))  # fmt: skip
        figure.add(f"events recorded per second ({how})", Summary.of(
            [events / s for s in first[how]], "events/s"))  # fmt: skip
        share = figure.add(
            f"repeat / import ({how}), per round",
            Summary.of([a / f for a, f in zip(again[how], first[how], strict=True)], "x"),
        )
        figure.targets.append(
            Target(
                f"repeat < {REPEAT_SHARE_TARGET:.0%} of the import ({how})",
                share.median < REPEAT_SHARE_TARGET,
                f"{share.median:.1%} ({again[how][0]:.3f} s of {first[how][0]:.2f} s in round 1)",
            )
        )
    figure.add("CLI start-up: `stats` on the imported store", Summary.of(startup, "ms"))
    figure.notes.append(
        f"{runs:,} runs with their checkpoints, evals, promotions and shadow records "
        f"({events:,} events); each round a fresh store; the CLI rows include start-up"
    )
    figure.notes.append(
        "CLI start-up: a fresh process opening the same store and answering `stats` from "
        "its views (caught up first), once a round: what any CLI command costs before its work"
    )
    return figure


def _cli_stats(store: Path) -> float:
    """Milliseconds of `trainledger --json stats` on a store, in a fresh process.

    Run twice, the second timed: the first catches the views up with the import.
    """
    argv = cli_argv(store)
    subprocess.run([*argv, "stats"], capture_output=True, check=True)
    started = time.perf_counter()
    subprocess.run([*argv, "stats"], capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000
