"""`mailflow inbound list|retry|purge`: what the inbound processor received
and what it made of each message; failed ones can be processed again, and
ignored ones are deleted after the retention period."""

from __future__ import annotations

import click

from mailflow.cli.context import Context, actor_name, fail, pass_context, reported_errors
from mailflow.core.errors import NotFound
from mailflow.core.models import InboundMessage, InboundState
from mailflow.core.text import escape_controls
from mailflow.gateway.inbound_messages import recent_inbound_messages, retry_inbound
from mailflow.gateway.retention import purge_expired_inbound


@click.group()
def inbound() -> None:
    """Inbound mail: replies, bounces and everything else received."""


@inbound.command("list")
@click.option("--failed", is_flag=True, help="Only messages whose processing failed.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many, newest first.",
)
@pass_context
def inbound_list(ctx: Context, failed: bool, limit: int) -> None:
    """List received messages with their state and outcome."""
    with ctx.transaction() as session:
        for message in recent_inbound_messages(session, failed_only=failed, limit=limit):
            what = message.error if message.state == InboundState.FAILED else message.outcome
            # Rows stored before outcomes were escaped may still hold
            # control characters from a hostile message.
            sender = escape_controls(message.envelope_from or "<>")
            click.echo(
                f"{message.id:>6}  {message.received_at:%Y-%m-%d %H:%M}  {message.source:5} "
                f"{message.state:10} {sender:30.30} {escape_controls(what or '')}"
            )


@inbound.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@pass_context
def inbound_retry(ctx: Context, ids: tuple[int, ...]) -> None:
    """Process failed messages IDS again (a worker picks them up)."""
    with reported_errors(), ctx.transaction() as session:
        for message_id in ids:
            message = session.get(InboundMessage, message_id)
            if message is None:
                raise NotFound(f"no inbound message {message_id}")
            if message.state != InboundState.FAILED:
                fail(f"message {message_id} is {message.state}, not failed (nothing was written)")
            retry_inbound(session, message_id, now=ctx.runtime.clock(), actor=actor_name())
    click.echo(f"queued {len(ids)} message(s) for processing again")


@inbound.command("purge")
@pass_context
def inbound_purge(ctx: Context) -> None:
    """Delete messages processing ignored (auto-replies, unknown senders,
    junk) received more than MAILFLOW_INBOUND_RETENTION_DAYS ago.
    Processed and failed messages are kept.  `mailflow smtpd` (and
    `serve`) also do this every hour."""
    ctx.require_schema()
    purged = purge_expired_inbound(ctx.runtime, actor=actor_name())
    days = ctx.settings.inbound_retention_days
    click.echo(f"deleted {purged} ignored message(s) received more than {days} days ago")
