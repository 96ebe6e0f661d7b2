"""`mailflow users add|reset-mfa|list|remove|digest`: people, their roles,
and how often an auditor is sent a digest."""

from __future__ import annotations

import click

from mailflow.cli.context import Context, actor_name, pass_context, reported_errors
from mailflow.core.models import DigestSchedule, NationalRole, User
from mailflow.core.outgoing import Bounce, latest_bounces
from mailflow.core.second_factor.mfa import reset_mfa
from mailflow.people.users import (
    ROLE_NAMES,
    add_user,
    get_user,
    list_users,
    remove_user,
    set_digest,
)
from mailflow.people.welcome_email import WELCOME_KIND, queue_welcome_email

DIGEST_CHOICES = [s.value for s in DigestSchedule]
DIGEST_WORDS = {
    DigestSchedule.DAILY: "a digest daily",
    DigestSchedule.WEEKLY: "a digest weekly",
    DigestSchedule.OFF: "no digests",
}


@click.group()
def users() -> None:
    """People and their roles."""


@users.command("add")
@click.argument("email")
@click.option("--name", help="Full name (needed for a new user).")
@click.option("--org", "org_code", help="Organisation code the role is held for.")
@click.option(
    "--role",
    type=click.Choice(ROLE_NAMES),
    required=True,
    help="administrator, responder or alert-only for an organisation; auditor is national.",
)
@click.option(
    "--digest",
    type=click.Choice(DIGEST_CHOICES),
    help="For an auditor: how often to send them a digest (default daily).",
)
@pass_context
def users_add(
    ctx: Context,
    email: str,
    name: str | None,
    org_code: str | None,
    role: str,
    digest: str | None,
) -> None:
    """Add a user, or give an existing user a role at another organisation."""
    with reported_errors(), ctx.transaction() as session:
        now = ctx.runtime.clock()
        added = add_user(
            session,
            email=email,
            name=name,
            role=role,
            org_code=org_code,
            now=now,
            actor=actor_name(),
            digest=DigestSchedule(digest) if digest else None,
        )
        welcome = added.created or added.reactivated
        if welcome:
            # In the same transaction: a new user always gets their link (as
            # does one added again: removal cleared their authenticator).
            link = queue_welcome_email(session, ctx.settings, user=added.user, now=now)
        where = f" at {org_code.upper()}" if org_code else ""
        verb = "added" if added.created else "updated"
        click.echo(f"{verb} {added.user.email} ({added.user.name}): {role}{where}")
        if welcome:
            what = "a link to set up an authenticator app" if link else "no set-up needed"
            click.echo(f"welcome email queued: {what}", err=True)


@users.command("digest")
@click.argument("email")
@click.argument("schedule", type=click.Choice(DIGEST_CHOICES))
@pass_context
def users_digest(ctx: Context, email: str, schedule: str) -> None:
    """Change how often an auditor is sent a digest: daily, weekly or off."""
    with reported_errors(), ctx.transaction() as session:
        user = set_digest(
            session,
            email=email,
            schedule=DigestSchedule(schedule),
            now=ctx.runtime.clock(),
            actor=actor_name(),
        )
        click.echo(f"{user.email} is sent {DIGEST_WORDS[user.digest]}")


@users.command("reset-mfa")
@click.argument("email")
@pass_context
def users_reset_mfa(ctx: Context, email: str) -> None:
    """Remove a user's authenticator app and recovery codes (a lost phone)
    and email them a new link to set one up."""
    with reported_errors(), ctx.transaction() as session:
        user = get_user(session, email)
        address = user.email
        now = ctx.runtime.clock()
        reset_mfa(session, user_id=user.id, now=now, actor=actor_name())
        link = queue_welcome_email(session, ctx.settings, user=user, now=now, reset=True)
    queued = "a new set-up link is queued" if link else "they need none (alert-only)"
    click.echo(f"second factor reset for {address}; {queued}")


@users.command("list")
@click.option("--org", "org_code", help="Only users of this organisation.")
@pass_context
def users_list(ctx: Context, org_code: str | None) -> None:
    """List active users and their roles, and whether their welcome email
    bounced (the address may be mistyped)."""
    with reported_errors(), ctx.transaction() as session:
        people = list_users(session, org_code=org_code)
        bounces = latest_bounces(session, kind=WELCOME_KIND, user_ids=[u.id for u in people])
        for user in people:
            click.echo(user_line(user, bounces.get(user.id)))


def user_line(user: User, bounce: Bounce | None) -> str:
    roles = [f"{m.role}@{m.organisation.code}" for m in user.memberships]
    if user.national_role:
        roles.append(str(user.national_role))
    if user.national_role == NationalRole.AUDITOR:
        roles.append(f"digest {user.digest}")
    line = f"{user.email:40} {user.name:30} {', '.join(sorted(roles))}"
    if bounce:
        line += f"  welcome: bounced {bounce.at:%Y-%m-%d} ({bounce.report})"
    return line


@users.command("remove")
@click.argument("email")
@click.option("--org", "org_code", help="Remove only the role at this organisation.")
@pass_context
def users_remove(ctx: Context, email: str, org_code: str | None) -> None:
    """Remove a user's role at one organisation, or (without --org) all
    their access.  Their history is kept."""
    with reported_errors(), ctx.transaction() as session:
        user = remove_user(
            session, email=email, org_code=org_code, now=ctx.runtime.clock(), actor=actor_name()
        )
        click.echo(f"removed {user.email}" + (f" from {org_code.upper()}" if org_code else ""))
