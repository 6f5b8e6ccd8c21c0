"""Text renderings of the CLI's answers (without --json), one function per document.

The lineage pictures are in `pictures.py`; printing is `output.emit`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from trainledger.cli.pictures import assignments, compact, decision_line, eval_line, nothing_as_of


def _fields(document: dict[str, Any], keys: Iterable[str]) -> list[str]:
    width = max(len(k) for k in keys)
    lines = []
    for key in keys:
        value = document.get(key)
        if value is None or value in ([], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(compact(v) for v in value)
        elif isinstance(value, dict):
            value = assignments(value)
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
    lines += [f"eval {eval_line(summary)}" for summary in checkpoint.get("evals", [])]
    lines += [decision_line(change) for change in checkpoint.get("deployabilityHistory", [])]
    return lines


def experiment_text(created: dict[str, Any]) -> list[str]:
    spec = created["spec"]
    base_model = [f"baseModel           {spec['baseModel']}"] if spec.get("baseModel") else []
    return [
        f"trainRunId          {created['trainRunId']}",
        f"experimentId        {created['experimentId']}",
        "status              pending",
        f"backend             {spec['backend']} on {spec['hardwareTier']}",
        f"targetModelFamily   {spec['targetModelFamily']} ({spec['targetWorkerProfile']})",
        *base_model,
        f"datasetFingerprint  {spec['datasetFingerprint']}",
        f"configFingerprint   {spec['configFingerprint']}",
        f"codeHash            {spec['codeHash']}",
    ]


def history_text(history: dict[str, Any]) -> list[str]:
    lines = []
    for event in history["events"]:
        payload = assignments({k: v for k, v in event["payload"].items() if k != "spec"})
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


def posted_text(summary: dict[str, Any]) -> list[str]:
    """`export --format openlineage --post URL`: how many events the endpoint accepted."""
    count = summary["posted"]
    return [f"posted {count} OpenLineage event{'' if count == 1 else 's'} to {summary['endpoint']}"]


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


def table(headers: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> list[str]:
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
    return table(
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
    return table(
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
    return table(
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


def rebuild_text(report: dict[str, Any]) -> list[str]:
    rate = report["eventsPerSecond"]
    speed = f" ({rate} events/s)" if rate is not None else ""
    return [
        f"rebuilt the views from {report['eventsApplied']} events in "
        f"{report['seconds']} s{speed}; they are at position {report['position']}"
    ]
