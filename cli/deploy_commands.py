"""The verbs of SPEC §9: `promotion`, `shadow` and `deploy`.

Each parses its options, calls the ledger's `deployments` once and prints the answer.
"""

from __future__ import annotations

from datetime import datetime

import click

from trainledger.cli.app import (
    LedgerId,
    Session,
    as_of_option,
    cli,
    idempotency_option,
    pass_session,
)
from trainledger.cli.deploy_text import (
    observation_text,
    promotion_text,
    promotions_text,
    shadow_stats_text,
    slot_text,
    slots_text,
)
from trainledger.cli.text import history_text
from trainledger.domain.shadow_stats import SHADOW_OUTCOMES
from trainledger.domain.vocabulary import PROMOTION_STATES, WORKER_PROFILES

checkpoint_argument = click.argument("checkpoint_id", type=LedgerId("checkpoint"))
profile_argument = click.argument("profile", metavar="PROFILE")


@cli.group("promotion")
def promotion() -> None:
    """The promotion gate: evaluate, advance, reject, and its decisions."""


@cli.group("shadow")
def shadow() -> None:
    """Shadow observations of candidate checkpoints, and their statistics."""


@cli.group("deploy")
def deploy() -> None:
    """Deployment slots: one per worker profile, with bindings and routing."""


# --- promotion -------------------------------------------------------------------


@promotion.command("evaluate")
@checkpoint_argument
@click.option(
    "--min-delta",
    type=float,
    default=0.05,
    show_default=True,
    metavar="X",
    help="The least eval delta that passes.",
)
@click.option(
    "--margin",
    type=float,
    default=0.05,
    show_default=True,
    metavar="X",
    help="Slack on the reject-rate and quality baselines.",
)
@idempotency_option
@pass_session
def promotion_evaluate(
    session: Session,
    checkpoint_id: str,
    min_delta: float,
    margin: float,
    idempotency_key: str | None,
) -> None:
    """Run the gate on the checkpoint's current eval and record the decision."""
    document = session.ledger.deployments.evaluate(
        checkpoint_id,
        min_delta=min_delta,
        margin=margin,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, promotion_text)


@promotion.command("advance")
@checkpoint_argument
@click.option("--review", is_flag=True, help="Confirm the checkpoint was reviewed (required).")
@click.option("--note", required=True, help="What the review found.")
@idempotency_option
@pass_session
def promotion_advance(
    session: Session, checkpoint_id: str, review: bool, note: str, idempotency_key: str | None
) -> None:
    """candidate_only -> shadow_ready (starts the shadow window) -> promotable."""
    if not review:
        raise click.UsageError("advancing a promotion needs --review")
    document = session.ledger.deployments.advance(
        checkpoint_id,
        review=review,
        note=note,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, promotion_text)


@promotion.command("reject")
@checkpoint_argument
@click.option("--reason", required=True, help="Why the checkpoint is rejected.")
@idempotency_option
@pass_session
def promotion_reject(
    session: Session, checkpoint_id: str, reason: str, idempotency_key: str | None
) -> None:
    """Reject the checkpoint's promotion; its history stays."""
    document = session.ledger.deployments.reject(
        checkpoint_id, reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, promotion_text)


@promotion.command("show")
@checkpoint_argument
@as_of_option
@pass_session
def promotion_show(session: Session, checkpoint_id: str, as_of: datetime | None) -> None:
    """The checkpoint's promotion state and every decision, oldest first."""
    document = session.ledger.deployments.show_promotion(checkpoint_id, as_of=as_of)
    session.emit(document, promotion_text)


@promotion.command("list")
@click.option(
    "--state", type=click.Choice(PROMOTION_STATES), default=None, help="Only in this state."
)
@as_of_option
@pass_session
def promotion_list(session: Session, state: str | None, as_of: datetime | None) -> None:
    """Every checkpoint's promotion, latest decision first."""
    document = session.ledger.deployments.list_promotions(state=state, as_of=as_of)
    session.emit(document, promotions_text, short_ids=True)


# --- shadow ----------------------------------------------------------------------


@shadow.command("route")
@checkpoint_argument
@click.option(
    "--profile",
    type=click.Choice(WORKER_PROFILES),
    required=True,
    help="The profile whose work is observed.",
)
@click.option("--task-fingerprint", default=None, metavar="F", help="The task routed, if known.")
@idempotency_option
@pass_session
def shadow_route(
    session: Session,
    checkpoint_id: str,
    profile: str,
    task_fingerprint: str | None,
    idempotency_key: str | None,
) -> None:
    """Record a pending observation of the checkpoint (routedAt: the ledger's clock)."""
    document = session.ledger.deployments.route(
        checkpoint_id,
        profile,
        task_fingerprint=task_fingerprint,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, observation_text)


@shadow.command("complete")
@click.argument("observation_id")
@click.option("--outcome", type=click.Choice(SHADOW_OUTCOMES), required=True, help="How it went.")
@click.option("--timed-out", is_flag=True, help="Signal: the task timed out.")
@click.option("--threw-exception", is_flag=True, help="Signal: the worker threw.")
@click.option("--invalid-output", is_flag=True, help="Signal: the output was invalid.")
@click.option("--profile-rejected", is_flag=True, help="Signal: the profile refused the task.")
@idempotency_option
@pass_session
def shadow_complete(
    session: Session,
    observation_id: str,
    outcome: str,
    timed_out: bool,
    threw_exception: bool,
    invalid_output: bool,
    profile_rejected: bool,
    idempotency_key: str | None,
) -> None:
    """Settle a pending observation, once."""
    document = session.ledger.deployments.complete(
        observation_id,
        outcome,
        timed_out=timed_out,
        threw_exception=threw_exception,
        invalid_output=invalid_output,
        profile_rejected=profile_rejected,
        actor=session.actor,
        idempotency_key=idempotency_key,
    )
    session.emit(document, observation_text)


@shadow.command("stats")
@checkpoint_argument
@click.option(
    "--window-hours",
    type=float,
    default=24.0,
    show_default=True,
    metavar="H",
    help="The window, hours back from now (or --as-of).",
)
@as_of_option
@pass_session
def shadow_stats(
    session: Session, checkpoint_id: str, window_hours: float, as_of: datetime | None
) -> None:
    """The checkpoint's shadow statistics over the window ending now (or --as-of)."""
    document = session.ledger.deployments.shadow_stats(
        checkpoint_id, window_hours=window_hours, as_of=as_of
    )
    session.emit(document, shadow_stats_text)


# --- deploy ----------------------------------------------------------------------


@deploy.command("bind")
@profile_argument
@checkpoint_argument
@click.option("--note", default=None, help="Why this checkpoint.")
@idempotency_option
@pass_session
def deploy_bind(
    session: Session,
    profile: str,
    checkpoint_id: str,
    note: str | None,
    idempotency_key: str | None,
) -> None:
    """Bind a deployable, promoted checkpoint to the profile (routing off)."""
    document = session.ledger.deployments.bind(
        profile, checkpoint_id, note=note, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, slot_text)


@deploy.command("enable-routing")
@profile_argument
@idempotency_option
@pass_session
def deploy_enable_routing(session: Session, profile: str, idempotency_key: str | None) -> None:
    """Route work to the profile's active checkpoint (still deployable, not rejected)."""
    document = session.ledger.deployments.enable_routing(
        profile, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, slot_text)


@deploy.command("disable-routing")
@profile_argument
@click.option("--reason", required=True, help="Why routing stops.")
@idempotency_option
@pass_session
def deploy_disable_routing(
    session: Session, profile: str, reason: str, idempotency_key: str | None
) -> None:
    """Stop routing work to the profile's active checkpoint."""
    document = session.ledger.deployments.disable_routing(
        profile, reason, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, slot_text)


@deploy.command("rollback")
@profile_argument
@click.option(
    "--to", "to", type=LedgerId("checkpoint"), default=None, help="A checkpoint bound before."
)
@idempotency_option
@pass_session
def deploy_rollback(
    session: Session, profile: str, to: str | None, idempotency_key: str | None
) -> None:
    """Bind the checkpoint bound before the current one (or --to one bound before)."""
    document = session.ledger.deployments.rollback(
        profile, to=to, actor=session.actor, idempotency_key=idempotency_key
    )
    session.emit(document, slot_text)


@deploy.command("show")
@profile_argument
@as_of_option
@pass_session
def deploy_show(session: Session, profile: str, as_of: datetime | None) -> None:
    """The profile's slot: what is active, since when, by whom, and its bindings."""
    session.emit(session.ledger.deployments.show_slot(profile, as_of=as_of), slot_text)


@deploy.command("history")
@profile_argument
@pass_session
def deploy_history(session: Session, profile: str) -> None:
    """Every event of the profile's slot, oldest first."""
    document = session.ledger.deployments.slot_history(profile)
    session.emit(document, history_text, short_ids=True)


@deploy.command("list")
@as_of_option
@pass_session
def deploy_list(session: Session, as_of: datetime | None) -> None:
    """Every profile's slot."""
    session.emit(session.ledger.deployments.list_slots(as_of=as_of), slots_text, short_ids=True)
