"""How the projection reads stored events: JSON directly, older versions upcast first."""

from __future__ import annotations

from uuid import uuid4

import msgspec
import orjson
import pytest
from eventsourcing.utils import get_topic
from pydantic import BaseModel

from tests.unit.test_upcasting import Dataset
from trainledger.adapters.persistence import OrjsonTranscoder, PydanticMapper
from trainledger.adapters.store import open_ledger
from trainledger.domain.contract import EvalSummary, ExperimentSpec
from trainledger.domain.deployment import DeploymentSlot
from trainledger.domain.errors import CorruptStoreError
from trainledger.domain.model import (
    Checkpoint,
    LedgerAggregate,
    TrainingRun,
    command_context,
    stored_classes,
)
from trainledger.domain.promotion import Promotion
from trainledger.domain.seed_import import SeedSpec
from trainledger.domain.shadow import ShadowObservation
from trainledger.projections import projection
from trainledger.projections.log import LogReader
from trainledger.projections.projection import READ_VERSIONS, TRANSLATIONS, record_facts


def test_a_stored_event_of_an_older_class_version_is_upcast_before_it_is_read() -> None:
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    with command_context("alice"):
        dataset: Dataset = Dataset._open(Dataset.Registered, uuid4(), name="a")
        dataset._trigger(Dataset.Renamed, name="b", reason="typo")
    registered, renamed = dataset.collect_events()
    v1_state = orjson.loads(mapper.to_stored_event(renamed).state)
    del v1_state["reason"], v1_state["class_version"]
    reader = LogReader(open_ledger("memory://").recorder, mapper)
    rows = [
        (
            1,
            dataset.id.hex,
            1,
            get_topic(Dataset.Registered),
            mapper.to_stored_event(registered).state,
        ),
        (2, dataset.id.hex, 2, get_topic(Dataset.Renamed), orjson.dumps(v1_state)),
    ]
    first, second = reader.records(rows)
    assert orjson.loads(first.state)["name"] == "a"
    assert (second.position, second.aggregate_id, second.version) == (2, dataset.id.hex, 2)
    assert orjson.loads(second.state)["reason"] == "unrecorded (written before version 2)"


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"[1, 2]",
        b'{"host": "h"}',  # no timestamp
        b'{"timestamp": 5}',  # not a time
        b'{"timestamp": "2026-11-28T11:47:15.353248Z", "pid": 1',  # cut short
    ],
)
def test_an_unreadable_stored_event_names_its_position(stored: bytes) -> None:
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    reader = LogReader(open_ledger("memory://").recorder, mapper)
    records = reader.records([(7, uuid4().hex, 2, get_topic(TrainingRun.Started), stored)])
    with pytest.raises(CorruptStoreError, match=r"position 7 .*verify"):
        record_facts(records)


@pytest.mark.parametrize("stored", [b"not json", b'{"class_version": "2"}'])
def test_an_unreadable_event_that_may_need_upcasting_names_its_position(stored: bytes) -> None:
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    reader = LogReader(open_ledger("memory://").recorder, mapper)
    with pytest.raises(CorruptStoreError, match=r"position 7 .*verify"):
        reader.records([(7, uuid4().hex, 2, get_topic(Dataset.Renamed), stored)])


def test_the_projection_translates_every_event_of_the_aggregates_by_its_stored_topic() -> None:
    events = [
        value
        for aggregate in (TrainingRun, Checkpoint, Promotion, ShadowObservation, DeploymentSlot)
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, LedgerAggregate.Event)
        and name not in ("Event", "Created")  # the library's per-aggregate bases
        # a promotion or slot is in the views from its first decision (they name it)
        and name != "Opened"
    ]
    assert sorted(get_topic(event) for event in events) == sorted(TRANSLATIONS)
    versions = {get_topic(event): getattr(event, "class_version", 1) for event in events}
    assert versions == READ_VERSIONS


def _stored_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("state_type", "model"),
    [
        *((t.state, stored_classes()[topic]) for topic, t in TRANSLATIONS.items()),
        (projection.SpecState, ExperimentSpec),
        (projection.SpecState, SeedSpec),  # a run imported from the seed holds one
        (projection.EvalSummaryState, EvalSummary),
    ],
)
def test_the_translations_read_fields_their_events_store(
    state_type: type[msgspec.Struct], model: type[BaseModel]
) -> None:
    read = {field.encode_name for field in msgspec.structs.fields(state_type)}
    assert read <= _stored_names(model)
