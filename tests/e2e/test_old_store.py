"""A ledger written by trainledger 0.1.0 keeps opening, verifying and answering the same.

`tests/fixtures/store-0.1.0` holds a small SQLite store written by the code of
0.1.0 (before the package was named `trainledger`), its export, and the
answers 0.1.0 gave on it. Stored topics (`domain.model:TrainingRun.Registered`,
...) are data inside the hashes: every later version must read them as they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import Cli

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "store-0.1.0"
IDS: dict[str, str] = json.loads((FIXTURE / "ids.json").read_text())


def answer(name: str) -> Any:
    return json.loads((FIXTURE / "answers" / name).read_text())


ADDED_SINCE = {
    # SPEC §9: a checkpoint's promotion and bindings, and their counts
    "lineage": {"promotion", "bindings"},
    "stats": {"promotableCheckpoints", "routedProfiles"},
}
"""Keys answers gained after 0.1.0: on the old store they say "nothing yet"."""


def as_then(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """The answer without the keys added since 0.1.0, after checking those say nothing."""
    added = {key: document[key] for key in ADDED_SINCE[kind]}
    if kind == "stats":
        assert added == {"promotableCheckpoints": 0, "routedProfiles": 0}
    else:
        assert added["bindings"] == []
        assert (added["promotion"]["state"], added["promotion"]["decisions"]) == (None, [])
    return {key: value for key, value in document.items() if key not in added}


@pytest.fixture
def old_store(tmp_path: Path) -> Cli:
    """The CLI on a copy of the old store (the fixture itself is never written)."""
    copy = tmp_path / "old" / "ledger.db"
    copy.parent.mkdir()
    shutil.copyfile(FIXTURE / "ledger.db", copy)
    return Cli(f"sqlite:///{copy}", cwd=tmp_path)


def test_the_old_store_verifies_with_the_digest_it_had(old_store: Cli) -> None:
    recorded = answer("verify.json")
    report = old_store.ok("verify", "--digest", recorded["digest"])
    assert report["ok"] is True
    assert report["position"] == recorded["position"] == 25
    assert report["digest"] == recorded["digest"]
    assert report["digestVerifiedUpTo"] == recorded["position"]
    assert report["projectionsMatchReplay"] is True


@pytest.mark.parametrize("key", ["checkpoint", "revokedCheckpoint"])
def test_lineage_of_the_old_store_is_unchanged(old_store: Cli, key: str) -> None:
    checkpoint_id = IDS[key]
    lineage = as_then("lineage", old_store.ok("lineage", checkpoint_id))
    assert lineage == answer(f"lineage-{checkpoint_id}.json")


def test_lists_stats_and_histories_of_the_old_store_are_unchanged(old_store: Cli) -> None:
    assert as_then("stats", old_store.ok("stats")) == answer("stats.json")
    assert old_store.ok("run", "list") == answer("runs.json")
    assert old_store.ok("checkpoint", "list") == answer("checkpoints.json")
    assert old_store.ok("eval", "list") == answer("evals.json")
    for aggregate_id in IDS.values():
        assert old_store.ok("history", aggregate_id) == answer(f"history-{aggregate_id}.json")


def test_rebuilt_views_of_the_old_store_answer_the_same(old_store: Cli) -> None:
    old_store.ok("projections", "rebuild")
    lineage = as_then("lineage", old_store.ok("lineage", IDS["checkpoint"]))
    assert lineage == answer(f"lineage-{IDS['checkpoint']}.json")
    assert as_then("stats", old_store.ok("stats")) == answer("stats.json")


def test_the_old_store_exports_exactly_what_it_exported_then(old_store: Cli) -> None:
    exported = old_store("export")
    assert exported.code == 0, exported.stderr
    assert exported.stdout == (FIXTURE / "export.jsonl").read_text()


def test_the_old_export_imports_into_a_new_store_and_extends(tmp_path: Path) -> None:
    fresh = Cli(f"sqlite:///{tmp_path / 'new' / 'ledger.db'}", cwd=tmp_path)
    summary = fresh.ok("import", str(FIXTURE / "export.jsonl"))
    assert summary["imported"] == 25
    assert fresh.ok("verify")["digest"] == answer("verify.json")["digest"]
    # A command on an aggregate written by 0.1.0 extends its chain.
    fresh.ok("run", "start", IDS["pendingRun"])
    report = fresh.ok("verify", "--digest", answer("verify.json")["digest"])
    assert report["ok"] is True
    assert report["digestVerifiedUpTo"] == 25
    assert report["position"] == 26
