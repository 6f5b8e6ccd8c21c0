"""The README's Python API example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, deployable_lifecycle
from trainledger.adapters.store import open_ledger


def test_python_api_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1
    (tmp_path / "examples").symlink_to(REPO / "examples")
    completed = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    fingerprint, deployable = completed.stdout.splitlines()[0].split()
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert deployable == "True"
    assert completed.stdout.splitlines()[-1] == "True"


def test_the_promotion_and_deployment_example_runs(tmp_path: Path) -> None:
    """The `sh` block of "Promotion and deployment", on two deployable checkpoints."""
    section = (REPO / "README.md").read_text().split("### Promotion and deployment", 1)[1]
    block = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[0]
    store = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(store)
    a = deployable_lifecycle(ledger, tmp_path / "a", eval_id="ea")[1]
    b = deployable_lifecycle(ledger, tmp_path / "b", eval_id="eb")[1]
    ledger.close()
    env = {
        **os.environ,
        "A": a,
        "B": b,
        "TRAINLEDGER_STORE": store,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    served_then = [
        line for line in completed.stdout.splitlines() if line.startswith("local-reader:")
    ]
    assert f"local-reader: {a}  routing ON" in served_then[-1]  # deploy show --as-of "$T"
    assert completed.stderr == ""
