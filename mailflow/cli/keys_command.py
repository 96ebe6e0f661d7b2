"""`mailflow keys rotate|status`: the stored TOTP secrets and the secret
keys they are encrypted under (README, "Rotating the secret key")."""

from __future__ import annotations

import click
from sqlalchemy import select

from mailflow.cli.context import Context, actor_name, fail, pass_context
from mailflow.core.models import User
from mailflow.core.runtime import utc_now
from mailflow.core.second_factor.key_rotation import (
    DEFAULT_BATCH_SIZE,
    SecretCounts,
    count_secrets,
    rotate_batch,
)

# Unreadable secrets named by their person's address, up to this many.
NAMED_AT_MOST = 5


@click.group()
def keys() -> None:
    """The secret keys (MAILFLOW_SECRET_KEYS, newest first)."""


batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Secrets handled in each transaction.",
)


@keys.command("rotate")
@batch_size_option
@pass_context
def keys_rotate(ctx: Context, batch_size: int) -> None:
    """Encrypt every stored TOTP secret anew under the newest key.

    Each batch is committed on its own: run it again after an interruption
    and it carries on, leaving secrets under the newest key as they are."""
    ctx.require_schema()
    total = SecretCounts()
    after = 0
    while True:
        with ctx.runtime.sessions.begin() as session:
            batch = rotate_batch(
                session,
                secret_keys=ctx.settings.secret_keys,
                after_user_id=after,
                batch_size=batch_size,
                now=utc_now(),
                actor=actor_name(),
            )
        if batch.last_user_id is None:
            break
        total.add(batch.counts)
        after = batch.last_user_id
        checked = total.newest + total.older + len(total.unreadable)
        click.echo(f"{checked:,} secrets checked", err=True)
    click.echo(
        f"encrypted {total.older:,} TOTP secrets anew under the newest key; "
        f"{total.newest:,} were under it already"
    )
    _report_unreadable(ctx, total)


@keys.command("status")
@batch_size_option
@pass_context
def keys_status(ctx: Context, batch_size: int) -> None:
    """Count the stored TOTP secrets under the newest key and under older ones."""
    ctx.require_schema()
    with ctx.runtime.sessions() as session:
        counts = count_secrets(session, secret_keys=ctx.settings.secret_keys, batch_size=batch_size)
    click.echo(f"{len(ctx.settings.secret_keys)} keys set")
    click.echo(f"{counts.newest:,} TOTP secrets under the newest key")
    click.echo(f"{counts.older:,} under an older key (run `mailflow keys rotate`)")
    _report_unreadable(ctx, counts)


def _report_unreadable(ctx: Context, counts: SecretCounts) -> None:
    """Stop with a failure naming the people whose secret no key opens."""
    if not counts.unreadable:
        return
    with ctx.runtime.sessions() as session:
        emails = session.scalars(
            select(User.email)
            .where(User.id.in_(counts.unreadable[:NAMED_AT_MOST]))
            .order_by(User.email)
        ).all()
    more = len(counts.unreadable) - len(emails)
    named = ", ".join(emails) + (f" and {more:,} more" if more else "")
    fail(
        f"{len(counts.unreadable):,} TOTP secrets open under none of the keys ({named}): "
        "put back the key they were encrypted under, or reset each with "
        "`mailflow users reset-mfa EMAIL`",
        code=1,
    )
