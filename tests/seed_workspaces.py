"""A full seed workspace for the `import-seed` tests: every status, kind and gap the seed has.

Written with `bench.seed_workspace.SeedBuilder` (the seed's own formats). The
times are fixed, so answers as of them are known: `AT` names the moments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.seed_workspace import START, SeedBuilder


def at(hours: float) -> datetime:
    """START plus some hours."""
    return START + timedelta(hours=hours)


@dataclass
class FullWorkspace:
    """The builder and the records the tests name."""

    seed: SeedBuilder = field(default_factory=SeedBuilder)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)


def full_workspace() -> FullWorkspace:
    """Runs in every status, checkpoints, passing and failing evals, deployable ones, a
    promotion that went all the way, shadow observations, and a bound, routed profile.

    - run `served` (09:00-11:00): checkpoint `served` (10:58), eval pass at 12:00,
      deployable; promoted (evaluated 12:30, shadow 13:00, promotable 14:30) on six
      settled observations (one rejected) and one still pending; bound to
      local-reader at 15:00, routing on at 15:30;
    - run `recovered`: checkpoint with a failing eval, then a passing one; deployable;
    - run `failing`: checkpoint whose only eval fails; its promotion rejected;
    - run `revoked`: checkpoint whose eval link the seed's revoke cleared;
    - run `unbacked`: checkpoint the seed shows deployable with no eval;
    - runs `failed` (with a reason), `running` and `pending`.
    """
    w = FullWorkspace()
    seed = w.seed
    served = w.runs["served"] = seed.run("completed", created=at(0), completed=at(2))
    ckpt = w.checkpoints["served"] = seed.checkpoint(served, created=at(1.97), deployable=True)
    w.evals["served"] = seed.eval(ckpt, "pass", created=at(3), eval_id="eval-served")
    seed.promotion(ckpt, "promotable", created=at(3.5), shadow_started=at(4), promotable=at(5.5))
    for minutes in range(5, 35, 5):
        outcome = "rejected" if minutes == 20 else "accepted"
        seed.observation(ckpt, at(4) + timedelta(minutes=minutes), outcome)
    seed.observation(ckpt, at(5.4), None)
    seed.deployment(
        "local-reader", ckpt, deployed=at(6), updated=at(6.5), routing=True, note="first rollout"
    )

    recovered = w.runs["recovered"] = seed.run("completed", created=at(1), completed=at(3))
    ckpt = w.checkpoints["recovered"] = seed.checkpoint(recovered, deployable=True)
    w.evals["recovered-fail"] = seed.eval(ckpt, "fail", created=at(4), candidate=0.3)
    w.evals["recovered-pass"] = seed.eval(ckpt, "pass", created=at(5), candidate=0.9)

    failing = w.runs["failing"] = seed.run("completed", created=at(2), completed=at(4))
    ckpt = w.checkpoints["failing"] = seed.checkpoint(failing)
    w.evals["failing"] = seed.eval(ckpt, "fail", created=at(5), candidate=0.2)
    seed.promotion(ckpt, "rejected", created=at(6), changed=at(6), note="delta below threshold")

    revoked = w.runs["revoked"] = seed.run("completed", created=at(3), completed=at(5))
    ckpt = w.checkpoints["revoked"] = seed.checkpoint(revoked)
    w.evals["revoked"] = seed.eval(ckpt, "compare_only", created=at(6))
    del ckpt["lastEvalSummaryRef"]  # the seed's revoke: deployable false, the link cleared

    unbacked = w.runs["unbacked"] = seed.run("completed", created=at(4), completed=at(6))
    w.checkpoints["unbacked"] = seed.checkpoint(unbacked, deployable=True)

    w.runs["failed"] = seed.run("failed", created=at(5), completed=at(5.5), reason="OOM at step 40")
    w.runs["running"] = seed.run("running", created=at(6))
    w.runs["pending"] = seed.run("pending", created=at(7))
    return w
