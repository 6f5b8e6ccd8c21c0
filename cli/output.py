"""Everything the CLI prints goes through here: JSON documents, text, errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson


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
