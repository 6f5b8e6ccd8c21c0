"""The role grants documented in README.md are enough, and no more than needed."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.postgres_cluster import SUPERUSER, SUPERUSER_PASSWORD
from tests.support import READER_FAMILY, REPO, eval_summary, existing_artifact, reader_request
from trainledger.adapters.store import open_ledger

GUIDE = REPO / "README.md"


def documented_grants() -> str:
    blocks: list[str] = re.findall(r"```sql\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    grants = [block for block in blocks if "CREATE ROLE ledger_writer" in block]
    assert len(grants) == 1, "README.md lost its role grants"
    return grants[0]


@pytest.mark.postgres
def test_a_writer_with_the_documented_grants_runs_the_ledger_but_cannot_rewrite_it(
    postgres_url: str, tmp_path: Path
) -> None:
    owner = open_ledger(postgres_url)  # the owner's first use creates the tables
    owner.close()
    database = postgres_url.rsplit("/", 1)[1]
    role = f"writer_{database}"
    grants = (
        documented_grants()
        .replace("ledger_writer", role)
        .replace("DATABASE trainledger", f'DATABASE "{database}"')
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(grants)

    writer_url = postgres_url.replace(f"{SUPERUSER}:{SUPERUSER_PASSWORD}", f"{role}:change-me")
    writer = open_ledger(writer_url)
    try:
        run_id = writer.create_experiment(
            reader_request(tmp_path),
            dataset_fingerprint="0123456789abcdef",
            sample_count=2,
            actor="w",
            idempotency_key="k",
        )["trainRunId"]
        writer.start_run(run_id, actor="w")
        checkpoint_id = writer.register_checkpoint(
            run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor="w"
        )["checkpointId"]
        writer.complete_run(run_id, actor="w")
        writer.attach_eval(
            checkpoint_id, eval_summary(checkpoint_id), mark_deployable=True, actor="w"
        )
        assert writer.read_model is not None
        assert writer.read_model.stats(None)["deployableCheckpoints"] == 1
        # Shadow observations: their view's triggers keep the counters by hour.
        routed = writer.deployments.route(checkpoint_id, "local-reader", actor="w")
        writer.deployments.complete(routed["observationId"], "accepted", actor="w")
        assert writer.deployments.shadow_stats(checkpoint_id)["acceptedCount"] == 1
        assert writer.verify()["ok"]
    finally:
        writer.close()

    with psycopg.connect(writer_url, autocommit=True) as conn:
        for statement, refusal in [
            ("UPDATE trainledger_events SET topic = topic", "append-only"),
            ("DELETE FROM trainledger_events", "permission denied"),
            ("DELETE FROM ledger_reservations", "permission denied"),
            ("DELETE FROM ledger_reservation_seals", "permission denied"),
            ("ALTER TABLE trainledger_events DISABLE TRIGGER append_only", "must be owner"),
        ]:
            with pytest.raises(psycopg.Error, match=refusal):
                conn.execute(statement)
