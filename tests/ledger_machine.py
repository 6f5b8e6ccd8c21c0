"""A hypothesis state machine: random valid and invalid commands, views checked after each.

After every step:
- the views equal a replay of the whole log into a fresh view;
- replaying each share of the aggregates alone gives that share of the views;
- `show` of every run and checkpoint (from the views) equals the document of
  the aggregate itself;
- the seed's invariants hold in the views: a deployable checkpoint's current
  eval did not fail and its run completed; a checkpoint's family is its run's;
- stats agree with the lists.

`store_url()` gives each example its store; subclasses pick the backend.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.projection_support import ACTOR, DATASETS, OTHER_FAMILY, create_run
from tests.support import READER_FAMILY, eval_summary, existing_artifact
from trainledger.adapters.sqlite.shares import OWNER_COLUMN, ShareReplay, share_of
from trainledger.adapters.store import open_ledger
from trainledger.domain.errors import LedgerError, NotFoundError
from trainledger.domain.views import checkpoint_document, run_document
from trainledger.projections.read_model import ProjectionReadModel
from trainledger.service.ledger import TrainingLedger

FAMILIES = (READER_FAMILY, OTHER_FAMILY)


class LedgerMachine(RuleBasedStateMachine):
    ledger: TrainingLedger

    def store_url(self) -> str:
        raise NotImplementedError

    @initialize(prepared=st.integers(0, 2))
    def open_store(self, prepared: int) -> None:
        """A fresh store, maybe with completed runs that have a checkpoint (deep states early)."""
        self.ledger = open_ledger(self.store_url())
        self.runs: list[str] = []
        self.checkpoints: list[str] = []
        self.eval_ids: list[str] = []
        for _ in range(prepared):
            run_id = create_run(self.ledger)
            self.ledger.start_run(run_id, actor=ACTOR)
            created = self.ledger.register_checkpoint(
                run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
            )
            self.ledger.complete_run(run_id, actor=ACTOR)
            self.runs.append(run_id)
            self.checkpoints.append(created["checkpointId"])

    def attempt(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, actor=ACTOR, **kwargs)
        except LedgerError:
            return None

    def pick(self, data: st.DataObject, known: list[str]) -> str:
        """Mostly the newest id (so histories grow deep), else any, now and then an unknown one."""
        roll = data.draw(st.integers(0, 9))
        if not known or roll == 0:
            return str(uuid4())
        return known[-1] if roll > 4 else data.draw(st.sampled_from(known))

    # --- commands, valid or not ------------------------------------------------

    @rule(family=st.sampled_from(FAMILIES), dataset=st.sampled_from(DATASETS))
    def create(self, family: str, dataset: str) -> None:
        self.runs.append(create_run(self.ledger, family, dataset))

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        self.attempt(self.ledger.start_run, self.pick(data, self.runs))

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        self.attempt(self.ledger.complete_run, self.pick(data, self.runs))

    @rule(data=st.data(), reason=st.sampled_from(["oom", "", "diverged"]))
    def fail(self, data: st.DataObject, reason: str) -> None:
        self.attempt(self.ledger.fail_run, self.pick(data, self.runs), reason)

    @rule(data=st.data(), family=st.sampled_from(FAMILIES))
    def register(self, data: st.DataObject, family: str) -> None:
        created = self.attempt(
            self.ledger.register_checkpoint,
            self.pick(data, self.runs),
            family=family,
            artifact_path=existing_artifact(),
        )
        if created is not None:
            self.checkpoints.append(created["checkpointId"])

    @precondition(lambda self: self.checkpoints)
    @rule(
        data=st.data(),
        verdict=st.sampled_from(["pass", "fail", "compare_only"]),
        family=st.sampled_from(FAMILIES),
        mark=st.booleans(),
        reuse_id=st.booleans(),
    )
    def attach(
        self, data: st.DataObject, verdict: str, family: str, mark: bool, reuse_id: bool
    ) -> None:
        checkpoint_id = self.pick(data, self.checkpoints)
        eval_id = (
            data.draw(st.sampled_from(self.eval_ids))
            if reuse_id and self.eval_ids
            else f"eval-{len(self.eval_ids)}"
        )
        summary = eval_summary(checkpoint_id, eval_id, targetModelFamily=family, verdict=verdict)
        attached = self.attempt(
            self.ledger.attach_eval, checkpoint_id, summary, mark_deployable=mark
        )
        if attached is not None:
            self.eval_ids.append(eval_id)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data())
    def mark(self, data: st.DataObject) -> None:
        self.attempt(self.ledger.mark_deployable, self.pick(data, self.checkpoints))

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), reason=st.sampled_from(["superseded", " "]))
    def revoke(self, data: st.DataObject, reason: str) -> None:
        self.attempt(self.ledger.revoke_deployability, self.pick(data, self.checkpoints), reason)

    @precondition(lambda self: self.runs)
    @rule(
        data=st.data(),
        steps=st.integers(1, 6),
        verdict=st.sampled_from(["pass", "compare_only", "fail"]),
    )
    def advance(self, data: st.DataObject, steps: int, verdict: str) -> None:
        """Take a recent run a few valid steps further, up to an evaluated checkpoint."""
        run_id = data.draw(st.sampled_from(self.runs[-3:]))
        for _ in range(steps):
            run = self.ledger.get_run(run_id)
            if run.status == "pending":
                self.ledger.start_run(run_id, actor=ACTOR)
            elif run.status == "running" and not run.checkpoint_ids:
                created = self.ledger.register_checkpoint(
                    run_id, family=run.family, artifact_path=existing_artifact(), actor=ACTOR
                )
                self.checkpoints.append(created["checkpointId"])
            elif run.status == "running":
                self.ledger.complete_run(run_id, actor=ACTOR)
            elif run.status == "completed" and run.checkpoint_ids:
                checkpoint_id = str(run.checkpoint_ids[-1])
                eval_id = f"eval-{len(self.eval_ids)}"
                summary = eval_summary(
                    checkpoint_id, eval_id, targetModelFamily=run.family, verdict=verdict
                )
                checkpoint = self.ledger.get_checkpoint(checkpoint_id)
                mark = verdict != "fail" and not checkpoint.deployable
                self.ledger.attach_eval(checkpoint_id, summary, mark_deployable=mark, actor=ACTOR)
                self.eval_ids.append(eval_id)
                return

    @rule()
    def rebuild(self) -> None:
        report = self.ledger.rebuild_projections()
        assert report["position"] == (self.ledger.recorder.max_notification_id() or 0)

    @rule()
    def unknown_ids_are_not_found(self) -> None:
        with pytest.raises(NotFoundError):
            self.ledger.show_run(str(uuid4()))
        with pytest.raises(NotFoundError):
            self.ledger.lineage(str(uuid4()))

    # --- what must hold after every step ---------------------------------------

    @invariant()
    def views_equal_a_replay(self) -> None:
        assert self.ledger.projection_differences() == []

    @invariant()
    def each_share_replayed_alone_gives_its_share_of_the_views(self) -> None:
        """What `verify`'s workers rely on: every view row is made by one aggregate's events."""
        ledger = self.ledger
        read_model = ledger.read_model
        assert isinstance(read_model, ProjectionReadModel)
        read_model.catch_up()
        records = read_model.log.page(0, max(read_model.log.last_position(), 1))
        with read_model.view.reader() as reader:
            live = reader.dump()
        for parts in (1, 2, 3):
            replays = [ShareReplay() for _ in range(parts)]
            for record in records:
                replays[share_of(record.aggregate_id, parts)].add([record])
            shares: list[dict[str, list[tuple[object, ...]]]] = [
                {table: [] for table in live} for _ in range(parts)
            ]
            for table, rows in live.items():
                for row in rows:
                    shares[share_of(str(row[OWNER_COLUMN[table]]), parts)][table].append(row)
            assert [replay.dump() for replay in replays] == shares

    @invariant()
    def views_agree_with_aggregates_and_rules(self) -> None:
        ledger = self.ledger
        runs = {r["trainRunId"]: r for r in ledger.list_runs()["runs"]}
        assert set(runs) == set(self.runs)
        for run_id, listed in runs.items():
            assert listed == run_document(ledger.get_run(run_id))
        checkpoints = ledger.list_checkpoints()["checkpoints"]
        assert {c["checkpointId"] for c in checkpoints} == set(self.checkpoints)
        for checkpoint in checkpoints:
            assert checkpoint == checkpoint_document(
                ledger.get_checkpoint(checkpoint["checkpointId"])
            )
            run = runs[checkpoint["trainRunId"]]
            assert checkpoint["targetModelFamily"] == run["targetModelFamily"]
            if checkpoint["deployable"]:
                assert checkpoint["currentEval"]["verdict"] != "fail"
                assert run["status"] == "completed"
        stats = ledger.stats()
        assert stats["totalRuns"] == len(runs)
        assert stats["totalCheckpoints"] == len(checkpoints)
        deployable = ledger.list_checkpoints(deployable=True)["checkpoints"]
        assert stats["deployableCheckpoints"] == len(deployable)
        assert all(c["deployable"] for c in deployable)
        evals = ledger.list_evals()["evals"]
        assert stats["totalEvals"] == len(evals) == len(set(self.eval_ids))
        assert stats["failingEvals"] == len(ledger.list_evals(verdict="fail")["evals"])

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.close()
