"""Reading the outside world's files: datasets, base models and artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trainledger.domain.errors import ArtifactError, BaseModelError, DatasetError

if TYPE_CHECKING:
    from trainledger.domain.experiment import DatasetDigest

CHUNK = 1 << 20


def load_dataset(path: str) -> DatasetDigest:
    """Fingerprint a JSONL dataset: content digest, non-blank line count, first bad line."""
    # Imported here: only `experiment create` reads a dataset (start-up time).
    from trainledger.domain.experiment import DatasetDigest, sample_problem

    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset {path!r} does not exist or is not a file")
    content = hashlib.sha256()
    sample_count = 0
    problem: str | None = None
    try:
        with file.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                content.update(line)
                if line.strip():
                    sample_count += 1
                    if problem is None and (wrong := sample_problem(line)) is not None:
                        problem = f"line {number}: {wrong}"
    except OSError as error:
        raise DatasetError(f"cannot read dataset {path!r}: {error.strerror}") from None
    return DatasetDigest.from_content(
        content.hexdigest()[:16], sample_count, str(file.resolve()), problem
    )


MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""The weight files of a model directory as `save_pretrained` writes them (one suffices)."""


def locate_base_model(path: str) -> str:
    """The absolute path of a base model directory: its `config.json` and weights are there.

    Checked when an experiment is created (SPEC §12), so a mistyped or
    half-copied model is refused before a run is recorded; the trainer
    loads it, and says so when it still cannot.
    """
    directory = Path(path)
    shown = repr(path)
    try:
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise BaseModelError(f"base model {shown} {what}; expected a model directory")
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise BaseModelError(
                f"base model {shown} is not a model directory: it has no config.json"
            )
        try:
            config = json.loads(config_file.read_bytes())
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise BaseModelError(
                f"base model {shown} is not a model directory: its config.json is not a JSON object"
            )
        if not any((directory / name).is_file() for name in MODEL_WEIGHTS):
            raise BaseModelError(
                f"base model {shown} is not a model directory: it holds no weights "
                f"({', '.join(MODEL_WEIGHTS)})"
            )
        return str(directory.resolve())
    except OSError as error:
        raise BaseModelError(f"cannot read base model {shown}: {error.strerror}") from None
    except ValueError as error:  # a NUL in the path
        raise BaseModelError(f"base model {shown} is not a usable path: {error}") from None


ARTIFACT_BYTE_LIMIT = 8 << 30
"""An artifact larger than this is not hashed (an adapter is far smaller)."""


def digest_artifact(
    path: str, *, deadline: float | None = None, byte_limit: int = ARTIFACT_BYTE_LIMIT
) -> str | None:
    """sha256 of a file, or of a directory's files in sorted relative-path order.

    For a directory each file contributes its relative path (with `/`), a NUL,
    its size, a NUL and its bytes, so renames and moved bytes change the
    digest. None when the path does not exist. Links inside a directory are
    never followed out of it (ArtifactError); hashing more than `byte_limit`
    bytes or past `deadline` (a `time.monotonic()` value) is refused
    (ArtifactError), so a huge or sparse file cannot stall the ledger.
    """
    root = Path(path)
    try:
        if root.is_file():
            _check_size(path, root.stat().st_size, byte_limit)
            digest = hashlib.sha256()
            _feed(digest, root, path, deadline)
            return "sha256:" + digest.hexdigest()
        if not root.is_dir():
            return None
        files = _artifact_files(root, path)
        _check_size(path, sum(size for _, _, size in files), byte_limit)
        digest = hashlib.sha256()
        for relative, file, size in files:
            digest.update(relative.encode() + b"\0")
            digest.update(str(size).encode() + b"\0")
            _feed(digest, file, path, deadline)
    except OSError as error:
        raise ArtifactError(f"cannot read artifact {path}: {error.strerror}") from None
    return "sha256:" + digest.hexdigest()


def _artifact_files(root: Path, path: str) -> list[tuple[str, Path, int]]:
    """(relative path, file, size) of a directory's files, sorted; links checked."""
    real_root = os.path.realpath(root)
    found: list[tuple[str, Path, int]] = []
    for directory, subdirectories, names in os.walk(root, followlinks=False):
        for name in [*subdirectories, *names]:
            entry = Path(directory) / name
            if entry.is_symlink():
                target = os.path.realpath(entry)
                if os.path.commonpath([real_root, target]) != real_root:
                    relative = entry.relative_to(root).as_posix()
                    raise ArtifactError(
                        f"artifact {path} holds a link {relative} that leads outside "
                        f"the artifact (to {target}); links are not followed out of it"
                    )
        for name in names:
            file = Path(directory) / name
            if file.is_file():  # a link to a file inside the artifact counts as that file
                found.append((file.relative_to(root).as_posix(), file, file.stat().st_size))
    return sorted(found, key=lambda item: item[0])


def _check_size(path: str, size: int, byte_limit: int) -> None:
    if size > byte_limit:
        raise ArtifactError(
            f"artifact {path} is {size} bytes, over the limit of {byte_limit} bytes; "
            "it was not hashed"
        )


def _feed(digest: hashlib._Hash, file: Path, path: str, deadline: float | None) -> None:
    with file.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise ArtifactError(
                    f"hashing artifact {path} did not finish within the trainer's timeout"
                )
