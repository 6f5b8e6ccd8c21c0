"""The ledger's training runs as OpenLineage RunEvents (spec 2-0-2, SPEC §11.2).

The events are built with the `openlineage-python` client's own classes
(`openlineage.client.event_v2`, `facet_v2`) and serialised with its `Serde`,
never by hand. They are read from the log through the application
(`TrainingLedger.events_after`, the documents `history` and `events` print),
in log order, up to the log's end when the export starts:

- a run's `Started` event gives a `START` RunEvent at its timestamp, its
  `Completed` a `COMPLETE`, its `Failed` a `FAIL` whose run facet
  `errorMessage` holds the failure reason (`programmingLanguage` "python":
  the ledger and every trainer it runs, `python3 <script>`, are Python). A
  pending run gives nothing, a running one only its `START`; a run failed
  before it ever started (`pending → failed`) gives only its `FAIL`: it has
  no start to report, and none is invented.
- the job: namespace `trainledger`, name the run's target model family; the
  run id: the trainRunId.
- the input dataset, on every event of the run: the training export,
  namespace `trainledger`, name its `datasetExportId` (from the spec in the
  run's first event; `dataset-<fingerprint>` where it names none, as
  `experiment create` does), with the `version` facet
  (DatasetVersionDatasetFacet) holding the `datasetFingerprint`.
- the output datasets, on `COMPLETE` and `FAIL`: each checkpoint the run
  registered (none for a dry run), namespace `trainledger`, name its
  checkpointId, with the `datasetType` facet `MODEL` and, where the
  artifact's digest was recorded, the `version` facet holding it
  (`sha256:<hex>`). A checkpoint whose artifact did not exist when it was
  registered has no digest, and so no version facet.
- `producer` (of events and facets): `urn:trainledger:<version>`, the
  installed trainledger's version.

Other aggregates' events (evals, deployability, and whatever later issues
add) are no run transitions and give no RunEvent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_type_dataset,
    dataset_version_dataset,
    error_message_run,
)
from openlineage.client.serde import Serde

from trainledger.domain.errors import ExportRefusedError

if TYPE_CHECKING:
    from trainledger.service.ledger import TrainingLedger

NAMESPACE = "trainledger"
"""The namespace of the jobs and of the datasets (training exports and checkpoints)."""
ERROR_LANGUAGE = "python"
MODEL = "MODEL"
PAGE = 1000
RUN = "TrainingRun"
CHECKPOINT = "Checkpoint"


def producer_uri() -> str:
    """Who produced the events: this trainledger, with its version."""
    return f"urn:trainledger:{version('trainledger')}"


def to_json(event: RunEvent) -> str:
    """One event as one line of JSON, by the client's own serialiser."""
    return Serde.to_json(event)


@dataclass
class _RunLineage:
    """What the RunEvents of one run need, gathered from its events so far."""

    family: str
    dataset_export_id: str
    dataset_fingerprint: str
    checkpoint_ids: list[str] = field(default_factory=list)


@dataclass
class Gathered:
    """What the log has said so far: each run's lineage, each checkpoint's digest."""

    runs: dict[str, _RunLineage] = field(default_factory=dict)
    digests: dict[str, str | None] = field(default_factory=dict)


def run_events(ledger: TrainingLedger, *, producer: str | None = None) -> Iterator[RunEvent]:
    """The RunEvents of every run, in log order (see the module docstring).

    The log is read up to its end when the export starts; events appended
    meanwhile are left for the next export.
    """
    producer = producer or producer_uri()
    stop = ledger.recorder.max_notification_id() or 0
    gathered = Gathered()
    position = 0
    while position < stop:
        page = ledger.events_after(position, PAGE)
        if not page:
            break
        for document in page:
            if document["position"] > stop:
                return
            event = lineage_event(document, gathered, producer)
            if event is not None:
                yield event
        position = page[-1]["position"]


def lineage_event(document: dict[str, Any], gathered: Gathered, producer: str) -> RunEvent | None:
    """The RunEvent of one ledger event (a document of `events`), if it is a run's transition.

    Every other event of a run or checkpoint is gathered for the events to come.
    """
    aggregate, kind, payload = document["aggregateType"], document["type"], document["payload"]
    if aggregate == CHECKPOINT and document["version"] == 1:  # its registration
        gathered.digests[document["aggregateId"]] = payload.get("artifactDigest")
        return None
    if aggregate != RUN:
        return None
    run_id = document["aggregateId"]
    if document["version"] == 1:  # the event that opens a run holds its spec
        spec = payload["spec"]
        fingerprint = spec["datasetFingerprint"]
        gathered.runs[run_id] = _RunLineage(
            family=spec["targetModelFamily"],
            # A spec always names its export; a run opened otherwise (a history
            # imported from elsewhere) may not: the name `experiment create` gives one.
            dataset_export_id=spec.get("datasetExportId") or f"dataset-{fingerprint}",
            dataset_fingerprint=fingerprint,
        )
        return None
    run = gathered.runs[run_id]
    if kind == "CheckpointLinked":
        run.checkpoint_ids.append(payload["checkpointId"])
        return None
    facets: dict[str, RunFacet] = {}
    if kind == "Started":
        state = RunState.START
    elif kind == "Completed":
        state = RunState.COMPLETE
    elif kind == "Failed":
        state = RunState.FAIL
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=payload["reason"], programmingLanguage=ERROR_LANGUAGE, producer=producer
        )
    else:
        return None
    outputs = [] if state is RunState.START else _checkpoints(run, gathered, producer)
    return RunEvent(
        eventType=state,
        eventTime=document["timestamp"],
        run=Run(runId=run_id, facets=facets),
        job=Job(namespace=NAMESPACE, name=run.family),
        inputs=[_training_export(run, producer)],
        outputs=outputs,
        producer=producer,
    )


def _training_export(run: _RunLineage, producer: str) -> InputDataset:
    facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=run.dataset_fingerprint, producer=producer
        )
    }
    return InputDataset(namespace=NAMESPACE, name=run.dataset_export_id, facets=facets)


def _checkpoints(run: _RunLineage, gathered: Gathered, producer: str) -> list[OutputDataset]:
    outputs = []
    for checkpoint_id in run.checkpoint_ids:
        if checkpoint_id not in gathered.digests:
            # The ledger registers a checkpoint in the append that links it, before the link.
            raise ExportRefusedError(
                f"checkpoint {checkpoint_id} is linked to a run before it is registered"
            )
        facets: dict[str, DatasetFacet] = {
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
                datasetType=MODEL, producer=producer
            )
        }
        digest = gathered.digests[checkpoint_id]
        if digest is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=digest, producer=producer
            )
        outputs.append(OutputDataset(namespace=NAMESPACE, name=checkpoint_id, facets=facets))
    return outputs
