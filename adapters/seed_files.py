"""Reading a seed workspace: its registry files' bytes, as they are on disk."""

from __future__ import annotations

from pathlib import Path

from trainledger.domain.errors import ValidationError
from trainledger.domain.seed_vocabulary import SEED_FILES, SeedRefusedError
from trainledger.service.seed_import import SeedWorkspace


def read_seed_workspace(location: str) -> SeedWorkspace:
    """The seed's registry files under `location` (a file that is missing is None)."""
    root = Path(location)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise ValidationError(f"seed workspace {location!r} {what}")
    workspace = SeedWorkspace(location, {})
    files: dict[str, bytes | None] = {}
    for relative in SEED_FILES:
        try:
            files[relative] = (root / relative).read_bytes()
        except FileNotFoundError:
            files[relative] = None
        except IsADirectoryError:
            label = workspace.label(relative)
            raise SeedRefusedError(f"{label}: a directory, not a file") from None
        except OSError as error:
            raise SeedRefusedError(
                f"{workspace.label(relative)}: cannot be read ({error.strerror})"
            ) from None
    return SeedWorkspace(location, files, resolved=str(root.resolve()))
