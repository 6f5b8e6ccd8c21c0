"""The workers' check gives the one-pass verifier's verdict, share by share.

`FastLogCheck` (run per share of the aggregates by `verify`'s worker
processes) and `LogVerifier` (the one-pass check) apply the same rules of
`domain.chain`; the first needs no row outside its share. Random tampering of
a real log shows the workers' verdict is the one pass's: they never call
sound a log it fails, and they pass every log it passes (whose positions are
exactly 1..N; any other log the workers leave to the one pass).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import deployable_lifecycle
from trainledger.adapters.sqlite.fast_check import FastLogCheck, LinkedRow
from trainledger.adapters.sqlite.shares import share_of
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import (
    GENESIS_HASH,
    LOG_GENESIS,
    IntegrityFailure,
    LogVerifier,
    canonical_event_bytes,
    chain_hash,
    log_links,
)

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


def one_pass(rows: list[Row], links: list[Link]) -> IntegrityFailure | None:
    """`TrainingLedger.verify`'s one-pass check, on plain rows: its first failure, if any."""
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
    return verifier.failure


def one_pass_ok(rows: list[Row], links: list[Link]) -> bool:
    return one_pass(rows, links) is None


def one_pass_position(rows: list[Row], links: list[Link]) -> int | None:
    """The position the one-pass check names, which a check of the whole log in one part
    must name too."""
    failure = one_pass(rows, links)
    return None if failure is None else failure.position


def linked(rows: list[Row], links: list[Link]) -> list[LinkedRow]:
    """Rows with the links recorded before and at their positions, as the workers read them."""
    recorded = dict(links)
    return [(*row, recorded.get(row[0] - 1), recorded.get(row[0])) for row in rows]


def fast_sound(rows: list[Row], links: list[Link], parts: int, *, chunk: int = 5) -> bool:
    """The workers' verdict: positions exactly 1..N, then every share sound."""
    positions = [r[0] for r in rows]
    if positions != list(range(1, len(rows) + 1)) or [p for p, _ in links] != positions:
        return False
    checked = 0
    for part in range(parts):
        share = [r for r in linked(rows, links) if share_of(r[1], parts) == part]
        check = FastLogCheck()
        for start in range(0, len(share), chunk):  # in several calls, as the workers do
            if check.check(share[start : start + chunk]) is not None:
                return False
        checked += check.checked
    return checked == len(rows)


def test_a_sound_log_is_sound_in_any_number_of_parts(log: tuple[list[Row], list[Link]]) -> None:
    rows, links = log
    assert one_pass_ok(rows, links)
    for parts in (1, 2, 3, 4):
        assert fast_sound(rows, links, parts)


def test_the_first_row_that_fails_ends_the_check_at_its_position(
    log: tuple[list[Row], list[Link]],
) -> None:
    rows, links = log
    check = FastLogCheck()
    assert check.check(linked(rows, links)) is None
    assert check.checked == len(rows)
    tampered = linked(rows, links)
    tampered[7] = (
        *tampered[7][:4],
        tampered[7][4].replace(b'"actor":"', b'"actor":"x'),
        *tampered[7][5:],
    )
    check = FastLogCheck()
    assert check.check(tampered) == tampered[7][0]
    assert check.checked == 7  # the rows before it passed


def test_odd_rows_fail_without_raising(log: tuple[list[Row], list[Link]]) -> None:
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
        check = FastLogCheck()
        assert check.check([row]) == row[0], row
        assert check.checked == 0


def _edit_state(state: bytes, choice: int) -> bytes:
    try:
        document = orjson.loads(state)
    except orjson.JSONDecodeError:  # already garbled by an earlier tampering
        return state + b"#"
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
def test_the_fast_check_gives_the_one_pass_verdict(
    log: tuple[list[Row], list[Link]], data: st.DataObject, parts: int
) -> None:
    rows, links = data.draw(tamperings(*log))
    positions = list(range(1, len(rows) + 1))
    # The workers only run on a log whose rows and links are positions 1..N.
    whole = [r[0] for r in rows] == positions and [p for p, _ in links] == positions
    if fast_sound(rows, links, parts):
        assert one_pass_ok(rows, links), "the fast check passed what one pass fails"
    else:
        assert not (whole and one_pass_ok(rows, links)), "the fast check failed a sound log"


def _type_name(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


def rechain(rows: list[Row], index: int, head: str) -> tuple[list[Row], list[Link]]:
    """The aggregate's events after row `index` chained again from `head` (the event hash
    that row records), and the log chain recomputed over every row."""
    hex_id = rows[index][1]
    aggregate_id = str(UUID(hex_id))
    for later in range(index + 1, len(rows)):
        position, other_id, version, topic, raw = rows[later]
        if other_id == hex_id:
            state = orjson.loads(raw)
            state["previousHash"] = head
            state["eventHash"] = head = chain_hash(aggregate_id, version, _type_name(topic), state)
            rows[later] = (position, hex_id, version, topic, orjson.dumps(state))
    return rows, log_links(LOG_GENESIS, [(p, UUID(i), v, t, raw) for p, i, v, t, raw in rows])


def forge(
    rows: list[Row],
    index: int,
    edit: Callable[[dict[str, Any]], None],
    token: bytes | None = None,
    garbage: bytes = b"",
    topic: str | None = None,
) -> tuple[list[Row], list[Link]]:
    """The log as a forger who rewrote everything would leave it after editing one state.

    `edit` changes the state of row `index`; then `token`, as orjson writes it
    there, is replaced by `garbage` in the stored bytes. Its event hash is
    recomputed over the canonical document with the same replacement (what a
    check that took the bytes as they are, without decoding them, would
    compute), the aggregate's later events are chained to it again and the
    log chain is recomputed: only the state's own bytes can fail it. `topic`,
    if given, replaces the aggregate's topic in its rows' topics (their type names kept).
    """
    rows = list(rows)
    if topic is not None:
        hex_id = rows[index][1]
        rows = [
            (p, i, v, f"{topic}.{_type_name(t)}" if i == hex_id else t, raw)
            for p, i, v, t, raw in rows
        ]
    position, hex_id, version, topic, raw = rows[index]
    state = orjson.loads(raw)
    edit(state)
    document = canonical_event_bytes(str(UUID(hex_id)), version, _type_name(topic), state)
    if token is not None:
        assert document.count(token) <= 1
        document = document.replace(token, garbage)
    state["eventHash"] = head = hashlib.sha256(document).hexdigest()
    raw = orjson.dumps(state)
    if token is not None:
        assert raw.count(token) == 1
        raw = raw.replace(token, garbage)
    rows[index] = (position, hex_id, version, topic, raw)
    return rechain(rows, index, head)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key, None)


def _unchanged(state: dict[str, Any]) -> None:
    pass


# Values orjson.loads rejects that a check reading the tokens as they are, without
# JSON's grammar, could take: numbers, control characters, invalid UTF-8 (the
# strings of several lengths, so a bad byte falls at several places in a word).
NOT_JSON = [
    *(b"01", b"-01", b"00", b"1-2", b"-", b"+1", b".5", b"-.5", b"5.", b"1.e5", b"1e", b"1e+"),
    *(b"0x1", b"Infinity", b"-Infinity", b"NaN", b"nul", b"tru"),
    *(b'"a\x01b"', b'"\x1f"', b'"tab\there"', b'"\n"', b'"abcdefgh\x00"', b'"\xff"', b'"\x80"'),
    *(b'"\xc0\x80"', b'"\xc3"', b'"\xe2\x82"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"'),
    *(b'"\xf8\x88\x80\x80\x80"', b'"abcdefg\xff"', b'"abcdefghijklmno\xe2\x82"'),
]
JSON = [
    *(b"1", b"-1", b"0", b"1.5", b"-0.5", b"true", b'"ok"', b'"\xc3\xa9"', b'"\xef\xbf\xbf"'),
    *(b'"abcdefghijklmno\xe2\x82\xac"', b'"\xf0\x9f\x98\x80"', b'"\xf4\x8f\xbf\xbf"', b'"\x7f"'),
]
# Payload keys, sorted last as "~~~~" is.
NOT_JSON_KEYS = [b'"~~\xff"', b'"~~\x01"', b'"~~\xc0\x80"', b'"~~\xed\xa0\x80"']
JSON_KEYS = [b'"~~\xc3\xa9"', b'"~~\x7f"']


def test_forged_states_that_are_not_json_fail_as_in_one_pass(
    log: tuple[list[Row], list[Link]],
) -> None:
    """A state that is not JSON fails, even with every hash recomputed over its bytes.

    A forger recomputed each state's event hash (as a check taking its bytes
    as they are would), the chains after it and the log chain: the row fails
    because orjson.loads rejects it, in the fast check as in one pass.
    """
    rows = log[0]
    cases = []
    for index in (0, 1):  # an aggregate's first event, and its second
        for field in ("x", "actor", "class_version"):  # payload, envelope, neither
            for garbage in NOT_JSON + JSON:
                edit = _set(field, "forged-placeholder")
                forged = forge(rows, index, edit, b'"forged-placeholder"', garbage)
                cases.append((f"{index} {field}: {garbage!r}", garbage in JSON, index, forged))
        for garbage in NOT_JSON_KEYS + JSON_KEYS:
            forged = forge(rows, index, _set("~~~~", 1), b'"~~~~"', garbage)
            cases.append((f"{index} key {garbage!r}", garbage in JSON_KEYS, index, forged))
    for name, valid, index, (forged_rows, forged_links) in cases:
        if not valid:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(forged_rows[index][4])
        expected = None if valid else forged_rows[index][0]
        assert FastLogCheck().check(linked(forged_rows, forged_links)) == expected, name
        assert one_pass_position(forged_rows, forged_links) == expected, name


@pytest.mark.parametrize(
    ("index", "edit", "passes", "topic"),
    [
        # The aggregate's topic must be a string: no other token read as text matches.
        (0, _set("originatorTopic", [1]), False, "1"),
        (0, _set("originatorTopic", 12), False, "2"),
        (0, _set("originatorTopic", 12), False, "12"),
        (0, _set("originatorTopic", {"a": 1}), False, '"a":1'),
        (0, _set("originatorTopic", None), False, "ul"),
        (0, _set("originatorTopic", "1"), True, "1"),
        (0, _set("originatorTopic", "é:Ünïcode"), True, "é:Ünïcode"),
        (0, _set("originatorTopic", "domain.model:TrainingRun"), False, "domain.model"),
    ]
    + [
        (index, edit, passes, None)
        for index, edit, passes in [
            (0, _unchanged, True),
            (0, _drop("originatorTopic"), False),
            (0, _set("originatorTopic", 1), False),
            (0, _set("originatorTopic", None), False),
            (0, _set("originatorTopic", ["domain.model:TrainingRun"]), False),
            (0, _set("originatorTopic", {"a": "domain.model:TrainingRun"}), False),
            (0, _set("originatorTopic", "domain.model:Checkpoint"), False),
            (0, _set("originatorTopic", "domain.model"), False),
            (0, _set("originatorTopic", "domain"), False),  # a prefix of the topic, up to a dot
            (0, _set("originatorTopic", "domain.model:TrainingRun.Registered"), False),
            (0, _set("originatorTopic", ""), False),
            (0, _set("originatorTopic", "domain.model:TrainingRun\n"), False),
            (0, _set("previousHash", None), False),
            (0, _set("previousHash", 0), False),
            (0, _set("previousHash", [GENESIS_HASH]), False),
            (0, _set("previousHash", GENESIS_HASH.replace("0", "1", 1)), False),
            (0, _set("previousHash", GENESIS_HASH + "0"), False),
            (0, _set("previousHash", GENESIS_HASH[:-1]), False),
            (1, _unchanged, True),
            (1, _set("previousHash", GENESIS_HASH), False),
            (1, _set("previousHash", {"h": GENESIS_HASH}), False),
            (1, _set("originatorTopic", 1), True),  # read only in an aggregate's first event
            (1, _set("originatorTopic", "anything"), True),
            (1, _drop("idempotencyKey"), True),
            (1, _set("note", "é\u2028\\"), True),
        ]
    ],
)
def test_chain_fields_of_odd_values_get_the_one_pass_verdict(
    log: tuple[list[Row], list[Link]],
    index: int,
    edit: Callable[[dict[str, Any]], None],
    passes: bool,
    topic: str | None,
) -> None:
    """Valid JSON, hashes and links all recomputed: only the chain fields' values decide."""
    rows, links = forge(log[0], index, edit, topic=topic)
    expected = None if passes else rows[index][0]
    assert FastLogCheck().check(linked(rows, links)) == expected
    assert one_pass_position(rows, links) == expected  # the one pass reports, never raises


def _in_numbers(raw: bytes) -> list[int]:
    """Places in the numbers of a state as orjson writes it (and a few in strings)."""
    numbers = re.finditer(rb"(?<=[:,\[])-?[0-9][0-9.eE+-]*", raw)
    return [i for number in numbers for i in range(number.start(), number.end() + 1)]


NUMBER_BITS = [b"-", b"+", b"0", b"00", b".", b"e", b"E", b"e+", b"-0", b"1-", b" ", b"x"]
MUTATIONS = [
    *(b"\x00", b"\x01", b"\t", b"\n", b"\x1f", b"\x7f", b"\x80", b"\xbf", b"\xc0", b"\xc3"),
    *(b"\xc3\xa9", b"\xe2\x82", b"\xed\xa0\x80", b"\xef\xbf\xbf", b"\xf0\x9f\x98\x80"),
    *(b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b'"', b"\\", b"-", b"+", b".", b"e", b"E", b"0"),
    *(b"1", b"01", b"1-2", b".5", b"5.", b"1.e5", b",", b":", b"{", b"}", b"[", b"]", b" "),
]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_states_mutated_then_forged_get_the_one_pass_verdict(
    log: tuple[list[Row], list[Link]], data: st.DataObject
) -> None:
    """Bytes of one state inserted, replaced or deleted; then its event hash recomputed
    over the canonical document of what they decode to, and the chains after it too."""
    rows = list(log[0])
    index = data.draw(st.integers(0, len(rows) - 1))
    position, hex_id, version, topic, raw = rows[index]
    placeholder = b"E" * 64
    raw = raw.replace(orjson.loads(raw)["eventHash"].encode(), placeholder)
    for _ in range(data.draw(st.integers(1, 3))):
        interesting = [i for i, byte in enumerate(raw) if byte in b'0123456789"-.:,{}[]']
        at = data.draw(st.integers(0, len(raw)) | st.sampled_from(interesting))
        kind = data.draw(st.sampled_from(["insert", "replace", "delete", "number"]))
        if kind == "number":  # a number's grammar broken: "1-2", "012", "1+", "-"
            at = data.draw(st.sampled_from(_in_numbers(raw) or [len(raw)]))
            raw = raw[:at] + data.draw(st.sampled_from(NUMBER_BITS)) + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + data.draw(st.integers(1, 3)) :]
        else:
            new = data.draw(st.sampled_from(MUTATIONS) | st.binary(min_size=1, max_size=3))
            raw = raw[:at] + new + raw[at + (len(new) if kind == "replace" else 0) :]
    aggregate_id, type_name = str(UUID(hex_id)), _type_name(topic)
    try:
        document = canonical_event_bytes(aggregate_id, version, type_name, orjson.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError):
        document = b""
    head = hashlib.sha256(document).hexdigest()
    rows[index] = (position, hex_id, version, topic, raw.replace(placeholder, head.encode()))
    rows, links = rechain(rows, index, head)
    assert FastLogCheck().check(linked(rows, links)) == one_pass_position(rows, links)
