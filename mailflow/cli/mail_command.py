"""`mailflow mail list|show`: read the emails written to the local maildir
(MAILFLOW_MAILDIR) on the embedded defaults, decoded, with nothing else
installed."""

from __future__ import annotations

import click

from mailflow.cli.context import Context, fail, pass_context
from mailflow.core.mail.maildir_reader import (
    MaildirMissing,
    StoredEmail,
    kind_of,
    links_in,
    plain_text,
    read_maildir,
    shown_headers,
)


def stored_emails(ctx: Context) -> list[StoredEmail]:
    settings = ctx.settings
    try:
        return read_maildir(settings.maildir)
    except MaildirMissing:
        where = (
            f"; mail goes to the relay {settings.smtp_relay.redacted()}"
            if settings.smtp_relay
            else " yet (MAILFLOW_MAILDIR, relative to the current folder)"
        )
        fail(f"no emails in {settings.maildir}{where}")
    except OSError as exc:
        fail(f"cannot read {settings.maildir}: {exc.strerror or exc}")


@click.group()
def mail() -> None:
    """Read the emails in the local maildir (MAILFLOW_MAILDIR), where
    mail goes when no relay is set, e.g. in the demo."""


@mail.command("list")
@pass_context
def mail_list(ctx: Context) -> None:
    """List the emails, numbered, newest last: when, to whom, what
    kind (alert, welcome, confirm, reply, notice) and the subject."""
    zone = ctx.settings.zone
    emails = stored_emails(ctx)
    if not emails:
        click.echo(f"no emails in {ctx.settings.maildir}", err=True)
    for number, email in enumerate(emails, start=1):
        sent = email.sent_at
        when = sent.astimezone(zone).strftime("%Y-%m-%d %H:%M") if sent else "?"
        click.echo(
            f"{number:>4}  {when}  {email.to:32}  {kind_of(email.message):7}  {email.subject}"
        )


@mail.command("show")
@click.argument("number", type=int)
@click.option("--links", is_flag=True, help="Only list the links, each whole on its own line.")
@pass_context
def mail_show(ctx: Context, number: int, links: bool) -> None:
    """Show email NUMBER (from `mailflow mail list`): the headers that
    matter and the plain text, decoded; or with --links each link,
    whole, with its label."""
    emails = stored_emails(ctx)
    if not 1 <= number <= len(emails):
        fail(
            f"no email {number}: {ctx.settings.maildir} holds {len(emails)} "
            "(see `mailflow mail list`)"
        )
    email = emails[number - 1]
    if links:
        for link in links_in(email.message):
            click.echo(f"{link.label}: {link.url}" if link.label else link.url)
        return
    for name, value in shown_headers(email.message):
        click.echo(f"{name}: {value}")
    click.echo(f"File: {email.path}")
    click.echo("")
    click.echo(plain_text(email.message).rstrip("\n"))
