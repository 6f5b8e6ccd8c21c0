"""Reading the outside world's files: datasets and artifacts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from trainledger.domain.errors import DatasetError

if TYPE_CHECKING:
    from trainledger.domain.experiment import DatasetDigest

CHUNK = 1 << 20


def load_dataset(path: str) -> DatasetDigest:
    """Fingerprint a JSONL dataset: content digest and non-blank line count."""
    # Imported here: only `experiment create` reads a dataset (start-up time).
    from trainledger.domain.experiment import DatasetDigest

    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset {path!r} does not exist or is not a file")
    content = hashlib.sha256()
    sample_count = 0
    try:
        with file.open("rb") as handle:
            for line in handle:
                content.update(line)
                if line.strip():
                    sample_count += 1
    except OSError as error:
        raise DatasetError(f"cannot read dataset {path!r}: {error.strerror}") from None
    return DatasetDigest.from_content(content.hexdigest()[:16], sample_count, str(file.resolve()))


def digest_artifact(path: str) -> str | None:
    """sha256 of a file, or of a directory's files in sorted relative-path order.

    For a directory each file contributes its relative path (with `/`), a NUL,
    its size, a NUL and its bytes, so renames and moved bytes change the
    digest. None when the path does not exist.
    """
    root = Path(path)
    if root.is_file():
        digest = hashlib.sha256()
        _feed(digest, root)
        return "sha256:" + digest.hexdigest()
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    files = sorted(
        (p for p in root.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(str(os.path.getsize(file)).encode() + b"\0")
        _feed(digest, file)
    return "sha256:" + digest.hexdigest()


def _feed(digest: hashlib._Hash, file: Path) -> None:
    with file.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
