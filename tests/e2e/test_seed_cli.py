"""`trainledger import-seed WORKSPACE` through real processes, on SQLite and PostgreSQL.

A user moving from the seed points the CLI at their workspace: it records
the registries, `verify` passes, the queries answer at the seed's times; the
same workspace again records nothing; a later version records only what is
new; `--dry-run` writes nothing, not even a store; a damaged file is one line
on stderr, exit 1, and nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.seed_workspace import PROMOTION, SHADOW, TRAINING, iso
from tests.seed_workspaces import FullWorkspace, at, full_workspace
from tests.support import Cli
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import NoLedgerError


def holds_no_ledger(store_url: str) -> bool:
    """Whether the store holds no ledger at all (a query would say so; nothing was created)."""
    if store_url.startswith("sqlite:///"):
        return not Path(store_url.removeprefix("sqlite:///")).exists()
    try:
        open_ledger(store_url, create=False).close()
    except NoLedgerError:
        return True
    return False


def test_a_seed_workspace_is_recorded_verified_and_answers_at_its_times(
    store_url: str, tmp_path: Path
) -> None:
    w = full_workspace()
    workspace = w.seed.write(tmp_path / "workspace")
    cli = Cli(store_url, cwd=tmp_path)
    report = cli.ok("import-seed", str(workspace))
    assert report["recorded"]["runs"] == 8
    assert report["recorded"]["bindings"] == 1
    assert report["events"] == cli.ok("verify")["position"]
    assert cli.ok("verify")["ok"] is True
    served = w.runs["served"]["trainRunId"]
    checkpoint = w.checkpoints["served"]["checkpointId"]
    assert cli.ok("run", "show", served, "--as-of", iso(at(1)))["status"] == "pending"
    assert cli.ok("run", "show", served)["completedAt"] == "2026-03-01T11:00:00Z"
    lineage = cli.ok("lineage", checkpoint)
    assert lineage["deployabilityHistory"][0]["actor"] == "seed-import"
    assert cli.ok("stats", "--as-of", iso(at(4.5)))["totalRuns"] == 5
    assert cli.ok("deploy", "show", "local-reader")["activeCheckpointId"] == checkpoint
    assert cli.ok("promotion", "show", checkpoint)["state"] == "promotable"
    assert [r["trainRunId"] for r in cli.ok("run", "list", "--status", "failed")["runs"]] == [
        w.runs["failed"]["trainRunId"]
    ]
    history = cli.ok("history", served)["events"]
    assert history[0]["type"] == "ImportedFromSeed"

    again = cli("import-seed", str(workspace))
    assert again.code == 0, again.stderr
    assert "nothing new; nothing was recorded" in again.stdout
    assert cli.ok("verify")["position"] == report["events"]


def test_a_later_version_records_only_what_is_new(store_url: str, tmp_path: Path) -> None:
    w = full_workspace()
    workspace = tmp_path / "workspace"
    cli = Cli(store_url, cwd=tmp_path)
    w.seed.write(workspace)
    first = cli.ok("import-seed", str(workspace))
    running = w.runs["running"]
    running.update(status="failed", completedAt=iso(at(9)), failureReason="killed")
    w.seed.write(workspace)
    later = cli.ok("import-seed", str(workspace))
    assert {k: v for k, v in later["recorded"].items() if v} == {"runFailures": 1}
    assert later["events"] == 2  # the failure and the import's record
    assert cli.ok("verify")["position"] == first["events"] + 2
    assert cli.ok("run", "show", running["trainRunId"])["failureReason"] == "killed"


def test_a_dry_run_writes_nothing_not_even_a_store(store_url: str, tmp_path: Path) -> None:
    workspace = full_workspace().seed.write(tmp_path / "workspace")
    cli = Cli(store_url, cwd=tmp_path)
    planned = cli.ok("import-seed", str(workspace), "--dry-run")
    assert planned["dryRun"] is True
    assert planned["recorded"]["runs"] == 8
    assert holds_no_ledger(store_url)
    text = cli("import-seed", str(workspace), "--dry-run")
    assert "(dry run): would record" in text.stdout
    assert holds_no_ledger(store_url)


Damage = Callable[[FullWorkspace, Path], None]


def _truncate(w: FullWorkspace, root: Path) -> None:
    path = root / TRAINING
    path.write_bytes(path.read_bytes()[:-40])


def _empty(w: FullWorkspace, root: Path) -> None:
    (root / SHADOW).write_bytes(b"")


def _edited(edit: Callable[[FullWorkspace], object]) -> Damage:
    """Edit the records, then write the files again (as the seed writes them)."""

    def damage(w: FullWorkspace, root: Path) -> None:
        edit(w)
        w.seed.write(root)

    return damage


def _wrong_shape(w: FullWorkspace, root: Path) -> None:
    (root / PROMOTION).write_text('{"promotions": {"a": 1}}')


DAMAGES: dict[str, tuple[Damage, str, str]] = {
    "truncated": (_truncate, TRAINING, "not valid JSON"),
    "empty": (_empty, SHADOW, "the file is empty"),
    "wrong shape": (_wrong_shape, PROMOTION, "wrong shape: promotions"),
    "duplicate ids": (
        _edited(lambda w: w.runs["pending"].update(trainRunId=w.runs["failed"]["trainRunId"])),
        TRAINING,
        "duplicate id",
    ),
    "dangling reference": (
        _edited(
            lambda w: w.checkpoints["failing"].update(
                trainRunId="0c0ffee0-0000-4000-8000-000000000000"
            )
        ),
        TRAINING,
        "is not a training run",
    ),
    "times out of order": (
        _edited(lambda w: w.runs["failed"].update(completedAt=iso(at(1)))),
        TRAINING,
        "timestamps out of order",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_a_damaged_file_is_one_line_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    damage, path, reason = DAMAGES[case]
    w = full_workspace()
    workspace = w.seed.write(tmp_path / "workspace")
    damage(w, workspace)
    store = f"sqlite:///{tmp_path / 'store' / 'ledger.db'}"
    cli = Cli(store, cwd=tmp_path)
    refused = cli.refused("import-seed", str(workspace))
    assert f"{workspace}/{path}: " in refused.stderr
    assert reason in refused.stderr
    assert holds_no_ledger(store)  # refused before a store was created


def test_a_damaged_later_version_leaves_the_store_as_it_was(store_url: str, tmp_path: Path) -> None:
    w = full_workspace()
    workspace = w.seed.write(tmp_path / "workspace")
    cli = Cli(store_url, cwd=tmp_path)
    cli.ok("import-seed", str(workspace))
    before = cli.ok("verify")
    w.runs["running"].update(status="completed", completedAt=iso(at(9)))
    w.seed.write(workspace)
    (workspace / SHADOW).write_text('{"observations": [], "version": "one"}')
    refused = cli.refused("import-seed", str(workspace))
    assert f"{SHADOW}: wrong shape: version" in refused.stderr
    after = cli.ok("verify")
    assert (after["position"], after["digest"]) == (before["position"], before["digest"])
    document = cli("import-seed", str(workspace), json_mode=True)
    assert document.code == 1
    assert document.json["error"]["code"] == "seed_refused"


def test_the_text_report_names_what_was_recorded_and_what_cannot_be_shown(
    tmp_path: Path,
) -> None:
    workspace = full_workspace().seed.write(tmp_path / "workspace")
    (workspace / PROMOTION).unlink()
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    result = cli("import-seed", str(workspace))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"import-seed {workspace}: recorded ")
    assert "recorded: runs 8, runStarts 7" in result.stdout
    assert f"  {PROMOTION}  missing, skipped" in lines
    assert "what the seed's files cannot show (never filled in):" in lines
    assert any(line.startswith("  run startedAt: the seed records no start time") for line in lines)
    assert cli("import-seed", str(tmp_path / "nowhere")).stderr.startswith("error: seed workspace")


def test_text_answers_about_an_imported_run_say_it_has_no_spec(tmp_path: Path) -> None:
    w = full_workspace()
    workspace = w.seed.write(tmp_path / "workspace")
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}", cwd=tmp_path)
    cli.ok("import-seed", str(workspace))
    checkpoint = w.checkpoints["served"]["checkpointId"]
    for fmt in ("text", "dot", "mermaid"):
        picture = cli("lineage", checkpoint, "--format", fmt)
        assert picture.code == 0, picture.stderr
        assert "imported from the seed (no experiment spec)" in picture.stdout
    shown = cli("run", "show", w.runs["served"]["trainRunId"])
    assert shown.code == 0, shown.stderr
    assert "completedAt          2026-03-01T11:00:00Z" in shown.stdout
