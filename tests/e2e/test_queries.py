"""The query verbs through real processes on a SQLite file.

One history is written once for the module (through the Python API, which is
faster); every verb then reads it through the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.projection_support import ACTOR, DATASETS, OTHER_FAMILY, create_run
from tests.support import (
    READER_FAMILY,
    Cli,
    eval_summary,
    experiment_args,
    keyboard_interrupts,
    write_artifact,
)
from trainledger.adapters.store import open_ledger

STATS_FIELDS = {
    "totalRuns",
    "completedRuns",
    "failedRuns",
    "pendingRuns",
    "runningRuns",
    "totalCheckpoints",
    "deployableCheckpoints",
    "totalEvals",
    "passingEvals",
    "failingEvals",
    "promotableCheckpoints",
    "routedProfiles",
}


@dataclass(frozen=True)
class History:
    cli: Cli
    run: str  # completed, produced `checkpoint`
    checkpoint: str  # marked deployable on eval-pass, then revoked by eval-fail
    other_checkpoint: str  # of `run` too, never evaluated
    pending_run: str
    failed_run: str
    marked_at: str  # a moment after the mark, before the revocation
    running_at: str  # a moment when `run` was running
    first_event_at: datetime
    events: int


def moment() -> str:
    time.sleep(0.002)
    stamp = datetime.now().astimezone().isoformat()
    time.sleep(0.002)
    return stamp


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    directory = tmp_path_factory.mktemp("queries")
    url = f"sqlite:///{directory / 'ledger.db'}"
    ledger = open_ledger(url)
    run = create_run(ledger, READER_FAMILY, DATASETS[0])
    ledger.start_run(run, actor=ACTOR, host="gpu-7", pid=4242)
    checkpoint = ledger.register_checkpoint(
        run, family=READER_FAMILY, artifact_path=write_artifact(directory, "adapter"), actor=ACTOR
    )["checkpointId"]
    other = ledger.register_checkpoint(
        run, family=READER_FAMILY, artifact_path=write_artifact(directory, "adapter-2"), actor=ACTOR
    )["checkpointId"]
    running_at = moment()
    ledger.complete_run(run, actor=ACTOR)
    ledger.attach_eval(
        checkpoint, eval_summary(checkpoint, "eval-pass"), mark_deployable=True, actor="alice"
    )
    marked_at = moment()
    failing = eval_summary(checkpoint, "eval-fail", verdict="fail", candidateScore=0.25)
    ledger.attach_eval(checkpoint, failing, actor="bob")
    pending = create_run(ledger, OTHER_FAMILY, DATASETS[1])
    failed = create_run(ledger, READER_FAMILY, DATASETS[0])
    ledger.fail_run(failed, "never started", actor=ACTOR)
    first = ledger.events_after(0, 1)[0]["timestamp"]
    events = ledger.recorder.max_notification_id() or 0
    ledger.close()
    return History(
        Cli(url, cwd=directory),
        run,
        checkpoint,
        other,
        pending,
        failed,
        marked_at,
        running_at,
        datetime.fromisoformat(first),
        events,
    )


def refused(cli: Cli, *args: str, match: str) -> None:
    result = cli(*args, json_mode=True)
    assert result.code == 1, f"{args}: exit {result.code}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert re.search(match, result.json["error"]["message"]), result.json


def test_lineage_shows_the_whole_story_of_a_checkpoint(history: History) -> None:
    lineage = history.cli.ok("lineage", history.checkpoint)
    run, checkpoint = lineage["run"], lineage["checkpoint"]
    assert run["trainRunId"] == lineage["trainRunId"] == history.run
    assert run["status"] == "completed"
    assert run["spec"]["datasetFingerprint"] == lineage["datasetFingerprint"] == DATASETS[0]
    assert lineage["dataset"]["sampleCount"] == 12
    assert checkpoint["checkpointId"] == history.checkpoint
    assert "artifactDigest" in checkpoint
    assert lineage["currentEval"]["evalId"] == "eval-fail"
    assert [(e["evalId"], e["actor"]) for e in lineage["evals"]] == [
        ("eval-pass", "alice"),
        ("eval-fail", "bob"),
    ]
    assert lineage["deployable"] is False
    decisions = lineage["deployabilityHistory"]
    assert [(d["deployable"], d["actor"], d["evalId"]) for d in decisions] == [
        (True, "alice", "eval-pass"),
        (False, "bob", "eval-fail"),
    ]
    assert decisions[1]["reason"] == "eval eval-fail failed"
    assert history.cli.ok("lineage", history.checkpoint, "--format", "json") == lineage

    text = history.cli("lineage", history.checkpoint)
    assert text.code == 0
    assert text.stdout.startswith(f"checkpoint {history.checkpoint}")
    for expected in (history.run, DATASETS[0], "eval-pass", "[current]", "revoked by bob"):
        assert expected in text.stdout


def test_lineage_as_of_shows_the_checkpoint_while_it_was_deployable(history: History) -> None:
    lineage = history.cli.ok("lineage", history.checkpoint, "--as-of", history.marked_at)
    assert lineage["deployable"] is True
    assert lineage["currentEval"]["evalId"] == "eval-pass"
    assert [d["deployable"] for d in lineage["deployabilityHistory"]] == [True]
    shown = history.cli.ok("checkpoint", "show", history.checkpoint, "--as-of", history.marked_at)
    assert shown == lineage["checkpoint"]
    running = history.cli.ok("run", "show", history.run, "--as-of", history.running_at)
    assert running["status"] == "running"
    assert running["completedAt"] is None
    assert running["host"] == "gpu-7"


def test_lineage_dot_renders_with_graphviz(history: History) -> None:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz `dot` is not installed: cannot check that the picture renders")
    picture = history.cli("lineage", history.checkpoint, "--format", "dot")
    assert picture.code == 0
    assert picture.stdout.startswith("digraph lineage {")
    rendered = subprocess.run(
        [dot, "-Tsvg"], input=picture.stdout, capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "<svg" in rendered.stdout
    for node in ("dataset", "run", "checkpoint", "eval1", "decision1"):
        assert f"<title>{node}</title>" in rendered.stdout


MERMAID_NODE = re.compile(r'^    (\w+)\["([^"]*)"\]$')
MERMAID_EDGE = re.compile(r'^    (\w+) (-->|-\.->)\|"([^"]*)"\| (\w+)$')


def test_lineage_mermaid_is_a_flowchart_of_declared_nodes(history: History) -> None:
    picture = history.cli("lineage", history.checkpoint, "--format", "mermaid")
    assert picture.code == 0
    lines = picture.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    nodes: dict[str, str] = {}
    edges = []
    for line in lines[1:]:
        node, edge = MERMAID_NODE.match(line), MERMAID_EDGE.match(line)
        assert node or edge, f"not a node or an edge: {line!r}"
        if node:
            nodes[node[1]] = node[2]
        elif edge:
            edges.append((edge[1], edge[4]))
    assert all(a in nodes and b in nodes for a, b in edges)
    assert {"dataset", "run", "checkpoint"} <= set(nodes)
    assert sum(label.startswith("eval ") for label in nodes.values()) == 2


def test_impact_of_a_dataset(history: History) -> None:
    impact = history.cli.ok("impact", "--dataset", DATASETS[0])
    assert [r["trainRunId"] for r in impact["runs"]] == [history.failed_run, history.run]
    produced = {c["checkpointId"] for c in impact["runs"][1]["checkpoints"]}
    assert produced == {history.checkpoint, history.other_checkpoint}
    assert impact["deployableCheckpointIds"] == []
    before = history.cli.ok("impact", "--dataset", DATASETS[0], "--as-of", history.marked_at)
    assert before["deployableCheckpointIds"] == [history.checkpoint]
    text = history.cli("impact", "--dataset", DATASETS[0])
    assert text.code == 0
    assert "2 run(s), 2 checkpoint(s), 0 deployable" in text.stdout
    assert history.cli.ok("impact", "--dataset", "dddddddddddddddd")["runs"] == []
    refused(history.cli, "impact", "--dataset", "nope", match="16 hex")


def test_lists_newest_first_with_filters(history: History) -> None:
    cli = history.cli
    runs = cli.ok("run", "list")["runs"]
    assert [r["trainRunId"] for r in runs] == [history.failed_run, history.pending_run, history.run]
    assert cli.ok("run", "list")["runs"][2] == cli.ok("run", "show", history.run)
    assert [r["trainRunId"] for r in cli.ok("run", "list", "--status", "pending")["runs"]] == [
        history.pending_run
    ]
    by_family = cli.ok("run", "list", "--family", OTHER_FAMILY)["runs"]
    assert [r["trainRunId"] for r in by_family] == [history.pending_run]
    by_dataset = cli.ok("run", "list", "--dataset", DATASETS[0], "--limit", "1")["runs"]
    assert [r["trainRunId"] for r in by_dataset] == [history.failed_run]

    checkpoints = cli.ok("checkpoint", "list", "--run", history.run)["checkpoints"]
    assert [c["checkpointId"] for c in checkpoints] == [
        history.other_checkpoint,
        history.checkpoint,
    ]
    assert cli.ok("checkpoint", "list", "--deployable")["checkpoints"] == []
    not_deployable = cli.ok("checkpoint", "list", "--not-deployable")["checkpoints"]
    assert len(not_deployable) == 2
    then = cli.ok("checkpoint", "list", "--deployable", "--as-of", history.marked_at)
    assert [c["checkpointId"] for c in then["checkpoints"]] == [history.checkpoint]

    evals = cli.ok("eval", "list")["evals"]
    assert [e["evalId"] for e in evals] == ["eval-fail", "eval-pass"]
    assert evals[0]["actor"] == "bob"
    assert evals[0]["checkpointId"] == history.checkpoint
    failing = cli.ok("eval", "list", "--verdict", "fail", "--checkpoint", history.checkpoint)
    assert [e["evalId"] for e in failing["evals"]] == ["eval-fail"]
    assert cli.ok("eval", "list", "--benchmark", "other")["evals"] == []
    assert len(cli.ok("eval", "list", "--family", READER_FAMILY)["evals"]) == 2

    table = cli("run", "list")
    assert table.code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["trainRunId", "status", "family"]
    assert cli("eval", "list", "--verdict", "compare_only").stdout.strip() == "no evals"
    # an enumerated option outside its choices is a usage error (issue 15, item 19)
    for args in (("run", "list", "--status", "finished"), ("eval", "list", "--verdict", "meh")):
        result = cli(*args, json_mode=True)
        assert result.code == 2, result.stderr
        assert result.json["error"]["code"] == "usage"
        assert f"{args[-1]!r} is not one of" in result.json["error"]["message"]


def test_stats_has_exactly_its_twelve_fields(history: History) -> None:
    stats = history.cli.ok("stats")
    assert set(stats) == STATS_FIELDS
    assert stats == {
        "totalRuns": 3,
        "completedRuns": 1,
        "failedRuns": 1,
        "pendingRuns": 1,
        "runningRuns": 0,
        "totalCheckpoints": 2,
        "deployableCheckpoints": 0,
        "totalEvals": 2,
        "passingEvals": 1,
        "failingEvals": 1,
        "promotableCheckpoints": 0,
        "routedProfiles": 0,
    }
    then = history.cli.ok("stats", "--as-of", history.marked_at)
    assert (then["deployableCheckpoints"], then["totalEvals"], then["totalRuns"]) == (1, 1, 1)


def test_before_the_first_event_there_is_nothing(history: History) -> None:
    before = (history.first_event_at - timedelta(seconds=1)).isoformat()
    assert history.cli.ok("run", "list", "--as-of", before) == {"runs": []}
    assert history.cli.ok("checkpoint", "list", "--as-of", before) == {"checkpoints": []}
    assert set(history.cli.ok("stats", "--as-of", before).values()) == {0}
    # an entity that did not exist yet: an empty answer, not an error (issue 4)
    assert history.cli.ok("run", "show", history.run, "--as-of", before) == {}
    assert history.cli.ok("checkpoint", "show", history.checkpoint, "--as-of", before) == {}
    assert history.cli.ok("lineage", history.checkpoint, "--as-of", before) == {}
    assert (
        history.cli.ok("lineage", history.checkpoint, "--as-of", before, "--format", "json") == {}
    )
    as_of = (history.first_event_at - timedelta(seconds=1)).astimezone(UTC)
    stamp = as_of.isoformat().replace("+00:00", "Z")
    for args, kind, identifier in (
        (("run", "show", history.run), "run", history.run),
        (("checkpoint", "show", history.checkpoint), "checkpoint", history.checkpoint),
        (("lineage", history.checkpoint), "checkpoint", history.checkpoint),
    ):
        text = history.cli(*args, "--as-of", before)
        assert (text.code, text.stderr) == (0, "")
        assert text.stdout == f"no {kind} {identifier} as of {stamp}\n"


def test_lineage_pictures_before_the_checkpoint_are_empty_graphs(history: History) -> None:
    before = (history.first_event_at - timedelta(seconds=1)).isoformat()
    mermaid = history.cli("lineage", history.checkpoint, "--as-of", before, "--format", "mermaid")
    assert mermaid.code == 0
    assert mermaid.stdout.splitlines()[0] == "flowchart LR"
    assert all(line.startswith("    %% ") for line in mermaid.stdout.splitlines()[1:])
    picture = history.cli("lineage", history.checkpoint, "--as-of", before, "--format", "dot")
    assert picture.code == 0
    assert picture.stdout.startswith("digraph lineage {")
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz `dot` is not installed: cannot check that the picture renders")
    rendered = subprocess.run(
        [dot, "-Tsvg"], input=picture.stdout, capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "<svg" in rendered.stdout
    assert '<g id="node' not in rendered.stdout


def test_without_as_of_an_unknown_id_is_still_not_found(history: History) -> None:
    unknown = str(uuid4())
    refused(history.cli, "run", "show", unknown, match="not found")
    refused(history.cli, "checkpoint", "show", unknown, match="not found")
    refused(history.cli, "lineage", unknown, match="not found")


def test_bad_ids_and_times_are_one_line_errors(history: History) -> None:
    refused(history.cli, "lineage", str(uuid4()), match="not found")
    refused(history.cli, "lineage", "not-an-id", match="not found")
    refused(history.cli, "checkpoint", "show", history.run, match="not found")
    refused(history.cli, "stats", "--as-of", "2025-01-01T00:00:00", match="time zone")
    refused(history.cli, "run", "list", "--as-of", "yesterday", match="ISO-8601")


def test_events_are_jsonl_from_a_position(history: History) -> None:
    for json_mode in (False, True):
        result = history.cli("events", "--after", "2", "--limit", "3", json_mode=json_mode)
        assert result.code == 0
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["position"] for e in lines] == [3, 4, 5]
        assert all(
            {"aggregateId", "type", "timestamp", "actor", "payload"} <= set(e) for e in lines
        )
    everything = history.cli("events").stdout.splitlines()
    assert len(everything) == history.events
    assert json.loads(everything[0])["aggregateId"] == history.run


def test_events_follow_waits_for_new_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    cli = Cli(url, cwd=tmp_path)
    first = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    with keyboard_interrupts():  # the follower starts interruptible
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainledger.cli",
                "--store",
                url,
                "events",
                "--follow",
                "--interval",
                "0.05",
            ],
            cwd=tmp_path,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["aggregateId"] == first
        second = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
        assert json.loads(follower.stdout.readline())["aggregateId"] == second
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 0
    assert follower.stderr is not None
    assert "Traceback" not in follower.stderr.read()


def test_a_command_is_visible_to_the_next_query(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    assert "no ledger" in cli.refused("run", "list").stderr  # a query creates no store
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    assert [r["trainRunId"] for r in cli.ok("run", "list")["runs"]] == [run_id]
    cli.ok("run", "start", run_id)
    assert cli.ok("run", "show", run_id)["status"] == "running"
    assert cli.ok("stats")["runningRuns"] == 1


def test_projections_rebuild_reports_and_keeps_the_answers(history: History) -> None:
    before: dict[str, Any] = {
        "stats": history.cli.ok("stats"),
        "lineage": history.cli.ok("lineage", history.checkpoint),
    }
    report = history.cli("projections", "rebuild", json_mode=True)
    assert report.code == 0
    assert report.stderr == ""  # no progress bar when stderr is not a terminal
    assert report.json["eventsApplied"] == report.json["position"] == history.events
    assert report.json["eventsPerSecond"] > 0
    text = history.cli("projections", "rebuild")
    assert re.match(rf"rebuilt the views from {history.events} events in .* events/s", text.stdout)
    assert history.cli.ok("stats") == before["stats"]
    assert history.cli.ok("lineage", history.checkpoint) == before["lineage"]


def test_rebuild_shows_a_progress_bar_on_a_terminal(history: History) -> None:
    pty = pytest.importorskip("pty", reason="no pseudo-terminals on this platform")
    assert history.cli.store is not None
    controller, terminal = pty.openpty()
    argv = [
        sys.executable,
        "-m",
        "trainledger.cli",
        "--store",
        history.cli.store,
        "projections",
        "rebuild",
    ]
    child = subprocess.run(
        argv,
        cwd=history.cli.cwd,
        env=history.cli.env,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
        timeout=120,
        check=False,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal is closed once everything is read
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert child.returncode == 0
    assert b"rebuilding views" in shown
    assert b"100%" in shown
    assert child.stdout.startswith(f"rebuilt the views from {history.events} events")
