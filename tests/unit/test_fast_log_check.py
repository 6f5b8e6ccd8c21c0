"""The workers' fast check never passes a log the one-pass verifier fails.

`FastLogCheck` (run per share of the aggregates by `verify`'s worker
processes) and `LogVerifier` (the one-pass check) implement the same rules
twice, the first for speed. Random tampering of a real log shows the fast
verdict is conservative: whenever it calls every share sound, the one-pass
check agrees.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, NamedTuple
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.store import open_ledger
from domain.integrity import (
    LOG_GENESIS,
    NATIVE_CHECK,
    FastLogCheck,
    LinkedRow,
    LogVerifier,
    log_links,
)
from projections.shares import share_of
from tests.support import deployable_lifecycle

Row = tuple[int, str, int, str, bytes]
Link = tuple[int, str]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Row], list[Link]]:
    """Three lifecycles as stored: 21 rows and their log chain links."""
    root = tmp_path_factory.mktemp("fast-log")
    path = root / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    for n in range(3):
        deployable_lifecycle(ledger, root, eval_id=f"e{n}")
    ledger.close()
    connection = sqlite3.connect(path)
    rows = connection.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY rowid"
    ).fetchall()
    links = connection.execute(
        "SELECT position, link FROM ledger_log_chain ORDER BY position"
    ).fetchall()
    connection.close()
    return rows, links


def one_pass_ok(rows: list[Row], links: list[Link]) -> bool:
    """`TrainingLedger.verify`'s one-pass check, on plain rows."""
    recorded = dict(links)
    verifier = LogVerifier(gap_free=True)
    for position, hex_id, version, topic, raw in rows:
        for missing in sorted(p for p in recorded if verifier.position < p < position):
            verifier.missing(missing)
        try:
            state: Any = orjson.loads(raw)
        except (ValueError, TypeError):
            state = None
        verifier.feed(
            position,
            UUID(hex_id),
            version,
            topic,
            raw,
            state if isinstance(state, dict) else None,
            recorded.get(position),
            check_link=True,
        )
    for position in sorted(p for p in recorded if p > verifier.position):
        verifier.missing(position)
    return verifier.failure is None


def linked(rows: list[Row], links: list[Link]) -> list[LinkedRow]:
    """Rows with the links recorded before and at their positions, as the workers read them."""
    recorded = dict(links)
    return [(*row, recorded.get(row[0] - 1), recorded.get(row[0])) for row in rows]


@pytest.fixture(params=["C", "Python"])
def native(request: pytest.FixtureRequest) -> bool:
    """Each test runs against both loops of `FastLogCheck.check`."""
    if request.param == "C" and NATIVE_CHECK is None:
        if os.environ.get("CI"):
            pytest.fail("the C loop (domain/_fastcheck.c) was not built")
        pytest.skip(
            "the C loop (domain/_fastcheck.c) was not built: no C compiler or OpenSSL headers"
        )
    return bool(request.param == "C")


def fast_sound(
    rows: list[Row], links: list[Link], parts: int, *, chunk: int = 5, native: bool = True
) -> bool:
    """The workers' verdict: positions exactly 1..N, then every share sound."""
    positions = [r[0] for r in rows]
    if positions != list(range(1, len(rows) + 1)) or [p for p, _ in links] != positions:
        return False
    checked = 0
    for part in range(parts):
        share = [r for r in linked(rows, links) if share_of(r[1], parts) == part]
        check = FastLogCheck(native=native)
        for start in range(0, len(share), chunk):  # in several calls, as the workers do
            if check.check(share[start : start + chunk]) is not None:
                return False
        checked += check.checked
    return checked == len(rows)


def test_a_sound_log_is_sound_either_way(log: tuple[list[Row], list[Link]], native: bool) -> None:
    rows, links = log
    assert one_pass_ok(rows, links)
    for parts in (1, 2, 3, 4):
        assert fast_sound(rows, links, parts, native=native)


class Record(NamedTuple):
    position: int
    aggregate_id: str
    version: int
    topic: str
    state: dict[str, Any]


def test_the_fast_check_hands_over_each_row_it_passed_decoded(
    log: tuple[list[Row], list[Link]], native: bool
) -> None:
    rows, links = log
    decoded: list[Record] = []
    check = FastLogCheck(native=native)
    assert check.check(linked(rows, links), decoded, Record) is None
    assert check.checked == len(rows)
    assert decoded == [(p, i, v, t, orjson.loads(raw)) for p, i, v, t, raw in rows]
    assert {type(record) for record in decoded} == {Record}
    # A row that fails ends the check there; the rows before it passed.
    tampered = linked(rows, links)
    tampered[7] = (
        *tampered[7][:4],
        tampered[7][4].replace(b'"actor":"', b'"actor":"x'),
        *tampered[7][5:],
    )
    check = FastLogCheck(native=native)
    assert check.check(tampered, []) == tampered[7][0]
    assert check.checked == 7


def test_both_loops_give_the_same_verdicts_on_odd_rows(
    log: tuple[list[Row], list[Link]], native: bool
) -> None:
    """Values of unexpected types fail the row; they never raise."""
    rows, links = log
    good = linked(rows, links)[0]
    link = str(good[6])
    odd: list[tuple[Any, ...]] = [
        (good[0], good[1].upper(), *good[2:]),
        (good[0], good[1][:31], *good[2:]),
        (good[0], good[1], "1", *good[3:]),
        (good[0], good[1], good[2], None, *good[4:]),
        (*good[:4], good[4].decode(), *good[5:]),
        (*good[:4], b"[]", *good[5:]),
        (*good[:4], b"{", *good[5:]),
        (*good[:6], None),
        (*good[:6], link.upper()),
        (*good[:6], link[:63]),
        (2, *good[1:5], None, link),
        (2, *good[1:5], "zz" * 32, link),
    ]
    for row in odd:
        check = FastLogCheck(native=native)
        assert check.check([row]) == row[0], row
        assert check.checked == 0


def _edit_state(state: bytes, choice: int) -> bytes:
    document = orjson.loads(state)
    key = sorted(document)[choice % len(document)]
    document[key] = "tampered" if document[key] != "tampered" else "again"
    return orjson.dumps(document)


@st.composite
def tamperings(draw: st.DrawFn, rows: list[Row], links: list[Link]) -> tuple[list[Row], list[Link]]:
    rows, links = list(rows), list(links)
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(rows) - 1))
        j = draw(st.integers(0, len(rows) - 1))
        position, hex_id, version, topic, raw = rows[i]
        kind = draw(
            st.sampled_from(
                ["state", "version", "topic", "id", "swap", "delete", "link", "bytes", "move"]
            )
        )
        if kind == "state":
            rows[i] = (position, hex_id, version, topic, _edit_state(raw, draw(st.integers(0, 9))))
        elif kind == "version":
            rows[i] = (position, hex_id, version + draw(st.sampled_from([-1, 1, 2])), topic, raw)
        elif kind == "topic":
            rows[i] = (position, hex_id, version, rows[j][3], raw)
        elif kind == "id":
            rows[i] = (position, rows[j][1], version, topic, raw)
        elif kind == "swap":
            rows[i], rows[j] = (position, *rows[j][1:]), (rows[j][0], *rows[i][1:])
        elif kind == "delete":
            del rows[i]
        elif kind == "link":
            links[i] = (links[i][0], links[j][1])
        elif kind == "bytes":
            cut = draw(st.integers(0, len(raw) - 1))
            rows[i] = (position, hex_id, version, topic, raw[:cut] + b"#" + raw[cut + 1 :])
        else:  # an event moved to another position, the rows renumbered
            moved = rows.pop(i)
            rows.insert(j, moved)
            rows = [(n + 1, *row[1:]) for n, row in enumerate(rows)]
    if draw(st.booleans()):
        # An attacker who also rewrote the recorder's log chain: only the
        # aggregates' own hash chains are left to catch them.
        links = log_links(LOG_GENESIS, [(p, UUID(i), v, t, raw) for p, i, v, t, raw in rows])
    return rows, links


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), parts=st.integers(1, 4))
def test_the_fast_check_never_passes_what_one_pass_fails(
    log: tuple[list[Row], list[Link]], data: st.DataObject, parts: int
) -> None:
    rows, links = data.draw(tamperings(*log))
    verdicts = {fast_sound(rows, links, parts, native=False)}
    if NATIVE_CHECK is not None:
        verdicts.add(fast_sound(rows, links, parts, native=True))
    assert len(verdicts) == 1, "the C and the Python loop disagree"
    if verdicts == {True}:
        assert one_pass_ok(rows, links)
