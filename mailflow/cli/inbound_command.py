"""`mailflow inbound list|retry`: what the inbound processor received and
what it made of each message; failed ones can be processed again."""

from __future__ import annotations

import click
from sqlalchemy import select

from mailflow.domain.errors import NotFound
from mailflow.domain.inbound import retry_inbound
from mailflow.domain.models import InboundMessage, InboundState


def register(group: click.Group) -> None:
    from mailflow.cli.main import Context, actor_name, fail, pass_context, reported_errors

    @group.group()
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
            query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
            if failed:
                query = query.where(InboundMessage.state == InboundState.FAILED)
            for message in session.scalars(query):
                what = message.error if message.state == InboundState.FAILED else message.outcome
                click.echo(
                    f"{message.id:>6}  {message.received_at:%Y-%m-%d %H:%M}  {message.source:5} "
                    f"{message.state:10} {message.envelope_from or '<>':30.30} {what or ''}"
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
                    fail(
                        f"message {message_id} is {message.state}, not failed (nothing was written)"
                    )
                retry_inbound(session, message_id, now=ctx.runtime.clock(), actor=actor_name())
        click.echo(f"queued {len(ids)} message(s) for processing again")
