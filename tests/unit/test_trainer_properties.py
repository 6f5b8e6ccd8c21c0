"""Properties of the trainer adapter under arbitrary trainer output.

Whatever a trainer prints or writes, the run ends terminal, a checkpoint
exists only for a result that satisfies every rule, and what is stored reads
back with intact hash chains. The application runs in-process with a fake
runner that plays back generated output (the real subprocess runner is
exercised in tests/e2e).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.e2e.trainer_scripts import create_run
from trainledger.adapters.files import digest_artifact
from trainledger.adapters.store import open_ledger
from trainledger.adapters.trainer import locate_artifact
from trainledger.domain.chain import GENESIS_HASH
from trainledger.domain.contract import TrainerResult
from trainledger.domain.errors import ValidationError
from trainledger.domain.model import DomainEvent
from trainledger.domain.trainer import (
    TrainerExit,
    TrainerLaunch,
    TrainerStarted,
    read_trainer_output,
)
from trainledger.service.ledger import TrainingLedger

CHECKED = TrainerResult.CHECKED_FIELDS
GOOD_PATHS = ["adapter", "./adapter/../adapter"]
BAD_PATHS = ["missing", "../outside", "/", ".", "link-out", "", "\x00"]
DEFECTS = ["field", "status", "artifact", "metrics", "failure", "extra", "anything"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.just("\ud800 lone surrogate")
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@st.composite
def result_documents(draw: st.DrawFn, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """A valid result for the spec with at most one defect, or anything at all."""
    status = "dry_run" if spec["backend"] == "dry-run" else "completed"
    document: dict[str, Any] = {name: spec[name] for name in CHECKED}
    document["status"] = status
    if status == "completed":
        document["artifact"] = {"artifactPath": draw(st.sampled_from(GOOD_PATHS))}
        document["metrics"] = draw(st.dictionaries(st.text(max_size=4), json_values, max_size=3))
        document["finalLoss"] = draw(st.floats(allow_nan=False, allow_infinity=False) | st.none())
    defect = draw(st.sampled_from(["none", "none", *DEFECTS]))
    if defect == "field":
        name = draw(st.sampled_from(CHECKED))
        if draw(st.booleans()):
            document[name] = draw(st.text(max_size=6) | st.integers())
        else:
            del document[name]
    elif defect == "status":
        document["status"] = draw(st.sampled_from(["completed", "dry_run", "failed", "", "x"]))
    elif defect == "artifact":
        path = st.sampled_from(BAD_PATHS) | st.text(max_size=6)
        document["artifact"] = draw(
            st.none()
            | st.fixed_dictionaries(
                {"artifactPath": path},
                optional={"adapterFormat": st.sampled_from(["peft-adapter", "gguf"])},
            )
        )
    elif defect == "metrics":
        document["metrics"] = draw(json_values)
        document["finalLoss"] = draw(json_values)
    elif defect == "failure":
        document["status"] = "failed"
        document["failureReason"] = draw(st.none() | st.text(max_size=12) | st.just("\ud800"))
    elif defect == "extra":
        document[draw(st.text(max_size=6))] = draw(json_values)
        document["checkpointRef"] = draw(json_values)
    elif defect == "anything":
        document = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
    return document


@st.composite
def outputs(draw: st.DrawFn, spec: dict[str, Any], out: Path) -> bytes:
    """What a trainer might print: garbage, a result, a result among logs."""
    document = draw(result_documents(spec, out))
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    shape = draw(st.sampled_from(["logs", "whole", "prefixed", "trailing", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=120))
    noise = draw(st.binary(max_size=40))
    return {
        "whole": text.encode(),
        "logs": noise + b"\nstep 1 {loss 0.3}\n" + text.encode() + b"\n",
        "prefixed": b"RESULT " + text.encode(),
        "trailing": text.encode() + b"\n" + noise,
    }[shape]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrainingLedger, Path]]:
    root = tmp_path_factory.mktemp("properties")
    out = root / "out"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text("{}")
    (root / "outside").mkdir()
    (out / "link-out").symlink_to(root / "outside")
    ledger = open_ledger("memory://")
    yield ledger, out
    ledger.close()


def quick(max_examples: int) -> Callable[[Any], Any]:
    """Settings for these properties: no deadline (file I/O), the module's shared workspace."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def playback(finished: TrainerExit) -> Callable[..., TrainerExit]:
    def runner(launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]) -> TrainerExit:
        on_started(TrainerStarted(pid=4242, host="test-host", log_path="/dev/null"))
        return finished

    return runner


def assert_chains_intact(ledger: TrainingLedger, aggregate_id: Any) -> None:
    """Stored events read back with the values they were hashed with."""
    previous = GENESIS_HASH
    for stored in ledger.events.get(aggregate_id):
        assert isinstance(stored, DomainEvent)
        assert stored.previous_hash == previous
        previous = stored.chain_hash()


def assert_only_valid_lineage(ledger: TrainingLedger, run_id: str, out: Path) -> None:
    run = ledger.get_run(run_id)
    assert run.is_terminal
    assert_chains_intact(ledger, run.id)
    if run.status == "failed":
        assert run.checkpoint_ids == []
        assert run.failure_reason
        return
    for checkpoint_id in run.checkpoint_ids:
        checkpoint = ledger.get_checkpoint(checkpoint_id)
        assert_chains_intact(ledger, checkpoint.id)
        artifact = Path(checkpoint.artifact_path)
        assert artifact.resolve().is_relative_to(out.resolve())
        assert artifact.resolve() != out.resolve()
        assert checkpoint.artifact_digest == digest_artifact(str(artifact))
        assert checkpoint.family == run.family
    if not run.checkpoint_ids:
        assert run.experiment_spec().backend == "dry-run"


@quick(max_examples=120)
@given(data=st.data())
def test_any_trainer_output_ends_terminal_with_valid_lineage(
    workspace: tuple[TrainingLedger, Path], data: st.DataObject
) -> None:
    ledger, out = workspace
    backend = data.draw(st.sampled_from(["peft-trl-orpo", "dry-run"]))
    run_id = create_run(ledger, out, backend=backend)
    spec = ledger.get_run(run_id).spec
    spec_fields = spec.model_dump(mode="json")
    finished = TrainerExit(
        exit_code=data.draw(st.sampled_from([0, 0, 0, 0, 1, -9])),
        timed_out=data.draw(st.sampled_from([False] * 5 + [True])),
        timeout_seconds=5,
        stdout_tail=data.draw(outputs(spec_fields, out)),
        result_file_path=str(out / "result.json"),
        result_file=data.draw(st.none() | outputs(spec_fields, out)),
    )
    ledger.run_trainer = playback(finished)
    ledger.locate_artifact = locate_artifact
    ledger.digest_artifact = digest_artifact

    outcome = ledger.train(run_id, actor="prop")

    run = ledger.get_run(run_id)
    event(f"{run.status}, {len(run.checkpoint_ids)} checkpoint(s)")
    assert outcome["status"] == run.status
    assert_only_valid_lineage(ledger, run_id, out)
    if run.status == "completed":
        assert finished.exit_code == 0
        assert not finished.timed_out
        used = read_trainer_output(finished).result
        assert used is not None
        assert all(getattr(used, name) == getattr(spec, name) for name in CHECKED)
        assert used.status == ("dry_run" if not run.checkpoint_ids else "completed")


@quick(max_examples=80)
@given(data=st.data())
def test_any_imported_result_is_refused_or_ends_terminal_with_valid_lineage(
    workspace: tuple[TrainingLedger, Path], data: st.DataObject
) -> None:
    ledger, out = workspace
    ledger.locate_artifact = locate_artifact
    ledger.digest_artifact = digest_artifact
    run_id = create_run(ledger, out)
    document = data.draw(outputs(ledger.get_run(run_id).spec.model_dump(mode="json"), out))
    try:
        ledger.import_result(run_id, document, source="r.json", actor="prop")
    except ValidationError:
        assert ledger.get_run(run_id).status == "pending"
        return
    assert_only_valid_lineage(ledger, run_id, out)
    event(f"imported: {ledger.get_run(run_id).status}")
    again = ledger.import_result(run_id, document, source="r.json", actor="prop")
    assert again["alreadyRecorded"] is True
