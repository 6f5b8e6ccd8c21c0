"""What `import-seed` records beside the seed's runs, checkpoints and evals.

- `SeedSpec`: what the seed's registry kept of a run's experiment spec (the
  run's record held five of its fields; the whole spec went only to a
  temporary file). A run imported from the seed holds it instead of an
  `ExperimentSpec` (`TrainingRun.ImportedFromSeed`).
- `SeedImport`: one aggregate per set of imported files, opened by the import
  that recorded something from them: when (the ledger's clock), who ran it,
  which files with their sha256 digests, and the import's report (what was
  recorded, what was already present, what the files cannot show). Its id is
  derived from the files' digests (`seed_import_id`), so the same files
  imported again are recognised without reading anything else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainledger.domain.aggregate import LedgerAggregate
from trainledger.domain.seed_vocabulary import seed_import_id


class SeedSpec(BaseModel):
    """What the seed's registry kept of a run's spec, under the spec's names.

    The seed's run record names the dataset export `exportId`; here it is the
    spec's `datasetExportId`. Nothing the seed did not record is filled in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    experimentId: str = Field(min_length=1)  # noqa: N815
    targetModelFamily: str = Field(min_length=1)  # noqa: N815
    datasetFingerprint: str  # noqa: N815
    datasetExportId: str | None = None  # noqa: N815
    configFingerprint: str | None = None  # noqa: N815


class SeedFile(BaseModel):
    """One registry file an import read (or found missing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    """Relative to the workspace, as the seed names it."""
    sha256: str | None
    """None: the file was missing."""
    size: int | None


class SeedImport(LedgerAggregate):
    """The import of one set of seed files: when, by whom, what it found."""

    workspace: str
    files: list[SeedFile]
    imported_by: str
    report: dict[str, Any]

    def __init__(self) -> None:
        """State is set by `Recorded.apply`."""

    class Recorded(LedgerAggregate.Created):
        workspace: str
        files: list[SeedFile]
        imported_by: str
        """Who ran the import (the events from the files carry `SEED_ACTOR`)."""
        report: dict[str, Any]

        def apply(self, record: SeedImport) -> None:
            record.workspace = self.workspace
            record.files = list(self.files)
            record.imported_by = self.imported_by
            record.report = dict(self.report)

    @classmethod
    def record(
        cls, workspace: str, files: list[SeedFile], imported_by: str, report: dict[str, Any]
    ) -> SeedImport:
        """Record an import that recorded something; saved with what it recorded."""
        digests = {file.path: file.sha256 for file in files}
        record: SeedImport = cls._open(
            cls.Recorded,
            seed_import_id(digests),
            workspace=workspace,
            files=files,
            imported_by=imported_by,
            report=report,
        )
        return record
