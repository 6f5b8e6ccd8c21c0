"""Text renderings of SPEC §9's answers: promotions, shadow statistics, deployment slots."""

from __future__ import annotations

from typing import Any

from trainledger.cli.pictures import binding_line, check_text, promotion_line
from trainledger.cli.text import table


def promotion_text(promotion: dict[str, Any]) -> list[str]:
    if not promotion:
        return ["no such checkpoint then"]
    state = promotion["state"] or "never evaluated"
    lines = [f"checkpoint {promotion['checkpointId']}  promotion {state}"]
    if promotion.get("shadowStartedAt"):
        lines.append(f"shadow window started {promotion['shadowStartedAt']}")
    for decision in promotion["decisions"]:
        lines.append(f"  {promotion_line(decision)}")
        lines += [f"      {check_text(check)}" for check in decision["checks"]]
    return lines


def promotions_text(document: dict[str, Any]) -> list[str]:
    promotions = document["promotions"]
    if not promotions:
        return ["no promotions"]
    rows = [
        (
            p["checkpointId"],
            p["state"],
            p["decisions"][-1]["timestamp"],
            p["decisions"][-1]["actor"],
            len(p["decisions"]),
        )
        for p in promotions
    ]
    return table(("CHECKPOINT", "STATE", "DECIDED", "BY", "DECISIONS"), rows)


def observation_text(observation: dict[str, Any]) -> list[str]:
    state = observation["outcome"] or "pending"
    return [
        f"observation {observation['observationId']}  {state}",
        f"checkpoint {observation['checkpointId']} for {observation['profile']}, "
        f"routed {observation['routedAt']}",
    ]


def shadow_stats_text(stats: dict[str, Any]) -> list[str]:
    significant = "significant" if stats["significant"] else "not significant (< 5 settled)"
    lines = [
        f"checkpoint {stats['checkpointId']}  {stats['windowStart']} .. {stats['windowEnd']}",
        f"{stats['totalCount']} settled ({significant}), {stats['pendingCount']} pending",
        f"accepted {stats['acceptedCount']}, rejected {stats['rejectedCount']}, "
        f"escalated {stats['escalatedCount']}",
    ]
    rates = (
        "reject",
        "escalation",
        "acceptance",
        "timedOut",
        "threwException",
        "invalidOutput",
        "profileRejected",
    )
    lines.append(", ".join(f"{name} {stats[name + 'Rate']:.3f}" for name in rates))
    return lines


def slot_text(slot: dict[str, Any]) -> list[str]:
    active = slot["activeCheckpointId"]
    if active is None:
        return [f"{slot['profile']}: never bound"]
    routing = "routing ON" if slot["routingEnabled"] else "routing off"
    lines = [
        f"{slot['profile']}: {active}  {routing}  (bound {slot['boundAt']} by {slot['boundBy']})"
    ]
    for binding in slot["bindings"]:
        note = f": {binding['note']}" if binding.get("note") else ""
        line = binding_line({**binding, "profile": slot["profile"]})
        lines.append(f"  {binding['checkpointId']} {line}{note}")
    return lines


def slots_text(document: dict[str, Any]) -> list[str]:
    rows = [
        (
            s["profile"],
            s["activeCheckpointId"],
            "on" if s["routingEnabled"] else "off",
            s["boundAt"],
            s["boundBy"],
        )
        for s in document["slots"]
    ]
    return table(("PROFILE", "ACTIVE", "ROUTING", "BOUND", "BY"), rows)
