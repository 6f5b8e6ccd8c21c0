"""A stored event's schema changes only with `class_version` and an upcaster.

The mapper upcasts old stored states on load, and the hash chain keeps
covering the event as it was written, so `verify` and later appends still
agree after an upgrade.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID, uuid4

import orjson
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.utils import get_topic

from tests.projection_support import ACTOR, create_run
from trainledger.adapters.persistence import OrjsonTranscoder, PydanticMapper
from trainledger.adapters.store import open_ledger
from trainledger.domain.chain import LogVerifier, chain_hash
from trainledger.domain.model import LedgerAggregate, TrainingRun, command_context


class Dataset(LedgerAggregate):
    """A test aggregate whose `Renamed` event gained a field in version 2."""

    name: str

    def __init__(self) -> None:
        """State is set by `Registered.apply`."""

    class Registered(LedgerAggregate.Created):
        name: str

        def apply(self, dataset: Dataset) -> None:
            dataset.name = self.name

    class Renamed(LedgerAggregate.Event):
        class_version: ClassVar[int] = 2
        name: str
        reason: str  # new in version 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason"] = "unrecorded (written before version 2)"

        def apply(self, dataset: Dataset) -> None:
            dataset.name = self.name


def test_old_stored_event_is_upcast_and_its_chain_still_verifies() -> None:
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    with command_context("alice"):
        dataset: Dataset = Dataset._open(Dataset.Registered, uuid4(), name="a")
        dataset._trigger(Dataset.Renamed, name="b", reason="typo")
    registered, renamed = dataset.collect_events()

    # What version 1 wrote: no `reason`, no class_version, its own hash.
    v1_state = orjson.loads(mapper.to_stored_event(renamed).state)
    del v1_state["reason"], v1_state["class_version"]
    v1_state["eventHash"] = chain_hash(str(dataset.id), 2, "Renamed", v1_state)
    stored_v1 = StoredEvent(dataset.id, 2, get_topic(Dataset.Renamed), orjson.dumps(v1_state))

    loaded = mapper.to_domain_event(stored_v1)
    assert isinstance(loaded, Dataset.Renamed)
    assert loaded.reason == "unrecorded (written before version 2)"
    assert loaded.chain_hash() == v1_state["eventHash"]

    # Replaying old + new events rebuilds the aggregate and its chain head,
    # and a new event appended after the upgrade continues the chain.
    replayed = loaded.mutate(registered.mutate(None))
    assert replayed is not None
    assert replayed.name == "b"
    with command_context("bob"):
        replayed._trigger(Dataset.Renamed, name="c", reason="upgrade")
    (appended,) = replayed.collect_events()
    assert appended.previous_hash == v1_state["eventHash"]

    verifier = LogVerifier()
    for position, stored in enumerate(
        [mapper.to_stored_event(registered), stored_v1, mapper.to_stored_event(appended)], 1
    ):
        verifier.feed(
            position,
            stored.originator_id,
            stored.originator_version,
            stored.topic,
            stored.state,
            orjson.loads(stored.state),
        )
    assert verifier.failure is None
    assert verifier.events == 3


def test_library_transcoder_is_not_what_stores_events() -> None:
    """Events are stored as camelCase JSON by the ledger's mapper, not the library default."""
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    with command_context("alice", "key-1"):
        dataset: Dataset = Dataset._open(Dataset.Registered, uuid4(), name="a")
    (registered,) = dataset.collect_events()
    state = orjson.loads(mapper.to_stored_event(registered).state)
    assert {"originatorTopic", "previousHash", "eventHash", "idempotencyKey"} <= set(state)
    assert state["idempotencyKey"] == "key-1"
    assert not isinstance(mapper.transcoder, JSONTranscoder)


def test_a_run_end_stored_before_trainer_result_existed_still_loads() -> None:
    """`trainerResult` came with a default, not a class_version: old events load as None."""
    ledger = open_ledger("memory://")
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    for end in ("complete", "fail"):
        run_id = create_run(ledger)
        ledger.start_run(run_id, actor=ACTOR)
        if end == "complete":
            ledger.complete_run(run_id, actor=ACTOR)
        else:
            ledger.fail_run(run_id, "oom", actor=ACTOR)
        events: list[Any] = list(ledger.repository.event_store.get(UUID(run_id)))
        *earlier, last = events
        assert isinstance(last, (TrainingRun.Completed, TrainingRun.Failed))

        # What the ledger wrote before the field existed: no `trainerResult`.
        old_state = orjson.loads(mapper.to_stored_event(last).state)
        assert old_state.pop("trainerResult") is None
        type_name = type(last).__name__
        old_state["eventHash"] = chain_hash(run_id, last.originator_version, type_name, old_state)
        stored_old = StoredEvent(
            last.originator_id,
            last.originator_version,
            get_topic(type(last)),
            orjson.dumps(old_state),
        )

        loaded = mapper.to_domain_event(stored_old)
        assert isinstance(loaded, type(last))
        assert loaded.trainer_result is None
        assert loaded.chain_hash() == old_state["eventHash"]
        run: Any = None
        for event in (*earlier, loaded):
            run = event.mutate(run)
        assert run.status == ("completed" if end == "complete" else "failed")
        assert run.trainer_result is None
