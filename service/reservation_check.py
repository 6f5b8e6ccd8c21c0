"""`verify` and `import` on reservations: their seals and what they mean.

A store that seals (every store written since seals exist, and an old one
after its first sealing append) must hold exactly one seal per reservation,
each matching the reservation's value, in an unbroken seal chain
(`domain.chain.seal_link`). A store without any seal (written by 0.1.0) is
checked by meaning alone, as import checks an export:

- an evalId reservation names the checkpoint of its `EvalAttached` event;
- an idempotency record is a command outcome `{"request", "outcome"}`, and
  every id in the outcome is one of that command's: an aggregate the events
  carrying its key belong to, or an id that aggregate's events hold (a forged
  outcome naming an unrelated run is caught); a command that recorded no
  event may name only aggregates of the log.

The meaning checks run on sealed stores too, in the one-pass check.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from trainledger.domain.chain import LOG_GENESIS, SEAL_GENESIS, seal_link
from trainledger.domain.errors import ImportRefusedError
from trainledger.service.ports import EVAL_ID, IDEMPOTENCY, Reservation, Seal

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def outcome_ids(outcome: Any) -> set[str]:
    """The ids an outcome names: every value of an `...Id` field that is a UUID."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if (
                    isinstance(name, str)
                    and name.endswith("Id")
                    and isinstance(item, str)
                    and _UUID.match(item.lower())
                ):
                    found.add(item.lower())
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(outcome)
    return found


def idempotency_problem(key: str, value: bytes, known_ids: set[str]) -> str | None:
    """Why an idempotency record is not its command's outcome (None: it may be).

    `known_ids`: the ids the events carrying the key are about or hold.
    """
    try:
        record = json.loads(value)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and {"request", "outcome"} <= set(record)):
        return f"idempotency record {key!r} is not a command outcome"
    foreign = sorted(outcome_ids(record["outcome"]) - known_ids)
    if foreign:
        return (
            f"idempotency record {key!r} names {', '.join(foreign[:3])}, which no event of "
            "its command is about (a forged outcome)"
        )
    return None


@dataclass(frozen=True)
class ReservationProblem:
    position: int
    reason: str


@dataclass
class ReservationCheck:
    """Fed each stored event in log order; then judges the store's reservations."""

    keyed: dict[str, set[str]] = field(default_factory=dict)
    """Each idempotency key: the ids its events are about or hold."""
    held: dict[str, set[str]] = field(default_factory=dict)
    """Each aggregate: the ids its events hold (a checkpoint its run's)."""
    key_positions: dict[str, int] = field(default_factory=dict)
    evals: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Each attached evalId: (position, checkpoint id)."""

    def feed(self, position: int, aggregate_id: str, topic: str, state: dict[str, Any]) -> None:
        held = self.held.setdefault(aggregate_id.lower(), {aggregate_id.lower()})
        held.update(s.lower() for s in _strings(state) if _UUID.match(s.lower()))
        key = state.get("idempotencyKey")
        if isinstance(key, str):
            self.key_positions.setdefault(key, position)
            self.keyed.setdefault(key, set()).add(aggregate_id.lower())
        if topic.endswith(".EvalAttached"):
            evaluation = state.get("eval")
            eval_id = evaluation.get("evalId") if isinstance(evaluation, dict) else None
            if isinstance(eval_id, str):
                self.evals[eval_id] = (position, aggregate_id)

    def meaning_problem(
        self, reservations: list[Reservation], end: int
    ) -> ReservationProblem | None:
        """The first reservation that does not mean what it should; all were read before `end`."""
        for r in reservations:
            if r.kind == EVAL_ID:
                attached = self.evals.get(r.key)
                if attached is None:
                    return ReservationProblem(
                        end, f"evalId reservation {r.key!r} has no EvalAttached event"
                    )
                if r.value != attached[1].encode():
                    return ReservationProblem(
                        attached[0], f"evalId reservation {r.key!r} names another checkpoint"
                    )
            elif r.kind == IDEMPOTENCY:
                # A command may record nothing but its outcome (a trainer result
                # imported for a run finished meanwhile): its ids are then only
                # held to be the log's.
                aggregates = self.keyed.get(r.key, set(self.held))
                known = set().union(*(self.held[a] for a in aggregates))
                reason = idempotency_problem(r.key, r.value, known)
                if reason is not None:
                    return ReservationProblem(self.key_positions.get(r.key, end), reason)
            else:
                return ReservationProblem(end, f"unknown reservation kind {r.kind!r}")
        return None


def seal_problem(
    sealed: Iterable[tuple[Seal, bytes | None]],
    anchor_link: Callable[[int], str | None],
    unsealed: Callable[[], Iterable[Reservation]],
    upto: int,
) -> ReservationProblem | None:
    """The first reservation or seal that does not hold, for a log checked up to `upto`.

    `sealed`: every seal in seal chain order with its reservation's value
    (None: none), each read with its reservation (same transaction) so a
    seal a concurrent append wrote has its value; anything anchored past
    `upto` is a concurrent append's, left for the next verify.
    `anchor_link(position)`: the (checked) log chain's link at an anchor.
    `unsealed()`: the reservations without a seal, asked only if the store
    seals (a reservation and its seal are committed together).
    """
    previous = SEAL_GENESIS
    seals_anything = False
    for seal, value in sealed:
        seals_anything = True
        if seal.position > upto:
            break
        where = seal.position
        if value is None:
            return ReservationProblem(
                where, f"{seal.kind} reservation {seal.key!r} is missing (deleted)"
            )
        if hashlib.sha256(value).hexdigest() != seal.value_hash:
            return ReservationProblem(
                where, f"{seal.kind} reservation {seal.key!r} was changed after it was sealed"
            )
        link = LOG_GENESIS if seal.position == 0 else anchor_link(seal.position)
        if link is None or seal_link(previous, link, seal.kind, seal.key, value) != seal.link:
            return ReservationProblem(
                where, f"the seal of {seal.kind} {seal.key!r} is not the ledger's (seals rewritten)"
            )
        previous = seal.link
    if seals_anything:
        for r in unsealed():
            return ReservationProblem(
                upto, f"{r.kind} reservation {r.key!r} has no seal (added behind the ledger)"
            )
    return None


def last_seal_link(seals: Iterable[Seal], upto: int) -> str | None:
    """The seal chain's last link anchored at or before `upto` (None: nothing sealed)."""
    last = None
    for seal in seals:
        if seal.position > upto:
            break
        last = seal.link
    return last


# --- import's checks -----------------------------------------------------------


def check_imported_reservation(
    reservation: Reservation, event: Any, eval_id: str | None, first_of_key: bool, where: str
) -> None:
    """A reservation line of an export is on the event it is about.

    `eval_id`: the evalId the event attaches (None: it attaches none).
    """
    if reservation.kind == IDEMPOTENCY:
        if event.idempotency_key != reservation.key or not first_of_key:
            raise ImportRefusedError(
                f"{where}: idempotency record {reservation.key!r} is not on the first event "
                "of that key"
            )
        try:
            record = json.loads(reservation.value)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and {"request", "outcome"} <= set(record)):
            raise ImportRefusedError(
                f"{where}: idempotency record {reservation.key!r} is not a command outcome"
            )
    elif reservation.kind == EVAL_ID:
        if eval_id != reservation.key:
            raise ImportRefusedError(
                f"{where}: evalId reservation {reservation.key!r} is not on its EvalAttached event"
            )
        if reservation.value != str(event.originator_id).encode():
            raise ImportRefusedError(
                f"{where}: evalId reservation {reservation.key!r} names another checkpoint"
            )
    else:
        raise ImportRefusedError(f"{where}: unknown reservation kind {reservation.kind!r}")


def anchor_imported_seals(
    reservations: list[Reservation], positions: list[int]
) -> list[Reservation]:
    """Each seal's anchor (`sealedAt`, a position of the export) as an index into the
    imported events, which may be renumbered."""
    index = {position: n for n, position in enumerate(positions, start=1)}
    anchored = []
    for r in reservations:
        if r.anchor is not None and r.anchor != 0 and r.anchor not in index:
            raise ImportRefusedError(
                f"{r.kind} {r.key!r} is sealed at position {r.anchor}, which the export lacks"
            )
        anchored.append(r if r.anchor is None else replace(r, anchor=index.get(r.anchor, 0)))
    return anchored


def check_imported_meanings(
    positions: list[int],
    events: list[tuple[str, str, Any]],
    reservations: list[Reservation],
) -> None:
    """The reservations mean what `verify` holds them to; `events`: (aggregate id, topic,
    stored state) at each position."""
    meanings = ReservationCheck()
    for position, (aggregate_id, topic, state) in zip(positions, events, strict=True):
        if isinstance(state, dict):
            meanings.feed(position, aggregate_id, topic, state)
    problem = meanings.meaning_problem(reservations, positions[-1] if positions else 0)
    if problem is not None:
        raise ImportRefusedError(f"position {problem.position}: {problem.reason}")
