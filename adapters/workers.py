"""What the ledger's worker processes need from the machine.

`verify` and long rebuilds start `python -m <one of our modules>` workers:
they need to know how many CPUs this process may use, an environment in
which the worker finds this project's packages wherever it is started from,
and a way to stop them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the system tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_env() -> dict[str, str]:
    """This process's environment, with the project's source root first on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Kill the workers still running, reap them all and close their output pipes."""
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
