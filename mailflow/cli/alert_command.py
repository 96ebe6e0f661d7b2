"""`mailflow alert issue|update|close`: what a publisher does to an alert.
The reports (`show`, `status`, `list`) are in alert_report_command."""

from __future__ import annotations

from pathlib import Path

import click

from mailflow.alerts.alert_files import read_alert_file, read_update_file
from mailflow.alerts.closing import close_alert
from mailflow.alerts.issuing import IssuedAlert, issue_alert
from mailflow.alerts.updates import PublishedUpdate, publish_update
from mailflow.cli import alert_long_lists
from mailflow.cli.alert_report_command import alert_list_command, alert_show, alert_status
from mailflow.cli.context import Context, actor_name, pass_context, reported_errors
from mailflow.core.mail.templates import counted, format_time
from mailflow.workers.queue import JobQueue


@click.group()
def alert() -> None:
    """Alerts: issue, update and close them, and follow their delivery."""


for report_command in (alert_show, alert_status, alert_list_command):
    alert.add_command(report_command)


@alert.command("issue")
@click.argument("file", type=click.Path(path_type=Path))
@pass_context
def alert_issue(ctx: Context, file: Path) -> None:
    """Issue the alert described in FILE (TOML or JSON) and queue its emails.

    Fields: reference (optional), title, severity (critical|high|medium|low),
    summary, affected, cves, remediation, references, deadline_hours
    (default 48), [audience] organisations and/or types (default: every
    open organisation).  Prints the reference."""
    with reported_errors():
        spec = read_alert_file(file)
        with ctx.transaction() as session:
            issued = issue_alert(
                session,
                spec,
                now=ctx.runtime.clock(),
                actor=actor_name(),
                mail_domain=ctx.settings.mail_domain,
            )
            reference = issued.alert.reference
    click.echo(reference)
    report_queued(issued)
    if ctx.settings.broker_url:
        hand_to_broker(ctx)
    else:
        click.echo("`mailflow serve` (or `mailflow worker`) sends them.", err=True)


def report_queued(issued: IssuedAlert) -> None:
    click.echo(
        f"{counted(issued.recipients, 'email')} queued for "
        f"{counted(issued.organisations, 'organisation')}",
        err=True,
    )
    if issued.organisations_without_recipients:
        skipped = alert_long_lists.skipped_text(issued.organisations_without_recipients)
        click.echo(f"warning: no one to email at {skipped}", err=True)


def hand_to_broker(ctx: Context) -> None:
    # Hand the job to the broker now; if it cannot be reached, the job
    # waits in the database and a worker's dispatcher sends it later.
    try:
        queue = JobQueue(ctx.runtime)
        try:
            queue.dispatch_due()
        finally:
            queue.close()
    except Exception as exc:  # the broker's client raises many kinds
        click.echo(
            f"warning: the broker could not be reached ({exc!r}); "
            "a worker will pick the emails up when it runs",
            err=True,
        )


@alert.command("update")
@click.argument("reference")
@click.argument("file", type=click.Path(path_type=Path))
@pass_context
def alert_update(ctx: Context, reference: str, file: Path) -> None:
    """Publish the update described in FILE (TOML or JSON) to everyone the
    alert was sent to, in its email thread.

    Fields: summary (what changed, required), remediation (the new text),
    cves (added), answer_again (true: every organisation must answer
    again, by a new deadline), deadline_hours (with answer_again; default
    48).  Prints the update's number."""
    with reported_errors():
        spec = read_update_file(file)
        with ctx.transaction() as session:
            published = publish_update(
                session, reference, spec, now=ctx.runtime.clock(), actor=actor_name()
            )
    click.echo(f"{published.reference} update {published.number}")
    report_update(ctx, published)
    if ctx.settings.broker_url:
        hand_to_broker(ctx)
    elif published.recipients:
        click.echo("`mailflow serve` (or `mailflow worker`) sends them.", err=True)


def report_update(ctx: Context, published: PublishedUpdate) -> None:
    if published.added_cves:
        click.echo(f"CVEs added: {', '.join(published.added_cves)}", err=True)
    if published.answer_again:
        click.echo(
            f"round {published.round}: {counted(published.reopened, 'status', 'statuses')} "
            f"cleared; answers due by {format_time(published.deadline_at, ctx.settings.zone)}",
            err=True,
        )
    click.echo(f"{counted(published.recipients, 'email')} queued", err=True)


@alert.command("close")
@click.argument("reference")
@click.option("--reason", help="Why it needs no more chasing (kept in the audit log).")
@pass_context
def alert_close(ctx: Context, reference: str, reason: str | None) -> None:
    """End all chasing for an alert: no more reminders, overdue notices,
    escalations or update chasers.  Answers are still recorded."""
    with reported_errors(), ctx.transaction() as session:
        closed = close_alert(
            session, reference, reason=reason, now=ctx.runtime.clock(), actor=actor_name()
        )
    when = format_time(closed.closed_at, ctx.settings.zone)
    because = f" ({closed.reason})" if closed.reason else ""
    if closed.newly_closed:
        click.echo(f"{closed.reference} closed{because}: chasing has stopped")
    else:
        click.echo(f"{closed.reference} was already closed on {when}{because}: nothing changed")
