"""Shares of the views: how `verify`'s workers split, replay and compare them."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.support import deployable_lifecycle
from trainledger.adapters.memory.view import MemoryLedgerView
from trainledger.adapters.sqlite.shares import (
    HEX_DIGITS,
    ID_SPACE,
    ORDER,
    OWNER_COLUMN,
    ShareReplay,
    live_rows,
    live_share,
    same_views,
    share_condition,
    share_of,
)
from trainledger.adapters.sqlite.verify import (
    SCAN_UP_TO,
    SHARE_EVENTS,
    check_part,
    check_shares,
    share_count,
)
from trainledger.adapters.store import log_reader, open_ledger
from trainledger.projections.projection import READ_VERSIONS
from trainledger.service.ledger import TrainingLedger


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 16, 37, 1000])
@pytest.mark.parametrize("scan", [True, False])
def test_each_id_is_in_one_share_and_sqlite_finds_it_there(parts: int, scan: bool) -> None:
    ids = [d + "0" * 31 for d in HEX_DIGITS + HEX_DIGITS.upper()]
    ids += ["g", "-", "", "8", "7fff", "7fff" + "f" * 28, "8000" + "0" * 28, "ffff" + "f" * 28]
    ids += [f"{n:04x}" + "5" * 28 for n in range(0, ID_SPACE, 97)]
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (id TEXT)")
    connection.execute("CREATE INDEX t_id ON t (id)")
    connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in ids])
    found = []
    for part in range(parts):
        condition, params = share_condition("id", part, parts, scan=scan)
        rows = connection.execute(f"SELECT id FROM t WHERE {condition}", params).fetchall()
        assert sorted(i for (i,) in rows) == sorted(i for i in ids if share_of(i, parts) == part)
        found += rows
    assert len(found) == len(ids)
    # ids spread evenly over the shares, in order of their first four hex digits
    shares = [share_of(f"{n:04x}" + "0" * 28, parts) for n in range(ID_SPACE)]
    assert shares == sorted(shares)
    sizes = Counter(shares)
    assert len(sizes) == parts
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_every_view_table_names_its_owner_and_order() -> None:
    with MemoryLedgerView().reader() as reader:
        assert set(reader.dump()) == set(OWNER_COLUMN) == set(ORDER)


def test_an_event_that_needs_upcasting_leaves_the_views_to_a_full_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    records = log_reader(ledger.recorder, ledger.mapper).page(0, 100)
    replay = ShareReplay()
    replay.add(records)
    assert replay.dump() is not None
    monkeypatch.setitem(READ_VERSIONS, records[0].topic, 2)  # its class moved on
    stale = ShareReplay()
    stale.add(records)
    assert stale.dump() is None
    ledger.close()


def _history(path: Path) -> tuple[TrainingLedger, int]:
    ledger = open_ledger(f"sqlite:///{path}")
    for n in range(6):
        deployable_lifecycle(ledger, path.parent / str(n), eval_id=f"e{n}")
    assert ledger.read_model is not None
    ledger.read_model.catch_up()
    return ledger, ledger.recorder.max_notification_id() or 0


def test_each_worker_finds_its_share_of_the_views_equal_to_its_replay(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger, upto = _history(path)
    with sqlite3.connect(path) as connection:
        whole = dict.fromkeys(OWNER_COLUMN, 0)
        for parts in (1, 2, 3):
            for part in range(parts):
                for table, rows in live_share(connection.cursor(), part, parts).items():
                    whole[table] += len(rows)
        # every row is in exactly one share, for each number of shares
        assert whole == {
            "runs": 18,
            "links": 18,
            "checkpoints": 18,
            "evals": 18,
            "deployability": 18,
            "promotions": 0,
            "slot_events": 0,
            "shadow": 0,
        }
    # a few shares are scanned, many walk the ids' index: the same verdicts
    for parts in (1, 2, 3, SCAN_UP_TO + 1, 37):
        workers = [check_part(str(path), upto, part, parts, ledger.name) for part in range(parts)]
        assert sum(checked for checked, _, _ in workers) == upto
        assert [(problem, views) for _, problem, views in workers] == [(None, True)] * parts
        # a worker takes every `workers`-th share in turn
        for count in (1, 2, 3):
            mine = [
                check_shares(str(path), upto, range(w, parts, count), parts, ledger.name)
                for w in range(count)
            ]
            assert sum(checked for checked, _, _ in mine) == upto
            assert [(problem, views) for _, problem, views in mine] == [(None, True)] * count
    ledger.close()


def test_a_worker_finds_its_share_of_edited_views_different(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger, upto = _history(path)
    with sqlite3.connect(path) as connection:
        (checkpoint_id,) = connection.execute("SELECT checkpoint_id FROM view_evals").fetchone()
        connection.execute(
            "UPDATE view_evals SET verdict = 'fail' WHERE checkpoint_id = ?", (checkpoint_id,)
        )
    for parts in (3, 37):
        edited = share_of(checkpoint_id, parts)
        views = [check_part(str(path), upto, part, parts, ledger.name)[2] for part in range(parts)]
        assert views == [part != edited for part in range(parts)]
        found = check_shares(str(path), upto, range(parts), parts, ledger.name)
        assert found == (upto, None, False)
    ledger.close()


def test_views_at_another_position_or_of_another_name_are_left_to_the_parent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger, upto = _history(path)
    assert check_part(str(path), upto - 1, 0, 1, ledger.name) == (upto - 1, None, None)
    assert check_part(str(path), upto, 0, 1, "SomeOtherApplication") == (upto, None, None)
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE view_evals")
    assert check_part(str(path), upto, 0, 1, ledger.name) == (upto, None, None)
    ledger.close()


def test_a_long_log_is_checked_in_shares_of_bounded_size() -> None:
    assert share_count(10, 2) == 2
    assert share_count(SHARE_EVENTS * 2, 2) == 2
    assert share_count(SHARE_EVENTS * 2 + 1, 2) == 4
    assert share_count(7_000_000, 2) == 2 * -(-7_000_000 // (SHARE_EVENTS * 2))
    assert share_count(7_000_000, 2) * SHARE_EVENTS >= 7_000_000
    assert share_count(10**12, 2) == ID_SPACE


def test_rows_in_log_order_compare_without_sorting_and_in_any_order_when_sorted(
    tmp_path: Path,
) -> None:
    """A worker compares its share of the views and its replay in the order each has its
    rows (the views' writing order is log order), and sorted only when that differs."""
    path = tmp_path / "ledger.db"
    ledger, upto = _history(path)
    records = log_reader(ledger.recorder, ledger.mapper).page(0, upto)
    replay = ShareReplay()
    replay.add(records)
    replayed = replay.rows()
    assert replayed is not None
    with sqlite3.connect(path) as connection:
        live = live_rows(connection.cursor(), 0, 1)
        assert live == replayed  # the same order on both sides
        assert same_views(live, replayed)
        # rows in another order (a view rewritten in another order) are the same rows
        reordered = {table: rows[::-1] for table, rows in live.items()}
        assert reordered != live
        assert same_views(reordered, replayed)
        assert {table: sorted(rows, key=ORDER[table]) for table, rows in live.items()} == (
            live_share(connection.cursor(), 0, 1)
        )
        # a row changed, gone or added, a table missing: not the same
        changed = dict(live, evals=[(*live["evals"][0][:5], "fail", *live["evals"][0][6:])])
        changed["evals"] += live["evals"][1:]
        assert changed["evals"] != live["evals"]
        assert not same_views(changed, replayed)
        assert not same_views(dict(live, runs=live["runs"][1:]), replayed)
        assert not same_views(dict(live, runs=live["runs"] + live["runs"][:1]), replayed)
        assert not same_views({t: r for t, r in live.items() if t != "links"}, replayed)
        # a view table whose rows were deleted and written again, in another order
        connection.execute("CREATE TEMP TABLE saved AS SELECT * FROM view_checkpoint_links")
        connection.execute("DELETE FROM view_checkpoint_links")
        connection.execute(
            "INSERT INTO view_checkpoint_links SELECT * FROM saved ORDER BY checkpoint_id DESC"
        )
        rewritten = live_rows(connection.cursor(), 0, 1)
        assert rewritten["links"] != replayed["links"]
        assert same_views(rewritten, replayed)
    assert [check_part(str(path), upto, part, 2, ledger.name)[2] for part in range(2)] == [
        True,
        True,
    ]
    ledger.close()
