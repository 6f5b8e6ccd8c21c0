"""Everything the CLI prints goes through here: JSON documents, text, errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import orjson

from trainledger.domain.views import iso


def dumps(document: Any, *, pretty: bool = False) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(document, option=option | orjson.OPT_NON_STR_KEYS).decode()


def emit(json_mode: bool, document: Any, text: Callable[[Any], Iterable[str]]) -> None:
    """Print a command's answer: the JSON document, or its text rendering."""
    if json_mode:
        click.echo(dumps(document, pretty=True))
    else:
        for line in text(document):
            click.echo(line)


def emit_error(json_mode: bool, code: str, message: str) -> None:
    """One line on stderr; with --json also the error document on stdout."""
    line = " ".join(message.split())
    click.echo(f"error: {line}", err=True)
    if json_mode:
        click.echo(dumps({"error": {"code": code, "message": line}}, pretty=True))


def note(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def progress(json_mode: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown only on a terminal and without --json.

    Yields a `report(done, total)` callback for long operations.
    """
    if json_mode or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        shown = 0

        def report(done: int, total: int) -> None:
            nonlocal shown
            bar.length = max(total, done, 1)
            bar.update(done - shown)
            shown = done

        yield report


# --- text renderings ---------------------------------------------------------


def _fields(document: dict[str, Any], keys: Iterable[str]) -> list[str]:
    width = max(len(k) for k in keys)
    lines = []
    for key in keys:
        value = document.get(key)
        if value is None or value in ([], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{key:<{width}}  {value}")
    return lines


RUN_KEYS = (
    "trainRunId",
    "experimentId",
    "status",
    "backend",
    "targetWorkerProfile",
    "targetModelFamily",
    "datasetFingerprint",
    "configFingerprint",
    "sampleCount",
    "createdAt",
    "startedAt",
    "completedAt",
    "failedAt",
    "failureReason",
    "host",
    "pid",
    "trainerLogPath",
    "checkpointIds",
)

CHECKPOINT_KEYS = (
    "checkpointId",
    "trainRunId",
    "targetModelFamily",
    "artifactPath",
    "artifactDigest",
    "metrics",
    "createdAt",
    "deployable",
    "currentEvalId",
)


def run_text(run: dict[str, Any]) -> list[str]:
    return _fields(run, RUN_KEYS)


def nothing_as_of(kind: str, identifier: str, as_of: datetime | None) -> str:
    """What an empty as-of answer says: nothing was recorded for that id by then."""
    return " ".join(f"no {kind} {identifier} as of {iso(as_of)}".split())


def or_nothing(
    text: Callable[[dict[str, Any]], list[str]],
    kind: str,
    identifier: str,
    as_of: datetime | None,
) -> Callable[[dict[str, Any]], list[str]]:
    """`text`, or for the empty answer of a moment before `identifier` existed, one line."""

    def render(document: dict[str, Any]) -> list[str]:
        return text(document) if document else [nothing_as_of(kind, identifier, as_of)]

    return render


def checkpoint_text(checkpoint: dict[str, Any]) -> list[str]:
    lines = _fields(checkpoint, CHECKPOINT_KEYS)
    for summary in checkpoint.get("evals", []):
        lines.append(
            f"eval {summary['evalId']}: {summary['verdict']} on {summary['benchmarkId']} "
            f"({summary['mode']}, {summary['baselineScore']} -> {summary['candidateScore']}, "
            f"delta {summary['delta']:+.6g})"
        )
    for change in checkpoint.get("deployabilityHistory", []):
        what = "marked deployable" if change["deployable"] else "revoked"
        why = f" on eval {change['evalId']}" if change.get("evalId") else ""
        reason = f": {change['reason']}" if change.get("reason") else ""
        lines.append(f"{change['timestamp']} {what} by {change['actor']}{why}{reason}")
    return lines


def experiment_text(created: dict[str, Any]) -> list[str]:
    spec = created["spec"]
    return [
        f"trainRunId          {created['trainRunId']}",
        f"experimentId        {created['experimentId']}",
        "status              pending",
        f"backend             {spec['backend']} on {spec['hardwareTier']}",
        f"targetModelFamily   {spec['targetModelFamily']} ({spec['targetWorkerProfile']})",
        f"datasetFingerprint  {spec['datasetFingerprint']}",
        f"configFingerprint   {spec['configFingerprint']}",
        f"codeHash            {spec['codeHash']}",
    ]


def history_text(history: dict[str, Any]) -> list[str]:
    lines = []
    for event in history["events"]:
        payload = ", ".join(
            f"{k}={v}" for k, v in event["payload"].items() if k != "spec" and v is not None
        )
        lines.append(
            f"#{event['position']:<6} v{event['version']:<3} {event['timestamp']}  "
            f"{event['type']:<20} {event['actor']}  {payload}"
        )
    return lines


def verify_text(report: dict[str, Any]) -> list[str]:
    verdict = "ok" if report["ok"] else "FAILED"
    lines = [
        f"integrity  {verdict}",
        f"events     {report['events']}",
        f"position   {report['position']}",
        f"digest     {report['digest']}",
    ]
    if report.get("digestVerifiedUpTo") is not None:
        lines.append(f"given digest matches the log up to position {report['digestVerifiedUpTo']}")
    return lines


def write_json_line(document: Any) -> None:
    sys.stdout.write(dumps(document) + "\n")


def import_text(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"imported {summary['imported']} events of {summary['aggregates']} aggregates "
        f"and {summary['reservations']} reservations"
    ]
    if summary["imported"]:
        lines.append(f"positions {summary['firstPosition']}..{summary['lastPosition']}")
    if summary["positionsRenumbered"]:
        lines.append("positions were renumbered (the source had gaps); the order is unchanged")
    return lines


def training_text(document: dict[str, Any]) -> list[str]:
    """A run after `train` or `run import-result`: what was decided, then the run."""
    run_id = document["trainRunId"]
    if document.get("alreadyRecorded"):
        headline = (
            f"run {run_id}: this result was already recorded (run {document['status']}); "
            "nothing new was recorded"
        )
    elif document["outcome"] == "completed":
        headline = f"run {run_id}: completed, checkpoint {document['checkpointId']} registered"
    elif document["outcome"] == "dry_run":
        headline = f"run {run_id}: completed as a dry run (no checkpoint)"
    else:
        headline = f"run {run_id}: failed"
    lines = [headline, *run_text(document)]
    checkpoint = document.get("checkpoint")
    if checkpoint:
        lines += ["", *checkpoint_text(checkpoint)]
    return lines


def reconcile_text(report: dict[str, Any]) -> list[str]:
    abandoned = report["abandoned"]
    if not abandoned:
        return [f"no running run is past its deadline (as of {report['checkedAt']})"]
    return [
        f"run {run['trainRunId']}: failed as abandoned (started {run['startedAt']}, "
        f"deadline {run['deadline']})"
        for run in abandoned
    ]


# --- queries: lists, stats, impact, lineage ------------------------------------


def _table(headers: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> list[str]:
    cells = [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return [line(headers), *(line(row) for row in cells)]


def _eval_brief(summary: dict[str, Any] | None) -> str | None:
    return None if summary is None else f"{summary['evalId']} ({summary['verdict']})"


def runs_text(document: dict[str, Any]) -> list[str]:
    runs = document["runs"]
    if not runs:
        return ["no runs"]
    return _table(
        ("trainRunId", "status", "family", "dataset", "created", "checkpoints"),
        (
            (
                r["trainRunId"],
                r["status"],
                r["targetModelFamily"],
                r["datasetFingerprint"],
                r["createdAt"],
                len(r["checkpointIds"]),
            )
            for r in runs
        ),
    )


def checkpoints_text(document: dict[str, Any]) -> list[str]:
    checkpoints = document["checkpoints"]
    if not checkpoints:
        return ["no checkpoints"]
    return _table(
        ("checkpointId", "trainRunId", "family", "deployable", "currentEval", "created"),
        (
            (
                c["checkpointId"],
                c["trainRunId"],
                c["targetModelFamily"],
                "yes" if c["deployable"] else "no",
                _eval_brief(c["currentEval"]),
                c["createdAt"],
            )
            for c in checkpoints
        ),
    )


def evals_text(document: dict[str, Any]) -> list[str]:
    evals = document["evals"]
    if not evals:
        return ["no evals"]
    return _table(
        ("evalId", "checkpointId", "benchmark", "verdict", "delta", "mode", "attached"),
        (
            (
                e["evalId"],
                e["checkpointId"],
                e["benchmarkId"],
                e["verdict"],
                f"{e['delta']:+.6g}",
                e["mode"],
                e["attachedAt"],
            )
            for e in evals
        ),
    )


def stats_text(stats: dict[str, Any]) -> list[str]:
    return _fields(stats, tuple(stats)) or ["no runs"]


def impact_text(impact: dict[str, Any]) -> list[str]:
    as_of = f" as of {impact['asOf']}" if impact.get("asOf") else ""
    lines = [
        f"dataset {impact['datasetFingerprint']}{as_of}: {impact['totalRuns']} run(s), "
        f"{impact['totalCheckpoints']} checkpoint(s), "
        f"{impact['deployableCheckpoints']} deployable"
    ]
    for run in impact["runs"]:
        lines.append(f"run {run['trainRunId']}  {run['status']}  {run['targetModelFamily']}")
        for c in run["checkpoints"]:
            state = "DEPLOYABLE" if c["deployable"] else "not deployable"
            current = _eval_brief(c["currentEval"]) or "no eval"
            lines.append(f"  checkpoint {c['checkpointId']}  {state}  current eval {current}")
    return lines


def _eval_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['evalId']}: {summary['verdict']} on {summary['benchmarkId']} "
        f"({summary['mode']}, {summary['baselineScore']} -> {summary['candidateScore']}, "
        f"delta {summary['delta']:+.6g})"
    )


def _decision_line(change: dict[str, Any]) -> str:
    what = "marked deployable" if change["deployable"] else "revoked"
    basis = f" on eval {change['evalId']}" if change.get("evalId") else ""
    reason = f": {change['reason']}" if change.get("reason") else ""
    return f"{change['timestamp']} {what} by {change['actor']}{basis}{reason}"


Branches = list[tuple[str, list[Any]]]
"""A text tree's children: each a line and its own children."""


def _tree(label: str, children: Branches, prefix: str = "") -> list[str]:
    lines = [label] if not prefix else []
    for i, (child, grandchildren) in enumerate(children):
        last = i == len(children) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{child}")
        lines += _tree(child, grandchildren, prefix + ("    " if last else "│   "))
    return lines


def lineage_text(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a tree: checkpoint, its run and dataset, evals, decisions."""
    checkpoint, run = lineage["checkpoint"], lineage["run"]
    state = "DEPLOYABLE" if lineage["deployable"] else "not deployable"
    as_of = f" (as of {lineage['asOf']})" if lineage.get("asOf") else ""
    artifact: Branches = [("digest " + (checkpoint["artifactDigest"] or "none recorded"), [])]
    children: Branches = [
        (f"artifact {checkpoint['artifactPath']}", artifact),
    ]
    if run is not None:
        spec, dataset = run["spec"], lineage["dataset"]
        samples = "" if dataset["sampleCount"] is None else f"{dataset['sampleCount']} samples, "
        times = ", ".join(
            f"{name} {run[key]}"
            for name, key in (
                ("created", "createdAt"),
                ("started", "startedAt"),
                ("completed", "completedAt"),
                ("failed", "failedAt"),
            )
            if run[key]
        )
        run_children: Branches = [
            (f"experiment {run['experimentId']}", []),
            (
                f"dataset {dataset['datasetFingerprint']} "
                f"({samples}export {dataset['datasetExportId']})",
                [],
            ),
            (
                f"config {spec['configFingerprint']}, code {spec['codeHash']}, "
                f"backend {spec['backend']} on {spec['hardwareTier']}",
                [],
            ),
            (times, []),
        ]
        if run["failureReason"]:
            run_children.append((f"failure: {run['failureReason']}", []))
        children.append((f"run {run['trainRunId']}  {run['status']}", run_children))
    current = lineage["currentEval"]["evalId"] if lineage["currentEval"] else None
    evals: Branches = [
        (
            f"{_eval_line(e)} by {e['actor']} at {e['attachedAt']}"
            + ("  [current]" if e["evalId"] == current else ""),
            [],
        )
        for e in lineage["evals"]
    ]
    children.append(("evals" if evals else "evals: none", evals))
    decisions: Branches = [(_decision_line(c), []) for c in lineage["deployabilityHistory"]]
    children.append(("deployability" if decisions else "deployability: never decided", decisions))
    label = (
        f"checkpoint {checkpoint['checkpointId']} ({checkpoint['targetModelFamily']})  "
        f"{state}{as_of}"
    )
    return _tree(label, children)


def _short_digest(digest: str | None) -> str:
    if digest is None:
        return "none"
    algorithm, _, value = digest.rpartition(":")
    return f"{algorithm}:{value[:16]}" if algorithm else value[:16]


def _lineage_nodes(
    lineage: dict[str, Any],
) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str, str, bool]]]:
    """Nodes (id, label lines) and edges (from, to, label, dashed) of a lineage picture."""
    checkpoint, run = lineage["checkpoint"], lineage["run"]
    nodes: list[tuple[str, list[str]]] = []
    edges: list[tuple[str, str, str, bool]] = []
    if run is not None:
        dataset = lineage["dataset"]
        samples = [] if dataset["sampleCount"] is None else [f"{dataset['sampleCount']} samples"]
        nodes.append(("dataset", ["dataset", dataset["datasetFingerprint"], *samples]))
        nodes.append(
            (
                "run",
                [
                    f"run {run['trainRunId']}",
                    run["status"],
                    f"config {run['configFingerprint']}",
                    f"backend {run['backend']}",
                ],
            )
        )
        edges += [("dataset", "run", "trained", False), ("run", "checkpoint", "produced", False)]
    nodes.append(
        (
            "checkpoint",
            [
                f"checkpoint {checkpoint['checkpointId']}",
                checkpoint["targetModelFamily"],
                f"digest {_short_digest(checkpoint['artifactDigest'])}",
                "DEPLOYABLE" if lineage["deployable"] else "not deployable",
            ],
        )
    )
    current = lineage["currentEval"]["evalId"] if lineage["currentEval"] else None
    eval_nodes = {}
    for i, summary in enumerate(lineage["evals"]):
        node = f"eval{i}"
        eval_nodes[summary["evalId"]] = node
        marker = ["current"] if summary["evalId"] == current else []
        nodes.append(
            (
                node,
                [
                    f"eval {summary['evalId']}",
                    f"{summary['verdict']} on {summary['benchmarkId']}",
                    f"delta {summary['delta']:+.6g}",
                    *marker,
                ],
            )
        )
        edges.append(("checkpoint", node, "evaluated", False))
    for i, change in enumerate(lineage["deployabilityHistory"]):
        node = f"decision{i}"
        what = "marked deployable" if change["deployable"] else "revoked"
        reason = [change["reason"]] if change.get("reason") else []
        nodes.append((node, [what, f"by {change['actor']}", change["timestamp"], *reason]))
        edges.append(("checkpoint", node, "decision", False))
        if change.get("evalId") in eval_nodes:
            edges.append((eval_nodes[change["evalId"]], node, "on", True))
    return nodes, edges


DOT_NEWLINE = "\\n"


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    # a line break in a free-text field (a reason) stays inside its label
    return "\\n".join(escaped.splitlines()) if escaped else escaped


def empty_lineage_dot(note: str) -> list[str]:
    """An empty digraph (the answer as of a moment before the checkpoint), titled `note`."""
    return ["digraph lineage {", f'  label="{_dot_text(note)}";', "}"]


def lineage_dot(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a Graphviz digraph (`dot -Tsvg`)."""
    nodes, edges = _lineage_nodes(lineage)
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node, label_lines in nodes:
        text = DOT_NEWLINE.join(_dot_text(t) for t in label_lines)
        lines.append(f'  {node} [label="{text}"];')
    for source, target, label, dashed in edges:
        style = ", style=dashed" if dashed else ""
        lines.append(f'  {source} -> {target} [label="{_dot_text(label)}"{style}];')
    lines.append("}")
    return lines


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes: `#` first, so the codes themselves are not escaped.
    for character, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(character, code)
    return "<br/>".join(text.splitlines()) if text else text


def empty_lineage_mermaid(note: str) -> list[str]:
    """An empty flowchart (the answer as of a moment before the checkpoint), `note` a comment."""
    return ["flowchart LR", f"    %% {' '.join(note.split())}"]


def lineage_mermaid(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a Mermaid flowchart."""
    nodes, edges = _lineage_nodes(lineage)
    lines = ["flowchart LR"]
    for node, label_lines in nodes:
        text = "<br/>".join(_mermaid_text(t) for t in label_lines)
        lines.append(f'    {node}["{text}"]')
    for source, target, label, dashed in edges:
        arrow = "-.->" if dashed else "-->"
        lines.append(f'    {source} {arrow}|"{_mermaid_text(label)}"| {target}')
    return lines


def rebuild_text(report: dict[str, Any]) -> list[str]:
    rate = report["eventsPerSecond"]
    speed = f" ({rate} events/s)" if rate is not None else ""
    return [
        f"rebuilt the views from {report['eventsApplied']} events in "
        f"{report['seconds']} s{speed}; they are at position {report['position']}"
    ]
