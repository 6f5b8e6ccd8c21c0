"""`SealedDigests` reads the seals as it goes: the same verdicts as with every seal up front.

`verify` feeds it the seals a page at a time (never all of them in memory);
its answers must be those of the rule as first written, which held the whole
list: the plain link matches while nothing is sealed, then the link with the
last seal anchored before the position, or with any seal anchored at it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from trainledger.domain.chain import SealedDigests, log_digest


def _link(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def reference(
    seals: list[tuple[int, str]], asked: list[tuple[int, str, str | None]]
) -> tuple[list[bool], dict[int, str]]:
    """The rule with every seal up front (as `SealedDigests` was first written)."""
    answers, anchor_links, before = [], {}, 0
    for position, link, expected in asked:
        while before < len(seals) and seals[before][0] < position:
            before += 1
        same = []
        following = before
        while following < len(seals) and seals[following][0] == position:
            same.append(seals[following][1])
            following += 1
        if same:
            anchor_links[position] = link
        if expected is None:
            answers.append(False)
            continue
        earlier = [seals[before - 1][1]] if before else []
        answers.append(
            (not earlier and link == expected)
            or any(log_digest(link, s) == expected for s in earlier + same)
        )
    return answers, anchor_links


@settings(max_examples=300)
@given(
    anchors=st.lists(st.integers(0, 12), max_size=8).map(sorted),
    asked=st.lists(st.tuples(st.integers(1, 14), st.integers(0, 3)), max_size=16),
    increasing=st.booleans(),
)
def test_seals_read_as_they_go_give_the_answers_of_the_whole_list(
    anchors: list[int], asked: list[tuple[int, int]], increasing: bool
) -> None:
    seals = [(anchor, _link(100 + n)) for n, anchor in enumerate(anchors)]
    if increasing:  # as the log is read; a tampered log may also repeat or go back
        asked = sorted(dict(asked).items())
    questions: list[tuple[int, str, str | None]] = []
    for position, which in asked:
        link = _link(position)
        earlier = [s for a, s in seals if a <= position]
        expected = [
            None,
            link,
            log_digest(link, earlier[-1]) if earlier else link,
            _link(999),
        ][which]
        questions.append((position, link, expected))
    read: list[int] = []

    def paged() -> Iterator[tuple[int, str]]:
        for n, seal in enumerate(seals):
            read.append(n)
            yield seal

    streamed = SealedDigests(paged())
    answers = [streamed.at(*question) for question in questions]
    assert (answers, streamed.anchor_links) == reference(seals, questions)
    listed = SealedDigests(seals)
    assert [listed.at(*question) for question in questions] == answers
    # only the seals up to the furthest position asked (and one more, looked at) are read
    furthest = max((p for p, _, _ in questions), default=0)
    assert len(read) <= len([a for a in anchors if a <= furthest]) + 1


def test_a_digest_is_matched_with_the_last_seal_before_or_any_seal_at_its_position() -> None:
    one, two, three = _link(1), _link(2), _link(3)
    sealed = SealedDigests(iter([(2, one), (2, two), (4, three)]))
    assert sealed.at(1, _link(10), _link(10))  # nothing sealed yet: the plain link
    assert sealed.at(2, _link(20), log_digest(_link(20), one))  # a seal at the position
    assert sealed.at(2, _link(20), log_digest(_link(20), two))
    assert sealed.at(2, _link(20), _link(20))  # nothing sealed before it either
    assert sealed.at(3, _link(30), log_digest(_link(30), two))  # the last seal before
    assert not sealed.at(3, _link(30), log_digest(_link(30), one))
    assert not sealed.at(3, _link(30), _link(30))
    assert sealed.at(5, _link(50), log_digest(_link(50), three))
    assert sealed.anchor_links == {2: _link(20)}
