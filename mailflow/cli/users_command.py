"""`mailflow users add|import|reset-mfa|list|remove|digest`: people, their roles,
and how often an auditor is sent a digest."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailflow.cli import people_listing
from mailflow.cli.context import Context, actor_name, fail, pass_context, reported_errors
from mailflow.core.mail.templates import counted
from mailflow.core.models import DigestSchedule, User
from mailflow.core.outgoing import Bounce, latest_bounces
from mailflow.core.second_factor.mfa import reset_mfa
from mailflow.people.people_files import read_people_file
from mailflow.people.people_import import import_people
from mailflow.people.users import (
    ROLE_NAMES,
    add_user,
    get_user,
    remove_user,
    set_digest,
    users_in_pages,
)
from mailflow.people.welcome_email import (
    WELCOME_KIND,
    queue_welcome_email,
    raised_from_alert_only,
    role_held_by,
)

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
        before = role_held_by(session, email)
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
        welcome = (
            added.created
            or added.reactivated
            or raised_from_alert_only(session, added.user, before)
        )
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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header, a row a role.")
@pass_context
def users_list(ctx: Context, org_code: str | None, as_json: bool, as_csv: bool) -> None:
    """List active users and their roles, and whether their welcome email
    bounced (the address may be mistyped).  Everyone, or one organisation's
    people; printed as read, however many there are."""
    if as_json and as_csv:
        fail("give --json or --csv, not both")
    with reported_errors(), ctx.reading() as session:
        pages = (
            list(zip(page, _bounces(session, page), strict=True))
            for page in users_in_pages(session, org_code=org_code)
        )
        out = sys.stdout
        if as_json:
            people_listing.write_json(pages, out)
        elif as_csv:
            people_listing.write_csv(pages, out)
        else:
            people_listing.write_text(pages)


def _bounces(session: Session, page: list[User]) -> list[Bounce | None]:
    bounces = latest_bounces(session, kind=WELCOME_KIND, user_ids=[u.id for u in page])
    return [bounces.get(user.id) for user in page]


@users.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@pass_context
def users_import(ctx: Context, file: Path) -> None:
    """Add the people listed in FILE, and queue a welcome email to each new
    one.

    FILE is a CSV with the header email,name,org,role: a row for each role
    (org empty for an auditor).  A role a person already holds is left as
    it is (so importing a file again changes nothing); people already here
    are given the new roles but no second welcome.  A bad row (an unknown
    or closed organisation, a different role than the one held, a removed
    person, a repeated row) stops the import, naming every bad line, and
    nothing is imported."""
    with reported_errors():
        people_file = read_people_file(file)
        try:
            with ctx.transaction() as session:
                imported = import_people(
                    session,
                    ctx.settings,
                    people_file,
                    now=ctx.runtime.clock(),
                    actor=actor_name(),
                    source=file.name,
                )
        except IntegrityError:
            # Someone was added (by `users add` or another import) between
            # the import's look and its inserts: the unique address said so.
            fail(
                f"{file.name}: some of these people were added meanwhile: run it again "
                "(nothing was written)"
            )
    added = counted(imported.added, "person", "people")
    click.echo(
        f"{counted(len(people_file.rows), 'row')} read: {added} "
        f"added, {counted(imported.roles_added, 'role')} given to people already here, "
        f"{imported.unchanged} unchanged"
    )
    click.echo(f"{counted(imported.welcomes, 'welcome email')} queued", err=True)


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
