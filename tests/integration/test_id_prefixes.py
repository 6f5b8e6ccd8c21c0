"""Id prefixes from the views of each backend, and `verify`'s progress while workers check.

The CLI's prefixes and short ids (issue 15, item 20) are resolved by
`service.queries.Queries` from `ReadModel.ids_with_prefixes`, an indexed range
search in each backend's view.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from tests.support import deployable_lifecycle, reader_request
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import AmbiguousIdError
from trainledger.service.ledger import TrainingLedger
from trainledger.service.queries import Queries


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrainingLedger]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_ledger(url)
    yield opened
    opened.close()


def some_runs(ledger: TrainingLedger, tmp_path: Path, count: int) -> list[str]:
    return [
        ledger.create_experiment(
            reader_request(tmp_path),
            dataset_fingerprint="0123456789abcdef",
            sample_count=1,
            actor="a",
        )["trainRunId"]
        for _ in range(count)
    ]


def test_ids_with_prefixes_finds_runs_and_checkpoints_in_id_order(
    ledger: TrainingLedger, tmp_path: Path
) -> None:
    run, checkpoint = deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    runs = [run, *some_runs(ledger, tmp_path, 20)]
    assert ledger.read_model is not None
    everything = ledger.read_model.ids_with_prefixes([""], 100)
    assert sorted(everything) == sorted(
        [("run", UUID(r).hex) for r in runs] + [("checkpoint", UUID(checkpoint).hex)]
    )
    digit = UUID(runs[0]).hex[0]
    starting = ledger.read_model.ids_with_prefixes([digit], 100)
    wanted = sorted(UUID(r).hex for r in runs if UUID(r).hex.startswith(digit))
    assert [key for kind, key in starting if kind == "run"] == wanted
    assert len(ledger.read_model.ids_with_prefixes([digit], 1)) <= 2  # one of each kind
    both = ledger.read_model.ids_with_prefixes([UUID(run).hex[:8], UUID(checkpoint).hex[:8]], 5)
    assert {key for _, key in both} >= {UUID(run).hex, UUID(checkpoint).hex}


def test_resolve_id_and_short_ids(ledger: TrainingLedger, tmp_path: Path) -> None:
    runs = some_runs(ledger, tmp_path, 17)  # two share a first digit
    queries = ledger.queries
    for run in runs:
        assert queries.resolve_id(UUID(run).hex[:12]) == run
        assert queries.resolve_id(run[:13].upper()) == run  # with its hyphen, any case
    first = [UUID(r).hex[0] for r in runs]
    shared = next(d for d in first if first.count(d) > 1)
    with pytest.raises(AmbiguousIdError, match="ambiguous"):
        queries.resolve_id(shared)
    assert queries.resolve_id("not-an-id") == "not-an-id"
    assert queries.resolve_id(shared, kinds=("checkpoint",)) == shared  # no checkpoint yet
    assert queries.short_ids(runs) == {r: UUID(r).hex[:8] for r in runs}


class _FixedIds:
    """A read model holding just these ids (the short-id rule, apart from any backend)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = sorted(ids)

    def ids_with_prefixes(self, prefixes: list[str], limit: int) -> list[tuple[str, str]]:
        return [("run", i) for p in prefixes for i in self.ids if i.startswith(p)][:limit]


def test_short_ids_grow_until_they_are_unique() -> None:
    near = ["0123456789ab" + "0" * 20, "0123456789ac" + "0" * 20, "fedcba98" + "1" * 24]
    queries = Queries(_FixedIds(near))  # type: ignore[arg-type]
    shown = {str(UUID(i)): i for i in near}
    assert queries.short_ids(shown) == {
        str(UUID(near[0])): "0123456789ab",
        str(UUID(near[1])): "0123456789ac",
        str(UUID(near[2])): "fedcba98",
    }
    with pytest.raises(AmbiguousIdError, match="run 0123456789ab, run 0123456789ac"):
        queries.resolve_id("0123")


def test_verify_reports_progress_while_its_workers_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    deployable_lifecycle(ledger, tmp_path, eval_id="e1")
    monkeypatch.setattr(TrainingLedger, "PARALLEL_VERIFY_FROM", 1)
    monkeypatch.setattr("trainledger.adapters.sqlite.recorder.usable_cpus", lambda: 2)
    # Reports come every PROGRESS_EVERY while the workers run; a small store on a
    # quiet host is checked within the default 0.1 s (starting the workers alone
    # takes longer than this).
    monkeypatch.setattr("trainledger.service.verify.PROGRESS_EVERY", 0.001)
    reports: list[tuple[int, int]] = []
    report = ledger.verify(progress=lambda done, total: reports.append((done, total)))
    ledger.close()
    assert report["ok"]
    total = report["events"]
    assert reports[0] == (0, total)
    assert reports[-1] == (total, total)
    moving = [done for done, _ in reports[1:-1]]
    assert moving, "no progress between the start and the end"
    assert moving == sorted(moving)
    assert all(0 <= done < total for done in moving)
