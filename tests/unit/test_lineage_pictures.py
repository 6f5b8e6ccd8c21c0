"""Lineage pictures stay valid whatever users typed into ids and reasons."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.projection_support import ACTOR, create_run
from tests.support import READER_FAMILY, eval_summary, existing_artifact
from trainledger.cli import pictures as output
from trainledger.domain.errors import CheckpointNotFoundError, RunNotFoundError, ValidationError
from trainledger.service.ledger import TrainingLedger
from trainledger.service.queries import parse_moment

HOSTILE = 'say "hi" \\ <b>#1;</b> {x} [y] |z| --> end'


@pytest.fixture
def lineage(ledger: TrainingLedger) -> dict[str, object]:
    run_id = create_run(ledger)
    ledger.start_run(run_id, actor=ACTOR)
    checkpoint_id = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
    )["checkpointId"]
    ledger.complete_run(run_id, actor=ACTOR)
    summary = eval_summary(checkpoint_id, f"eval {HOSTILE}", benchmarkId=HOSTILE)
    ledger.attach_eval(checkpoint_id, summary, mark_deployable=True, actor=HOSTILE)
    ledger.revoke_deployability(checkpoint_id, HOSTILE, actor=ACTOR)
    return ledger.lineage(checkpoint_id)


def test_dot_parses_with_graphviz(lineage: dict[str, object]) -> None:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz `dot` is not installed: cannot check that the picture parses")
    picture = "\n".join(output.lineage_dot(lineage))
    rendered = subprocess.run(
        [dot, "-Tsvg"], input=picture, capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.count('<g id="node') == 6  # dataset, run, checkpoint, eval, 2 decisions


def test_mermaid_labels_hold_no_syntax(lineage: dict[str, object]) -> None:
    lines = output.lineage_mermaid(lineage)
    assert lines[0] == "flowchart LR"
    for line in lines[1:]:
        assert re.fullmatch(
            r'    \w+\["[^"<>]*(<br/>[^"<>]*)*"\]|    \w+ -\.?->\|"[^"]*"\| \w+', line
        ), line
    assert any("#quot;hi#quot;" in line for line in lines)


def test_a_multi_line_reason_stays_inside_its_node(ledger: TrainingLedger) -> None:
    run_id = create_run(ledger)
    ledger.start_run(run_id, actor=ACTOR)
    checkpoint_id = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
    )["checkpointId"]
    ledger.complete_run(run_id, actor=ACTOR)
    summary = eval_summary(checkpoint_id, "eval-1")
    ledger.attach_eval(checkpoint_id, summary, mark_deployable=True, actor=ACTOR)
    ledger.revoke_deployability(checkpoint_id, "first line\r\nsecond line", actor=ACTOR)
    lineage = ledger.lineage(checkpoint_id)
    dot = output.lineage_dot(lineage)
    mermaid = output.lineage_mermaid(lineage)
    for line in dot + mermaid:
        assert "\n" not in line, line
        assert "\r" not in line, line
    assert any("first line\\nsecond line" in line for line in dot)
    assert any("first line<br/>second line" in line for line in mermaid)


def test_text_tree_marks_the_current_eval_and_every_decision(lineage: dict[str, object]) -> None:
    text = "\n".join(output.lineage_text(lineage))
    assert "[current]" in text
    assert "marked deployable by " + HOSTILE in text
    assert "revoked by " + ACTOR in text


def test_as_of_times_need_a_zone() -> None:
    assert parse_moment("2025-01-31T12:00:00Z") == datetime(2025, 1, 31, 12, tzinfo=UTC)
    two_hours_east = parse_moment("2025-01-31T14:00:00+02:00")
    assert two_hours_east == datetime(2025, 1, 31, 12, tzinfo=timezone(timedelta(0)))
    with pytest.raises(ValidationError, match="time zone"):
        parse_moment("2025-01-31T12:00:00")
    with pytest.raises(ValidationError, match="ISO-8601"):
        parse_moment("last tuesday")


def test_as_of_times_at_the_calendar_edges_clamp_instead_of_overflowing() -> None:
    assert parse_moment("0001-01-01T00:00:00+14:00") == datetime.min.replace(tzinfo=UTC)
    assert parse_moment("9999-12-31T23:59:59-14:00") == datetime.max.replace(tzinfo=UTC)


def test_before_an_entity_existed_the_answer_is_empty_not_an_error(
    ledger: TrainingLedger,
) -> None:
    run_id = create_run(ledger)
    created = parse_moment(ledger.show_run(run_id)["createdAt"])
    ledger.start_run(run_id, actor=ACTOR)
    checkpoint_id = ledger.register_checkpoint(
        run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
    )["checkpointId"]
    registered = parse_moment(ledger.show_checkpoint(checkpoint_id)["createdAt"])
    before = created - timedelta(microseconds=1)
    assert ledger.show_run(run_id, as_of=before) == {}
    assert ledger.show_checkpoint(checkpoint_id, as_of=before) == {}
    assert ledger.lineage(checkpoint_id, as_of=before) == {}
    # between the run's creation and the checkpoint's registration
    between = registered - timedelta(microseconds=1)
    assert ledger.show_run(run_id, as_of=between)["status"] in {"pending", "running"}
    assert ledger.show_checkpoint(checkpoint_id, as_of=between) == {}
    assert ledger.lineage(checkpoint_id, as_of=between) == {}
    assert ledger.lineage(checkpoint_id, as_of=registered)["checkpointId"] == checkpoint_id
    # an id found nowhere: empty as of a moment, not found without one
    assert ledger.show_run("not-an-id", as_of=before) == {}
    assert ledger.lineage(run_id, as_of=registered) == {}
    with pytest.raises(RunNotFoundError):
        ledger.show_run(checkpoint_id)
    with pytest.raises(CheckpointNotFoundError):
        ledger.show_checkpoint(run_id)
    with pytest.raises(CheckpointNotFoundError):
        ledger.lineage("not-an-id")


def test_the_empty_pictures_are_valid() -> None:
    note = output.nothing_as_of(
        "checkpoint", f"{HOSTILE}\nline", parse_moment("2020-01-01T00:00:00Z")
    )
    assert note == f"no checkpoint {HOSTILE} line as of 2020-01-01T00:00:00Z"
    mermaid = output.empty_lineage_mermaid(note)
    assert mermaid[0] == "flowchart LR"
    assert all(line.startswith("    %% ") and "\n" not in line for line in mermaid[1:])
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz `dot` is not installed: cannot check that the picture parses")
    picture = "\n".join(output.empty_lineage_dot(note))
    rendered = subprocess.run(
        [dot, "-Tsvg"], input=picture, capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    assert '<g id="node' not in rendered.stdout
