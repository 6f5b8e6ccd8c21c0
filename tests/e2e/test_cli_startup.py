"""Queries answer from the projections, so their process loads no event model.

Start-up is most of a CLI query's time (bench figure 5): pydantic, the
contract and the aggregates are imported only by the verbs that need them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, deployable_lifecycle
from trainledger.adapters.store import open_ledger

COMMAND_ONLY = (
    "pydantic",
    "trainledger.domain.contract",
    "trainledger.domain.model",
    "trainledger.domain.experiment",
    "openlineage",  # the OpenLineage client: only `export --format openlineage` loads it
)

# Runs the CLI in this process, then reports which command-only modules it loaded.
PROBE = """
import json, sys
from trainledger.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    code = done.code
loaded = [name for name in json.loads(sys.stdin.read()) if name in sys.modules]
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def loaded_by(store: str, *args: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, "--store", store, "--json", *args],
        input=json.dumps(COMMAND_ONLY),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(completed.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, completed.stderr
    loaded: list[str] = report["loaded"]
    return loaded


@pytest.mark.parametrize(
    "query",
    [("lineage", "{checkpoint}"), ("run", "show", "{run}"), ("run", "list"), ("stats",)],
)
def test_a_query_loads_no_event_model_even_when_it_projects_new_events_first(
    tmp_path: Path, sqlite_url: str, query: tuple[str, ...]
) -> None:
    ledger = open_ledger(sqlite_url)
    run_id, checkpoint_id = deployable_lifecycle(ledger, tmp_path / "out", eval_id="e-1")
    ledger.close()
    args = [arg.format(run=run_id, checkpoint=checkpoint_id) for arg in query]
    assert loaded_by(sqlite_url, *args) == []
