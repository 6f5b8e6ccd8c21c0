"""Shares of the views: how `verify`'s workers and the parent split and digest them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapters.sqlite_verify import HEX_DIGITS, check_part
from adapters.store import open_ledger
from projections.facts import ViewDump
from projections.log import LogReader
from projections.memory_view import MemoryLedgerView
from projections.projection import READ_VERSIONS
from projections.shares import OWNER_COLUMN, ShareReplay, share_digests, share_of
from tests.support import deployable_lifecycle


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_share_of_agrees_with_the_workers_sql(parts: int) -> None:
    connection = sqlite3.connect(":memory:")
    for first in [*HEX_DIGITS, *HEX_DIGITS.upper(), "g", "-", ""]:
        aggregate_id = first + "0" * 31 if first else ""
        (expected,) = connection.execute(
            "SELECT instr(?, substr(?, 1, 1)) % ?", (HEX_DIGITS, aggregate_id, parts)
        ).fetchone()
        assert share_of(aggregate_id, parts) == expected, repr(aggregate_id)


def test_every_view_table_names_its_owner() -> None:
    with MemoryLedgerView().reader() as reader:
        assert set(reader.dump()) == set(OWNER_COLUMN)


def test_an_event_that_needs_upcasting_leaves_the_share_to_a_full_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    records = LogReader.of(ledger.recorder, ledger.mapper).page(0, 100)
    replay = ShareReplay()
    replay.add(records)
    assert replay.digests() is not None
    monkeypatch.setitem(READ_VERSIONS, records[0].topic, 2)  # its class moved on
    stale = ShareReplay()
    stale.add(records)
    assert stale.digests() is None
    ledger.close()


def test_workers_replay_their_shares_to_the_views_digests(tmp_path: Path) -> None:
    """A worker's digests of its share equal the live views', until a view row is edited."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    for n in range(6):
        deployable_lifecycle(ledger, tmp_path / str(n), eval_id=f"e{n}")
    assert ledger.read_model is not None
    ledger.read_model.catch_up()
    upto = ledger.recorder.max_notification_id() or 0
    for parts in (1, 2, 3):
        workers = [check_part(str(path), upto, part, parts) for part in range(parts)]
        assert sum(checked for checked, _, _ in workers) == upto
        assert all(problem is None for _, problem, _ in workers)
        assert [views for _, _, views in workers] == ledger.projection_share_digests(upto, parts)

    with sqlite3.connect(path) as connection:
        (checkpoint_id,) = connection.execute("SELECT checkpoint_id FROM view_evals").fetchone()
        connection.execute(
            "UPDATE view_evals SET verdict = 'fail' WHERE checkpoint_id = ?", (checkpoint_id,)
        )
    edited = share_of(checkpoint_id, 3)
    live = ledger.projection_share_digests(upto, 3)
    assert live is not None
    replayed = [views for _, _, views in (check_part(str(path), upto, p, 3) for p in range(3))]
    assert [share == live[n] for n, share in enumerate(replayed)] == [n != edited for n in range(3)]
    share = replayed[edited]
    assert share is not None
    assert share["evals"] != live[edited]["evals"]
    assert share["runs"] == live[edited]["runs"]
    # Views that are not at the position asked about give no digests.
    assert ledger.projection_share_digests(upto - 1, 3) is None
    ledger.close()


def test_share_digests_keep_each_row_with_its_owner() -> None:
    a, b = "0" + "a" * 31, "1" + "b" * 31
    dump: ViewDump = {table: [] for table in OWNER_COLUMN}
    dump["runs"] = [(a, "x"), (b, "y")]
    dump["evals"] = [("eval-1", b, 1)]
    empty: ViewDump = {table: [] for table in OWNER_COLUMN}
    alone_a = empty | {"runs": [(a, "x")]}
    alone_b = empty | {"runs": [(b, "y")], "evals": [("eval-1", b, 1)]}
    both = share_digests(dump, 2)
    assert both[share_of(a, 2)] == share_digests(alone_a, 1)[0]
    assert both[share_of(b, 2)] == share_digests(alone_b, 1)[0]
