"""The README's Python API example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


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
