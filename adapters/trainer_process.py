"""Keeping a trainer's process tree and environment apart from the ledger (Linux).

The ledger becomes the child subreaper of its trainer's tree while it runs
(`prctl(PR_SET_CHILD_SUBREAPER)`): a descendant that left the trainer's
process group (`setsid`) and was orphaned is reparented to the ledger instead
of init, so it can still be found and killed when `train` ends. The
trainer's environment carries none of the ledger's secrets.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36

SECRET_NAME = re.compile(r"^(TRAINLEDGER_STORE|PG.*|POSTGRES.*|DATABASE_URL)$")
"""Variables the ledger reads its store and credentials from."""

_CREDENTIALS_IN_VALUE = re.compile(r"://[^/\s@]*:[^/\s@]*@|password=", re.IGNORECASE)
"""A URL with a password (`scheme://user:pass@host`) or a `password=` parameter."""


def trainer_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The ledger's environment without its store URL, PostgreSQL settings or any password."""
    return {
        name: value
        for name, value in environment.items()
        if not SECRET_NAME.match(name) and not _CREDENTIALS_IN_VALUE.search(value)
    }


def _set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def subreaper() -> Iterator[set[int]]:
    """Be the child subreaper meanwhile; yields the pids of children that existed before."""
    before = descendants(os.getpid())
    enabled = _set_subreaper(True)
    try:
        yield before
    finally:
        if enabled:
            _set_subreaper(False)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        if child not in found:
            found.add(child)
            pending.extend(children.get(child, ()))
    return found


def kill_descendants(keep: set[int], timeout: float = 5.0) -> None:
    """SIGKILL and reap every descendant of this process but those in `keep` (and theirs).

    Repeated until none is left: a descendant may fork while it is being killed.
    """
    deadline = time.monotonic() + timeout
    spared: set[int] = set()
    for pid in keep:
        spared |= {pid} | descendants(pid)
    while time.monotonic() < deadline:
        remaining = descendants(os.getpid()) - spared
        if not remaining:
            return
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in remaining:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # our own (reparented) children: reap them
        time.sleep(0.01)
