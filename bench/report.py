"""Writing what was measured: results.json, RESULTS.md and the throughput plot.

A run that measured only some figures (`--only`) keeps the others from the
existing results.json, so a figure whose code lands later is filled in by
re-running just that figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stats import Json

RESULTS_JSON = "results.json"
RESULTS_MD = "RESULTS.md"
PLOT_PNG = "write_throughput.png"


def merge(previous: Json | None, current: Json) -> Json:
    """`current` with the figures it did not measure taken from `previous`."""
    if not previous or previous.get("mode") != current["mode"]:
        return current
    measured = {f["name"] for f in current["figures"]}
    kept = [f for f in previous.get("figures", []) if f["name"] not in measured]
    merged = dict(current)
    merged["figures"] = sorted([*kept, *current["figures"]], key=lambda f: int(f.get("number", 99)))
    return merged


def load(path: Path) -> Json | None:
    try:
        document: Json = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def markdown(results: Json) -> str:
    machine = results["machine"]
    lines = [
        "# trainledger benchmark results",
        "",
        f"Command: `{results['command']}` ({results['mode']} mode). "
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, eventsourcing {machine['eventsourcing']}, "
        f"{machine['platform']}. Measured {results['generatedAt']}.",
        "",
        "Each row: median over repeated runs, with min and max "
        "(and p99 for latencies). See bench/README.md for what each figure means.",
        "",
        "## Targets",
        "",
        "| # | figure | target | result | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for figure in results["figures"]:
        for target in figure["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
            lines.append(
                f"| {figure.get('number', '')} | {figure['name']} | {target['text']} "
                f"| {target['detail']} | {met} |"
            )
        for reason in figure["unavailable"]:
            lines.append(
                f"| {figure.get('number', '')} | {figure['name']} | — "
                f"| not available yet: {reason} | n/a |"
            )
    lines += ["", "## Figures", ""]
    for figure in results["figures"]:
        lines += [f"### {figure.get('number', '')}. {figure['title']}", ""]
        if figure["rows"]:
            has_p99 = any("p99" in row for row in figure["rows"])
            header = "| measurement | unit | median | min | max |" + (" p99 |" if has_p99 else "")
            lines += [header, "| --- | --- | ---: | ---: | ---: |" + (" ---: |" if has_p99 else "")]
            for row in figure["rows"]:
                unit = row["unit"]
                cells = [
                    row["label"],
                    unit,
                    _number(row["median"], unit),
                    _number(row["min"], unit),
                    _number(row["max"], unit),
                ]
                if has_p99:
                    cells.append(_number(row["p99"], unit) if "p99" in row else "")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        for reason in figure["unavailable"]:
            lines.append(f"- not available yet: {reason}")
        for note in figure["notes"]:
            lines.append(f"- {note}")
        lines.append(f"- measured {figure.get('measuredAt', '?')} in {figure['seconds']} s")
        lines.append("")
    return "\n".join(lines)


def plot(results: Json, path: Path) -> str | None:
    """Write throughput against history size; returns why not, if it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for figure in results["figures"]:
        if figure["name"] not in ("write_path", "comparator"):
            continue
        probe = next((r for r in figure["rows"] if r["label"].startswith("disk probe")), None)
        fsync = f", fsync median {probe['median']:.2f} ms" if probe else ""
        for row in figure["rows"]:
            if row["unit"] != "lifecycles/s":
                continue
            name, _, size = row["label"].rpartition(" @ ")
            if name == "ledger":  # two sweeps, measured at different times
                name = f"ledger ({figure['name']} sweep{fsync})"
            point = (int(size.replace(",", "")), row["median"], row["min"], row["max"])
            series.setdefault(name, []).append(point)
    if not series:
        return "no write_path or comparator figure measured"
    fig, axes = plt.subplots(figsize=(8, 5))
    for name, points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        low = [p[1] - p[2] for p in points]
        high = [p[3] - p[1] for p in points]
        axes.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=name)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("history size (lifecycles already in the store)")
    axes.set_ylabel("lifecycles per second (6 commands each)")
    axes.set_title("Write throughput vs history size (median, min-max over rounds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write(results: Json, directory: Path) -> list[str]:
    """Merge into and write the three outputs; returns notes about the plot."""
    directory.mkdir(parents=True, exist_ok=True)
    merged = merge(load(directory / RESULTS_JSON), results)
    (directory / RESULTS_JSON).write_text(json.dumps(merged, indent=2) + "\n")
    (directory / RESULTS_MD).write_text(markdown(merged) + "\n")
    problem = plot(merged, directory / PLOT_PNG)
    return [] if problem is None else [f"plot not written: {problem}"]


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
