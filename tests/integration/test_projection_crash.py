"""SIGKILL a process in the middle of a rebuild or a catch-up, then query.

At the moment of the kill the views hold exactly the committed pages (equal to
a replay up to their tracked position); the next query carries on from there,
and the answers are those of an uninterrupted run: nothing applied twice,
nothing missed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

from tests.projection_support import Oracle, copy_log, logged_events, scripted_history
from tests.support import REPO
from trainledger.adapters.memory.view import MemoryLedgerView
from trainledger.adapters.sqlite.view_schema import INDEX_NAMES, KEY_NAMES
from trainledger.adapters.store import open_ledger
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger

PAGE = 25


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A SQLite store of a few thousand events whose views were never built, and its answers."""
    source = open_ledger("memory://")
    scripted_history(source, runs=400, seed=17)
    path = tmp_path_factory.mktemp("crash") / "ledger.db"
    target = open_ledger(f"sqlite:///{path}?synchronous=normal")
    copy_log(source, target)
    target.close()
    oracle = Oracle.after(source, logged_events(source))
    return path, {"stats": oracle.stats(), "runs": oracle.runs, "checkpoints": oracle.checkpoints}


def fresh_copy(history: Path, tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    shutil.copy(history, path)
    return f"sqlite:///{path}"


def kill_while_applying(url: str, mode: str, after_pages: int, rng: random.Random) -> None:
    """Start the driver, let it commit some pages, SIGKILL it mid-work."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.projection_crash_driver", url, mode, str(PAGE)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for _ in range(after_pages):
        line = child.stdout.readline()
        assert line.startswith("applied"), f"{line!r} {child.stderr.read() if child.stderr else ''}"
    time.sleep(rng.uniform(0, 0.003))  # land inside a page's transaction, or between two
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def assert_consistent_at_its_position(ledger: TrainingLedger) -> int:
    """The views hold exactly the events up to their tracked position, no more, no less."""
    read_model = cast(ProjectionReadModel, ledger.read_model)
    with read_model.view.reader() as reader:
        position = reader.position(ledger.name)
        live = reader.dump()
    replay = ProjectionReadModel(
        ledger.name, read_model.log, MemoryLedgerView(), replay_view=MemoryLedgerView
    )
    replay.apply_log(page_size=1000, stop=position)
    with replay.view.reader() as reader:
        assert reader.position(ledger.name) == position
        assert reader.dump() == live
    return position


def assert_answers_as_uninterrupted(ledger: TrainingLedger, expected: dict[str, Any]) -> None:
    assert ledger.stats() == expected["stats"]
    assert ledger.list_runs()["runs"] == expected["runs"]
    assert ledger.list_checkpoints()["checkpoints"] == expected["checkpoints"]
    assert ledger.projection_differences() == []
    read_model = cast(ProjectionReadModel, ledger.read_model)
    assert read_model.view.position(ledger.name) == ledger.recorder.max_notification_id()


@pytest.mark.slow
def test_sigkill_during_catch_up(history: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, expected = history
    url = fresh_copy(path, tmp_path)
    rng = random.Random(1)
    positions = []
    for after_pages in (3, 9):
        kill_while_applying(url, "catch-up", after_pages, rng)
        ledger = open_ledger(url)
        positions.append(assert_consistent_at_its_position(ledger))
        ledger.close()
    ledger = open_ledger(url)
    total = ledger.recorder.max_notification_id() or 0
    assert 0 < positions[0] < positions[1] < total  # both kills landed mid-way, work resumed
    assert_answers_as_uninterrupted(ledger, expected)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rebuild", "rebuild-by-workers"])
def test_sigkill_during_rebuild(
    history: tuple[Path, dict[str, Any]], tmp_path: Path, mode: str
) -> None:
    path, expected = history
    url = fresh_copy(path, tmp_path)
    ledger = open_ledger(url)
    assert_answers_as_uninterrupted(ledger, expected)  # views built, then rebuilt below
    total = ledger.recorder.max_notification_id() or 0
    ledger.close()
    rng = random.Random(2)
    for after_pages in (4, 2) if mode == "rebuild" else (9, 7):
        kill_while_applying(url, mode, after_pages, rng)
        ledger = open_ledger(url)
        position = assert_consistent_at_its_position(ledger)
        assert 0 < position < total  # killed after the reset, before the end
        ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert set(INDEX_NAMES) | set(KEY_NAMES) <= names  # dropped by the rebuild, made again on open
    ledger = open_ledger(url)
    assert_answers_as_uninterrupted(ledger, expected)
