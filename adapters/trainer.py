"""Running an external trainer as a subprocess (SPEC §4.2-5), and locating its artifact.

The trainer runs as `python3 <script> --spec <specPath> --output-dir <outputDir>`:
argv without a shell, in its own process group (so a timeout kills its
children too), with the output directory as its working directory. The spec
is written into a private temporary directory that is always removed (one left
by a killed ledger process is removed by the next `train`). stderr
goes to `<outputDir>/trainer-<experimentId>.log`; the tail of stdout is kept
in memory by a reader thread, so a chatty trainer never blocks on a full pipe.

Once the trainer's leader process exits (or times out), whatever is left in
its process group is killed: leftovers would hold stdout open forever. The
leader is only reaped after that, so its process-group id cannot be reused by
an unrelated process while we signal it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from trainledger.adapters.trainer_process import kill_descendants, subreaper, trainer_environment
from trainledger.domain.trainer import (
    RESULT_FILE_LIMIT,
    STDERR_TAIL_BYTES,
    STDOUT_LIMIT,
    ArtifactLocation,
    TrainerExit,
    TrainerLaunch,
    TrainerStarted,
    log_file_name,
    result_file_name,
)

REFERENCE_TRAINER: Final = str(Path(__file__).with_name("reference_trainer.py"))
"""The bundled reference trainer, the default script of `train`."""

TERMINATE_GRACE_SECONDS = 2.0
"""After SIGTERM (a timeout, Ctrl-C), how long the trainer may take before SIGKILL."""

READER_DRAIN_SECONDS = 2.0
"""How long to wait for stdout's end once the process group is gone."""


def read_capped(path: str | Path, limit: int = RESULT_FILE_LIMIT) -> bytes:
    """A file's bytes; ValueError if it is larger than `limit`, OSError if unreadable."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {limit} bytes")
    return data


def locate_artifact(reported: str, output_dir: str) -> ArtifactLocation:
    """Resolve an artifact path (relative ones against the output dir), following symlinks."""
    root = os.path.realpath(Path(output_dir).absolute())
    try:
        candidate = Path(reported)
        if not candidate.is_absolute():
            candidate = Path(root) / candidate
        resolved = os.path.realpath(candidate)
        exists = os.path.exists(resolved)
    except (OSError, ValueError):
        # NUL bytes, undecodable names: not a path the filesystem can hold.
        return ArtifactLocation(reported, reported, root, exists=False)
    return ArtifactLocation(reported, resolved, root, exists)


class _StdoutTail:
    """Reads a pipe to its end in a thread, keeping only the last `limit` bytes."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self._pipe = pipe
        self._limit = limit
        self._tail = bytearray()
        self.size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="trainer-stdout", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fd = self._pipe.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(timeout=0.1):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return
                self.size += len(chunk)
                self._tail += chunk
                if len(self._tail) > self._limit:
                    del self._tail[: len(self._tail) - self._limit]

    def finish(self, timeout: float) -> bytes:
        """Wait for the end of the output (or give up after `timeout`), return the tail."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join()
        self._pipe.close()
        return bytes(self._tail)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_exited(pid: int, timeout: float | None) -> bool:
    """Wait until `pid` has exited, without reaping it. False if `timeout` passed first."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    while True:
        try:
            status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if status is not None:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        now = time.monotonic()
        remaining = float("inf") if deadline is None else deadline - now
        # Poll at 5% of the time waited so far (1 ms to 50 ms): a quick trainer's
        # exit is seen within a millisecond or two, a long one costs few wake-ups.
        pause = min(0.001 + (now - started) / 20, 0.05)
        time.sleep(max(0.0, min(pause, remaining)))


class SubprocessTrainerRunner:
    """The trainer runner port, with real subprocesses."""

    def __init__(
        self, *, python: str = sys.executable, default_script: str = REFERENCE_TRAINER
    ) -> None:
        self.python = python
        self.default_script = default_script

    def __call__(
        self, launch: TrainerLaunch, on_started: Callable[[TrainerStarted], None]
    ) -> TrainerExit:
        """Run the trainer to its end or its timeout; see the module docstring."""
        spec = launch.spec
        script = Path(launch.script or self.default_script).absolute()
        output_dir = Path(spec.outputDir).absolute()
        result_path = output_dir / result_file_name(spec)
        launch_error = _why_not_startable(script)
        if launch_error is not None:
            return TrainerExit(launch_error=launch_error)
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            output_dir_identity = _directory_identity(output_dir)
        except OSError as error:
            return TrainerExit(
                launch_error=f"cannot create output directory {output_dir}: {error.strerror}"
            )
        stale_result = _identity(result_path)
        log_path = output_dir / log_file_name(spec)
        log_start = _size(log_path)
        remove_abandoned_spec_dirs(Path(tempfile.gettempdir()))
        with tempfile.TemporaryDirectory(prefix=spec_dir_prefix(os.getpid())) as private_dir:
            spec_path = Path(private_dir) / f"experiment-{spec.experimentId}.json"
            spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
            argv = [
                self.python,
                str(script),
                "--spec",
                str(spec_path),
                "--output-dir",
                str(output_dir),
            ]
            with subreaper() as ledger_children:
                try:
                    with open(log_path, "ab") as log:
                        process = subprocess.Popen(
                            argv,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=log,
                            cwd=output_dir,
                            env=trainer_environment(os.environ),
                            start_new_session=True,
                        )
                except OSError as error:
                    return TrainerExit(launch_error=f"cannot launch trainer {script}: {error}")
                try:
                    exit_code, timed_out, stdout_tail, stdout_size = self._supervise(
                        process, launch.timeout_seconds, on_started, str(log_path)
                    )
                finally:
                    # Descendants that left the trainer's group were reparented to us.
                    kill_descendants(keep=ledger_children)
        replaced = _directory_identity_or_none(output_dir) != output_dir_identity
        result_file, note = _read_result_file(result_path, stale_result)
        return TrainerExit(
            log_path=str(log_path),
            stderr_tail=_log_tail(log_path, log_start),
            output_dir_problem=(
                f"the output directory {output_dir} was replaced while the trainer ran "
                "(by a link or another directory); its contents are not trusted"
                if replaced
                else None
            ),
            exit_code=exit_code,
            timed_out=timed_out,
            timeout_seconds=launch.timeout_seconds,
            stdout_tail=stdout_tail,
            stdout_size=stdout_size,
            result_file_path=str(result_path),
            result_file=result_file,
            result_file_note=note,
        )

    @staticmethod
    def _supervise(
        process: subprocess.Popen[bytes],
        timeout: float,
        on_started: Callable[[TrainerStarted], None],
        log_path: str,
    ) -> tuple[int, bool, bytes, int]:
        """Record the start, wait for the end or the timeout, kill the group; the facts.

        Called right after the trainer is spawned: everything after the spawn is
        inside the `try`, so a Ctrl-C at any moment gives the trainer its SIGTERM
        and grace period (a Ctrl-C before the tail reader starts, too)."""
        assert process.stdout is not None
        pgid = process.pid  # start_new_session: the trainer leads its own group
        stdout: _StdoutTail | None = None
        timed_out = False
        try:
            stdout = _StdoutTail(process.stdout, STDOUT_LIMIT)
            on_started(
                TrainerStarted(pid=process.pid, host=socket.gethostname(), log_path=log_path)
            )
            if not _wait_exited(process.pid, timeout):
                timed_out = True
                _signal_group(pgid, signal.SIGTERM)
                _wait_exited(process.pid, TERMINATE_GRACE_SECONDS)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or the start could not be recorded: the
            # trainer gets SIGTERM and a short grace period, then SIGKILL.
            try:
                _signal_group(pgid, signal.SIGTERM)
                _wait_exited(process.pid, TERMINATE_GRACE_SECONDS)
            finally:
                _signal_group(pgid, signal.SIGKILL)
                process.wait()
                if stdout is not None:
                    stdout.finish(READER_DRAIN_SECONDS)
            raise
        # The leader has exited but is not reaped yet: kill what it left behind.
        _signal_group(pgid, signal.SIGKILL)
        exit_code = process.wait()
        tail = stdout.finish(READER_DRAIN_SECONDS)
        return exit_code, timed_out, tail, stdout.size


SPEC_DIR_PREFIX: Final = "trainledger-spec-"


def _host_tag() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())


def spec_dir_prefix(pid: int) -> str:
    """Private spec directories are named for the host and the ledger process holding them."""
    return f"{SPEC_DIR_PREFIX}{_host_tag()}-{pid}-"


def remove_abandoned_spec_dirs(temp_dir: Path) -> list[Path]:
    """Remove spec directories of this host's ledger processes that no longer exist.

    A ledger process killed while its trainer ran (SIGKILL, power loss) never
    removes its private spec directory; the next `train` does. Directories of
    live processes, of other hosts or users, and anything else are left alone.
    """
    own = f"{SPEC_DIR_PREFIX}{_host_tag()}-"
    removed: list[Path] = []
    try:
        entries = list(temp_dir.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name.removeprefix(own).split("-", 1)[0]
        if not entry.name.startswith(own) or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _process_exists(pid):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read_result_file(
    path: Path, before_launch: tuple[int, int, int] | None
) -> tuple[bytes | None, str | None]:
    """The result file's bytes if this trainer wrote it as a regular file, else why not."""
    try:
        link = path.lstat()
    except OSError:
        return None, "was not found"
    if not stat.S_ISREG(link.st_mode):
        return None, "is not a regular file (a link, FIFO or device); ignored"
    if _identity(path) == before_launch:
        return None, "is left over from before the trainer started (not rewritten); ignored"
    try:
        # Never follow a link swapped in meanwhile, never block on a FIFO.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return None, f"could not be read: {error.strerror}"
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None, "is not a regular file (a link, FIFO or device); ignored"
        data = handle.read(RESULT_FILE_LIMIT + 1)
    if len(data) > RESULT_FILE_LIMIT:
        return None, f"is larger than {RESULT_FILE_LIMIT} bytes"
    return data, None


def _why_not_startable(script: Path) -> str | None:
    """Why `python3 script` cannot run, or None."""
    if script.is_file():
        return None
    if script.exists():
        return f"trainer script is not a file: {script}"
    if not script.parent.is_dir():
        return f"trainer script not found: {script} (no such directory {script.parent})"
    return f"trainer script not found: {script}"


def _directory_identity(path: Path) -> tuple[str, int, int]:
    """Where a directory really is: its resolved path, device and inode."""
    found = path.stat()
    return (os.path.realpath(path), found.st_dev, found.st_ino)


def _directory_identity_or_none(path: Path) -> tuple[str, int, int] | None:
    try:
        return _directory_identity(path)
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_tail(path: Path, start: int) -> str:
    """The last bytes this trainer wrote to its log (not a previous run's)."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(start, end - STDERR_TAIL_BYTES))
            return handle.read(STDERR_TAIL_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""
