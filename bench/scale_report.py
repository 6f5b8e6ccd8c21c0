"""The million-lifecycle run's report: bench/scale.json, bench/SCALE.md, bench/scale_rate.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Json = dict[str, Any]

TARGETS = {
    "ratio": 0.8,
    "lineage_ms": 1.0,
    "p99_ms": 50.0,
    "rebuild": 100_000,
    "verify": 90_000,
    "peak_mib": 1024,
}


def targets(results: Json) -> list[tuple[str, str, bool]]:
    sizes = results["sizes"]
    small, large = f"{sizes[0]:,}", f"{sizes[-1]:,}"
    rate, queries = results["writeRate"], results["queries"]
    rows = [
        (
            f"write rate at {large} >= {TARGETS['ratio']} x at {small}",
            f"{rate['ratio']['median']:.2f} x (per round {rate['ratio']['min']:.2f}-"
            f"{rate['ratio']['max']:.2f}; {rate['large']['median']:.0f} vs "
            f"{rate['small']['median']:.0f} lifecycles/s)",
            rate["ratio"]["median"] >= TARGETS["ratio"],
        ),
        (
            "lineage median < 1 ms",
            f"{queries['lineage']['median']:.3f} ms",
            queries["lineage"]["median"] < TARGETS["lineage_ms"],
        ),
    ]
    for name, summary in queries.items():
        if name != "lineage":
            rows.append(
                (
                    f"{name} p99 < 50 ms",
                    f"{summary['p99']:.1f} ms (median {summary['median']:.1f})",
                    summary["p99"] < TARGETS["p99_ms"],
                )
            )
    for name in ("rebuild", "verify"):
        run = results[name]
        rows.append(
            (
                f"{name} >= {TARGETS[name]:,} events/s",
                f"{run['eventsPerSecond']:,.0f} events/s ({run['events']:,} events in "
                f"{run['seconds']:.1f} s)",
                run["eventsPerSecond"] >= TARGETS[name],
            )
        )
        rows.append(
            (
                f"{name} peak memory < 1 GiB",
                f"{run['peakMiB']:.0f} MiB (largest process)",
                run["peakMiB"] < TARGETS["peak_mib"],
            )
        )
    return rows


def markdown(results: Json) -> str:
    sizes = results["sizes"]
    lines = [
        "# trainledger at scale",
        "",
        f"Command: `{results['command']}` (`make bench-scale` runs 1,000,000). "
        f"Measured {results['startedAt']} to {results['generatedAt']}, {results['cpus']} CPUs "
        "(shared). SQLite, synchronous=FULL. See bench/scale.py for what each figure is."
        + (
            f" The stores and the growth table are those of a run at {results['growthMeasuredAt']}"
            " (`--reuse`); everything else was measured again."
            if "growthMeasuredAt" in results
            else ""
        )
        + (
            " CPU probe before the rebuild (`bench.stats.cpu_probe`, the same Python job each"
            " time; a slower host takes longer): "
            + " / ".join(f"{ms:.1f}" for ms in results["cpuProbeMs"])
            + " ms."
            if results.get("cpuProbeMs")
            else ""
        ),
        "",
        "## Targets",
        "",
        "| target | result | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {r} | {'yes' if m else '**no**'} |" for t, r, m in targets(results)]
    lines += [
        "",
        "## Write rate against history size (one 2 s window each, while growing)",
        "",
        "| lifecycles | lifecycles/s | bulk load of the step (s) |",
        "| ---: | ---: | ---: |",
    ]
    lines += [
        f"| {g['lifecycles']:,} | {g['rate']:.0f} | {g['loadSeconds']:.1f} |"
        for g in results["growth"]
    ]
    lines += [
        "",
        f"## Queries at {sizes[-1]:,} lifecycles (ms, {300} calls each, interleaved)",
        "",
        "| query | median | p99 | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {k} | {v['median']:.3f} | {v['p99']:.3f} | {v['max']:.3f} |"
        for k, v in results["queries"].items()
    ]
    disk = results["disk"]
    lines += [
        "",
        "## Disk",
        "",
        f"{disk['events']:,} events: the log {disk['log'] / 2**20:,.0f} MiB "
        f"({disk['logBytesPerEvent']:.0f} bytes per event: events, chain links, reservations "
        f"and seals with their indexes), the views {disk['views'] / 2**20:,.0f} MiB "
        f"({disk['viewBytesPerEvent']:.0f} bytes per event).",
        "",
    ]
    return "\n".join(lines)


def plot(results: Json, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    growth = results["growth"]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([g["lifecycles"] for g in growth], [g["rate"] for g in growth], marker="o")
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("history (lifecycles, ~7 events each)")
    axes.set_ylabel("lifecycles/s (6 commands, synchronous=FULL)")
    axes.set_title("Write rate against history size (SQLite)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def write_scale(results: Json, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "SCALE.md").write_text(markdown(results))
    problem = plot(results, directory / "scale_rate.png")
    return [f"plot not written: {problem}"] if problem else []
