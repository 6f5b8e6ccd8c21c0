"""A hypothesis state machine: random valid and invalid commands, views checked after each.

After every step:
- the views equal a replay of the whole log into a fresh view;
- replaying each share of the aggregates alone gives that share of the views;
- `show` of every run and checkpoint (from the views) equals the document of
  the aggregate itself;
- the seed's invariants hold in the views: a deployable checkpoint's current
  eval did not fail and its run completed; a checkpoint's family is its run's;
- stats agree with the lists;
- SPEC §9: a routed slot's active checkpoint is deployable and not rejected;
  a promotable checkpoint had >= 5 settled observations and a shadow window
  of >= 1 h (the machine's clock is moved by a rule, never slept on); every
  binding's checkpoint suits its profile; promotions and slots read from the
  views equal the aggregates' documents.

`store_url()` gives each example its store; subclasses pick the backend.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.projection_support import ACTOR, DATASETS, OTHER_FAMILY, create_run
from tests.support import READER_FAMILY, SteppingClock, eval_summary, existing_artifact
from trainledger.adapters.sqlite.shares import OWNER_COLUMN, ShareReplay, share_of
from trainledger.adapters.store import open_ledger
from trainledger.domain.deployment import DeploymentSlot
from trainledger.domain.errors import LedgerError, NotFoundError
from trainledger.domain.experiment import family_suits_profile
from trainledger.domain.ids import promotion_id, slot_id
from trainledger.domain.promotion import Promotion
from trainledger.domain.views import checkpoint_document, promotion_of, run_document, slot_of
from trainledger.domain.vocabulary import WORKER_PROFILES
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
        self.clock = SteppingClock()
        self.ledger = open_ledger(self.store_url(), clock=self.clock)
        self.observations: list[str] = []
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

    # --- SPEC §9: promotion, shadow, deployment ---------------------------------

    @rule(minutes=st.sampled_from([1, 20, 45, 70]))
    def tick(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), min_delta=st.sampled_from([0.05, 0.05, 0.5]))
    def evaluate(self, data: st.DataObject, min_delta: float) -> None:
        deployments = self.ledger.deployments
        self.attempt(deployments.evaluate, self.pick(data, self.checkpoints), min_delta=min_delta)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), review=st.booleans())
    def advance_promotion(self, data: st.DataObject, review: bool) -> None:
        self.attempt(
            self.ledger.deployments.advance,
            self.pick(data, self.checkpoints),
            review=review or data.draw(st.booleans()),
            note="reviewed",
        )

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), reason=st.sampled_from(["regressed", ""]))
    def reject_promotion(self, data: st.DataObject, reason: str) -> None:
        self.attempt(self.ledger.deployments.reject, self.pick(data, self.checkpoints), reason)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), profile=st.sampled_from(WORKER_PROFILES), times=st.integers(1, 6))
    def route(self, data: st.DataObject, profile: str, times: int) -> None:
        checkpoint_id = self.pick(data, self.checkpoints)
        for _ in range(times):
            routed = self.attempt(self.ledger.deployments.route, checkpoint_id, profile)
            if routed is not None:
                self.observations.append(routed["observationId"])

    @precondition(lambda self: self.observations)
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["accepted", "accepted", "rejected", "escalated", "nope"]),
        flags=st.booleans(),
        times=st.integers(1, 6),
    )
    def settle(self, data: st.DataObject, outcome: str, flags: bool, times: int) -> None:
        for _ in range(times):
            self.attempt(
                self.ledger.deployments.complete,
                self.pick(data, self.observations),
                outcome,
                invalid_output=flags,
                profile_rejected=flags and outcome == "escalated",
            )

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), profile=st.sampled_from(WORKER_PROFILES))
    def bind(self, data: st.DataObject, profile: str) -> None:
        checkpoint_id = self.pick(data, self.checkpoints)
        self.attempt(self.ledger.deployments.bind, profile, checkpoint_id, note="n")

    @rule(data=st.data(), profile=st.sampled_from(WORKER_PROFILES), named=st.booleans())
    def rollback(self, data: st.DataObject, profile: str, named: bool) -> None:
        to = self.pick(data, self.checkpoints) if named and self.checkpoints else None
        self.attempt(self.ledger.deployments.rollback, profile, to=to)

    @rule(profile=st.sampled_from(WORKER_PROFILES), enable=st.booleans())
    def routing(self, profile: str, enable: bool) -> None:
        deployments = self.ledger.deployments
        if enable:
            self.attempt(deployments.enable_routing, profile)
        else:
            self.attempt(deployments.disable_routing, profile, "maintenance")

    @rule(data=st.data(), steps=st.integers(2, 8), fresh=st.booleans())
    def promote(self, data: st.DataObject, steps: int, fresh: bool) -> None:
        """Take a deployable checkpoint a few valid steps towards promotable and routed
        (deep states early); a fresh deployable one when there is none, or now and then."""
        ledger, deployments = self.ledger, self.ledger.deployments
        deployable = ledger.list_checkpoints(deployable=True)["checkpoints"]
        if not deployable or (fresh and len(deployable) < 4):
            self._deployable_checkpoint()
            deployable = ledger.list_checkpoints(deployable=True)["checkpoints"]
        checkpoint_id = data.draw(st.sampled_from([c["checkpointId"] for c in deployable[:3]]))
        profile = "local-reader"
        for _ in range(steps):
            state = deployments.show_promotion(checkpoint_id)["state"]
            if state in (None, "rejected"):
                self.attempt(deployments.evaluate, checkpoint_id)
            elif state == "candidate_only":
                self.attempt(deployments.advance, checkpoint_id, review=True, note="ok")
            elif state == "shadow_ready":
                for _ in range(5):
                    routed = self.attempt(deployments.route, checkpoint_id, profile)
                    if routed is not None:
                        self.observations.append(routed["observationId"])
                        self.attempt(deployments.complete, routed["observationId"], "accepted")
                self.clock.advance(minutes=61)
                self.attempt(deployments.advance, checkpoint_id, review=True, note="ok")
            elif deployments.show_slot(profile)["activeCheckpointId"] != checkpoint_id:
                self.attempt(deployments.bind, profile, checkpoint_id)
            elif not deployments.show_slot(profile)["routingEnabled"]:
                self.attempt(deployments.enable_routing, profile)
            else:
                self.attempt(deployments.rollback, profile)

    def _deployable_checkpoint(self) -> None:
        run_id = create_run(self.ledger)
        self.runs.append(run_id)
        self.ledger.start_run(run_id, actor=ACTOR)
        created = self.ledger.register_checkpoint(
            run_id, family=READER_FAMILY, artifact_path=existing_artifact(), actor=ACTOR
        )
        checkpoint_id = created["checkpointId"]
        self.checkpoints.append(checkpoint_id)
        self.ledger.complete_run(run_id, actor=ACTOR)
        eval_id = f"eval-{len(self.eval_ids)}"
        summary = eval_summary(checkpoint_id, eval_id)
        self.ledger.attach_eval(checkpoint_id, summary, mark_deployable=True, actor=ACTOR)
        self.eval_ids.append(eval_id)

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

    @invariant()
    def promotions_and_slots_keep_their_rules(self) -> None:
        ledger, deployments = self.ledger, self.ledger.deployments
        for listed in deployments.list_slots()["slots"]:
            profile = listed["profile"]
            slot = ledger.unit_of_work.find(slot_id(profile), DeploymentSlot)
            if slot is None:
                assert listed["activeCheckpointId"] is None
                continue
            assert listed == slot_of(slot)
            for binding in listed["bindings"]:
                family = ledger.get_checkpoint(binding["checkpointId"]).family
                assert family_suits_profile(family, profile)
            if listed["routingEnabled"]:
                active = listed["activeCheckpointId"]
                assert ledger.get_checkpoint(active).deployable
                assert deployments.show_promotion(active)["state"] != "rejected"
        promotable = 0
        for checkpoint_id in self.checkpoints:
            shown = deployments.show_promotion(checkpoint_id)
            promotion = ledger.unit_of_work.find(promotion_id(_uuid(checkpoint_id)), Promotion)
            if promotion is not None:
                assert shown == promotion_of(promotion)
            decisions = shown["decisions"]
            for i, decision in enumerate(decisions):
                if decision["kind"] == "advance" and decision["state"] == "promotable":
                    self._check_promotable(checkpoint_id, decisions[:i], decision)
            promotable += shown["state"] == "promotable"
        stats = ledger.stats()
        assert stats["promotableCheckpoints"] == promotable
        routed = sum(s["routingEnabled"] for s in deployments.list_slots()["slots"])
        assert stats["routedProfiles"] == routed

    def _check_promotable(
        self, checkpoint_id: str, before: list[dict[str, Any]], decision: dict[str, Any]
    ) -> None:
        """>= 5 observations settled in a shadow window of >= 1 h, counted again here from
        the observations as they stood when the decision was made."""
        started = [d for d in before if d["kind"] == "advance" and d["state"] == "shadow_ready"]
        assert started
        start = datetime.fromisoformat(started[-1]["timestamp"])
        decided = datetime.fromisoformat(decision["timestamp"])
        assert decided - start >= timedelta(hours=1)
        hours = (decided - start) / timedelta(hours=1)
        stats = self.ledger.deployments.shadow_stats(
            checkpoint_id, window_hours=hours, as_of=decided
        )
        assert stats["totalCount"] >= 5

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.close()


def _uuid(text: str) -> UUID:
    return UUID(text)
