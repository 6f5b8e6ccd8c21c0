"""Moving from the seed: `import-seed` records a principles-disciple workspace's registries.

The work is `service.seed_import`'s; this verb reads the workspace, calls and prints.
"""

from __future__ import annotations

from typing import Any

import click

from trainledger.cli.app import Session, cli, idempotency_option, pass_session

GAP_IDS_SHOWN = 3
"""Ids listed per gap in the text report (--json lists them all)."""


@cli.command("import-seed")
@click.argument("workspace", metavar="WORKSPACE")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the report of what would be recorded; write nothing (no store is created).",
)
@idempotency_option
@pass_session
def import_seed(
    session: Session, workspace: str, dry_run: bool, idempotency_key: str | None
) -> None:
    """Record a seed workspace's registries (principles-disciple) as history, all or nothing.

    Reads .state/nocturnal/training-registry.json, .state/nocturnal/deployment-registry.json,
    promotion-registry.json and shadow-registry.json under WORKSPACE, keeping the seed's
    ids and times (actor seed-import). A corrupt file refuses the whole import; the same
    files again record nothing; a later version records only what is new.
    """
    from trainledger.adapters.seed_files import read_seed_workspace
    from trainledger.adapters.store import open_ledger
    from trainledger.domain.errors import NoLedgerError
    from trainledger.service.seed_import import check_workspace
    from trainledger.service.seed_import import import_seed as record_seed

    seed = read_seed_workspace(workspace)
    content = None
    try:
        ledger = open_ledger(session.store, create=False)
    except NoLedgerError:
        # No store yet: the files are checked before one is created (a refusal leaves
        # none), and a dry run plans on an empty ledger, never creating one.
        content = check_workspace(seed)
        ledger = open_ledger("memory://" if dry_run else session.store)
    try:
        report = record_seed(
            ledger,
            seed,
            imported_by=session.actor,
            dry_run=dry_run,
            content=content,
            idempotency_key=idempotency_key,
        )
    finally:
        ledger.close()
    session.emit(report, seed_text)


def seed_text(report: dict[str, Any]) -> list[str]:
    """The import's report: what was (or would be) recorded, the files, the gaps."""
    recorded = {k: v for k, v in report["recorded"].items() if v}
    present = {k: v for k, v in report["alreadyPresent"].items() if v}
    if report["nothingNew"]:
        lines = [f"import-seed {report['workspace']}: nothing new; nothing was recorded"]
        if report.get("sameFilesImportedAt"):
            lines.append(
                f"these files were imported at {report['sameFilesImportedAt']} "
                f"(import {report['sameFilesImportedAs']})"
            )
    elif report["dryRun"]:
        lines = [
            f"import-seed {report['workspace']} (dry run): would record {report['events']} "
            "events; nothing was written"
        ]
    else:
        lines = [
            f"import-seed {report['workspace']}: recorded {report['events']} events "
            f"at {report['importedAt']} (import {report['importId']})"
        ]
    if recorded:
        verb = "would record" if report["dryRun"] else "recorded"
        lines.append(f"{verb}: " + ", ".join(f"{k} {v}" for k, v in recorded.items()))
    if present:
        lines.append("already present: " + ", ".join(f"{k} {v}" for k, v in present.items()))
    lines.append("files:")
    for file in report["files"]:
        if file["present"]:
            lines.append(f"  {file['path']}  sha256 {file['sha256']}  ({file['size']} bytes)")
        else:
            lines.append(f"  {file['path']}  missing, skipped")
    for seed_id, ledger_id in report["idMap"].items():
        lines.append(f"id {seed_id} (not a UUID) is recorded as {ledger_id}")
    if report["gaps"]:
        lines.append("what the seed's files cannot show (never filled in):")
    for gap in report["gaps"]:
        ids = gap["ids"][:GAP_IDS_SHOWN]
        more = gap["count"] - len(ids)
        listed = ", ".join(ids) + (f" and {more} more" if more else "")
        what = " ".join(part for part in (gap["record"], gap["field"]) if part)
        lines.append(f"  {what}: {gap['gap']} [{listed}]")
    return lines
